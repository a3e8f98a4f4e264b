//! `State`: one shard's clients and every decision about them: deliver, evict, count.
//!
//! No I/O, no `async` and no clock here: the connection tasks, the event loop and the worker
//! call in, passing the time they read (`now`), and this code decides. Waking a connection
//! task, or listing a client for the event loop and waking it (so that it flushes), is the only
//! effect on the outside.
//!
//! # Invariants
//!
//! - `index` maps exactly the ids of clients in phase `Open` to their slab slot. A client
//!   leaves `index` (and the `clients` gauge, and the audience of every later broadcast) the
//!   moment it is closed, while its slot stays until its driver (task or event loop) has
//!   flushed the close frame and released it.
//! - `queued_bytes` (gauge) is the sum of `out.bytes()` over the slab.
//! - Every registered client produces exactly one `removed` event.
//! - A client has subscriptions in `topics` only while it is in `index` (it leaves every topic
//!   when it is closed), and the `topics`/`subscriptions` gauges follow `topics`.
//! - A client the event loop serves (`looped`) is in `touched` at most once (`listed`), from
//!   the moment something is queued for it, or it is closed, until the loop takes the list.

use super::interest::Interest;
use super::outbound::Outbound;
use super::pages::Slab;
use super::topics::{Limits, TopicIndex};
use crate::client::{ClientData, ClientInfo, Principal, RemoveReason, close_code};
use crate::config::{Config, FRAME_OVERHEAD_BYTES, SlowConsumerPolicy};
use crate::error::SubscribeError;
use crate::link::Gathered;
use crate::link::Link;
use crate::payload::Payloads;
use crate::stats::{ShardCounters, bump, bump_release, drop_by};
use crate::wire::deflate::{Agreement, InflateCounts};
use crate::wire::{Opcode, envelope, frame};
use crate::{Audience, ClientId, Payload, Topic};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Waker;
use std::time::Duration;
use tokio::time::Instant;

/// Most control frames (pongs) a client may have queued; pings past this get no pong (RFC 6455
/// allows answering only the latest ping).
pub(crate) const CONTROL_FRAMES_MAX: usize = 16;

/// How long a client whose socket takes nothing may hold the shard's publishers back (see
/// [`State::congested`]); past it, the client is left to the slow-consumer policy, as one whose
/// socket stopped draining. Long enough for a reader that is merely busy (a garbage collection,
/// a scheduling hiccup), short enough that a reader that stopped cannot stall a shard: a
/// stalled client pauses the publishers once, for this long, then only while its socket drains
/// again.
pub(crate) const STALLED_AFTER: Duration = Duration::from_millis(500);

/// Where a client is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Registered: receives broadcasts, its frames are read.
    Open,
    /// Closed by either side: its close frame (and maybe queued data) is being flushed.
    Closing,
    /// To be dropped without writing anything more.
    Abort,
}

/// Where a client's connection is in its life, beside the client's [`Phase`]: what its driver
/// may do with its socket. Moved by the connection core (`conn`) only; see its diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Served: it reads while its client is open, and writes what is queued.
    Serving,
    /// Something its reading (or registration) led to waits for room: deliveries for another
    /// shard's full queue, or its event for the full inbox. It reads nothing until the wait is
    /// over, and its silence, being ours, is not held against it by the heartbeat. Its writes
    /// go on.
    Waiting,
    /// Its close frame went out while it waited: it lingers (as `Lingering`), and the inbox
    /// hears it left once the wait is over.
    WaitingLingering,
    /// Its socket ended while it waited: it ends once the wait is over, so that the inbox
    /// hears of it last.
    Departing,
    /// Its close frame is out and nothing waits: what its peer still sends is discarded until
    /// the peer closes too, or `close_timeout` passes.
    Lingering,
}

impl Stage {
    /// Whether something of the connection waits for room (it reads nothing meanwhile).
    fn waits(self) -> bool {
        matches!(
            self,
            Stage::Waiting | Stage::WaitingLingering | Stage::Departing
        )
    }
}

/// One client, as its shard sees it.
#[derive(Debug)]
pub(crate) struct Client {
    /// Its id.
    id: ClientId,
    /// Where it is in its life.
    pub(crate) phase: Phase,
    /// Whether it may receive `Audience::AUTHENTICATED` broadcasts.
    authenticated: bool,
    /// Who it is, once authenticated.
    principal: Option<Principal>,
    /// What the embedder attached to it; set once, at admission.
    data: Option<ClientData>,
    /// Last inbound frame (or registration, or `update_last_ping`).
    last_seen: Stamp,
    /// Whether a server ping went out since `last_seen` (so a silent client gets one ping per
    /// silence, not one per sweep).
    pinged: bool,
    /// Where its connection is in its life.
    stage: Stage,
    /// Whether the inbox heard it registered and not yet that it left.
    announced: bool,
    /// Why it left, once it is closed (for the inbox's `Removed` event).
    left: Option<RemoveReason>,
    /// When its upgrade completed.
    registered_at: Stamp,
    /// Since when its socket has refused bytes that are queued (or buffered in its stream, as
    /// TLS records); `None` while writes progress.
    blocked_since: Option<Stamp>,
    /// Shard tick at which the oldest unwritten frame was queued (for delayed coalescing).
    first_queued: Option<Stamp>,
    /// Its unwritten frames, bounded by `client_queue_bytes_max`.
    pub(crate) out: Outbound,
    /// Wakes its connection task to flush; taken on the first delivery of a tick, so a client
    /// is woken at most once however many frames it gets. Always `None` on the event loop.
    waker: Option<Waker>,
    /// Whether the shard's event loop serves it (it has no task, so no waker).
    looped: bool,
    /// Whether it is in `Touched::slots` (a looped client is listed once however many frames
    /// it gets before the loop looks).
    listed: bool,
    /// Whether it is in `State::backlog` (its queue passed half its cap).
    backlogged: bool,
    /// permessage-deflate: 0 if not negotiated, else the largest window (bits) of the
    /// compressed frames it may get (8: negotiated, but it gets plain frames).
    deflate: u8,
}

impl Client {
    /// Its id.
    pub(crate) fn id(&self) -> ClientId {
        self.id
    }

    /// Where its connection is in its life.
    pub(crate) fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether the inbox heard it registered and not yet that it left.
    pub(crate) fn announced(&self) -> bool {
        self.announced
    }

    /// Why it left, once it is closed.
    pub(crate) fn left(&self) -> Option<RemoveReason> {
        self.left
    }

    /// Tells whoever writes `slot`'s socket that it has something to do: its task, or the
    /// event loop.
    fn wake(&mut self, slot: usize, touched: &mut Touched) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        } else if self.looped && !self.listed {
            self.listed = true;
            touched.push(slot);
        }
    }
}

/// An instant as a client record keeps it: nanoseconds since the shard's [`Epoch`], plus one,
/// so that an `Option<Stamp>` takes 8 bytes where an `Option<Instant>` takes 16. A client
/// keeps four.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(NonZeroU64);

/// The instant from which a shard counts its stamps: no time it is given is earlier.
#[derive(Clone, Copy, Debug)]
struct Epoch(Instant);

impl Epoch {
    /// `t` as a stamp (an instant before the epoch counts as the epoch; 584 years after it,
    /// the stamps stop growing).
    fn stamp(self, t: Instant) -> Stamp {
        let ns = u64::try_from(t.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX);
        Stamp(NonZeroU64::MIN.saturating_add(ns))
    }

    /// The time from `s` to `now` (zero if `now` is earlier).
    fn since(self, now: Instant, s: Stamp) -> Duration {
        Duration::from_nanos(self.stamp(now).0.get().saturating_sub(s.0.get()))
    }

    /// `s` as an instant.
    fn instant(self, s: Stamp) -> Instant {
        self.0 + Duration::from_nanos(s.0.get() - 1)
    }
}

/// The clients the event loop must look at, and the loop's waker.
#[derive(Debug, Default)]
struct Touched {
    /// Slots of looped clients with something new to write or an end to act on, each once;
    /// bounded by the client count.
    slots: Vec<usize>,
    /// Wakes the event loop when `slots` gains its first entry.
    waker: Option<Waker>,
}

impl Touched {
    fn push(&mut self, slot: usize) {
        if self.slots.is_empty()
            && let Some(waker) = self.waker.take()
        {
            waker.wake();
        }
        self.slots.push(slot);
    }
}

/// A client that left, why, and its data (for `Handler::on_removed`).
pub(crate) type Removed = (ClientId, RemoveReason, Option<ClientData>);

/// A hasher for `ClientId`s: one folded multiply, so that ids which differ only in their high
/// (sequence) bits spread over the table.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let p = u128::from(n ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }
}

/// A shard's clients and counters.
#[derive(Debug)]
pub(crate) struct State {
    /// The engine's limits.
    config: Arc<Config>,
    /// This shard's counters (this thread is the only writer).
    counters: Arc<ShardCounters>,
    /// Every client past its upgrade whose connection is still served (by its task or the
    /// event loop). Grows a page at a time (`pages`): no doubling slack per client.
    clients: Slab<Client>,
    /// Open clients by id.
    index: HashMap<ClientId, usize, BuildHasherDefault<IdHasher>>,
    /// Open clients' subscriptions.
    topics: TopicIndex,
    /// Clients that left since the last dispatch, with their data, for the handler; bounded by
    /// the client count.
    removed: Vec<Removed>,
    /// Connection tasks alive, including those still in their upgrade.
    live: usize,
    /// Set once by `shutdown`: no new client is admitted.
    shutting_down: bool,
    /// The bridge to other nodes, if any: broadcasts published here are offered to it.
    link: Option<Arc<Link>>,
    /// Broadcasts for the other nodes, until the driver hands them to the bridge.
    gathered: Gathered,
    /// Looped clients for the event loop to flush.
    touched: Touched,
    /// Clients whose queue passed half its cap since they were last found below it, each once
    /// (`Client::backlogged`); bounded by the client count. See [`State::congested`].
    backlog: Vec<usize>,
    /// What the current read delivered, as queue charge, one client's worth of each frame
    /// (see [`State::read_spent`]).
    read_charge: usize,
    /// Where the clients' stamps count from.
    epoch: Epoch,
}

impl State {
    /// The state of shard `shard`, which keeps its topic interest in `interest` (and, with a
    /// bridge, tells `link` its topics' first and last subscribers). No time passed to it is
    /// earlier than `epoch` (the shard's start).
    pub(crate) fn new(
        config: Arc<Config>,
        counters: Arc<ShardCounters>,
        interest: Arc<Interest>,
        shard: usize,
        link: Option<Arc<Link>>,
        epoch: Instant,
    ) -> State {
        State {
            config,
            counters,
            clients: Slab::default(),
            index: HashMap::default(),
            topics: TopicIndex::new(interest, shard, link.clone()),
            removed: Vec::new(),
            live: 0,
            shutting_down: false,
            link,
            gathered: Gathered::default(),
            touched: Touched::default(),
            backlog: Vec::new(),
            read_charge: 0,
            epoch: Epoch(epoch),
        }
    }

    /// This shard's counters.
    pub(crate) fn counters(&self) -> &ShardCounters {
        &self.counters
    }

    /// Keeps a broadcast a handler delivered for the other nodes, if there is a bridge; the
    /// driver hands what was kept to the bridge with [`State::hand_to_bridge`] once it is
    /// through with the read (or the round of handler calls) that led to it.
    pub(crate) fn gather_for_bridge(&mut self, payloads: Payloads, audience: Audience) {
        if let Some(link) = &self.link {
            self.gathered.push(link, payloads, audience);
        }
    }

    /// Hands what [`State::gather_for_bridge`] kept to the bridge.
    pub(crate) fn hand_to_bridge(&mut self) {
        if let Some(link) = &self.link {
            self.gathered.hand(link);
        }
    }

    /// Admits a client whose upgrade succeeded (its 101 response is already written, so every
    /// broadcast delivered from now on reaches it). Returns its slot. During shutdown the client
    /// is closed (1001) at once.
    pub(crate) fn admit(
        &mut self,
        id: ClientId,
        principal: Option<Principal>,
        now: Instant,
    ) -> usize {
        let now = self.epoch.stamp(now);
        let slot = self.clients.insert(Client {
            id,
            phase: Phase::Open,
            authenticated: principal.is_some(),
            principal,
            data: None,
            last_seen: now,
            pinged: false,
            stage: Stage::Serving,
            announced: false,
            left: None,
            registered_at: now,
            blocked_since: None,
            first_queued: None,
            out: Outbound::default(),
            waker: None,
            looped: false,
            listed: false,
            backlogged: false,
            deflate: 0,
        });
        self.index.insert(id, slot);
        bump(&self.counters.clients, 1);
        bump(&self.counters.registered, 1);
        if self.shutting_down {
            self.close(slot, RemoveReason::Shutdown);
        }
        slot
    }

    /// Records that the open client in `slot` negotiated permessage-deflate with `agreement`:
    /// it gets compressed frames from now on, and may send compressed messages.
    pub(crate) fn set_deflate(&mut self, slot: usize, agreement: Agreement) {
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        if client.phase != Phase::Open || client.deflate != 0 {
            return;
        }
        // 8 when the client's window is too small for zlib: negotiated, sent plain.
        client.deflate = agreement.window_bits().unwrap_or(8);
        self.topics.interest().deflate_joined(client.deflate);
        bump(&self.counters.deflate_clients, 1);
    }

    /// Compresses `payloads` for every window size the engine's clients negotiated
    /// (permessage-deflate), as the config says: where a handler publishes a broadcast.
    pub(crate) fn compress(&self, payloads: &mut [Payload]) {
        self.topics
            .interest()
            .compress(payloads, &self.config.compression);
    }

    /// Counts what the shard's inflater did.
    pub(crate) fn count_inflated(&self, counts: InflateCounts) {
        let c = &*self.counters;
        for (counter, n) in [
            (&c.messages_inflated, counts.inflated),
            (&c.inflate_too_big, counts.too_big),
            (&c.inflate_corrupt, counts.corrupt),
        ] {
            if n > 0 {
                bump(counter, n);
            }
        }
    }

    /// Whether the client in `slot` negotiated permessage-deflate.
    pub(crate) fn deflates(&self, slot: usize) -> bool {
        self.clients.get(slot).is_some_and(|c| c.deflate != 0)
    }

    /// The client in `slot`.
    pub(crate) fn client(&self, slot: usize) -> Option<&Client> {
        self.clients.get(slot)
    }

    /// The phase of the client in `slot` (`Abort` if the slot is empty).
    pub(crate) fn phase(&self, slot: usize) -> Phase {
        self.clients.get(slot).map_or(Phase::Abort, |c| c.phase)
    }

    /// Delivers `payloads` (one broadcast, or the frames of one batch, kept adjacent) to every
    /// open client of `audience`.
    pub(crate) fn deliver(&mut self, payloads: &[Payload], audience: &Audience, now: Instant) {
        self.deliver_groups(&[payloads], audience, now);
    }

    /// Delivers several broadcasts to the same audience in one pass over the clients. Each
    /// group (one broadcast, or one batch) is offered on its own and in order, under the byte
    /// cap and policy, exactly as one `deliver` call per group would.
    pub(crate) fn deliver_groups<G: AsRef<[Payload]>>(
        &mut self,
        groups: &[G],
        audience: &Audience,
        now: Instant,
    ) {
        let totals: SmallVec<[usize; 16]> = groups
            .iter()
            .map(|g| g.as_ref().iter().map(Payload::len).sum())
            .collect();
        let mut evict: SmallVec<[usize; 8]> = SmallVec::new();
        let mut tally = Tally::default();
        let config = &*self.config;
        let touched = &mut self.touched;
        let backlog = &mut self.backlog;
        let now = self.epoch.stamp(now);
        let mut visit = |slot: usize, client: &mut Client| {
            if client.phase != Phase::Open || !audience.admits(client.id, client.authenticated) {
                return;
            }
            for (group, &total) in groups.iter().zip(&totals) {
                let offered = (&mut *client, slot, &mut *touched, &mut *backlog);
                if !offer(config, offered, group.as_ref(), total, now, &mut tally) {
                    evict.push(slot);
                    break;
                }
            }
        };
        match audience.topic_filter() {
            None => {
                for (slot, client) in self.clients.iter_mut() {
                    visit(slot, client);
                }
            }
            Some(topics) => {
                let clients = &mut self.clients;
                self.topics.for_each_subscriber(topics, |slot| {
                    if let Some(client) = clients.get_mut(slot) {
                        visit(slot, client);
                    }
                });
            }
        }
        tally.publish(&self.counters);
        for slot in evict {
            self.evict(slot, RemoveReason::SlowConsumer);
        }
    }

    /// Applies broadcasts to the same audience in one pass (each group one broadcast, or one
    /// batch), and counts them once they took effect.
    pub(crate) fn broadcast<G: AsRef<[Payload]>>(
        &mut self,
        groups: &[G],
        audience: &Audience,
        now: Instant,
    ) {
        self.deliver_groups(groups, audience, now);
        self.applied(groups.iter().map(|g| g.as_ref().len()).sum());
    }

    /// Applies a run of single-frame broadcasts to one audience as batch envelopes
    /// (`batch_envelope`): as many frames per envelope as `envelope_bytes_max` allows, each
    /// envelope built once for every client; a frame too large for any envelope goes out as
    /// itself. Counts the broadcasts, not the envelopes.
    pub(crate) fn broadcast_enveloped(
        &mut self,
        run: &[Payload],
        audience: &Audience,
        now: Instant,
    ) {
        let max = self.config.envelope_bytes_max;
        let mut start = 0;
        while start < run.len() {
            let mut end = start;
            let mut size = 4;
            while end < run.len() && size + 4 + run[end].body().len() <= max {
                size += 4 + run[end].body().len();
                end += 1;
            }
            if end <= start + 1 {
                // One frame alone, or one too large for any envelope (whose length fields are
                // bounded): it goes out as itself.
                let end = start + 1;
                self.deliver(&run[start..end], audience, now);
                start = end;
                continue;
            }
            let frame = envelope::encode_frame(run[start..end].iter().map(Payload::body));
            match Payload::from_frame(frame) {
                Ok(mut payload) => {
                    // Built here, so compressed here: once per envelope.
                    self.compress(std::slice::from_mut(&mut payload));
                    self.deliver(std::slice::from_ref(&payload), audience, now)
                }
                Err(_) => self.deliver(&run[start..end], audience, now),
            }
            start = end;
        }
        self.applied(run.len());
    }

    /// Counts `n` broadcasts applied, after their deliveries, drops and evictions: Release,
    /// paired with the Acquire in `ShardStats::read`, so a snapshot that counts a broadcast
    /// counts its effects too. The only place that counts them.
    fn applied(&self, n: usize) {
        bump_release(&self.counters.broadcasts_applied, n as u64);
    }

    /// Delivers one payload to one client, if it is open; compressed for it here if it
    /// negotiated permessage-deflate and the payload has no frame for it yet (one recipient,
    /// one compression).
    pub(crate) fn send(&mut self, id: ClientId, payload: &Payload, now: Instant) {
        let Some(&slot) = self.index.get(&id) else {
            return;
        };
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        let compressed;
        let payload = match client.deflate {
            bits @ 9.. if Arc::ptr_eq(payload.frame_for(bits), payload.shared_frame()) => {
                let mut own = payload.clone();
                let made = own.compress(&[bits], &self.config.compression);
                self.topics.interest().count_compressions(made);
                compressed = own;
                &compressed
            }
            _ => payload,
        };
        let mut tally = Tally::default();
        let ok = offer(
            &self.config,
            (client, slot, &mut self.touched, &mut self.backlog),
            std::slice::from_ref(payload),
            payload.len(),
            self.epoch.stamp(now),
            &mut tally,
        );
        tally.publish(&self.counters);
        if !ok {
            self.evict(slot, RemoveReason::SlowConsumer);
        }
    }

    /// Queues a pong answering `ping`, ahead of queued data.
    pub(crate) fn pong(&mut self, slot: usize, ping: &[u8]) {
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        if client.phase == Phase::Open && client.out.control_frames() < CONTROL_FRAMES_MAX {
            let pong = frame::encode(Opcode::Pong, ping);
            bump(&self.counters.queued_bytes, pong.len() as u64);
            client.out.push_control(pong);
        }
    }

    /// Refreshes the last-seen time of the client in `slot` (any inbound frame, a pong
    /// included).
    pub(crate) fn touch(&mut self, slot: usize, now: Instant) {
        let now = self.epoch.stamp(now);
        if let Some(client) = self.clients.get_mut(slot) {
            client.last_seen = now;
            client.pinged = false;
        }
    }

    /// Moves `slot`'s connection to `stage` (for the connection core only). A connection
    /// whose wait is over starts its silence again from `now`: it was not read meanwhile.
    pub(super) fn set_stage(&mut self, slot: usize, stage: Stage, now: Instant) {
        if let Some(client) = self.clients.get_mut(slot) {
            if client.stage.waits() && !stage.waits() {
                client.last_seen = self.epoch.stamp(now);
                client.pinged = false;
            }
            client.stage = stage;
        }
    }

    /// Records whether the inbox heard of `slot`'s client and not yet that it left (for the
    /// connection core only).
    pub(super) fn set_announced(&mut self, slot: usize, announced: bool) {
        if let Some(client) = self.clients.get_mut(slot) {
            client.announced = announced;
        }
    }

    /// The engine's limits.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The slots of every client whose connection is still served.
    pub(super) fn slots(&self) -> Vec<usize> {
        self.clients.iter().map(|(slot, _)| slot).collect()
    }

    /// Refreshes the last-seen time of `id`.
    pub(crate) fn update_last_ping(&mut self, id: ClientId, now: Instant) {
        if let Some(&slot) = self.index.get(&id) {
            self.touch(slot, now);
        }
    }

    /// Marks `id` authenticated as `principal`, or unauthenticated with `None`.
    pub(crate) fn set_authenticated(&mut self, id: ClientId, principal: Option<Principal>) {
        let Some(&slot) = self.index.get(&id) else {
            return;
        };
        if let Some(client) = self.clients.get_mut(slot) {
            client.authenticated = principal.is_some();
            client.principal = principal;
        }
    }

    /// Attaches `data` to the client in `slot` (at admission).
    pub(crate) fn set_data(&mut self, slot: usize, data: Option<ClientData>) {
        if let Some(client) = self.clients.get_mut(slot) {
            client.data = data;
        }
    }

    /// The data of the client in `slot`.
    pub(crate) fn data(&self, slot: usize) -> Option<&ClientData> {
        self.clients.get(slot).and_then(|c| c.data.as_ref())
    }

    /// The principal of the client in `slot`.
    pub(crate) fn principal(&self, slot: usize) -> Option<&Principal> {
        self.clients.get(slot).and_then(|c| c.principal.as_ref())
    }

    /// A snapshot of `id` at `now`, if it is open.
    pub(crate) fn info(&self, id: ClientId, now: Instant) -> Option<ClientInfo> {
        let slot = *self.index.get(&id)?;
        let client = self.clients.get(slot)?;
        Some(ClientInfo {
            topics: self.topics.topics_of(slot),
            id,
            principal: client.principal.clone(),
            authenticated: client.authenticated,
            data: client.data.clone(),
            idle: self.epoch.since(now, client.last_seen),
            queued_bytes: client.out.bytes(),
        })
    }

    /// Closes `id` with 1000 after its queued data; returns what was known of it at `now`.
    pub(crate) fn remove(&mut self, id: ClientId, now: Instant) -> Option<ClientInfo> {
        let info = self.info(id, now)?;
        if let Some(&slot) = self.index.get(&id) {
            self.close(slot, RemoveReason::Removed);
        }
        Some(info)
    }

    /// The limits every subscription must respect.
    fn topic_limits(&self) -> Limits {
        Limits::of(&self.config)
    }

    /// Subscribes `id` to `topic`; `Ok(false)` if it already was.
    pub(crate) fn subscribe(
        &mut self,
        id: ClientId,
        topic: &Topic,
    ) -> Result<bool, SubscribeError> {
        let &slot = self
            .index
            .get(&id)
            .ok_or(SubscribeError::NotRegistered(id))?;
        self.subscribe_slot(id, slot, topic)
    }

    /// Subscribes `id`, in `slot`, to `topic`; `Ok(false)` if it already was.
    pub(crate) fn subscribe_slot(
        &mut self,
        id: ClientId,
        slot: usize,
        topic: &Topic,
    ) -> Result<bool, SubscribeError> {
        if self.phase(slot) != Phase::Open {
            return Err(SubscribeError::NotRegistered(id));
        }
        let limits = self.topic_limits();
        let added = self.topics.subscribe(slot, topic, limits)?;
        self.topic_gauges();
        Ok(added)
    }

    /// Unsubscribes `id` from `topic`; `false` if it was not subscribed (or not registered).
    pub(crate) fn unsubscribe(&mut self, id: ClientId, topic: &Topic) -> bool {
        match self.index.get(&id) {
            Some(&slot) => self.unsubscribe_slot(slot, topic),
            None => false,
        }
    }

    /// Unsubscribes the client in `slot` from `topic`; `false` if it was not subscribed.
    pub(crate) fn unsubscribe_slot(&mut self, slot: usize, topic: &Topic) -> bool {
        let removed = self.topics.unsubscribe(slot, topic);
        self.topic_gauges();
        removed
    }

    /// The topics of the client in `slot`, sorted by name.
    pub(crate) fn topics_of(&self, slot: usize) -> Vec<Topic> {
        self.topics.topics_of(slot)
    }

    /// Whether shard `shard` may have clients in `audience` (the engine-wide interest table).
    pub(crate) fn wants(&self, audience: &Audience, shard: usize) -> bool {
        self.topics.wants(audience, shard)
    }

    /// Subscribers of `topic` on this shard.
    pub(crate) fn subscriber_count(&self, topic: &Topic) -> usize {
        self.topics.subscriber_count(topic)
    }

    /// Publishes the topic gauges.
    fn topic_gauges(&self) {
        let counters = &*self.counters;
        counters
            .topics
            .store(self.topics.topic_count() as u64, Relaxed);
        counters
            .subscriptions
            .store(self.topics.subscription_count() as u64, Relaxed);
    }

    /// Evicts the client in `slot` by policy (a full queue, the heartbeat, auth or write
    /// deadline): closed for `reason`, and counted under it.
    fn evict(&mut self, slot: usize, reason: RemoveReason) {
        self.close(slot, reason);
    }

    /// Closes the client in `slot` for `reason`: it leaves the audience now, and its connection
    /// task flushes the close frame (if any) and releases the slot. Does nothing unless open.
    pub(crate) fn close(&mut self, slot: usize, reason: RemoveReason) {
        self.close_saying(slot, reason, None);
    }

    /// [`State::close`], with `text` as the close frame's reason (cut at a character boundary
    /// to fit a control frame) instead of the default one.
    pub(crate) fn close_saying(&mut self, slot: usize, reason: RemoveReason, text: Option<&str>) {
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        if client.phase != Phase::Open {
            return;
        }
        // What was queued before the close still goes out, then the close frame: a peer that
        // broke the protocol still receives the replies to what it sent correctly before
        // (RFC 6455 strictness, as Autobahn checks it). Only a slow consumer loses its queue,
        // because that queue is the problem; its close frame jumps ahead.
        let keep_data = reason != RemoveReason::SlowConsumer;
        let close = match reason {
            RemoveReason::ClientClosed(Some(code)) => Some(frame::encode_close(code, "")),
            RemoveReason::ClientClosed(None) => Some(frame::encode(Opcode::Close, &[])),
            RemoveReason::SlowConsumer => Some(frame::encode_close(
                close_code::SLOW_CONSUMER,
                "slow consumer",
            )),
            RemoveReason::HeartbeatTimeout => {
                Some(frame::encode_close(close_code::HEARTBEAT_TIMEOUT, "idle"))
            }
            RemoveReason::AuthDeadline => Some(frame::encode_close(
                close_code::AUTH_DEADLINE,
                "not authenticated",
            )),
            other => other
                .close_code()
                .map(|code| frame::encode_close(code, text.unwrap_or(""))),
        };
        let counters = &*self.counters;
        match reason {
            RemoveReason::SlowConsumer => bump(&counters.evicted_slow_consumer, 1),
            RemoveReason::HeartbeatTimeout => bump(&counters.evicted_heartbeat, 1),
            RemoveReason::AuthDeadline => bump(&counters.evicted_auth_deadline, 1),
            RemoveReason::WriteDeadline => bump(&counters.evicted_write_deadline, 1),
            RemoveReason::Protocol(_) => bump(&counters.protocol_errors, 1),
            RemoveReason::Removed => bump(&counters.closed_removed, 1),
            RemoveReason::ClientClosed(_) => bump(&counters.closed_by_client, 1),
            RemoveReason::Disconnected => bump(&counters.closed_disconnected, 1),
            RemoveReason::Closed(_) => bump(&counters.closed_by_handler, 1),
            RemoveReason::Shutdown => bump(&counters.closed_shutdown, 1),
        }
        if !keep_data {
            drop_by(&counters.queued_bytes, client.out.clear_unstarted() as u64);
        }
        match close {
            Some(frame) => {
                bump(&counters.queued_bytes, frame.len() as u64);
                if keep_data {
                    client.out.push(frame);
                } else {
                    client.out.push_control(frame);
                }
                client.phase = Phase::Closing;
            }
            None => client.phase = Phase::Abort,
        }
        client.wake(slot, &mut self.touched);
        client.left = Some(reason);
        self.index.remove(&client.id);
        drop_by(&counters.clients, 1);
        // A clone, not a take: hooks still running for this slot (the rest of its read) see
        // the data too. One reference count per removal.
        self.removed.push((client.id, reason, client.data.clone()));
        if client.deflate != 0 {
            self.topics.interest().deflate_left(client.deflate);
            drop_by(&counters.deflate_clients, 1);
        }
        self.topics.leave_all(slot);
        self.topic_gauges();
    }

    /// Records that `slot`'s socket refused the bytes queued for it at `now`: the write
    /// deadline runs from the first refusal until a write makes progress.
    pub(crate) fn write_blocked(&mut self, slot: usize, now: Instant) {
        if let Some(client) = self.clients.get_mut(slot) {
            client.blocked_since.get_or_insert(self.epoch.stamp(now));
        }
    }

    /// Records that `slot`'s stream flushed what it buffered (TLS records), its queue being
    /// empty: nothing of it is blocked any more.
    pub(crate) fn flushed(&mut self, slot: usize) {
        if let Some(client) = self.clients.get_mut(slot) {
            client.blocked_since = None;
        }
    }

    /// Records that `n` bytes of `slot`'s queue were written.
    pub(crate) fn wrote(&mut self, slot: usize, n: usize) {
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        client.out.advance(n);
        client.blocked_since = None;
        if client.out.is_empty() {
            client.first_queued = None;
        }
        let counters = &*self.counters;
        drop_by(&counters.queued_bytes, n as u64);
        bump(&counters.bytes_written, n as u64);
        bump(&counters.write_syscalls, 1);
    }

    /// Frees `slot` once its connection is done (its task, or the event loop, is through). A client still open left without a close
    /// frame (EOF, I/O error).
    pub(crate) fn release(&mut self, slot: usize) {
        self.close(slot, RemoveReason::Disconnected);
        if let Some(client) = self.clients.try_remove(slot) {
            drop_by(&self.counters.queued_bytes, client.out.bytes() as u64);
            if client.backlogged {
                self.backlog.retain(|&s| s != slot);
            }
        }
    }

    /// Whether the shard's publishers must pause: a client whose socket keeps draining holds
    /// more than half its queue cap. While this holds, no connection of the shard reads and
    /// the shard applies no broadcast from its queue, so the clients drain, and back-pressure
    /// reaches the publishers (through TCP for clients, through the shard queues for the
    /// engine and the other shards) instead of evicting readers that keep up. A client whose
    /// socket took nothing for [`STALLED_AFTER`] does not count: it is left to its policy.
    ///
    /// # Bounds
    ///
    /// A read, or a tick, stops once it delivered a quarter of the cap ([`State::read_spent`]),
    /// and none starts while this holds; so a client that keeps draining holds at most three
    /// quarters of its cap, and is never evicted for what others publish.
    pub(crate) fn congested(&mut self, now: Instant) -> bool {
        if self.backlog.is_empty() {
            return false;
        }
        let high = self.config.client_queue_bytes_max / 2;
        let (epoch, clients) = (self.epoch, &mut self.clients);
        self.backlog.retain(|&slot| {
            let Some(c) = clients.get_mut(slot) else {
                return false;
            };
            let stalled = c
                .blocked_since
                .is_some_and(|t| epoch.since(now, t) >= STALLED_AFTER);
            c.backlogged = c.phase == Phase::Open && c.out.charge() > high && !stalled;
            c.backlogged
        });
        !self.backlog.is_empty()
    }

    /// The queue charge one read (or one tick) may deliver before it lets the clients drain: a
    /// quarter of a client's queue cap (see [`State::congested`]).
    pub(crate) fn pass_budget(&self) -> usize {
        (self.config.client_queue_bytes_max / 4).max(1)
    }

    /// Starts counting what one read delivers.
    pub(crate) fn start_read(&mut self) {
        self.read_charge = 0;
    }

    /// Counts `payloads`, which the current read delivers, as one client's worth of charge
    /// (every client may receive all of them).
    pub(crate) fn charge_read(&mut self, payloads: &[Payload]) {
        let charge: usize = payloads
            .iter()
            .map(|p| p.len() + FRAME_OVERHEAD_BYTES)
            .sum();
        self.read_charge = self.read_charge.saturating_add(charge);
    }

    /// Whether the current read delivered its [`State::pass_budget`]: the rest of it waits for
    /// the connection's next turn, after the clients had a chance to drain.
    pub(crate) fn read_spent(&self) -> bool {
        self.read_charge >= self.pass_budget()
    }

    /// Closes every client idle past the heartbeat timeout (4002), unauthenticated past the
    /// auth deadline (4001), or whose socket accepted nothing for the write deadline; pings
    /// every client silent for the ping interval that has not been pinged since.
    ///
    /// A ping is queued as a control frame, so it leaves with whatever the client has queued,
    /// in the same write; a client that is not silent costs only the comparison.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let config = &self.config;
        let epoch = self.epoch;
        let since = |t: Stamp| epoch.since(now, t);
        let mut doomed: SmallVec<[(usize, RemoveReason); 8]> = SmallVec::new();
        let mut stuck: SmallVec<[usize; 8]> = SmallVec::new();
        let mut pinged = 0u64;
        for (slot, c) in self.clients.iter_mut() {
            // An idle client gives back the queue capacity its last burst left behind.
            c.out.shrink_if_empty();
            let blocked = c
                .blocked_since
                .is_some_and(|t| since(t) >= config.write_deadline);
            if c.phase != Phase::Open {
                if blocked && c.phase == Phase::Closing {
                    stuck.push(slot);
                }
                continue;
            }
            // A waiting client is not read, so it is neither silent nor pinged (its pong would
            // not be read either).
            let silence = match c.stage.waits() {
                false => since(c.last_seen),
                true => Duration::ZERO,
            };
            if blocked {
                doomed.push((slot, RemoveReason::WriteDeadline));
            } else if silence > config.heartbeat_timeout {
                doomed.push((slot, RemoveReason::HeartbeatTimeout));
            } else if let Some(deadline) = config.auth_deadline
                && !c.authenticated
                && since(c.registered_at) >= deadline
            {
                doomed.push((slot, RemoveReason::AuthDeadline));
            } else if let Some(interval) = config.ping_interval
                && !c.pinged
                && silence >= interval
                && c.out.control_frames() < CONTROL_FRAMES_MAX
            {
                let ping = frame::encode(Opcode::Ping, &[]);
                pinged += ping.len() as u64;
                c.out.push_control(ping);
                c.pinged = true;
                c.wake(slot, &mut self.touched);
            }
        }
        if pinged > 0 {
            bump(&self.counters.queued_bytes, pinged);
        }
        for (slot, reason) in doomed {
            self.evict(slot, reason);
        }
        for slot in stuck {
            if let Some(client) = self.clients.get_mut(slot) {
                client.phase = Phase::Abort;
                client.wake(slot, &mut self.touched);
            }
        }
    }

    /// Whether new clients are welcome (not during shutdown).
    pub(crate) fn accepting(&self) -> bool {
        !self.shutting_down
    }

    /// A connection starts (its opening task is spawned).
    pub(crate) fn connection_started(&mut self) {
        self.live += 1;
    }

    /// A connection ended (task or event loop's); true if it was the last one of a shutdown.
    pub(crate) fn connection_ended(&mut self) -> bool {
        self.live -= 1;
        self.shutting_down && self.live == 0
    }

    /// Connection tasks alive.
    pub(crate) fn connections(&self) -> usize {
        self.live
    }

    /// Wakes the connection task of `slot` with `waker` when it has something to flush.
    pub(crate) fn set_waker(&mut self, slot: usize, waker: &Waker) {
        if let Some(client) = self.clients.get_mut(slot)
            && !client.waker.as_ref().is_some_and(|w| w.will_wake(waker))
        {
            client.waker = Some(waker.clone());
        }
    }

    /// Hands the client in `slot` to the event loop, and lists it, so that what was queued
    /// before the loop took it is written.
    pub(crate) fn set_looped(&mut self, slot: usize) {
        if let Some(client) = self.clients.get_mut(slot) {
            client.looped = true;
            client.waker = None;
            client.wake(slot, &mut self.touched);
        }
    }

    /// Takes the list of looped clients touched since the last call (each once). Give it back
    /// with [`State::give_back_touched`], so that one buffer serves every tick.
    pub(crate) fn take_touched(&mut self) -> Vec<usize> {
        let slots = std::mem::take(&mut self.touched.slots);
        for &slot in &slots {
            if let Some(client) = self.clients.get_mut(slot) {
                client.listed = false;
            }
        }
        slots
    }

    /// Takes back the list [`State::take_touched`] gave, emptied, keeping what was touched
    /// meanwhile.
    pub(crate) fn give_back_touched(&mut self, mut list: Vec<usize>) {
        list.clear();
        list.append(&mut self.touched.slots);
        self.touched.slots = list;
    }

    /// Whether a looped client was touched since the last `take_touched`.
    pub(crate) fn has_touched(&self) -> bool {
        !self.touched.slots.is_empty()
    }

    /// Wakes the event loop with `waker` when a looped client is touched.
    pub(crate) fn set_loop_waker(&mut self, waker: &Waker) {
        if !self
            .touched
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            self.touched.waker = Some(waker.clone());
        }
    }

    /// The id of the client in `slot`.
    pub(crate) fn id(&self, slot: usize) -> Option<ClientId> {
        self.clients.get(slot).map(|c| c.id)
    }

    /// Starts a graceful shutdown: every open client gets its queued data, then close 1001.
    pub(crate) fn shutdown(&mut self) {
        self.shutting_down = true;
        let open: Vec<usize> = self.index.values().copied().collect();
        for slot in open {
            self.close(slot, RemoveReason::Shutdown);
        }
    }

    /// Takes the clients removed since the last call (for the handler).
    pub(crate) fn take_removed(&mut self, into: &mut Vec<Removed>) {
        into.append(&mut self.removed);
    }

    /// Time left before `slot`'s delayed flush is due, or `None` if it is due now.
    pub(crate) fn flush_delay(&self, slot: usize, now: Instant) -> Option<Duration> {
        let c = self.clients.get(slot)?;
        let co = &self.config.coalescing;
        if !co.delays() || c.phase != Phase::Open {
            return None;
        }
        if c.out.frames() >= co.frames_max || c.out.bytes() >= co.bytes_max {
            return None;
        }
        let due = self.epoch.instant(c.first_queued?) + co.delay;
        due.checked_duration_since(now).filter(|d| !d.is_zero())
    }
}

/// Counts gathered over one delivery loop and published once.
#[derive(Default)]
struct Tally {
    deliveries: u64,
    /// Of `deliveries`, those of a compressed frame.
    deflated: u64,
    /// Bytes the compressed frames of `deflated` saved against the plain ones.
    deflate_saved: u64,
    dropped: u64,
    queued: u64,
    unqueued: u64,
}

impl Tally {
    fn publish(&self, counters: &ShardCounters) {
        if self.deliveries > 0 {
            bump(&counters.deliveries, self.deliveries);
        }
        if self.deflated > 0 {
            bump(&counters.deliveries_deflated, self.deflated);
            bump(&counters.deflate_bytes_saved, self.deflate_saved);
        }
        if self.dropped > 0 {
            bump(&counters.frames_dropped, self.dropped);
        }
        if self.queued != self.unqueued {
            bump(&counters.queued_bytes, self.queued);
            drop_by(&counters.queued_bytes, self.unqueued);
        }
    }
}

/// Appends `payloads` (`total` bytes) to `client`'s queue under its byte cap and policy.
/// Returns false if the client must be evicted.
fn offer(
    config: &Config,
    (client, slot, touched, backlog): (&mut Client, usize, &mut Touched, &mut Vec<usize>),
    payloads: &[Payload],
    total: usize,
    tick: Stamp,
    tally: &mut Tally,
) -> bool {
    let cap = config.client_queue_bytes_max;
    // A client that negotiated permessage-deflate gets the compressed frames there are.
    let deflate = client.deflate;
    let total = if deflate == 0 || payloads.iter().all(|p| !p.is_deflated()) {
        total
    } else {
        payloads.iter().map(|p| p.frame_for(deflate).len()).sum()
    };
    let charge = total + payloads.len() * FRAME_OVERHEAD_BYTES;
    if client.out.charge() + charge > cap {
        match config.slow_consumer {
            SlowConsumerPolicy::Disconnect => return false,
            SlowConsumerPolicy::DropNewest => {
                tally.dropped += payloads.len() as u64;
                return true;
            }
            SlowConsumerPolicy::DropOldest => {
                if client.out.charge() - client.out.droppable_charge() + charge > cap {
                    // It would not fit even with every droppable frame gone: dropping them
                    // would lose the queue for nothing, so only this delivery is dropped.
                    tally.dropped += payloads.len() as u64;
                    return true;
                }
                let (frames, bytes) = client.out.drop_oldest(charge, cap);
                tally.dropped += frames as u64;
                tally.unqueued += bytes as u64;
            }
        }
    }
    for payload in payloads {
        let frame = payload.frame_for(deflate);
        if !Arc::ptr_eq(frame, payload.shared_frame()) {
            tally.deflated += 1;
            tally.deflate_saved += (payload.len() - frame.len()) as u64;
        }
        client.out.push(frame.clone());
    }
    tally.deliveries += payloads.len() as u64;
    tally.queued += total as u64;
    if client.first_queued.is_none() {
        client.first_queued = Some(tick);
    }
    if !client.backlogged && client.out.charge() > cap / 2 {
        client.backlogged = true;
        backlog.push(slot);
    }
    client.wake(slot, touched);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShardId;
    use crate::stats::Counters;
    use std::sync::atomic::Ordering::Relaxed;

    fn state(config: Config) -> State {
        State::new(
            Arc::new(config),
            Arc::new(ShardCounters::new(Counters::default())),
            Arc::new(super::super::Interest::new(1)),
            0,
            None,
            epoch(),
        )
    }

    /// The tests' time zero, fixed for the whole test binary.
    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn id(n: u64) -> ClientId {
        ClientId::new(n, ShardId(0))
    }

    /// Every queued frame of `slot`, in write order, as written to the wire (and accounted
    /// as written).
    fn wire(state: &mut State, slot: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(1 << 16);
        let mut out = Vec::new();
        while !state.client(slot).expect("slot").out.is_empty() {
            // Gathered as the shard_ops model gathers: one write's worth at a time.
            let n = state.gather_into(slot, &mut buf, 1 << 10, &mut out);
            state.wrote(slot, n);
        }
        out
    }

    fn removed(state: &mut State) -> Vec<(ClientId, RemoveReason)> {
        let mut v = Vec::new();
        state.take_removed(&mut v);
        v.into_iter().map(|(id, reason, _)| (id, reason)).collect()
    }

    /// A client record is memory per client, whichever driver serves it (the memory figures
    /// in docs/DRIVERS.md rest on it): keep it from growing unnoticed. The inbox's two fields
    /// (`paused`, `left`) took it from 152 to 160 bytes; folding the flags into one byte would
    /// win them back.
    #[test]
    fn a_client_record_takes_at_most_160_bytes() {
        let size = std::mem::size_of::<Client>();
        assert!(size <= 160, "Client is {size} bytes");
    }

    #[test]
    fn heartbeat_sweep_closes_only_clients_idle_past_the_timeout() {
        let mut s = state(Config::default());
        let quiet = s.admit(id(1), None, epoch());
        let chatty = s.admit(id(2), None, epoch());
        let t0 = epoch();
        s.touch(quiet, t0);
        s.touch(chatty, t0 + Duration::from_secs(15));
        s.sweep(t0 + Duration::from_secs(19));
        assert!(removed(&mut s).is_empty());
        s.sweep(t0 + Duration::from_secs(21));
        assert_eq!(
            removed(&mut s),
            vec![(id(1), RemoveReason::HeartbeatTimeout)]
        );
        // It was pinged at the first sweep that found it silent for the ping interval (10 s),
        // and never answered.
        let ping = frame::encode(Opcode::Ping, &[]);
        assert_eq!(
            wire(&mut s, quiet),
            [&ping[..], &frame::encode_close(4002, "idle")[..]].concat()
        );
        assert_eq!(s.phase(chatty), Phase::Open);
        assert_eq!(s.counters().evicted_heartbeat.load(Relaxed), 1);
    }

    #[test]
    fn a_silent_client_is_pinged_once_per_silence_and_stays_while_it_answers() {
        let mut s = state(Config::default());
        let t0 = epoch();
        let listener = s.admit(id(1), None, t0);
        let ping = frame::encode(Opcode::Ping, &[]).to_vec();
        let secs = |n: u64| t0 + Duration::from_secs(n);
        s.sweep(secs(9));
        assert_eq!(wire(&mut s, listener), b"");
        s.sweep(secs(10));
        assert_eq!(wire(&mut s, listener), ping, "silent for the ping interval");
        s.sweep(secs(15));
        assert_eq!(wire(&mut s, listener), b"", "one ping per silence");
        // Its pong (any frame) ends the silence; five heartbeat timeouts later it is still
        // open, having been pinged once per silence.
        let mut t = 12;
        s.touch(listener, secs(t));
        let mut pings = 0;
        while t < 12 + 5 * 20 {
            t += 5;
            s.sweep(secs(t));
            if wire(&mut s, listener) == ping {
                pings += 1;
                s.touch(listener, secs(t));
            }
        }
        assert_eq!(pings, 10);
        assert_eq!(s.phase(listener), Phase::Open);
        assert!(removed(&mut s).is_empty());
    }

    #[test]
    fn no_ping_interval_means_no_server_pings() {
        let config = Config {
            ping_interval: None,
            ..Config::default()
        };
        let mut s = state(config);
        let t0 = epoch();
        let quiet = s.admit(id(1), None, t0);
        s.sweep(t0 + Duration::from_secs(19));
        assert_eq!(wire(&mut s, quiet), b"");
        s.sweep(t0 + Duration::from_secs(21));
        assert_eq!(
            wire(&mut s, quiet),
            frame::encode_close(4002, "idle").to_vec()
        );
    }

    #[test]
    fn a_ping_leaves_in_the_same_write_as_queued_data() {
        let mut s = state(Config::default());
        let t0 = epoch();
        let slot = s.admit(id(1), None, t0);
        let data = Payload::text("data");
        s.deliver(std::slice::from_ref(&data), &Audience::ALL, t0);
        s.sweep(t0 + Duration::from_secs(10));
        let mut buf = Vec::with_capacity(1 << 10);
        let mut gathered = Vec::new();
        let n = s.gather_into(slot, &mut buf, 1 << 10, &mut gathered);
        let ping = frame::encode(Opcode::Ping, &[]);
        assert_eq!(gathered, [&ping[..], &data.frame()[..]].concat());
        assert_eq!(n, gathered.len());
    }

    #[test]
    fn the_queue_cap_bounds_memory_for_empty_frames() {
        for policy in [
            SlowConsumerPolicy::DropNewest,
            SlowConsumerPolicy::DropOldest,
        ] {
            let cap = 64 << 10;
            let config = Config {
                client_queue_bytes_max: cap,
                slow_consumer: policy,
                ..Config::default()
            };
            let mut s = state(config);
            let stalled = s.admit(id(1), None, epoch());
            for _ in 0..10_000 {
                s.deliver(&[Payload::binary([])], &Audience::ALL, epoch());
            }
            let dropped = s.counters().frames_dropped.load(Relaxed);
            let out = &s.client(stalled).expect("slot").out;
            // Each empty frame is 2 bytes on the wire; counted by bytes alone, 32,768 of them
            // would fit and hold some 3 MB.
            assert_eq!(out.frames(), cap / (2 + FRAME_OVERHEAD_BYTES), "{policy:?}");
            assert!(out.charge() <= cap, "{policy:?}");
            assert_eq!(dropped as usize, 10_000 - out.frames(), "{policy:?}");
        }
    }

    #[test]
    fn auth_deadline_closes_unauthenticated_clients_with_4001() {
        let config = Config {
            auth_deadline: Some(Duration::from_secs(3)),
            ..Config::default()
        };
        let mut s = state(config);
        let anon = s.admit(id(1), None, epoch());
        let known = s.admit(id(2), None, epoch());
        s.set_authenticated(id(2), Some(Principal::new("bob")));
        let t0 = epoch();
        s.touch(anon, t0 + Duration::from_secs(4));
        s.touch(known, t0 + Duration::from_secs(4));
        s.sweep(t0 + Duration::from_secs(4));
        assert_eq!(removed(&mut s), vec![(id(1), RemoveReason::AuthDeadline)]);
        assert_eq!(s.phase(known), Phase::Open);
    }

    #[test]
    fn write_deadline_aborts_a_client_whose_socket_takes_nothing() {
        let mut s = state(Config::default());
        let stuck = s.admit(id(1), None, epoch());
        let t0 = epoch();
        s.touch(stuck, t0 + Duration::from_secs(11));
        s.write_blocked(stuck, t0);
        s.sweep(t0 + Duration::from_secs(9));
        assert!(removed(&mut s).is_empty());
        s.sweep(t0 + Duration::from_secs(11));
        assert_eq!(removed(&mut s), vec![(id(1), RemoveReason::WriteDeadline)]);
        assert_eq!(s.phase(stuck), Phase::Abort);
    }

    #[test]
    fn audience_filters_by_authentication_and_exclusion() {
        let mut s = state(Config::default());
        let a = s.admit(id(1), None, epoch());
        let b = s.admit(id(2), Some(Principal::new(2u32)), epoch());
        let c = s.admit(id(3), Some(Principal::new(3u32)), epoch());
        s.deliver(&[Payload::text("all")], &Audience::ALL, epoch());
        s.deliver(
            &[Payload::text("auth")],
            &Audience::AUTHENTICATED.except(id(3)),
            epoch(),
        );
        let text = |p: &str| Payload::text(p).frame().to_vec();
        assert_eq!(wire(&mut s, a), text("all"));
        assert_eq!(wire(&mut s, b), [text("all"), text("auth")].concat());
        assert_eq!(wire(&mut s, c), text("all"));
        assert_eq!(s.counters().deliveries.load(Relaxed), 4);
    }

    #[test]
    fn full_queue_evicts_under_disconnect_and_drops_under_drop_policies() {
        let body = vec![b'x'; 600];
        let payload = Payload::binary(&body);
        for (policy, survives) in [
            (SlowConsumerPolicy::Disconnect, false),
            (SlowConsumerPolicy::DropNewest, true),
            (SlowConsumerPolicy::DropOldest, true),
        ] {
            let config = Config {
                client_queue_bytes_max: 1024,
                slow_consumer: policy,
                ..Config::default()
            };
            let mut s = state(config);
            let slot = s.admit(id(1), None, epoch());
            s.deliver(std::slice::from_ref(&payload), &Audience::ALL, epoch());
            s.deliver(std::slice::from_ref(&payload), &Audience::ALL, epoch());
            assert_eq!(s.phase(slot) == Phase::Open, survives, "{policy:?}");
            if survives {
                assert_eq!(s.counters().frames_dropped.load(Relaxed), 1, "{policy:?}");
                assert_eq!(s.client(slot).expect("slot").out.bytes(), payload.len());
            } else {
                assert_eq!(removed(&mut s), vec![(id(1), RemoveReason::SlowConsumer)]);
                assert_eq!(
                    wire(&mut s, slot),
                    frame::encode_close(4008, "slow consumer").to_vec()
                );
            }
        }
    }

    #[test]
    fn drop_oldest_keeps_the_queue_when_a_delivery_could_never_fit() {
        let config = Config {
            client_queue_bytes_max: 1024,
            slow_consumer: SlowConsumerPolicy::DropOldest,
            ..Config::default()
        };
        let mut s = state(config);
        let slot = s.admit(id(1), None, epoch());
        let small = Payload::binary(vec![1u8; 500]);
        s.deliver(std::slice::from_ref(&small), &Audience::ALL, epoch());
        s.deliver(&[Payload::binary(vec![2u8; 1100])], &Audience::ALL, epoch());
        assert_eq!(s.counters().frames_dropped.load(Relaxed), 1);
        assert_eq!(wire(&mut s, slot), small.frame().to_vec());
    }

    #[test]
    fn batch_is_delivered_whole_or_not_at_all() {
        let config = Config {
            client_queue_bytes_max: 1024,
            slow_consumer: SlowConsumerPolicy::DropNewest,
            ..Config::default()
        };
        let mut s = state(config);
        let slot = s.admit(id(1), None, epoch());
        let batch = [
            Payload::binary(vec![0u8; 400]),
            Payload::binary(vec![1u8; 400]),
        ];
        s.deliver(&batch, &Audience::ALL, epoch());
        s.deliver(&batch, &Audience::ALL, epoch());
        assert_eq!(s.client(slot).expect("slot").out.frames(), 2);
        assert_eq!(s.counters().frames_dropped.load(Relaxed), 2);
    }

    #[test]
    fn queued_bytes_gauge_returns_to_zero_when_clients_leave() {
        let mut s = state(Config::default());
        let a = s.admit(id(1), None, epoch());
        let b = s.admit(id(2), None, epoch());
        s.deliver(&[Payload::text("x")], &Audience::ALL, epoch());
        s.pong(a, b"p");
        assert!(s.counters().queued_bytes.load(Relaxed) > 0);
        assert_eq!(wire(&mut s, b), Payload::text("x").frame().to_vec());
        s.release(a);
        s.release(b);
        assert_eq!(s.counters().queued_bytes.load(Relaxed), 0);
        assert_eq!(s.counters().clients.load(Relaxed), 0);
        assert_eq!(removed(&mut s).len(), 2);
    }

    proptest::proptest! {
        /// The worker delivers consecutive broadcasts in one pass; that must be exactly what
        /// one `deliver` per broadcast does, under every policy and a tight byte cap.
        #[test]
        fn delivering_groups_in_one_pass_equals_one_deliver_per_group(
            cap in 8usize..200,
            policy in 0u8..3,
            sizes in proptest::collection::vec(proptest::collection::vec(0usize..40, 1..4), 1..12),
            authenticated_only: bool,
        ) {
            let config = Config {
                client_queue_bytes_max: cap,
                slow_consumer: match policy {
                    0 => SlowConsumerPolicy::Disconnect,
                    1 => SlowConsumerPolicy::DropNewest,
                    _ => SlowConsumerPolicy::DropOldest,
                },
                ..Config::default()
            };
            let groups: Vec<Vec<Payload>> = sizes
                .iter()
                .enumerate()
                .map(|(g, sizes)| {
                    sizes
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| Payload::binary(vec![(g * 8 + i) as u8; n]))
                        .collect()
                })
                .collect();
            let audience = if authenticated_only { Audience::AUTHENTICATED } else { Audience::ALL };
            let run = |one_pass: bool| {
                let mut s = state(config.clone());
                let slots: Vec<usize> = (1..=3).map(|n| s.admit(id(n), None, epoch())).collect();
                s.set_authenticated(id(2), Some(Principal::new("p")));
                if one_pass {
                    s.deliver_groups(&groups, &audience, epoch());
                } else {
                    for g in &groups {
                        s.deliver(g, &audience, epoch());
                    }
                }
                let wires: Vec<Vec<u8>> = slots.iter().map(|&slot| wire(&mut s, slot)).collect();
                let gone = removed(&mut s);
                let counters = s.counters();
                (
                    wires,
                    gone,
                    counters.deliveries.load(Relaxed),
                    counters.frames_dropped.load(Relaxed),
                    counters.queued_bytes.load(Relaxed),
                )
            };
            proptest::prop_assert_eq!(run(true), run(false));
        }
    }
    /// A fixed deliver-and-write workload for instruction counts (`valgrind --tool=callgrind`):
    /// 1,000 clients, 50 rounds of 16 broadcasts of 32 bytes, each client written once a round.
    #[test]
    #[ignore]
    fn callgrind_deliver_and_gather() {
        let mut s = state(Config::default());
        let slots: Vec<usize> = (1..=1000).map(|n| s.admit(id(n), None, epoch())).collect();
        let payloads: Vec<Payload> = (0..16)
            .map(|i| Payload::binary(vec![i as u8; 32]))
            .collect();
        let mut written = 0;
        for _ in 0..50 {
            for p in &payloads {
                s.deliver(std::slice::from_ref(p), &Audience::ALL, epoch());
            }
            for &slot in &slots {
                written += wire(&mut s, slot).len();
            }
        }
        assert_eq!(written, 50 * 1000 * 16 * 34);
    }
}

// After the tests so that test and fuzz helpers stay out of the way of the shard's own code.
#[cfg(any(test, fuzzing))]
#[allow(clippy::items_after_test_module)]
impl State {
    /// Since when `slot`'s socket has refused bytes that are queued.
    pub(crate) fn blocked_since(&self, slot: usize) -> Option<Instant> {
        let stamp = self.clients.get(slot)?.blocked_since?;
        Some(self.epoch.instant(stamp))
    }

    /// Appends to `wire` the bytes the next write of `slot` would hand to its socket, gathered
    /// as the connection task gathers them (through `buf`, frames up to `copy_max` copied);
    /// returns how many. Nothing is marked written: follow with [`State::wrote`].
    pub(crate) fn gather_into(
        &self,
        slot: usize,
        buf: &mut Vec<u8>,
        copy_max: usize,
        wire: &mut Vec<u8>,
    ) -> usize {
        let Some(client) = self.clients.get(slot) else {
            return 0;
        };
        let mut slices = super::outbound::IoSlices::new();
        client.out.gather(buf, copy_max, &mut slices);
        let before = wire.len();
        for slice in &slices {
            wire.extend_from_slice(slice);
        }
        wire.len() - before
    }
}
