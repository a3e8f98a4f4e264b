//! The event loop of a shard ([`Driver::EventLoop`], and [`Driver::IoUring`] whose writes go
//! through `ring`): the shard's plain TCP connections, served
//! with no task of their own once their opening (`open`) is done.
//!
//! One `mio::Poll` per shard holds the sockets of its connections, each registered once,
//! edge-triggered, for reading and writing: the loop never asks the kernel to change a
//! registration, and a socket reports writable only after a write found it full. The `Poll`'s
//! own descriptor is registered once with the shard's tokio reactor (see [`Reactor`]), so a
//! connection costs neither a task nor a reactor registration: it costs its client record
//! (`State`), its [`Sock`] here, and its socket in the kernel.
//!
//! One task, the loop, does for all of them what a connection's task does for one (`conn`),
//! in passes. A pass
//!
//! 1. adopts the connections handed over since the last pass, and lets those whose relayed
//!    commands found room read again;
//! 2. reads each socket on the read list once (one `read_buffer_bytes`), and lets the core
//!    decide (`session::ingest`: parse, answer, call the handler, relay);
//! 3. ends lingering connections past their close timeout, and lets delayed flushes go;
//! 4. flushes every client touched since the last pass once, many frames per write (with a
//!    ring, in submissions of up to 16 sends: `ring`).
//!
//! Between passes the loop waits for the shard's reactor to report socket events (a readable
//! socket joins the read list, a writable one the flush list), for a client to be touched, or
//! for its timer.
//!
//! # Invariants
//!
//! - A connection handles at most one read (`read_buffer_bytes`) per pass, and the loop yields
//!   to the shard's other tasks before a pass that reads a socket again. So between two reads of
//!   one client, every client of this shard its messages touched is flushed (step 4, or its own
//!   task if it has one), and the shard's command queue is served: `conn`'s `NextTurn`.
//! - A connection reads only when `session::may_read` says so.
//! - `socks[slot]` is `Some` exactly while the loop serves the client in `slot`; when the loop
//!   drops a sock it releases the slot and counts the connection's end, as `conn::Ended` does
//!   for a task. Each slot is on the read list at most once (`Sock::reading`).
//! - A socket is written only while `Sock::stuck` is false: after a write that did not take
//!   everything, the next write waits for the socket's writable event.
//!
//! # Back-pressure
//!
//! As `conn`: a connection whose relayed commands found a shard's queue full, or whose event
//! found the inbox full (`inlet`), reads nothing more until a small task has sent them,
//! waiting for room; the loop itself never waits. With an inbox, a connection that ends while
//! it waits keeps its slot until the wait is over, so that the inbox hears `Removed` last.
//!
//! # Shutdown
//!
//! The loop ends with its shard's command loop (`stop`); the sockets it still holds are closed
//! when it is dropped.
//!
//! [`Driver::EventLoop`]: crate::Driver::EventLoop
//! [`Driver::IoUring`]: crate::Driver::IoUring

use super::conn::Ended;
use super::inlet::Held;
use super::outbound::IoSlices;
use super::pages::Table;
use super::relay::{Waiting, send_waiting};
use super::session::{Next, ingest, may_read, next, registered};
use super::shared::Shared;
use crate::ClientId;
use crate::ShardId;
use crate::client::RemoveReason;
use crate::inbox::Event as InboxEvent;
use crate::stats::{Counters, bump, drop_by};
use crate::wire::Parser;
use mio::{Events, Interest, Token};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::net::unix::pipe;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Readiness events taken from the kernel per `epoll_wait`; more wait for the next call.
const EVENTS_MAX: usize = 1024;

/// A shard's `Poll`, and its descriptor as the shard's tokio reactor watches it.
pub(crate) struct Reactor {
    /// The connections' sockets.
    poll: mio::Poll,
    /// A duplicate of `poll`'s epoll descriptor, registered with the tokio reactor: readable
    /// while a socket of `poll` has an event to report. Only its readiness is used.
    ///
    /// Why a pipe's receiving end: since tokio 1.54 the safe constructors of `AsyncFd` are
    /// deprecated as unsound (for a value whose descriptor may change) and the sound ones are
    /// `unsafe`, which `#![forbid(unsafe_code)]` rules out. `pipe::Receiver` registers an
    /// `OwnedFd` in safe code, and `from_owned_fd_unchecked` asks nothing of the descriptor
    /// but to be read-ready when it should be read, which an epoll descriptor is; nothing
    /// ever reads it.
    ready: pipe::Receiver,
    /// The ring the loop writes through, if it has one ([`crate::Driver::IoUring`]).
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    ring: Option<super::ring::Ring>,
}

/// Creates the shard's `Poll` and registers it with the current runtime's reactor; with `ring`
/// (its size), sets up the `io_uring` its writes go through, or warns that they go as `write`s.
pub(crate) fn reactor(
    ring: Option<u32>,
    shard: ShardId,
    counters: &Counters,
) -> io::Result<Reactor> {
    let poll = mio::Poll::new()?;
    let fd = poll.registry().as_fd().try_clone_to_owned()?;
    let ready = pipe::Receiver::from_owned_fd_unchecked(fd)?;
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    let ring = ring.and_then(|entries| {
        super::ring::Ring::new(entries)
            .inspect_err(|e| {
                tracing::warn!(
                    shard = shard.0, error = %e,
                    "no io_uring: the event loop writes with one system call per client"
                );
            })
            .ok()
    });
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    bump(&counters.io_uring_rings, u64::from(ring.is_some()));
    #[cfg(not(all(target_os = "linux", feature = "io-uring")))]
    if ring.is_some() {
        tracing::warn!(
            shard = shard.0,
            "no io_uring in this build (Linux and the feature `io-uring` needed): the event loop writes with one system call per client"
        );
        let _ = counters;
    }
    Ok(Reactor {
        poll,
        ready,
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        ring,
    })
}

/// A connection handed to the loop by its opening task.
pub(crate) struct Joining {
    id: ClientId,
    slot: usize,
    stream: std::net::TcpStream,
    parser: Parser,
    /// Bytes the client sent after its upgrade request.
    pending: Vec<u8>,
    /// What `on_registered` relayed that found a shard's queue full.
    blocked: Waiting,
    /// With an inbox: its `Registered` event, if the inbox was full.
    held: Option<Box<Held>>,
}

/// A connection whose wait is over ([`Loop::wait`]): it may read again.
struct Resumed {
    slot: usize,
    id: ClientId,
    /// What it had read but not handled.
    pending: Box<[u8]>,
    /// Whether it waited for room in the inbox (its reads were paused for it).
    held: bool,
}

/// What the rest of the shard hands its loop, taken at the loop's next pass. Bounded by the
/// shard's connections.
#[derive(Default)]
pub(crate) struct Handover {
    /// Connections whose opening is done.
    joining: Vec<Joining>,
    /// Connections whose waiting commands are sent and held event queued, so that they may
    /// read again.
    resumed: Vec<Resumed>,
    /// Wakes the loop when something arrives.
    waker: Option<Waker>,
}

impl Handover {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn is_empty(&self) -> bool {
        self.joining.is_empty() && self.resumed.is_empty()
    }
}

/// Hands a connection whose upgrade is done to the shard's event loop: runs `on_registered`
/// as its task would, and from then on the loop serves it. Called by the opening task, which
/// then ends.
pub(super) fn join(
    ended: Ended,
    id: ClientId,
    slot: usize,
    tcp: tokio::net::TcpStream,
    parser: Parser,
    pending: Vec<u8>,
) {
    let shared = ended.shared().clone();
    let Some(handover) = &shared.handover else {
        return;
    };
    // Leaves the runtime's reactor (one registration less) and stays non-blocking.
    let Ok(stream) = tcp.into_std() else {
        return;
    };
    let mut blocked = Waiting::new();
    registered(&shared, id, slot, &mut blocked);
    // Before anything it sent is read: the inbox hears of a client first.
    let held = shared
        .inlet
        .as_ref()
        .and_then(|inlet| inlet.offer(InboxEvent::registered(id)));
    let mut state = shared.state.borrow_mut();
    if held.is_some() {
        state.pause_reads(slot, true, Instant::now());
    }
    state.set_looped(slot);
    drop(state);
    ended.hand_over();
    let mut handover = handover.borrow_mut();
    handover.joining.push(Joining {
        id,
        slot,
        stream,
        parser,
        pending,
        blocked,
        held,
    });
    handover.wake();
}

/// One connection, as the loop keeps it between passes.
struct Sock {
    /// Its socket, registered with the loop's `Poll` under `Token(slot)`; `None` while a send
    /// in the ring holds it (within a pass).
    stream: Option<mio::net::TcpStream>,
    /// What it sent of an unfinished frame.
    parser: Parser,
    /// On the read list: its socket may hold bytes not yet read.
    reading: bool,
    /// Commands it relayed wait for room in another shard's queue, or its event for the inbox
    /// waits for room there (and the bytes it read after them wait with them, in the task that
    /// sends them: [`Loop::wait`]).
    blocked: bool,
    /// Its last write did not take everything: write again only once it is writable.
    stuck: bool,
    /// Its close frame is out: what it still sends is discarded until it closes, or its close
    /// timeout passes.
    lingering: bool,
    /// On the delayed list (coalescing holds its queue back).
    delayed: bool,
}

/// The loop's state: its sockets and what it has to do.
struct Loop {
    shared: Rc<Shared>,
    /// The `Poll`, watched by the shard's reactor.
    reactor: Reactor,
    /// Readiness events, reused.
    events: Events,
    /// The connections, by their client's slot.
    socks: Table<Sock>,
    /// Slots to read at the next pass.
    reads: Vec<usize>,
    /// Slots to flush at the next pass (written to, then writable again).
    flushes: Vec<usize>,
    /// Slots whose flush coalescing delays, and the earliest time one is due.
    delayed: Vec<usize>,
    delay_due: Option<Instant>,
    /// Lingering connections, by deadline (all get the same `close_timeout`, so this is in
    /// deadline order).
    lingering: VecDeque<(Instant, usize, ClientId)>,
    /// Fires at the earliest deadline above, if `armed`.
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    /// Scratch lists, reused.
    scratch: Vec<usize>,
    removed: Vec<super::state::Removed>,
    /// With an inbox: connections that ended while waiting ([`Loop::wait`]), as (slot, id).
    /// Their slots are released, and the inbox told, once the wait is over, so that their
    /// `Removed` event follows the one that waited. Bounded by the shard's connections.
    departing: Vec<(usize, ClientId)>,
    /// The ring that takes each pass's writes ([`crate::Driver::IoUring`]), if set up.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    ring: Option<super::ring::Ring>,
    /// With a ring: what its sends did, and the clients to flush again, reused.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    sent: Vec<super::ring::Sent>,
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    again: Vec<usize>,
}

/// Runs the shard's event loop until `stop`.
pub(crate) async fn run(shared: Rc<Shared>, reactor: Reactor, stop: CancellationToken) {
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    let (reactor, ring) = {
        let mut reactor = reactor;
        let ring = reactor.ring.take();
        (reactor, ring)
    };
    let mut lp = Loop {
        shared,
        reactor,
        events: Events::with_capacity(EVENTS_MAX),
        socks: Table::default(),
        reads: Vec::new(),
        flushes: Vec::new(),
        delayed: Vec::new(),
        delay_due: None,
        lingering: VecDeque::new(),
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        armed: None,
        scratch: Vec::new(),
        removed: Vec::new(),
        departing: Vec::new(),
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        ring,
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        sent: Vec::new(),
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        again: Vec::new(),
    };
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = poll_fn(|cx| lp.poll_wait(cx)) => {}
        }
        lp.pass();
        if !lp.reads.is_empty() {
            // The sockets on the read list wait for the next turn (see `# Invariants`).
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Loop {
    /// With an inbox: a client the loop still serves when it stops (the shard stopped before
    /// it ended) owes the inbox a `Removed`, counted lost, as a task driver's does.
    fn drop(&mut self) {
        if let Some(inlet) = &self.shared.inlet {
            for _ in 0..self.socks.count() + self.departing.len() {
                inlet.lost();
            }
        }
    }
}

impl Loop {
    /// Ready when there is something to do: socket events (taken into the lists), a
    /// connection handed over or resumed, a client touched, a deadline, or a read left over.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut ready = !self.reads.is_empty();
        loop {
            match self.reactor.ready.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    tracing::warn!(shard = self.shared.id.0, error = %e, "event loop: reactor failed");
                    break;
                }
                Poll::Pending => break,
            }
            self.events.clear();
            let (poll, events) = (&mut self.reactor.poll, &mut self.events);
            // `WouldBlock` clears the readiness: when every ready socket was reported
            // (edge-triggered: each once). If one became ready since, the reactor saw it too,
            // and tokio keeps that readiness.
            let polled = self.reactor.ready.try_io(|| {
                loop {
                    match poll.poll(events, Some(Duration::ZERO)) {
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                        Ok(()) if events.iter().count() < EVENTS_MAX => {
                            return Err(ErrorKind::WouldBlock.into());
                        }
                        Ok(()) => return Ok(()),
                    }
                }
            });
            ready |= self.take_events();
            match polled {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Ok(()) => {
                    // More events wait: take them after this pass.
                    ready = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(shard = self.shared.id.0, error = %e, "event loop: poll failed");
                    break;
                }
            }
        }
        if let Some(handover) = &self.shared.handover {
            let mut handover = handover.borrow_mut();
            if handover.is_empty() {
                handover.waker = Some(cx.waker().clone());
            } else {
                ready = true;
            }
        }
        {
            let mut state = self.shared.state.borrow_mut();
            if state.has_touched() {
                ready = true;
            } else {
                state.set_loop_waker(cx.waker());
            }
        }
        if self.armed.is_some() && self.timer.as_mut().poll(cx).is_ready() {
            self.armed = None;
            ready = true;
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Puts the sockets of the events just polled on the read and flush lists; whether any
    /// needs the loop.
    fn take_events(&mut self) -> bool {
        let mut any = false;
        for event in self.events.iter() {
            let slot = event.token().0;
            let Some(sock) = self.socks.get_mut(slot) else {
                continue;
            };
            if (event.is_readable() || event.is_read_closed() || event.is_error()) && !sock.reading
            {
                sock.reading = true;
                self.reads.push(slot);
                any = true;
            }
            if (event.is_writable() || event.is_write_closed() || event.is_error()) && sock.stuck {
                sock.stuck = false;
                self.flushes.push(slot);
                any = true;
            }
        }
        any
    }

    /// One pass (see the module docs).
    fn pass(&mut self) {
        let now = Instant::now();
        if let Some(handover) = &self.shared.handover {
            let (joining, resumed) = {
                let mut handover = handover.borrow_mut();
                (
                    std::mem::take(&mut handover.joining),
                    std::mem::take(&mut handover.resumed),
                )
            };
            for joining in joining {
                self.adopt(joining);
            }
            for Resumed {
                slot,
                id,
                pending,
                held,
            } in resumed
            {
                if let Some(i) = self.departing.iter().position(|&d| d == (slot, id)) {
                    self.departing.swap_remove(i);
                    self.end(slot);
                    continue;
                }
                if let Some(sock) = self.sock(slot, id) {
                    sock.blocked = false;
                    if held {
                        self.shared.state.borrow_mut().pause_reads(slot, false, now);
                    }
                    self.resume(slot, pending);
                }
            }
        }
        let mut reads = std::mem::replace(&mut self.reads, std::mem::take(&mut self.scratch));
        for &slot in &reads {
            self.read(slot);
        }
        reads.clear();
        self.scratch = reads;
        while let Some(&(at, slot, id)) = self.lingering.front()
            && at <= now
        {
            self.lingering.pop_front();
            if self.sock(slot, id).is_some_and(|s| s.lingering) {
                self.finish(slot);
            }
        }
        if self.delay_due.is_some_and(|due| due <= now) {
            self.delay_due = None;
            for slot in std::mem::take(&mut self.delayed) {
                if let Some(sock) = self.socks.get_mut(slot) {
                    sock.delayed = false;
                    self.flushes.push(slot);
                }
            }
        }
        // One list of slots, lent by `State`, serves every pass: the lists a shard keeps are
        // memory per client too.
        let mut flushes = self.shared.state.borrow_mut().take_touched();
        flushes.append(&mut self.flushes);
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        self.flush_batched(&mut flushes, now);
        for &slot in &flushes {
            self.flush(slot, now);
        }
        self.shared.state.borrow_mut().give_back_touched(flushes);
        self.arm();
    }

    /// The sock in `slot` if it still serves client `id`.
    fn sock(&mut self, slot: usize, id: ClientId) -> Option<&mut Sock> {
        let current = self.shared.state.borrow().id(slot);
        if current != Some(id) {
            return None;
        }
        self.socks.get_mut(slot)
    }

    /// Sets the timer to the earliest deadline.
    fn arm(&mut self) {
        let linger = self.lingering.front().map(|&(at, _, _)| at);
        let due = match (linger, self.delay_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if due != self.armed {
            if let Some(at) = due {
                self.timer.as_mut().reset(at);
            }
            self.armed = due;
        }
    }

    /// Starts serving a connection handed over.
    fn adopt(&mut self, joining: Joining) {
        let Joining {
            id,
            slot,
            stream,
            parser,
            pending,
            blocked,
            held,
        } = joining;
        let mut stream = mio::net::TcpStream::from_std(stream);
        let registry = self.reactor.poll.registry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = registry.register(&mut stream, Token(slot), interest) {
            tracing::debug!(client = id.as_u64(), error = %e, "event loop: cannot register");
            drop(stream);
            self.end(slot);
            return;
        }
        bump(
            &self.shared.state.borrow().counters().event_loop_connections,
            1,
        );
        self.socks.insert(
            slot,
            Sock {
                stream: Some(stream),
                parser,
                reading: false,
                blocked: false,
                stuck: false,
                lingering: false,
                delayed: false,
            },
        );
        let pending = pending.into_boxed_slice();
        if blocked.is_empty() && held.is_none() {
            self.resume(slot, pending);
        } else {
            self.wait(slot, id, blocked, held, pending);
        }
    }

    /// A connection that may read again: handles `pending`, what it read before, then reads.
    fn resume(&mut self, slot: usize, mut pending: Box<[u8]>) {
        let shared = &*self.shared;
        let Some(id) = shared.state.borrow().id(slot) else {
            return;
        };
        let Some(sock) = self.socks.get_mut(slot) else {
            return;
        };
        if !pending.is_empty() {
            let Some((consumed, blocked, held)) = handle(shared, id, slot, sock, &mut pending)
            else {
                self.finish(slot);
                return;
            };
            self.flushes.push(slot);
            if !blocked.is_empty() || held.is_some() {
                let rest = pending.get(consumed..).unwrap_or_default().into();
                self.wait(slot, id, blocked, held, rest);
                return;
            }
        }
        if !sock.reading {
            sock.reading = true;
            self.reads.push(slot);
        }
    }

    /// Sends, in a task of its own, the commands `slot` relayed that found a shard's queue
    /// full, then queues its event that found the inbox full (`held`); the connection reads
    /// nothing until both are done, and then handles `pending` (what it read after them) first.
    /// The bytes wait in the task, so that a connection keeps no room for them. A connection
    /// that ends meanwhile is ended once the wait is over (`departing`).
    fn wait(
        &mut self,
        slot: usize,
        id: ClientId,
        mut waiting: Waiting,
        held: Option<Box<Held>>,
        pending: Box<[u8]>,
    ) {
        if let Some(sock) = self.socks.get_mut(slot) {
            sock.blocked = true;
        }
        let shared = self.shared.clone();
        tokio::task::spawn_local(async move {
            if !waiting.is_empty() {
                send_waiting(&shared.shards, &mut waiting).await;
            }
            let was_held = held.is_some();
            if let Some(mut held) = held {
                held.queue().await;
            }
            if let Some(handover) = &shared.handover {
                let mut handover = handover.borrow_mut();
                handover.resumed.push(Resumed {
                    slot,
                    id,
                    pending,
                    held: was_held,
                });
                handover.wake();
            }
        });
    }

    /// Reads `slot`'s socket once, and handles what it read.
    fn read(&mut self, slot: usize) {
        let shared = &*self.shared;
        let Some(sock) = self.socks.get_mut(slot) else {
            return;
        };
        sock.reading = false;
        if sock.lingering {
            self.drain(slot);
            return;
        }
        let id = {
            let state = shared.state.borrow();
            if !may_read(&state, slot, sock.blocked) {
                return;
            }
            let Some(id) = state.id(slot) else {
                return;
            };
            id
        };
        let mut buf = shared.read_buf.borrow_mut();
        let Some(stream) = &sock.stream else {
            return;
        };
        let n = match read(stream, &mut buf) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => None,
        };
        let Some(n) = n else {
            drop(buf);
            self.finish(slot);
            return;
        };
        // A read that did not fill the buffer emptied the socket: its next bytes bring an event.
        let full = n == buf.len();
        let input = buf.get_mut(..n).unwrap_or_default();
        let Some((consumed, blocked, held)) = handle(shared, id, slot, sock, input) else {
            drop(buf);
            self.finish(slot);
            return;
        };
        if sock.parser.buffered_bytes() == 0 {
            sock.parser.shrink();
        }
        // What the read queued for its own client (a pong, say) goes out this pass, as a task
        // flushes after each read.
        self.flushes.push(slot);
        if !blocked.is_empty() || held.is_some() {
            let rest = input.get(consumed..).unwrap_or_default().into();
            drop(buf);
            self.wait(slot, id, blocked, held, rest);
            return;
        }
        if full {
            sock.reading = true;
            self.reads.push(slot);
        }
    }

    /// Discards what a lingering connection sends; ends it when the peer closes.
    fn drain(&mut self, slot: usize) {
        let Some(sock) = self.socks.get_mut(slot) else {
            return;
        };
        let Some(stream) = &sock.stream else {
            return;
        };
        let mut buf = self.shared.read_buf.borrow_mut();
        loop {
            match read(stream, &mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        drop(buf);
        self.finish(slot);
    }

    /// Writes `slot`'s queue until it is empty, its socket takes no more, or coalescing holds
    /// the rest back; acts on its end.
    fn flush(&mut self, slot: usize, now: Instant) {
        let shared = self.shared.clone();
        while self.may_write(slot, now) {
            let Some(stream) = self.socks.get_mut(slot).and_then(|s| s.stream.as_ref()) else {
                return;
            };
            let state = shared.state.borrow();
            let Some(client) = state.client(slot) else {
                return;
            };
            let (written, gathered) = {
                let mut buf = shared.write_buf.borrow_mut();
                let mut slices = IoSlices::new();
                client
                    .out
                    .gather(&mut buf, shared.config.copy_bytes_max, &mut slices);
                let gathered: usize = slices.iter().map(|s| s.len()).sum();
                (write(stream, &slices), gathered)
            };
            drop(state);
            if !self.wrote(slot, written, gathered, now) {
                return;
            }
        }
    }

    /// Whether `slot` has bytes to write now and its socket may take them; acts on what else
    /// its queue says (a delay, its close frame out, its end).
    fn may_write(&mut self, slot: usize, now: Instant) -> bool {
        let shared = &*self.shared;
        let Some(sock) = self.socks.get_mut(slot) else {
            return false;
        };
        // Lingering, or its socket lent to a send in flight (whose result flushes it again).
        if sock.lingering || sock.stream.is_none() {
            return false;
        }
        let state = shared.state.borrow();
        match next(shared, &state, slot, now) {
            Next::Write => !sock.stuck,
            Next::Idle => false,
            Next::Delay(due) => {
                if !sock.delayed {
                    sock.delayed = true;
                    self.delayed.push(slot);
                }
                self.delay_due = Some(self.delay_due.map_or(due, |d| d.min(due)));
                false
            }
            Next::Closed => {
                drop(state);
                self.linger(slot, now);
                false
            }
            Next::Done => {
                drop(state);
                self.finish(slot);
                false
            }
        }
    }

    /// Acts on what a write of `gathered` bytes of `slot`'s queue did; whether to write again.
    fn wrote(
        &mut self,
        slot: usize,
        written: io::Result<usize>,
        gathered: usize,
        now: Instant,
    ) -> bool {
        let mut state = self.shared.state.borrow_mut();
        let Some(sock) = self.socks.get_mut(slot) else {
            return false;
        };
        match written {
            Ok(0) => {}
            Ok(n) => {
                state.wrote(slot, n);
                if n < gathered {
                    // The socket is full: its writable event says when to go on.
                    state.write_blocked(slot, now);
                    sock.stuck = true;
                    return false;
                }
                return true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                state.write_blocked(slot, now);
                sock.stuck = true;
                return false;
            }
            Err(_) => {}
        }
        drop(state);
        self.finish(slot);
        false
    }

    /// Flushes `slots` as [`Loop::flush`] does each, through the ring: one send per client
    /// per submission, every send of a round in one submission (more if the ring fills);
    /// clients whose send took everything and still have bytes go again in the next round.
    /// Empties `slots`.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    fn flush_batched(&mut self, slots: &mut Vec<usize>, now: Instant) {
        let Some(mut ring) = self.ring.take() else {
            for &slot in slots.iter() {
                self.flush(slot, now);
            }
            slots.clear();
            return;
        };
        let shared = self.shared.clone();
        let (copy_max, copy_room) = (
            shared.config.copy_bytes_max,
            shared.config.write_buffer_bytes,
        );
        let mut sent = std::mem::take(&mut self.sent);
        let mut next = std::mem::take(&mut self.again);
        while !slots.is_empty() {
            for &slot in slots.iter() {
                if !self.may_write(slot, now) {
                    continue;
                }
                if ring.full(copy_room) {
                    self.complete(&mut ring, &mut sent, now, &mut next);
                    // That may have ended `slot`'s connection, or flushed it.
                    if !self.may_write(slot, now) {
                        continue;
                    }
                }
                let Some(stream) = self.socks.get_mut(slot).and_then(|s| s.stream.take()) else {
                    continue;
                };
                let state = shared.state.borrow();
                let Some(client) = state.client(slot) else {
                    drop(state);
                    if let Some(sock) = self.socks.get_mut(slot) {
                        sock.stream = Some(stream);
                    }
                    continue;
                };
                let (parts, bytes) = ring.gather(|arena, parts| {
                    client.out.gather_owned(arena, copy_max, copy_room, parts)
                });
                drop(state);
                ring.send(slot, stream, parts, bytes);
            }
            self.complete(&mut ring, &mut sent, now, &mut next);
            slots.clear();
            std::mem::swap(slots, &mut next);
        }
        self.sent = sent;
        self.again = next;
        self.ring = Some(ring);
    }

    /// Submits the ring's staged sends and acts on what each did; the clients whose send took
    /// everything go on `again`, to be flushed again.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    fn complete(
        &mut self,
        ring: &mut super::ring::Ring,
        sent: &mut Vec<super::ring::Sent>,
        now: Instant,
        again: &mut Vec<usize>,
    ) {
        ring.submit(sent);
        bump(
            &self.shared.state.borrow().counters().io_uring_submissions,
            std::mem::take(&mut ring.submissions),
        );
        for super::ring::Sent {
            slot,
            stream,
            bytes,
            result,
        } in sent.drain(..)
        {
            let Some(sock) = self.socks.get_mut(slot) else {
                continue;
            };
            let Some(stream) = stream else {
                self.finish(slot);
                continue;
            };
            sock.stream = Some(stream);
            if self.wrote(slot, result, bytes, now) {
                again.push(slot);
            }
        }
    }

    /// The close frame is out: half-closes, then discards what the peer still sends until it
    /// closes too (so that it reads our close instead of a reset), within `close_timeout`.
    fn linger(&mut self, slot: usize, now: Instant) {
        let Some(id) = self.shared.state.borrow().id(slot) else {
            return;
        };
        let Some(sock) = self.socks.get_mut(slot) else {
            return;
        };
        sock.lingering = true;
        if let Some(stream) = &sock.stream {
            let _ = stream.shutdown(Shutdown::Write);
        }
        let deadline = now + self.shared.config.close_timeout;
        self.lingering.push_back((deadline, slot, id));
        if !sock.reading {
            sock.reading = true;
            self.reads.push(slot);
        }
    }

    /// Drops `slot`'s socket and ends its connection; with an inbox, once its wait for room
    /// is over if it waits ([`Loop::wait`]).
    fn finish(&mut self, slot: usize) {
        let Some(sock) = self.socks.remove(slot) else {
            self.end(slot);
            return;
        };
        let mut state = self.shared.state.borrow_mut();
        drop_by(&state.counters().event_loop_connections, 1);
        if sock.blocked
            && self.shared.inlet.is_some()
            && let Some(id) = state.id(slot)
        {
            // Closed now (it leaves every audience), ended after its held event is queued.
            state.close(slot, RemoveReason::Disconnected);
            self.departing.push((slot, id));
            return;
        }
        drop(state);
        self.end(slot);
    }

    /// Ends the connection of `slot`, as `conn::Ended` ends a task's: tells the inbox, if any,
    /// releases the slot, tells the handler, counts the end.
    fn end(&mut self, slot: usize) {
        let shared = &*self.shared;
        if let Some(inlet) = &shared.inlet {
            // Its last event: closed first if it is still open (its connection ended without a
            // close frame), so that the reason is known.
            let mut state = shared.state.borrow_mut();
            if let Some(id) = state.id(slot) {
                state.close(slot, RemoveReason::Disconnected);
                let reason = state.left(slot).unwrap_or(RemoveReason::Disconnected);
                drop(state);
                if let Some(mut held) = inlet.offer(InboxEvent::removed(id, reason)) {
                    tokio::task::spawn_local(async move { held.queue().await });
                }
            }
        }
        shared.state.borrow_mut().release(slot);
        let removed = &mut self.removed;
        // A handler that panics in `on_removed` must not take the loop, and every other
        // connection of the shard, with it.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            shared.dispatch_removed(removed, Instant::now())
        }));
        removed.clear();
        shared.connection_ended();
    }
}

/// One `read`, retried if interrupted.
fn read(mut stream: &mio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One `write` (one slice) or `writev` (several), retried if interrupted.
fn write(mut stream: &mio::net::TcpStream, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
    loop {
        let written = match slices {
            [] => Ok(0),
            [one] => stream.write(one),
            many => stream.write_vectored(many),
        };
        match written {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Hands `input`, which `slot` read, to `session::ingest` (parse, answer, call the handler,
/// relay, forward to the inbox) under `catch_unwind`: `None` if the handler panicked (the
/// caller ends the connection), else the bytes consumed, what found another shard's queue
/// full, and the event that found the inbox full.
fn handle(
    shared: &Shared,
    id: ClientId,
    slot: usize,
    sock: &mut Sock,
    input: &mut [u8],
) -> Option<(usize, Waiting, Option<Box<Held>>)> {
    let mut blocked = Waiting::new();
    let mut held = None;
    let consumed = catch_unwind(AssertUnwindSafe(|| {
        ingest(
            shared,
            id,
            slot,
            &mut sock.parser,
            input,
            &mut blocked,
            &mut held,
        )
    }))
    .ok()?;
    Some((consumed, blocked, held))
}

#[cfg(test)]
mod tests {
    use super::Sock;

    /// What the loop keeps of a connection, beside its client record, is memory per client:
    /// its socket (4 bytes; mio adds 8 in debug builds, to check registrations), its parser
    /// (64) and five flags. The README's memory figures rest on it: keep it from growing
    /// unnoticed.
    #[test]
    fn a_sock_takes_at_most_80_bytes() {
        let size = std::mem::size_of::<Option<Sock>>();
        let debug = if cfg!(debug_assertions) { 8 } else { 0 };
        assert!(size <= 80 + debug, "Option<Sock> is {size} bytes");
    }
}
