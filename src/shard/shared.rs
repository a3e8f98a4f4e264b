//! `Shared`: what the tasks of one shard share, on the shard thread only.

use super::admission::Admission;
use super::handle::Handle;
use super::handler::Context;
use super::inlet::Inlet;
use super::relay::{Outbox, Waiting, post, send_waiting};
use super::state::{Removed, State};
use crate::client::RemoveReason;
use crate::config::Config;
use crate::shard::Handler;
use crate::{ClientId, ShardId};
use std::cell::RefCell;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the tasks of one shard share; lives on the shard thread only.
pub(crate) struct Shared {
    /// This shard.
    pub(crate) id: ShardId,
    /// Clients and decisions. Never borrowed across an `.await`.
    pub(crate) state: RefCell<State>,
    /// Reused read buffer (`read_buffer_bytes`): connections keep only unfinished frames.
    pub(crate) read_buf: RefCell<Box<[u8]>>,
    /// Reused write buffer (`write_buffer_bytes`) into which small frames are copied.
    pub(crate) write_buf: RefCell<Vec<u8>>,
    /// Commands handlers queued for other shards while one read is handled; empty otherwise.
    pub(crate) outbox: RefCell<Outbox>,
    /// The engine's limits.
    pub(crate) config: Arc<Config>,
    /// The embedder's hooks.
    pub(crate) handler: Arc<dyn Handler>,
    /// Every shard's handle.
    pub(crate) shards: Arc<[Handle]>,
    /// Engine-wide connection count and ids.
    pub(crate) admission: Arc<Admission>,
    /// Signalled when the last connection ends during shutdown.
    pub(crate) idle: Notify,
    /// Cancelled at shutdown: accept loops stop.
    pub(crate) stop_accepting: CancellationToken,
    /// The way into the shard's event loop, if it runs (`Driver::EventLoop` or `Driver::IoUring`).
    #[cfg(unix)]
    pub(crate) handover: Option<RefCell<super::evloop::Handover>>,
    /// The way into this shard's inbox queue, if the engine has an inbox.
    pub(crate) inlet: Option<Inlet>,
}

/// Records why `id` left `shard`: `evicted` when the shard dropped it by policy, `removed`
/// otherwise. Once per client, after the tick, never per frame. At debug: peers decide how
/// often clients leave, so at the default level they must not be able to fill the log (each
/// reason is counted in `Stats`).
fn departed(shard: ShardId, id: ClientId, reason: RemoveReason) {
    let evicted = matches!(
        reason,
        RemoveReason::SlowConsumer
            | RemoveReason::WriteDeadline
            | RemoveReason::HeartbeatTimeout
            | RemoveReason::AuthDeadline
    );
    if evicted {
        tracing::debug!(client = id.as_u64(), shard = shard.0, ?reason, "evicted");
    } else {
        tracing::debug!(client = id.as_u64(), shard = shard.0, ?reason, "removed");
    }
}

impl Shared {
    /// Whether the shard's event loop runs, to serve its plain TCP connections.
    pub(crate) fn looped(&self) -> bool {
        #[cfg(unix)]
        return self.handover.is_some();
        #[cfg(not(unix))]
        return false;
    }

    /// Calls the handler for every client removed since the last call, with a context in
    /// which it can tell others (what it sends to other shards is posted after the calls).
    pub(crate) fn dispatch_removed(&self, buf: &mut Vec<Removed>, now: Instant) {
        let mut state = self.state.borrow_mut();
        state.take_removed(buf);
        if buf.is_empty() {
            return;
        }
        let mut outbox = self.outbox.borrow_mut();
        for (id, reason, data) in buf.drain(..) {
            departed(self.id, id, reason);
            let mut ctx = Context {
                id,
                slot: None,
                now,
                state: &mut state,
                shards: &self.shards,
                outbox: &mut outbox,
                left: data,
            };
            self.handler.on_removed(&mut ctx, reason);
        }
        state.hand_to_bridge();
        let mut waiting = Waiting::new();
        post(&self.shards, &mut outbox, &mut waiting);
        if !waiting.is_empty() {
            // The shard must not wait for another: a task sends what found its shard full,
            // in order, as a connection does before it reads again.
            let shards = self.shards.clone();
            tokio::task::spawn_local(async move { send_waiting(&shards, &mut waiting).await });
        }
    }

    /// A connection ended (its task, or the event loop, is through with it).
    pub(crate) fn connection_ended(&self) {
        self.admission.release();
        let mut state = self.state.borrow_mut();
        if state.connection_ended() {
            self.idle.notify_one();
        }
    }
}
