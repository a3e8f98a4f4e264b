//! Scale-out: shardcast nodes share broadcasts and topics through a message broker (NATS,
//! feature `nats`), attached with [`Builder::bridge`](crate::Builder::bridge).
//!
//! ```text
//!   node A                                   node B
//!   Engine::broadcast / Context::broadcast
//!     │ 1. deliver to A's shards (as without a bridge)
//!     │ 2. once per broadcast: try_send        ┌──────────── fan out to B's shards only
//!     ▼                                         │              (never published again)
//!   outbound queue ─► publisher ─► NATS ─► B's subscriptions ─► inbound queue
//!   (bridge_outbound_capacity) {prefix}.all, {prefix}.t.{bucket}.{topic} (bridge_inbound_capacity)
//! ```
//!
//! # What travels
//!
//! A broadcast is published once: on the channel of everyone, or once on each topic of its
//! audience (NATS: `{prefix}.all`, `{prefix}.t.{bucket}.{token}`, see `Nats::prefix`). Its
//! body is the complete WebSocket frame ([`Payload::frame`](crate::Payload::frame)) that local
//! clients received, so a receiving node hands the bytes to its shards as they are: no
//! re-encoding, no copy (a batch's frames are copied once, at the origin, into one message).
//! Consecutive broadcasts with the same audience that the publisher finds queued together
//! travel in one message (at most [`BROADCASTS_PER_MESSAGE_MAX`] of them and
//! [`MESSAGE_BYTES_MAX`] of small frames, copied once at the origin): a node that relays a
//! client's burst sends the other nodes one message for it, and their clients receive the burst
//! in one write each, as local clients do. So a broadcast costs at most one broker message.
//! The receiving node checks that they are complete final text or binary frames; anything
//! else is dropped and counted. Authenticated-only travels with it; `except` applies on the
//! origin node only. A node never receives its own publications.
//!
//! # Interest
//!
//! Every node subscribes to the channel of everyone. A node subscribes to a topic's channel
//! when a shard gets the topic's first local subscriber, and unsubscribes at least
//! [`Config::bridge_unsubscribe_delay`](crate::Config::bridge_unsubscribe_delay) (1 s) after
//! the last local subscriber left, unless one came back: so a node receives a topic's
//! publications only while it has (or has just had) subscribers of it. The subscription is
//! made asynchronously: a client subscribed on one node receives another node's publications
//! once that node's subscription is in place (a round trip to the broker later;
//! [`BridgeStats::subscriptions`](crate::BridgeStats) counts it then).
//!
//! On NATS a node follows a topic through its bucket's subscription (one of 1,024, shared by
//! the topics whose names hash alike), so a node with a million personal topics holds at most
//! 1,025 broker subscriptions, and the broker's interest table stays small on every node. The
//! price: a node also receives the publications of the other topics of the buckets it follows
//! and drops them on arrival, uncounted; with few topics per bucket it is rare.
//!
//! # Ordering
//!
//! One node publishes through one connection, in the order its broadcasts were offered, so
//! the broadcasts of one publisher that travel on one channel (everyone, or one topic) reach
//! every client on every node in the order published. Not covered: the order between
//! channels (a publisher's broadcast to everyone and its next one to a topic may arrive at
//! another node in either order, as NATS hands each subscription its own queue), and any
//! order between publishers. A batch stays adjacent and in order on every node.
//!
//! # Delivery: at most once
//!
//! Local delivery never depends on the broker. Across nodes a broadcast is delivered at most
//! once: one published while the broker is unreachable is dropped, not queued
//! (`dropped.disconnected`), and what the connection held when it broke is lost. After a
//! reconnect, the node holds again every subscription it had. Every drop the node can see is
//! counted in [`BridgeStats::dropped`](crate::BridgeStats), by reason.
//!
//! # Back-pressure
//!
//! Both queues are bounded and never make a shard or a publisher wait: a broadcast that finds
//! the outbound queue full is not published (`dropped.outbound_full`); a received message that
//! finds the inbound queue full is dropped (`dropped.inbound_full`). Handing received
//! broadcasts to the shards waits for room in their queues, as `Engine::broadcast` does.
//!
//! # Shutdown
//!
//! `Engine::shutdown` stops the bridge first: it publishes what is queued (for at most a
//! second) and closes the connection; broadcasts offered after that are counted as
//! `dropped.stopped`.

mod broker;
pub(crate) mod driver;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
mod subject;

pub use crate::link::{BROADCASTS_PER_MESSAGE_MAX, FRAMES_PER_MESSAGE_MAX, MESSAGE_BYTES_MAX};
/// The NATS client the bridge uses, for [`Nats::options`] (`async_nats::ConnectOptions`).
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use async_nats;
pub use broker::{Broker, Channel, Connection, Inbound, Publication, Received};
#[cfg(any(test, fuzzing))]
pub(crate) use broker::{charge, check, split};
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use nats::{Nats, NatsConnection};
