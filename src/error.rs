//! Every public error type of shardcast.
//!
//! Each variant says what happened and what the caller should do. Errors of calls that take a
//! payload hand it back, as tokio's `SendError<T>` does, so that nothing is lost to a failed
//! call.

// Defined beside `Payload`, which returns it, so that `payload` needs nothing from here.
pub use crate::payload::PayloadError;
use crate::{ClientId, Payload, ShardId};

/// [`crate::Builder::build`] refused a setting, or could not start a shard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range; fix it and build again.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The `Config` field.
        field: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A name given to [`crate::Builder::protocols`] (here, as given) is not a subprotocol a
    /// client could offer: subprotocol names are RFC 6455 tokens, one or more visible ASCII
    /// characters without spaces or separators. Fix or remove it and build again.
    #[error(
        "invalid protocols: {0:?} is not a token (visible ascii, no space, none of ()<>@,;:\\\"/[]?={{}})"
    )]
    InvalidProtocol(String),
    /// The operating system refused to start a shard thread or its runtime.
    #[error("cannot start shard: {0}")]
    Spawn(#[source] std::io::Error),
    /// The bridge to other nodes could not start (see [`BridgeError`]); the engine was not
    /// started.
    #[error("{0}")]
    Bridge(#[source] BridgeError),
}

/// [`crate::Engine::register`] did not take the stream; the stream has been dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The engine is shut down.
    #[error("engine is shut down")]
    Closed,
    /// [`crate::Config::clients_max`] clients are connected; retry when some have left.
    #[error("too many clients")]
    TooManyClients,
    /// The stream could not be moved to its shard (e.g. `into_std` failed).
    #[error("cannot move stream to its shard: {0}")]
    Io(#[source] std::io::Error),
    /// A [`Registration::wrap`](crate::Registration::wrap) was given for a stream that is not
    /// a plain `tokio::net::TcpStream`, or for one already upgraded: a wrap runs on the raw
    /// socket, before the upgrade. Wrap the stream yourself before registering it, or register
    /// the `TcpStream`.
    #[error("a wrap needs a plain tcp stream that is not upgraded yet")]
    CannotWrap,
}

/// [`crate::Engine::listen`] could not bind the listeners.
///
/// ```
/// use shardcast::{Engine, ListenError};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let addr = taken.local_addr()?;
/// let engine = Engine::builder().shards(2).build()?;
/// match engine.listen(addr).await {
///     Err(ListenError::AddrInUse(refused)) => assert_eq!(refused, addr),
///     other => panic!("expected the address to be refused, got {other:?}"),
/// }
/// engine.shutdown(Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The engine is shut down.
    #[error("engine is shut down")]
    Closed,
    /// Another socket already listens on this address (another process, another engine, or an
    /// earlier `listen` of this one); nothing was bound. Stop that listener or choose another
    /// address.
    #[error("address {0} is already in use")]
    AddrInUse(std::net::SocketAddr),
    /// Binding or listening failed otherwise (permission, an address not on this host, a host
    /// name that does not resolve).
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// [`crate::Engine::broadcast`], [`crate::Engine::broadcast_batch`] or [`crate::Engine::send`]
/// failed; what was not sent comes back, as with tokio's `SendError<T>`: the payload (`T` =
/// [`Payload`]), or the payloads of a batch (`T` = `Vec<Payload>`).
///
/// ```
/// use shardcast::{Audience, BroadcastError, Engine, Payload};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().shards(1).build()?;
/// engine.shutdown(std::time::Duration::from_secs(1)).await;
/// match engine.broadcast(Payload::text("late"), Audience::ALL).await {
///     Err(BroadcastError::Closed(payload)) => assert_eq!(payload.body(), b"late"),
///     other => panic!("expected the payload back, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError<T = Payload> {
    /// The engine is shut down; nothing was sent, and here is what was not.
    #[error("engine is shut down")]
    Closed(T),
    /// A topic of the audience is past the topic limits (the error says which): nobody can be
    /// subscribed to it, and it could not cross to other nodes. Nothing was sent.
    #[error("{0}")]
    Topic(SubscribeError, T),
}

/// [`crate::Engine::set_authenticated`] or [`crate::Engine::update_last_ping`] changed
/// nothing. These calls carry no payload, so there is nothing to hand back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The engine is shut down; nothing was changed.
    #[error("engine is shut down")]
    Closed,
}

/// The engine's policy refused an upgrade request: from [`crate::Engine::decide`], the status
/// and body to answer the client with (build the answer with
/// [`reject_response`](crate::wire::handshake::reject_response) on a raw stream). The shard
/// answers the same when it reads the request itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("upgrade refused ({status}): {body}")]
pub struct Rejected {
    /// The HTTP status, 400 to 599.
    status: u16,
    /// The short text body.
    body: String,
}

impl Rejected {
    pub(crate) fn new(status: u16, body: impl Into<String>) -> Rejected {
        Rejected {
            status,
            body: body.into(),
        }
    }

    /// The HTTP status to answer with (400 to 599).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The short text body to answer with.
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// [`crate::Engine::try_broadcast`] could not reach every shard without waiting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryBroadcastError {
    /// These shards' queues were full, so no shard took the payload (all or nothing). Retry
    /// with [`crate::Engine::broadcast`], or count the loss.
    #[error("{} shard queue(s) full", shards.len())]
    Full {
        /// The shards whose queues were full.
        shards: Vec<ShardId>,
        /// The payload, to retry.
        payload: Payload,
    },
    /// The engine is shut down; nothing was sent.
    #[error("engine is shut down")]
    Closed(Payload),
    /// A topic of the audience is past the topic limits, as [`BroadcastError::Topic`]; nothing
    /// was sent.
    #[error("{0}")]
    Topic(SubscribeError, Payload),
}

/// [`crate::Engine::try_send`] could not queue the payload without waiting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The client's shard queue is full; retry later or with [`crate::Engine::send`].
    #[error("shard queue full")]
    Full(Payload),
    /// The engine is shut down.
    #[error("engine is shut down")]
    Closed(Payload),
}

/// A subscription was refused; nothing changed.
///
/// ```
/// use shardcast::{Engine, SubscribeError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().shards(1).topic_bytes_max(8).build()?;
/// # use shardcast::{Registration, wire::handshake::Request};
/// # let headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
/// #     ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")];
/// # let request = Request::new("/", headers)?;
/// let (_client, server) = tokio::io::duplex(4096);
/// let accepted = engine.decide(&request, None)?;
/// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
/// let refused = engine.subscribe(id, "much-too-long").await;
/// assert_eq!(refused, Err(SubscribeError::TopicTooLong { len: 13, max: 8 }));
/// # engine.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// A topic name must have at least one byte.
    #[error("empty topic name")]
    EmptyTopic,
    /// The topic name is longer than [`crate::Config::topic_bytes_max`].
    #[error("topic name of {len} bytes is longer than the limit of {max}")]
    TopicTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The client has [`crate::Config::topics_per_client_max`] subscriptions already;
    /// unsubscribe from one first.
    #[error("client has {max} subscriptions already, the limit")]
    TooManyTopics {
        /// The limit.
        max: usize,
    },
    /// The engine holds [`crate::Config::subscriptions_max`] subscriptions (client, topic)
    /// already, over every client: nothing changed. Raise the limit if memory allows (see its
    /// documentation), or unsubscribe some first.
    #[error("the engine holds {max} subscriptions already, the limit")]
    TooManySubscriptions {
        /// The limit.
        max: usize,
    },
    /// No such client is registered (it left, or never was).
    #[error("client {0} is not registered")]
    NotRegistered(ClientId),
    /// The engine is shut down.
    #[error("engine is shut down")]
    Closed,
}

/// A bridge to other nodes ([`crate::Builder::bridge`]) could not connect or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The broker could not be reached: start it, fix the address, or let the node start
    /// without it ([`crate::Builder::bridge_optional`]).
    #[error("cannot connect to the broker: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The broker refused a publication or subscription (too large, an invalid subject).
    #[error("the broker refused: {0}")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A bridge setting is invalid; it names which.
    #[error("invalid {0}")]
    Invalid(&'static str),
}
