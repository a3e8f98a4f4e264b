//! shardcast: a lock-free, sharded WebSocket broadcast engine.
//!
//! Clients live in N shards; each shard is one thread that owns its slice of the clients. A
//! broadcast is encoded once into a [`bytes::Bytes`] frame and fanned out through one bounded
//! queue per shard; each shard appends it (by reference count) to every matching client's
//! byte-bounded queue, then writes each touched client once, many frames per `write`.
//!
//! ```text
//!            Engine::broadcast(payload)        any thread, any runtime
//!                     │  frame encoded once
//!        ┌────────────┼─────────────┐          one push per shard (bounded queues)
//!        ▼            ▼             ▼
//!     shard 0      shard 1   …   shard N-1     one thread + current-thread runtime each
//!     clients      clients       clients       deliver: refcount into client queues
//!        │            │             │          flush: each touched client once per tick
//!     sockets      sockets       sockets
//! ```
//!
//! # Example
//!
//! ```no_run
//! use shardcast::{Audience, Context, Engine, Handler, Incoming, Payload};
//!
//! /// Relays every message to every client, with its opcode.
//! struct Relay;
//!
//! impl Handler for Relay {
//!     fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
//!         let payload = match message {
//!             Incoming::Text(text) => Payload::text(text),
//!             Incoming::Binary(bytes) => Payload::binary(bytes),
//!         };
//!         ctx.broadcast(payload, Audience::ALL);
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let engine = Engine::builder().handler(Relay).build()?;
//!     let addr = engine.listen("127.0.0.1:9001").await?;
//!     println!("listening on ws://{addr}");
//!     tokio::signal::ctrl_c().await?;
//!     engine.shutdown(std::time::Duration::from_secs(5)).await;
//!     Ok(())
//! }
//! ```
//!
//! # Messages from clients
//!
//! A [`Handler`] sees each message on the shard thread, borrowed, with no copy and no queue: the
//! fast path, which must not block. Code that has to await (a database write, an auth call)
//! reads an [`Inbox`] instead ([`Builder::inbox`]): messages and lifecycle events as an async
//! stream from one bounded queue per shard, where a slow consumer pauses reading from the
//! clients whose messages wait, and nothing is dropped silently. [`Handler::forward`] splits
//! messages between the two.
//!
//! # Guarantees
//!
//! - A healthy client receives every broadcast accepted after its registration completed,
//!   exactly once, in the order each publisher issued them.
//! - Every queue and buffer is bounded by a [`Config`] limit with a default; a slow consumer of
//!   the [`Inbox`] slows the clients whose messages wait (through TCP), never grows a queue.
//! - Beyond one machine, nodes share broadcasts and topics through a broker (NATS, feature
//!   `nats`), interest-routed and encoded once: see [`bridge`].
//! - A slow or hostile client costs the others nothing but its own bounded queue: it is evicted
//!   (or dropped from) by [`SlowConsumerPolicy`], and protocol violations close it with the RFC
//!   6455 code.
//!
//! # Behind a web framework
//!
//! Feature `axum`: `axum::Upgrade`, an extractor that answers a WebSocket
//! upgrade on an axum route with the engine's own decision and hands the connection, socket
//! and all, to its shard. Any other HTTP server can do the same with [`Engine::decide`] and
//! [`Registration::upgraded`].
//!
//! # Observability
//!
//! - [`Engine::stats`]: every shard's counters, read from any thread without a round trip.
//! - Feature `metrics`: `Metrics` records those counters into the `metrics` facade, for any
//!   of its exporters (Prometheus names, labelled by shard and reason); the shards never call a
//!   recorder.
//! - [`tracing`](https://docs.rs/tracing): a `connection` span per connection (client, peer,
//!   shard) and the events `registered`, `removed` and `evicted` (with the reason) and
//!   `handshake refused` (with the status), all at debug, none per frame; warnings when a
//!   listener or an accept fails. Unless a subscriber enables them, a connection's task
//!   carries no span at all.
#![forbid(unsafe_code)]
// docs.rs (nightly rustdoc, `--cfg docsrs`): each feature-gated item says which feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod audience;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod bridge;
mod builder;
mod client;
mod compression;
mod config;
mod engine;
mod error;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod id;
mod inbox;
mod link;
mod payload;
mod registration;
mod shard;
mod stats;
#[cfg(feature = "metrics")]
mod telemetry;
mod topic;
pub mod wire;

pub use audience::Audience;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use bridge::Nats;
pub use builder::Builder;
pub use client::{ClientData, ClientInfo, Incoming, Principal, RemoveReason, close_code};
pub use compression::Compression;
pub use config::{Coalescing, Config, Driver, FRAME_OVERHEAD_BYTES, SlowConsumerPolicy};
pub use engine::{Engine, ShutdownReport};
pub use error::{
    BridgeError, BroadcastError, BuildError, ListenError, PayloadError, RegisterError, Rejected,
    SubscribeError, TryBroadcastError, TrySendError, UpdateError,
};
pub use id::{ClientId, ShardId};
pub use inbox::{Event, EventKind, Inbox, InboxPartition};
pub use payload::Payload;
pub use registration::Registration;
pub use shard::{Accepted, Context, Decision, Handler, Io, Wrap, WrapFuture};
pub use stats::{
    BridgeDrops, BridgeStats, Closes, DeflateStats, Evictions, HandshakeFailures, ShardStats, Stats,
};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use telemetry::Metrics;
pub use topic::Topic;
