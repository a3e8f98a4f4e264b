//! `Handover`: what the rest of a shard hands its event loop (`evloop`) between passes:
//! connections whose opening is done, and connections whose wait is over.

use super::super::inlet::Held;
use super::super::relay::Waiting;
use crate::ClientId;
use crate::wire::Parser;
use std::task::Waker;

/// A connection handed to the loop by its opening task.
pub(crate) struct Joining {
    /// Its client's slot.
    pub(crate) slot: usize,
    /// Its socket, left by the runtime's reactor, non-blocking.
    pub(crate) stream: std::net::TcpStream,
    /// What it sent of an unfinished frame.
    pub(crate) parser: Parser,
    /// Bytes the client sent after its upgrade request.
    pub(crate) pending: Vec<u8>,
    /// What `on_registered` relayed that found a shard's queue full.
    pub(crate) relays: Waiting,
    /// With an inbox: its `Registered` event, if the inbox was full.
    pub(crate) held: Option<Box<Held>>,
}

/// A connection whose wait is over: it may read again.
pub(crate) struct Resumed {
    /// Its client's slot.
    pub(crate) slot: usize,
    /// Its client (the slot still holds it: a waiting connection keeps its slot).
    pub(crate) id: ClientId,
    /// What it had read but not handled.
    pub(crate) pending: Box<[u8]>,
}

/// What the rest of the shard hands its loop, taken at the loop's next pass. Bounded by the
/// shard's connections.
#[derive(Default)]
pub(crate) struct Handover {
    /// Connections whose opening is done.
    pub(crate) joining: Vec<Joining>,
    /// Connections whose wait is over.
    pub(crate) resumed: Vec<Resumed>,
    /// Wakes the loop when something arrives.
    pub(crate) waker: Option<Waker>,
}

impl Handover {
    /// Wakes the loop, if it waits.
    pub(crate) fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Whether nothing was handed over since the loop last looked.
    pub(crate) fn is_empty(&self) -> bool {
        self.joining.is_empty() && self.resumed.is_empty()
    }
}
