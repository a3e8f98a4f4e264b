//! Fuzz target: see `shardcast::fuzzing::compressed_frames` for the input layout and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast::fuzzing::compressed_frames(data));
