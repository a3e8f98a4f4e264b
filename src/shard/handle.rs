//! `Handle`: a cheap-clone sender into one shard.
//!
//! # Back-pressure
//!
//! The queue is bounded by [`crate::Config::shard_queue_capacity`] commands. `send` and
//! `reserve` wait for room; `try_send` and `try_reserve` never wait (`try_send` hands the
//! command back). A reserved slot is taken until its permit is used or dropped, so a caller
//! can reserve a slot on every shard before it sends to any (all or nothing).

use super::command::Command;
use super::core::{Delivery, Interest};
use crate::payload::Payloads;

use crate::stats::InboxTally;
use crate::stats::{ShardCounters, ShardStats};
use crate::{Audience, ShardId};
use smallvec::SmallVec;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// A reserved slot in one shard's queue.
pub(crate) type Permit<'a> = mpsc::Permit<'a, Command>;

/// A reserved slot in each of several shards' queues, for one broadcast: inline up to 16
/// shards, so that a broadcast allocates nothing for them.
pub(crate) type Permits<'a> = SmallVec<[Permit<'a>; 16]>;

/// Reserves a slot in the queue of every shard of `shards` that may have clients in `audience`
/// (for a topic audience, the shards with subscribers: see `Interest`), waiting for room: all
/// or nothing, so that a caller cancelled meanwhile has sent nothing. `None` if a shard has
/// stopped.
pub(crate) async fn reserve_wanted<'a>(
    shards: &'a [Handle],
    interest: &Interest,
    audience: &Audience,
) -> Option<Permits<'a>> {
    let mut permits = Permits::new();
    for handle in shards {
        if interest.wants(audience, handle.id.index()) {
            permits.push(handle.reserve().await.ok()?);
        }
    }
    Some(permits)
}

/// Sends one broadcast through each permit, its payloads shared by reference count.
pub(crate) fn send_each(permits: Permits<'_>, payloads: Payloads, audience: Audience) {
    let mut permits = permits.into_iter();
    let last = permits.next_back();
    for permit in permits {
        permit.send(
            Delivery::Broadcast {
                payloads: payloads.clone(),
                audience: audience.clone(),
            }
            .into(),
        );
    }
    if let Some(permit) = last {
        permit.send(Delivery::Broadcast { payloads, audience }.into());
    }
}

/// The shard has stopped: its queue takes nothing more.
#[derive(Debug)]
pub(crate) struct Stopped;

/// The way into one shard, shared by the engine and every other shard.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    /// Which shard this is.
    pub(crate) id: ShardId,
    /// The shard's bounded command queue.
    tx: mpsc::Sender<Command>,
    /// The shard's counters (written by the shard thread only).
    pub(crate) counters: Arc<ShardCounters>,
}

impl Handle {
    /// The handle of shard `id`, whose queue is `tx`.
    pub(crate) fn new(
        id: ShardId,
        tx: mpsc::Sender<Command>,
        counters: Arc<ShardCounters>,
    ) -> Self {
        Handle { id, tx, counters }
    }

    /// Queues `command`, waiting for room.
    ///
    /// # Cancel safety
    ///
    /// Cancelled while waiting, the command is dropped and nothing was queued.
    pub(crate) async fn send(&self, command: Command) -> Result<(), Stopped> {
        self.tx.send(command).await.map_err(|_| Stopped)
    }

    /// Queues `command` if there is room now; hands it back otherwise.
    pub(crate) fn try_send(&self, command: Command) -> Result<(), TrySendError<Command>> {
        self.tx.try_send(command)
    }

    /// Reserves a slot, waiting for room.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelled while waiting, it holds nothing.
    pub(crate) async fn reserve(&self) -> Result<Permit<'_>, Stopped> {
        self.tx.reserve().await.map_err(|_| Stopped)
    }

    /// Reserves a slot if there is room now.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_>, TrySendError<()>> {
        self.tx.try_reserve()
    }

    /// A snapshot of this shard's counters, with what the inbox took from it (`inbox`).
    pub(crate) fn stats(&self, inbox: Option<&InboxTally>) -> ShardStats {
        let depth = self.tx.max_capacity() - self.tx.capacity();
        ShardStats::read(&self.counters, depth as u64, inbox)
    }
}
