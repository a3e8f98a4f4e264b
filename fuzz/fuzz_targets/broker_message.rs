//! Fuzz target: see `shardcast::fuzzing::broker_message` for the input layout and what is
//! checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast::fuzzing::broker_message(data));
