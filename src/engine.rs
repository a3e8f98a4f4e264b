//! `Engine`: the public handle to a running set of shards (built by [`crate::Builder`]). The
//! contracts users need (ordering, back-pressure, shutdown) are on [`Engine`] itself, where
//! rustdoc renders them.

use crate::client::{ClientInfo, Principal};
use crate::config::Config;
use crate::error::SubscribeError;
use crate::error::{
    BroadcastError, ListenError, RegisterError, Rejected, TryBroadcastError, TrySendError,
    UpdateError,
};
use crate::inbox::Inbox;
use crate::link::Link;
use crate::payload::Payloads;
use crate::registration::Registration;
use crate::shard::{
    self, Accepted, Admission, Command, Control, Delivery, Handle, Handler, Interest, Io, Opening,
    Permits, Stream, Wrap,
};
use crate::stats::InboxTally;
use crate::stats::{BridgeStats, ShardCounters, Stats};
use crate::wire::handshake::Request;
use crate::{Audience, ClientId, Payload, ShardId, Topic};
use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use smallvec::smallvec;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Connections each listener lets the kernel queue before they are accepted.
const LISTEN_BACKLOG: i32 = 1024;

/// A running broadcast engine: N shard threads and their clients. Cheap to clone; every clone
/// drives the same shards, from any thread or runtime.
///
/// ```
/// use shardcast::{Audience, Engine, Payload};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().shards(2).build()?;
/// let addr = engine.listen("127.0.0.1:0").await?;
/// // ... clients connect to ws://{addr}/ ...
/// engine.broadcast(Payload::text("hello"), Audience::ALL).await?;
/// assert_eq!(engine.client_count(), 0);
/// engine.shutdown(Duration::from_secs(1)).await;
/// # let _ = addr;
/// # Ok(())
/// # }
/// ```
///
/// # Ordering
///
/// A healthy client receives every broadcast accepted after its registration completed, exactly
/// once, in the order each publisher issued them: a publisher is one task calling the engine
/// (each call finishes before the next starts), or one client's connection whose messages a
/// handler broadcasts. There is no total order across concurrent publishers: each shard applies
/// its queue in order, and two publishers' broadcasts may interleave differently on different
/// shards.
///
/// Topics keep this order: a client receives one publisher's frames in the order published,
/// whatever topics carried them, and a frame addressed to several of its topics once. A
/// publication goes to a shard through the same queue as every other broadcast of that
/// publisher, the shard applies its queue in order, and a client's outbound queue is first in,
/// first out; interest routing only leaves out shards with no subscriber of the topics, which
/// changes which frames a shard applies, never their order. A client subscribed when
/// [`Engine::subscribe`] returns (or a handler's [`Context::subscribe`](crate::Context::subscribe)
/// returns, for what its shard applies after) receives every later publication to the topic;
/// one unsubscribed receives none accepted after [`Engine::unsubscribe`] returned.
///
/// Across nodes ([`Builder::bridge`](crate::Builder::bridge)) these hold per channel (everyone, or one topic), at
/// most once; see the [`bridge`](crate::bridge) module.
///
/// # Back-pressure
///
/// Each shard's queue holds [`Config::shard_queue_capacity`] commands. `broadcast().await`
/// waits until every shard's queue has room, then sends to all (a cancelled call sent nothing);
/// `try_broadcast` never waits, and sends to every shard or to none. Inside the shards, each
/// client's queue is bounded by [`Config::client_queue_bytes_max`] and its slow-consumer policy;
/// what handlers relay is back-pressured by pausing the reads of the client that sent it, so no
/// shard ever waits for another. The same holds for the [`Inbox`] ([`Builder::inbox`](crate::Builder::inbox)): a
/// client whose message finds its shard's inbox queue full is not read until the consumer
/// makes room, and no shard ever waits for the consumer.
///
/// # Shutdown
///
/// [`Engine::shutdown`] drains, closes every client with 1001 and joins every shard thread,
/// reporting any it could not stop. An engine whose last clone is dropped without it stops its
/// shards at once, without close frames.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What every clone of an [`Engine`] shares; made by `Builder::build`.
pub(crate) struct Inner {
    /// The limits, fixed at build time.
    pub(crate) config: Arc<Config>,
    /// The embedder's hooks; `decide` asks them as the shards do.
    pub(crate) handler: Arc<dyn Handler>,
    /// The shards; swapped for an empty table at shutdown, so later calls fail fast.
    pub(crate) shards: ArcSwap<Vec<Handle>>,
    /// Every shard's counters, readable after shutdown too.
    pub(crate) counters: Vec<Arc<ShardCounters>>,
    /// Broadcast payloads published through this API (handlers count theirs on their shard).
    pub(crate) published: CachePadded<AtomicU64>,
    /// Upgrades [`Engine::decide`] refused: the axum extractor's and those of embedders that
    /// upgrade streams themselves, which no shard sees.
    pub(crate) decide_refused: CachePadded<AtomicU64>,
    /// Connection count and id sequence.
    pub(crate) admission: Arc<Admission>,
    /// Which shards have subscribers of which topics.
    pub(crate) interest: Arc<Interest>,
    /// Round-robin cursor for `register`.
    pub(crate) next_shard: AtomicUsize,
    /// Shard threads, joined by `shutdown`.
    pub(crate) threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Cancelled on drop: shards stop at once.
    pub(crate) hard_stop: CancellationToken,
    /// The bridge to other nodes, if any.
    pub(crate) link: Option<Arc<Link>>,
    /// The bridge thread, joined by `shutdown`.
    pub(crate) bridge: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Stops the bridge (a child of `hard_stop`).
    pub(crate) bridge_stop: CancellationToken,
    /// The inbox until `Engine::inbox` takes it; `None` then, or without one.
    pub(crate) inbox: Mutex<Option<Inbox>>,
    /// What the inbox took from each shard's queue, by shard index; empty without an inbox.
    pub(crate) inbox_tallies: Vec<Arc<CachePadded<InboxTally>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("shards", &self.shards)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.hard_stop.cancel();
    }
}

impl Engine {
    /// The engine whose clones share `inner`.
    pub(crate) fn new(inner: Inner) -> Engine {
        Engine {
            inner: Arc::new(inner),
        }
    }

    /// The settings this engine runs with.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().build()?;
    /// assert_eq!(engine.config().client_queue_bytes_max, 1 << 20);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn shards(&self) -> arc_swap::Guard<Arc<Vec<Handle>>> {
        self.inner.shards.load()
    }

    /// Hands a stream to the engine; the HTTP upgrade runs on the client's shard, within
    /// [`Config::handshake_deadline`], decided as [`Engine::decide`] decides. Returns once the
    /// stream is queued to its shard; the client receives broadcasts from the moment its
    /// upgrade completes ([`Handler::on_registered`]). The same as [`Engine::register_with`]
    /// with [`Registration::new`], which also says what becomes of a TCP stream.
    ///
    /// # Errors
    ///
    /// [`RegisterError::Closed`] after shutdown; [`RegisterError::TooManyClients`] at
    /// [`Config::clients_max`]; [`RegisterError::Io`] if a TCP stream cannot be detached from
    /// its runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancelled while waiting for room in the shard queue, the stream is dropped and nothing
    /// was registered.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
    /// let (stream, _) = listener.accept().await?;
    /// let id = engine.register(stream).await?;
    /// # let _ = id;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register<S: Io>(&self, stream: S) -> Result<ClientId, RegisterError> {
        self.register_with(stream, Registration::new()).await
    }

    /// Hands a stream to the engine, opened as `registration` says: upgraded on its shard
    /// (the default) or already upgraded by the embedder ([`Registration::upgraded`]), wrapped
    /// on its shard first ([`Registration::wrap`]), with data ([`Registration::data`]).
    /// Returns once the stream is queued to its shard.
    ///
    /// # TCP streams
    ///
    /// A plain `tokio::net::TcpStream`, accepted on any runtime, is moved to its shard's own
    /// reactor (a socket polled from another thread's reactor would pay a cross-thread wake-up
    /// per event, and die with that runtime), and gets `TCP_NODELAY`. Any other stream over
    /// TCP (TLS, a framework's upgraded connection) must have `TCP_NODELAY` set by its owner
    /// before it is handed over: with Nagle's algorithm on, the kernel holds each small write
    /// back until the last one is acknowledged, which cut throughput about 5x in our
    /// measurements.
    ///
    /// # Errors
    ///
    /// As [`Engine::register`], and [`RegisterError::CannotWrap`] for a wrap on a stream that
    /// is not a plain `TcpStream`, or is already upgraded. On any error the stream is dropped.
    ///
    /// # Cancel safety
    ///
    /// As [`Engine::register`].
    ///
    /// ```
    /// use shardcast::{ClientData, Registration};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
    /// let (stream, _) = listener.accept().await?;
    /// // A wrap that adds nothing; a TLS acceptor would go here.
    /// let plain = |tcp: tokio::net::TcpStream| async move { Ok::<_, std::io::Error>(tcp) };
    /// let registration = Registration::new().wrap(plain).data(ClientData::new("lobby"));
    /// engine.register_with(stream, registration).await?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn register_with<S: Io>(
        &self,
        stream: S,
        registration: Registration,
    ) -> Result<ClientId, RegisterError> {
        let Registration {
            upgraded,
            wrap,
            data,
            read,
            peer,
        } = registration;
        if wrap.is_some() && upgraded.is_some() {
            return Err(RegisterError::CannotWrap);
        }
        let stream = into_stream(stream, wrap, peer)?;
        let shards = self.shards();
        if shards.is_empty() {
            return Err(RegisterError::Closed);
        }
        let index = self.inner.next_shard.fetch_add(1, Relaxed) % shards.len();
        let handle = &shards[index];
        let id = self
            .inner
            .admission
            .admit_on(handle.id)
            .ok_or(RegisterError::TooManyClients)?;
        let opening = Box::new(Opening {
            upgraded,
            data,
            read,
        });
        let command = Control::Register {
            id,
            stream,
            opening,
        }
        .into();
        match handle.send(command).await {
            Ok(()) => Ok(id),
            Err(_) => {
                self.inner.admission.release();
                Err(RegisterError::Closed)
            }
        }
    }

    /// Decides on an upgrade request exactly as a shard does when it reads one itself: the
    /// [`Config::allowed_origins`] list (403), refusal during shutdown (503), then
    /// [`Handler::on_upgrade`] with `peer`, and the subprotocol: the handler's, or the first
    /// the client offered that [`Config::protocols`] lists (400 if the client offered some and
    /// none is answered, see [`Builder::protocols`](crate::Builder::protocols)). For an
    /// embedder whose own HTTP server answers the upgrade: build the [`Request`] with
    /// [`Request::new`], answer with the [`Rejected`] status or with 101 and
    /// [`Accepted::protocol`], then register the stream with [`Registration::upgraded`]. Never
    /// waits: it runs the handler on the caller's thread.
    ///
    /// # Errors
    ///
    /// [`Rejected`], with the status and body to answer.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// use shardcast::Engine;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder()
    ///     .shards(1)
    ///     .allowed_origins(Some(vec!["https://example.com".into()]))
    ///     .build()?;
    /// let headers = [
    ///     ("Upgrade", "websocket"),
    ///     ("Connection", "Upgrade"),
    ///     ("Sec-WebSocket-Version", "13"),
    ///     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ///     ("Origin", "https://elsewhere.example"),
    /// ];
    /// let refused = engine.decide(&Request::new("/", headers)?, None).unwrap_err();
    /// assert_eq!((refused.status(), refused.body()), (403, "origin not allowed"));
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn decide(
        &self,
        request: &Request<'_>,
        peer: Option<SocketAddr>,
    ) -> Result<Accepted, Rejected> {
        let accepting = !self.shards().is_empty();
        let decided = shard::decide(&self.inner.config, accepting, request, || {
            self.inner.handler.on_upgrade(request, peer)
        });
        if decided.is_err() {
            self.inner.decide_refused.fetch_add(1, Relaxed);
        }
        decided
    }

    /// Listens on `addr` with one `SO_REUSEPORT` listener per shard, so connections are
    /// accepted on the shard that will own them. Returns the bound address (useful with port
    /// 0). A host name is resolved, and its first address is used. Accepting stops at shutdown.
    ///
    /// An address that another socket already listens on is refused, even where
    /// `SO_REUSEPORT` would let the listeners share it (another engine or process of the same
    /// user, or an earlier `listen` of this engine): the two would each take part of the
    /// connections. The one case not caught is two listeners starting on the same port at the
    /// same moment (within the microseconds between the check and the first `listen(2)`), when
    /// both use `SO_REUSEPORT` under the same user.
    ///
    /// # Errors
    ///
    /// [`ListenError::AddrInUse`] if another socket listens on the address;
    /// [`ListenError::Io`] if it cannot be resolved or bound otherwise; [`ListenError::Closed`]
    /// after shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancelled while handing the listeners to the shards, those not yet handed over are
    /// closed; the ones handed over keep accepting until shutdown.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(2).build()?;
    /// let addr = engine.listen("127.0.0.1:0").await?;
    /// assert_ne!(addr.port(), 0);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn listen(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<SocketAddr, ListenError> {
        self.listen_on(addr, None).await
    }

    /// Like [`Engine::listen`], wrapping every accepted stream with `wrap` (a TLS acceptor,
    /// say) on the shard that accepted it.
    ///
    /// # Errors
    ///
    /// As [`Engine::listen`].
    ///
    /// # Cancel safety
    ///
    /// As [`Engine::listen`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(2).build()?;
    /// let plain = |tcp: tokio::net::TcpStream| async move { Ok::<_, std::io::Error>(tcp) };
    /// let addr = engine.listen_wrapped("127.0.0.1:0", plain).await?;
    /// # let _ = addr;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn listen_wrapped(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
        wrap: impl Wrap,
    ) -> Result<SocketAddr, ListenError> {
        self.listen_on(addr, Some(Arc::new(wrap))).await
    }

    async fn listen_on(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
        wrap: Option<Arc<dyn Wrap>>,
    ) -> Result<SocketAddr, ListenError> {
        let shards = self.shards().clone();
        if shards.is_empty() {
            return Err(ListenError::Closed);
        }
        let mut resolved = tokio::net::lookup_host(addr).await?;
        let addr = resolved
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
        // `SO_REUSEPORT` would let our listeners join any listening group of the same user on
        // this port (another `shardcast serve`, another engine), each then taking part of the
        // connections. The probe has no `SO_REUSEPORT`, so its bind fails if anything listens
        // on the port. It keeps `SO_REUSEADDR`, which lets it share the port with connections
        // in TIME_WAIT (a server restarted at once) but never with a listener. With port 0 it
        // picks the port.
        let probe = bind(addr, false).map_err(in_use(addr))?;
        let addr = probe.local_addr()?.as_socket().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP address")
        })?;
        // The probe stays bound until every listener is listening: both have `SO_REUSEADDR`
        // and it never listens, so they share the port, and a socket without `SO_REUSEPORT`
        // that binds meanwhile makes our listeners' bind fail instead of joining. What is left
        // is a race between two reuseport groups of one user probing the same port at once:
        // both may then listen.
        let mut listeners = Vec::with_capacity(shards.len());
        for _ in 0..shards.len() {
            let socket = bind(addr, true).map_err(in_use(addr))?;
            socket.listen(LISTEN_BACKLOG).map_err(in_use(addr))?;
            listeners.push(std::net::TcpListener::from(socket));
            #[cfg(not(unix))]
            break;
        }
        drop(probe);
        for (handle, listener) in shards.iter().zip(listeners) {
            handle
                .send(
                    Control::Listen {
                        listener,
                        wrap: wrap.clone(),
                    }
                    .into(),
                )
                .await
                .map_err(|_| ListenError::Closed)?;
        }
        Ok(addr)
    }

    /// Closes `id` with 1000 after its queued frames and forgets it. Returns what was known of
    /// it, or `None` if it was not registered.
    ///
    /// # Cancel safety
    ///
    /// Cancelled before the shard took the command, nothing happens; after, the client is still
    /// removed (only the answer is lost).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// // A client whose upgrade request (`request`) the embedder answered.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// assert!(engine.remove(id).await.is_some());
    /// assert!(engine.remove(id).await.is_none(), "already gone");
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn remove(&self, id: ClientId) -> Option<ClientInfo> {
        let (reply, rx) = oneshot::channel();
        self.command(
            id.shard(),
            Control::Remove {
                id,
                reply: Some(reply),
            }
            .into(),
        )
        .await
        .ok()?;
        rx.await.ok().flatten()
    }

    /// A snapshot of `id`, or `None` if it is not registered.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only asks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// // A client whose upgrade request (`request`) the embedder answered.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// let info = engine.client(id).await.expect("registered");
    /// assert!(!info.authenticated);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn client(&self, id: ClientId) -> Option<ClientInfo> {
        let (reply, rx) = oneshot::channel();
        self.command(id.shard(), Control::Query { id, reply }.into())
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Subscribes `id` to `topic`: from when this returns, every broadcast to an audience of
    /// the topic ([`Audience::topic`]) reaches the client. Subscribing twice is a no-op.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::EmptyTopic`], [`SubscribeError::TopicTooLong`] or
    /// [`SubscribeError::TooManyTopics`] past the limits ([`Config::topic_bytes_max`],
    /// [`Config::topics_per_client_max`]), and nothing changed;
    /// [`SubscribeError::NotRegistered`] if `id` is not registered;
    /// [`SubscribeError::Closed`] after shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancelled before the shard took the command, nothing happens; after, the subscription
    /// is made (only the answer is lost).
    ///
    /// ```
    /// use shardcast::{Audience, Engine, Payload};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// engine.subscribe(id, "news").await?;
    /// assert_eq!(engine.subscriber_count("news").await, 1);
    /// engine.broadcast(Payload::text("extra!"), Audience::topic("news")).await?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe(
        &self,
        id: ClientId,
        topic: impl Into<Topic>,
    ) -> Result<(), SubscribeError> {
        let (reply, rx) = oneshot::channel();
        let topic = topic.into();
        self.command(id.shard(), Control::Subscribe { id, topic, reply }.into())
            .await
            .map_err(|_| SubscribeError::Closed)?;
        rx.await.map_err(|_| SubscribeError::Closed)?.map(drop)
    }

    /// Unsubscribes `id` from `topic`: from when this returns, no broadcast accepted later to
    /// an audience of only that topic reaches the client. Returns whether it was subscribed
    /// (`false` too if it is not registered).
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Closed`] after shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancelled before the shard took the command, nothing happens; after, the client is
    /// unsubscribed (only the answer is lost).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// engine.subscribe(id, "news").await?;
    /// assert!(engine.unsubscribe(id, "news").await?);
    /// assert!(!engine.unsubscribe(id, "news").await?, "not any more");
    /// assert_eq!(engine.subscriber_count("news").await, 0);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unsubscribe(
        &self,
        id: ClientId,
        topic: impl Into<Topic>,
    ) -> Result<bool, SubscribeError> {
        let (reply, rx) = oneshot::channel();
        let topic = topic.into();
        self.command(id.shard(), Control::Unsubscribe { id, topic, reply }.into())
            .await
            .map_err(|_| SubscribeError::Closed)?;
        rx.await.map_err(|_| SubscribeError::Closed)
    }

    /// Subscribers of `topic` now, summed over the shards that have any (asked in turn, so
    /// under churn the sum mixes moments). 0 after shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only asks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(2).build()?;
    /// assert_eq!(engine.subscriber_count("nobody-here").await, 0);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscriber_count(&self, topic: impl Into<Topic>) -> usize {
        let topic = topic.into();
        let audience = Audience::topic(&topic);
        let shards = self.shards().clone();
        let mut count = 0;
        for handle in shards.iter() {
            if !self.inner.interest.wants(&audience, handle.id.index()) {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let topic = topic.clone();
            if handle
                .send(Control::SubscriberCount { topic, reply }.into())
                .await
                .is_ok()
            {
                count += rx.await.unwrap_or(0);
            }
        }
        count
    }

    /// Registered clients now, summed over shards without a round trip (each shard's count is
    /// exact; the sum is a moment's snapshot).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// assert_eq!(engine.client_count(), 0);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn client_count(&self) -> usize {
        self.inner
            .counters
            .iter()
            .map(|c| c.clients.load(Relaxed) as usize)
            .sum()
    }

    /// Connections now, including those still in their upgrade.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// assert_eq!(engine.connection_count(), 0);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connection_count(&self) -> usize {
        self.inner.admission.connections()
    }

    /// Marks `id` authenticated as `principal`: it now receives
    /// [`Audience::AUTHENTICATED`] broadcasts and is exempt from the auth deadline.
    ///
    /// # Errors
    ///
    /// [`UpdateError::Closed`] after shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancelled before the shard took the command, nothing changes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shardcast::Principal;
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// // A client whose upgrade request (`request`) the embedder answered.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// engine.set_authenticated(id, Principal::new("alice")).await?;
    /// assert!(engine.client(id).await.expect("registered").authenticated);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_authenticated(
        &self,
        id: ClientId,
        principal: Principal,
    ) -> Result<(), UpdateError> {
        self.command(
            id.shard(),
            Control::SetAuthenticated {
                id,
                principal: Some(principal),
            }
            .into(),
        )
        .await
    }

    /// Refreshes `id`'s last-seen time, as an inbound frame would.
    ///
    /// # Errors
    ///
    /// [`UpdateError::Closed`] after shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancelled before the shard took the command, nothing changes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// // A client whose upgrade request (`request`) the embedder answered.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// // An application-level heartbeat (TopGun's PING message) arrived.
    /// engine.update_last_ping(id).await?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_last_ping(&self, id: ClientId) -> Result<(), UpdateError> {
        self.command(id.shard(), Control::UpdateLastPing { id }.into())
            .await
    }

    /// Whether `id` is registered and was heard from within the heartbeat timeout. An unknown
    /// client is not alive.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only asks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// // A client whose upgrade request (`request`) the embedder answered.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// assert!(engine.is_alive(id).await);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn is_alive(&self, id: ClientId) -> bool {
        let timeout = self.inner.config.heartbeat_timeout;
        self.client(id).await.is_some_and(|c| c.idle < timeout)
    }

    /// Time since `id` was last heard from; `Duration::MAX` for an unknown client.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only asks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// // A client whose upgrade request (`request`) the embedder answered.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// assert!(engine.idle_time(id).await < std::time::Duration::from_secs(1));
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn idle_time(&self, id: ClientId) -> Duration {
        self.client(id).await.map_or(Duration::MAX, |c| c.idle)
    }

    /// Broadcasts `payload` to `audience` on every shard, waiting for room in each shard's
    /// queue.
    ///
    /// # Errors
    ///
    /// [`BroadcastError::Closed`] after shutdown, with the payload;
    /// [`BroadcastError::Topic`] for a topic past the topic limits (nothing is sent).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reserves a slot in every shard's queue before it sends to any, so a
    /// cancelled call has sent nothing (and frees what it reserved).
    ///
    /// ```
    /// use shardcast::{Audience, Engine, Payload};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder().shards(2).build()?;
    /// engine.broadcast(Payload::text("to all"), Audience::ALL).await?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn broadcast(
        &self,
        payload: Payload,
        audience: Audience,
    ) -> Result<(), BroadcastError> {
        if let Err(e) = self.check_audience(&audience) {
            return Err(BroadcastError::Topic(e, payload));
        }
        let shards = self.shards().clone();
        match self.reserve_for(&shards, &audience).await {
            Some(permits) => {
                self.send_all(permits, smallvec![payload], audience);
                Ok(())
            }
            None => Err(BroadcastError::Closed(payload)),
        }
    }

    /// Whether every topic of `audience` is within the topic limits: the topics one may
    /// subscribe to are the only ones worth publishing to, and the only ones that can cross
    /// to other nodes.
    fn check_audience(&self, audience: &Audience) -> Result<(), SubscribeError> {
        let limits = shard::TopicLimits::of(&self.inner.config);
        audience
            .topic_filter()
            .unwrap_or_default()
            .iter()
            .try_for_each(|topic| limits.check(topic))
    }

    /// Broadcasts several frames as one batch: every client of `audience` receives them
    /// adjacent and in order, and they go to its socket together.
    ///
    /// # Errors
    ///
    /// [`BroadcastError::Closed`] after shutdown, with the payloads;
    /// [`BroadcastError::Topic`] for a topic past the topic limits (nothing is sent).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Engine::broadcast`]: all shards or none.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shardcast::{Audience, Payload};
    /// let engine = shardcast::Engine::builder().shards(2).build()?;
    /// let frames = (0..3).map(|i| Payload::text(format!("part {i}")));
    /// engine.broadcast_batch(frames, Audience::ALL).await?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn broadcast_batch(
        &self,
        payloads: impl IntoIterator<Item = Payload>,
        audience: Audience,
    ) -> Result<(), BroadcastError<Vec<Payload>>> {
        let payloads: Payloads = payloads.into_iter().collect();
        if payloads.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.check_audience(&audience) {
            return Err(BroadcastError::Topic(e, payloads.into_vec()));
        }
        let shards = self.shards().clone();
        match self.reserve_for(&shards, &audience).await {
            Some(permits) => {
                self.send_all(permits, payloads, audience);
                Ok(())
            }
            None => Err(BroadcastError::Closed(payloads.into_vec())),
        }
    }

    /// Reserves a slot in the queue of every shard that may have clients in `audience` (for a
    /// topic audience, the shards with subscribers: see `Interest`): all or nothing, so that
    /// a cancelled call has sent nothing. `None` after shutdown.
    async fn reserve_for<'a>(
        &self,
        shards: &'a [Handle],
        audience: &Audience,
    ) -> Option<Permits<'a>> {
        if shards.is_empty() {
            return None;
        }
        shard::reserve_wanted(shards, &self.inner.interest, audience).await
    }

    /// Sends one broadcast through a permit of every shard, and counts it.
    fn send_all(&self, permits: Permits<'_>, mut payloads: Payloads, audience: Audience) {
        self.inner
            .published
            .fetch_add(payloads.len() as u64, Relaxed);
        // Once, here, for every recipient that negotiated permessage-deflate.
        let inner = &*self.inner;
        inner
            .interest
            .compress(&mut payloads, &inner.config.compression);
        // Offered once the shards have it: local delivery first, then the other nodes.
        let bridged = (self.inner.link.as_ref()).map(|l| (l, payloads.clone(), audience.clone()));
        shard::send_each(permits, payloads, audience);
        if let Some((link, payloads, audience)) = bridged {
            link.offer_one(payloads, audience);
        }
    }

    /// Broadcasts without waiting, to every shard or to none: if any shard's queue is full, no
    /// shard takes the payload, so a retry can never deliver it twice.
    ///
    /// ```
    /// use shardcast::{Audience, Engine, Payload, TryBroadcastError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder().shards(2).build()?;
    /// match engine.try_broadcast(Payload::text("tick"), Audience::ALL) {
    ///     Ok(()) => {}
    ///     // Nothing was sent: wait for room, or count the loss.
    ///     Err(TryBroadcastError::Full { payload, .. }) => {
    ///         engine.broadcast(payload, Audience::ALL).await?
    ///     }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`TryBroadcastError::Full`] names the shards whose queues were full (no shard took the
    /// payload); [`TryBroadcastError::Closed`] after shutdown; [`TryBroadcastError::Topic`]
    /// for a topic past the topic limits.
    pub fn try_broadcast(
        &self,
        payload: Payload,
        audience: Audience,
    ) -> Result<(), TryBroadcastError> {
        if let Err(e) = self.check_audience(&audience) {
            return Err(TryBroadcastError::Topic(e, payload));
        }
        let shards = self.shards();
        if shards.is_empty() {
            return Err(TryBroadcastError::Closed(payload));
        }
        let mut permits = Permits::new();
        let mut full = Vec::new();
        for handle in shards.iter() {
            if !self.inner.interest.wants(&audience, handle.id.index()) {
                continue;
            }
            match handle.try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(mpsc::error::TrySendError::Full(())) => full.push(handle.id),
                Err(mpsc::error::TrySendError::Closed(())) => {
                    return Err(TryBroadcastError::Closed(payload));
                }
            }
        }
        if !full.is_empty() {
            return Err(TryBroadcastError::Full {
                shards: full,
                payload,
            });
        }
        self.send_all(permits, smallvec![payload], audience);
        Ok(())
    }

    /// Sends `payload` to one client (dropped silently if `id` is not registered).
    ///
    /// # Errors
    ///
    /// [`BroadcastError::Closed`] after shutdown, with the payload.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelled while waiting for room, nothing was sent (the payload is
    /// dropped).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shardcast::Payload;
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// // A client whose upgrade request (`request`) the embedder answered.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// engine.send(id, Payload::text("just for you")).await?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send(&self, id: ClientId, payload: Payload) -> Result<(), BroadcastError> {
        let Some(handle) = self.shards().get(id.shard().index()).cloned() else {
            return Err(BroadcastError::Closed(payload));
        };
        // Reserved first, so that the payload comes back without unpacking a command.
        match handle.reserve().await {
            Ok(permit) => {
                permit.send(Delivery::Send { id, payload }.into());
                Ok(())
            }
            Err(_) => Err(BroadcastError::Closed(payload)),
        }
    }

    /// Sends `payload` to one client without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] if its shard's queue is full; [`TrySendError::Closed`] after
    /// shutdown.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shardcast::{Payload, TrySendError};
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// # use shardcast::{Registration, wire::handshake::Request};
    /// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
    /// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
    /// # let request = Request::new("/", headers)?;
    /// // A client whose upgrade request (`request`) the embedder answered.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let accepted = engine.decide(&request, None)?;
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// match engine.try_send(id, Payload::text("hi")) {
    ///     Ok(()) => {}
    ///     Err(TrySendError::Full(payload)) => engine.send(id, payload).await?,
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_send(&self, id: ClientId, payload: Payload) -> Result<(), TrySendError> {
        let shards = self.shards();
        let Some(handle) = shards.get(id.shard().index()) else {
            return Err(TrySendError::Closed(payload));
        };
        // Reserved first, so that the payload comes back without unpacking a command.
        match handle.try_reserve() {
            Ok(permit) => {
                permit.send(Delivery::Send { id, payload }.into());
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => Err(TrySendError::Full(payload)),
            Err(mpsc::error::TrySendError::Closed(())) => Err(TrySendError::Closed(payload)),
        }
    }

    async fn command(&self, shard: ShardId, command: Command) -> Result<(), UpdateError> {
        let handle = self
            .shards()
            .get(shard.index())
            .cloned()
            .ok_or(UpdateError::Closed)?;
        handle.send(command).await.map_err(|_| UpdateError::Closed)
    }

    /// Whether the engine has a bridge to other nodes.
    #[cfg(feature = "metrics")]
    pub(crate) fn bridged(&self) -> bool {
        self.inner.link.is_some()
    }

    /// Counters of every shard and their total.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(2).build()?;
    /// let stats = engine.stats();
    /// assert_eq!(stats.shards.len(), 2);
    /// assert_eq!(stats.total.clients, 0);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        let shards = self.shards();
        let per_shard = self
            .inner
            .counters
            .iter()
            .enumerate()
            .map(|(i, counters)| {
                let inbox = self.inner.inbox_tallies.get(i).map(|t| &***t);
                match shards.get(i) {
                    Some(handle) => handle.stats(inbox),
                    None => crate::stats::ShardStats::read(counters, 0, inbox),
                }
            })
            .collect();
        let bridge = (self.inner.link.as_ref()).map_or_else(BridgeStats::default, |link| {
            BridgeStats::read(&link.counters)
        });
        let inner = &*self.inner;
        let published = inner.published.load(Relaxed);
        let mut stats =
            Stats::from_shards(per_shard, published, inner.interest.compressions(), bridge);
        stats.upgrades_refused_by_decide = inner.decide_refused.load(Relaxed);
        stats
    }

    /// The [`Inbox`]: clients' messages and lifecycle events as an async stream, for code that
    /// must await. `Some` once, for an engine built with [`Builder::inbox`](crate::Builder::inbox); `None` after that,
    /// and without one. See [`Inbox`] for back-pressure, ordering and shutdown.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().inbox(true).build()?;
    /// let inbox = engine.inbox();
    /// assert!(inbox.is_some());
    /// assert!(engine.inbox().is_none(), "taken already");
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn inbox(&self) -> Option<Inbox> {
        self.inner
            .inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Number of shards.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(3).build()?;
    /// assert_eq!(engine.shard_count(), 3);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn shard_count(&self) -> usize {
        self.inner.counters.len()
    }

    /// Drains queued frames, sends close 1001 to every client, and joins every shard thread,
    /// all within `deadline` (past it, what is left is dropped). Later calls on any clone fail
    /// with `Closed`. Calling it twice is harmless (the second call reports nothing).
    ///
    /// Returns which shards did not stop in time: a shard stuck in a handler that blocks cannot
    /// be stopped from outside, so its thread is left to end on its own, and the report says so
    /// instead of detaching it silently.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(2).build()?;
    /// let report = engine.shutdown(std::time::Duration::from_secs(5)).await;
    /// assert!(report.unjoined.is_empty(), "every shard thread was joined");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancelled, the shards that were asked to stop still stop by the deadline, but their
    /// threads are not joined by this call.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        // The bridge first: it publishes what is queued while the shards drain.
        self.inner.bridge_stop.cancel();
        let shards = self.inner.shards.swap(Arc::new(Vec::new()));
        let at = Instant::now() + deadline;
        let mut waits = Vec::with_capacity(shards.len());
        for handle in shards.iter() {
            let (done, rx) = oneshot::channel();
            if handle
                .send(Control::Shutdown { deadline: at, done }.into())
                .await
                .is_ok()
            {
                waits.push((handle.id, rx));
            }
        }
        drop(shards);
        let mut report = ShutdownReport::default();
        for (id, rx) in waits {
            // The shard stops by `at` and then signals; the margin covers dropping its runtime.
            let margin = at + Duration::from_secs(1);
            if !matches!(tokio::time::timeout_at(margin, rx).await, Ok(Ok(()))) {
                report.unjoined.push(id);
            }
        }
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, thread) in threads.into_iter().enumerate() {
            let id = ShardId(i as u16);
            if report.unjoined.contains(&id) {
                // Still running: joining would block for as long as it runs.
                continue;
            }
            // It signalled after dropping its runtime and is returning: join it off the
            // runtime's threads.
            let joined = tokio::task::spawn_blocking(move || thread.join());
            let margin = Instant::now() + Duration::from_secs(1);
            if !matches!(
                tokio::time::timeout_at(margin, joined).await,
                Ok(Ok(Ok(())))
            ) {
                report.unjoined.push(id);
            }
        }
        let bridge = self
            .inner
            .bridge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = bridge {
            // It stops within a second of `bridge_stop` (see `bridge::driver`).
            let joined = tokio::task::spawn_blocking(move || thread.join());
            let margin = Instant::now() + Duration::from_secs(2);
            report.bridge_unjoined = !matches!(
                tokio::time::timeout_at(margin, joined).await,
                Ok(Ok(Ok(())))
            );
        }
        report
    }
}

/// What [`Engine::shutdown`] could not finish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Shards that did not stop within the deadline (plus a second), or whose thread could not
    /// be joined (it panicked): their threads were left to end on their own.
    pub unjoined: Vec<ShardId>,
    /// The bridge thread did not stop within two seconds, or panicked.
    pub bridge_unjoined: bool,
}

/// A non-blocking TCP socket with `SO_REUSEADDR`, bound to `addr`; with `SO_REUSEPORT` too
/// (on Unix) if `shared`, to join the listeners of the other shards.
fn bind(addr: SocketAddr, shared: bool) -> std::io::Result<socket2::Socket> {
    // Plain sockets, not tokio's: each listener is adopted by its shard's own runtime, and this
    // way `listen` needs no runtime of its own.
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(shared)?;
    #[cfg(not(unix))]
    let _ = shared;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Maps "address in use" to [`ListenError::AddrInUse`] naming `addr`.
fn in_use(addr: SocketAddr) -> impl Fn(std::io::Error) -> ListenError {
    move |e| match e.kind() {
        std::io::ErrorKind::AddrInUse => ListenError::AddrInUse(addr),
        _ => ListenError::Io(e),
    }
}

/// A stream on its way to its shard. A plain `tokio::net::TcpStream` is detached from the
/// runtime that made it, to be registered with its shard's reactor (polled from another
/// thread's reactor, it would pay a cross-thread wake-up per event, and die with that
/// runtime), and gets `TCP_NODELAY` and its peer's address there. With Nagle's algorithm on, the
/// kernel holds a small frame back until the previous one is acknowledged: measured here, 0.36M
/// deliveries/s against 1.4-2.0M with it off. A stream that wraps a TCP socket (TLS, an HTTP
/// upgrade) is out of the engine's reach: its owner must set it. Only a TCP stream can be
/// wrapped (`wrap`). `peer` is the address of any other stream, if its owner knows it.
fn into_stream<S: Io>(
    stream: S,
    wrap: Option<Arc<dyn Wrap>>,
    peer: Option<SocketAddr>,
) -> Result<Stream, RegisterError> {
    let mut slot = Some(stream);
    let tcp = (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<tokio::net::TcpStream>>()
        .and_then(Option::take);
    match (tcp, slot) {
        (Some(tcp), _) => Ok(Stream::Tcp(
            tcp.into_std().map_err(RegisterError::Io)?,
            wrap,
        )),
        (None, Some(_)) if wrap.is_some() => Err(RegisterError::CannotWrap),
        (None, Some(stream)) => Ok(Stream::Boxed(Box::new(stream), peer)),
        // The downcast takes the stream only when it returns it.
        (None, None) => unreachable!("a stream is either a TcpStream or still in its slot"),
    }
}
