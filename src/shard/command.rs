//! `Command`: the only way into a shard.
//!
//! # Ordering
//!
//! A shard applies its commands in queue order, so the commands one publisher sends to one shard
//! take effect in the order it sent them.

use super::core::{Accepted, Delivery};
use crate::client::{ClientData, ClientInfo, Principal};
use crate::error::SubscribeError;
use crate::{ClientId, Topic};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A byte stream a shard can own: TCP, TLS, an in-memory duplex, ...
///
/// A stream may buffer what it is given (TLS encrypts into records, which it keeps while the
/// socket is full): the engine flushes it after the upgrade response and whenever the client's
/// queue empties, and a flush that cannot finish counts toward
/// [`Config::write_deadline`](crate::Config::write_deadline) as a blocked write does.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Wraps a raw TCP stream (TLS, PROXY protocol, ...) on the shard that will own it, so the
/// wrapped stream is born on the shard's reactor. Any `Fn(TcpStream) -> Future` closure whose
/// future yields an [`Io`] is a `Wrap`; the future runs on the shard thread (it need not be
/// `Send`) within the handshake deadline.
///
/// ```
/// # use shardcast::Wrap;
/// // A wrap that adds nothing (a TLS acceptor would go here).
/// fn plain() -> impl Wrap {
///     |tcp: tokio::net::TcpStream| async move { Ok::<_, std::io::Error>(tcp) }
/// }
/// # let _ = plain();
/// ```
pub trait Wrap: Send + Sync + 'static {
    /// Turns the raw stream into the one the engine reads and writes.
    fn wrap(&self, tcp: tokio::net::TcpStream) -> WrapFuture;
}

/// The future a [`Wrap`] returns.
pub type WrapFuture = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>>>>;

impl<F, Fut, S> Wrap for F
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<S>> + 'static,
    S: Io,
{
    fn wrap(&self, tcp: tokio::net::TcpStream) -> WrapFuture {
        let wrapping = self(tcp);
        Box::pin(async move { wrapping.await.map(|s| Box::new(s) as Box<dyn Io>) })
    }
}

/// A stream on its way to its shard.
pub(crate) enum Stream {
    /// A TCP stream detached from the runtime that accepted it, so that it registers with its
    /// shard's reactor (a stream polled from another runtime pays a cross-thread wake per event),
    /// and optionally wrapped there.
    Tcp(std::net::TcpStream, Option<Arc<dyn Wrap>>),
    /// Any other stream, polled where it was created, with its peer's address if known.
    Boxed(Box<dyn Io>, Option<std::net::SocketAddr>),
}

/// How a registered stream opens, beyond the stream itself. Boxed in its command (one small
/// allocation per registration), so that every slot of every shard queue stays 64 bytes
/// instead of 128.
#[derive(Debug)]
pub(crate) struct Opening {
    /// The decision for a stream the embedder upgraded (admit it at once); `None`: run the
    /// upgrade.
    pub(crate) upgraded: Option<Accepted>,
    /// The client's data if its decision attaches none.
    pub(crate) data: Option<ClientData>,
    /// Bytes the embedder read after the upgrade request, to parse before reading the stream;
    /// empty unless `upgraded` is `Some`.
    pub(crate) read: Bytes,
}

/// What a shard can be asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// A broadcast or a send from the engine.
    Deliver(Delivery),
    /// The broadcasts and sends that handlers on another shard queued while one read of one
    /// connection was handled (posted every 64, or more if one handler call queued more), in
    /// order: one push, so that this shard sees them together.
    Relayed(Vec<Delivery>),
    /// Anything else.
    Control(Control),
}

/// Commands about the shard and its clients that deliver no frame.
pub(crate) enum Control {
    /// Own this stream and open it as `opening` says.
    Register {
        id: ClientId,
        stream: Stream,
        opening: Box<Opening>,
    },
    /// Accept connections from this listener (one per shard, `SO_REUSEPORT`), wrapping each.
    Listen {
        listener: std::net::TcpListener,
        wrap: Option<Arc<dyn Wrap>>,
    },
    /// Close a client with 1000 and forget it; reply with what was known.
    Remove {
        id: ClientId,
        reply: Option<oneshot::Sender<Option<ClientInfo>>>,
    },
    /// Mark a client authenticated (or not, with `None`).
    SetAuthenticated {
        id: ClientId,
        principal: Option<Principal>,
    },
    /// Refresh a client's last-seen time.
    UpdateLastPing { id: ClientId },
    /// Subscribe a client to a topic; reply whether it is new.
    Subscribe {
        id: ClientId,
        topic: Topic,
        reply: oneshot::Sender<Result<bool, SubscribeError>>,
    },
    /// Unsubscribe a client from a topic; reply whether it was subscribed.
    Unsubscribe {
        id: ClientId,
        topic: Topic,
        reply: oneshot::Sender<bool>,
    },
    /// Reply with the number of subscribers of a topic on this shard.
    SubscriberCount {
        topic: Topic,
        reply: oneshot::Sender<usize>,
    },
    /// Reply with a snapshot of one client.
    Query {
        id: ClientId,
        reply: oneshot::Sender<Option<ClientInfo>>,
    },
    /// Drain, close every client with 1001, and stop by `deadline`; then signal `done`.
    Shutdown {
        deadline: Instant,
        done: oneshot::Sender<()>,
    },
}

impl Command {
    /// What the frames it delivers charge a client's queue that receives them all (0 for
    /// commands that deliver nothing).
    pub(crate) fn charge(&self) -> usize {
        match self {
            Command::Deliver(delivery) => delivery.charge(),
            Command::Relayed(many) => many.iter().map(Delivery::charge).sum(),
            Command::Control(_) => 0,
        }
    }
}

impl From<Delivery> for Command {
    fn from(delivery: Delivery) -> Command {
        Command::Deliver(delivery)
    }
}

impl From<Control> for Command {
    fn from(control: Control) -> Command {
        Command::Control(control)
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Register { .. } => "Register",
            Control::Listen { .. } => "Listen",
            Control::Remove { .. } => "Remove",
            Control::SetAuthenticated { .. } => "SetAuthenticated",
            Control::UpdateLastPing { .. } => "UpdateLastPing",
            Control::Subscribe { .. } => "Subscribe",
            Control::Unsubscribe { .. } => "Unsubscribe",
            Control::SubscriberCount { .. } => "SubscriberCount",
            Control::Query { .. } => "Query",
            Control::Shutdown { .. } => "Shutdown",
        })
    }
}
