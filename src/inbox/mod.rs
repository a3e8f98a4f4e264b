//! The inbox: what clients send, and when they come and go, as async streams for code that
//! must await. The contract (when to use it rather than a `Handler`, bounds, back-pressure,
//! ordering, shutdown) is on [`Inbox`] and [`InboxPartition`], where rustdoc renders it.
//!
//! - `stream`: the [`Inbox`], one stream read from one bounded queue per shard, and the
//!   [`Event`]s it yields.
//! - `partition`: the same events split by client over `n` streams ([`Inbox::partition`]), so
//!   that `n` tasks can await at once while each client's events stay in order.
//!
//! # Invariants
//!
//! - A client's events come from one shard's queue, in the order the shard queued them, and the
//!   `Inbox` yields them in that order; a partitioned inbox sends every event of a client to
//!   the same partition, which yields them in the order the `Inbox` did.
//! - Every event taken out of a shard's queue is yielded to a reader, or counted as lost in that
//!   shard's `InboxTally` (the inbox or its partition was dropped): none is lost silently.

mod partition;
mod stream;

pub use partition::InboxPartition;
pub use stream::{Event, EventKind, Inbox};
