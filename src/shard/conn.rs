//! A served connection's task: read, parse, hand messages to the handler, and flush its
//! queue to the socket, until it is closed. Its opening is in `open`.
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

use super::command::Io;
use super::outbound::IoSlices;
use super::relay::{Waiting, post, send_waiting};
use super::shared::Shared;
use super::state::{Phase, State};
use crate::ClientId;
use crate::client::RemoveReason;
use crate::shard::{Context, Incoming};
use crate::wire::{Inbound, Parser};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncWriteExt, ReadBuf};
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
/// Tells the shard a connection task ended, however it ended: normally, or by a panic (which
/// the runtime contains to this task), so that a bug can never leave a client registered, leak
/// a connection slot, or hold up shutdown.
pub(super) struct Ended {
    shared: Rc<Shared>,
    /// The client's slot once it is registered.
    slot: Option<usize>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.shared.state.borrow_mut().release(slot);
            let mut removed = Vec::new();
            self.shared.dispatch_removed(&mut removed, Instant::now());
        }
        self.shared.connection_ended();
    }
}

impl Ended {
    /// For a connection task of `shared`'s shard; `slot` if its client is already admitted.
    pub(super) fn new(shared: Rc<Shared>, slot: Option<usize>) -> Ended {
        Ended { shared, slot }
    }

    /// The shard's shared state.
    pub(super) fn shared(&self) -> &Rc<Shared> {
        &self.shared
    }

    /// Its client was admitted in `slot`.
    pub(super) fn registered(&mut self, slot: usize) {
        self.slot = Some(slot);
    }
}

/// A registered connection: everything its task keeps between polls.
pub(super) struct Conn {
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
    /// Whether bytes were written since the stream was last flushed: a stream that buffers (TLS
    /// encrypts into records and may keep them when the socket is full) holds them until
    /// flushed, so an empty queue is not yet an empty pipe.
    unflushed: bool,
}

impl Conn {
    /// A registered connection in `slot`, about to be served.
    pub(super) fn new(
        ended: Ended,
        id: ClientId,
        slot: usize,
        io: Box<dyn Io>,
        parser: Parser,
        pending: Vec<u8>,
    ) -> Conn {
        Conn {
            ended,
            id,
            slot,
            io,
            parser,
            pending,
            blocked: Waiting::new(),
            timer: None,
            just_read: false,
            unflushed: false,
        }
    }
}

impl Conn {
    /// The registered life of a connection.
    ///
    /// Fields are reached through `self` rather than bound to locals: every local held across
    /// an `.await` is a field of the task, and so memory per client.
    pub(super) async fn serve(&mut self) {
        let (id, slot) = (self.id, self.slot);
        {
            let shared = &*self.ended.shared;
            let mut state = shared.state.borrow_mut();
            let mut outbox = shared.outbox.borrow_mut();
            let mut ctx = Context {
                id,
                slot: Some(slot),
                now: Instant::now(),
                state: &mut state,
                shards: &shared.shards,
                outbox: &mut outbox,
                left: None,
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
                Box::pin(send_waiting(&self.ended.shared.shards, &mut self.blocked)).await;
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
                    &mut self.unflushed,
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
        let message = match message {
            Inbound::Ping(ping) => {
                state.pong(slot, ping);
                return ControlFlow::Continue(());
            }
            Inbound::Pong(_) => return ControlFlow::Continue(()),
            Inbound::Close { code, .. } => {
                state.close(slot, RemoveReason::ClientClosed(code));
                return ControlFlow::Break(());
            }
            Inbound::Text(text) => Incoming::Text(text),
            Inbound::Binary(bytes) => Incoming::Binary(bytes),
        };
        let mut ctx = Context {
            id,
            slot: Some(slot),
            now,
            state: &mut *state,
            shards,
            outbox: &mut *outbox,
            left: None,
        };
        handler.on_message(&mut ctx, message);
        if outbox.len() >= OUTBOX_POST_AT {
            post(shards, outbox, blocked);
        }
        if !blocked.is_empty() || state.phase(slot) != Phase::Open {
            return ControlFlow::Break(());
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
    unflushed: &mut bool,
) -> Poll<Event> {
    let mut state = shared.state.borrow_mut();
    if let Some(end) = flush(shared, &mut state, cx, slot, io, timer, unflushed) {
        return Poll::Ready(end);
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
    state.set_waker(slot, cx.waker());
    Poll::Pending
}

/// Writes the client's queue to its socket until the queue is empty, the socket takes no more
/// (the write deadline starts), or coalescing holds the rest back (the timer is armed); once
/// the queue is empty, flushes the stream (see `Conn::unflushed`), and a flush that cannot
/// finish counts as a blocked write. Returns how the connection ends, if it does: its close
/// frame is out, it is aborted, or the socket failed.
fn flush(
    shared: &Shared,
    state: &mut State,
    cx: &mut TaskContext<'_>,
    slot: usize,
    io: &mut Box<dyn Io>,
    timer: &mut Option<Pin<Box<Sleep>>>,
    unflushed: &mut bool,
) -> Option<Event> {
    let now = Instant::now();
    loop {
        let Some(client) = state.client(slot) else {
            return Some(Event::Done);
        };
        match client.phase {
            Phase::Abort => return Some(Event::Done),
            // `linger` shuts the stream down, which flushes it.
            Phase::Closing if client.out.is_empty() => return Some(Event::Closed),
            _ if client.out.is_empty() && !*unflushed => return None,
            // A plain TCP stream flushes at once, so this costs it one call after a write.
            _ if client.out.is_empty() => {
                return match Pin::new(&mut **io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        *unflushed = false;
                        state.flushed(slot);
                        None
                    }
                    Poll::Ready(Err(_)) => Some(Event::Done),
                    Poll::Pending => {
                        state.write_blocked(slot, now);
                        None
                    }
                };
            }
            _ => {}
        }
        if shared.config.coalescing.delays()
            && let Some(wait) = state.flush_delay(slot, now)
        {
            let due = now + wait;
            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            sleep.as_mut().reset(due);
            if sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
        let Some(client) = state.client(slot) else {
            return Some(Event::Done);
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
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Some(Event::Done),
            Poll::Ready(Ok(n)) => {
                state.wrote(slot, n);
                *unflushed = true;
            }
            Poll::Pending => {
                state.write_blocked(slot, now);
                return None;
            }
        }
    }
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
