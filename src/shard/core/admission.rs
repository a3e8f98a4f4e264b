//! `Admission`: the engine-wide connection count and id sequence, shared by every shard.
//!
//! # Invariants
//!
//! `connections` counts connections from `admit` until their task ends (`release`), and never
//! exceeds `max` once `admit` returned an id.

use crate::{ClientId, ShardId};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Hands out client ids and bounds the number of connections.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Next sequence number (ids are never reused).
    next: CachePadded<AtomicU64>,
    /// Live connections, handshaking or registered.
    connections: CachePadded<AtomicUsize>,
    /// `Config::clients_max`.
    max: usize,
}

impl Admission {
    pub(crate) fn new(max: usize) -> Admission {
        Admission {
            next: CachePadded::new(AtomicU64::new(1)),
            connections: CachePadded::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Reserves room for one connection; `None` when `max` are live.
    pub(crate) fn admit(&self) -> Option<u64> {
        // Relaxed: the count is a limit, not a synchronisation point; it orders nothing else.
        if self.connections.fetch_add(1, Relaxed) >= self.max {
            self.connections.fetch_sub(1, Relaxed);
            return None;
        }
        Some(self.next.fetch_add(1, Relaxed))
    }

    /// Reserves room for one connection on `shard`.
    pub(crate) fn admit_on(&self, shard: ShardId) -> Option<ClientId> {
        self.admit().map(|seq| ClientId::new(seq, shard))
    }

    /// A connection ended.
    pub(crate) fn release(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }

    /// Live connections.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Relaxed)
    }
}
