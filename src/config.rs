//! `Config`: every limit of an engine with its default, produced only by [`Builder::build`].
//!
//! # Invariants
//!
//! A `Config` is always in range: `Builder::build` checks every field once, so the shards never
//! re-check a limit at run time (parse, don't validate).
//!
//! [`Builder::build`]: crate::Builder::build

use crate::compression::Compression;
use crate::error::BuildError;
use crate::wire::handshake::is_token;
use std::time::Duration;

/// Memory one queued frame costs beyond its bytes, charged against the client's queue cap so
/// that the cap bounds memory for any frame size (empty frames included): its slot in the queue
/// (8 bytes, up to 16 while the queue's buffer is half empty after doubling), the `Arc<Bytes>`
/// the frame is shared through (48), and the allocator's rounding of the frame's own buffer
/// (up to 16). A frame shared by many clients is charged to each, which over-counts; the bound
/// must hold when one stalled client is the last holder of every frame in its queue.
///
/// ```
/// // A stalled client fed empty frames (2 bytes each) holds at most this many under the
/// // default 1 MiB cap:
/// assert_eq!((1 << 20) / (2 + shardcast::FRAME_OVERHEAD_BYTES), 12_787);
/// ```
pub const FRAME_OVERHEAD_BYTES: usize = 80;

/// What a shard does when a client's outbound queue would exceed
/// [`Config::client_queue_bytes_max`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Evict the client with close code 4008 ("slow consumer"). The default: a client that cannot
    /// keep up is told so, and every message it did receive was complete and in order.
    #[default]
    Disconnect,
    /// Keep the queue, drop the frame that does not fit. Counted in `frames_dropped`.
    DropNewest,
    /// Drop the oldest queued frames (never one already partly written) until the new one fits.
    /// Counted in `frames_dropped`.
    DropOldest,
}

/// When a shard writes a client's queued frames to its socket.
///
/// The default, [`Coalescing::PER_TICK`], writes each touched client once per shard tick (after
/// the shard drained every queued command), which adds no latency. The presets delay a client's
/// flush until `frames_max` frames or `bytes_max` bytes are queued or `delay` has passed since the
/// first unwritten frame, trading latency for fewer `write` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coalescing {
    /// Flush as soon as this many frames are queued.
    pub frames_max: usize,
    /// Flush at the latest this long after the oldest unwritten frame was queued. Zero: per tick.
    pub delay: Duration,
    /// Flush as soon as this many bytes are queued.
    pub bytes_max: usize,
}

impl Coalescing {
    /// Flush every touched client once per shard tick: no added latency (the default).
    pub const PER_TICK: Coalescing = Coalescing {
        frames_max: 1,
        delay: Duration::ZERO,
        bytes_max: 0,
    };
    /// 100 frames, 1 ms, 64 KiB.
    pub const LOW_LATENCY: Coalescing = Coalescing {
        frames_max: 100,
        delay: Duration::from_millis(1),
        bytes_max: 64 << 10,
    };
    /// 300 frames, 2 ms, 128 KiB.
    pub const BALANCED: Coalescing = Coalescing {
        frames_max: 300,
        delay: Duration::from_millis(2),
        bytes_max: 128 << 10,
    };
    /// 500 frames, 2 ms, 256 KiB.
    pub const HIGH_THROUGHPUT: Coalescing = Coalescing {
        frames_max: 500,
        delay: Duration::from_millis(2),
        bytes_max: 256 << 10,
    };
    /// 1000 frames, 5 ms, 512 KiB.
    pub const AGGRESSIVE: Coalescing = Coalescing {
        frames_max: 1000,
        delay: Duration::from_millis(5),
        bytes_max: 512 << 10,
    };

    /// Whether this setting ever holds frames back past the current tick.
    pub fn delays(&self) -> bool {
        !self.delay.is_zero()
    }
}

impl Default for Coalescing {
    fn default() -> Self {
        Coalescing::PER_TICK
    }
}

/// How a shard moves the bytes of its connections: the driver between the sockets and the
/// shard's decisions, which are the same under either.
///
/// Chosen with [`Builder::driver`](crate::Builder::driver) (the command's `serve --driver`).
///
/// The default is [`Driver::IoUring`] on Linux with the crate feature `io-uring` (on by
/// default), else [`Driver::EventLoop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Driver {
    /// One event loop per shard serves every plain TCP connection of that shard once its
    /// upgrade is done (`epoll`, through `mio`), with one `write` per client it flushes: no
    /// task and no reactor registration per connection, so a connection costs its client
    /// record, its parser and its socket (about 270 bytes of heap when idle, at 10,000
    /// clients). Other streams (wrapped, TLS, in-memory, a framework's) are served as with
    /// [`Driver::Tasks`]. Where the loop cannot run (not Unix, or `epoll` refused), every
    /// connection is served as with `Tasks`. The default where `IoUring` is not built.
    EventLoop,
    /// The default on Linux. The event loop, with the writes of each pass going to the kernel
    /// in `io_uring` submissions (one system call for up to 16 clients' sends) instead of one
    /// `write` each; reads and readiness as with `EventLoop`. Needs Linux and the crate feature
    /// `io-uring` (on by default; without it this runs as `EventLoop`). Where the ring cannot
    /// be set up (an older kernel, a container's seccomp policy, `kernel.io_uring_disabled`)
    /// the shard logs a warning and runs as `EventLoop`;
    /// [`ShardStats::io_uring_rings`](crate::ShardStats::io_uring_rings) says which shards
    /// have one. A ring costs each shard a few KiB (its queues), not each connection.
    IoUring,
    /// Every connection is a task of its shard's runtime, registered with the runtime's
    /// reactor: about 590 bytes more heap per connection than the event loop (the task, its
    /// reactor registration, the boxed stream).
    Tasks,
}

impl Default for Driver {
    fn default() -> Driver {
        if cfg!(all(target_os = "linux", feature = "io-uring")) {
            Driver::IoUring
        } else {
            Driver::EventLoop
        }
    }
}

/// Every limit and setting of an engine. Built by [`crate::Builder`]; read with
/// [`crate::Engine::config`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Number of shards (threads). Default: the number of cores.
    pub shards: usize,
    /// Bind shard `i` to core `i % cores`. Default: off.
    pub pin_cores: bool,
    /// Commands each shard's queue holds before publishers wait. Default: 1024.
    ///
    /// What handlers on another shard relay while one read is handled arrives as one command,
    /// posted once 64 commands are gathered (or more, if a single handler call queued more).
    pub shard_queue_capacity: usize,
    /// Most clients (registered or handshaking) the engine holds. Default: 1,048,576.
    pub clients_max: usize,
    /// Memory a client's outbound queue may hold, 1 KiB to 2 GiB. Default: 1 MiB.
    ///
    /// Each queued frame counts its bytes plus [`FRAME_OVERHEAD_BYTES`] (its queue slot and
    /// shared handle), so the cap bounds memory for any frame size: with `n` stalled clients,
    /// queued frames hold at most `n` x this.
    ///
    /// It also paces publishers: one read of a client (or one tick of a shard's queue) delivers
    /// at most a quarter of it before the clients it reached flush, and while a client whose
    /// socket keeps draining holds more than half of it, its shard reads from no client and
    /// applies no broadcast, so publishers are slowed (through TCP, or by a full shard queue)
    /// instead of readers evicted. A client whose socket took nothing for 500 ms stops holding
    /// publishers back and is left to [`Config::slow_consumer`].
    ///
    /// [`FRAME_OVERHEAD_BYTES`]: crate::FRAME_OVERHEAD_BYTES
    pub client_queue_bytes_max: usize,
    /// What happens when a client's queue is full. Default: [`SlowConsumerPolicy::Disconnect`].
    pub slow_consumer: SlowConsumerPolicy,
    /// A client whose socket accepts no byte for this long is disconnected (checked at each
    /// sweep). Default: 10 s.
    pub write_deadline: Duration,
    /// A client silent for longer is closed with 4002. Default: 20 s.
    pub heartbeat_timeout: Duration,
    /// A client silent for this long is sent a ping (once per silence); any frame it sends, a
    /// pong included, makes it not silent. Browsers cannot send pings but answer them, so this
    /// keeps clients that only listen connected. `None`: no server pings (clients keep
    /// themselves alive, TopGun-style). Pings go out at the sweep, so a silent client is pinged
    /// between `ping_interval` and `ping_interval + sweep_interval` after its last frame; keep
    /// that well below `heartbeat_timeout`. Default: 10 s, or half the heartbeat timeout if
    /// that is shorter.
    pub ping_interval: Option<Duration>,
    /// How often each shard sweeps its clients for heartbeat, auth and write deadlines, and
    /// pings silent clients. Default: 5 s.
    pub sweep_interval: Duration,
    /// An unauthenticated client older than this is closed with 4001. Default: none.
    pub auth_deadline: Option<Duration>,
    /// Largest inbound frame payload. Default: 64 KiB.
    pub frame_bytes_max: usize,
    /// Largest inbound (reassembled) message. Default: 64 KiB.
    pub message_bytes_max: usize,
    /// Time a client has to complete the HTTP upgrade. Default: 10 s. A client that sent part
    /// of a request by then is answered `408 Request Timeout` (allowed [`Config::close_timeout`]
    /// to go out) and closed; one that sent nothing is just closed.
    pub handshake_deadline: Duration,
    /// Largest HTTP upgrade request (request line and headers). Default: 8 KiB.
    pub handshake_bytes_max: usize,
    /// If set, only upgrade requests whose `Origin` is in this list are accepted (others get 403,
    /// as do requests without `Origin`). Default: any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// The subprotocols the server speaks (`Sec-WebSocket-Protocol`), each an RFC 6455 token;
    /// set with [`Builder::protocols`](crate::Builder::protocols), where the rules are.
    /// Unless the handler chooses itself, an upgrade is answered with the first subprotocol
    /// of this list, in its order, that the client offered, and refused with
    /// `400 Bad Request` if the client offered subprotocols and none is here. Default: none
    /// (a client that offers none is accepted; one that offers any is refused).
    pub protocols: Vec<String>,
    /// permessage-deflate: accepted, and which messages are compressed. Default: accepted,
    /// messages from 256 bytes, level 6 (see [`Compression`]).
    pub compression: Compression,
    /// When queued frames are written. Default: [`Coalescing::PER_TICK`].
    pub coalescing: Coalescing,
    /// Send runs of two or more broadcasts of one shard tick with the same audience as one binary
    /// batch envelope (`u32le count | (u32le len | bytes)*`), built once per shard. Default: off.
    pub batch_envelope: bool,
    /// Largest envelope body; a longer run is split. Default: 64 KiB.
    pub envelope_bytes_max: usize,
    /// Size of each shard's reused read buffer. Default: 64 KiB.
    pub read_buffer_bytes: usize,
    /// Size of each shard's reused write buffer, into which small frames are copied so that many
    /// go out in one `write`. Default: 64 KiB.
    pub write_buffer_bytes: usize,
    /// Frames up to this size are copied into the write buffer; longer ones are written vectored
    /// from the shared payload. Default: 2 KiB.
    pub copy_bytes_max: usize,
    /// After sending a close frame, how long to wait for the peer to close before dropping the
    /// socket. Default: 2 s.
    pub close_timeout: Duration,
    /// Longest topic name a client may subscribe to, in bytes (1 to 65,536). Default: 256.
    pub topic_bytes_max: usize,
    /// Most topics one client may be subscribed to at once (1 to 65,536). Default: 128.
    pub topics_per_client_max: usize,
    /// Most subscriptions (client, topic) the engine holds at once, over every client (at
    /// least 1). Default: 4,194,304.
    ///
    /// What bounds the memory of topics engine-wide: a subscription costs about 19 bytes when
    /// its topic is shared by many clients and about 371 bytes (538 with a bridge) when each
    /// client's topics are its own 256-byte names (measured with `examples/topic_memory`; see
    /// the README), so the default holds at most about 1.6 GB of subscriptions (2.3 GB with a
    /// bridge), however many clients there are. Past it, a subscription is refused with
    /// [`SubscribeError::TooManySubscriptions`].
    ///
    /// [`SubscribeError::TooManySubscriptions`]: crate::SubscribeError::TooManySubscriptions
    pub subscriptions_max: usize,
    /// With a bridge to other nodes: local broadcasts queued for the broker, at most. A
    /// broadcast that finds the queue full is delivered locally but not published, and counted
    /// in [`BridgeDrops::outbound_full`](crate::BridgeDrops::outbound_full). Default: 8192.
    pub bridge_outbound_capacity: usize,
    /// With a bridge: messages received from the broker and waiting for the local shards, at
    /// most; past it they are dropped and counted in
    /// [`BridgeDrops::inbound_full`](crate::BridgeDrops::inbound_full). Default: 8192.
    pub bridge_inbound_capacity: usize,
    /// With a bridge: bytes of frames queued for the broker, at most (with
    /// `bridge_outbound_capacity`, the outbound queue's bound for any frame size). A broadcast
    /// that would pass it is counted in
    /// [`BridgeDrops::outbound_full`](crate::BridgeDrops::outbound_full); an empty queue takes
    /// one broadcast of any size. Default: 64 MiB.
    pub bridge_outbound_bytes_max: usize,
    /// With a bridge: bytes of received frames waiting for the local shards, at most (with
    /// `bridge_inbound_capacity`, the inbound queue's bound for any frame size). A message
    /// that would pass it is counted in
    /// [`BridgeDrops::inbound_full`](crate::BridgeDrops::inbound_full); an empty queue takes
    /// one message of any size. Default: 64 MiB.
    pub bridge_inbound_bytes_max: usize,
    /// With a bridge: how long after a topic's last local subscriber left the node keeps its
    /// broker subscription (a subscriber who comes back meanwhile finds it in place; flapping
    /// interest costs no broker traffic). At least this long, and about as long. Default: 1 s.
    pub bridge_unsubscribe_delay: Duration,
    /// With a bridge: start even if the broker cannot be reached, local-only, and keep trying
    /// in the background (broadcasts meanwhile are counted in
    /// [`BridgeDrops::disconnected`](crate::BridgeDrops::disconnected)). Default: off
    /// (`Builder::build` fails).
    pub bridge_optional: bool,
    /// How shards move their connections' bytes. Default: [`Driver::IoUring`] on Linux,
    /// else [`Driver::EventLoop`] (see [`Driver`]).
    pub driver: Driver,
    /// Hand clients' messages and lifecycle events to an [`Inbox`](crate::Inbox) (taken with
    /// [`Engine::inbox`](crate::Engine::inbox)), for code that must await; a
    /// [`Handler`](crate::Handler) decides which messages stay with it
    /// ([`Handler::forward`](crate::Handler::forward)). Default: off. Every driver serves an
    /// engine with an inbox.
    pub inbox: bool,
    /// With an inbox: events each shard queues for it, at most (1 to 1,048,576). A client whose
    /// event finds the queue full is not read until there is room, so with `n` connections
    /// at most `shards x inbox_capacity + n` events wait, each no larger than
    /// `message_bytes_max`. Default: 256.
    pub inbox_capacity: usize,
    /// With [`Driver::IoUring`]: the size of each shard's ring (its submission queue; the
    /// loop stages at most 16 sends before it submits them). Not public: nothing asks to tune
    /// it yet; a test sets it to 0, which the kernel refuses, to see the driver fall back.
    pub(crate) io_uring_entries: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_cores: false,
            shard_queue_capacity: 1024,
            clients_max: 1 << 20,
            client_queue_bytes_max: 1 << 20,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            write_deadline: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(20),
            ping_interval: Some(Duration::from_secs(10)),
            sweep_interval: Duration::from_secs(5),
            auth_deadline: None,
            frame_bytes_max: 64 << 10,
            message_bytes_max: 64 << 10,
            handshake_deadline: Duration::from_secs(10),
            handshake_bytes_max: 8 << 10,
            allowed_origins: None,
            protocols: Vec::new(),
            compression: Compression::default(),
            coalescing: Coalescing::PER_TICK,
            batch_envelope: false,
            envelope_bytes_max: 64 << 10,
            read_buffer_bytes: 64 << 10,
            write_buffer_bytes: 64 << 10,
            copy_bytes_max: 2 << 10,
            close_timeout: Duration::from_secs(2),
            topic_bytes_max: 256,
            topics_per_client_max: 128,
            subscriptions_max: 1 << 22,
            bridge_outbound_capacity: 8192,
            bridge_inbound_capacity: 8192,
            bridge_outbound_bytes_max: 64 << 20,
            bridge_inbound_bytes_max: 64 << 20,
            bridge_unsubscribe_delay: Duration::from_secs(1),
            bridge_optional: false,
            driver: Driver::default(),
            inbox: false,
            inbox_capacity: 256,
            io_uring_entries: 32,
        }
    }
}

impl Config {
    /// Checks every field once, so shards never re-check a limit: the only way a `Config`
    /// reaches the shards is through here (`Builder::build`).
    pub(crate) fn check(self) -> Result<Config, BuildError> {
        let config = self;
        fn require(ok: bool, field: &'static str, reason: &'static str) -> Result<(), BuildError> {
            if ok {
                Ok(())
            } else {
                Err(BuildError::Invalid { field, reason })
            }
        }
        require(
            (1..=1024).contains(&config.shards),
            "shards",
            "must be 1 to 1024",
        )?;
        require(
            config.shard_queue_capacity > 0,
            "shard_queue_capacity",
            "must be positive",
        )?;
        require(config.clients_max > 0, "clients_max", "must be positive")?;
        require(
            (1..=1 << 16).contains(&config.topic_bytes_max),
            "topic_bytes_max",
            "must be 1 to 65536",
        )?;
        require(
            (1..=1 << 16).contains(&config.topics_per_client_max),
            "topics_per_client_max",
            "must be 1 to 65536",
        )?;
        require(
            config.subscriptions_max > 0,
            "subscriptions_max",
            "must be at least 1",
        )?;
        require(
            config.bridge_outbound_capacity > 0,
            "bridge_outbound_capacity",
            "must be positive",
        )?;
        require(
            (1..=1 << 20).contains(&config.inbox_capacity),
            "inbox_capacity",
            "must be 1 to 1048576",
        )?;
        require(
            config.bridge_inbound_capacity > 0,
            "bridge_inbound_capacity",
            "must be positive",
        )?;
        require(
            config.bridge_outbound_bytes_max > 0,
            "bridge_outbound_bytes_max",
            "must be positive",
        )?;
        require(
            config.bridge_inbound_bytes_max > 0,
            "bridge_inbound_bytes_max",
            "must be positive",
        )?;
        require(
            (1024..=1 << 31).contains(&config.client_queue_bytes_max),
            "client_queue_bytes_max",
            "must be 1 KiB to 2 GiB",
        )?;
        require(
            !config.write_deadline.is_zero(),
            "write_deadline",
            "must be positive",
        )?;
        require(
            !config.heartbeat_timeout.is_zero(),
            "heartbeat_timeout",
            "must be positive",
        )?;
        require(
            config
                .ping_interval
                .is_none_or(|p| !p.is_zero() && p < config.heartbeat_timeout),
            "ping_interval",
            "must be positive and shorter than heartbeat_timeout",
        )?;
        require(
            !config.sweep_interval.is_zero(),
            "sweep_interval",
            "must be positive",
        )?;
        require(
            config.auth_deadline.is_none_or(|d| !d.is_zero()),
            "auth_deadline",
            "must be positive",
        )?;
        require(
            config.frame_bytes_max >= 125,
            "frame_bytes_max",
            "must be at least 125",
        )?;
        require(
            config.message_bytes_max >= config.frame_bytes_max.min(1 << 30),
            "message_bytes_max",
            "must be at least frame_bytes_max",
        )?;
        require(
            !config.handshake_deadline.is_zero(),
            "handshake_deadline",
            "must be positive",
        )?;
        require(
            config.handshake_bytes_max >= 256,
            "handshake_bytes_max",
            "must be at least 256",
        )?;
        require(
            config.coalescing.frames_max >= 1,
            "coalescing",
            "frames_max must be at least 1",
        )?;
        require(
            (64..=u32::MAX as usize).contains(&config.envelope_bytes_max),
            "envelope_bytes_max",
            "must be from 64 bytes to 4 GiB (the envelope's length fields are 32-bit)",
        )?;
        require(
            config.read_buffer_bytes >= 1024,
            "read_buffer_bytes",
            "must be at least 1 KiB",
        )?;
        require(
            config.write_buffer_bytes >= config.copy_bytes_max,
            "write_buffer_bytes",
            "must be at least copy_bytes_max",
        )?;
        require(
            config
                .allowed_origins
                .as_ref()
                .is_none_or(|o| !o.is_empty()),
            "allowed_origins",
            "must not be empty (use None to allow any)",
        )?;
        require(
            (1..=9).contains(&config.compression.level),
            "compression",
            "level must be 1 to 9",
        )?;
        require(
            config.compression.min_bytes >= 1,
            "compression",
            "min_bytes must be at least 1",
        )?;
        if let Some(bad) = config.protocols.iter().find(|p| !is_token(p)) {
            return Err(BuildError::InvalidProtocol(bad.clone()));
        }
        Ok(config)
    }
}
