//! Fuzz target: see `shardcast::fuzzing::batch_envelope` for the input layout and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast::fuzzing::batch_envelope(data));
