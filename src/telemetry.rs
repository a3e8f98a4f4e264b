//! `Metrics`: an engine's [`Stats`](crate::Stats), exported through the `metrics` facade.
//!
//! # Invariants
//!
//! The hot path pays nothing for metrics: the shards keep their own counters
//! ([`Engine::stats`] reads them from any thread without a round trip), and [`Metrics::record`]
//! copies a snapshot of them into the facade's counters and gauges as absolute values. No shard
//! ever calls into a recorder, so a slow or locking recorder cannot slow a shard down.
//!
//! Labels are `shard` (its index) and `reason` (a fixed set of names), never a topic or a
//! client, so the number of series is bounded by the number of shards.

use crate::Engine;
use crate::stats::{BridgeStats, ShardStats, Stats};
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use std::time::Duration;

/// The metrics [`Metrics`] records, by name: Prometheus names, `_total` for counters.
mod name {
    pub(super) const BUILD_INFO: &str = "shardcast_build_info";
    pub(super) const BROADCASTS: &str = "shardcast_broadcasts_total";
    pub(super) const DECIDE_REFUSED: &str = "shardcast_upgrades_refused_by_decide_total";
    pub(super) const CONNECTIONS: &str = "shardcast_connections";
    pub(super) const CLIENTS: &str = "shardcast_clients";
    pub(super) const BROADCASTS_APPLIED: &str = "shardcast_broadcasts_applied_total";
    pub(super) const BROADCASTS_PUBLISHED: &str = "shardcast_broadcasts_published_total";
    pub(super) const BROADCASTS_REFUSED: &str = "shardcast_broadcasts_refused_total";
    pub(super) const DELIVERIES: &str = "shardcast_deliveries_total";
    pub(super) const REGISTERED: &str = "shardcast_registered_total";
    pub(super) const CLOSES: &str = "shardcast_closes_total";
    pub(super) const MESSAGES_RECEIVED: &str = "shardcast_messages_received_total";
    pub(super) const RECEIVED_BYTES: &str = "shardcast_received_bytes_total";
    pub(super) const DEFLATE_CLIENTS: &str = "shardcast_deflate_clients";
    pub(super) const DEFLATE_DELIVERIES: &str = "shardcast_deflate_deliveries_total";
    pub(super) const DEFLATE_SAVED_BYTES: &str = "shardcast_deflate_saved_bytes_total";
    pub(super) const INFLATED_MESSAGES: &str = "shardcast_inflated_messages_total";
    pub(super) const INFLATE_REFUSED: &str = "shardcast_inflate_refused_total";
    pub(super) const WRITTEN_BYTES: &str = "shardcast_written_bytes_total";
    pub(super) const WRITE_CALLS: &str = "shardcast_write_calls_total";
    pub(super) const FRAMES_DROPPED: &str = "shardcast_frames_dropped_total";
    pub(super) const EVICTIONS: &str = "shardcast_evictions_total";
    pub(super) const HANDSHAKE_FAILURES: &str = "shardcast_handshake_failures_total";
    pub(super) const QUEUE_DEPTH: &str = "shardcast_queue_depth";
    pub(super) const QUEUED_BYTES: &str = "shardcast_queued_bytes";
    pub(super) const TOPICS: &str = "shardcast_topics";
    pub(super) const SUBSCRIPTIONS: &str = "shardcast_subscriptions";
    pub(super) const EVENT_LOOP_CONNECTIONS: &str = "shardcast_event_loop_connections";
    pub(super) const INBOX_EVENTS: &str = "shardcast_inbox_events_total";
    pub(super) const INBOX_DEPTH: &str = "shardcast_inbox_depth";
    pub(super) const INBOX_PAUSES: &str = "shardcast_inbox_pauses_total";
    pub(super) const INBOX_WAITING: &str = "shardcast_inbox_waiting";
    pub(super) const INBOX_LOST: &str = "shardcast_inbox_lost_total";
    pub(super) const BRIDGE_CONNECTED: &str = "shardcast_bridge_connected";
    pub(super) const BRIDGE_SUBSCRIPTIONS: &str = "shardcast_bridge_subscriptions";
    pub(super) const BRIDGE_PUBLISHED: &str = "shardcast_bridge_published_total";
    pub(super) const BRIDGE_MESSAGES: &str = "shardcast_bridge_messages_total";
    pub(super) const BRIDGE_RECEIVED: &str = "shardcast_bridge_received_total";
    pub(super) const BRIDGE_DELIVERED: &str = "shardcast_bridge_delivered_total";
    pub(super) const BRIDGE_DISCONNECTS: &str = "shardcast_bridge_disconnects_total";
    pub(super) const BRIDGE_DROPPED: &str = "shardcast_bridge_dropped_total";
}

/// An engine's counters, recorded into the [`metrics`](https://docs.rs/metrics) facade, so that
/// any `metrics` exporter (Prometheus, StatsD, ...) publishes them. Feature `metrics`.
///
/// Recording is a copy of [`Engine::stats`] into the facade's counters and gauges: the shards
/// keep counting as they always do and never call a recorder, so the hot path costs the same
/// with metrics as without. Call [`Metrics::record`] before each scrape, or let
/// [`Metrics::run`] record on an interval; what an exporter shows is then at most one interval
/// old.
///
/// | name | kind | labels | what |
/// | --- | --- | --- | --- |
/// | `shardcast_build_info` | gauge | `version` | always 1: the crate version serving (join on it to tell nodes apart during a rollout) |
/// | `shardcast_broadcasts_total` | counter | | broadcasts published ([`Stats::broadcasts`]) |
/// | `shardcast_upgrades_refused_by_decide_total` | counter | | upgrades [`Engine::decide`] refused (the axum extractor's, an embedder's own upgrades) |
/// | `shardcast_connections` | gauge | | connections, upgrades included ([`Engine::connection_count`]) |
/// | `shardcast_clients` | gauge | `shard` | registered clients |
/// | `shardcast_broadcasts_applied_total` | counter | `shard` | broadcasts the shard applied |
/// | `shardcast_broadcasts_published_total` | counter | `shard` | broadcasts its handlers published |
/// | `shardcast_broadcasts_refused_total` | counter | `shard` | broadcasts its handlers published to a topic past the limits |
/// | `shardcast_deliveries_total` | counter | `shard` | frames appended to client queues |
/// | `shardcast_registered_total` | counter | `shard` | clients registered (upgrades completed) |
/// | `shardcast_closes_total` | counter | `shard`, `reason` | clients that left other than by eviction: `removed`, `by_client`, `disconnected`, `by_handler`, `shutdown` |
/// | `shardcast_messages_received_total` | counter | `shard` | data messages received from clients |
/// | `shardcast_received_bytes_total` | counter | `shard` | bytes read off clients' sockets after their upgrade |
/// | `shardcast_deflate_clients` | gauge | `shard` | clients that negotiated permessage-deflate |
/// | `shardcast_deflate_deliveries_total` | counter | `shard` | of the deliveries, compressed frames |
/// | `shardcast_deflate_saved_bytes_total` | counter | `shard` | bytes those compressed frames saved against plain ones |
/// | `shardcast_inflated_messages_total` | counter | `shard` | compressed messages received and inflated |
/// | `shardcast_inflate_refused_total` | counter | `shard`, `reason` | compressed messages refused: `too_big` (inflated past the limit, a bomb), `corrupt` |
/// | `shardcast_written_bytes_total` | counter | `shard` | bytes written to sockets |
/// | `shardcast_write_calls_total` | counter | `shard` | `write`/`writev` calls that wrote |
/// | `shardcast_frames_dropped_total` | counter | `shard` | frames dropped by the drop policy |
/// | `shardcast_evictions_total` | counter | `shard`, `reason` | clients closed by policy: `slow_consumer`, `write_deadline`, `heartbeat`, `auth_deadline`, `protocol` |
/// | `shardcast_handshake_failures_total` | counter | `shard`, `reason` | upgrades that failed: `malformed`, `refused`, `timed_out`, `wrap_failed`, `abandoned` |
/// | `shardcast_queue_depth` | gauge | `shard` | commands waiting in the shard's queue |
/// | `shardcast_queued_bytes` | gauge | `shard` | bytes waiting in its client queues |
/// | `shardcast_topics` | gauge | `shard` | topics with subscribers on the shard |
/// | `shardcast_subscriptions` | gauge | `shard` | subscriptions of its clients |
/// | `shardcast_event_loop_connections` | gauge | `shard` | connections its event loop serves |
/// | `shardcast_inbox_events_total` | counter | `shard` | events queued for the [`Inbox`](crate::Inbox) |
/// | `shardcast_inbox_depth` | gauge | `shard` | events in its inbox queue, not yet read |
/// | `shardcast_inbox_pauses_total` | counter | `shard` | times a client stopped being read for a full inbox queue |
/// | `shardcast_inbox_waiting` | gauge | `shard` | clients not read now, their event waiting for the inbox |
/// | `shardcast_inbox_lost_total` | counter | `shard` | inbox events lost (inbox or its partition dropped, shard stopped first) |
///
/// With a bridge to other nodes ([`Builder::bridge`](crate::Builder::bridge); see
/// [`BridgeStats`](crate::BridgeStats)):
///
/// | name | kind | labels | what |
/// | --- | --- | --- | --- |
/// | `shardcast_bridge_connected` | gauge | | 1 while the broker connection is up |
/// | `shardcast_bridge_subscriptions` | gauge | | topics the node holds a broker subscription for |
/// | `shardcast_bridge_published_total` | counter | | local broadcasts published to the broker |
/// | `shardcast_bridge_messages_total` | counter | | broker messages they travelled in |
/// | `shardcast_bridge_received_total` | counter | | broadcasts received from other nodes |
/// | `shardcast_bridge_delivered_total` | counter | | received broadcasts handed to the shards |
/// | `shardcast_bridge_disconnects_total` | counter | | times the broker connection was lost |
/// | `shardcast_bridge_dropped_total` | counter | `reason` | broadcasts lost between nodes: `outbound_full`, `disconnected`, `publish_failed`, `stopped`, `inbound_full`, `malformed`, `slow_consumer`, `subscribe_failed` |
///
/// Counters are set with [`Counter::absolute`], which never moves a counter back: record one
/// engine per recorder (or tell engines apart with a global label of the exporter).
///
/// The facade's handles are taken from the recorder installed when [`Metrics::new`] runs
/// (the global one, or a local one for the call): install the recorder first.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shardcast::{Engine, Metrics};
/// use std::time::Duration;
///
/// let engine = Engine::builder().shards(2).build()?;
/// // After installing a recorder (`metrics_exporter_prometheus::PrometheusBuilder`, say):
/// let metrics = Metrics::new(&engine);
/// metrics.record(); // once, e.g. before a scrape
/// let every_second = tokio::spawn(metrics.run(Duration::from_secs(1)));
/// # every_second.abort();
/// # engine.shutdown(Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Metrics {
    /// The engine whose stats are recorded; a clone, so it does not stop shards on drop, but
    /// [`Engine::shutdown`] stops them whoever holds clones.
    engine: Engine,
    /// `shardcast_broadcasts_total`.
    broadcasts: Counter,
    /// `shardcast_upgrades_refused_by_decide_total`.
    decide_refused: Counter,
    /// `shardcast_connections`.
    connections: Gauge,
    /// One set per shard, by shard index.
    shards: Vec<ShardMetrics>,
    /// The bridge's, if the engine has one.
    bridge: Option<BridgeMetrics>,
}

/// The handles of the bridge's metrics.
#[derive(Debug)]
struct BridgeMetrics {
    connected: Gauge,
    subscriptions: Gauge,
    published: Counter,
    messages: Counter,
    received: Counter,
    delivered: Counter,
    disconnects: Counter,
    /// `shardcast_bridge_dropped_total`, in the order of [`BRIDGE_DROP_REASONS`].
    dropped: [Counter; 8],
}

/// The `reason` label of `shardcast_bridge_dropped_total`, one per field of
/// [`BridgeDrops`](crate::BridgeDrops).
const BRIDGE_DROP_REASONS: [&str; 8] = [
    "outbound_full",
    "disconnected",
    "publish_failed",
    "stopped",
    "inbound_full",
    "malformed",
    "slow_consumer",
    "subscribe_failed",
];

impl BridgeMetrics {
    fn new() -> BridgeMetrics {
        BridgeMetrics {
            connected: gauge!(name::BRIDGE_CONNECTED),
            subscriptions: gauge!(name::BRIDGE_SUBSCRIPTIONS),
            published: counter!(name::BRIDGE_PUBLISHED),
            messages: counter!(name::BRIDGE_MESSAGES),
            received: counter!(name::BRIDGE_RECEIVED),
            delivered: counter!(name::BRIDGE_DELIVERED),
            disconnects: counter!(name::BRIDGE_DISCONNECTS),
            dropped: BRIDGE_DROP_REASONS
                .map(|reason| counter!(name::BRIDGE_DROPPED, "reason" => reason)),
        }
    }

    fn record(&self, b: &BridgeStats) {
        self.connected.set(f64::from(u8::from(b.connected)));
        self.subscriptions.set(b.subscriptions as f64);
        self.published.absolute(b.published);
        self.messages.absolute(b.messages);
        self.received.absolute(b.received);
        self.delivered.absolute(b.delivered);
        self.disconnects.absolute(b.disconnects);
        let d = &b.dropped;
        let dropped = [
            d.outbound_full,
            d.disconnected,
            d.publish_failed,
            d.stopped,
            d.inbound_full,
            d.malformed,
            d.slow_consumer,
            d.subscribe_failed,
        ];
        for (counter, n) in self.dropped.iter().zip(dropped) {
            counter.absolute(n);
        }
    }
}

/// The handles of one shard's metrics, labelled with its index.
#[derive(Debug)]
struct ShardMetrics {
    /// `shardcast_clients`.
    clients: Gauge,
    /// `shardcast_broadcasts_applied_total`.
    broadcasts_applied: Counter,
    /// `shardcast_broadcasts_published_total`.
    broadcasts_published: Counter,
    /// `shardcast_broadcasts_refused_total`.
    broadcasts_refused: Counter,
    /// `shardcast_deliveries_total`.
    deliveries: Counter,
    /// `shardcast_registered_total`.
    registered: Counter,
    /// `shardcast_closes_total`, in the order of [`CLOSE_REASONS`].
    closes: [Counter; 5],
    /// `shardcast_messages_received_total`.
    messages_received: Counter,
    /// `shardcast_received_bytes_total`.
    received_bytes: Counter,
    /// `shardcast_deflate_clients`.
    deflate_clients: Gauge,
    /// `shardcast_deflate_deliveries_total`.
    deflate_deliveries: Counter,
    /// `shardcast_deflate_saved_bytes_total`.
    deflate_saved: Counter,
    /// `shardcast_inflated_messages_total`.
    inflated: Counter,
    /// `shardcast_inflate_refused_total`: `too_big`, `corrupt`.
    inflate_refused: [Counter; 2],
    /// `shardcast_written_bytes_total`.
    written_bytes: Counter,
    /// `shardcast_write_calls_total`.
    write_calls: Counter,
    /// `shardcast_frames_dropped_total`.
    frames_dropped: Counter,
    /// `shardcast_evictions_total`, in the order of [`EVICTION_REASONS`].
    evictions: [Counter; 5],
    /// `shardcast_handshake_failures_total`, in the order of [`HANDSHAKE_CAUSES`].
    handshake_failures: [Counter; 5],
    /// `shardcast_queue_depth`.
    queue_depth: Gauge,
    /// `shardcast_queued_bytes`.
    queued_bytes: Gauge,
    /// `shardcast_topics`.
    topics: Gauge,
    /// `shardcast_subscriptions`.
    subscriptions: Gauge,
    /// `shardcast_event_loop_connections`.
    event_loop_connections: Gauge,
    /// `shardcast_inbox_events_total`.
    inbox_events: Counter,
    /// `shardcast_inbox_depth`.
    inbox_depth: Gauge,
    /// `shardcast_inbox_pauses_total`.
    inbox_pauses: Counter,
    /// `shardcast_inbox_waiting`.
    inbox_waiting: Gauge,
    /// `shardcast_inbox_lost_total`.
    inbox_lost: Counter,
}

/// The `reason` label of `shardcast_closes_total`, one per field of
/// [`Closes`](crate::Closes).
const CLOSE_REASONS: [&str; 5] = [
    "removed",
    "by_client",
    "disconnected",
    "by_handler",
    "shutdown",
];

/// The `reason` label of `shardcast_handshake_failures_total` (the key every family with a
/// cause uses), one per field of
/// [`HandshakeFailures`](crate::HandshakeFailures).
const HANDSHAKE_CAUSES: [&str; 5] = [
    "malformed",
    "refused",
    "timed_out",
    "wrap_failed",
    "abandoned",
];

/// The `reason` label of `shardcast_evictions_total`, one per field of
/// [`Evictions`](crate::Evictions).
const EVICTION_REASONS: [&str; 5] = [
    "slow_consumer",
    "write_deadline",
    "heartbeat",
    "auth_deadline",
    "protocol",
];

impl Metrics {
    /// Registers `engine`'s metrics (names, units, help texts) with the recorder installed
    /// now, and keeps their handles; records nothing yet.
    pub fn new(engine: &Engine) -> Metrics {
        describe();
        gauge!(name::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let shards = (0..engine.shard_count())
            .map(|i| ShardMetrics::new(i.to_string()))
            .collect();
        Metrics {
            engine: engine.clone(),
            broadcasts: counter!(name::BROADCASTS),
            decide_refused: counter!(name::DECIDE_REFUSED),
            connections: gauge!(name::CONNECTIONS),
            shards,
            bridge: engine.bridged().then(BridgeMetrics::new),
        }
    }

    /// Records a snapshot of the engine's counters: a few dozen atomic loads per shard, no
    /// round trip to the shards, no allocation past the snapshot's `Vec`.
    pub fn record(&self) {
        self.record_stats(&self.engine.stats(), self.engine.connection_count());
    }

    /// Records `stats` and `connections`.
    fn record_stats(&self, stats: &Stats, connections: usize) {
        self.broadcasts.absolute(stats.broadcasts);
        self.decide_refused
            .absolute(stats.upgrades_refused_by_decide);
        self.connections.set(connections as f64);
        for (metrics, shard) in self.shards.iter().zip(&stats.shards) {
            metrics.record(shard);
        }
        if let Some(bridge) = &self.bridge {
            bridge.record(&stats.bridge);
        }
    }

    /// Records every `every`, from now on; never returns (drop the future or abort its task to
    /// stop). Put it on any runtime: it only reads counters.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call has recorded whole snapshots only.
    pub async fn run(self, every: Duration) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.record();
        }
    }
}

impl ShardMetrics {
    /// The handles of shard `shard`'s metrics.
    fn new(shard: String) -> ShardMetrics {
        let evictions = EVICTION_REASONS
            .map(|reason| counter!(name::EVICTIONS, "shard" => shard.clone(), "reason" => reason));
        ShardMetrics {
            clients: gauge!(name::CLIENTS, "shard" => shard.clone()),
            broadcasts_applied: counter!(name::BROADCASTS_APPLIED, "shard" => shard.clone()),
            broadcasts_published: counter!(name::BROADCASTS_PUBLISHED, "shard" => shard.clone()),
            broadcasts_refused: counter!(name::BROADCASTS_REFUSED, "shard" => shard.clone()),
            deliveries: counter!(name::DELIVERIES, "shard" => shard.clone()),
            registered: counter!(name::REGISTERED, "shard" => shard.clone()),
            closes: CLOSE_REASONS.map(|reason| {
                counter!(name::CLOSES, "shard" => shard.clone(), "reason" => reason)
            }),
            messages_received: counter!(name::MESSAGES_RECEIVED, "shard" => shard.clone()),
            received_bytes: counter!(name::RECEIVED_BYTES, "shard" => shard.clone()),
            deflate_clients: gauge!(name::DEFLATE_CLIENTS, "shard" => shard.clone()),
            deflate_deliveries: counter!(name::DEFLATE_DELIVERIES, "shard" => shard.clone()),
            deflate_saved: counter!(name::DEFLATE_SAVED_BYTES, "shard" => shard.clone()),
            inflated: counter!(name::INFLATED_MESSAGES, "shard" => shard.clone()),
            inflate_refused: ["too_big", "corrupt"].map(|reason| {
                counter!(name::INFLATE_REFUSED, "shard" => shard.clone(), "reason" => reason)
            }),
            written_bytes: counter!(name::WRITTEN_BYTES, "shard" => shard.clone()),
            write_calls: counter!(name::WRITE_CALLS, "shard" => shard.clone()),
            frames_dropped: counter!(name::FRAMES_DROPPED, "shard" => shard.clone()),
            evictions,
            handshake_failures: HANDSHAKE_CAUSES.map(|cause| {
                counter!(name::HANDSHAKE_FAILURES, "shard" => shard.clone(), "reason" => cause)
            }),
            queue_depth: gauge!(name::QUEUE_DEPTH, "shard" => shard.clone()),
            queued_bytes: gauge!(name::QUEUED_BYTES, "shard" => shard.clone()),
            topics: gauge!(name::TOPICS, "shard" => shard.clone()),
            subscriptions: gauge!(name::SUBSCRIPTIONS, "shard" => shard.clone()),
            event_loop_connections: gauge!(name::EVENT_LOOP_CONNECTIONS, "shard" => shard.clone()),
            inbox_events: counter!(name::INBOX_EVENTS, "shard" => shard.clone()),
            inbox_depth: gauge!(name::INBOX_DEPTH, "shard" => shard.clone()),
            inbox_pauses: counter!(name::INBOX_PAUSES, "shard" => shard.clone()),
            inbox_waiting: gauge!(name::INBOX_WAITING, "shard" => shard.clone()),
            inbox_lost: counter!(name::INBOX_LOST, "shard" => shard),
        }
    }

    /// Records one shard's counters.
    fn record(&self, s: &ShardStats) {
        self.clients.set(s.clients as f64);
        self.broadcasts_applied.absolute(s.broadcasts_applied);
        self.broadcasts_published.absolute(s.broadcasts_published);
        self.broadcasts_refused.absolute(s.broadcasts_refused);
        self.deliveries.absolute(s.deliveries);
        self.registered.absolute(s.registered);
        let c = &s.closed;
        let closes = [
            c.removed,
            c.by_client,
            c.disconnected,
            c.by_handler,
            c.shutdown,
        ];
        for (counter, n) in self.closes.iter().zip(closes) {
            counter.absolute(n);
        }
        self.messages_received.absolute(s.messages_received);
        self.received_bytes.absolute(s.bytes_received);
        let d = &s.deflate;
        self.deflate_clients.set(d.clients as f64);
        self.deflate_deliveries.absolute(d.deliveries);
        self.deflate_saved.absolute(d.bytes_saved);
        self.inflated.absolute(d.inflated);
        self.inflate_refused[0].absolute(d.too_big);
        self.inflate_refused[1].absolute(d.corrupt);
        self.written_bytes.absolute(s.bytes_written);
        self.write_calls.absolute(s.write_syscalls);
        self.frames_dropped.absolute(s.frames_dropped);
        let e = &s.evicted;
        let evictions = [
            e.slow_consumer,
            e.write_deadline,
            e.heartbeat,
            e.auth_deadline,
            e.protocol,
        ];
        for (counter, n) in self.evictions.iter().zip(evictions) {
            counter.absolute(n);
        }
        let f = &s.handshake_failures;
        let causes = [
            f.malformed,
            f.refused,
            f.timed_out,
            f.wrap_failed,
            f.abandoned,
        ];
        for (counter, n) in self.handshake_failures.iter().zip(causes) {
            counter.absolute(n);
        }
        self.queue_depth.set(s.queue_depth as f64);
        self.queued_bytes.set(s.queued_bytes as f64);
        self.topics.set(s.topics as f64);
        self.subscriptions.set(s.subscriptions as f64);
        self.event_loop_connections
            .set(s.event_loop_connections as f64);
        self.inbox_events.absolute(s.inbox_events);
        self.inbox_depth.set(s.inbox_depth as f64);
        self.inbox_pauses.absolute(s.inbox_paused);
        self.inbox_waiting.set(s.inbox_waiting as f64);
        self.inbox_lost.absolute(s.inbox_lost);
    }
}

/// Describes every metric (unit and help text) to the recorder installed now.
fn describe() {
    describe_gauge!(
        name::BUILD_INFO,
        "Always 1, labelled with the shardcast version serving."
    );
    describe_counter!(name::BROADCASTS, "Broadcast payloads published, once each.");
    describe_counter!(
        name::DECIDE_REFUSED,
        "Upgrades Engine::decide refused (axum, an embedder's own upgrades)."
    );
    describe_gauge!(
        name::CONNECTIONS,
        "Connections now, those still in their upgrade included."
    );
    describe_gauge!(name::CLIENTS, "Registered clients now.");
    describe_counter!(
        name::BROADCASTS_APPLIED,
        "Broadcast payloads the shard applied to its clients."
    );
    describe_counter!(
        name::BROADCASTS_PUBLISHED,
        "Broadcast payloads the shard's handlers published."
    );
    describe_counter!(
        name::BROADCASTS_REFUSED,
        "Broadcasts the shard's handlers published to a topic past the topic limits, refused."
    );
    describe_counter!(name::DELIVERIES, "Frames appended to client queues.");
    describe_counter!(
        name::REGISTERED,
        "Clients registered (upgrades that completed)."
    );
    describe_counter!(
        name::CLOSES,
        "Clients that left other than by eviction, by reason."
    );
    describe_counter!(
        name::MESSAGES_RECEIVED,
        "Data messages received from clients (whole: reassembled, inflated)."
    );
    describe_counter!(
        name::RECEIVED_BYTES,
        Unit::Bytes,
        "Bytes read off clients' sockets after their upgrade."
    );
    describe_gauge!(
        name::DEFLATE_CLIENTS,
        "Clients that negotiated permessage-deflate."
    );
    describe_counter!(
        name::DEFLATE_DELIVERIES,
        "Of the deliveries, compressed frames (permessage-deflate)."
    );
    describe_counter!(
        name::DEFLATE_SAVED_BYTES,
        Unit::Bytes,
        "Bytes the compressed frames delivered saved against the plain ones."
    );
    describe_counter!(
        name::INFLATED_MESSAGES,
        "Compressed messages received from clients and inflated."
    );
    describe_counter!(
        name::INFLATE_REFUSED,
        "Compressed messages refused: inflated past the limit (too_big), or corrupt."
    );
    describe_counter!(
        name::WRITTEN_BYTES,
        Unit::Bytes,
        "Bytes written to sockets."
    );
    describe_counter!(name::WRITE_CALLS, "Write calls that wrote something.");
    describe_counter!(name::FRAMES_DROPPED, "Frames dropped by a drop policy.");
    describe_counter!(name::EVICTIONS, "Clients closed by policy, by reason.");
    describe_counter!(
        name::HANDSHAKE_FAILURES,
        "Upgrade requests refused or timed out."
    );
    describe_gauge!(name::QUEUE_DEPTH, "Commands waiting in the shard's queue.");
    describe_gauge!(
        name::QUEUED_BYTES,
        Unit::Bytes,
        "Bytes waiting in the shard's client queues."
    );
    describe_gauge!(name::TOPICS, "Topics with subscribers on the shard.");
    describe_gauge!(name::SUBSCRIPTIONS, "Subscriptions of the shard's clients.");
    describe_gauge!(
        name::EVENT_LOOP_CONNECTIONS,
        "Connections the shard's event loop serves."
    );
    describe_counter!(name::INBOX_EVENTS, "Events the shard queued for the inbox.");
    describe_gauge!(
        name::INBOX_DEPTH,
        "Events in the shard's inbox queue, not yet read."
    );
    describe_counter!(
        name::INBOX_PAUSES,
        "Times a client stopped being read because the inbox queue was full."
    );
    describe_gauge!(
        name::INBOX_WAITING,
        "Clients not read now: their event waits for room in the inbox queue."
    );
    describe_counter!(
        name::INBOX_LOST,
        "Inbox events lost: the inbox was dropped, or the shard stopped first."
    );
    describe_gauge!(
        name::BRIDGE_CONNECTED,
        "1 while the bridge's broker connection is up."
    );
    describe_gauge!(
        name::BRIDGE_SUBSCRIPTIONS,
        "Topics the node holds a broker subscription for."
    );
    describe_counter!(
        name::BRIDGE_PUBLISHED,
        "Local broadcasts published to the broker, once per channel."
    );
    describe_counter!(
        name::BRIDGE_MESSAGES,
        "Broker messages published (each carries one or more broadcasts)."
    );
    describe_counter!(
        name::BRIDGE_RECEIVED,
        "Broadcasts received from other nodes."
    );
    describe_counter!(
        name::BRIDGE_DELIVERED,
        "Received broadcasts handed to the local shards."
    );
    describe_counter!(
        name::BRIDGE_DISCONNECTS,
        "Times the broker connection was lost."
    );
    describe_counter!(
        name::BRIDGE_DROPPED,
        "Broadcasts lost between nodes, by reason."
    );
}
