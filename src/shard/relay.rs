//! The cross-shard relay: what handlers on one shard broadcast or send to clients of another.
//!
//! While one read of one connection is handled, the handler's broadcasts and sends for other
//! shards gather in the core's outbox; once the read is handled (or every 64 deliveries), the
//! core hands them to a [`Relay`], which posts them, one command per target shard.
//!
//! # Ordering
//!
//! A target shard receives a connection's relayed commands in the order the handler issued
//! them: they are posted in outbox order, and a command that found its shard full waits, with
//! every later command for that shard queued behind it, in the connection's waiting list.
//!
//! # Back-pressure
//!
//! Posting never waits. A command that finds its shard's queue full goes to the connection's
//! waiting list, and the connection reads nothing more until the list is sent (waiting for room
//! then), so back-pressure reaches the client that sent the messages through TCP, and no shard
//! ever waits for another.

use super::command::Command;
use super::core::{Delivery, Outbox, Post};
use super::handle::Handle;
use tokio::sync::mpsc::error::TrySendError;

/// Commands a connection could not post without waiting, with the index of their shard, in
/// order: sent, waiting for room, before the connection reads again.
pub(crate) type Waiting = Vec<(usize, Command)>;

/// The shard's way out to the other shards ([`Post`]), for one read or one round of handler
/// calls: what found a shard's queue full waits here, in order, to be sent by the driver.
pub(crate) struct Relay<'a> {
    /// Every shard, by index.
    shards: &'a [Handle],
    /// Commands that found their shard's queue full (and every later one for that shard).
    waiting: Waiting,
}

impl<'a> Relay<'a> {
    /// A relay into `shards`, with nothing waiting.
    pub(crate) fn new(shards: &'a [Handle]) -> Relay<'a> {
        Relay {
            shards,
            waiting: Waiting::new(),
        }
    }

    /// What waits for room, in order (empty if nothing does).
    pub(crate) fn into_waiting(self) -> Waiting {
        self.waiting
    }
}

impl Post for Relay<'_> {
    /// Pushes the outbox's deliveries without waiting: those for one shard together, as one
    /// command, so that the shard cannot wake and flush its clients between them. A command
    /// that finds its shard full, or a shard that already has commands waiting, waits.
    fn post(&mut self, outbox: &mut Outbox) {
        if outbox.is_empty() {
            return;
        }
        // One bucket per shard, filled in one pass over the outbox (its order kept in each).
        let mut buckets: Vec<Vec<Delivery>> = Vec::new();
        buckets.resize_with(self.shards.len(), Vec::new);
        for (index, delivery) in outbox.drain(..) {
            if let Some(bucket) = buckets.get_mut(index) {
                bucket.push(delivery);
            }
        }
        for (index, bucket) in buckets.into_iter().enumerate() {
            let cmd = match <[Delivery; 1]>::try_from(bucket) {
                Ok([one]) => Command::Deliver(one),
                Err(many) if many.is_empty() => continue,
                Err(many) => Command::Relayed(many),
            };
            if self.waiting.iter().any(|(i, _)| *i == index) {
                self.waiting.push((index, cmd));
                continue;
            }
            match self.shards[index].try_send(cmd) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(cmd)) => self.waiting.push((index, cmd)),
            }
        }
    }

    fn waits(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// Sends, waiting for room, the commands that could not be posted at once, in order.
///
/// # Cancel safety
///
/// Cancelled, the commands not yet sent are dropped with `waiting`'s remaining entries.
pub(crate) async fn send_waiting(shards: &[Handle], waiting: &mut Waiting) {
    for (index, command) in waiting.drain(..) {
        if let Some(handle) = shards.get(index) {
            let _ = handle.send(command).await;
        }
    }
}
