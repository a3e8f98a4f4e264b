//! `Handle`: a cheap-clone sender into one shard.
//!
//! # Back-pressure
//!
//! The queue is bounded by [`crate::Config::shard_queue_capacity`] commands. `send` waits for
//! room; `try_send` never waits and hands the command back.

use super::command::Command;
use crate::ShardId;
use crate::stats::{ShardCounters, ShardStats};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The way into one shard, shared by the engine and every other shard.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    /// Which shard this is.
    pub(crate) id: ShardId,
    /// The shard's bounded command queue.
    pub(crate) tx: mpsc::Sender<Command>,
    /// The shard's counters (written by the shard thread only).
    pub(crate) counters: Arc<ShardCounters>,
}

impl Handle {
    /// A snapshot of this shard's counters.
    pub(crate) fn stats(&self) -> ShardStats {
        let depth = self.tx.max_capacity() - self.tx.capacity();
        ShardStats::read(&self.counters, depth as u64)
    }
}
