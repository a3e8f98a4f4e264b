//! A shard's decisions: synchronous code over plain data. No I/O, no `async`, and no clock:
//! every decision that depends on time takes `now`, read by the driver that calls in (`drive`).
//!
//! - `conn`: the connection core, [`Core`]: the life of every connection, from registration to
//!   its end (`handle_*` in, `poll_*` out), the embedder's hooks called, the inbox told.
//! - `state`: the shard's clients and every decision about them (deliver, evict, ping,
//!   count); `outbound`: one client's queue; `pages`: the paged tables that hold them.
//! - `topics`: who is subscribed to what on this shard; `interest`: which shards have
//!   subscribers of which topics, engine-wide.
//! - `handler`: the embedder's hooks and their `Context`, run by the core on the shard thread;
//!   `outbox`: what they deliver to other shards, until posted.
//! - `decision`: the embedder's answer to an upgrade, and the upgrade policy every
//!   registration path runs; `admission`: the engine-wide connection count and ids.
//!
//! The embedder's `Handler` is called from here, so it lives here: its `Context` is a view of
//! the core's `State`, and the core calls it while it decides what a read means.

mod admission;
mod conn;
mod decision;
mod handler;
mod interest;
mod outbound;
mod outbox;
mod pages;
mod state;
mod topics;

pub(crate) use admission::Admission;
pub(crate) use conn::{Core, Ended, Ending, Linger, Next, Reading, Resume};
pub(crate) use decision::decide;
pub use decision::{Accepted, Decision};
pub use handler::{Context, Handler};
pub(crate) use interest::Interest;
pub(crate) use outbound::IoSlices;
pub(crate) use outbox::{Delivery, Outbox, Post};
pub(crate) use pages::Table;
pub(crate) use state::State;
pub(crate) use topics::Limits as TopicLimits;
