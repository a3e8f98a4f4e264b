//! Shards: one OS thread each, owning a slice of the clients.
//!
//! # Ownership
//!
//! A shard is one OS thread running a current-thread tokio runtime and a `LocalSet`. Everything
//! it owns (its [`State`]: client map, outbound queues, counters it writes) lives in an `Rc` on
//! that thread and is touched by nothing else, so the hot path takes no lock and no atomic
//! read-modify-write. Sockets are registered with the shard's own reactor.
//!
//! Two drivers move the bytes ([`Driver`]). With the event loop (the default), each shard has
//! one: a task that serves all its plain TCP connections through one `mio::Poll`, itself one
//! registration of the shard's reactor, so a connection costs no task and no registration of
//! its own. Every other connection (wrapped, TLS, in-memory, and all of them with
//! `Driver::Tasks`) is a local task of its shard. Both ask `session` and `State` every
//! question; only how they wait and move bytes differs.
//!
//! The only way in from outside is the shard's bounded command queue ([`Handle`]). A shard
//! drains every queued command in one go (one tick), delivering into client queues and waking
//! each touched connection's task once, or listing it once for the event loop; they then
//! flush, many frames per `write`.
//!
//! [`Driver`]: crate::Driver
//!
//! # Files, in the order a broadcast passes them
//!
//! - `handle`: the way in (a bounded command queue); `command`: what can be asked.
//! - `relay`: what handlers on one shard send to others (the outbox, posting, waiting).
//! - `thread`: the shard's thread and runtime; `tick`: its command loop (drain, apply, sweep).
//! - `state`: every decision over the shard's clients (deliver, evict, ping, count), given `now`.
//! - `accept`: the accept loop; `open`: a connection's wrapping and upgrade; `session`: what
//!   serving a connection decides (parse and handle, may it read, what to write next), asked
//!   by `conn`: a connection served by its own task (read, flush to the socket), and by
//!   `evloop`: the shard's event loop, serving many.
//! - `topics`: the shard's topic index (who is subscribed to what); `interest`: which shards
//!   have subscribers of which topics, engine-wide, so that a publication skips the others.
//! - `inlet`: the shard's side of the inbox (queue without waiting, or hold the event in its
//!   connection, which stops reading).
//! - `outbound`: one client's queue; `shared`: what a shard's tasks share; `handler`: the
//!   embedder's hooks and their `Context`; `decision`: its answer to an upgrade, and the
//!   upgrade policy every registration path runs.
//!
//! # Invariants
//!
//! - No shard ever waits for another. Inside a shard, fan-out to other shards is try-only; when a
//!   target queue is full, only the connection whose message is being relayed waits (it stops
//!   reading), never the shard's worker, which keeps draining its own queue. So every queue
//!   keeps draining and no cycle of waits can form.
//! - A `RefCell` borrow of the state is never held across an `.await`.
//! - No shard ever waits for the consumer of the inbox: it only tries to queue, and an event
//!   that does not fit waits in its connection, which stops reading (see `inlet`).
//!
//! # Shutdown
//!
//! `Shutdown` closes every client with 1001 after its queued data and stops accepting; the
//! worker returns when every connection (task or event loop's) has ended or at the deadline,
//! whichever comes first; the event loop ends with it. Dropping the runtime then drops whatever
//! is left (sockets, queued payloads).

mod accept;
mod admission;
mod command;
mod conn;
mod decision;
#[cfg(unix)]
mod evloop;
mod handle;
mod handler;
mod inlet;
mod interest;
mod open;
mod outbound;
mod pages;
mod relay;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod ring;
mod session;
mod shared;
mod state;
mod thread;
mod tick;
mod topics;

pub(crate) use admission::Admission;
pub(crate) use command::{Command, Control, Delivery, Opening, Payloads, Stream};
pub use command::{Io, Wrap, WrapFuture};
pub(crate) use decision::decide;
pub use decision::{Accepted, Decision};
pub(crate) use handle::{Handle, Permits, reserve_wanted, send_each};
pub use handler::{Context, Handler, Incoming};
pub(crate) use interest::Interest;
#[cfg(any(test, fuzzing))]
pub(crate) use state::State;
pub(crate) use thread::{spawn, spawn_local};
pub(crate) use tick::Startup;
