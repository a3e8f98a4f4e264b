//! What handlers on one shard deliver to clients of others: [`Delivery`], gathered in an
//! [`Outbox`] while the core handles one read, and handed to a [`Post`] (the shard's way out,
//! `shard::relay`), which pushes them into the other shards' queues without waiting.
//!
//! # Ordering
//!
//! The outbox keeps the order in which handlers queued its deliveries; a `Post` keeps it per
//! target shard.

use crate::config::FRAME_OVERHEAD_BYTES;
use crate::payload::Payloads;
use crate::{Audience, ClientId, Payload};

/// What can travel from shard to shard: frames for clients.
pub(crate) enum Delivery {
    /// Deliver to every client of the audience; a batch's frames stay adjacent.
    Broadcast {
        payloads: Payloads,
        audience: Audience,
    },
    /// Deliver to one client.
    Send { id: ClientId, payload: Payload },
}

impl Delivery {
    /// What its frames charge a client's queue that receives them: their bytes, plus
    /// [`FRAME_OVERHEAD_BYTES`] each.
    pub(crate) fn charge(&self) -> usize {
        let charge = |p: &Payload| p.len() + FRAME_OVERHEAD_BYTES;
        match self {
            Delivery::Broadcast { payloads, .. } => payloads.iter().map(charge).sum(),
            Delivery::Send { payload, .. } => charge(payload),
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Delivery::Broadcast { .. } => "Broadcast",
            Delivery::Send { .. } => "Send",
        })
    }
}

/// Deliveries for other shards that handlers queued while one read (or one round of handler
/// calls) is handled, each with the index of its shard, in order; empty between reads.
pub(crate) type Outbox = Vec<(usize, Delivery)>;

/// The way out of the core to the other shards: pushes deliveries without ever waiting.
pub(crate) trait Post {
    /// Takes every delivery of `outbox` (leaving it empty): pushed into its shard's queue if
    /// there is room now, else kept, in order, to be sent by whoever waits for room.
    fn post(&mut self, outbox: &mut Outbox);

    /// Whether deliveries were kept for want of room: the connection whose read queued them
    /// reads nothing more until they are sent.
    fn waits(&self) -> bool;
}
