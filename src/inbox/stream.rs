//! `Inbox`: one async stream of client events, read from one bounded queue per shard.
//!
//! # Invariants
//!
//! - Each shard's queue is a `tokio::sync::mpsc` channel of [`Config::inbox_capacity`] events;
//!   the shard only ever `try_send`s into it, so no shard thread waits for the consumer. An
//!   event that finds the queue full waits in the connection it is about (`shard::inlet`).
//! - [`InboxTally`] is written by the `Inbox` only (its methods take `&mut self`; a partitioned
//!   inbox calls them with its lock held), so there is one writer at a time and each counter is
//!   a plain load and store, like the shards' own counters.
//!
//! [`Config::inbox_capacity`]: crate::Config::inbox_capacity

use crate::ClientId;
use crate::client::Incoming;
use crate::client::RemoveReason;
use crate::stats::{InboxTally, bump};
use bytes::Bytes;
use crossbeam_utils::CachePadded;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Something a client did, as the [`Inbox`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The client.
    pub client: ClientId,
    /// What it did.
    pub kind: EventKind,
}

/// What an [`Event`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// The client completed its upgrade and now receives broadcasts. First of its events.
    Registered,
    /// A complete text message (reassembled if it was fragmented; valid UTF-8).
    Text(String),
    /// A complete binary message.
    Binary(Bytes),
    /// The client left, for this reason. Last of its events: nothing more comes from it.
    Removed(RemoveReason),
}

impl Event {
    /// `client` registered.
    pub(crate) fn registered(client: ClientId) -> Event {
        Event {
            client,
            kind: EventKind::Registered,
        }
    }

    /// `client` sent `message` (copied out of the shard's read buffer).
    pub(crate) fn message(client: ClientId, message: Incoming<'_>) -> Event {
        let kind = match message {
            Incoming::Text(text) => EventKind::Text(text.to_owned()),
            Incoming::Binary(bytes) => EventKind::Binary(Bytes::copy_from_slice(bytes)),
        };
        Event { client, kind }
    }

    /// `client` left for `reason`.
    pub(crate) fn removed(client: ClientId, reason: RemoveReason) -> Event {
        Event {
            client,
            kind: EventKind::Removed(reason),
        }
    }
}

/// One shard's queue, as the [`Inbox`] reads it.
struct Lane {
    /// The queue; `None` once it ended (its shard stopped).
    rx: Option<mpsc::Receiver<Event>>,
    /// What was taken from it, for the stats.
    tally: Arc<CachePadded<InboxTally>>,
}

/// The messages clients send and their lifecycle events, as an async stream: the alternative to
/// [`Handler::on_message`](crate::Handler::on_message) for code that must await (a database
/// write, an auth call) while the engine keeps every queue bounded.
///
/// Turned on with [`Builder::inbox`](crate::Builder::inbox), taken once with
/// [`Engine::inbox`](crate::Engine::inbox); read it with [`Inbox::recv`] or as a
/// [`Stream`](futures_core::Stream).
///
/// ```
/// use shardcast::{Engine, EventKind, Payload};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().shards(2).inbox(true).build()?;
/// let mut inbox = engine.inbox().expect("turned on, and taken once");
/// let replies = engine.clone();
/// let consumer = tokio::spawn(async move {
///     // Ends when the engine has shut down and every event was read.
///     while let Some(event) = inbox.recv().await {
///         if let EventKind::Text(text) = event.kind {
///             // Await what you need here: the clients whose messages wait are paused.
///             let _ = replies.send(event.client, Payload::text(text.to_uppercase())).await;
///         }
///     }
/// });
/// let addr = engine.listen("127.0.0.1:0").await?;
/// // ... clients connect to ws://{addr}/ ...
/// # let _ = addr;
/// engine.shutdown(std::time::Duration::from_secs(1)).await;
/// consumer.await?;
/// # Ok(())
/// # }
/// ```
///
/// # A handler or the inbox?
///
/// - A [`Handler`](crate::Handler) runs on the shard thread, synchronously, with the message
///   borrowed from the read buffer: no copy, no queue, no wake-up, so it is the fast path
///   (relay, chat, subscribe commands). It must not block: the whole shard waits for it.
/// - The inbox copies each message into an [`Event`] and queues it for any task of any
///   runtime, which may await as long as it likes: only the clients whose messages wait are
///   slowed, and only as far as the queue's bound.
///
/// Both can be used together. With an inbox, each message goes to one of them, as
/// [`Handler::forward`](crate::Handler::forward) decides (by default, to the inbox), so that
/// cheap messages stay on the fast path. The other hooks run as always: `on_upgrade` decides
/// every upgrade, `on_registered` and `on_removed` run on the shard, and the inbox reports
/// [`EventKind::Registered`] and [`EventKind::Removed`] too.
///
/// # Back-pressure
///
/// Each shard queues at most [`Config::inbox_capacity`](crate::Config::inbox_capacity) events
/// for the inbox. A client whose event finds its shard's queue full stops being read until the
/// consumer makes room: the event waits in its connection (one per connection), its socket's
/// receive window fills, and TCP slows the client down. Nothing is dropped and nothing grows:
/// what waits for the consumer is at most `inbox_capacity` events per shard plus one per
/// connection, each no larger than [`Config::message_bytes_max`](crate::Config::message_bytes_max).
///
/// Only the clients whose events wait are paused. Meanwhile they still receive broadcasts
/// (their connections keep writing), and are not closed for silence (the heartbeat timeout
/// restarts when they are read again). Clients with nothing to report, the shard's broadcasts,
/// and the other shards carry on: no shard thread ever waits for the consumer.
///
/// Paused clients are served in the order they paused. The inbox takes from the shards' queues
/// in turn, so one busy shard cannot starve the others.
///
/// # Ordering
///
/// A client's events arrive in order: [`EventKind::Registered`], its messages in the order it
/// sent them, then [`EventKind::Removed`], exactly once each. There is no order across
/// clients.
///
/// One reader handles one event at a time, so an awaited write per message serialises every
/// client behind it. To await for several clients at once and still keep each client's order,
/// split the inbox by client with [`Inbox::partition`] and give each [`InboxPartition`] its own
/// task: every event of a client goes to the same partition, in this order.
///
/// [`InboxPartition`]: crate::InboxPartition
///
/// # Shutdown and loss
///
/// The stream ends (`None`) once every shard has stopped and every queued event was read. Keep
/// reading during [`Engine::shutdown`](crate::Engine::shutdown): each client's `Removed` event
/// waits for room like any other, and a shard stops at the shutdown deadline whether or not
/// they were read. Events that never reached the queue then (the shard stopped first), or that
/// were still queued when the `Inbox` was dropped, or that came after it was dropped, are lost
/// and counted in [`ShardStats::inbox_lost`](crate::ShardStats::inbox_lost); none is lost
/// silently. An inbox that is turned on but never taken (or never read) pauses every client
/// that sends a message once its shard's queue is full.
pub struct Inbox {
    /// One queue per shard, by shard index.
    lanes: Vec<Lane>,
    /// The lane to try first on the next poll: the one after the last that gave an event.
    next: usize,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("shards", &self.lanes.len())
            .field(
                "open",
                &self.lanes.iter().filter(|l| l.rx.is_some()).count(),
            )
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// The inbox reading `queues`, one per shard by shard index, counting into `tallies`.
    pub(crate) fn new(
        queues: Vec<mpsc::Receiver<Event>>,
        tallies: &[Arc<CachePadded<InboxTally>>],
    ) -> Inbox {
        let lanes = queues
            .into_iter()
            .zip(tallies)
            .map(|(rx, tally)| Lane {
                rx: Some(rx),
                tally: tally.clone(),
            })
            .collect();
        Inbox { lanes, next: 0 }
    }

    /// The next event from any shard; `None` once every shard has stopped and every event was
    /// read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is taken only when this returns it.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next event: the shards' queues in turn, starting after the last that gave
    /// one, so that every shard gets its share.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.poll_lane(cx).map(|next| next.map(|(_, event)| event))
    }

    /// [`Inbox::poll_recv`], with the index of the shard whose queue gave the event (where to
    /// count it if it is lost later: see [`Inbox::lose`]).
    pub(super) fn poll_lane(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, Event)>> {
        let n = self.lanes.len();
        let mut open = false;
        for k in 0..n {
            let i = (self.next + k) % n;
            let lane = &mut self.lanes[i];
            let Some(rx) = lane.rx.as_mut() else {
                continue;
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    bump(&lane.tally.taken, 1);
                    self.next = (i + 1) % n;
                    return Poll::Ready(Some((i, event)));
                }
                Poll::Ready(None) => lane.rx = None,
                // The waker is registered with this queue too: any of them wakes the task.
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }

    /// Counts an event taken from shard `lane`'s queue (by [`Inbox::poll_lane`]) as lost: its
    /// reader is gone.
    pub(super) fn lose(&mut self, lane: usize) {
        bump(&self.lanes[lane].tally.dropped, 1);
    }

    /// Events each shard's queue holds at most ([`Config::inbox_capacity`]).
    ///
    /// [`Config::inbox_capacity`]: crate::Config::inbox_capacity
    pub(super) fn capacity(&self) -> usize {
        (self.lanes.iter())
            .filter_map(|lane| lane.rx.as_ref())
            .map(mpsc::Receiver::max_capacity)
            .max()
            .unwrap_or(1)
    }
}

impl futures_core::Stream for Inbox {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for Inbox {
    /// Closes every queue (the shards then count what they can no longer queue as lost) and
    /// counts what was still in them as lost too.
    fn drop(&mut self) {
        for lane in &mut self.lanes {
            let Some(rx) = lane.rx.as_mut() else {
                continue;
            };
            rx.close();
            let mut dropped = 0;
            while rx.try_recv().is_ok() {
                dropped += 1;
            }
            bump(&lane.tally.taken, dropped);
            bump(&lane.tally.dropped, dropped);
        }
    }
}
