//! `Shared`: what the tasks of one shard share, on the shard thread only; [`Tenure`]: a
//! connection task's claim on it; and the effects a connection's end has outside the core.

use super::super::core::{Admission, Core, Ended};
use super::super::handle::Handle;
use super::super::inlet::Held;
use super::super::relay::{Relay, Waiting, send_waiting};
use crate::ShardId;
use crate::config::Config;
use crate::stats::ShardCounters;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a paused driver (a connection, the event loop, the command loop) asks again
/// whether its shard is still congested (`Core::congested`), when nothing else wakes it.
pub(crate) const PAUSE_RECHECK: Duration = Duration::from_millis(1);

/// What the tasks of one shard share; lives on the shard thread only.
pub(crate) struct Shared {
    /// This shard.
    pub(crate) id: ShardId,
    /// The shard's decisions and clients. Never borrowed across an `.await`.
    pub(crate) core: RefCell<Core>,
    /// Reused read buffer (`read_buffer_bytes`): connections keep only unfinished frames.
    pub(crate) read_buf: RefCell<Box<[u8]>>,
    /// Reused write buffer (`write_buffer_bytes`) into which small frames are copied.
    pub(crate) write_buf: RefCell<Vec<u8>>,
    /// The engine's limits.
    pub(crate) config: Arc<Config>,
    /// Every shard's handle.
    pub(crate) shards: Arc<[Handle]>,
    /// This shard's counters, for what the drivers count themselves (this thread writes them).
    pub(crate) counters: Arc<ShardCounters>,
    /// Engine-wide connection count and ids (the accept loop takes ids from it).
    pub(crate) admission: Arc<Admission>,
    /// Signalled when the last connection ends during shutdown.
    pub(crate) idle: Notify,
    /// Cancelled at shutdown: accept loops stop.
    pub(crate) stop_accepting: CancellationToken,
    /// The way into the shard's event loop, if it runs (`Driver::EventLoop` or `Driver::IoUring`).
    #[cfg(unix)]
    pub(crate) handover: Option<RefCell<super::handover::Handover>>,
}

impl Shared {
    /// Whether the shard's event loop runs, to serve its plain TCP connections.
    pub(crate) fn looped(&self) -> bool {
        #[cfg(unix)]
        return self.handover.is_some();
        #[cfg(not(unix))]
        return false;
    }

    /// A relay into every shard, for one call of the core.
    pub(crate) fn relay(&self) -> Relay<'_> {
        Relay::new(&self.shards)
    }

    /// Sends, in a task of its own, what found another shard's queue full after a call that
    /// no connection waits for (the handler's `on_removed`): the shard must not wait for
    /// another, so a task sends it, in order.
    pub(crate) fn send_apart(&self, mut waiting: Waiting) {
        if waiting.is_empty() {
            return;
        }
        let shards = self.shards.clone();
        tokio::task::spawn_local(async move { send_waiting(&shards, &mut waiting).await });
    }

    /// Calls the handler for every client closed since the last call (after a tick).
    pub(crate) fn dispatch_removed(&self, now: Instant) {
        let mut relay = self.relay();
        self.core.borrow_mut().dispatch_removed(now, &mut relay);
        self.send_apart(relay.into_waiting());
    }

    /// Acts on a connection's end outside the core: queues its `Removed` event apart if the
    /// inbox was full, sends apart what `on_removed` relayed, tells a shutdown that waits for
    /// the last connection.
    pub(crate) fn ended(&self, ended: Ended, waiting: Waiting) {
        let Ended { held, idle } = ended;
        queue_apart(held);
        self.send_apart(waiting);
        if idle {
            self.idle.notify_one();
        }
    }

    /// Tells a shutdown that waits for the last connection, if this was it.
    pub(crate) fn idle_if(&self, idle: bool) {
        if idle {
            self.idle.notify_one();
        }
    }
}

/// Queues an event that found the inbox full in a task of its own, when nothing else waits
/// behind it (a client's `Removed`, its last).
pub(crate) fn queue_apart(held: Option<Box<Held>>) {
    if let Some(mut held) = held {
        tokio::task::spawn_local(async move { held.queue().await });
    }
}

/// A connection task's claim on its shard: however the task ends (it finishes, a bug panics
/// it, or the shard stops and drops it), its opening or its client is accounted for, so that
/// no client stays registered, no connection slot leaks, and a shutdown is not held up.
pub(crate) struct Tenure {
    /// The shard.
    shared: Rc<Shared>,
    /// What the task holds.
    holds: Holds,
}

/// What a connection task holds, for [`Tenure`].
enum Holds {
    /// An opening: no client yet.
    Opening,
    /// Its client, admitted in this slot.
    Client(usize),
    /// Nothing more: the connection ended through the core, or the event loop serves it.
    Nothing,
}

impl Tenure {
    /// For a connection task of `shared`'s shard; `slot` if its client is already admitted.
    pub(crate) fn new(shared: Rc<Shared>, slot: Option<usize>) -> Tenure {
        let holds = slot.map_or(Holds::Opening, Holds::Client);
        Tenure { shared, holds }
    }

    /// The shard.
    pub(crate) fn shared(&self) -> &Rc<Shared> {
        &self.shared
    }

    /// Its client was admitted in `slot`.
    pub(crate) fn registered(&mut self, slot: usize) {
        self.holds = Holds::Client(slot);
    }

    /// The task holds nothing more: its connection ended through the core, or the event loop
    /// serves it from now on.
    pub(crate) fn release(&mut self) {
        self.holds = Holds::Nothing;
    }
}

impl Drop for Tenure {
    fn drop(&mut self) {
        let shared = &*self.shared;
        let idle = match std::mem::replace(&mut self.holds, Holds::Nothing) {
            Holds::Nothing => return,
            Holds::Opening => shared.core.borrow_mut().handle_opening_failed(),
            Holds::Client(slot) => {
                // What its `on_removed` relays into a full queue is dropped: the task cannot
                // wait now, and the shard is most likely stopping.
                let mut relay = shared.relay();
                let mut core = shared.core.borrow_mut();
                core.handle_dropped(slot, Instant::now(), &mut relay)
            }
        };
        shared.idle_if(idle);
    }
}
