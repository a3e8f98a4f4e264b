//! The opening of a connection: wrapping (TLS, ...) and the HTTP upgrade, within the
//! handshake deadline, in a task of its own; then the connection is served: by the shard's
//! event loop (`evloop`) if it is a plain TCP stream and the loop runs, the task ending there;
//! otherwise by the same task (`conn`).

use super::super::command::{Io, Wrap};
use super::super::core::decide;
use super::shared::{Shared, Tenure};
use super::task::Conn;
use crate::ClientId;
use crate::client::ClientData;
use crate::stats::bump;
use crate::wire::{Limits, Parser, handshake};
use bytes::Bytes;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::Instrument;

/// How a connection's stream reaches its task.
pub(crate) enum Source {
    /// Ready to use.
    Ready(Box<dyn Io>),
    /// A plain TCP stream, for the shard's event loop once it is upgraded.
    Tcp(tokio::net::TcpStream),
    /// A raw TCP stream to wrap first (TLS, ...), on this shard.
    Wrap(tokio::net::TcpStream, Arc<dyn Wrap>),
}

/// Spawns [`run`] as a local task on this shard, inside a `connection` span (client, peer,
/// shard) when debug spans of this module are enabled.
///
/// The span is decided once per connection: when it is disabled (the default, with no
/// subscriber or one at `info`), the task is the bare future, so a connection costs neither
/// the span's bytes nor its enter and exit on every poll.
pub(crate) fn spawn(
    shared: Rc<Shared>,
    id: ClientId,
    source: Source,
    admitted: Option<(usize, Bytes)>,
    peer: Option<SocketAddr>,
    data: Option<ClientData>,
) {
    let span = tracing::debug_span!(
        "connection",
        client = %id,
        peer = peer.map(tracing::field::display),
        shard = shared.id.0,
    );
    let task = run(shared, id, source, admitted, peer, data);
    if span.is_disabled() {
        tokio::task::spawn_local(task);
    } else {
        tokio::task::spawn_local(task.instrument(span));
    }
}

/// Runs one connection to its end.
///
/// `admitted` is the client's slot when the worker already admitted it (a stream whose upgrade
/// the embedder did), with the bytes the embedder read after the upgrade request: admitted in
/// the same tick as its `Register` command, so a broadcast queued after the registration can
/// never miss it. Otherwise the client gets `data` if the handler's decision attaches none.
///
/// Every connection's task lives as long as the client, so its size is memory per client: the
/// opening (wrapping, upgrade, their deadline) runs in a box freed when it is done, and what
/// stays is one [`Conn`].
fn run(
    shared: Rc<Shared>,
    id: ClientId,
    source: Source,
    admitted: Option<(usize, Bytes)>,
    peer: Option<SocketAddr>,
    data: Option<ClientData>,
) -> impl Future<Output = ()> + 'static {
    let opening = Box::pin(open(shared, id, source, admitted, peer, data));
    async move {
        // `let else`: the `Option` is gone by the time `serve` runs, not kept beside `conn`.
        let Some(opened) = opening.await else {
            return;
        };
        let Some(mut conn) = opened.serve_here() else {
            return;
        };
        conn.serve().await;
    }
}

/// The stream of an opening connection.
enum Carrier {
    /// Served by the connection's task.
    Boxed(Box<dyn Io>),
    /// Served by the event loop once upgraded.
    Tcp(tokio::net::TcpStream),
}

impl Carrier {
    fn io(&mut self) -> &mut dyn Io {
        match self {
            Carrier::Boxed(io) => &mut **io,
            Carrier::Tcp(tcp) => tcp,
        }
    }
}

/// A connection whose opening succeeded: its client is admitted in `slot`.
struct Opened {
    tenure: Tenure,
    slot: usize,
    carrier: Carrier,
    parser: Parser,
    /// Bytes the client sent after its upgrade request.
    pending: Vec<u8>,
}

impl Opened {
    /// Hands the connection to the event loop, or returns it to be served by this task.
    fn serve_here(self) -> Option<Conn> {
        let Opened {
            tenure,
            slot,
            carrier,
            parser,
            pending,
        } = self;
        match carrier {
            Carrier::Boxed(io) => Some(Conn::new(tenure, slot, io, parser, pending)),
            #[cfg(unix)]
            Carrier::Tcp(tcp) => {
                super::evloop::join(tenure, slot, tcp, parser, pending);
                None
            }
            #[cfg(not(unix))]
            Carrier::Tcp(tcp) => Some(Conn::new(tenure, slot, Box::new(tcp), parser, pending)),
        }
    }
}

/// Why an opening did not make a client; each is counted under its own cause.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// Not a valid upgrade request (answered 4xx).
    Malformed,
    /// Refused by the policy (answered with its status).
    Refused,
    /// Not complete by the handshake deadline.
    TimedOut,
    /// The stream could not be wrapped in time.
    WrapFailed,
    /// The peer left, or its socket failed, first.
    Abandoned,
}

impl Failure {
    /// Counts it.
    fn count(self, shared: &Shared) {
        let c = &shared.counters;
        let counter = match self {
            Failure::Malformed => &c.handshakes_malformed,
            Failure::Refused => &c.handshakes_refused,
            Failure::TimedOut => &c.handshakes_timed_out,
            Failure::WrapFailed => &c.handshakes_wrap_failed,
            Failure::Abandoned => &c.handshakes_abandoned,
        };
        bump(counter, 1);
    }
}

/// Wraps and upgrades the stream, within the handshake deadline. `None` if it did not work out
/// (counted as a failed handshake, by cause).
async fn open(
    shared: Rc<Shared>,
    id: ClientId,
    source: Source,
    admitted: Option<(usize, Bytes)>,
    peer: Option<SocketAddr>,
    data: Option<ClientData>,
) -> Option<Opened> {
    let mut tenure = Tenure::new(shared, admitted.as_ref().map(|&(slot, _)| slot));
    let shared = tenure.shared().clone();
    let shared = &*shared;
    // One deadline for wrapping (a TLS handshake, say) and the HTTP upgrade together.
    let deadline = Instant::now() + shared.config.handshake_deadline;
    let io = match source {
        Source::Ready(io) => Ok(Carrier::Boxed(io)),
        Source::Tcp(tcp) => Ok(Carrier::Tcp(tcp)),
        Source::Wrap(tcp, wrap) => match tokio::time::timeout_at(deadline, wrap.wrap(tcp)).await {
            Ok(Ok(io)) => Ok(Carrier::Boxed(io)),
            Ok(Err(_)) => Err(Failure::WrapFailed),
            // A TLS handshake still going at the deadline is a slow client, not a failed wrap.
            Err(_) => Err(Failure::TimedOut),
        },
    };
    let mut io = match io {
        Ok(io) => io,
        Err(failure) => {
            failure.count(shared);
            tracing::debug!(
                client = %id,
                shard = shared.id.0,
                ?failure,
                "handshake failed: the stream could not be wrapped"
            );
            return None;
        }
    };
    let (slot, pending) = if let Some((slot, read)) = admitted {
        // Parsed before the first read of the stream, as the bytes a shard's own upgrade read
        // past the request are.
        (slot, Vec::from(read))
    } else {
        // Not wrapped in a timeout: at the deadline `upgrade` must still know what the client
        // sent, to answer 408, and a timeout around it would drop its buffer unread.
        match upgrade(shared, id, io.io(), deadline, peer, data).await {
            Ok(admitted) => admitted,
            Err(failure) => {
                failure.count(shared);
                return None;
            }
        }
    };
    tenure.registered(slot);
    tracing::debug!(
        client = %id,
        shard = shared.id.0,
        peer = peer.map(tracing::field::display),
        "registered"
    );
    let config = &shared.config;
    let parser = Parser::new(Limits {
        frame_bytes_max: config.frame_bytes_max,
        message_bytes_max: config.message_bytes_max,
    });
    Some(Opened {
        tenure,
        slot,
        carrier: io,
        parser,
        pending,
    })
}

/// Reads and answers the upgrade request by `deadline`. Returns the client's slot and any bytes
/// the client sent after its request, or why it did not become a client.
///
/// A client that sent part of a request by `deadline` is answered 408 (see [`time_out`]); one
/// that sent nothing is just closed.
async fn upgrade(
    shared: &Shared,
    id: ClientId,
    io: &mut dyn Io,
    deadline: Instant,
    peer: Option<SocketAddr>,
    data: Option<ClientData>,
) -> Result<(usize, Vec<u8>), Failure> {
    let config = &shared.config;
    let max = config.handshake_bytes_max;
    let mut buf: Vec<u8> = Vec::with_capacity(512.min(max));
    let (request, used) = loop {
        if buf.len() == buf.capacity() {
            // Double, from 256 bytes, but never past the budget (plus one byte, so that a request
            // over it is seen and refused as too large).
            let room = max.saturating_sub(buf.len()).max(1);
            buf.reserve(buf.len().max(256).min(room));
        }
        // Only the read races the deadline, and `read_buf` is cancel safe (dropped before it
        // completes, it has read nothing), so when the deadline wins `buf` holds exactly what
        // the client sent.
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Err(Failure::Abandoned),
            Ok(Ok(_)) => {}
            Err(_) => {
                time_out(shared, id, io, &buf).await;
                return Err(Failure::TimedOut);
            }
        }
        match handshake::parse(&buf, max) {
            Ok(None) => {}
            Ok(Some(parsed)) => break parsed,
            Err(e) => {
                refused(shared, id, e.status(), &e);
                let _ =
                    tokio::time::timeout_at(deadline, refuse(io, e.status(), &e.to_string())).await;
                return Err(Failure::Malformed);
            }
        }
    };
    // The request is in: from here on the client waits for us, and our answer, whatever it
    // is, must be out by the deadline too.
    let answer = async {
        let (accepting, handler) = {
            let core = shared.core.borrow();
            (core.state().accepting(), core.handler().clone())
        };
        let decided = decide(config, accepting, &request, || {
            handler.on_upgrade(&request, peer)
        });
        match decided {
            Err(rejected) => {
                refused(shared, id, rejected.status(), &rejected.body());
                refuse(io, rejected.status(), rejected.body()).await;
                Err(Failure::Refused)
            }
            Ok(accepted) => {
                let response = accepted.response(request.key());
                let pending = buf.get(used..).unwrap_or_default().to_vec();
                // Admitted in the same poll in which the 101 is fully written (and flushed, for
                // a stream that buffers, as TLS does), so no broadcast can fall between the
                // client seeing 101 and the client being in the audience; and the response never
                // occupies the client's queue.
                io.write_all(&response)
                    .await
                    .map_err(|_| Failure::Abandoned)?;
                io.flush().await.map_err(|_| Failure::Abandoned)?;
                let mut core = shared.core.borrow_mut();
                let slot = accepted.admit(core.state_mut(), id, data, Instant::now());
                Ok((slot, pending))
            }
        }
    };
    tokio::time::timeout_at(deadline, answer)
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

/// Answers a client whose request the handshake deadline cut: `408 Request Timeout` if it sent
/// any of one (`received`), so that it learns why it is closed; nothing if it sent nothing, as
/// there is no request to answer. The deadline is past, so the answer gets `close_timeout`.
async fn time_out(shared: &Shared, id: ClientId, io: &mut dyn Io, received: &[u8]) {
    if received.is_empty() {
        return;
    }
    refused(
        shared,
        id,
        408,
        &"request not complete within the handshake deadline",
    );
    let answer = refuse(
        io,
        408,
        "request not complete within the handshake deadline",
    );
    let _ = tokio::time::timeout(shared.config.close_timeout, answer).await;
}

/// Records that `id`'s upgrade is refused with `status`, for `reason`. At debug: a peer decides
/// how often this happens, so at the default level it must not be able to fill the log (the
/// count is in `handshakes_failed`).
fn refused(shared: &Shared, id: ClientId, status: u16, reason: &dyn std::fmt::Display) {
    tracing::debug!(
        client = %id,
        shard = shared.id.0,
        status,
        reason = %reason,
        "handshake refused"
    );
}

/// Writes an HTTP error response and closes.
async fn refuse(io: &mut dyn Io, status: u16, body: &str) {
    let _ = io
        .write_all(&handshake::reject_response(status, body))
        .await;
    let _ = io.shutdown().await;
}
