//! What moves a shard's bytes: its thread and command loop, accept, the opening of a
//! connection, and the drivers that serve connections. Every file here reads the clock, asks
//! the core (`super::core`) what to do, and reads, writes or waits; none decides a rule.
//!
//! - `thread`: the shard's thread and runtime; `tick`: its command loop (drain, apply, sweep).
//! - `accept`: the accept loop; `open`: a connection's wrapping and upgrade, after which it is
//!   served by `task` (a task of its own) or by `evloop` (the shard's event loop, serving
//!   many; its writes through `ring` with `Driver::IoUring`).
//! - `shared`: what the shard's tasks share (the core, the buffers, the ways out), and the
//!   effects a connection's end has outside the core.

mod accept;
#[cfg(unix)]
mod evloop;
#[cfg(unix)]
mod handover;
mod open;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod ring;
mod shared;
mod task;
mod thread;
mod tick;

pub(crate) use thread::{spawn, spawn_local};
pub(crate) use tick::Startup;
