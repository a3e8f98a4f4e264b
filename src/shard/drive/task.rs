//! The task driver: a served connection as a task of its own (`Driver::Tasks`, and every
//! connection the event loop cannot serve: wrapped, TLS, in-memory). It reads, hands what it
//! read to the core, writes what the core says, and waits where the core says to; its opening
//! is in `open`.
//!
//! # Invariants
//!
//! - Between reads a connection keeps only bytes it had read but could not yet hand to the
//!   core because a wait began (`pending`); the parser's unfinished frame is the core's
//!   business. Reads land in the shard's shared buffer, which is never borrowed across an
//!   `.await`, so it is free for the next connection as soon as a read is handled.
//! - Every queued frame is written by this task only, in `Outbound` order.
//! - A connection handles at most one read (`read_buffer_bytes`) per turn of the shard's
//!   scheduler (see [`Reading::NextTurn`]).
//!
//! # Back-pressure
//!
//! While the core says the connection waits (its deliveries wait for room in a shard's queue,
//! or its event for the inbox's), it reads nothing; it still writes.

use super::super::command::Io;
use super::super::core::{Ended, Ending, IoSlices, Linger, Next, Reading as Allowed, Resume};
use super::super::inlet::Held;
use super::super::relay::{Waiting, send_waiting};
use super::shared::{PAUSE_RECHECK, Shared, Tenure, queue_apart};
use crate::wire::Parser;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Whether a poll of the socket may read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// If the core allows it.
    Now,
    /// After every task woken so far had its turn: this connection just handled a read, and
    /// the clients it delivered to must flush before it reads (and relays) more.
    NextTurn,
}

/// What one poll of the socket produced.
enum Event {
    /// `n` bytes landed in the shard's read buffer.
    Read(usize),
    /// The bytes it read but could not hand over yet (`Conn::pending`) may go to the core now.
    Carry,
    /// The held event is in the inbox queue: the wait is over.
    Queued,
    /// The close frame is written.
    Closed,
    /// The connection is over (EOF, error, abort).
    Done,
}

/// What the connection waits for, as the core said.
#[derive(Default)]
struct Wait {
    /// Deliveries that found a shard's queue full, sent first.
    relays: Waiting,
    /// Its event that found the inbox full, queued then.
    held: Option<Box<Held>>,
}

/// A registered connection: everything its task keeps between polls.
pub(super) struct Conn {
    /// Accounts for its client however the task ends; owns the shard's `Rc`.
    tenure: Tenure,
    /// Its client's slot.
    slot: usize,
    io: Box<dyn Io>,
    /// What it sent of an unfinished frame.
    parser: Parser,
    /// Bytes read but not yet handled, because a wait began or the read delivered its budget;
    /// handed to the core at the connection's next turn, before it reads anything new.
    pending: Vec<u8>,
    /// What it waits for; `None` while it does not.
    wait: Option<Box<Wait>>,
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
    /// A registered connection in `slot`, about to be served; `pending`: bytes the client sent
    /// after its upgrade request.
    pub(super) fn new(
        tenure: Tenure,
        slot: usize,
        io: Box<dyn Io>,
        parser: Parser,
        pending: Vec<u8>,
    ) -> Conn {
        Conn {
            tenure,
            slot,
            io,
            parser,
            pending,
            wait: None,
            timer: None,
            just_read: false,
            unflushed: false,
        }
    }

    /// The registered life of a connection.
    ///
    /// Fields are reached through `self` rather than bound to locals: every local held across
    /// an `.await` is a field of the task, and so memory per client.
    pub(super) async fn serve(&mut self) {
        let slot = self.slot;
        {
            let shared = self.tenure.shared().clone();
            let mut relay = shared.relay();
            let held = shared
                .core
                .borrow_mut()
                .handle_registered(slot, Instant::now(), &mut relay);
            self.wait_for(relay.into_waiting(), held);
        }
        loop {
            if let Some(wait) = self.wait.as_mut()
                && !wait.relays.is_empty()
            {
                // Boxed: a rare wait should not grow every connection's task.
                let shards = self.tenure.shared().shards.clone();
                Box::pin(send_waiting(&shards, &mut wait.relays)).await;
            }
            if self.wait.as_ref().is_some_and(|w| w.held.is_none()) {
                self.wait = None;
                match self.resume() {
                    Resume::Read => {}
                    // Not reached: the task lingers and ends inline (`linger_and_end`).
                    Resume::Lingering(held) => queue_apart(held),
                    Resume::Ended(ended) => return self.finish(ended, Waiting::new()),
                }
            }
            let reading = if std::mem::take(&mut self.just_read) {
                Reading::NextTurn
            } else {
                Reading::Now
            };
            let event = self.poll(reading).await;
            let shared = self.tenure.shared().clone();
            match event {
                Event::Read(n) => {
                    self.just_read = true;
                    let mut buf = shared.read_buf.borrow_mut();
                    let input = buf.get_mut(..n).unwrap_or_default();
                    let consumed = self.handle(input);
                    if let Some(rest) = input.get(consumed..)
                        && !rest.is_empty()
                    {
                        self.pending.extend_from_slice(rest);
                    }
                }
                Event::Carry => {
                    self.just_read = true;
                    let mut pending = std::mem::take(&mut self.pending);
                    let consumed = self.handle(&mut pending);
                    pending.drain(..consumed);
                    if !pending.is_empty() {
                        self.pending = pending;
                    }
                }
                Event::Queued => {
                    if let Some(wait) = self.wait.as_mut() {
                        wait.held = None;
                    }
                }
                Event::Closed => {
                    let Linger { deadline, held } = shared
                        .core
                        .borrow_mut()
                        .handle_close_sent(slot, Instant::now());
                    queue_apart(held);
                    return self.linger_and_end(deadline).await;
                }
                Event::Done => return self.end().await,
            }
        }
    }

    /// Hands `input` to the core; returns the bytes it handled (the rest waits with the
    /// connection).
    fn handle(&mut self, input: &mut [u8]) -> usize {
        let shared = self.tenure.shared().clone();
        let mut relay = shared.relay();
        let read = shared.core.borrow_mut().handle_read(
            self.slot,
            &mut self.parser,
            input,
            Instant::now(),
            &mut relay,
        );
        self.wait_for(relay.into_waiting(), read.held);
        read.consumed
    }

    /// Keeps what the core said to wait for, if anything.
    fn wait_for(&mut self, relays: Waiting, held: Option<Box<Held>>) {
        if !relays.is_empty() || held.is_some() {
            self.wait = Some(Box::new(Wait { relays, held }));
        }
    }

    /// Tells the core the wait is over.
    fn resume(&mut self) -> Resume {
        let shared = self.tenure.shared().clone();
        let mut relay = shared.relay();
        let resume =
            shared
                .core
                .borrow_mut()
                .handle_wait_over(self.slot, Instant::now(), &mut relay);
        self.wait_for(relay.into_waiting(), None);
        resume
    }

    /// The socket is done: the connection ends now, or once what it waits for is done.
    async fn end(&mut self) {
        let shared = self.tenure.shared().clone();
        let mut relay = shared.relay();
        let ending = shared
            .core
            .borrow_mut()
            .handle_ended(self.slot, Instant::now(), &mut relay);
        match ending {
            Ending::Now(ended) => self.finish(ended, relay.into_waiting()),
            Ending::AfterWait => {
                if let Some(mut wait) = self.wait.take() {
                    Box::pin(send_waiting(&shared.shards, &mut wait.relays)).await;
                    if let Some(held) = wait.held.as_mut() {
                        held.queue().await;
                    }
                }
                if let Resume::Ended(ended) = self.resume() {
                    self.finish(ended, Waiting::new());
                }
            }
        }
    }

    /// Lingers until `deadline` (see [`linger`]), then ends.
    async fn linger_and_end(&mut self, deadline: Instant) {
        let shared = self.tenure.shared().clone();
        Box::pin(linger(&shared, &mut self.io, deadline)).await;
        self.end().await;
    }

    /// The connection ended through the core: acts on it outside, and the task holds nothing
    /// more.
    fn finish(&mut self, ended: Ended, waiting: Waiting) {
        self.tenure.shared().ended(ended, waiting);
        self.tenure.release();
    }

    /// Flushes what is queued (subject to coalescing), then polls the held event, if any, or,
    /// if the core allows it, hands over what it carries or reads once.
    fn poll(&mut self, mut reading: Reading) -> impl Future<Output = Event> + '_ {
        poll_fn(move |cx| {
            let shared = self.tenure.shared().clone();
            if let Some(end) = self.flush(&shared, cx) {
                return Poll::Ready(end);
            }
            // Flushed first: a client that waits for the inbox still receives what is queued.
            if let Some(held) = self.wait.as_mut().and_then(|w| w.held.as_mut())
                && held.poll_queue(cx).is_ready()
            {
                return Poll::Ready(Event::Queued);
            }
            let now = Instant::now();
            let allowed = shared.core.borrow_mut().poll_read(self.slot, now);
            if allowed == Allowed::Paused {
                // The shard is congested: ask again in a moment (or when woken to flush).
                let recheck = now + PAUSE_RECHECK;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(recheck)));
                if timer.deadline() <= now || timer.deadline() > recheck {
                    timer.as_mut().reset(recheck);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
            }
            if reading == Reading::NextTurn && allowed == Allowed::Read {
                // INVARIANT: a connection handles at most one read (`read_buffer_bytes`) per
                // turn of the shard's scheduler. Premises: the read's deliveries woke their
                // clients' tasks (and listed them for the event loop), which are queued ahead
                // of this task's self-wake; each of them flushes what its socket takes when
                // polled. Conclusion: between two reads of one client, every client it relayed
                // to gets to write, so a burst reaches fast readers at socket speed instead of
                // piling up in their queues (only a client whose socket stops draining fills
                // its queue).
                reading = Reading::Now;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if allowed == Allowed::Read && !self.pending.is_empty() {
                return Poll::Ready(Event::Carry);
            }
            if allowed == Allowed::Read {
                let mut buf = shared.read_buf.borrow_mut();
                let mut read = ReadBuf::new(&mut buf[..]);
                match Pin::new(&mut *self.io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        return Poll::Ready(if n == 0 { Event::Done } else { Event::Read(n) });
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::Done),
                    Poll::Pending => {}
                }
            }
            shared
                .core
                .borrow_mut()
                .state_mut()
                .set_waker(self.slot, cx.waker());
            Poll::Pending
        })
    }

    /// Writes the client's queue to its socket until the queue is empty, the socket takes no
    /// more, or coalescing holds the rest back (the timer is armed); once the queue is empty,
    /// flushes the stream (see `Conn::unflushed`), and a flush that cannot finish counts as a
    /// blocked write. Returns how the connection ends, if it does: its close frame is out, it
    /// is aborted, or the socket failed.
    fn flush(&mut self, shared: &Shared, cx: &mut TaskContext<'_>) -> Option<Event> {
        let slot = self.slot;
        let now = Instant::now();
        let mut core = shared.core.borrow_mut();
        loop {
            match core.poll_write(slot, now) {
                Next::Done => return Some(Event::Done),
                // `linger` shuts the stream down, which flushes it.
                Next::Closed => return Some(Event::Closed),
                Next::Idle if !self.unflushed => return None,
                // A plain TCP stream flushes at once, so this costs it one call after a write.
                Next::Idle => {
                    return match Pin::new(&mut *self.io).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {
                            self.unflushed = false;
                            core.handle_flushed(slot);
                            None
                        }
                        Poll::Ready(Err(_)) => Some(Event::Done),
                        Poll::Pending => {
                            core.handle_write_blocked(slot, now);
                            None
                        }
                    };
                }
                Next::Delay(due) => {
                    let sleep = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                    sleep.as_mut().reset(due);
                    if sleep.as_mut().poll(cx).is_pending() {
                        return None;
                    }
                }
                Next::Write => {}
            }
            let written = {
                let Some(client) = core.state().client(slot) else {
                    return Some(Event::Done);
                };
                let mut buf = shared.write_buf.borrow_mut();
                let mut slices = IoSlices::new();
                client
                    .out
                    .gather(&mut buf, shared.config.copy_bytes_max, &mut slices);
                write(&mut self.io, cx, &slices)
            };
            match written {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Some(Event::Done),
                Poll::Ready(Ok(n)) => {
                    core.handle_written(slot, n);
                    self.unflushed = true;
                }
                Poll::Pending => {
                    core.handle_write_blocked(slot, now);
                    return None;
                }
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
/// closes too (so that it reads our close instead of a reset), until `deadline`.
async fn linger(shared: &Shared, io: &mut Box<dyn Io>, deadline: Instant) {
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
    let _ = tokio::time::timeout_at(deadline, drain).await;
}
