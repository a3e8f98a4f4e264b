//! `Broker`: what a message broker must do for shardcast nodes to share broadcasts. NATS
//! implements it ([`Nats`](crate::Nats), feature `nats`); a Redis sharded pub/sub backend
//! could implement it too. The engine's side (queues, interest, counting, validating frames)
//! is the same for every broker.

use crate::config::FRAME_OVERHEAD_BYTES;
use crate::error::BridgeError;
use crate::link::{BROADCASTS_PER_MESSAGE_MAX, FRAMES_PER_MESSAGE_MAX, Link, MESSAGE_BYTES_MAX};
use crate::stats::add;
use crate::{Payload, Topic};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc;

/// Where a broadcast travels between nodes: one channel that every node subscribes to, for
/// broadcasts to everyone; one per topic, which a node subscribes to while it has subscribers
/// of the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Broadcasts to every client (or every authenticated one).
    Everyone,
    /// Broadcasts to a topic's subscribers.
    Topic(Topic),
}

/// One message to publish: one or more local broadcasts (consecutive, with the same
/// audience), for one channel.
#[derive(Clone, Copy, Debug)]
pub struct Publication<'a> {
    /// Where it goes.
    pub channel: &'a Channel,
    /// Only authenticated clients receive it.
    pub authenticated_only: bool,
    /// Every topic of its audience, when there are several (it is published once on each
    /// topic's channel; the receiving node delivers one of the copies, see [`Received`]).
    pub topics: Option<&'a [Topic]>,
    /// Its complete WebSocket frames, as clients receive them: one frame (the bytes of
    /// [`Payload::frame`], not copied), or the frames of a batch or of several broadcasts one
    /// after the other.
    pub frames: &'a Bytes,
    /// How many broadcasts the frames are (1 to [`BROADCASTS_PER_MESSAGE_MAX`]); a broker
    /// carries it so that the receiving node counts broadcasts, not messages.
    pub broadcasts: usize,
}

/// One message received from another node, as the broker decoded it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The channel it came on.
    pub channel: Channel,
    /// Only authenticated clients receive it.
    pub authenticated_only: bool,
    /// Every topic of its audience, when there are several.
    pub topics: Option<Vec<Topic>>,
    /// Its frames, handed to the shards as they are (each must be a complete, final, unmasked
    /// text or binary frame; anything else is dropped and counted).
    pub frames: Bytes,
    /// How many broadcasts they are ([`Publication::broadcasts`]; 1 to
    /// [`BROADCASTS_PER_MESSAGE_MAX`], counted as 1 outside that range).
    pub broadcasts: usize,
}

impl Received {
    /// The broadcasts it carries, as counted: within 1 to [`BROADCASTS_PER_MESSAGE_MAX`].
    pub(crate) fn counted(&self) -> u64 {
        if (1..=BROADCASTS_PER_MESSAGE_MAX).contains(&self.broadcasts) {
            self.broadcasts as u64
        } else {
            1
        }
    }
}

/// The queue into which a broker hands what it receives, and its counters. Never waits.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// Bounded by `bridge_inbound_capacity`; read by the bridge's fan-out task.
    tx: mpsc::Sender<Received>,
    /// Where it counts.
    link: Arc<Link>,
}

impl Inbound {
    pub(crate) fn new(tx: mpsc::Sender<Received>, link: Arc<Link>) -> Inbound {
        Inbound { tx, link }
    }

    /// Queues a received message for the local shards; if the queue is full (in messages,
    /// `bridge_inbound_capacity`, or in bytes, `bridge_inbound_bytes_max`), drops it and counts
    /// its broadcasts (`dropped.inbound_full`).
    pub fn offer(&self, received: Received) {
        let counters = &self.link.counters;
        let n = received.counted();
        add(&counters.received, n);
        if let Err(why) = check(&received, self.link.frame_bytes_max) {
            tracing::debug!(why, "malformed message from the broker");
            add(&counters.malformed, n);
            return;
        }
        let bytes = charge(&received);
        if !self.link.inbound_bytes.take(bytes) {
            add(&counters.inbound_full, n);
            return;
        }
        if self.tx.try_send(received).is_err() {
            self.link.inbound_bytes.give(bytes);
            add(&counters.inbound_full, n);
        }
    }

    /// Counts a received message that could not be decoded (`dropped.malformed`).
    pub fn malformed(&self) {
        add(&self.link.counters.received, 1);
        add(&self.link.counters.malformed, 1);
    }

    /// Counts a message the broker client dropped because the node read too slowly.
    pub fn slow_consumer(&self) {
        add(&self.link.counters.slow_consumer, 1);
    }

    /// Records that the connection went up or down.
    pub fn connection(&self, up: bool) {
        let counters = &self.link.counters;
        let was = counters.connected.swap(u64::from(up), Relaxed);
        if was == 1 && !up {
            add(&counters.disconnects, 1);
        }
    }
}

/// A message broker: connects a node to the others.
///
/// The engine calls [`Broker::connect`] once, on the bridge's own thread and runtime (so the
/// connection lives as long as the engine, whatever runtime built it), and then uses the
/// [`Connection`] from that thread only.
pub trait Broker: Send + 'static {
    /// The live connection.
    type Connection: Connection;

    /// Connects, subscribes to [`Channel::Everyone`], and from then on hands every message
    /// received on a subscribed channel to `inbound`, reconnecting (and subscribing again to
    /// every channel it holds) whenever the connection is lost. With `required` false, it
    /// returns at once and keeps trying in the background.
    ///
    /// # Errors
    ///
    /// [`BridgeError`] if `required` and the broker cannot be reached, or a setting is invalid.
    fn connect(
        self,
        inbound: Inbound,
        required: bool,
    ) -> impl Future<Output = Result<Self::Connection, BridgeError>> + Send;
}

/// A node's connection to its broker. One connection per node: it keeps the order of what
/// the node publishes.
pub trait Connection: Send + Sync + 'static {
    /// Whether it is connected now (what is published otherwise is dropped and counted).
    fn is_connected(&self) -> bool;

    /// Publishes one message, in the order of the calls.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Refused`] if the broker will not take it (counted as `publish_failed`).
    fn publish(
        &self,
        publication: Publication<'_>,
    ) -> impl Future<Output = Result<(), BridgeError>> + Send;

    /// Subscribes to a topic's channel.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Refused`] if the broker refuses it (counted as `subscribe_failed`).
    fn subscribe(&self, topic: &Topic) -> impl Future<Output = Result<(), BridgeError>> + Send;

    /// Drops the subscription to a topic's channel.
    fn unsubscribe(&self, topic: &Topic) -> impl Future<Output = ()> + Send;

    /// Returns once the broker has taken every earlier call (a round trip), or once it is
    /// clear it cannot now.
    fn sync(&self) -> impl Future<Output = ()> + Send;

    /// Returns once every earlier publication has left the client's own buffers (for NATS,
    /// written to the connection's socket). The bridge hands the client nothing more until
    /// then, so that what the client holds stays within the node's outbound bound; and it
    /// counts a publication as `published` only then. Default: at once (a client that buffers
    /// nothing).
    ///
    /// # Errors
    ///
    /// If the connection broke first: what it held is counted as `dropped.disconnected`.
    fn flush(&self) -> impl Future<Output = Result<(), BridgeError>> + Send {
        async { Ok(()) }
    }
}

/// How many frames a received message holds, if it is what a node sends: 1 to
/// [`BROADCASTS_PER_MESSAGE_MAX`] broadcasts, several of them only within
/// [`MESSAGE_BYTES_MAX`] bytes; as many frames as broadcasts or more, and at most
/// [`FRAMES_PER_MESSAGE_MAX`]; each a complete, final, unmasked text (UTF-8) or binary frame,
/// its length in the shortest encoding, its payload within `frame_bytes_max`.
///
/// # Errors
///
/// What is wrong with it first.
pub(crate) fn check(received: &Received, frame_bytes_max: usize) -> Result<usize, &'static str> {
    use crate::wire::{Opcode, frame};
    let broadcasts = received.broadcasts;
    if !(1..=BROADCASTS_PER_MESSAGE_MAX).contains(&broadcasts) {
        return Err("broadcast count out of range");
    }
    let mut rest = &received.frames[..];
    if broadcasts > 1 && rest.len() > MESSAGE_BYTES_MAX {
        return Err("joined broadcasts over the message limit");
    }
    let mut frames = 0;
    while !rest.is_empty() {
        frames += 1;
        if frames > FRAMES_PER_MESSAGE_MAX {
            return Err("too many frames");
        }
        let (header, len) = frame::lengths(rest).ok_or("truncated header")?;
        let b0 = rest[0];
        if b0 & 0xF0 != 0x80 || rest[1] & 0x80 != 0 {
            return Err("not a final unmasked frame without reserved bits");
        }
        let minimal = match header {
            2 => true,
            4 => len >= 126,
            _ => len > 0xFFFF,
        };
        if !minimal {
            return Err("length not in its shortest encoding");
        }
        if len > frame_bytes_max as u64 {
            return Err("frame over the node's message limit");
        }
        let total = header + len as usize;
        let body = rest.get(header..total).ok_or("truncated frame")?;
        match Opcode::from_u8(b0 & 0x0F) {
            Some(Opcode::Binary) => {}
            Some(Opcode::Text) if std::str::from_utf8(body).is_ok() => {}
            Some(Opcode::Text) => return Err("text frame not in UTF-8"),
            _ => return Err("not a text or binary frame"),
        }
        rest = &rest[total..];
    }
    if frames < broadcasts {
        return Err("fewer frames than broadcasts");
    }
    Ok(frames)
}

/// What a received message holds of `bridge_inbound_bytes_max` while it waits for the shards:
/// what it expands to, not only its bytes, as each frame becomes a handle (see
/// `FRAME_OVERHEAD_BYTES`). The same for the same bytes, so that what is taken is given back.
pub(crate) fn charge(received: &Received) -> usize {
    let mut rest = &received.frames[..];
    let mut frames = 0;
    while let Some((header, len)) = crate::wire::frame::lengths(rest) {
        frames += 1;
        let total = (header as u64).saturating_add(len);
        rest = rest
            .get(usize::try_from(total).unwrap_or(usize::MAX)..)
            .unwrap_or_default();
    }
    received.frames.len() + frames * FRAME_OVERHEAD_BYTES
}

/// The frames of a received message: each a complete, final, unmasked text or binary frame
/// (text in UTF-8), sliced out of `frames` without copying.
///
/// # Errors
///
/// What is wrong with the first frame that is not.
pub(crate) fn split(mut frames: Bytes) -> Result<crate::payload::Payloads, &'static str> {
    use crate::wire::{Opcode, frame};
    if frames.is_empty() {
        return Err("no frame");
    }
    let mut payloads = crate::payload::Payloads::new();
    while !frames.is_empty() {
        let (header, len) = frame::lengths(&frames).ok_or("truncated header")?;
        let total = (header as u64)
            .checked_add(len)
            .filter(|&n| n <= frames.len() as u64)
            .ok_or("truncated frame")?;
        let payload = Payload::from_frame(frames.split_to(total as usize))
            .map_err(|_| "not a complete final frame")?;
        match payload.opcode() {
            Opcode::Binary => {}
            Opcode::Text if std::str::from_utf8(payload.body()).is_ok() => {}
            Opcode::Text => return Err("text frame not in UTF-8"),
            _ => return Err("not a text or binary frame"),
        }
        payloads.push(payload);
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Opcode, frame};
    use std::sync::atomic::Ordering::Relaxed;

    /// An inbound queue of room for `messages`, within `bytes`, that nobody reads; its link.
    fn inbound(messages: usize, bytes: usize) -> (Inbound, mpsc::Receiver<Received>, Arc<Link>) {
        let config = crate::Config {
            bridge_inbound_bytes_max: bytes,
            ..crate::Config::default()
        };
        let (out_tx, _) = mpsc::channel(1);
        let link = Arc::new(Link::new(out_tx, &config));
        let (tx, rx) = mpsc::channel(messages);
        (Inbound::new(tx, link.clone()), rx, link)
    }

    fn message(bytes: usize) -> Received {
        Received {
            channel: Channel::Everyone,
            authenticated_only: false,
            topics: None,
            frames: Payload::binary(vec![0u8; bytes - 4]).frame().clone(),
            broadcasts: 1,
        }
    }

    #[test]
    fn the_inbound_queue_holds_its_byte_limit_for_any_frame_size() {
        // A frame counts its bytes and the overhead of its handle (80 B).
        let (inbound, mut rx, link) = inbound(100, 1200);
        let dropped = || link.counters.inbound_full.load(Relaxed);
        inbound.offer(message(600));
        inbound.offer(message(600));
        assert_eq!(dropped(), 1, "680 + 680 B would pass 1200 B");
        inbound.offer(message(400));
        assert_eq!((dropped(), rx.len()), (1, 2), "680 + 480 B fit");
        // Taken out (as the fan-out does once the shards have it), the bytes are free again;
        // an empty queue takes one message of any size.
        while let Ok(r) = rx.try_recv() {
            link.inbound_bytes.give(charge(&r));
        }
        inbound.offer(message(60_000));
        assert_eq!((dropped(), rx.len()), (1, 1), "alone, any size passes");
        inbound.offer(message(10));
        assert_eq!(dropped(), 2, "but nothing beside it");
    }

    #[test]
    fn well_formed_frames_are_split_without_copying() {
        let a = Payload::text("hello");
        let b = Payload::binary(vec![7u8; 300]);
        let one = split(a.frame().clone()).expect("one frame");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].frame().as_ptr(), a.frame().as_ptr(), "not copied");
        let both = [&a.frame()[..], &b.frame()[..]].concat();
        let both = split(Bytes::from(both)).expect("two frames");
        assert_eq!((both[0].body(), both[1].body()), (a.body(), b.body()));
    }

    #[test]
    fn anything_else_is_refused() {
        let text = Payload::text("hello").frame().clone();
        let mut cases = vec![
            Bytes::new(),
            text.slice(..3),
            Bytes::from([&text[..], &[0x82][..]].concat()),
            frame::encode(Opcode::Ping, b""),
            frame::encode(Opcode::Close, b""),
            frame::encode(Opcode::Text, &[0xff, 0xfe]),
        ];
        let mut masked = text.to_vec();
        masked[1] |= 0x80;
        cases.push(Bytes::from(masked));
        let mut unfinished = text.to_vec();
        unfinished[0] &= 0x7f;
        cases.push(Bytes::from(unfinished));
        for case in cases {
            assert!(split(case.clone()).is_err(), "{case:?}");
        }
    }
}
