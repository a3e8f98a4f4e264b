//! `Builder`: every setting of an engine, with its default, and the start of its shards (and
//! bridge). The settings are checked once, by `Config::check`, so the shards never re-check a
//! limit.

use crate::ShardId;
use crate::bridge::{Broker, driver};
use crate::compression::Compression;
use crate::config::{Coalescing, Config, Driver, SlowConsumerPolicy};
use crate::engine::{Engine, Inner};
use crate::error::BuildError;
use crate::inbox::Inbox;
use crate::link::Link;
use crate::shard::{self, Admission, Handle, Handler, Interest};
use crate::stats::ShardCounters;
use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
impl Engine {
    /// A builder with every setting at its default.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(2).build()?;
    /// assert_eq!(engine.shard_count(), 2);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// Builds an [`Engine`]: every setting has a documented default (see [`Config`]).
///
/// ```
/// use shardcast::{Coalescing, Engine, SlowConsumerPolicy};
/// use std::time::Duration;
///
/// let engine = Engine::builder()
///     .shards(2)
///     .client_queue_bytes_max(256 << 10)
///     .slow_consumer(SlowConsumerPolicy::DropOldest)
///     .heartbeat_timeout(Duration::from_secs(30))
///     .coalescing(Coalescing::BALANCED)
///     .build()
///     .unwrap();
/// assert_eq!(engine.shard_count(), 2);
/// ```
#[derive(Default)]
pub struct Builder {
    config: Config,
    handler: Option<Arc<dyn Handler>>,
    /// Starts the bridge thread, if one was attached.
    bridge: Option<driver::Spawn>,
    /// Whether `ping_interval` was chosen; if not, it follows the heartbeat timeout.
    ping_interval_set: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl Builder {
    setters! {
        /// Number of shards (threads), 1 to 1024. Default: the number of cores.
        shards: usize,
        /// Bind each shard thread to a core. Default: off.
        pin_cores: bool,
        /// Commands each shard queue holds. Default: 1024.
        shard_queue_capacity: usize,
        /// Most connections at once. Default: 1,048,576.
        clients_max: usize,
        /// Memory a client's outbound queue may hold: frame bytes plus a fixed overhead per
        /// frame, 1 KiB to 2 GiB. Default: 1 MiB.
        client_queue_bytes_max: usize,
        /// What to do when a client's queue is full. Default: disconnect (4008).
        slow_consumer: SlowConsumerPolicy,
        /// Disconnect a client whose socket accepts nothing for this long. Default: 10 s.
        write_deadline: Duration,
        /// Close clients silent for longer (4002). Default: 20 s.
        heartbeat_timeout: Duration,
        /// How often shards sweep for heartbeat, auth and write deadlines. Default: 5 s.
        sweep_interval: Duration,
        /// Close unauthenticated clients older than this (4001). Default: none.
        auth_deadline: Option<Duration>,
        /// Largest inbound frame payload. Default: 64 KiB.
        frame_bytes_max: usize,
        /// Largest inbound message. Default: 64 KiB.
        message_bytes_max: usize,
        /// Time allowed for the HTTP upgrade; an unfinished request then gets 408. Default: 10 s.
        handshake_deadline: Duration,
        /// Largest upgrade request. Default: 8 KiB.
        handshake_bytes_max: usize,
        /// Accept only these `Origin`s. Default: any.
        allowed_origins: Option<Vec<String>>,
        /// permessage-deflate: whether clients' offers are accepted, from which size and at
        /// which level messages are compressed. Default: accepted, from 256 bytes, level 6.
        compression: Compression,
        /// When queued frames are flushed. Default: once per shard tick.
        coalescing: Coalescing,
        /// Send runs of broadcasts as one batch envelope. Default: off.
        batch_envelope: bool,
        /// Largest envelope body. Default: 64 KiB.
        envelope_bytes_max: usize,
        /// Each shard's read buffer. Default: 64 KiB.
        read_buffer_bytes: usize,
        /// Each shard's write buffer. Default: 64 KiB.
        write_buffer_bytes: usize,
        /// Frames up to this size are copied into the write buffer. Default: 2 KiB.
        copy_bytes_max: usize,
        /// How long to wait for the peer after sending a close frame. Default: 2 s.
        close_timeout: Duration,
        /// Longest topic name a client may subscribe to, 1 to 65,536 bytes. Default: 256.
        topic_bytes_max: usize,
        /// Most topics per client, 1 to 65,536. Default: 128.
        topics_per_client_max: usize,
        /// Most subscriptions engine-wide, over every client (at least 1). Default: 4,194,304.
        subscriptions_max: usize,
        /// With a bridge: local broadcasts queued for the broker, at most. Default: 8192.
        bridge_outbound_capacity: usize,
        /// With a bridge: received messages queued for the shards, at most. Default: 8192.
        bridge_inbound_capacity: usize,
        /// With a bridge: bytes of frames queued for the broker, at most. Default: 64 MiB.
        bridge_outbound_bytes_max: usize,
        /// With a bridge: bytes of received frames queued for the shards, at most. Default:
        /// 64 MiB.
        bridge_inbound_bytes_max: usize,
        /// With a bridge: how long a topic's broker subscription outlives its last local
        /// subscriber. Default: 1 s.
        bridge_unsubscribe_delay: Duration,
        /// With a bridge: start local-only if the broker cannot be reached, and keep trying.
        /// Default: off.
        bridge_optional: bool,
        /// Hand messages and lifecycle events to an [`Inbox`] ([`Engine::inbox`]) for code that
        /// awaits; see [`Inbox`] for when to use it rather than a [`Handler`]. Default: off.
        inbox: bool,
        /// With an inbox: events each shard queues for it before the clients whose events do
        /// not fit are paused, 1 to 1,048,576. Default: 256.
        inbox_capacity: usize,
    }

    /// Ping clients silent for this long, so that clients which only listen (browsers) answer
    /// and stay connected; `None` leaves heartbeats to the clients (TopGun-style). Must be
    /// shorter than the heartbeat timeout. Default: 10 s, or half the heartbeat timeout if
    /// that is shorter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let engine = shardcast::Engine::builder()
    ///     .heartbeat_timeout(Duration::from_secs(6))
    ///     .build()?;
    /// assert_eq!(engine.config().ping_interval, Some(Duration::from_secs(3)));
    /// # Ok::<(), shardcast::BuildError>(())
    /// ```
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.ping_interval = interval;
        self.ping_interval_set = true;
        self
    }

    /// The subprotocols the server speaks (`Sec-WebSocket-Protocol`, RFC 6455 1.9), replacing
    /// any list given before. Default: none.
    ///
    /// For each upgrade whose [`Handler::on_upgrade`] leaves the choice to the engine (as
    /// [`Decision::accept`](crate::Decision::accept) does), the engine answers the 101 with
    /// the first subprotocol of this list, in its order, that the client offered (compared
    /// exactly, case included), as axum's `WebSocketUpgrade::protocols` chooses: a client
    /// offering `["b", "a"]` to a server speaking `["a", "b"]` gets `a`, so list the preferred
    /// one first. A client that offers none is accepted without
    /// the header. A client that offers subprotocols of which none is in the list is refused
    /// with `400 Bad Request` and a body naming the ones supported, logged at debug and
    /// counted in [`HandshakeFailures::refused`](crate::HandshakeFailures::refused) (on the
    /// engine's own listener): browsers (the WHATWG WebSockets Standard, "establish a
    /// WebSocket connection"), tungstenite and Node's `ws` fail a connection answered without
    /// a subprotocol they asked for, so accepting it would only hand them a 1006 after a client
    /// the server counted as registered. A handler can choose per connection instead ([`Decision::with_protocol`](crate::Decision::with_protocol),
    /// [`Decision::without_protocol`](crate::Decision::without_protocol)).
    ///
    /// # Errors
    ///
    /// `build` refuses a name that is not an RFC 6455 token (empty, a space, a separator such
    /// as `,` or `/`, anything outside visible ASCII) with [`BuildError::InvalidProtocol`].
    ///
    /// ```
    /// use shardcast::{BuildError, Engine};
    ///
    /// let engine = Engine::builder().protocols(["graphql-transport-ws", "graphql-ws"]).build()?;
    /// assert_eq!(engine.config().protocols, ["graphql-transport-ws", "graphql-ws"]);
    ///
    /// let refused = Engine::builder().protocols(["v1 chat"]).build();
    /// assert!(matches!(refused, Err(BuildError::InvalidProtocol(name)) if name == "v1 chat"));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.config.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// How shards move their connections' bytes: one event loop per shard for plain TCP
    /// connections (writing through `io_uring`, or with a `write` per client), or a task per
    /// connection. Default: [`Driver::IoUring`] on Linux, else [`Driver::EventLoop`] (see
    /// [`Driver`]).
    ///
    /// ```
    /// use shardcast::Driver;
    /// let engine = shardcast::Engine::builder().driver(Driver::Tasks).build()?;
    /// assert_eq!(engine.config().driver, Driver::Tasks);
    /// # Ok::<(), shardcast::BuildError>(())
    /// ```
    pub fn driver(mut self, driver: Driver) -> Self {
        self.config.driver = driver;
        self
    }

    /// Sets the size of the shards' rings (`Config::io_uring_entries`); 0, which the kernel
    /// refuses, shows the fallback.
    #[cfg(all(test, target_os = "linux", feature = "io-uring"))]
    pub(crate) fn io_uring_entries(mut self, entries: u32) -> Self {
        self.config.io_uring_entries = entries;
        self
    }

    /// Sets the maximum inbound message and frame size together.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().max_message_size(1 << 20).build()?;
    /// assert_eq!(engine.config().message_bytes_max, 1 << 20);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.message_bytes_max = bytes;
        self.config.frame_bytes_max = bytes;
        self
    }

    /// The embedder's hooks. Default: `()` (accept everyone, ignore their messages).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shardcast::{Context, Handler};
    /// struct Greeter;
    /// impl Handler for Greeter {
    ///     fn on_registered(&self, ctx: &mut Context<'_>) {
    ///         let id = ctx.id();
    ///         ctx.send(id, shardcast::Payload::text("welcome"));
    ///     }
    /// }
    /// let engine = shardcast::Engine::builder().handler(Greeter).build()?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Shares this node's broadcasts and topics with other nodes through `broker` (a
    /// `Nats` server, feature `nats`): see the [`bridge`](crate::bridge) module
    /// for what travels, interest routing, ordering and what can be lost. `build` connects
    /// (on a thread of the bridge's own, where the connection lives as long as the engine)
    /// and fails if the broker cannot be reached, unless [`Builder::bridge_optional`].
    ///
    /// The broker is attached here rather than connected by the caller because its connection
    /// must live on a runtime that lives as long as the engine, which the engine owns; and a
    /// broker value (`Nats::new(url)`) says where and how, so `build` can report an unreachable
    /// broker like any other setting it cannot use. See `Nats` (feature `nats`) for an example.
    pub fn bridge<B: Broker>(mut self, broker: B) -> Self {
        self.bridge = Some(Box::new(move |startup| driver::spawn(broker, startup)));
        self
    }

    /// Checks every setting and starts the shard threads.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] names the first setting out of range; [`BuildError::Spawn`] if
    /// a thread or runtime cannot start.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shardcast::BuildError;
    /// let refused = shardcast::Engine::builder().shards(0).build();
    /// assert!(matches!(refused, Err(BuildError::Invalid { field: "shards", .. })));
    /// let engine = shardcast::Engine::builder().build()?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn build(self) -> Result<Engine, BuildError> {
        self.start(|startup| shard::spawn(startup).map(Some))
    }

    /// Checks every setting and starts the shards as tasks of the current thread's
    /// [`LocalSet`](tokio::task::LocalSet) instead of threads of their own: every shard, its
    /// clients and the caller then share one thread and one clock.
    ///
    /// This is for deterministic tests: on a runtime with paused time
    /// (`#[tokio::test(start_paused = true)]`), heartbeats, pings, deadlines and coalescing
    /// delays happen when the test advances the clock, with no wall-clock waits. It also serves
    /// an embedder that wants the engine on one thread. Engines built this way stop when the
    /// `LocalSet` is dropped; `shutdown` works as usual.
    ///
    /// ```
    /// use shardcast::{Audience, Engine, Payload};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = tokio::task::LocalSet::new();
    /// local
    ///     .run_until(async {
    ///         let engine = Engine::builder().shards(2).build_local()?;
    ///         engine.broadcast(Payload::text("hi"), Audience::ALL).await?;
    ///         engine.shutdown(std::time::Duration::from_secs(1)).await;
    ///         Ok::<_, Box<dyn std::error::Error>>(())
    ///     })
    ///     .await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] names the first setting out of range.
    ///
    /// # Panics
    ///
    /// If called outside a `LocalSet` (as `tokio::task::spawn_local` does).
    pub fn build_local(self) -> Result<Engine, BuildError> {
        self.start(|startup| {
            shard::spawn_local(startup);
            Ok(None)
        })
    }

    /// Checks the settings and starts each shard with `spawn`, which returns the shard's
    /// thread if it has one.
    fn start(
        mut self,
        mut spawn: impl FnMut(shard::Startup) -> std::io::Result<Option<std::thread::JoinHandle<()>>>,
    ) -> Result<Engine, BuildError> {
        if !self.ping_interval_set {
            let half = self.config.heartbeat_timeout / 2;
            self.config.ping_interval = self.config.ping_interval.map(|p| p.min(half));
        }
        let config = Arc::new(self.config.check()?);
        let handler = self.handler.unwrap_or_else(|| Arc::new(()));
        let admission = Arc::new(Admission::new(config.clients_max));
        let hard_stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(config.shards);
        let mut receivers = Vec::with_capacity(config.shards);
        let mut counters = Vec::with_capacity(config.shards);
        for i in 0..config.shards {
            let (tx, rx) = mpsc::channel(config.shard_queue_capacity);
            let c = Arc::new(ShardCounters::default());
            handles.push(Handle::new(ShardId(i as u16), tx, c.clone()));
            receivers.push(rx);
            counters.push(c);
        }
        let table: Arc<[Handle]> = handles.clone().into();
        let (mut inlets, inbox, inbox_tallies) = if config.inbox {
            let (senders, queues): (Vec<_>, Vec<_>) = (0..config.shards)
                .map(|_| mpsc::channel(config.inbox_capacity))
                .unzip();
            let tallies: Vec<_> = (0..config.shards).map(|_| Arc::default()).collect();
            let inbox = Inbox::new(queues, &tallies);
            (
                senders.into_iter().map(Some).collect(),
                Some(inbox),
                tallies,
            )
        } else {
            (Vec::new(), None, Vec::new())
        };
        let interest = Arc::new(Interest::bounded(config.shards, config.subscriptions_max));
        let (link, outbound) = match self.bridge {
            Some(_) => {
                let (tx, rx) = mpsc::channel(config.bridge_outbound_capacity);
                (Some(Arc::new(Link::new(tx, &config))), Some(rx))
            }
            None => (None, None),
        };
        let mut threads = Vec::with_capacity(config.shards);
        for (i, rx) in receivers.into_iter().enumerate() {
            let startup = shard::Startup {
                id: ShardId(i as u16),
                config: config.clone(),
                handler: handler.clone(),
                shards: table.clone(),
                rx,
                counters: counters[i].clone(),
                admission: admission.clone(),
                interest: interest.clone(),
                hard_stop: hard_stop.clone(),
                link: link.clone(),
                inbox: inlets.get_mut(i).and_then(Option::take),
            };
            match spawn(startup) {
                Ok(thread) => threads.extend(thread),
                Err(e) => {
                    hard_stop.cancel();
                    return Err(BuildError::Spawn(e));
                }
            }
        }
        let bridge_stop = hard_stop.child_token();
        let mut bridge = None;
        if let (Some(spawn), Some(link), Some(outbound)) = (self.bridge, &link, outbound) {
            let startup = crate::bridge::driver::Startup {
                config: config.clone(),
                link: link.clone(),
                outbound,
                shards: table.clone(),
                interest: interest.clone(),
                stop: bridge_stop.clone(),
            };
            match spawn(startup) {
                Ok(thread) => bridge = Some(thread),
                Err(e) => {
                    hard_stop.cancel();
                    return Err(e);
                }
            }
        }
        Ok(Engine::new(Inner {
            config,
            handler,
            shards: ArcSwap::from_pointee(handles),
            counters,
            published: CachePadded::new(AtomicU64::new(0)),
            decide_refused: CachePadded::new(AtomicU64::new(0)),
            admission,
            interest,
            next_shard: AtomicUsize::new(0),
            threads: Mutex::new(threads),
            hard_stop,
            link,
            bridge: Mutex::new(bridge),
            bridge_stop,
            inbox: Mutex::new(inbox),
            inbox_tallies,
        }))
    }
}
