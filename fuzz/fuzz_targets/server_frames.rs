//! Fuzz target: see `shardcast::fuzzing::server_frames` for the input layout and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast::fuzzing::server_frames(data));
