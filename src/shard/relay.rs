//! The cross-shard relay: what handlers on one shard broadcast or send to clients of another.
//!
//! While one read of one connection is handled, the handler's broadcasts and sends for other
//! shards gather in the shard's outbox; once the read is handled (or every 64 commands), they
//! are posted, one command per target shard.
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

use super::command::{Command, Delivery};
use super::handle::Handle;
use tokio::sync::mpsc::error::TrySendError;

/// Commands for other shards that handlers queued while one read is handled, with the index of
/// their shard, in order; empty between reads.
pub(crate) type Outbox = Vec<(usize, Delivery)>;

/// Commands a connection could not post without waiting, with the index of their shard, in
/// order: sent, waiting for room, before the connection reads again.
pub(crate) type Waiting = Vec<(usize, Command)>;

/// Pushes the outbox's commands without waiting: those for one shard together, as one
/// command, so that the shard cannot wake and flush its clients between them. A command that
/// finds its shard full, or a shard that already has commands waiting, goes to `blocked`.
pub(crate) fn post(shards: &[Handle], outbox: &mut Outbox, blocked: &mut Waiting) {
    while let Some(&(index, _)) = outbox.first() {
        let mut mine = Vec::new();
        let mut i = 0;
        while i < outbox.len() {
            if outbox[i].0 == index {
                mine.push(outbox.remove(i).1);
            } else {
                i += 1;
            }
        }
        let cmd = match <[Delivery; 1]>::try_from(mine) {
            Ok([one]) => Command::Deliver(one),
            Err(many) => Command::Relayed(many),
        };
        if blocked.iter().any(|(i, _)| *i == index) {
            blocked.push((index, cmd));
            continue;
        }
        let Some(handle) = shards.get(index) else {
            continue;
        };
        match handle.try_send(cmd) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(cmd)) => blocked.push((index, cmd)),
        }
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
