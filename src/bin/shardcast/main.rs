//! `shardcast`: a relay server on the shardcast engine (`serve`), and its load generator
//! (`bench`).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod naive;
mod observe;
mod pubsub;
mod scrape;
mod serve;
mod tls;
mod topics;
mod units;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A lock-free, sharded WebSocket broadcast engine.
#[derive(Debug, Parser)]
#[command(name = "shardcast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a relay server: every message a client sends is broadcast to every client.
    Serve(Box<serve::Args>),
    /// Measure fan-out throughput and latency (default: against an embedded server).
    Bench(Box<bench::Args>),
}

/// File descriptors wanted: one per connection, with room to spare.
const DESCRIPTORS_WANTED: u64 = 1 << 20;

/// Raises the descriptor limit as far as allowed: the hard limit too where the process may (as
/// root, up to the kernel's `nr_open`), else the soft limit up to the hard one. Servers and the
/// bench with tens of thousands of connections need it; a failure only means fewer connections.
pub(crate) fn raise_descriptor_limit() {
    let raised = rlimit::setrlimit(
        rlimit::Resource::NOFILE,
        DESCRIPTORS_WANTED,
        DESCRIPTORS_WANTED,
    );
    if raised.is_err() {
        let _ = rlimit::increase_nofile_limit(DESCRIPTORS_WANTED);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Bench(args) => bench::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardcast: {e}");
            // Flags refused after parsing exit as clap's own refusals do.
            if e.is::<serve::Usage>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
