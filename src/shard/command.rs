//! `Command`: the only way into a shard.
//!
//! # Ordering
//!
//! A shard applies its commands in queue order, so the commands one publisher sends to one shard
//! take effect in the order it sent them.

use crate::client::{ClientInfo, Principal};
use crate::{Audience, ClientId, Payload};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A byte stream a shard can own: TCP, TLS, an in-memory duplex, ...
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A stream on its way to its shard.
pub(crate) enum Stream {
    /// A TCP stream detached from the runtime that accepted it, so that it registers with its
    /// shard's reactor (a stream polled from another runtime pays a cross-thread wake per event).
    Tcp(std::net::TcpStream),
    /// Any other stream, polled where it was created.
    Boxed(Box<dyn Io>),
}

/// The payloads of one broadcast: one, or the frames of a batch.
pub(crate) type Payloads = SmallVec<[Payload; 1]>;

/// What a shard can be asked to do.
pub(crate) enum Command {
    /// Own this stream; run the upgrade unless `upgraded`.
    Register {
        id: ClientId,
        stream: Stream,
        upgraded: bool,
    },
    /// Accept connections from this listener (one per shard, `SO_REUSEPORT`).
    Listen { listener: std::net::TcpListener },
    /// Deliver to every client of the audience; a batch's frames stay adjacent.
    Broadcast {
        payloads: Payloads,
        audience: Audience,
    },
    /// Deliver to one client.
    Send { id: ClientId, payload: Payload },
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

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Command::Register { .. } => "Register",
            Command::Listen { .. } => "Listen",
            Command::Broadcast { .. } => "Broadcast",
            Command::Send { .. } => "Send",
            Command::Remove { .. } => "Remove",
            Command::SetAuthenticated { .. } => "SetAuthenticated",
            Command::UpdateLastPing { .. } => "UpdateLastPing",
            Command::Query { .. } => "Query",
            Command::Shutdown { .. } => "Shutdown",
        };
        f.write_str(name)
    }
}
