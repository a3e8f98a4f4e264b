//! The connection core: the life of every connection a shard serves, from its registration to
//! its end, the same whichever driver moves its bytes (a task per connection, or the shard's
//! event loop, in `drive`).
//!
//! As in quinn-proto, a driver tells the core what happened (`handle_*`: registered, bytes
//! read, bytes written, a write refused, a wait over, the close frame out, the socket ended)
//! and asks what to do next (`poll_read`, `poll_write`); every method takes the time the
//! driver read (`now`). The core calls the embedder's [`Handler`], offers the inbox its
//! events, and hands what handlers relay to a [`Post`]; none of it waits. What must wait (a
//! full shard queue, a full inbox) is handed back to the driver, which waits and then says
//! so (`handle_wait_over`).
//!
//! # Lifecycle
//!
//! A connection's [`Stage`] moves only here:
//!
//! ```text
//!   registered ──► Serving ◄──── wait over ───── Waiting ◄── a read (or the registration)
//!                    │                              │         left something waiting
//!             close frame out                close frame out
//!                    ▼                              ▼
//!                Lingering ◄──── wait over ─── WaitingLingering
//!                    │                              │
//!       peer closed, or close_timeout       socket ended (Waiting too)
//!                    ▼                              ▼
//!                  ended ◄────── wait over ───── Departing
//! ```
//!
//! # Invariants
//!
//! - With an inbox, the inbox hears `Registered` before anything the client sent, and
//!   `Removed` exactly once, after every other event of the client: when its close frame is
//!   out, or its socket ended, and nothing of it waits ([`Core::leave`], the only place that
//!   offers it). A client the inbox heard of and that is dropped before it could be told it
//!   left (its shard stopped) is counted in `inbox_lost`, once ([`Core::abandon`]).
//! - A connection ends in one place ([`Core::end`]): told to the inbox, its slot released,
//!   the handler told (`on_removed`), its admission given back, the shard's count lowered.
//! - A handler that panics closes the client it was called for with 1011; the shard goes on.

use super::admission::Admission;
use super::handler::{Context, Handler};
use super::outbox::{Outbox, Post};
use super::state::{Phase, Removed, Stage, State};
use crate::client::{ClientData, Incoming, RemoveReason};
use crate::inbox::Event;
use crate::shard::inlet::{Held, Inlet};
use crate::wire::deflate::Inflater;
use crate::wire::{Inbound, Parser};
use crate::{ClientId, ShardId};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Deliveries in the outbox after which they are posted before the read is fully handled, so
/// that a read of many small messages cannot pile up deliveries for a full shard.
const OUTBOX_POST_AT: usize = 64;

/// The close code a client gets when the handler panicked while handling it.
const INTERNAL_ERROR: u16 = 1011;

/// What a driver may do with a connection's incoming bytes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Read and hand them to [`Core::handle_read`].
    Read,
    /// Read and discard them (the close frame is out: see [`Stage::Lingering`]).
    Drain,
    /// Read nothing: it waits, or it is closing.
    Hold,
    /// Read nothing for now: the shard is congested ([`Core::congested`]). Ask again once the
    /// clients wrote, or a moment later.
    Paused,
}

/// What a connection's writer does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Write what is queued (gather it with `Outbound::gather`).
    Write,
    /// Nothing to write until the client is woken again.
    Idle,
    /// The coalescing delay holds the queue back until this instant.
    Delay(Instant),
    /// The close frame is out: tell [`Core::handle_close_sent`].
    Closed,
    /// The connection is over: end it without writing more.
    Done,
}

/// What handling a read did.
#[derive(Debug)]
pub(crate) struct Read {
    /// Bytes of the input handled; the driver keeps the rest and hands it back once the wait
    /// is over, before it reads anything new.
    pub(crate) consumed: usize,
    /// The client's event for the inbox, if it found the inbox full: queue it, then tell
    /// [`Core::handle_wait_over`].
    pub(crate) held: Option<Box<Held>>,
}

/// A connection that ended: what the driver still has to do for it.
#[derive(Debug)]
#[must_use]
pub(crate) struct Ended {
    /// Its `Removed` event, if it found the inbox full: queue it apart (it is the client's
    /// last, so nothing waits behind it).
    pub(crate) held: Option<Box<Held>>,
    /// Whether it was the last connection of a shutdown.
    pub(crate) idle: bool,
}

/// What a connection does once its close frame is out: linger until `deadline` (half-close,
/// and discard what the peer sends until it closes). `held`: its `Removed` event, if it found
/// the inbox full: queue it apart.
#[derive(Debug)]
#[must_use]
pub(crate) struct Linger {
    pub(crate) deadline: Instant,
    pub(crate) held: Option<Box<Held>>,
}

/// What a connection does once its wait is over.
#[derive(Debug)]
#[must_use]
pub(crate) enum Resume {
    /// Handle what it had read, then read again.
    Read,
    /// It lingers (its close frame went out meanwhile): nothing to do but queue its `Removed`
    /// event apart, if it found the inbox full.
    Lingering(Option<Box<Held>>),
    /// Its socket ended meanwhile: it is over now.
    Ended(Ended),
}

/// What a connection does once its socket ended.
#[derive(Debug)]
#[must_use]
pub(crate) enum Ending {
    /// It is over.
    Now(Ended),
    /// Something of it still waits: it ends when the wait is over ([`Resume::Ended`]).
    AfterWait,
}

/// A shard's decision half: its clients' [`State`], and the life of every connection it serves.
pub(crate) struct Core {
    /// The shard's clients.
    state: State,
    /// The embedder's hooks.
    handler: Arc<dyn Handler>,
    /// Deliveries for other shards that handlers queued during the current call; empty
    /// between calls.
    outbox: Outbox,
    /// The way into this shard's inbox queue, if the engine has an inbox.
    inlet: Option<Inlet>,
    /// How many shards the engine has.
    shards: usize,
    /// Engine-wide connection count and ids.
    admission: Arc<Admission>,
    /// Clients removed, being told to the handler; reused, bounded by the client count.
    removed: Vec<Removed>,
    /// This shard.
    shard: ShardId,
    /// How long a lingering connection waits for its peer's close (`Config::close_timeout`).
    close_timeout: Duration,
    /// The shard's one inflater for its clients' compressed messages (permessage-deflate),
    /// made when the first one arrives.
    inflater: Option<Box<Inflater>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("shard", &self.shard)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The core of shard `shard` over `state`, of an engine of `shards` shards.
    pub(crate) fn new(
        state: State,
        handler: Arc<dyn Handler>,
        inlet: Option<Inlet>,
        shards: usize,
        admission: Arc<Admission>,
        shard: ShardId,
    ) -> Core {
        let close_timeout = state.config().close_timeout;
        Core {
            state,
            handler,
            outbox: Outbox::new(),
            inlet,
            shards,
            admission,
            removed: Vec::new(),
            shard,
            close_timeout,
            inflater: None,
        }
    }

    /// The shard's clients.
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The shard's clients, to apply commands to.
    pub(crate) fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// The embedder's hooks.
    pub(crate) fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
    }

    /// A connection starts (its opening begins); it counts until [`Core::end`], or
    /// [`Core::handle_opening_failed`].
    pub(crate) fn handle_opening(&mut self) {
        self.state.connection_started();
    }

    /// A connection's opening did not make a client. Returns whether it was the last
    /// connection of a shutdown.
    pub(crate) fn handle_opening_failed(&mut self) -> bool {
        self.admission.release();
        self.state.connection_ended()
    }

    /// The connection of `slot` is served from now on (its client is admitted): the handler
    /// hears of it (`on_registered`), then the inbox (`Registered`, its first event). Returns
    /// that event if it found the inbox full; the connection then waits (as when `post` keeps
    /// deliveries).
    pub(crate) fn handle_registered(
        &mut self,
        slot: usize,
        now: Instant,
        post: &mut dyn Post,
    ) -> Option<Box<Held>> {
        let id = self.state.id(slot)?;
        let handler = self.handler.clone();
        self.call(id, Some(slot), None, now, |ctx| handler.on_registered(ctx));
        self.hand_over(post);
        let held = match &self.inlet {
            Some(inlet) => {
                self.state.set_announced(slot, true);
                inlet.offer(Event::registered(id))
            }
            None => None,
        };
        if held.is_some() || post.waits() {
            self.state.set_stage(slot, Stage::Waiting, now);
        }
        held
    }

    /// What the driver may do with `slot`'s incoming bytes at `now`.
    pub(crate) fn poll_read(&mut self, slot: usize, now: Instant) -> Reading {
        let Some(client) = self.state.client(slot) else {
            return Reading::Hold;
        };
        match (client.phase, client.stage()) {
            (_, Stage::Lingering | Stage::WaitingLingering) => Reading::Drain,
            (Phase::Open, Stage::Serving) if self.state.congested(now) => Reading::Paused,
            (Phase::Open, Stage::Serving) => Reading::Read,
            _ => Reading::Hold,
        }
    }

    /// Whether the shard's publishers must pause, at `now`: no connection reads and no
    /// broadcast is applied from the shard's queue meanwhile (see `State::congested`).
    pub(crate) fn congested(&mut self, now: Instant) -> bool {
        self.state.congested(now)
    }

    /// Handles `input`, read from `slot`'s socket: parses it with `parser` (the connection's),
    /// answers pings and closes, and hands each message to the handler or the inbox. Stops
    /// early when what it led to must wait: deliveries `post` kept, or an event for the full
    /// inbox (returned), and the connection then waits; or when the read delivered its budget
    /// (`State::read_spent`). [`Read::consumed`] says how much was handled: the driver hands
    /// the rest back (after the wait, or at the connection's next turn) before it reads more.
    pub(crate) fn handle_read(
        &mut self,
        slot: usize,
        parser: &mut Parser,
        input: &mut [u8],
        now: Instant,
        post: &mut dyn Post,
    ) -> Read {
        let mut held = None;
        let Some(id) = self.state.id(slot) else {
            return Read {
                consumed: input.len(),
                held,
            };
        };
        match self.poll_read(slot, now) {
            Reading::Read => {}
            // Not now: nothing is handled, all of it waits.
            Reading::Paused => return Read { consumed: 0, held },
            Reading::Drain | Reading::Hold => {
                return Read {
                    consumed: input.len(),
                    held,
                };
            }
        }
        // One clock for the whole read: every decision it leads to sees the same `now`.
        self.state.touch(slot, now);
        self.state.start_read();
        let fed = catch_unwind(AssertUnwindSafe(|| {
            self.feed(id, slot, parser, input, now, post, &mut held)
        }));
        self.hand_over(post);
        let consumed = match fed {
            Ok(Ok(consumed)) => consumed,
            Ok(Err(code)) => {
                self.state.close(slot, RemoveReason::Protocol(code));
                input.len()
            }
            Err(_) => {
                self.panicked(slot);
                input.len()
            }
        };
        crate::stats::bump(&self.state.counters().bytes_received, consumed as u64);
        if parser.buffered_bytes() == 0 {
            parser.shrink();
        }
        if held.is_some() || post.waits() {
            self.state.set_stage(slot, Stage::Waiting, now);
        }
        Read { consumed, held }
    }

    /// The parse loop of [`Core::handle_read`]: the bytes consumed, or the close code of a
    /// protocol error.
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        id: ClientId,
        slot: usize,
        parser: &mut Parser,
        input: &mut [u8],
        now: Instant,
        post: &mut dyn Post,
        held: &mut Option<Box<Held>>,
    ) -> Result<usize, u16> {
        let Core {
            state,
            handler,
            outbox,
            inlet,
            shards,
            inflater,
            ..
        } = self;
        let handler = &**handler;
        let inflater = match state.deflates(slot) {
            true => Some(&mut **inflater.get_or_insert_with(Box::default)),
            false => None,
        };
        let mut messages = 0u64;
        let result = parser.feed_with(input, inflater, |message| {
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
            messages += 1;
            let mut ctx = Context {
                id,
                slot: Some(slot),
                now,
                state: &mut *state,
                shards: *shards,
                outbox: &mut *outbox,
                left: None,
            };
            if let Some(inlet) = inlet.as_ref()
                && handler.forward(&ctx, message)
            {
                *held = inlet.offer(Event::message(id, message));
                if held.is_some() {
                    // The connection reads nothing more until the event is queued.
                    return ControlFlow::Break(());
                }
                return ControlFlow::Continue(());
            }
            handler.on_message(&mut ctx, message);
            if outbox.len() >= OUTBOX_POST_AT {
                post.post(outbox);
            }
            if post.waits() || state.phase(slot) != Phase::Open || state.read_spent() {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if let Some(inflater) = self.inflater.as_deref_mut() {
            self.state.count_inflated(inflater.take_counts());
        }
        if messages > 0 {
            crate::stats::bump(&self.state.counters().messages_received, messages);
        }
        result.map_err(|e| e.close_code())
    }

    /// What `slot`'s writer does next, at `now`.
    pub(crate) fn poll_write(&self, slot: usize, now: Instant) -> Next {
        let Some(client) = self.state.client(slot) else {
            return Next::Done;
        };
        match (client.phase, client.stage()) {
            (Phase::Abort, _) | (_, Stage::Departing) => return Next::Done,
            (_, Stage::Lingering | Stage::WaitingLingering) => return Next::Idle,
            (Phase::Closing, _) if client.out.is_empty() => return Next::Closed,
            _ if client.out.is_empty() => return Next::Idle,
            _ => {}
        }
        if let Some(wait) = self.state.flush_delay(slot, now) {
            return Next::Delay(now + wait);
        }
        Next::Write
    }

    /// `n` bytes of `slot`'s queue were written.
    pub(crate) fn handle_written(&mut self, slot: usize, n: usize) {
        self.state.wrote(slot, n);
    }

    /// `slot`'s socket took none of what is queued (or could not flush what its stream
    /// buffered): its write deadline runs from the first refusal until a write progresses.
    pub(crate) fn handle_write_blocked(&mut self, slot: usize, now: Instant) {
        self.state.write_blocked(slot, now);
    }

    /// `slot`'s stream flushed what it buffered, its queue being empty.
    pub(crate) fn handle_flushed(&mut self, slot: usize) {
        self.state.flushed(slot);
    }

    /// `slot`'s close frame is out ([`Next::Closed`]): it lingers; the inbox hears it left
    /// now, or once its wait is over.
    pub(crate) fn handle_close_sent(&mut self, slot: usize, now: Instant) -> Linger {
        let deadline = now + self.close_timeout;
        let held = match self.state.client(slot).map(|c| c.stage()) {
            Some(Stage::Waiting) => {
                self.state.set_stage(slot, Stage::WaitingLingering, now);
                None
            }
            Some(_) => {
                self.state.set_stage(slot, Stage::Lingering, now);
                self.leave(slot)
            }
            None => None,
        };
        Linger { deadline, held }
    }

    /// What `slot` waited for is done (deliveries sent, its event queued).
    pub(crate) fn handle_wait_over(
        &mut self,
        slot: usize,
        now: Instant,
        post: &mut dyn Post,
    ) -> Resume {
        match self.state.client(slot).map(|c| c.stage()) {
            Some(Stage::Waiting) => {
                self.state.set_stage(slot, Stage::Serving, now);
                Resume::Read
            }
            Some(Stage::WaitingLingering) => {
                self.state.set_stage(slot, Stage::Lingering, now);
                Resume::Lingering(self.leave(slot))
            }
            Some(Stage::Departing) => Resume::Ended(self.end(slot, now, post)),
            Some(Stage::Serving) => Resume::Read,
            Some(Stage::Lingering) => Resume::Lingering(None),
            None => Resume::Ended(Ended {
                held: None,
                idle: false,
            }),
        }
    }

    /// `slot`'s socket is done: it closed, failed, lingered out, or was aborted
    /// ([`Next::Done`]). A connection that still waits is closed now (it leaves every
    /// audience) and ends once the wait is over, so that the inbox hears of it last.
    pub(crate) fn handle_ended(
        &mut self,
        slot: usize,
        now: Instant,
        post: &mut dyn Post,
    ) -> Ending {
        match self.state.client(slot).map(|c| c.stage()) {
            Some(Stage::Waiting | Stage::WaitingLingering | Stage::Departing) => {
                self.state.close(slot, RemoveReason::Disconnected);
                self.state.set_stage(slot, Stage::Departing, now);
                Ending::AfterWait
            }
            _ => Ending::Now(self.end(slot, now, post)),
        }
    }

    /// `slot`'s connection is dropped before it ended (its shard stopped): its slot is
    /// released and the handler told, but nothing more is offered to the inbox (counted lost).
    pub(crate) fn handle_dropped(
        &mut self,
        slot: usize,
        now: Instant,
        post: &mut dyn Post,
    ) -> bool {
        if self.state.client(slot).is_none() {
            return false;
        }
        self.abandon(slot);
        self.state.release(slot);
        self.dispatch_removed(now, post);
        self.admission.release();
        self.state.connection_ended()
    }

    /// Ends `slot`'s connection: its last event for the inbox (closed first if it is still
    /// open, so that the reason is known), its slot released, the handler told, its admission
    /// given back. The one end sequence of every driver.
    fn end(&mut self, slot: usize, now: Instant, post: &mut dyn Post) -> Ended {
        self.state.close(slot, RemoveReason::Disconnected);
        let held = self.leave(slot);
        self.state.release(slot);
        self.dispatch_removed(now, post);
        self.admission.release();
        Ended {
            held,
            idle: self.state.connection_ended(),
        }
    }

    /// Tells the inbox, if it heard of `slot`'s client, that the client left: the only place
    /// `Removed` is offered, once per client. Returns the event if it found the inbox full.
    fn leave(&mut self, slot: usize) -> Option<Box<Held>> {
        let inlet = self.inlet.as_ref()?;
        let client = self.state.client(slot)?;
        if !client.announced() {
            return None;
        }
        let id = client.id();
        let reason = client.left().unwrap_or(RemoveReason::Disconnected);
        self.state.set_announced(slot, false);
        inlet.offer(Event::removed(id, reason))
    }

    /// Counts the `Removed` event the inbox will never hear, if it heard of `slot`'s client:
    /// the only place such a loss is counted.
    fn abandon(&mut self, slot: usize) {
        if let Some(inlet) = &self.inlet
            && self.state.client(slot).is_some_and(|c| c.announced())
        {
            self.state.set_announced(slot, false);
            inlet.lost();
        }
    }

    /// Calls the handler for every client closed since the last call (`on_removed`), with a
    /// context in which it can tell others; what it relays goes to `post`.
    pub(crate) fn dispatch_removed(&mut self, now: Instant, post: &mut dyn Post) {
        let mut removed = std::mem::take(&mut self.removed);
        self.state.take_removed(&mut removed);
        let handler = self.handler.clone();
        for (id, reason, data) in removed.drain(..) {
            departed(self.shard, id, reason);
            self.call(id, None, data, now, |ctx| handler.on_removed(ctx, reason));
        }
        self.removed = removed;
        self.hand_over(post);
    }

    /// Runs `hook` with a context for client `id` (in `slot`, or gone with its `left` data),
    /// catching a panic: the client is then closed with 1011, and the shard goes on.
    fn call(
        &mut self,
        id: ClientId,
        slot: Option<usize>,
        left: Option<ClientData>,
        now: Instant,
        hook: impl FnOnce(&mut Context<'_>),
    ) {
        let mut ctx = Context {
            id,
            slot,
            now,
            state: &mut self.state,
            shards: self.shards,
            outbox: &mut self.outbox,
            left,
        };
        if catch_unwind(AssertUnwindSafe(|| hook(&mut ctx))).is_err()
            && let Some(slot) = slot
        {
            self.panicked(slot);
        }
    }

    /// The handler panicked while handling `slot`'s client: it is closed with 1011.
    fn panicked(&mut self, slot: usize) {
        tracing::warn!(
            shard = self.shard.0,
            "a handler panicked: its client is closed with 1011"
        );
        self.state.close_saying(
            slot,
            RemoveReason::Closed(INTERNAL_ERROR),
            Some("internal error"),
        );
    }

    /// Hands what handlers queued to `post` (the other shards) and to the bridge (the other
    /// nodes), once the call that queued it is done.
    fn hand_over(&mut self, post: &mut dyn Post) {
        self.state.hand_to_bridge();
        post.post(&mut self.outbox);
    }
}

impl Drop for Core {
    /// The clients still held when the shard stops (their connections dropped unended, or
    /// waiting to end) owe the inbox a `Removed` it will never hear: counted lost.
    fn drop(&mut self) {
        for slot in self.state.slots() {
            self.abandon(slot);
        }
    }
}

/// Records why `id` left `shard`: `evicted` when the shard dropped it by policy, `removed`
/// otherwise. Once per client, never per frame. At debug: peers decide how often clients
/// leave, so at the default level they must not be able to fill the log (each reason is
/// counted in `Stats`).
fn departed(shard: ShardId, id: ClientId, reason: RemoveReason) {
    let evicted = matches!(
        reason,
        RemoveReason::SlowConsumer
            | RemoveReason::WriteDeadline
            | RemoveReason::HeartbeatTimeout
            | RemoveReason::AuthDeadline
    );
    if evicted {
        tracing::debug!(client = %id, shard = shard.0, ?reason, "evicted");
    } else {
        tracing::debug!(client = %id, shard = shard.0, ?reason, "removed");
    }
}
