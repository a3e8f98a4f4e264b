//! `Link`: the engine's side of the bridge, shared by the engine, every shard and the bridge
//! thread: the bounded queue of broadcasts to publish, the node's topic registry, and the
//! counters. Below the shards in the module tree: it knows nothing of them.
//!
//! # Back-pressure
//!
//! [`Link::offer`] never waits: a broadcast that finds the outbound queue full
//! ([`Config::bridge_outbound_capacity`](crate::Config::bridge_outbound_capacity)) is dropped
//! for the other nodes (it was already delivered locally) and counted.

use crate::payload::Payloads;
use crate::stats::{BridgeCounters, add};
use crate::{Audience, Topic};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// The most broadcasts one broker message carries. The publisher puts consecutive queued
/// broadcasts for the same channel and audience in one message (at most this many, and at
/// most [`MESSAGE_BYTES_MAX`] of frames), so that the receiving node hands its shards a run of
/// frames that its clients get in one write, as local clients do.
pub const BROADCASTS_PER_MESSAGE_MAX: usize = 64;

/// The most frame bytes the publisher copies into one message to join broadcasts (a
/// broadcast larger than this travels alone, and a single frame is never copied).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// The most frames one broker message carries. A node never publishes more (a batch of more
/// frames stays on its node, counted as `dropped.publish_failed`), and drops a received
/// message with more (`dropped.malformed`): one message must not be able to fill every
/// client's queue (1,024 empty frames charge a queue 84 KB of its 1 MiB).
pub const FRAMES_PER_MESSAGE_MAX: usize = 1024;

/// One or more local broadcasts with one audience, on their way to the other nodes.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Their frames (one, or a batch's, or several broadcasts', in order).
    pub(crate) payloads: Payloads,
    /// Their audience; `except` is not carried to other nodes.
    pub(crate) audience: Audience,
    /// How many broadcasts they are (1 to `BROADCASTS_PER_MESSAGE_MAX`).
    pub(crate) broadcasts: usize,
}

impl Outgoing {
    /// One broadcast, or `None` if its audience is nobody, here and everywhere (an empty list
    /// of topics).
    fn one(payloads: Payloads, audience: Audience) -> Option<Outgoing> {
        if audience.topic_filter().is_some_and(<[Topic]>::is_empty) {
            return None;
        }
        Some(Outgoing {
            payloads,
            audience,
            broadcasts: 1,
        })
    }

    /// Whether `self` and `other` go to the same channels with the same flags.
    pub(crate) fn same_channel(&self, other: &Outgoing) -> bool {
        self.audience.topic_filter() == other.audience.topic_filter()
            && self.audience.is_authenticated_only() == other.audience.is_authenticated_only()
    }

    /// Whether `self` and `other` may travel in one message: the same channel and flags, and
    /// together within the limits of one message.
    pub(crate) fn joins(&self, other: &Outgoing) -> bool {
        self.same_channel(other)
            && fits_one_message(
                self.broadcasts + other.broadcasts,
                self.payloads.len() + other.payloads.len(),
                self.bytes() + other.bytes(),
            )
    }

    /// Bytes of frames.
    pub(crate) fn bytes(&self) -> usize {
        self.payloads.iter().map(crate::Payload::len).sum()
    }
}

/// Whether `broadcasts` broadcasts of `frames` frames and `bytes` bytes of frames in all may
/// share one broker message (a single broadcast travels whatever its size, within
/// [`FRAMES_PER_MESSAGE_MAX`] frames).
pub(crate) fn fits_one_message(broadcasts: usize, frames: usize, bytes: usize) -> bool {
    broadcasts <= BROADCASTS_PER_MESSAGE_MAX
        && frames <= FRAMES_PER_MESSAGE_MAX
        && bytes <= MESSAGE_BYTES_MAX
}

/// A shard's broadcasts for the other nodes, gathered while it handles one read (or one
/// round of `on_registered`/`on_removed` calls) and handed to the bridge after it: a client's
/// burst of messages leaves as one outbound entry per audience, and so as one broker message,
/// and the receiving node's clients get it in one write each (as this node's clients do).
///
/// Bounded: at most [`GATHERED_MAX`] entries; a full list is handed over at once.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// In the order offered.
    entries: Vec<Outgoing>,
}

/// The most entries a shard gathers before it hands them to the bridge.
pub(crate) const GATHERED_MAX: usize = 64;

impl Gathered {
    /// Adds a broadcast that was delivered locally, joining it to the previous entry where
    /// they can travel together.
    pub(crate) fn push(&mut self, link: &Link, payloads: Payloads, audience: Audience) {
        let Some(next) = Outgoing::one(payloads, audience) else {
            return;
        };
        match self.entries.last_mut() {
            Some(last) if last.joins(&next) => {
                last.payloads.extend(next.payloads);
                last.broadcasts += 1;
            }
            _ => {
                if self.entries.len() == GATHERED_MAX {
                    self.hand(link);
                }
                self.entries.push(next);
            }
        }
    }

    /// Hands what was gathered to the bridge (see [`Link::offer`]).
    pub(crate) fn hand(&mut self, link: &Link) {
        for outgoing in self.entries.drain(..) {
            link.offer(outgoing);
        }
    }
}

/// The engine's side of the bridge.
#[derive(Debug)]
pub(crate) struct Link {
    /// Broadcasts to publish, bounded by `bridge_outbound_capacity`; read by the bridge's
    /// publisher task.
    tx: mpsc::Sender<Outgoing>,
    /// Bytes of frames in the outbound queue, within `bridge_outbound_bytes_max`.
    pub(crate) outbound_bytes: Budget,
    /// Bytes of frames in the inbound queue, within `bridge_inbound_bytes_max`.
    pub(crate) inbound_bytes: Budget,
    /// Which topics have subscribers on this node.
    pub(crate) registry: Registry,
    /// What the bridge did; written by shards, the engine and the bridge thread.
    pub(crate) counters: BridgeCounters,
    /// The largest frame payload that crosses (`Config::message_bytes_max`), either way.
    pub(crate) frame_bytes_max: usize,
}

impl Link {
    /// A link whose outbound queue is `tx`, with `config`'s byte limits.
    pub(crate) fn new(tx: mpsc::Sender<Outgoing>, config: &crate::Config) -> Link {
        Link {
            tx,
            outbound_bytes: Budget::new(config.bridge_outbound_bytes_max),
            inbound_bytes: Budget::new(config.bridge_inbound_bytes_max),
            registry: Registry::default(),
            counters: BridgeCounters::default(),
            frame_bytes_max: config.message_bytes_max,
        }
    }

    /// Hands a broadcast that was delivered locally to the bridge, without waiting: once per
    /// broadcast, whatever the number of shards and clients.
    pub(crate) fn offer_one(&self, payloads: Payloads, audience: Audience) {
        if let Some(outgoing) = Outgoing::one(payloads, audience) {
            self.offer(outgoing);
        }
    }

    /// Hands local broadcasts to the bridge, without waiting. Dropped and counted (each of
    /// its broadcasts) if the queue is full or the bridge has stopped.
    pub(crate) fn offer(&self, outgoing: Outgoing) {
        let n = outgoing.broadcasts as u64;
        let crosses = outgoing.payloads.len() <= FRAMES_PER_MESSAGE_MAX
            && outgoing
                .payloads
                .iter()
                .all(|p| p.body().len() <= self.frame_bytes_max);
        if !crosses {
            // What the other nodes would drop as malformed stays here, counted.
            add(&self.counters.publish_failed, n);
            return;
        }
        let bytes = outgoing.bytes();
        if !self.outbound_bytes.take(bytes) {
            add(&self.counters.outbound_full, n);
            return;
        }
        match self.tx.try_send(outgoing) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.outbound_bytes.give(bytes);
                add(&self.counters.outbound_full, n);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.outbound_bytes.give(bytes);
                add(&self.counters.stopped, n);
            }
        }
    }
}

/// Bytes in a queue, within a limit: taken when an entry is queued, given back when it is
/// taken out. An empty queue takes one entry of any size, so that no frame is too large to
/// pass at all; what a queue holds is then within its limit plus one entry.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Bytes in the queue.
    used: AtomicUsize,
    /// The limit.
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes `n` bytes if they fit (or the queue is empty); whether it did.
    pub(crate) fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                (used == 0 || used.saturating_add(n) <= self.max).then(|| used.saturating_add(n))
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken before.
    pub(crate) fn give(&self, n: usize) {
        self.used.fetch_sub(n, Relaxed);
    }
}

/// The topics with subscribers on this node, with how many shards have them, and whether the
/// node holds a broker subscription for each: the bridge subscribes on a topic's first shard
/// and unsubscribes `bridge_unsubscribe_delay` after its last one left.
///
/// # Invariants
///
/// - `shards` of a topic is the number of shards whose topic index has it (each shard calls
///   `joined` on its 0 -> 1 transition and `left` on its 1 -> 0 one), so it never misses a
///   transition: the bridge reconciles from these counts, not from events.
/// - A topic is in `dirty` exactly when its `dirty` flag is set; the bridge is notified after
///   each push, and `Notify` keeps one permit, so no change goes unseen.
/// - A topic leaves the map only when its count is 0 and it holds no subscription.
///
/// The lock is taken only on those transitions (rare: a topic's first or last subscriber on a
/// shard) and by the bridge thread; never on the delivery path.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// The topics and the changes the bridge has not seen.
    state: Mutex<Topics>,
    /// Wakes the bridge's interest task after a change.
    pub(crate) changed: Notify,
}

/// The registry's state.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    /// Every topic with local subscribers or a broker subscription.
    pub(crate) map: HashMap<Topic, Node, BuildHasherDefault<crate::topic::Prehashed>>,
    /// Topics whose count changed since the bridge last looked, once each.
    pub(crate) dirty: Vec<Topic>,
}

/// One topic, node-wide.
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Shards with subscribers of it.
    pub(crate) shards: u32,
    /// Whether the node holds (or has asked for) a broker subscription.
    pub(crate) subscribed: bool,
    /// Whether it is in `dirty`.
    pub(crate) dirty: bool,
    /// When it is to be unsubscribed, if its count is 0 and it is subscribed.
    pub(crate) leave_at: Option<Instant>,
}

impl Registry {
    /// A shard got its first subscriber of `topic`.
    pub(crate) fn joined(&self, topic: &Topic) {
        self.change(topic, |n| n.shards += 1);
    }

    /// A shard lost its last subscriber of `topic`.
    pub(crate) fn left(&self, topic: &Topic) {
        self.change(topic, |n| n.shards = n.shards.saturating_sub(1));
    }

    fn change(&self, topic: &Topic, f: impl FnOnce(&mut Node)) {
        let mut state = self.lock();
        let Topics { map, dirty } = &mut *state;
        let node = map.entry(topic.clone()).or_default();
        f(node);
        if !node.dirty {
            node.dirty = true;
            dirty.push(topic.clone());
        }
        drop(state);
        self.changed.notify_one();
    }

    /// The state, for the bridge.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Topics> {
        // A panic while holding it cannot leave the counts half-changed (each change is one
        // field), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first of `topics` the node holds a broker subscription for.
    pub(crate) fn first_subscribed<'a>(&self, topics: &'a [Topic]) -> Option<&'a Topic> {
        let state = self.lock();
        topics
            .iter()
            .find(|t| state.map.get(*t).is_some_and(|n| n.subscribed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(bytes: usize) -> Outgoing {
        Outgoing {
            payloads: smallvec::smallvec![crate::Payload::binary(vec![0u8; bytes - 4])],
            audience: Audience::ALL,
            broadcasts: 1,
        }
    }

    #[test]
    fn the_outbound_queue_holds_its_byte_limit_for_any_frame_size() {
        let config = crate::Config {
            bridge_outbound_bytes_max: 1000,
            // So that a frame of 1 MiB may cross: the byte bound is what is tested here.
            message_bytes_max: 2 << 20,
            ..crate::Config::default()
        };
        let (tx, mut rx) = mpsc::channel(100);
        let link = Link::new(tx, &config);
        let dropped = || link.counters.outbound_full.load(Relaxed);
        link.offer(outgoing(600));
        link.offer(outgoing(600));
        assert_eq!(
            (dropped(), rx.len()),
            (1, 1),
            "600 + 600 B would pass 1000 B"
        );
        link.offer(outgoing(400));
        assert_eq!((dropped(), rx.len()), (1, 2));
        while let Ok(o) = rx.try_recv() {
            link.outbound_bytes.give(o.bytes());
        }
        link.offer(outgoing(1 << 20));
        assert_eq!((dropped(), rx.len()), (1, 1), "alone, any size passes");
    }

    #[test]
    fn what_the_other_nodes_would_drop_is_not_published() {
        let (tx, mut rx) = mpsc::channel(100);
        let link = Link::new(tx, &crate::Config::default());
        // A frame past the 64 KiB message limit, and a batch of more frames than a message
        // carries.
        link.offer(outgoing(100 << 10));
        let batch = (0..=FRAMES_PER_MESSAGE_MAX)
            .map(|_| crate::Payload::binary([0u8]))
            .collect();
        link.offer(Outgoing {
            payloads: batch,
            audience: Audience::ALL,
            broadcasts: 1,
        });
        assert_eq!(rx.try_recv().ok().map(|o| o.broadcasts), None);
        assert_eq!(link.counters.publish_failed.load(Relaxed), 2);
        link.offer(outgoing(64 << 10));
        assert!(rx.try_recv().is_ok(), "64 KiB crosses");
    }
}
