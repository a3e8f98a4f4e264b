//! The event loop of a shard ([`Driver::EventLoop`], and [`Driver::IoUring`] whose writes go
//! through `ring`): the shard's plain TCP connections, served
//! with no task of their own once their opening (`open`) is done. Every decision about them
//! is the core's: the loop reads, writes, waits and tells it what happened.
//!
//! One `mio::Poll` per shard holds the sockets of its connections, each registered once,
//! edge-triggered, for reading and writing: the loop never asks the kernel to change a
//! registration, and a socket reports writable only after a write found it full. The `Poll`'s
//! own descriptor is registered once with the shard's tokio reactor (see [`Reactor`]), so a
//! connection costs neither a task nor a reactor registration: it costs its client record
//! (`State`), its [`Sock`] here, and its socket in the kernel.
//!
//! One task, the loop, does for all of them what a connection's task does for one (`task`),
//! in passes. A pass
//!
//! 1. adopts the connections handed over since the last pass, and lets those whose relayed
//!    commands found room read again;
//! 2. reads each socket on the read list once (one `read_buffer_bytes`), and hands what it
//!    read to the core (`Core::handle_read`: parse, answer, call the handler, relay);
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
//!   task if it has one), and the shard's command queue is served: `task`'s `NextTurn`.
//! - A connection reads only when `Core::poll_read` says so, and writes only what
//!   `Core::poll_write` says; what happens to it (a wait, its close, its end) is the core's
//!   to decide, and the loop tells the core every event (`Core::handle_*`).
//! - `socks[slot]` is `Some` exactly while the loop holds the socket of the client in `slot`;
//!   when the loop drops a sock it tells the core the socket ended (`Core::handle_ended`). Each
//!   slot is on the read list at most once (`Lists::READING`).
//! - A socket is written only while it is not `Lists::STUCK`: after a write that did not take
//!   everything, the next write waits for the socket's writable event.
//!
//! # Back-pressure
//!
//! As with `task`: a connection whose relayed commands found a shard's queue full, or whose
//! event found the inbox full (`inlet`), reads nothing more until a small task has sent them,
//! waiting for room; the loop itself never waits. A connection that ends while it waits keeps
//! its slot until the wait is over (the core's `Departing`).
//!
//! # Shutdown
//!
//! The loop ends with its shard's command loop (`stop`); the sockets it still holds are closed
//! when it is dropped, and the core told (`Core::handle_dropped`).
//!
//! [`Driver::EventLoop`]: crate::Driver::EventLoop
//! [`Driver::IoUring`]: crate::Driver::IoUring

use super::super::core::{Ending, IoSlices, Linger, Next, Reading, Resume, Table};
use super::super::inlet::Held;
use super::super::relay::{Waiting, send_waiting};
use super::handover::{Joining, Resumed};
use super::shared::{PAUSE_RECHECK, Shared, Tenure, queue_apart};
use crate::ClientId;
use crate::ShardId;
use crate::stats::{Counters, bump, drop_by};
use crate::wire::Parser;
use mio::{Events, Interest, Token};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
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

/// Hands a connection whose upgrade is done to the shard's event loop: tells the core it is
/// registered, as its task would, and from then on the loop serves it. Called by the opening
/// task, which then ends.
pub(super) fn join(
    mut tenure: Tenure,
    slot: usize,
    tcp: tokio::net::TcpStream,
    parser: Parser,
    pending: Vec<u8>,
) {
    let shared = tenure.shared().clone();
    let Some(handover) = &shared.handover else {
        return;
    };
    // Leaves the runtime's reactor (one registration less) and stays non-blocking.
    let Ok(stream) = tcp.into_std() else {
        return;
    };
    let mut relay = shared.relay();
    let held = {
        let mut core = shared.core.borrow_mut();
        let held = core.handle_registered(slot, Instant::now(), &mut relay);
        core.state_mut().set_looped(slot);
        held
    };
    tenure.release();
    let mut handover = handover.borrow_mut();
    handover.joining.push(Joining {
        slot,
        stream,
        parser,
        pending,
        relays: relay.into_waiting(),
        held,
    });
    handover.wake();
}

/// Which of the loop's lists hold a connection: bits of [`Lists`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lists(u8);

impl Lists {
    /// On the read list: its socket may hold bytes not yet read.
    const READING: Lists = Lists(1);
    /// Waiting for a writable event: its last write did not take everything.
    const STUCK: Lists = Lists(2);
    /// On the delayed list (coalescing holds its queue back).
    const DELAYED: Lists = Lists(4);
    /// On the paused list: the shard was congested when it was to read.
    const PAUSED: Lists = Lists(8);
    /// On the carry list: it holds bytes it read but could not hand over yet.
    const CARRY: Lists = Lists(16);

    fn has(self, list: Lists) -> bool {
        self.0 & list.0 != 0
    }

    /// Puts it on `list`; whether it was not on it.
    fn join(&mut self, list: Lists) -> bool {
        let new = !self.has(list);
        self.0 |= list.0;
        new
    }

    /// Takes it off `list`; whether it was on it.
    fn leave(&mut self, list: Lists) -> bool {
        let was = self.has(list);
        self.0 &= !list.0;
        was
    }
}

/// One connection, as the loop keeps it between passes: its socket and the loop's bookkeeping.
/// Where the connection is in its life is the core's (`Stage`).
struct Sock {
    /// Its socket, registered with the loop's `Poll` under `Token(slot)`; `None` while a send
    /// in the ring holds it (within a pass).
    stream: Option<mio::net::TcpStream>,
    /// What it sent of an unfinished frame.
    parser: Parser,
    /// Which of the loop's lists hold it.
    lists: Lists,
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
    /// Slots that were to read while the shard was congested (`Core::congested`); read again
    /// once it is not, checked after each pass's flush and at `pause_due`.
    paused: Vec<usize>,
    /// Bytes connections read but could not hand to the core yet, because the read delivered
    /// its budget (`State::read_spent`) or the shard became congested: handed over first at a
    /// later pass, before the connection reads more. At most one read buffer per connection.
    carry: Vec<(usize, ClientId, Box<[u8]>)>,
    /// When to ask again whether the shard is still congested, while something is paused.
    pause_due: Option<Instant>,
    /// Lingering connections, by deadline (all get the same `close_timeout`, so this is in
    /// deadline order).
    lingering: VecDeque<(Instant, usize, ClientId)>,
    /// Fires at the earliest deadline above, if `armed`.
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    /// Scratch list, reused.
    scratch: Vec<usize>,
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
        paused: Vec::new(),
        carry: Vec::new(),
        pause_due: None,
        lingering: VecDeque::new(),
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        armed: None,
        scratch: Vec::new(),
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
        if !lp.reads.is_empty() || !lp.carry.is_empty() {
            // The sockets on the read list, and what connections carry, wait for the next turn
            // (see `# Invariants`).
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Loop {
    /// The connections the loop still serves when it stops (the shard stopped before they
    /// ended) are dropped: the core is told.
    fn drop(&mut self) {
        let shared = &*self.shared;
        let now = Instant::now();
        for slot in self.socks.indices() {
            let mut relay = shared.relay();
            let idle = shared
                .core
                .borrow_mut()
                .handle_dropped(slot, now, &mut relay);
            shared.idle_if(idle);
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
            let mut core = self.shared.core.borrow_mut();
            let state = core.state_mut();
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
            if (event.is_readable() || event.is_read_closed() || event.is_error())
                && sock.lists.join(Lists::READING)
            {
                self.reads.push(slot);
                any = true;
            }
            if (event.is_writable() || event.is_write_closed() || event.is_error())
                && sock.lists.leave(Lists::STUCK)
            {
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
                self.adopt(joining, now);
            }
            for Resumed { slot, id, pending } in resumed {
                self.resumed(slot, id, pending, now);
            }
        }
        self.carried(now);
        let mut reads = std::mem::replace(&mut self.reads, std::mem::take(&mut self.scratch));
        for &slot in &reads {
            self.read(slot, now);
        }
        reads.clear();
        self.scratch = reads;
        while let Some(&(at, slot, id)) = self.lingering.front()
            && at <= now
        {
            self.lingering.pop_front();
            let still = self.shared.core.borrow().state().id(slot) == Some(id)
                && self.shared.core.borrow_mut().poll_read(slot, now) == Reading::Drain;
            if still {
                self.finish(slot, now);
            }
        }
        if self.delay_due.is_some_and(|due| due <= now) {
            self.delay_due = None;
            for slot in std::mem::take(&mut self.delayed) {
                if let Some(sock) = self.socks.get_mut(slot) {
                    sock.lists.leave(Lists::DELAYED);
                    self.flushes.push(slot);
                }
            }
        }
        // One list of slots, lent by `State`, serves every pass: the lists a shard keeps are
        // memory per client too.
        let mut flushes = self.shared.core.borrow_mut().state_mut().take_touched();
        flushes.append(&mut self.flushes);
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        self.flush_batched(&mut flushes, now);
        for &slot in &flushes {
            self.flush(slot, now);
        }
        self.shared
            .core
            .borrow_mut()
            .state_mut()
            .give_back_touched(flushes);
        self.unpause(now);
        self.arm();
    }

    /// After a flush: if the shard is no longer congested, the paused connections read again;
    /// if it still is, the loop asks again in a moment.
    fn unpause(&mut self, now: Instant) {
        self.pause_due = None;
        if self.paused.is_empty() && self.carry.is_empty() {
            return;
        }
        if self.shared.core.borrow_mut().congested(now) {
            self.pause_due = Some(now + PAUSE_RECHECK);
            return;
        }
        for slot in std::mem::take(&mut self.paused) {
            if let Some(sock) = self.socks.get_mut(slot) {
                sock.lists.leave(Lists::PAUSED);
                if sock.lists.join(Lists::READING) {
                    self.reads.push(slot);
                }
            }
        }
        if !self.carry.is_empty() {
            // Handed over at the next pass, which this one's end makes come.
            self.pause_due = Some(now);
        }
    }

    /// Hands over what connections carry from earlier reads, before they read more.
    fn carried(&mut self, now: Instant) {
        for (slot, id, bytes) in std::mem::take(&mut self.carry) {
            let shared = self.shared.clone();
            if shared.core.borrow().state().id(slot) != Some(id) {
                continue;
            }
            let Some(sock) = self.socks.get_mut(slot) else {
                continue;
            };
            let allowed = shared.core.borrow_mut().poll_read(slot, now);
            match allowed {
                Reading::Paused => self.carry.push((slot, id, bytes)),
                Reading::Read => {
                    sock.lists.leave(Lists::CARRY);
                    self.resume(slot, bytes, now);
                }
                // Closed meanwhile: what it sent after its close is nobody's business.
                Reading::Hold | Reading::Drain => {
                    sock.lists.leave(Lists::CARRY);
                }
            }
        }
    }

    /// Sets the timer to the earliest deadline.
    fn arm(&mut self) {
        let linger = self.lingering.front().map(|&(at, _, _)| at);
        let due = [linger, self.delay_due, self.pause_due]
            .into_iter()
            .flatten()
            .min();
        if due != self.armed {
            if let Some(at) = due {
                self.timer.as_mut().reset(at);
            }
            self.armed = due;
        }
    }

    /// Starts serving a connection handed over.
    fn adopt(&mut self, joining: Joining, now: Instant) {
        let Joining {
            slot,
            stream,
            parser,
            pending,
            relays,
            held,
        } = joining;
        let mut stream = mio::net::TcpStream::from_std(stream);
        let registry = self.reactor.poll.registry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = registry.register(&mut stream, Token(slot), interest);
        let pending = pending.into_boxed_slice();
        let waits = !relays.is_empty() || held.is_some();
        if let Err(e) = registered {
            tracing::debug!(shard = self.shared.id.0, error = %e, "event loop: cannot register");
            drop(stream);
            if waits {
                self.wait(slot, relays, held, pending);
            }
            self.finish(slot, now);
            return;
        }
        bump(&self.shared.counters.event_loop_connections, 1);
        self.socks.insert(
            slot,
            Sock {
                stream: Some(stream),
                parser,
                lists: Lists::default(),
            },
        );
        if waits {
            self.wait(slot, relays, held, pending);
        } else {
            self.resume(slot, pending, now);
        }
    }

    /// The wait of `slot`'s client `id` is over: tells the core, and acts on its answer.
    fn resumed(&mut self, slot: usize, id: ClientId, pending: Box<[u8]>, now: Instant) {
        let shared = self.shared.clone();
        if shared.core.borrow().state().id(slot) != Some(id) {
            return;
        }
        let mut relay = shared.relay();
        let resume = shared
            .core
            .borrow_mut()
            .handle_wait_over(slot, now, &mut relay);
        let waiting = relay.into_waiting();
        match resume {
            Resume::Read => {
                shared.send_apart(waiting);
                self.resume(slot, pending, now);
            }
            Resume::Lingering(held) => {
                shared.send_apart(waiting);
                queue_apart(held);
            }
            Resume::Ended(ended) => shared.ended(ended, waiting),
        }
    }

    /// A connection that may read: hands `pending` (what it read before its wait, or what it
    /// carried) to the core, then reads.
    fn resume(&mut self, slot: usize, mut pending: Box<[u8]>, now: Instant) {
        if !pending.is_empty() {
            let Some((consumed, waiting, held)) = self.handle(slot, &mut pending, now) else {
                return;
            };
            self.flushes.push(slot);
            let rest = pending.get(consumed..).unwrap_or_default();
            if !waiting.is_empty() || held.is_some() {
                self.wait(slot, waiting, held, rest.into());
                return;
            }
            if !rest.is_empty() {
                self.carry(slot, rest.into());
                return;
            }
        }
        if let Some(sock) = self.socks.get_mut(slot)
            && sock.lists.join(Lists::READING)
        {
            self.reads.push(slot);
        }
    }

    /// Hands `input`, which `slot` read, to the core: the bytes it handled, what found another
    /// shard's queue full, and the event that found the inbox full. `None` if the loop holds
    /// no socket for `slot`.
    fn handle(
        &mut self,
        slot: usize,
        input: &mut [u8],
        now: Instant,
    ) -> Option<(usize, Waiting, Option<Box<Held>>)> {
        let shared = &*self.shared;
        let sock = self.socks.get_mut(slot)?;
        let mut relay = shared.relay();
        let read =
            shared
                .core
                .borrow_mut()
                .handle_read(slot, &mut sock.parser, input, now, &mut relay);
        Some((read.consumed, relay.into_waiting(), read.held))
    }

    /// Sends, in a task of its own, the commands `slot` relayed that found a shard's queue
    /// full, then queues its event that found the inbox full (`held`); the connection reads
    /// nothing until both are done, and then handles `pending` (what it read after them) first.
    /// The bytes wait in the task, so that a connection keeps no room for them.
    fn wait(
        &mut self,
        slot: usize,
        mut waiting: Waiting,
        held: Option<Box<Held>>,
        pending: Box<[u8]>,
    ) {
        let shared = self.shared.clone();
        let Some(id) = shared.core.borrow().state().id(slot) else {
            return;
        };
        tokio::task::spawn_local(async move {
            if !waiting.is_empty() {
                send_waiting(&shared.shards, &mut waiting).await;
            }
            if let Some(mut held) = held {
                held.queue().await;
            }
            if let Some(handover) = &shared.handover {
                let mut handover = handover.borrow_mut();
                handover.resumed.push(Resumed { slot, id, pending });
                handover.wake();
            }
        });
    }

    /// Reads `slot`'s socket once, and hands what it read to the core.
    fn read(&mut self, slot: usize, now: Instant) {
        let shared = self.shared.clone();
        let Some(sock) = self.socks.get_mut(slot) else {
            return;
        };
        sock.lists.leave(Lists::READING);
        if sock.lists.has(Lists::CARRY) {
            // What it carries goes first (`carried`), which lists it to read again.
            return;
        }
        let allowed = shared.core.borrow_mut().poll_read(slot, now);
        match allowed {
            Reading::Read => {}
            Reading::Drain => return self.drain(slot, now),
            Reading::Hold => return,
            Reading::Paused => {
                if sock.lists.join(Lists::PAUSED) {
                    self.paused.push(slot);
                }
                return;
            }
        }
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
            return self.finish(slot, now);
        };
        // A read that did not fill the buffer emptied the socket: its next bytes bring an event.
        let full = n == buf.len();
        let input = buf.get_mut(..n).unwrap_or_default();
        let Some((consumed, waiting, held)) = self.handle(slot, input, now) else {
            return;
        };
        // What the read queued for its own client (a pong, say) goes out this pass, as a task
        // flushes after each read.
        self.flushes.push(slot);
        let rest = input.get(consumed..).unwrap_or_default();
        if !waiting.is_empty() || held.is_some() {
            let rest = rest.into();
            drop(buf);
            return self.wait(slot, waiting, held, rest);
        }
        if !rest.is_empty() {
            let rest = rest.into();
            drop(buf);
            return self.carry(slot, rest);
        }
        if full
            && let Some(sock) = self.socks.get_mut(slot)
            && sock.lists.join(Lists::READING)
        {
            self.reads.push(slot);
        }
    }

    /// Keeps `bytes`, which `slot` read and the core did not take yet, to hand over at a later
    /// pass before the connection reads more.
    fn carry(&mut self, slot: usize, bytes: Box<[u8]>) {
        let Some(id) = self.shared.core.borrow().state().id(slot) else {
            return;
        };
        let Some(sock) = self.socks.get_mut(slot) else {
            return;
        };
        sock.lists.join(Lists::CARRY);
        self.carry.push((slot, id, bytes));
    }

    /// Discards what a lingering connection sends; ends it when the peer closes.
    fn drain(&mut self, slot: usize, now: Instant) {
        let Some(stream) = self.socks.get_mut(slot).and_then(|s| s.stream.as_ref()) else {
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
        self.finish(slot, now);
    }

    /// Writes `slot`'s queue until it is empty, its socket takes no more, or coalescing holds
    /// the rest back; acts on its end.
    fn flush(&mut self, slot: usize, now: Instant) {
        let shared = self.shared.clone();
        while self.may_write(slot, now) {
            let Some(stream) = self.socks.get_mut(slot).and_then(|s| s.stream.as_ref()) else {
                return;
            };
            let core = shared.core.borrow();
            let Some(client) = core.state().client(slot) else {
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
            drop(core);
            if !self.wrote(slot, written, gathered, now) {
                return;
            }
        }
    }

    /// Whether `slot` has bytes to write now and its socket may take them; acts on what else
    /// the core says (a delay, the close frame out, the end).
    fn may_write(&mut self, slot: usize, now: Instant) -> bool {
        let shared = self.shared.clone();
        let Some(sock) = self.socks.get_mut(slot) else {
            return false;
        };
        // Its socket lent to a send in flight (whose result flushes it again).
        if sock.stream.is_none() {
            return false;
        }
        let next = shared.core.borrow().poll_write(slot, now);
        match next {
            Next::Write => !sock.lists.has(Lists::STUCK),
            Next::Idle => false,
            Next::Delay(due) => {
                if sock.lists.join(Lists::DELAYED) {
                    self.delayed.push(slot);
                }
                self.delay_due = Some(self.delay_due.map_or(due, |d| d.min(due)));
                false
            }
            Next::Closed => {
                let Linger { deadline, held } =
                    shared.core.borrow_mut().handle_close_sent(slot, now);
                queue_apart(held);
                self.linger(slot, deadline);
                false
            }
            Next::Done => {
                self.finish(slot, now);
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
        let shared = self.shared.clone();
        let Some(sock) = self.socks.get_mut(slot) else {
            return false;
        };
        let mut core = shared.core.borrow_mut();
        match written {
            Ok(0) => {}
            Ok(n) => {
                core.handle_written(slot, n);
                if n < gathered {
                    // The socket is full: its writable event says when to go on.
                    core.handle_write_blocked(slot, now);
                    sock.lists.join(Lists::STUCK);
                    return false;
                }
                return true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                core.handle_write_blocked(slot, now);
                sock.lists.join(Lists::STUCK);
                return false;
            }
            Err(_) => {}
        }
        drop(core);
        self.finish(slot, now);
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
                let core = shared.core.borrow();
                let Some(client) = core.state().client(slot) else {
                    drop(core);
                    if let Some(sock) = self.socks.get_mut(slot) {
                        sock.stream = Some(stream);
                    }
                    continue;
                };
                let (parts, bytes) = ring.gather(|arena, parts| {
                    client.out.gather_owned(arena, copy_max, copy_room, parts)
                });
                drop(core);
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
            &self.shared.counters.io_uring_submissions,
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
                self.finish(slot, now);
                continue;
            };
            sock.stream = Some(stream);
            if self.wrote(slot, result, bytes, now) {
                again.push(slot);
            }
        }
    }

    /// The close frame is out and the core says linger: half-closes, then discards what the
    /// peer still sends until it closes too (so that it reads our close instead of a reset),
    /// until `deadline`.
    fn linger(&mut self, slot: usize, deadline: Instant) {
        let Some(id) = self.shared.core.borrow().state().id(slot) else {
            return;
        };
        let Some(sock) = self.socks.get_mut(slot) else {
            return;
        };
        if let Some(stream) = &sock.stream {
            let _ = stream.shutdown(Shutdown::Write);
        }
        self.lingering.push_back((deadline, slot, id));
        if sock.lists.join(Lists::READING) {
            self.reads.push(slot);
        }
    }

    /// Drops `slot`'s socket and tells the core: the connection ends now, or once its wait is
    /// over.
    fn finish(&mut self, slot: usize, now: Instant) {
        let shared = self.shared.clone();
        if self.socks.remove(slot).is_some() {
            drop_by(&shared.counters.event_loop_connections, 1);
        }
        let mut relay = shared.relay();
        let ending = shared.core.borrow_mut().handle_ended(slot, now, &mut relay);
        match ending {
            Ending::Now(ended) => shared.ended(ended, relay.into_waiting()),
            Ending::AfterWait => shared.send_apart(relay.into_waiting()),
        }
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

#[cfg(test)]
mod tests {
    use super::Sock;

    /// What the loop keeps of a connection, beside its client record, is memory per client:
    /// its socket (4 bytes; mio adds 8 in debug builds, to check registrations), its parser
    /// (64) and its list bits. The memory figures in docs/DRIVERS.md rest on it: keep it from
    /// growing unnoticed.
    #[test]
    fn a_sock_takes_at_most_80_bytes() {
        let size = std::mem::size_of::<Option<Sock>>();
        let debug = if cfg!(debug_assertions) { 8 } else { 0 };
        assert!(size <= 80 + debug, "Option<Sock> is {size} bytes");
    }
}
