//! The model the `shard_ops` target checks the shard `State` against, and the simulation that
//! runs both side by side on a simulated clock.
//!
//! The rules the model states are listed on `shard_ops`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::reader::Reader;
use crate::client::{Principal, RemoveReason};
use crate::config::{Config, FRAME_OVERHEAD_BYTES, SlowConsumerPolicy};
use crate::error::SubscribeError;
use crate::shard::State;
use crate::stats::{Counters, ShardCounters};
use crate::wire::frame::CONTROL_PAYLOAD_MAX;
use crate::{Audience, ClientId, Payload, ShardId, Topic};

/// Most clients admitted in one run.
const SHARD_CLIENTS_MAX: usize = 24;

/// Most pongs a client may have queued (`state::CONTROL_FRAMES_MAX`).
const PONGS_MAX: usize = 16;

/// Topics runs use, and the most one client may have.
const TOPICS: [&str; 4] = ["t0", "t1", "t2", "t3"];
const TOPICS_PER_CLIENT_MAX: usize = 3;

/// One simulated clock step.
const TICK: Duration = Duration::from_millis(125);

/// The reasons a client can be closed with directly.
const CLOSE_REASONS: [RemoveReason; 14] = [
    RemoveReason::Removed,
    RemoveReason::ClientClosed(Some(1000)),
    RemoveReason::ClientClosed(Some(4321)),
    RemoveReason::ClientClosed(None),
    RemoveReason::Disconnected,
    RemoveReason::SlowConsumer,
    RemoveReason::WriteDeadline,
    RemoveReason::HeartbeatTimeout,
    RemoveReason::AuthDeadline,
    RemoveReason::Protocol(1002),
    RemoveReason::Protocol(1007),
    RemoveReason::Protocol(1009),
    RemoveReason::Closed(4100),
    RemoveReason::Shutdown,
];

/// A client's phase, as the model sees it; named as `state::Phase`, whose `Debug` it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelPhase {
    Open,
    Closing,
    Abort,
}

/// One queued frame in the model.
#[derive(Debug)]
struct Queued {
    frame: Bytes,
    /// Pong or close frame queued ahead of data.
    control: bool,
}

/// One client in the model.
#[derive(Debug)]
struct ModelClient {
    id: ClientId,
    /// Its slab slot; `None` once released (the slot may then hold another client).
    slot: Option<usize>,
    phase: ModelPhase,
    authenticated: bool,
    /// Simulated times.
    last_seen: Duration,
    /// Whether a server ping went out since `last_seen`.
    pinged: bool,
    registered_at: Duration,
    blocked_since: Option<Duration>,
    /// Frames not completely written, in write order.
    queue: VecDeque<Queued>,
    /// Bytes of the front frame already written.
    offset: usize,
    /// Removed events produced.
    removed: usize,
    /// Its topics (indices into `TOPICS`), while open.
    topics: BTreeSet<usize>,
}

impl ModelClient {
    fn queued(&self) -> usize {
        self.queue.iter().map(|q| q.frame.len()).sum::<usize>() - self.offset
    }

    fn push_data(&mut self, frame: Bytes) {
        self.queue.push_back(Queued {
            frame,
            control: false,
        });
    }

    /// A control frame goes after the frame being written and the control frames queued
    /// before it.
    fn push_control(&mut self, frame: Bytes) {
        let mut at = usize::from(self.offset > 0);
        while self.queue.get(at).is_some_and(|q| q.control) {
            at += 1;
        }
        self.queue.insert(
            at,
            Queued {
                frame,
                control: true,
            },
        );
    }

    /// Bytes of the data frames not started (what `DropOldest` may drop).
    /// The memory the queue is charged for: its bytes plus a fixed overhead per frame.
    fn charge(&self) -> usize {
        self.queued() + self.queue.len() * FRAME_OVERHEAD_BYTES
    }

    /// The charge of the data frames not started.
    fn droppable(&self) -> usize {
        let at = usize::from(self.offset > 0);
        self.queue
            .iter()
            .skip(at)
            .filter(|q| !q.control)
            .map(|q| q.frame.len() + FRAME_OVERHEAD_BYTES)
            .sum()
    }

    /// Drops data frames not started, oldest first, while `more` bytes would take the queue
    /// over `cap` (`cap` 0: all of them). Returns how many.
    fn drop_data(&mut self, more: usize, cap: usize) -> u64 {
        let mut dropped = 0;
        let mut at = usize::from(self.offset > 0);
        while self.charge() + more > cap && at < self.queue.len() {
            if self.queue[at].control {
                at += 1;
            } else {
                self.queue.remove(at);
                dropped += 1;
            }
        }
        dropped
    }

    /// Whether `bytes` is a prefix of what is left to write.
    fn starts_with(&self, mut bytes: &[u8]) -> bool {
        let mut skip = self.offset;
        for q in &self.queue {
            let rest = &q.frame[skip..];
            skip = 0;
            let n = rest.len().min(bytes.len());
            if rest[..n] != bytes[..n] {
                return false;
            }
            bytes = &bytes[n..];
        }
        bytes.is_empty()
    }

    /// Marks `n` bytes written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.queue[0].frame.len() - self.offset;
            if n >= left {
                self.queue.pop_front();
                self.offset = 0;
                n -= left;
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }

    fn control_frames(&self) -> usize {
        self.queue.iter().filter(|q| q.control).count()
    }
}

/// A close frame with `code` and `reason`, built by hand.
fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut f = vec![0x88, (2 + reason.len()) as u8];
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason.as_bytes());
    Bytes::from(f)
}

/// An audience, as the model sees it.
#[derive(Clone, Copy, Debug)]
struct To {
    /// Only authenticated clients.
    authenticated: bool,
    /// Not this client.
    except: Option<ClientId>,
    /// Only subscribers of the topics in this mask (bit `t`: `TOPICS[t]`).
    topics: Option<u8>,
}

/// Counters the model expects.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    deliveries: u64,
    frames_dropped: u64,
    evicted_slow_consumer: u64,
    evicted_write_deadline: u64,
    evicted_heartbeat: u64,
    evicted_auth_deadline: u64,
    protocol_errors: u64,
    bytes_written: u64,
    write_syscalls: u64,
}

/// The shard state under test, the model, and the simulated clock.
pub(super) struct Sim {
    state: State,
    counters: Arc<ShardCounters>,
    cap: usize,
    policy: SlowConsumerPolicy,
    heartbeat: Duration,
    write_deadline: Duration,
    auth_deadline: Option<Duration>,
    /// Server pings to clients silent this long.
    ping_interval: Option<Duration>,
    /// Simulated time zero, and the time since it.
    t0: Instant,
    now: Duration,
    clients: Vec<ModelClient>,
    shutting_down: bool,
    /// The shard's write buffer (its capacity bounds the copied part of a write).
    buf: Vec<u8>,
    copy_max: usize,
    /// What a write gathered.
    wire: Vec<u8>,
    /// Payloads built so far (their bytes tell them apart).
    payloads: u8,
    expected: Expected,
    /// Removed events expected from the current operation.
    removed: Vec<(ClientId, RemoveReason)>,
}

impl Sim {
    pub(super) fn new(r: &mut Reader<'_>) -> Sim {
        let mode = r.u8();
        let policy = [
            SlowConsumerPolicy::Disconnect,
            SlowConsumerPolicy::DropNewest,
            SlowConsumerPolicy::DropOldest,
        ][usize::from(mode % 3)];
        let cap = 16 + 4 * usize::from(r.u8());
        let timeouts = r.u8();
        let heartbeat = 2 * TICK * (1 + u32::from(timeouts & 0x0F));
        let write_deadline = 2 * TICK * (1 + u32::from(timeouts >> 4));
        let deadlines = r.u8();
        let auth = 2 * TICK * (1 + u32::from(deadlines & 0x0F));
        let auth_deadline = (mode & 0x04 != 0).then_some(auth);
        let ping = 2 * TICK * (1 + u32::from(deadlines >> 4));
        let ping_interval = (mode & 0x08 != 0 && ping < heartbeat).then_some(ping);
        let copy_max = usize::from(r.u8());
        let buf = Vec::with_capacity(4 * usize::from(r.u8()));
        static DEFAULT: OnceLock<Config> = OnceLock::new();
        let config = Config {
            client_queue_bytes_max: cap,
            slow_consumer: policy,
            heartbeat_timeout: heartbeat,
            write_deadline,
            auth_deadline,
            ping_interval,
            copy_bytes_max: copy_max,
            topics_per_client_max: TOPICS_PER_CLIENT_MAX,
            // Built once: `Config::default` asks the OS for the number of cores.
            ..DEFAULT.get_or_init(Config::default).clone()
        };
        let counters = Arc::new(ShardCounters::new(Counters::default()));
        let t0 = Instant::now();
        let state = State::new(
            Arc::new(config),
            counters.clone(),
            Arc::new(crate::shard::Interest::new(1)),
            0,
            None,
            t0,
        );
        Sim {
            state,
            counters,
            cap,
            policy,
            heartbeat,
            write_deadline,
            auth_deadline,
            ping_interval,
            t0,
            now: Duration::ZERO,
            clients: Vec::new(),
            shutting_down: false,
            buf,
            copy_max,
            wire: Vec::new(),
            payloads: 0,
            expected: Expected::default(),
            removed: Vec::new(),
        }
    }

    fn instant(&self, at: Duration) -> Instant {
        self.t0 + at
    }

    /// A client picked by the input, admitted or not yet released alike.
    fn pick(&self, r: &mut Reader<'_>) -> Option<usize> {
        let b = usize::from(r.u8());
        (!self.clients.is_empty()).then(|| b % self.clients.len())
    }

    /// Indices of unreleased clients, in slot order (the shard's iteration order).
    fn by_slot(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].slot.is_some())
            .collect();
        v.sort_by_key(|&i| self.clients[i].slot);
        v
    }

    /// A new payload (text or binary), its bytes unlike the previous ones'.
    fn payload(&mut self, r: &mut Reader<'_>) -> Payload {
        let b = r.u8();
        let len = if b & 0x80 != 0 {
            usize::from(b & 0x7F) * 8
        } else {
            usize::from(b)
        };
        self.payloads = self.payloads.wrapping_add(1);
        let fill = b'a' + self.payloads % 26;
        let body = vec![fill; len];
        if self.payloads.is_multiple_of(2) {
            Payload::binary(body)
        } else {
            Payload::text(String::from_utf8(body).unwrap_or_default())
        }
    }

    pub(super) fn step(&mut self, r: &mut Reader<'_>) {
        let op = r.u8() % 16;
        match op {
            0 => {
                let authenticated = r.u8() & 1 != 0;
                self.admit(authenticated);
            }
            1 => {
                let reason = CLOSE_REASONS[usize::from(r.u8()) % CLOSE_REASONS.len()];
                if let Some(i) = self.pick(r) {
                    self.close_op(i, reason);
                }
            }
            2 => {
                let on = r.u8() & 1 != 0;
                if let Some(i) = self.pick(r) {
                    let id = self.clients[i].id;
                    let principal = on.then(|| Principal::new(id.as_u64()));
                    self.state.set_authenticated(id, principal);
                    if self.clients[i].phase == ModelPhase::Open {
                        self.clients[i].authenticated = on;
                    }
                }
            }
            3 => {
                let audience = self.audience(r);
                let payloads = self.batch(r);
                self.deliver(&payloads, audience);
            }
            5 => {
                // Consecutive broadcasts to one audience, as the worker delivers them: in one
                // pass, each group offered on its own.
                let audience = self.audience(r);
                let groups: Vec<Vec<Payload>> =
                    (0..2 + r.u8() % 3).map(|_| self.batch(r)).collect();
                self.deliver_groups(&groups, audience);
            }
            4 => {
                let payload = self.payload(r);
                let id = match self.pick(r) {
                    Some(i) => self.clients[i].id,
                    None => ClientId::new(999, ShardId(0)),
                };
                self.send(id, payload);
            }
            6 => {
                let b = r.u8();
                let k = if b & 0x80 != 0 {
                    usize::from(b & 0x7F) * 32 + 1
                } else {
                    usize::from(b) + 1
                };
                if let Some(i) = self.pick(r) {
                    self.write(i, k);
                }
            }
            7 => {
                if let Some(i) = self.pick(r) {
                    self.stall(i);
                }
            }
            8 => {
                self.now += TICK * u32::from(r.u8() % 32);
            }
            9 => self.sweep(),
            10 => {
                if let Some(i) = self.pick(r) {
                    self.release(i);
                }
            }
            11 => {
                if let Some(i) = self.pick(r) {
                    self.inbound(i, None);
                }
            }
            12 => {
                let len = usize::from(r.u8()) % (CONTROL_PAYLOAD_MAX + 1);
                let ping = r.bytes(len);
                if let Some(i) = self.pick(r) {
                    self.inbound(i, Some(ping));
                }
            }
            14 | 15 => {
                let topic = usize::from(r.u8()) % TOPICS.len();
                let id = match self.pick(r) {
                    Some(i) => self.clients[i].id,
                    None => ClientId::new(999, ShardId(0)),
                };
                self.subscription(id, topic, op == 14);
            }
            _ => {
                self.state.shutdown();
                self.shutting_down = true;
                for i in 0..self.clients.len() {
                    self.close(i, RemoveReason::Shutdown);
                }
            }
        }
    }

    fn admit(&mut self, authenticated: bool) {
        if self.clients.len() >= SHARD_CLIENTS_MAX {
            return;
        }
        let seq = self.clients.len() as u64 + 1;
        let id = ClientId::new(seq, ShardId(0));
        let principal = authenticated.then(|| Principal::new(seq));
        let slot = self.state.admit(id, principal, self.instant(self.now));
        assert!(
            self.clients.iter().all(|c| c.slot != Some(slot)),
            "slot {slot} handed out twice"
        );
        self.clients.push(ModelClient {
            id,
            slot: Some(slot),
            phase: ModelPhase::Open,
            authenticated,
            last_seen: self.now,
            pinged: false,
            registered_at: self.now,
            blocked_since: None,
            queue: VecDeque::new(),
            offset: 0,
            removed: 0,
            topics: BTreeSet::new(),
        });
        if self.shutting_down {
            self.close(self.clients.len() - 1, RemoveReason::Shutdown);
        }
    }

    /// Closes client `i` through the shard's API, for `reason`.
    fn close_op(&mut self, i: usize, reason: RemoveReason) {
        let c = &self.clients[i];
        if reason == RemoveReason::Removed {
            // The embedder's path: by id, answered with what was known.
            let info = self.state.remove(c.id, self.instant(self.now));
            assert_eq!(info.is_some(), c.phase == ModelPhase::Open);
            if let Some(info) = info {
                assert_eq!((info.id, info.authenticated), (c.id, c.authenticated));
                assert_eq!(info.queued_bytes, c.queued());
            }
        } else if let Some(slot) = c.slot {
            self.state.close(slot, reason);
        } else {
            return;
        }
        self.close(i, reason);
    }

    /// The model of `State::close`.
    fn close(&mut self, i: usize, reason: RemoveReason) {
        let c = &mut self.clients[i];
        if c.phase != ModelPhase::Open {
            return;
        }
        let e = &mut self.expected;
        let frame = match reason {
            RemoveReason::Removed => Some(close_frame(1000, "")),
            RemoveReason::ClientClosed(Some(code)) => Some(close_frame(code, "")),
            RemoveReason::ClientClosed(None) => Some(Bytes::from_static(&[0x88, 0x00])),
            RemoveReason::Disconnected => None,
            RemoveReason::SlowConsumer => {
                e.evicted_slow_consumer += 1;
                Some(close_frame(4008, "slow consumer"))
            }
            RemoveReason::WriteDeadline => {
                e.evicted_write_deadline += 1;
                None
            }
            RemoveReason::HeartbeatTimeout => {
                e.evicted_heartbeat += 1;
                Some(close_frame(4002, "idle"))
            }
            RemoveReason::AuthDeadline => {
                e.evicted_auth_deadline += 1;
                Some(close_frame(4001, "not authenticated"))
            }
            RemoveReason::Protocol(code) => {
                e.protocol_errors += 1;
                Some(close_frame(code, ""))
            }
            RemoveReason::Closed(code) => Some(close_frame(code, "")),
            RemoveReason::Shutdown => Some(close_frame(1001, "")),
        };
        c.phase = match frame {
            // Only a slow consumer loses its queue (what was not started), and its close
            // jumps ahead.
            Some(frame) if reason == RemoveReason::SlowConsumer => {
                c.drop_data(0, 0);
                c.push_control(frame);
                ModelPhase::Closing
            }
            Some(frame) => {
                c.push_data(frame);
                ModelPhase::Closing
            }
            None => ModelPhase::Abort,
        };
        c.removed += 1;
        c.topics.clear();
        self.removed.push((c.id, reason));
    }

    /// Subscribes (`on`) or unsubscribes `id` to topic `t`, through the shard's API by id, and
    /// checks its answer against the model's.
    fn subscription(&mut self, id: ClientId, t: usize, on: bool) {
        let topic = Topic::new(TOPICS[t]);
        let open = self
            .clients
            .iter()
            .position(|c| c.id == id && c.phase == ModelPhase::Open);
        if on {
            let got = self.state.subscribe(id, &topic);
            let expected = match open {
                None => Err(SubscribeError::NotRegistered(id)),
                Some(i) if self.clients[i].topics.contains(&t) => Ok(false),
                Some(i) if self.clients[i].topics.len() >= TOPICS_PER_CLIENT_MAX => {
                    Err(SubscribeError::TooManyTopics {
                        max: TOPICS_PER_CLIENT_MAX,
                    })
                }
                Some(i) => Ok(self.clients[i].topics.insert(t)),
            };
            assert_eq!(got, expected, "subscribe {id} to {topic}");
        } else {
            let got = self.state.unsubscribe(id, &topic);
            let expected = open.is_some_and(|i| self.clients[i].topics.remove(&t));
            assert_eq!(got, expected, "unsubscribe {id} from {topic}");
        }
    }

    /// The audience picked by the input.
    fn audience(&mut self, r: &mut Reader<'_>) -> To {
        let kind = r.u8();
        let except = (kind & 0x02 != 0).then(|| match self.pick(r) {
            Some(i) if kind & 0x04 == 0 => self.clients[i].id,
            _ => ClientId::new(999, ShardId(0)),
        });
        To {
            authenticated: kind & 0x01 != 0,
            except,
            // Bit `t`: topic `t`; 0 is an audience of nobody.
            topics: (kind & 0x08 != 0).then_some((kind >> 4) & 0x0F),
        }
    }

    /// One broadcast's frames: one, or a batch of 2 to 4.
    fn batch(&mut self, r: &mut Reader<'_>) -> Vec<Payload> {
        let batch = if r.u8() & 1 != 0 { 2 + r.u8() % 3 } else { 1 };
        (0..batch).map(|_| self.payload(r)).collect()
    }

    fn deliver(&mut self, payloads: &[Payload], audience: To) {
        let now = self.instant(self.now);
        self.state
            .deliver(payloads, &Self::to_audience(audience), now);
        self.expect_deliver(payloads, audience);
    }

    fn deliver_groups(&mut self, groups: &[Vec<Payload>], audience: To) {
        let now = self.instant(self.now);
        self.state
            .deliver_groups(groups, &Self::to_audience(audience), now);
        for payloads in groups {
            self.expect_deliver(payloads, audience);
        }
    }

    fn to_audience(to: To) -> Audience {
        let mut audience = match to.topics {
            None => Audience::ALL,
            Some(mask) => Audience::topics(
                (0..TOPICS.len())
                    .filter(|t| mask & (1 << t) != 0)
                    .map(|t| TOPICS[t]),
            ),
        };
        if to.authenticated {
            audience = audience.authenticated();
        }
        if let Some(id) = to.except {
            audience = audience.except(id);
        }
        audience
    }

    /// The model of delivering `payloads` to the audience.
    fn expect_deliver(&mut self, payloads: &[Payload], to: To) {
        let mut evict = Vec::new();
        for i in self.by_slot() {
            let c = &self.clients[i];
            let subscribed = to
                .topics
                .is_none_or(|mask| c.topics.iter().any(|&t| mask & (1 << t) != 0));
            let admitted =
                (c.authenticated || !to.authenticated) && to.except != Some(c.id) && subscribed;
            if c.phase == ModelPhase::Open && admitted && !self.offer(i, payloads) {
                evict.push(i);
            }
        }
        for i in evict {
            self.close(i, RemoveReason::SlowConsumer);
        }
    }

    fn send(&mut self, id: ClientId, payload: Payload) {
        self.state.send(id, &payload, self.instant(self.now));
        let open = self
            .clients
            .iter()
            .position(|c| c.id == id && c.phase == ModelPhase::Open);
        if let Some(i) = open
            && !self.offer(i, std::slice::from_ref(&payload))
        {
            self.close(i, RemoveReason::SlowConsumer);
        }
    }

    /// The model of queueing `payloads` for client `i`; false: evict it.
    fn offer(&mut self, i: usize, payloads: &[Payload]) -> bool {
        let total: usize = payloads.iter().map(Payload::len).sum();
        let n = payloads.len() as u64;
        let charge = total + payloads.len() * FRAME_OVERHEAD_BYTES;
        let c = &mut self.clients[i];
        if c.charge() + charge > self.cap {
            match self.policy {
                SlowConsumerPolicy::Disconnect => return false,
                SlowConsumerPolicy::DropNewest => {
                    self.expected.frames_dropped += n;
                    return true;
                }
                SlowConsumerPolicy::DropOldest => {
                    if c.charge() - c.droppable() + charge > self.cap {
                        // It would not fit even in an emptied queue: only it is dropped.
                        self.expected.frames_dropped += n;
                        return true;
                    }
                    self.expected.frames_dropped += c.drop_data(charge, self.cap);
                }
            }
        }
        for p in payloads {
            c.push_data(p.frame().clone());
        }
        self.expected.deliveries += n;
        true
    }

    /// Writes at most `k` bytes of client `i`'s queue, as its connection task would.
    fn write(&mut self, i: usize, k: usize) {
        let c = &mut self.clients[i];
        let Some(slot) = c.slot else { return };
        if c.phase == ModelPhase::Abort {
            // The connection task drops an aborted client without writing.
            return;
        }
        self.wire.clear();
        let gathered = self
            .state
            .gather_into(slot, &mut self.buf, self.copy_max, &mut self.wire);
        if c.queued() == 0 {
            assert_eq!(gathered, 0, "gathered bytes from an empty queue");
            return;
        }
        assert!(
            gathered > 0,
            "nothing gathered from a queue of {}",
            c.queued()
        );
        assert!(
            c.starts_with(&self.wire),
            "client {i} would be written {:?}, expected {:?}",
            self.wire,
            c.queue
        );
        let n = k.min(gathered);
        self.state.wrote(slot, n);
        c.advance(n);
        c.blocked_since = None;
        self.expected.bytes_written += n as u64;
        self.expected.write_syscalls += 1;
    }

    /// Client `i`'s socket takes nothing: its connection task marks it blocked.
    fn stall(&mut self, i: usize) {
        let now = self.instant(self.now);
        let c = &mut self.clients[i];
        let Some(slot) = c.slot else { return };
        if c.phase == ModelPhase::Abort || c.queued() == 0 {
            return;
        }
        self.state.write_blocked(slot, now);
        c.blocked_since.get_or_insert(self.now);
    }

    /// A frame arrives from client `i` (a ping, if `ping`), as its connection task handles it.
    fn inbound(&mut self, i: usize, ping: Option<&[u8]>) {
        let now = self.instant(self.now);
        let c = &mut self.clients[i];
        let Some(slot) = c.slot else { return };
        if c.phase != ModelPhase::Open {
            return;
        }
        self.state.touch(slot, now);
        c.last_seen = self.now;
        c.pinged = false;
        if let Some(ping) = ping {
            self.state.pong(slot, ping);
            if c.control_frames() < PONGS_MAX {
                let mut pong = vec![0x8A, ping.len() as u8];
                pong.extend_from_slice(ping);
                c.push_control(Bytes::from(pong));
            }
        }
    }

    fn sweep(&mut self) {
        self.state.sweep(self.instant(self.now));
        let now = self.now;
        let mut doomed = Vec::new();
        for i in self.by_slot() {
            let c = &mut self.clients[i];
            let blocked = c
                .blocked_since
                .is_some_and(|t| now - t >= self.write_deadline);
            match c.phase {
                ModelPhase::Open if blocked => doomed.push((i, RemoveReason::WriteDeadline)),
                ModelPhase::Open if now - c.last_seen > self.heartbeat => {
                    doomed.push((i, RemoveReason::HeartbeatTimeout));
                }
                ModelPhase::Open
                    if !c.authenticated
                        && self
                            .auth_deadline
                            .is_some_and(|d| now - c.registered_at >= d) =>
                {
                    doomed.push((i, RemoveReason::AuthDeadline));
                }
                ModelPhase::Open
                    if !c.pinged
                        && c.control_frames() < PONGS_MAX
                        && self.ping_interval.is_some_and(|p| now - c.last_seen >= p) =>
                {
                    c.push_control(Bytes::from_static(&[0x89, 0x00]));
                    c.pinged = true;
                }
                ModelPhase::Closing if blocked => c.phase = ModelPhase::Abort,
                _ => {}
            }
        }
        for (i, reason) in doomed {
            self.close(i, reason);
        }
    }

    fn release(&mut self, i: usize) {
        let Some(slot) = self.clients[i].slot else {
            return;
        };
        self.state.release(slot);
        self.close(i, RemoveReason::Disconnected);
        self.clients[i].slot = None;
    }

    /// Compares the state with the model.
    pub(super) fn check(&mut self) {
        let mut open = 0;
        let mut queued = 0;
        for c in &self.clients {
            open += u64::from(c.phase == ModelPhase::Open);
            let Some(slot) = c.slot else { continue };
            queued += c.queued() as u64;
            let blocked = c.blocked_since.map(|t| self.t0 + t);
            let client = self
                .state
                .client(slot)
                .expect("an unreleased client's slot");
            assert_eq!(
                format!("{:?}", client.phase),
                format!("{:?}", c.phase),
                "phase of {c:?}"
            );
            assert_eq!(client.out.bytes(), c.queued(), "queue of {c:?}");
            assert_eq!(client.out.frames(), c.queue.len(), "frames of {c:?}");
            assert_eq!(
                self.state.blocked_since(slot),
                blocked,
                "blocked time of {c:?}"
            );
            let topics: Vec<Topic> = c.topics.iter().map(|&t| Topic::new(TOPICS[t])).collect();
            assert_eq!(self.state.topics_of(slot), topics, "topics of {c:?}");
        }
        let subscriptions: usize = self.clients.iter().map(|c| c.topics.len()).sum();
        let topics: BTreeSet<usize> = self.clients.iter().flat_map(|c| c.topics.clone()).collect();
        let counters = &*self.counters;
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        assert_eq!(
            load(&counters.subscriptions),
            subscriptions as u64,
            "subscriptions gauge"
        );
        assert_eq!(load(&counters.topics), topics.len() as u64, "topics gauge");
        assert_eq!(load(&counters.clients), open, "clients gauge");
        assert_eq!(load(&counters.queued_bytes), queued, "queued_bytes gauge");
        let actual = Expected {
            deliveries: load(&counters.deliveries),
            frames_dropped: load(&counters.frames_dropped),
            evicted_slow_consumer: load(&counters.evicted_slow_consumer),
            evicted_write_deadline: load(&counters.evicted_write_deadline),
            evicted_heartbeat: load(&counters.evicted_heartbeat),
            evicted_auth_deadline: load(&counters.evicted_auth_deadline),
            protocol_errors: load(&counters.protocol_errors),
            bytes_written: load(&counters.bytes_written),
            write_syscalls: load(&counters.write_syscalls),
        };
        assert_eq!(actual, self.expected, "counters");
        let mut taken = Vec::new();
        self.state.take_removed(&mut taken);
        let mut removed: Vec<_> = taken.into_iter().map(|(id, r, _)| (id, r)).collect();
        removed.sort_by_key(|&(id, _)| id);
        self.removed.sort_by_key(|&(id, _)| id);
        assert_eq!(removed, self.removed, "removed events");
        self.removed.clear();
    }

    /// Drains every queue that can still be written, releases everyone, checks the totals.
    pub(super) fn finish(&mut self) {
        for i in 0..self.clients.len() {
            while self.clients[i].slot.is_some()
                && self.clients[i].phase != ModelPhase::Abort
                && self.clients[i].queued() > 0
            {
                self.write(i, usize::MAX);
            }
        }
        self.check();
        for i in 0..self.clients.len() {
            self.release(i);
        }
        self.check();
        assert_eq!(self.counters.clients.load(Relaxed), 0);
        assert_eq!(self.counters.queued_bytes.load(Relaxed), 0);
        for c in &self.clients {
            assert_eq!(c.removed, 1, "removed events of {:?}", c.id);
        }
    }
}
