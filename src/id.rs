//! `ClientId` and `ShardId`: names that route themselves.
//!
//! # Invariants
//!
//! The low 16 bits of a `ClientId` are the index of the shard that owns the client, so any
//! command about one client goes straight to its shard with no global map. The high 48 bits are
//! a sequence number drawn from one engine-wide counter: an id is never reused while the engine
//! lives (2^48 registrations).

use std::fmt;

/// Identifies one client of one engine. Cheap to copy; routes to its shard by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

/// Identifies one shard (one thread) of an engine: `0..shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ClientId {
    const SHARD_BITS: u32 = 16;

    pub(crate) fn new(sequence: u64, shard: ShardId) -> ClientId {
        ClientId((sequence << Self::SHARD_BITS) | u64::from(shard.0))
    }

    /// The shard that owns this client.
    ///
    /// ```
    /// # use shardcast::{ClientId, ShardId};
    /// let id = ClientId::from_u64(0x0003_0001);
    /// assert_eq!(id.shard(), ShardId(1));
    /// ```
    pub fn shard(self) -> ShardId {
        ShardId(self.0 as u16)
    }

    /// The raw value (for logs, maps keyed by integers, or the wire).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`ClientId::as_u64`]. An id that names no client is harmless: every
    /// call with it finds nothing.
    pub fn from_u64(raw: u64) -> ClientId {
        ClientId(raw)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.0 >> Self::SHARD_BITS, self.shard().0)
    }
}

impl ShardId {
    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}
