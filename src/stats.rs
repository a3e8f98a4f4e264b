//! `Stats`: what every shard has done, read from any thread without a round trip.
//!
//! # Invariants
//!
//! Each shard's [`Counters`] are written by that shard's thread only, so an increment is a plain
//! load and store (no read-modify-write instruction) and readers on other threads see each value
//! whole (Relaxed: a snapshot is per counter, not across counters). Each shard's block is
//! cache-padded so that shards never share a cache line.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

/// One shard's counters; the shard thread is the only writer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Registered clients (gauge).
    pub(crate) clients: AtomicU64,
    /// Broadcast payloads this shard applied (a batch counts once per payload), whoever
    /// published them. Counted after what they did (deliveries, drops, evictions) with
    /// [`bump_release`], and read first, with Acquire: a snapshot that counts a broadcast counts
    /// its effects too.
    pub(crate) broadcasts_applied: AtomicU64,
    /// Broadcast payloads that handlers on this shard published (once each, however many
    /// shards apply them).
    pub(crate) broadcasts_published: AtomicU64,
    /// Broadcasts that handlers on this shard published to a topic past the topic limits,
    /// refused: nobody can be subscribed to such a topic, and it cannot cross to other nodes.
    pub(crate) broadcasts_refused: AtomicU64,
    /// Frames appended to a client queue.
    pub(crate) deliveries: AtomicU64,
    /// Of `deliveries`, compressed frames (permessage-deflate).
    pub(crate) deliveries_deflated: AtomicU64,
    /// Bytes the compressed frames delivered saved against their plain frames.
    pub(crate) deflate_bytes_saved: AtomicU64,
    /// Clients that negotiated permessage-deflate (gauge).
    pub(crate) deflate_clients: AtomicU64,
    /// Compressed messages received and inflated.
    pub(crate) messages_inflated: AtomicU64,
    /// Compressed messages refused: inflated past `message_bytes_max` (closed 1009).
    pub(crate) inflate_too_big: AtomicU64,
    /// Compressed messages refused: not a valid deflate stream (closed 1007).
    pub(crate) inflate_corrupt: AtomicU64,
    /// Bytes written to sockets.
    pub(crate) bytes_written: AtomicU64,
    /// `write` / `writev` calls that wrote something.
    pub(crate) write_syscalls: AtomicU64,
    /// Frames dropped by a drop policy.
    pub(crate) frames_dropped: AtomicU64,
    /// Clients evicted for a full queue.
    pub(crate) evicted_slow_consumer: AtomicU64,
    /// Clients evicted for no write progress.
    pub(crate) evicted_write_deadline: AtomicU64,
    /// Clients evicted by the heartbeat sweep.
    pub(crate) evicted_heartbeat: AtomicU64,
    /// Clients evicted by the auth deadline.
    pub(crate) evicted_auth_deadline: AtomicU64,
    /// Clients closed for a protocol violation (1002, 1007, 1009).
    pub(crate) protocol_errors: AtomicU64,
    /// Clients registered (upgrades that completed), ever.
    pub(crate) registered: AtomicU64,
    /// Data messages received from clients (reassembled, inflated), and the bytes read off
    /// their sockets after the upgrade.
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    /// Clients closed other than by policy, by reason: the embedder removed it, it sent a
    /// close frame, its connection ended without one, its handler closed it, shutdown.
    pub(crate) closed_removed: AtomicU64,
    pub(crate) closed_by_client: AtomicU64,
    pub(crate) closed_disconnected: AtomicU64,
    pub(crate) closed_by_handler: AtomicU64,
    pub(crate) closed_shutdown: AtomicU64,
    /// Upgrades that failed: not a valid request (see [`HandshakeFailures`] for each cause).
    pub(crate) handshakes_malformed: AtomicU64,
    /// Refused by the policy.
    pub(crate) handshakes_refused: AtomicU64,
    /// Not complete by the handshake deadline.
    pub(crate) handshakes_timed_out: AtomicU64,
    /// The stream could not be wrapped.
    pub(crate) handshakes_wrap_failed: AtomicU64,
    /// The peer left first.
    pub(crate) handshakes_abandoned: AtomicU64,
    /// Bytes in all client queues of the shard (gauge).
    pub(crate) queued_bytes: AtomicU64,
    /// Topics with at least one subscriber on the shard (gauge).
    pub(crate) topics: AtomicU64,
    /// Subscriptions of the shard's clients (gauge).
    pub(crate) subscriptions: AtomicU64,
    /// Connections the shard's event loop serves (gauge).
    pub(crate) event_loop_connections: AtomicU64,
    /// 1 while the shard's event loop writes through an `io_uring` (gauge).
    pub(crate) io_uring_rings: AtomicU64,
    /// `io_uring` submissions that carried the loop's sends.
    pub(crate) io_uring_submissions: AtomicU64,
    /// Events queued for the inbox.
    pub(crate) inbox_events: AtomicU64,
    /// Times a connection stopped reading because its event found the inbox queue full.
    pub(crate) inbox_paused: AtomicU64,
    /// Connections not read now because their event waits for room in the inbox queue (gauge).
    pub(crate) inbox_waiting: AtomicU64,
    /// Events the shard could not queue for the inbox: it was dropped, or the shard stopped
    /// first.
    pub(crate) inbox_lost: AtomicU64,
}

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// [`bump`], ordered after every counter update the thread made before it (see `broadcasts`).
#[inline]
pub(crate) fn bump_release(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Release);
}

/// Subtracts `n` from a gauge that only the calling thread writes.
#[inline]
pub(crate) fn drop_by(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_sub(n), Relaxed);
}

/// A shard's counters, padded to their own cache lines.
pub(crate) type ShardCounters = CachePadded<Counters>;

/// Evictions, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Evictions {
    /// Outbound queue overflowed (policy `Disconnect`).
    pub slow_consumer: u64,
    /// No write progress for the write deadline.
    pub write_deadline: u64,
    /// Silent past the heartbeat timeout.
    pub heartbeat: u64,
    /// Unauthenticated past the auth deadline.
    pub auth_deadline: u64,
    /// Protocol violations (1002, 1007, 1009).
    pub protocol: u64,
}

/// Clients that left other than by policy (those are [`Evictions`]), by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Closes {
    /// The embedder removed it ([`Engine::remove`](crate::Engine::remove)).
    pub removed: u64,
    /// It sent a close frame.
    pub by_client: u64,
    /// Its connection ended without a close frame (EOF, reset).
    pub disconnected: u64,
    /// Its handler closed it ([`Context::close`](crate::Context::close)).
    pub by_handler: u64,
    /// The engine shut down.
    pub shutdown: u64,
}

/// What permessage-deflate (RFC 7692) did: see [`Compression`](crate::Compression).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DeflateStats {
    /// Registered clients that negotiated it now.
    pub clients: u64,
    /// Compressed frames appended to client queues (the rest of
    /// [`ShardStats::deliveries`] went out plain).
    pub deliveries: u64,
    /// Bytes those compressed frames saved, against the plain frames of the same messages.
    pub bytes_saved: u64,
    /// Compressed messages received from clients and inflated.
    pub inflated: u64,
    /// Compressed messages refused because they inflate past
    /// [`Config::message_bytes_max`](crate::Config::message_bytes_max) (decompression bombs,
    /// stopped at the limit; closed with 1009).
    pub too_big: u64,
    /// Compressed messages refused because they do not inflate (closed with 1007).
    pub corrupt: u64,
}

/// Upgrades that failed, by cause. Every connection that never became a client counts in
/// exactly one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HandshakeFailures {
    /// The request was not a valid WebSocket upgrade, or too large (answered 4xx).
    pub malformed: u64,
    /// The policy refused it: the `Origin` allow-list (403), shutdown (503), the handler's
    /// decision, subscriptions past the topic limits (400), or no subprotocol to answer a
    /// client that offered some (400, see [`Builder::protocols`](crate::Builder::protocols)).
    pub refused: u64,
    /// Not complete within the handshake deadline (answered 408 if part of a request came).
    pub timed_out: u64,
    /// The stream could not be wrapped (a TLS handshake failed, say) within the deadline.
    pub wrap_failed: u64,
    /// The peer left (or its socket failed) before the upgrade completed.
    pub abandoned: u64,
}

impl HandshakeFailures {
    /// Their sum.
    pub fn total(&self) -> u64 {
        self.malformed + self.refused + self.timed_out + self.wrap_failed + self.abandoned
    }
}

/// Counters of one shard, or their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ShardStats {
    /// Registered clients now.
    pub clients: u64,
    /// Broadcast payloads this shard applied (each broadcast is applied once by every shard).
    pub broadcasts_applied: u64,
    /// Broadcast payloads that handlers on this shard published.
    pub broadcasts_published: u64,
    /// Broadcasts that handlers on this shard published to a topic past the topic limits
    /// (empty, or longer than [`Config::topic_bytes_max`](crate::Config::topic_bytes_max)):
    /// refused, delivered to nobody and not sent to other nodes.
    pub broadcasts_refused: u64,
    /// Frames appended to client queues.
    pub deliveries: u64,
    /// permessage-deflate: compressed deliveries, bytes saved, inflated messages.
    pub deflate: DeflateStats,
    /// Bytes written to sockets.
    pub bytes_written: u64,
    /// Write system calls that wrote something (with [`Driver::IoUring`], sends that did:
    /// many go to the kernel in one system call, see `io_uring_submissions`).
    ///
    /// [`Driver::IoUring`]: crate::Driver::IoUring
    pub write_syscalls: u64,
    /// Frames dropped by a drop policy.
    pub frames_dropped: u64,
    /// Clients evicted, by reason.
    pub evicted: Evictions,
    /// Clients registered (upgrades that completed) since the start.
    pub registered: u64,
    /// Data messages (text and binary) received from clients, whole (reassembled, inflated).
    pub messages_received: u64,
    /// Bytes read off clients' sockets after their upgrade (frames, headers included).
    pub bytes_received: u64,
    /// Clients that left other than by eviction, by reason.
    pub closed: Closes,
    /// Upgrades that failed, whatever the cause (the sum of `handshake_failures`).
    pub handshakes_failed: u64,
    /// Upgrades that failed, by cause.
    pub handshake_failures: HandshakeFailures,
    /// Commands waiting in the shard's queue now.
    pub queue_depth: u64,
    /// Bytes waiting in the shard's client queues now.
    pub queued_bytes: u64,
    /// Topics with subscribers on this shard now (in a total, a topic counts once per shard
    /// that has subscribers of it).
    pub topics: u64,
    /// Subscriptions of this shard's clients now.
    pub subscriptions: u64,
    /// Connections the shard's event loop serves now ([`Driver::EventLoop`] or
    /// [`Driver::IoUring`]), from the end of their upgrade until their socket is closed; the
    /// others are served by tasks.
    ///
    /// [`Driver::EventLoop`]: crate::Driver::EventLoop
    /// [`Driver::IoUring`]: crate::Driver::IoUring
    pub event_loop_connections: u64,
    /// 1 if this shard's event loop writes through an `io_uring` ([`Driver::IoUring`], set
    /// up), else 0; in the total, the shards that do.
    ///
    /// [`Driver::IoUring`]: crate::Driver::IoUring
    pub io_uring_rings: u64,
    /// `io_uring` submissions that carried the event loop's writes: each is one system call
    /// for all the sends of a pass, which [`ShardStats::write_syscalls`] counts one by one
    /// (so its sends per submission are `write_syscalls / io_uring_submissions`).
    pub io_uring_submissions: u64,
    /// Events queued for the [`Inbox`](crate::Inbox) (messages and lifecycle events).
    pub inbox_events: u64,
    /// Events in this shard's inbox queue now, not yet read; at most
    /// [`Config::inbox_capacity`](crate::Config::inbox_capacity).
    pub inbox_depth: u64,
    /// Times a client stopped being read because its event found the inbox queue full.
    pub inbox_paused: u64,
    /// Clients not read now because their event waits for room in the inbox queue.
    pub inbox_waiting: u64,
    /// Events lost: not queued because the `Inbox` was dropped or the shard stopped first,
    /// still queued when the `Inbox` was dropped, or taken for an
    /// [`InboxPartition`](crate::InboxPartition) that was dropped.
    pub inbox_lost: u64,
}

/// Every shard's counters and their total, from [`crate::Engine::stats`]. With the feature
/// `serde`, it (and every part of it) is `serde::Serialize`, for an admin endpoint:
///
/// ```
/// # #[cfg(feature = "serde")]
/// # {
/// let engine = shardcast::Engine::builder().shards(2).build()?;
/// let json = serde_json::to_value(engine.stats()).unwrap();
/// assert_eq!(json["shards"].as_array().unwrap().len(), 2);
/// assert_eq!(json["total"]["deflate"]["clients"], 0);
/// # }
/// # Ok::<(), shardcast::BuildError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// Broadcast payloads published, each counted once however many shards apply it (a batch
    /// counts once per payload): through the [`Engine`](crate::Engine) and by handlers.
    /// Counted when accepted, so it may run ahead of `total.broadcasts_applied`, which counts
    /// each broadcast once per shard, after its effects.
    pub broadcasts: u64,
    /// Messages compressed for permessage-deflate (a broadcast once per window size its
    /// recipients negotiated, in practice once, however many they are; a `send` once for its
    /// client): compare with `total.deflate.deliveries`, the compressed frames delivered.
    pub compressions: u64,
    /// Upgrades [`Engine::decide`](crate::Engine::decide) refused: those of the axum
    /// extractor and of embedders that upgrade streams themselves. No shard saw them, so they
    /// are not in `total.handshake_failures` (which counts what the shards' own listeners
    /// refused).
    pub upgrades_refused_by_decide: u64,
    /// One entry per shard, by shard index.
    pub shards: Vec<ShardStats>,
    /// The sum over shards.
    pub total: ShardStats,
    /// What the bridge to other nodes did (all zero without one).
    pub bridge: BridgeStats,
}

impl ShardStats {
    pub(crate) fn read(c: &Counters, queue_depth: u64, inbox: Option<&InboxTally>) -> ShardStats {
        let mut stats = ShardStats {
            // First, and Acquire: see `Counters::broadcasts_applied`.
            broadcasts_applied: c.broadcasts_applied.load(Acquire),
            broadcasts_published: c.broadcasts_published.load(Relaxed),
            broadcasts_refused: c.broadcasts_refused.load(Relaxed),
            clients: c.clients.load(Relaxed),
            deliveries: c.deliveries.load(Relaxed),
            deflate: DeflateStats {
                clients: c.deflate_clients.load(Relaxed),
                deliveries: c.deliveries_deflated.load(Relaxed),
                bytes_saved: c.deflate_bytes_saved.load(Relaxed),
                inflated: c.messages_inflated.load(Relaxed),
                too_big: c.inflate_too_big.load(Relaxed),
                corrupt: c.inflate_corrupt.load(Relaxed),
            },
            bytes_written: c.bytes_written.load(Relaxed),
            write_syscalls: c.write_syscalls.load(Relaxed),
            frames_dropped: c.frames_dropped.load(Relaxed),
            evicted: Evictions {
                slow_consumer: c.evicted_slow_consumer.load(Relaxed),
                write_deadline: c.evicted_write_deadline.load(Relaxed),
                heartbeat: c.evicted_heartbeat.load(Relaxed),
                auth_deadline: c.evicted_auth_deadline.load(Relaxed),
                protocol: c.protocol_errors.load(Relaxed),
            },
            registered: c.registered.load(Relaxed),
            messages_received: c.messages_received.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
            closed: Closes {
                removed: c.closed_removed.load(Relaxed),
                by_client: c.closed_by_client.load(Relaxed),
                disconnected: c.closed_disconnected.load(Relaxed),
                by_handler: c.closed_by_handler.load(Relaxed),
                shutdown: c.closed_shutdown.load(Relaxed),
            },
            handshakes_failed: 0,
            handshake_failures: HandshakeFailures {
                malformed: c.handshakes_malformed.load(Relaxed),
                refused: c.handshakes_refused.load(Relaxed),
                timed_out: c.handshakes_timed_out.load(Relaxed),
                wrap_failed: c.handshakes_wrap_failed.load(Relaxed),
                abandoned: c.handshakes_abandoned.load(Relaxed),
            },
            queue_depth,
            queued_bytes: c.queued_bytes.load(Relaxed),
            topics: c.topics.load(Relaxed),
            subscriptions: c.subscriptions.load(Relaxed),
            event_loop_connections: c.event_loop_connections.load(Relaxed),
            io_uring_rings: c.io_uring_rings.load(Relaxed),
            io_uring_submissions: c.io_uring_submissions.load(Relaxed),
            inbox_events: 0,
            inbox_depth: 0,
            inbox_paused: c.inbox_paused.load(Relaxed),
            inbox_waiting: c.inbox_waiting.load(Relaxed),
            inbox_lost: c.inbox_lost.load(Relaxed),
        };
        // Taken first: every event taken was queued before, so the depth is never negative.
        let (taken, dropped) =
            inbox.map_or((0, 0), |t| (t.taken.load(Relaxed), t.dropped.load(Relaxed)));
        stats.inbox_events = c.inbox_events.load(Relaxed);
        stats.inbox_depth = stats.inbox_events.saturating_sub(taken);
        stats.inbox_lost += dropped;
        stats.handshakes_failed = stats.handshake_failures.total();
        stats
    }

    fn add(&mut self, o: &ShardStats) {
        self.clients += o.clients;
        self.broadcasts_applied += o.broadcasts_applied;
        self.broadcasts_published += o.broadcasts_published;
        self.broadcasts_refused += o.broadcasts_refused;
        self.deliveries += o.deliveries;
        let (d, e) = (&mut self.deflate, &o.deflate);
        d.clients += e.clients;
        d.deliveries += e.deliveries;
        d.bytes_saved += e.bytes_saved;
        d.inflated += e.inflated;
        d.too_big += e.too_big;
        d.corrupt += e.corrupt;
        self.bytes_written += o.bytes_written;
        self.write_syscalls += o.write_syscalls;
        self.frames_dropped += o.frames_dropped;
        self.evicted.slow_consumer += o.evicted.slow_consumer;
        self.evicted.write_deadline += o.evicted.write_deadline;
        self.evicted.heartbeat += o.evicted.heartbeat;
        self.evicted.auth_deadline += o.evicted.auth_deadline;
        self.evicted.protocol += o.evicted.protocol;
        self.registered += o.registered;
        self.messages_received += o.messages_received;
        self.bytes_received += o.bytes_received;
        let (c, d) = (&mut self.closed, &o.closed);
        c.removed += d.removed;
        c.by_client += d.by_client;
        c.disconnected += d.disconnected;
        c.by_handler += d.by_handler;
        c.shutdown += d.shutdown;
        self.handshakes_failed += o.handshakes_failed;
        let (f, g) = (&mut self.handshake_failures, &o.handshake_failures);
        f.malformed += g.malformed;
        f.refused += g.refused;
        f.timed_out += g.timed_out;
        f.wrap_failed += g.wrap_failed;
        f.abandoned += g.abandoned;
        self.queue_depth += o.queue_depth;
        self.queued_bytes += o.queued_bytes;
        self.topics += o.topics;
        self.subscriptions += o.subscriptions;
        self.event_loop_connections += o.event_loop_connections;
        self.io_uring_rings += o.io_uring_rings;
        self.io_uring_submissions += o.io_uring_submissions;
        self.inbox_events += o.inbox_events;
        self.inbox_depth += o.inbox_depth;
        self.inbox_paused += o.inbox_paused;
        self.inbox_waiting += o.inbox_waiting;
        self.inbox_lost += o.inbox_lost;
    }
}

impl Stats {
    /// The stats of `shards`, with `published` broadcasts through the engine's own API.
    pub(crate) fn from_shards(
        shards: Vec<ShardStats>,
        published: u64,
        compressions: u64,
        bridge: BridgeStats,
    ) -> Stats {
        let mut total = ShardStats::default();
        for s in &shards {
            total.add(s);
        }
        Stats {
            broadcasts: published + total.broadcasts_published,
            compressions,
            upgrades_refused_by_decide: 0,
            shards,
            total,
            bridge,
        }
    }
}

/// What a node's bridge to other nodes did ([`crate::Builder::bridge`]), counted by the
/// shards, the engine and the bridge thread, so each counter is a read-modify-write.
#[derive(Debug, Default)]
pub(crate) struct BridgeCounters {
    /// 1 while the broker connection is up (gauge).
    pub(crate) connected: AtomicU64,
    /// Broadcasts published to the broker (once per channel).
    pub(crate) published: AtomicU64,
    /// Messages published to the broker (each carries one or more broadcasts).
    pub(crate) messages: AtomicU64,
    /// Broadcasts received from the broker.
    pub(crate) received: AtomicU64,
    /// Received broadcasts handed to the local shards.
    pub(crate) delivered: AtomicU64,
    /// Topics the node holds a broker subscription for (gauge).
    pub(crate) subscriptions: AtomicU64,
    /// Broker subscriptions made.
    pub(crate) subscribes: AtomicU64,
    /// Broker subscriptions dropped.
    pub(crate) unsubscribes: AtomicU64,
    /// Times the broker connection was lost.
    pub(crate) disconnects: AtomicU64,
    /// Broadcasts not published: the outbound queue was full.
    pub(crate) outbound_full: AtomicU64,
    /// Broadcasts not published: the broker was not connected.
    pub(crate) disconnected: AtomicU64,
    /// Broadcasts the broker refused to publish (too large, invalid).
    pub(crate) publish_failed: AtomicU64,
    /// Broadcasts not published: the bridge had stopped.
    pub(crate) stopped: AtomicU64,
    /// Received broadcasts dropped: the inbound queue was full.
    pub(crate) inbound_full: AtomicU64,
    /// Received messages dropped: not well-formed frames, or unreadable headers or subject.
    pub(crate) malformed: AtomicU64,
    /// Messages the broker client dropped for a slow consumer (its own events).
    pub(crate) slow_consumer: AtomicU64,
    /// Broker subscriptions refused.
    pub(crate) subscribe_failed: AtomicU64,
}

/// Adds `n` to a counter that several threads write.
#[inline]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// What was lost between this node and the others, by reason. Every loss is counted here;
/// none is silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BridgeDrops {
    /// Local broadcasts not published: the outbound queue
    /// ([`Config::bridge_outbound_capacity`](crate::Config::bridge_outbound_capacity)) was full.
    pub outbound_full: u64,
    /// Local broadcasts not published: the broker was not connected (an outage, or
    /// `bridge_optional` before the first connection).
    pub disconnected: u64,
    /// Local broadcasts the broker refused to publish (larger than its payload limit, say).
    pub publish_failed: u64,
    /// Local broadcasts not published: the bridge had stopped (shutdown).
    pub stopped: u64,
    /// Received broadcasts dropped: the inbound queue
    /// ([`Config::bridge_inbound_capacity`](crate::Config::bridge_inbound_capacity)) was full.
    pub inbound_full: u64,
    /// Received messages dropped as malformed: not complete final text or binary frames, or
    /// an unreadable subject or header.
    pub malformed: u64,
    /// Messages the broker client dropped because the node read too slowly (NATS
    /// slow-consumer events; a lower bound if the client's own event queue overflowed).
    pub slow_consumer: u64,
    /// Broker subscriptions refused (a topic whose subject is too long for the server).
    pub subscribe_failed: u64,
}

/// What this node exchanged with the other nodes through its bridge (all zero without one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BridgeStats {
    /// Whether the broker connection is up now.
    pub connected: bool,
    /// Local broadcasts published to the broker: one per broadcast to everyone, one per topic
    /// of a broadcast to topics.
    pub published: u64,
    /// Messages published to the broker: at most one per broadcast counted in `published`,
    /// as consecutive broadcasts with the same audience travel together
    /// ([`BROADCASTS_PER_MESSAGE_MAX`](crate::bridge::BROADCASTS_PER_MESSAGE_MAX)).
    pub messages: u64,
    /// Broadcasts received from the broker (other nodes' broadcasts this node subscribes to).
    pub received: u64,
    /// Received broadcasts handed to the local shards. A broadcast to several topics arrives
    /// once per topic this node subscribes to, and is delivered once.
    pub delivered: u64,
    /// Topics this node holds a broker subscription for now (not counting the one every node
    /// holds for broadcasts to everyone).
    pub subscriptions: u64,
    /// Broker subscriptions made to topics, in all.
    pub subscribes: u64,
    /// Broker subscriptions to topics dropped, in all.
    pub unsubscribes: u64,
    /// Times the broker connection was lost.
    pub disconnects: u64,
    /// Losses, by reason.
    pub dropped: BridgeDrops,
}

impl BridgeStats {
    pub(crate) fn read(c: &BridgeCounters) -> BridgeStats {
        let r = |a: &AtomicU64| a.load(Relaxed);
        BridgeStats {
            connected: r(&c.connected) != 0,
            published: r(&c.published),
            messages: r(&c.messages),
            received: r(&c.received),
            delivered: r(&c.delivered),
            subscriptions: r(&c.subscriptions),
            subscribes: r(&c.subscribes),
            unsubscribes: r(&c.unsubscribes),
            disconnects: r(&c.disconnects),
            dropped: BridgeDrops {
                outbound_full: r(&c.outbound_full),
                disconnected: r(&c.disconnected),
                publish_failed: r(&c.publish_failed),
                stopped: r(&c.stopped),
                inbound_full: r(&c.inbound_full),
                malformed: r(&c.malformed),
                slow_consumer: r(&c.slow_consumer),
                subscribe_failed: r(&c.subscribe_failed),
            },
        }
    }
}

/// What the consumer side of one shard's queue counted: written by the [`Inbox`](crate::Inbox) only, read by
/// [`Engine::stats`](crate::Engine::stats).
#[derive(Debug, Default)]
pub(crate) struct InboxTally {
    /// Events taken out of the queue (received, or dropped with the `Inbox`).
    pub(crate) taken: AtomicU64,
    /// Events still queued when the `Inbox` was dropped, or taken for a dropped
    /// `InboxPartition`: lost, and counted as such.
    pub(crate) dropped: AtomicU64,
}
