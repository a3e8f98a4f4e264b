//! One connection's task: upgrade, then read, parse and flush until closed.
//!
//! # Invariants
//!
//! - Between reads a connection keeps only what the parser holds of an unfinished frame, plus
//!   bytes it had read but could not yet parse because it was waiting for room in another
//!   shard's queue. Reads land in the shard's shared buffer, which is never borrowed across an
//!   `.await`, so it is free for the next connection as soon as a read is parsed.
//! - Every queued frame is written by this task only, in [`Outbound`] order.
//!
//! # Back-pressure
//!
//! A connection reads only while it has nothing waiting to go to a full shard queue, so a
//! client that sends faster than the engine can relay is slowed by TCP.
//!
//! [`Outbound`]: super::outbound::Outbound

use super::command::{Io, Wrap};
use super::outbound::IoSlices;
use super::relay::{Waiting, post};
use super::shared::Shared;
use super::state::Phase;
use crate::ClientId;
use crate::client::RemoveReason;
use crate::shard::{Context, Verdict};
use crate::stats::bump;
use crate::wire::{Inbound, Limits, Parser, handshake};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Whether a poll of the socket may read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// No: bytes read earlier wait for room in another shard's queue.
    No,
    /// Yes.
    Now,
    /// After every task woken so far had its turn: this connection just handled a read, and
    /// the clients it delivered to must flush before it reads (and relays) more.
    NextTurn,
}

/// What one poll of the socket produced.
enum Event {
    /// `n` bytes landed in the shard's read buffer.
    Read(usize),
    /// The close frame is written: finish the closing handshake.
    Closed,
    /// The connection is over (EOF, error, abort).
    Done,
}

/// How a connection's stream reaches its task.
pub(crate) enum Source {
    /// Ready to use.
    Ready(Box<dyn Io>),
    /// A raw TCP stream to wrap first (TLS, ...), on this shard.
    Wrap(tokio::net::TcpStream, Arc<dyn Wrap>),
}

/// Tells the shard a connection task ended, however it ended: normally, or by a panic (which
/// the runtime contains to this task), so that a bug can never leave a client registered, leak
/// a connection slot, or hold up shutdown.
struct Ended {
    shared: Rc<Shared>,
    /// The client's slot once it is registered.
    slot: Option<usize>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.shared.state.borrow_mut().release(slot);
            let mut removed = Vec::new();
            self.shared.dispatch_removed(&mut removed);
        }
        self.shared.connection_ended();
    }
}

/// Runs one connection to its end.
///
/// `admitted` is the client's slot when the worker already admitted it (a stream whose upgrade
/// the embedder did): admitted in the same tick as its `Register` command, so a broadcast
/// queued after the registration can never miss it.
///
/// Every connection's task lives as long as the client, so its size is memory per client: the
/// opening (wrapping, upgrade, their deadline) runs in a box freed when it is done, and what
/// stays is one [`Conn`].
pub(crate) fn run(
    shared: Rc<Shared>,
    id: ClientId,
    source: Source,
    admitted: Option<usize>,
) -> impl Future<Output = ()> + 'static {
    let opening = Box::pin(open(shared, id, source, admitted));
    async move {
        // `let else`: the `Option` is gone by the time `serve` runs, not kept beside `conn`.
        let Some(mut conn) = opening.await else {
            return;
        };
        conn.serve().await;
    }
}

/// A registered connection: everything its task keeps between polls.
struct Conn {
    /// Releases the client's slot however the task ends; owns the shard's `Rc`.
    ended: Ended,
    id: ClientId,
    slot: usize,
    io: Box<dyn Io>,
    parser: Parser,
    /// Bytes read but not yet parsed, because a fan-out had to wait.
    pending: Vec<u8>,
    /// Commands waiting for room in another shard's queue.
    blocked: Waiting,
    /// The coalescing delay's timer, once one was needed.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the last event was a read: the next read waits for the next turn.
    just_read: bool,
}

/// Wraps and upgrades the stream, within the handshake deadline. `None` if it did not work out
/// (counted as a failed handshake) or the peer left.
async fn open(
    shared: Rc<Shared>,
    id: ClientId,
    source: Source,
    admitted: Option<usize>,
) -> Option<Conn> {
    let mut ended = Ended {
        shared,
        slot: admitted,
    };
    let shared = &ended.shared;
    // One deadline for wrapping (a TLS handshake, say) and the HTTP upgrade together.
    let deadline = Instant::now() + shared.config.handshake_deadline;
    let io = match source {
        Source::Ready(io) => Some(io),
        Source::Wrap(tcp, wrap) => match tokio::time::timeout_at(deadline, wrap.wrap(tcp)).await {
            Ok(Ok(io)) => Some(io),
            Ok(Err(_)) | Err(_) => None,
        },
    };
    let Some(mut io) = io else {
        bump(&shared.state.borrow().counters().handshakes_failed, 1);
        return None;
    };
    let (slot, pending) = if let Some(slot) = admitted {
        (slot, Vec::new())
    } else {
        // Not wrapped in a timeout: at the deadline `upgrade` must still know what the client
        // sent, to answer 408, and a timeout around it would drop its buffer unread.
        match upgrade(shared, id, &mut io, deadline).await {
            Some(admitted) => admitted,
            None => {
                bump(&shared.state.borrow().counters().handshakes_failed, 1);
                return None;
            }
        }
    };
    ended.slot = Some(slot);
    let config = &shared.config;
    let parser = Parser::new(Limits {
        frame_bytes_max: config.frame_bytes_max,
        message_bytes_max: config.message_bytes_max,
    });
    Some(Conn {
        ended,
        id,
        slot,
        io,
        parser,
        pending,
        blocked: Waiting::new(),
        timer: None,
        just_read: false,
    })
}

/// Reads and answers the upgrade request by `deadline`. Returns the client's slot and any bytes
/// the client sent after its request, or `None` if the request was refused or timed out, or the
/// peer left.
///
/// A client that sent part of a request by `deadline` is answered 408 (see [`time_out`]); one
/// that sent nothing is just closed.
async fn upgrade(
    shared: &Shared,
    id: ClientId,
    io: &mut Box<dyn Io>,
    deadline: Instant,
) -> Option<(usize, Vec<u8>)> {
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
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(_)) => {}
            Err(_) => {
                time_out(shared, io, &buf).await;
                return None;
            }
        }
        match handshake::parse(&buf, max) {
            Ok(None) => {}
            Ok(Some(parsed)) => break parsed,
            Err(e) => {
                let _ =
                    tokio::time::timeout_at(deadline, refuse(io, e.status(), &e.to_string())).await;
                return None;
            }
        }
    };
    // The request is in: from here on the client waits for us, and our answer, whatever it
    // is, must be out by the deadline too.
    let answer = async {
        if let Some(allowed) = &config.allowed_origins
            && !request
                .origin()
                .is_some_and(|o| allowed.iter().any(|a| a == o))
        {
            refuse(io, 403, "origin not allowed").await;
            return None;
        }
        if shared.state.borrow().shutting_down {
            refuse(io, 503, "shutting down").await;
            return None;
        }
        match shared.handler.on_upgrade(&request).0 {
            Verdict::Reject { status, body } => {
                refuse(io, status, &body).await;
                None
            }
            Verdict::Accept {
                protocol,
                principal,
            } => {
                let response = handshake::accept_response(request.key(), protocol.as_deref());
                let pending = buf.get(used..).unwrap_or_default().to_vec();
                // Admitted in the same poll in which the 101 is fully written, so no broadcast
                // can fall between the client seeing 101 and the client being in the audience;
                // and the response never occupies the client's queue.
                io.write_all(&response).await.ok()?;
                let slot = shared
                    .state
                    .borrow_mut()
                    .admit(id, principal, Instant::now());
                Some((slot, pending))
            }
        }
    };
    tokio::time::timeout_at(deadline, answer)
        .await
        .ok()
        .flatten()
}

/// Answers a client whose request the handshake deadline cut: `408 Request Timeout` if it sent
/// any of one (`received`), so that it learns why it is closed; nothing if it sent nothing, as
/// there is no request to answer. The deadline is past, so the answer gets `close_timeout`.
async fn time_out(shared: &Shared, io: &mut Box<dyn Io>, received: &[u8]) {
    if received.is_empty() {
        return;
    }
    let answer = refuse(
        io,
        408,
        "request not complete within the handshake deadline",
    );
    let _ = tokio::time::timeout(shared.config.close_timeout, answer).await;
}

/// Writes an HTTP error response and closes.
async fn refuse(io: &mut Box<dyn Io>, status: u16, body: &str) {
    let _ = io
        .write_all(&handshake::reject_response(status, body))
        .await;
    let _ = io.shutdown().await;
}

impl Conn {
    /// The registered life of a connection.
    ///
    /// Fields are reached through `self` rather than bound to locals: every local held across
    /// an `.await` is a field of the task, and so memory per client.
    async fn serve(&mut self) {
        let (id, slot) = (self.id, self.slot);
        {
            let shared = &*self.ended.shared;
            let mut state = shared.state.borrow_mut();
            let mut outbox = shared.outbox.borrow_mut();
            let mut ctx = Context {
                id,
                slot,
                now: Instant::now(),
                state: &mut state,
                shards: &shared.shards,
                outbox: &mut outbox,
            };
            shared.handler.on_registered(&mut ctx);
            post(&shared.shards, &mut outbox, &mut self.blocked);
        }
        loop {
            if !self.pending.is_empty() {
                let shared = &*self.ended.shared;
                let pending = &mut self.pending;
                let consumed = ingest(
                    shared,
                    id,
                    slot,
                    &mut self.parser,
                    pending,
                    &mut self.blocked,
                );
                pending.drain(..consumed);
                if pending.is_empty() {
                    *pending = Vec::new();
                }
            }
            if !self.blocked.is_empty() {
                // Boxed: a rare wait should not grow every connection's task.
                Box::pin(send_blocked(&self.ended.shared, &mut self.blocked)).await;
                continue;
            }
            let mut reading = if !self.pending.is_empty() {
                Reading::No
            } else if std::mem::take(&mut self.just_read) {
                Reading::NextTurn
            } else {
                Reading::Now
            };
            let event = poll_fn(|cx| {
                let shared = &*self.ended.shared;
                poll_io(
                    shared,
                    cx,
                    slot,
                    &mut self.io,
                    &mut reading,
                    &mut self.timer,
                )
            })
            .await;
            let shared = &*self.ended.shared;
            match event {
                Event::Read(n) => {
                    self.just_read = true;
                    let mut buf = shared.read_buf.borrow_mut();
                    let input = buf.get_mut(..n).unwrap_or_default();
                    let consumed =
                        ingest(shared, id, slot, &mut self.parser, input, &mut self.blocked);
                    if let Some(rest) = input.get(consumed..)
                        && !rest.is_empty()
                    {
                        self.pending.extend_from_slice(rest);
                    }
                }
                Event::Closed => {
                    Box::pin(linger(&self.ended.shared, &mut self.io)).await;
                    return;
                }
                Event::Done => return,
            }
            if self.parser.buffered_bytes() == 0 {
                self.parser.shrink();
            }
        }
    }
}

/// Sends, waiting for room, the commands a fan-out could not push, in order.
async fn send_blocked(shared: &Shared, blocked: &mut Waiting) {
    for (index, command) in blocked.drain(..) {
        if let Some(handle) = shared.shards.get(index) {
            let _ = handle.send(command).await;
        }
    }
}

/// Commands in the outbox after which they are posted before the read is fully handled, so
/// that a read of many small messages cannot pile up commands for a full shard.
const OUTBOX_POST_AT: usize = 64;

/// Parses `input`, answering pings and closes and calling the handler for each message; posts
/// what the handler queued for other shards. Stops early (returning the bytes consumed) when
/// fan-out must wait or the client closed.
fn ingest(
    shared: &Shared,
    id: ClientId,
    slot: usize,
    parser: &mut Parser,
    input: &mut [u8],
    blocked: &mut Waiting,
) -> usize {
    let mut state = shared.state.borrow_mut();
    if state.phase(slot) != Phase::Open {
        return input.len();
    }
    // One clock for the whole read: every decision it leads to sees the same `now`.
    let now = Instant::now();
    state.touch(slot, now);
    let state = &mut *state;
    let handler = &*shared.handler;
    let shards = &shared.shards[..];
    let mut outbox = shared.outbox.borrow_mut();
    let outbox = &mut *outbox;
    let result = parser.feed(input, |message| {
        match message {
            Inbound::Ping(ping) => state.pong(slot, ping),
            Inbound::Pong(_) => {}
            Inbound::Close { code, .. } => {
                state.close(slot, RemoveReason::ClientClosed(code));
                return ControlFlow::Break(());
            }
            message => {
                let mut ctx = Context {
                    id,
                    slot,
                    now,
                    state: &mut *state,
                    shards,
                    outbox: &mut *outbox,
                };
                handler.on_message(&mut ctx, message);
                if outbox.len() >= OUTBOX_POST_AT {
                    post(shards, outbox, blocked);
                }
                if !blocked.is_empty() || state.phase(slot) != Phase::Open {
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    post(shards, outbox, blocked);
    match result {
        Ok(consumed) => consumed,
        Err(e) => {
            state.close(slot, RemoveReason::Protocol(e.close_code()));
            input.len()
        }
    }
}

/// Flushes what is queued (subject to coalescing), then tries one read.
fn poll_io(
    shared: &Shared,
    cx: &mut TaskContext<'_>,
    slot: usize,
    io: &mut Box<dyn Io>,
    reading: &mut Reading,
    timer: &mut Option<Pin<Box<Sleep>>>,
) -> Poll<Event> {
    let mut state = shared.state.borrow_mut();
    let now = Instant::now();
    loop {
        let Some(client) = state.client(slot) else {
            return Poll::Ready(Event::Done);
        };
        match client.phase {
            Phase::Abort => return Poll::Ready(Event::Done),
            Phase::Closing if client.out.is_empty() => return Poll::Ready(Event::Closed),
            _ if client.out.is_empty() => break,
            _ => {}
        }
        if shared.config.coalescing.delays()
            && let Some(wait) = state.flush_delay(slot, now)
        {
            let due = now + wait;
            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            sleep.as_mut().reset(due);
            if sleep.as_mut().poll(cx).is_pending() {
                break;
            }
        }
        let Some(client) = state.client(slot) else {
            return Poll::Ready(Event::Done);
        };
        let written = {
            let mut buf = shared.write_buf.borrow_mut();
            let mut slices = IoSlices::new();
            client
                .out
                .gather(&mut buf, shared.config.copy_bytes_max, &mut slices);
            write(io, cx, &slices)
        };
        match written {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Done),
            Poll::Ready(Ok(n)) => state.wrote(slot, n),
            Poll::Pending => {
                state.write_blocked(slot, now);
                break;
            }
        }
    }
    if *reading == Reading::NextTurn && state.phase(slot) == Phase::Open {
        // INVARIANT: a connection handles at most one read (`read_buffer_bytes`) per turn of
        // the shard's scheduler. Premises: the read's deliveries woke their clients' tasks,
        // which are queued ahead of this task's self-wake; each of them flushes what its socket
        // takes when polled. Conclusion: between two reads of one client, every client it
        // relayed to gets to write, so a burst reaches fast readers at socket speed instead of
        // piling up in their queues (only a client whose socket stops draining fills its queue).
        *reading = Reading::Now;
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    if *reading == Reading::Now && state.phase(slot) == Phase::Open {
        let mut buf = shared.read_buf.borrow_mut();
        let mut read = ReadBuf::new(&mut buf[..]);
        match Pin::new(&mut **io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                return Poll::Ready(if n == 0 { Event::Done } else { Event::Read(n) });
            }
            Poll::Ready(Err(_)) => return Poll::Ready(Event::Done),
            Poll::Pending => {}
        }
    }
    if let Some(client) = state.client(slot)
        && !client
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
    {
        client.waker = Some(cx.waker().clone());
    }
    Poll::Pending
}

/// One `write` (one slice) or `writev` (several).
fn write(
    io: &mut Box<dyn Io>,
    cx: &mut TaskContext<'_>,
    slices: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let io = Pin::new(&mut **io);
    match slices {
        [] => Poll::Ready(Ok(0)),
        [one] => io.poll_write(cx, one),
        many => io.poll_write_vectored(cx, many),
    }
}

/// After our close frame is out: half-close, then discard what the peer still sends until it
/// closes too (so that it reads our close instead of a reset), within `close_timeout`.
async fn linger(shared: &Shared, io: &mut Box<dyn Io>) {
    let drain = async {
        let _ = io.shutdown().await;
        poll_fn(|cx| {
            let mut buf = shared.read_buf.borrow_mut();
            loop {
                let mut read = ReadBuf::new(&mut buf[..]);
                match Pin::new(&mut **io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => continue,
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
    };
    let _ = tokio::time::timeout(shared.config.close_timeout, drain).await;
}
