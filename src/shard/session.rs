//! What serving one registered connection means, whichever driver moves its bytes (a task per
//! connection, `conn`; the shard's event loop, `evloop`): telling the handler it arrived,
//! handling what it sent, whether it may read, and what its writer does next. The drivers
//! only move bytes and wait; every choice about a connection is made here or in `State`.
//!
//! # Back-pressure
//!
//! A connection reads only while [`may_read`] says so: it is open, and nothing it read earlier
//! waits for room in another shard's queue. Both drivers ask it before every read.

use super::handler::{Context, Incoming};
use super::inlet::Held;
use super::relay::{Waiting, post};
use super::shared::Shared;
use super::state::{Phase, State};
use crate::ClientId;
use crate::client::RemoveReason;
use crate::inbox::Event as InboxEvent;
use crate::wire::{Inbound, Parser};
use std::ops::ControlFlow;
use tokio::time::Instant;

/// Runs the handler's `on_registered` for the client `id` in `slot` and posts what it relayed;
/// what found another shard's queue full goes to `blocked`.
pub(super) fn registered(shared: &Shared, id: ClientId, slot: usize, blocked: &mut Waiting) {
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
    state.hand_to_bridge();
    post(&shared.shards, &mut outbox, blocked);
}

/// Whether the connection in `slot` may read now. `waiting`: bytes it read earlier, or
/// commands they led to, wait for room in another shard's queue.
///
/// The one place where both drivers learn whether a connection reads; a new reason to hold
/// reading back belongs here (and its end must wake the connection's driver).
pub(super) fn may_read(state: &State, slot: usize, waiting: bool) -> bool {
    !waiting && state.phase(slot) == Phase::Open
}

/// What a connection's writer does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Write what is queued (gather it with `Outbound::gather`).
    Write,
    /// Nothing to write until the client is woken again.
    Idle,
    /// The coalescing delay holds the queue back until this instant.
    Delay(Instant),
    /// The close frame is out: finish the closing handshake.
    Closed,
    /// The connection is over: drop it without writing more.
    Done,
}

/// What the writer of `slot` does next, at `now`.
pub(super) fn next(shared: &Shared, state: &State, slot: usize, now: Instant) -> Next {
    let Some(client) = state.client(slot) else {
        return Next::Done;
    };
    match client.phase {
        Phase::Abort => return Next::Done,
        Phase::Closing if client.out.is_empty() => return Next::Closed,
        _ if client.out.is_empty() => return Next::Idle,
        _ => {}
    }
    if shared.config.coalescing.delays()
        && let Some(wait) = state.flush_delay(slot, now)
    {
        return Next::Delay(now + wait);
    }
    Next::Write
}

/// Commands in the outbox after which they are posted before the read is fully handled, so
/// that a read of many small messages cannot pile up commands for a full shard.
const OUTBOX_POST_AT: usize = 64;

/// Parses `input`, answering pings and closes and handing each message to the handler or the
/// inbox; posts what the handler queued for other shards. Stops early (returning the bytes
/// consumed) when fan-out must wait, an event for the inbox must wait (`held`: the caller
/// reads nothing more until it is queued), or the client closed.
pub(super) fn ingest(
    shared: &Shared,
    id: ClientId,
    slot: usize,
    parser: &mut Parser,
    input: &mut [u8],
    blocked: &mut Waiting,
    held: &mut Option<Box<Held>>,
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
    let inlet = shared.inlet.as_ref();
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
        if let Some(inlet) = inlet
            && handler.forward(&ctx, message)
        {
            *held = inlet.offer(InboxEvent::message(id, message));
            if held.is_some() {
                // Kept by the connection, which reads nothing more until it is queued.
                state.pause_reads(slot, true, now);
                return ControlFlow::Break(());
            }
            return ControlFlow::Continue(());
        }
        handler.on_message(&mut ctx, message);
        if outbox.len() >= OUTBOX_POST_AT {
            post(shards, outbox, blocked);
        }
        if !blocked.is_empty() || state.phase(slot) != Phase::Open {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    state.hand_to_bridge();
    post(shards, outbox, blocked);
    match result {
        Ok(consumed) => consumed,
        Err(e) => {
            state.close(slot, RemoveReason::Protocol(e.close_code()));
            input.len()
        }
    }
}
