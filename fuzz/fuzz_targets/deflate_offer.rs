//! Fuzz target: see `shardcast::fuzzing::deflate_offer` for the input layout and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast::fuzzing::deflate_offer(data));
