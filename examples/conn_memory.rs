//! Memory per connection, on the system allocator, counted by a counting allocator
//! (`stats_alloc`: bytes requested, live) next to the process's resident memory; see
//! `conn_memory/common.rs` for what it does and `conn_memory_mimalloc` for the same run on
//! mimalloc (what `shardcast serve` uses).
//!
//! ```text
//! cargo run --release --example conn_memory -- [clients] [rounds] [read|stall] [linger_s]
//! valgrind --tool=dhat target/release/examples/conn_memory 10000 0   # heap by allocation site
//! ```

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[path = "conn_memory/common.rs"]
mod common;

/// Live heap bytes and blocks.
fn live() -> (i64, i64) {
    let s = GLOBAL.stats();
    (
        s.bytes_allocated as i64 - s.bytes_deallocated as i64,
        s.allocations as i64 - s.deallocations as i64,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::main("system", Some(live))
}
