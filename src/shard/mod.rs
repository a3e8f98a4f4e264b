//! Shards: one OS thread each, owning a slice of the clients.
//!
//! # Ownership
//!
//! A shard is one OS thread running a current-thread tokio runtime and a `LocalSet`. Everything
//! it owns (its `Core`: the client map, their queues, the counters it writes) lives in an `Rc`
//! on that thread and is touched by nothing else, so the hot path takes no lock and no atomic
//! read-modify-write. Sockets are registered with the shard's own reactor.
//!
//! # The tree: who decides, who moves bytes
//!
//! - `core/` decides: synchronous code over plain data, the clock passed in. Its connection
//!   core (`core::Core`) holds the one lifecycle every connection follows (registered, reads,
//!   waits, closes, lingers, ends), calls the embedder's `Handler`, tells the inbox.
//! - `drive/` moves bytes: the shard's thread and command loop, accept, the opening of a
//!   connection, and the drivers ([`Driver`]) that serve connections: a task per connection
//!   (`drive::task`), or the shard's event loop (`drive::evloop`, its writes through `io_uring`
//!   with `drive::ring`). A driver reads the clock, asks the core, and reads, writes and
//!   waits; it holds no rule of its own.
//! - At this level, the ways in and out: `handle` (a bounded command queue, the only way in)
//!   and `command` (what can be asked); `relay` (what handlers send to other shards, posted
//!   without waiting); `inlet` (the shard's side of the inbox).
//!
//! A broadcast passes them in this order: `handle` → `drive::tick` (drain the queue) →
//! `core::State::deliver` (into each client's queue) → a driver's flush (one write per client
//! per pass).
//!
//! [`Driver`]: crate::Driver
//!
//! # Invariants
//!
//! - No shard ever waits for another. Inside a shard, fan-out to other shards is try-only; when a
//!   target queue is full, only the connection whose message is being relayed waits (it stops
//!   reading), never the shard's worker, which keeps draining its own queue. So every queue
//!   keeps draining and no cycle of waits can form.
//! - A `RefCell` borrow of the core is never held across an `.await`.
//! - No shard ever waits for the consumer of the inbox: it only tries to queue, and an event
//!   that does not fit waits in its connection, which stops reading (see `inlet`).
//!
//! # Shutdown
//!
//! `Shutdown` closes every client with 1001 after its queued data and stops accepting; the
//! worker returns when every connection (task or event loop's) has ended or at the deadline,
//! whichever comes first; the event loop ends with it. Dropping the runtime then drops whatever
//! is left (sockets, queued payloads).

mod command;
mod core;
mod drive;
mod handle;
mod inlet;
mod relay;

pub use self::core::{Accepted, Context, Decision, Handler};
pub(crate) use self::core::{Admission, Delivery, Interest, TopicLimits, decide};
#[cfg(any(test, fuzzing))]
pub(crate) use self::core::{Core, Ending, Linger, Next, Outbox, Post, Reading, Resume, State};
pub(crate) use command::{Command, Control, Opening, Stream};
pub use command::{Io, Wrap, WrapFuture};
pub(crate) use drive::{Startup, spawn, spawn_local};
pub(crate) use handle::{Handle, Permits, reserve_wanted, send_each};
#[cfg(any(test, fuzzing))]
pub(crate) use inlet::{Held, Inlet};
