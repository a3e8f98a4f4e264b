//! The command loop of a shard: drain commands, apply them, sweep. Thin: `State` decides.
//!
//! # Back-pressure
//!
//! A tick applies at most a quarter of a client's queue cap of broadcast frames (as queue
//! charge: bytes plus the overhead of each frame), then yields, so that the connections it
//! woke flush before more is delivered; and while the shard is congested (a client that keeps
//! draining holds half its cap, `Core::congested`) it applies nothing: its queue fills, and the
//! engine's and the other shards' publishers wait. So a queue full of relayed bursts reaches
//! the clients at the pace their sockets take it, and evicts none that keeps reading.
//!
//! # Shutdown
//!
//! The loop ends on `Shutdown` once every connection is gone or its deadline passed, or at
//! once when the engine is dropped (`hard_stop`).

use super::super::command::{Command, Control, Opening};
use super::super::core::{Admission, Core, Delivery, Handler, Interest, State};
use super::super::handle::Handle;
use super::super::inlet::Inlet;
use super::accept::{accept, adopt};
#[cfg(unix)]
use super::evloop;
use super::open;
use super::shared::{PAUSE_RECHECK, Shared};
use crate::ShardId;
use crate::config::Config;
use crate::inbox::Event;
use crate::payload::Payloads;
use crate::stats::ShardCounters;
use crate::{Audience, Payload};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Everything a shard thread needs to start.
pub(crate) struct Startup {
    /// This shard.
    pub(crate) id: ShardId,
    /// The engine's limits.
    pub(crate) config: Arc<Config>,
    /// The embedder's hooks.
    pub(crate) handler: Arc<dyn Handler>,
    /// Every shard's handle, this one included.
    pub(crate) shards: Arc<[Handle]>,
    /// This shard's command queue.
    pub(crate) rx: mpsc::Receiver<Command>,
    /// This shard's counters.
    pub(crate) counters: Arc<ShardCounters>,
    /// Engine-wide connection count and ids.
    pub(crate) admission: Arc<Admission>,
    /// Engine-wide topic interest, in which this shard keeps its bits.
    pub(crate) interest: Arc<Interest>,
    /// Cancelled when the engine is dropped without a shutdown.
    pub(crate) hard_stop: CancellationToken,
    /// The bridge to other nodes, if any.
    pub(crate) link: Option<Arc<crate::link::Link>>,
    /// This shard's inbox queue, if the engine has an inbox.
    pub(crate) inbox: Option<mpsc::Sender<Event>>,
}

pub(crate) async fn run(startup: Startup) -> Option<oneshot::Sender<()>> {
    let Startup {
        id,
        config,
        handler,
        shards,
        mut rx,
        counters,
        admission,
        interest,
        hard_stop,
        link,
        inbox,
    } = startup;
    // The event loop, if this shard runs one: a `Poll` registered with this runtime's reactor.
    #[cfg(unix)]
    let reactor = match config.driver {
        crate::Driver::EventLoop | crate::Driver::IoUring => {
            let ring = (config.driver == crate::Driver::IoUring).then_some(config.io_uring_entries);
            evloop::reactor(ring, id, &counters)
                .inspect_err(|e| {
                    tracing::warn!(shard = id.0, error = %e, "no event loop: connections run as tasks");
                })
                .ok()
        }
        crate::Driver::Tasks => None,
    };
    let inlet = inbox.map(|tx| Inlet::new(tx, counters.clone()));
    let state = State::new(
        config.clone(),
        counters.clone(),
        interest,
        id.index(),
        link,
        Instant::now(),
    );
    let core = Core::new(state, handler, inlet, shards.len(), admission.clone(), id);
    let shared = Rc::new(Shared {
        id,
        core: RefCell::new(core),
        read_buf: RefCell::new(vec![0; config.read_buffer_bytes].into_boxed_slice()),
        write_buf: RefCell::new(Vec::with_capacity(config.write_buffer_bytes)),
        config: config.clone(),
        shards,
        counters,
        admission,
        idle: Notify::new(),
        stop_accepting: CancellationToken::new(),
        #[cfg(unix)]
        handover: reactor.as_ref().map(|_| RefCell::default()),
    });
    // The event loop ends with this function, however it ends.
    let stop_loop = CancellationToken::new();
    let _stop_loop = stop_loop.clone().drop_guard();
    #[cfg(unix)]
    if let Some(reactor) = reactor {
        tokio::task::spawn_local(evloop::run(shared.clone(), reactor, stop_loop));
    }
    let capacity = config.shard_queue_capacity;
    let mut commands = Vec::with_capacity(capacity);
    // The part of `commands` one tick applies.
    let mut tick = Vec::with_capacity(capacity);
    let mut sweep = tokio::time::interval_at(
        Instant::now() + config.sweep_interval,
        config.sweep_interval,
    );
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stopping: Option<(Instant, oneshot::Sender<()>)> = None;
    'run: loop {
        let deadline = stopping.as_ref().map(|(at, _)| *at);
        let congested = shared.core.borrow_mut().congested(Instant::now());
        tokio::select! {
            biased;
            () = hard_stop.cancelled() => break,
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
            () = shared.idle.notified(), if deadline.is_some() => {}
            // Congested: nothing is taken from the queue, which fills, until the clients drained.
            () = tokio::time::sleep(PAUSE_RECHECK), if congested => {}
            n = rx.recv_many(&mut commands, capacity), if !congested => {
                if n == 0 {
                    break;
                }
                // A tick takes at most a quarter of a client's queue cap of frames (the
                // connections' own read budget, for relayed bursts), then lets the connections
                // it woke flush, and waits while the shard is congested: a queue full of
                // relayed megabytes is delivered at the pace the clients' sockets take it, not
                // into their queues all at once.
                let mut received = commands.drain(..).peekable();
                while received.peek().is_some() {
                    let budget = shared.core.borrow().state().pass_budget();
                    // At least one command, then more while the tick's frames fit the budget.
                    let mut charge = 0;
                    while let Some(command) = received.next_if(|c| {
                        charge += c.charge();
                        tick.is_empty() || charge <= budget
                    }) {
                        tick.push(command);
                    }
                    apply_all(&shared, &mut tick, &mut stopping, Instant::now());
                    if received.peek().is_none() {
                        break;
                    }
                    tokio::task::yield_now().await;
                    while shared.core.borrow_mut().congested(Instant::now()) {
                        let deadline = stopping.as_ref().map(|(at, _)| *at);
                        tokio::select! {
                            biased;
                            () = hard_stop.cancelled() => break 'run,
                            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break 'run,
                            () = tokio::time::sleep(PAUSE_RECHECK) => {}
                        }
                    }
                }
            }
            _ = sweep.tick() => shared.core.borrow_mut().state_mut().sweep(Instant::now()),
        }
        shared.dispatch_removed(Instant::now());
        if stopping.is_some() && shared.core.borrow().state().connections() == 0 {
            break;
        }
    }
    stopping.map(|(_, done)| done)
}

/// Applies one tick's commands in order. Consecutive broadcasts to the same audience are
/// delivered in one pass over the clients (each still offered on its own); with
/// `batch_envelope`, as envelopes built once for the whole shard.
fn apply_all(
    shared: &Rc<Shared>,
    commands: &mut Vec<Command>,
    stopping: &mut Option<(Instant, oneshot::Sender<()>)>,
    now: Instant,
) {
    let mut runs = Runs::default();
    for command in commands.drain(..) {
        match command {
            Command::Deliver(delivery) => runs.push(shared, delivery, now),
            Command::Relayed(many) => {
                for delivery in many {
                    runs.push(shared, delivery, now);
                }
            }
            Command::Control(control) => {
                runs.flush(shared, now);
                shared.apply(control, stopping, now);
            }
        }
    }
    runs.flush(shared, now);
}

/// Consecutive broadcasts to one audience, gathered to be delivered in one pass.
#[derive(Default)]
struct Runs {
    /// Their audience.
    audience: Audience,
    /// Single frames, for envelopes (`batch_envelope`).
    run: SmallVec<[Payload; 16]>,
    /// One group per broadcast.
    groups: SmallVec<[Payloads; 16]>,
}

impl Runs {
    /// Takes the next delivery: a broadcast joins the run if its audience is the run's; a send
    /// or another audience delivers the run first, so that order is kept.
    fn push(&mut self, shared: &Shared, delivery: Delivery, now: Instant) {
        match delivery {
            Delivery::Broadcast { payloads, audience } => {
                if self.audience != audience {
                    self.flush(shared, now);
                    self.audience = audience;
                }
                if shared.config.batch_envelope {
                    self.run.extend(payloads);
                } else {
                    self.groups.push(payloads);
                }
            }
            Delivery::Send { id, payload } => {
                self.flush(shared, now);
                shared.core.borrow_mut().state_mut().send(id, &payload, now);
            }
        }
    }

    /// Delivers what was gathered.
    fn flush(&mut self, shared: &Shared, now: Instant) {
        if !self.run.is_empty() {
            let mut core = shared.core.borrow_mut();
            core.state_mut()
                .broadcast_enveloped(&self.run, &self.audience, now);
            self.run.clear();
        }
        if !self.groups.is_empty() {
            let mut core = shared.core.borrow_mut();
            core.state_mut()
                .broadcast(&self.groups, &self.audience, now);
            self.groups.clear();
        }
    }
}

impl Shared {
    /// Applies one control command.
    fn apply(
        self: &Rc<Self>,
        control: Control,
        stopping: &mut Option<(Instant, oneshot::Sender<()>)>,
        now: Instant,
    ) {
        let mut core = self.core.borrow_mut();
        match control {
            Control::Register {
                id,
                stream,
                opening,
            } => {
                if !core.state().accepting() {
                    self.admission.release();
                    return;
                }
                match adopt(self, stream) {
                    Ok((source, peer)) => {
                        core.handle_opening();
                        let Opening {
                            upgraded,
                            data,
                            read,
                        } = *opening;
                        let (admitted, data) = match upgraded {
                            Some(accepted) => (
                                Some((accepted.admit(core.state_mut(), id, data, now), read)),
                                None,
                            ),
                            None => (None, data),
                        };
                        drop(core);
                        open::spawn(self.clone(), id, source, admitted, peer, data);
                    }
                    Err(e) => {
                        tracing::debug!(%id, error = %e, "cannot adopt stream");
                        self.admission.release();
                    }
                }
            }
            Control::Listen { listener, wrap } => {
                tokio::task::spawn_local(accept(self.clone(), listener, wrap));
            }
            Control::Remove { id, reply } => {
                let info = core.state_mut().remove(id, now);
                if let Some(reply) = reply {
                    let _ = reply.send(info);
                }
            }
            Control::SetAuthenticated { id, principal } => {
                core.state_mut().set_authenticated(id, principal)
            }
            Control::UpdateLastPing { id } => core.state_mut().update_last_ping(id, now),
            Control::Subscribe { id, topic, reply } => {
                let _ = reply.send(core.state_mut().subscribe(id, &topic));
            }
            Control::Unsubscribe { id, topic, reply } => {
                let _ = reply.send(core.state_mut().unsubscribe(id, &topic));
            }
            Control::SubscriberCount { topic, reply } => {
                let _ = reply.send(core.state_mut().subscriber_count(&topic));
            }
            Control::Query { id, reply } => {
                let _ = reply.send(core.state_mut().info(id, now));
            }
            Control::Shutdown { deadline, done } => {
                core.state_mut().shutdown();
                self.stop_accepting.cancel();
                match stopping {
                    // A second shutdown: keep the earlier deadline, signal both.
                    Some(_) => drop(done),
                    None => *stopping = Some((deadline, done)),
                }
            }
        }
    }
}
