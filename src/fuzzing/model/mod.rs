//! The model the `shard_ops` target checks a shard's connection core (`Core`, and the `State`
//! it holds) against, and the simulation that drives both side by side on a simulated clock,
//! as a driver would: it admits clients, reads their frames, writes their queues, waits where
//! the core says to wait, and ends their connections.
//!
//! The rules the model states are listed on `shard_ops`.
//!
//! - `sim`: the simulation, its operations on the shard (commands, the queues' rules) and its
//!   checks; `lifecycle`: what it does as a connection's driver (reads, waits, closes, ends,
//!   the inbox's consumer) and the end of a run.
//! - `client`: one client as the model sees it; `world`: the client's frames, the handler and
//!   the other shards around the core.

mod client;
mod lifecycle;
mod sim;
mod world;

pub(super) use sim::Sim;
