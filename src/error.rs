//! Every public error type of shardcast.
//!
//! Each variant says what happened and what the caller should do. Variants of errors from calls
//! that never wait hand back what is needed to retry.

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
    /// The operating system refused to start a shard thread or its runtime.
    #[error("cannot start shard: {0}")]
    Spawn(#[source] std::io::Error),
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

/// [`crate::Engine::broadcast`] and [`crate::Engine::send`] failed: the engine is shut down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// The engine is shut down; nothing was sent.
    #[error("engine is shut down")]
    Closed,
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
/// let (_client, server) = tokio::io::duplex(4096);
/// let id = engine.register_upgraded(server).await?;
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
    /// No such client is registered (it left, or never was).
    #[error("client {0} is not registered")]
    NotRegistered(ClientId),
    /// The engine is shut down.
    #[error("engine is shut down")]
    Closed,
}
