//! `conn_memory` on mimalloc, the allocator of `shardcast serve`: resident memory only (the
//! heap figures come from `conn_memory`, on the system allocator, where they can be counted).
//!
//! ```text
//! cargo run --release --example conn_memory_mimalloc -- [clients] [rounds] [read|stall] [linger_s]
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "conn_memory/common.rs"]
mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::main("mimalloc", None)
}
