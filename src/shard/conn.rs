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
//! A connection reads only while it has nothing waiting to go to a full shard queue or to a
//! full inbox queue, so a client that sends faster than the engine can relay, or than the
//! inbox's consumer reads, is slowed by TCP. While its event waits for the inbox, it still
//! writes (flushes its queue): only its reading pauses.
//!
//! [`Outbound`]: super::outbound::Outbound

use super::command::Io;
use super::inlet::Held;
use super::outbound::IoSlices;
use super::relay::{Waiting, send_waiting};
use super::session::{Next, ingest, may_read, next, registered};
use super::shared::Shared;
use super::state::{Phase, State};
use crate::ClientId;
use crate::client::RemoveReason;
use crate::inbox::Event as InboxEvent;
use crate::wire::Parser;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Whether a poll of the socket may read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// No: bytes read earlier wait for room in another shard's queue, or an event for the
    /// inbox's.
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
    /// The held event is in the inbox queue: reading may resume.
    Queued,
    /// The close frame is written: finish the closing handshake.
    Closed,
    /// The connection is over (EOF, error, abort).
    Done,
}

/// Tells the shard a connection task ended, however it ended: normally, or by a panic (which
/// the runtime contains to this task), so that a bug can never leave a client registered, leak
/// a connection slot, or hold up shutdown. Unless the connection was handed to the shard's
/// event loop, which then ends it.
pub(super) struct Ended {
    shared: Rc<Shared>,
    /// Where the connection is.
    tenure: Tenure,
}

/// Where a connection is, for [`Ended`].
enum Tenure {
    /// Opening: no client yet.
    Opening,
    /// Its client is admitted in this slot.
    Registered(usize),
    /// Handed to the event loop (which releases the slot and counts the end).
    HandedOver,
}

impl Drop for Ended {
    fn drop(&mut self) {
        match self.tenure {
            Tenure::HandedOver => return,
            Tenure::Registered(slot) => {
                self.shared.state.borrow_mut().release(slot);
                let mut removed = Vec::new();
                self.shared.dispatch_removed(&mut removed, Instant::now());
            }
            Tenure::Opening => {}
        }
        self.shared.connection_ended();
    }
}

impl Ended {
    /// For a connection task of `shared`'s shard; `slot` if its client is already admitted.
    pub(super) fn new(shared: Rc<Shared>, slot: Option<usize>) -> Ended {
        let tenure = slot.map_or(Tenure::Opening, Tenure::Registered);
        Ended { shared, tenure }
    }

    /// The shard's shared state.
    pub(super) fn shared(&self) -> &Rc<Shared> {
        &self.shared
    }

    /// Its client was admitted in `slot`.
    pub(super) fn registered(&mut self, slot: usize) {
        self.tenure = Tenure::Registered(slot);
    }

    /// The connection now belongs to the event loop, which ends it.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(super) fn hand_over(mut self) {
        self.tenure = Tenure::HandedOver;
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
    /// Whether the inbox was told this client registered and not yet that it left.
    announced: bool,
    /// The event waiting for room in the inbox queue; nothing is read meanwhile.
    held: Option<Box<Held>>,
}

impl Drop for Conn {
    /// A client announced to the inbox whose task is dropped before it could report its
    /// departure (the shard stopped) owes the inbox a `Removed`: counted lost.
    fn drop(&mut self) {
        if self.announced
            && let Some(inlet) = &self.ended.shared().inlet
        {
            inlet.lost();
        }
    }
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
            announced: false,
            held: None,
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
        registered(&self.ended.shared, id, slot, &mut self.blocked);
        if let Some(inlet) = &self.ended.shared.inlet {
            // Before anything it sent is read: the inbox hears of a client first.
            self.announced = true;
            self.held = inlet.offer(InboxEvent::registered(id));
            if self.held.is_some() {
                let mut state = self.ended.shared.state.borrow_mut();
                state.pause_reads(slot, true, Instant::now());
            }
        }
        loop {
            if self.held.is_none() && !self.pending.is_empty() {
                let shared = &*self.ended.shared;
                let pending = &mut self.pending;
                let consumed = ingest(
                    shared,
                    id,
                    slot,
                    &mut self.parser,
                    pending,
                    &mut self.blocked,
                    &mut self.held,
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
            let mut reading = if self.held.is_some() || !self.pending.is_empty() {
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
                    &mut self.held,
                )
            })
            .await;
            let shared = &*self.ended.shared;
            match event {
                Event::Read(n) => {
                    self.just_read = true;
                    let mut buf = shared.read_buf.borrow_mut();
                    let input = buf.get_mut(..n).unwrap_or_default();
                    let consumed = ingest(
                        shared,
                        id,
                        slot,
                        &mut self.parser,
                        input,
                        &mut self.blocked,
                        &mut self.held,
                    );
                    if let Some(rest) = input.get(consumed..)
                        && !rest.is_empty()
                    {
                        self.pending.extend_from_slice(rest);
                    }
                }
                Event::Queued => {
                    self.held = None;
                    let mut state = shared.state.borrow_mut();
                    state.pause_reads(slot, false, Instant::now());
                }
                Event::Closed => {
                    if self.announced {
                        // Boxed: only connections of an engine with an inbox pay for it.
                        Box::pin(self.leave()).await;
                    }
                    Box::pin(linger(&self.ended.shared, &mut self.io)).await;
                    return;
                }
                Event::Done => {
                    if self.announced {
                        Box::pin(self.leave()).await;
                    }
                    return;
                }
            }
            if self.parser.buffered_bytes() == 0 {
                self.parser.shrink();
            }
        }
    }
}

impl Conn {
    /// Tells the inbox that the client left, after the event it still holds: its last event.
    /// The client is closed first if it is still open (its connection ended without a close
    /// frame), so that the reason is known and it leaves every audience.
    async fn leave(&mut self) {
        if let Some(held) = self.held.as_mut() {
            held.queue().await;
            self.held = None;
        }
        let shared = self.ended.shared().clone();
        let Some(inlet) = &shared.inlet else {
            return;
        };
        let reason = {
            let mut state = shared.state.borrow_mut();
            state.close(self.slot, RemoveReason::Disconnected);
            state.left(self.slot).unwrap_or(RemoveReason::Disconnected)
        };
        self.announced = false;
        if let Some(mut held) = inlet.offer(InboxEvent::removed(self.id, reason)) {
            held.queue().await;
        }
    }
}

/// Flushes what is queued (subject to coalescing), then queues the held event for the inbox,
/// if any, or tries one read.
// The task's fields, borrowed one by one: the shard's `Shared` is borrowed from the same task.
#[allow(clippy::too_many_arguments)]
fn poll_io(
    shared: &Shared,
    cx: &mut TaskContext<'_>,
    slot: usize,
    io: &mut Box<dyn Io>,
    reading: &mut Reading,
    timer: &mut Option<Pin<Box<Sleep>>>,
    unflushed: &mut bool,
    held: &mut Option<Box<Held>>,
) -> Poll<Event> {
    let mut state = shared.state.borrow_mut();
    if let Some(end) = flush(shared, &mut state, cx, slot, io, timer, unflushed) {
        return Poll::Ready(end);
    }
    // Flushed first: a client paused for the inbox still receives what is queued for it.
    if let Some(held) = held
        && held.poll_queue(cx).is_ready()
    {
        return Poll::Ready(Event::Queued);
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
    if *reading == Reading::Now && may_read(&state, slot, false) {
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
        match next(shared, state, slot, now) {
            Next::Done => return Some(Event::Done),
            // `linger` shuts the stream down, which flushes it.
            Next::Closed => return Some(Event::Closed),
            Next::Idle if !*unflushed => return None,
            // A plain TCP stream flushes at once, so this costs it one call after a write.
            Next::Idle => {
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
            Next::Delay(due) => {
                let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                sleep.as_mut().reset(due);
                if sleep.as_mut().poll(cx).is_pending() {
                    return None;
                }
            }
            Next::Write => {}
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
