//! The shard's side of the inbox: queue an event without waiting, or hand it back to wait in
//! its connection.
//!
//! # Back-pressure
//!
//! The shard never waits for the consumer: [`Inlet::offer`] only tries. An event that finds the
//! queue full becomes a [`Held`] event, kept by the connection it is about, which reads nothing
//! more (but keeps writing) until the event is queued. Released room goes to the waiting
//! connections first, in the order they started waiting (tokio's channel hands freed slots to
//! waiting senders before `try_send` can take them), so a paused client cannot be overtaken
//! for ever.
//!
//! # Invariants
//!
//! - At most one held event per connection, so what waits beyond the queue is bounded by the
//!   number of connections (`clients_max`), each event by `message_bytes_max`.
//! - Every event is queued, or counted in `inbox_lost` (the inbox was dropped, or the shard
//!   stopped and dropped a held event).

use crate::inbox::Event;
use crate::stats::{ShardCounters, bump, drop_by};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::PollSender;

/// The shard's way into its inbox queue.
pub(crate) struct Inlet {
    /// The queue, bounded by `inbox_capacity`.
    tx: mpsc::Sender<Event>,
    /// This shard's counters (this thread is the only writer).
    counters: Arc<ShardCounters>,
}

impl Inlet {
    /// The inlet queueing into `tx`, counting into `counters`.
    pub(crate) fn new(tx: mpsc::Sender<Event>, counters: Arc<ShardCounters>) -> Inlet {
        Inlet { tx, counters }
    }

    /// Queues `event` if there is room now; otherwise hands it back to wait in its connection,
    /// which must not read until the event is queued ([`Held::poll_queue`]).
    pub(crate) fn offer(&self, event: Event) -> Option<Box<Held>> {
        match self.tx.try_send(event) {
            Ok(()) => {
                bump(&self.counters.inbox_events, 1);
                None
            }
            Err(TrySendError::Full(event)) => {
                bump(&self.counters.inbox_paused, 1);
                bump(&self.counters.inbox_waiting, 1);
                Some(Box::new(Held {
                    event: Some(event),
                    tx: PollSender::new(self.tx.clone()),
                    counters: self.counters.clone(),
                }))
            }
            Err(TrySendError::Closed(_)) => {
                bump(&self.counters.inbox_lost, 1);
                None
            }
        }
    }

    /// Counts an event that will never be offered (its connection was dropped first).
    pub(crate) fn lost(&self) {
        bump(&self.counters.inbox_lost, 1);
    }
}

/// An event waiting for room in the inbox queue, kept by the connection it is about. Boxed by
/// [`Inlet::offer`]: a rare wait should not grow every connection's task.
pub(crate) struct Held {
    /// The event; `None` once queued (or lost).
    event: Option<Event>,
    /// A sender that can wait for room from a poll function.
    tx: PollSender<Event>,
    /// The shard's counters.
    counters: Arc<ShardCounters>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// Queues the event once there is room (or counts it lost if the inbox is gone); `Ready`
    /// then, and the connection may read again.
    pub(crate) fn poll_queue(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.is_none() {
            return Poll::Ready(());
        }
        let queued = match self.tx.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) => self.event.take().map(|e| self.tx.send_item(e).is_ok()),
            Poll::Ready(Err(_)) => Some(false),
        };
        let counters = &*self.counters;
        drop_by(&counters.inbox_waiting, 1);
        match queued {
            Some(true) => bump(&counters.inbox_events, 1),
            _ => {
                self.event = None;
                bump(&counters.inbox_lost, 1);
            }
        }
        Poll::Ready(())
    }

    /// Waits until the event is queued (or lost).
    ///
    /// # Cancel safety
    ///
    /// Cancelled, the event stays held (and is counted lost if it is dropped so).
    pub(crate) async fn queue(&mut self) {
        std::future::poll_fn(|cx| self.poll_queue(cx)).await;
    }
}

impl Drop for Held {
    /// A held event dropped before it was queued (the shard stopped) is counted lost.
    fn drop(&mut self) {
        if self.event.is_some() {
            drop_by(&self.counters.inbox_waiting, 1);
            bump(&self.counters.inbox_lost, 1);
        }
    }
}
