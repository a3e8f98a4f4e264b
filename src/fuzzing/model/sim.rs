//! The simulation: the core under test, the model beside it, the simulated clock, and the
//! operations the input picks (the shard's commands and the queues' rules here; what a
//! driver does with a connection in `lifecycle`).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::reader::Reader;
use super::client::{Expect, ModelClient, ModelPhase, ModelStage, close_frame};
use super::world::{Kind, Sent, SimHandler, SimPost, masked};
use crate::client::{Principal, RemoveReason};
use crate::config::{Config, FRAME_OVERHEAD_BYTES, SlowConsumerPolicy};
use crate::error::SubscribeError;
use crate::inbox::Event;
use crate::shard::{Admission, Core, Held, Inlet, Interest, Next, Post, Reading, State};
use crate::stats::{Counters, ShardCounters};
use crate::wire::frame::CONTROL_PAYLOAD_MAX;
use crate::wire::{Limits, Parser};
use crate::{Audience, ClientId, Payload, ShardId, Topic};

/// Most clients admitted in one run.
pub(super) const SHARD_CLIENTS_MAX: usize = 24;

/// Most pongs a client may have queued (`state::CONTROL_FRAMES_MAX`).
pub(super) const PONGS_MAX: usize = 16;

/// Topics runs use, and the most one client may have.
pub(super) const TOPICS: [&str; 4] = ["t0", "t1", "t2", "t3"];
pub(super) const TOPICS_PER_CLIENT_MAX: usize = 3;

/// How long a client whose socket takes nothing may keep the shard congested.
pub(super) const STALLED_AFTER: Duration = Duration::from_millis(500);

/// One simulated clock step.
pub(super) const TICK: Duration = Duration::from_millis(125);

/// The reasons a client can be closed with directly.
pub(super) const CLOSE_REASONS: [RemoveReason; 14] = [
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

/// An audience, as the model sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct To {
    /// Only authenticated clients.
    pub(super) authenticated: bool,
    /// Not this client.
    pub(super) except: Option<ClientId>,
    /// Only subscribers of the topics in this mask (bit `t`: `TOPICS[t]`).
    pub(super) topics: Option<u8>,
}

impl To {
    /// Every client.
    pub(super) const ALL: To = To {
        authenticated: false,
        except: None,
        topics: None,
    };
}

/// Counters the model expects.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Expected {
    pub(super) deliveries: u64,
    pub(super) frames_dropped: u64,
    pub(super) evicted_slow_consumer: u64,
    pub(super) evicted_write_deadline: u64,
    pub(super) evicted_heartbeat: u64,
    pub(super) evicted_auth_deadline: u64,
    pub(super) protocol_errors: u64,
    pub(super) bytes_written: u64,
    pub(super) write_syscalls: u64,
    pub(super) inbox_events: u64,
    pub(super) inbox_lost: u64,
}

/// The shard's connection core under test, the model, and the simulated clock.
pub(crate) struct Sim {
    /// The core; `None` once the shard stopped (`finish` by dropping it).
    pub(super) core: Option<Core>,
    pub(super) counters: Arc<ShardCounters>,
    pub(super) admission: Arc<Admission>,
    pub(super) cap: usize,
    pub(super) policy: SlowConsumerPolicy,
    pub(super) heartbeat: Duration,
    pub(super) write_deadline: Duration,
    pub(super) auth_deadline: Option<Duration>,
    /// Server pings to clients silent this long.
    pub(super) ping_interval: Option<Duration>,
    /// Simulated time zero, and the time since it.
    pub(super) t0: Instant,
    pub(super) now: Duration,
    pub(super) clients: Vec<ModelClient>,
    pub(super) shutting_down: bool,
    /// The shard's write buffer (its capacity bounds the copied part of a write).
    pub(super) buf: Vec<u8>,
    pub(super) copy_max: usize,
    /// What a write gathered.
    pub(super) wire: Vec<u8>,
    /// Payloads built so far (their bytes tell them apart).
    pub(super) payloads: u8,
    pub(super) expected: Expected,
    /// Removed events expected from the operations since the last check.
    pub(super) removed: Vec<(ClientId, RemoveReason)>,
    /// What the handler's `on_removed` saw.
    pub(super) told: Arc<Mutex<Vec<(ClientId, RemoveReason)>>>,
    /// The inbox's consumer side, if the engine has an inbox, and its capacity.
    pub(super) inbox: Option<mpsc::Receiver<Event>>,
    pub(super) inbox_capacity: usize,
    /// Events in the inbox queue.
    pub(super) inbox_len: usize,
    /// `Removed` events that found the inbox full, queued apart by the driver.
    pub(super) apart: Vec<Held>,
    /// Whether the other shards' queues are full (the core's posts are kept).
    pub(super) full: bool,
    /// Whether the run ends with the shard stopping (dropping its connections) rather than
    /// every connection ending.
    pub(super) stop_at_end: bool,
}

impl Sim {
    pub(crate) fn new(r: &mut Reader<'_>) -> Sim {
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
        // Bit 4: an inbox, of 1 to 4 events (bits 5-6); bit 7: the shard stops at the end.
        let with_inbox = mode & 0x10 != 0;
        let inbox_capacity = 1 + usize::from((mode >> 5) & 0x03);
        let stop_at_end = mode & 0x80 != 0;
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
        let admission = Arc::new(Admission::new(SHARD_CLIENTS_MAX));
        let t0 = Instant::now();
        let state = State::new(
            Arc::new(config),
            counters.clone(),
            // Two shards: what a handler broadcasts is relayed to the other one.
            Arc::new(Interest::new(2)),
            0,
            None,
            t0,
        );
        let (inlet, inbox) = match with_inbox {
            true => {
                let (tx, rx) = mpsc::channel(inbox_capacity);
                (Some(Inlet::new(tx, counters.clone())), Some(rx))
            }
            false => (None, None),
        };
        let told = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(SimHandler {
            removed: told.clone(),
        });
        let core = Core::new(state, handler, inlet, 2, admission.clone(), ShardId(0));
        Sim {
            core: Some(core),
            counters,
            admission,
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
            told,
            inbox,
            inbox_capacity,
            inbox_len: 0,
            apart: Vec::new(),
            full: false,
            stop_at_end,
        }
    }

    pub(super) fn core(&mut self) -> &mut Core {
        self.core.as_mut().expect("the shard runs")
    }

    pub(super) fn state(&self) -> &State {
        self.core.as_ref().expect("the shard runs").state()
    }

    pub(super) fn state_mut(&mut self) -> &mut State {
        self.core().state_mut()
    }

    pub(super) fn instant(&self, at: Duration) -> Instant {
        self.t0 + at
    }

    /// A post into the other shards, as they are now.
    pub(super) fn post(&self) -> SimPost {
        SimPost {
            full: self.full,
            kept: false,
        }
    }

    /// A client picked by the input, admitted or ended alike.
    pub(super) fn pick(&self, r: &mut Reader<'_>) -> Option<usize> {
        let b = usize::from(r.u8());
        (!self.clients.is_empty()).then(|| b % self.clients.len())
    }

    /// Indices of clients whose connection has not ended, in slot order (the shard's
    /// iteration order).
    pub(super) fn by_slot(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].slot.is_some())
            .collect();
        v.sort_by_key(|&i| self.clients[i].slot);
        v
    }

    /// A new payload (text or binary), its bytes unlike the previous ones'.
    pub(super) fn payload(&mut self, r: &mut Reader<'_>) -> Payload {
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

    pub(crate) fn step(&mut self, r: &mut Reader<'_>) {
        let op = r.u8() % 21;
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
                    self.state_mut().set_authenticated(id, principal);
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
            4 => {
                let payload = self.payload(r);
                let id = match self.pick(r) {
                    Some(i) => self.clients[i].id,
                    None => ClientId::new(999, ShardId(0)),
                };
                self.send(id, payload);
            }
            5 => {
                // Consecutive broadcasts to one audience, as the worker delivers them: in one
                // pass, each group offered on its own.
                let audience = self.audience(r);
                let groups: Vec<Vec<Payload>> =
                    (0..2 + r.u8() % 3).map(|_| self.batch(r)).collect();
                self.deliver_groups(&groups, audience);
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
                    self.end(i);
                }
            }
            11 | 12 | 20 => {
                let frames = self.frames(r);
                if let Some(i) = self.pick(r) {
                    self.read(i, frames);
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
            16 => {
                let n = usize::from(r.u8() % 4) + 1;
                self.consume(n);
            }
            17 => {
                if let Some(i) = self.pick(r) {
                    self.room(i);
                }
            }
            18 => self.full = !self.full,
            19 => self.queue_apart(),
            _ => {
                self.state_mut().shutdown();
                self.shutting_down = true;
                for i in 0..self.clients.len() {
                    self.close(i, RemoveReason::Shutdown);
                }
            }
        }
    }

    /// One to three client frames picked by the input.
    pub(super) fn frames(&mut self, r: &mut Reader<'_>) -> Vec<Sent> {
        let n = 1 + r.u8() % 3;
        (0..n)
            .map(|_| {
                let kind = r.u8();
                let len = usize::from(r.u8() % 8);
                self.payloads = self.payloads.wrapping_add(1);
                let fill = char::from(b'a' + self.payloads % 26);
                let body: String = std::iter::repeat_n(fill, len).collect();
                let text = |first: char| Kind::Text(format!("{first}{body}"));
                let kind = match kind % 9 {
                    0 | 1 => text('b'),
                    2 => text('i'),
                    3 => text('x'),
                    4 => text('!'),
                    5 => text('n'),
                    6 => Kind::Ping(body.clone().into_bytes()),
                    7 => match kind >> 4 {
                        0 => Kind::Pong,
                        1 => Kind::Close(None),
                        2 => Kind::Bad,
                        c => Kind::Close(Some(3990 + u16::from(c))),
                    },
                    _ => Kind::Close(Some(1000)),
                };
                let bytes = match &kind {
                    Kind::Text(t) => masked(0x1, t.as_bytes()),
                    Kind::Ping(p) => masked(0x9, &p[..p.len().min(CONTROL_PAYLOAD_MAX)]),
                    Kind::Pong => masked(0xA, b""),
                    Kind::Close(None) => masked(0x8, b""),
                    Kind::Close(Some(code)) => masked(0x8, &code.to_be_bytes()),
                    Kind::Bad => vec![0x81, 0x01, b'u'],
                };
                Sent { bytes, kind }
            })
            .collect()
    }

    pub(super) fn admit(&mut self, authenticated: bool) {
        if self.clients.len() >= SHARD_CLIENTS_MAX {
            return;
        }
        let Some(seq) = self.admission.admit() else {
            return;
        };
        let id = ClientId::new(seq, ShardId(0));
        let principal = authenticated.then(|| Principal::new(seq));
        let now = self.instant(self.now);
        self.core().handle_opening();
        let slot = self.state_mut().admit(id, principal, now);
        assert!(
            self.clients.iter().all(|c| c.slot != Some(slot)),
            "slot {slot} handed out twice"
        );
        self.clients.push(ModelClient {
            id,
            slot: Some(slot),
            phase: ModelPhase::Open,
            stage: ModelStage::Serving,
            authenticated,
            last_seen: self.now,
            pinged: false,
            registered_at: self.now,
            blocked_since: None,
            queue: VecDeque::new(),
            offset: 0,
            left: None,
            removed: 0,
            topics: BTreeSet::new(),
            announced: false,
            backlogged: false,
            expected: VecDeque::new(),
            parser: Parser::new(Limits::default()),
            pending: Vec::new(),
            wait: None,
        });
        let i = self.clients.len() - 1;
        if self.shutting_down {
            self.close(i, RemoveReason::Shutdown);
        }
        // The driver tells the core the client is registered: the inbox hears of it first.
        let mut post = self.post();
        let held = self.core().handle_registered(slot, now, &mut post);
        let queued = self.offer(i, Expect::Registered);
        if self.inbox.is_some() {
            self.clients[i].announced = true;
        }
        assert_eq!(held.is_some(), queued == Some(false), "Registered held");
        self.began_waiting(i, post.waits(), held);
    }

    /// Closes client `i` through the shard's API, for `reason`.
    pub(super) fn close_op(&mut self, i: usize, reason: RemoveReason) {
        let now = self.instant(self.now);
        let (id, slot, phase, authenticated, queued) = {
            let c = &self.clients[i];
            (c.id, c.slot, c.phase, c.authenticated, c.queued())
        };
        if reason == RemoveReason::Removed {
            // The embedder's path: by id, answered with what was known.
            let info = self.state_mut().remove(id, now);
            assert_eq!(info.is_some(), phase == ModelPhase::Open);
            if let Some(info) = info {
                assert_eq!((info.id, info.authenticated), (id, authenticated));
                assert_eq!(info.queued_bytes, queued);
            }
        } else if let Some(slot) = slot {
            self.state_mut().close(slot, reason);
        } else {
            return;
        }
        self.close(i, reason);
    }

    /// The model of `State::close`.
    pub(super) fn close(&mut self, i: usize, reason: RemoveReason) {
        self.close_saying(i, reason, "");
    }

    /// The model of `State::close_saying`.
    pub(super) fn close_saying(&mut self, i: usize, reason: RemoveReason, text: &str) {
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
            RemoveReason::Closed(code) => Some(close_frame(code, text)),
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
        c.left = Some(reason);
        c.removed += 1;
        c.topics.clear();
        self.removed.push((c.id, reason));
    }

    /// Subscribes (`on`) or unsubscribes `id` to topic `t`, through the shard's API by id, and
    /// checks its answer against the model's.
    pub(super) fn subscription(&mut self, id: ClientId, t: usize, on: bool) {
        let topic = Topic::new(TOPICS[t]);
        let open = self
            .clients
            .iter()
            .position(|c| c.id == id && c.phase == ModelPhase::Open);
        if on {
            let got = self.state_mut().subscribe(id, &topic);
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
            let got = self.state_mut().unsubscribe(id, &topic);
            let expected = open.is_some_and(|i| self.clients[i].topics.remove(&t));
            assert_eq!(got, expected, "unsubscribe {id} from {topic}");
        }
    }

    /// The audience picked by the input.
    pub(super) fn audience(&mut self, r: &mut Reader<'_>) -> To {
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
    pub(super) fn batch(&mut self, r: &mut Reader<'_>) -> Vec<Payload> {
        let batch = if r.u8() & 1 != 0 { 2 + r.u8() % 3 } else { 1 };
        (0..batch).map(|_| self.payload(r)).collect()
    }

    pub(super) fn deliver(&mut self, payloads: &[Payload], audience: To) {
        let now = self.instant(self.now);
        self.state_mut()
            .deliver(payloads, &Self::to_audience(audience), now);
        self.expect_deliver(payloads, audience);
    }

    pub(super) fn deliver_groups(&mut self, groups: &[Vec<Payload>], audience: To) {
        let now = self.instant(self.now);
        self.state_mut()
            .deliver_groups(groups, &Self::to_audience(audience), now);
        for payloads in groups {
            self.expect_deliver(payloads, audience);
        }
    }

    pub(super) fn to_audience(to: To) -> Audience {
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
    pub(super) fn expect_deliver(&mut self, payloads: &[Payload], to: To) {
        let mut evict = Vec::new();
        for i in self.by_slot() {
            let c = &self.clients[i];
            let subscribed = to
                .topics
                .is_none_or(|mask| c.topics.iter().any(|&t| mask & (1 << t) != 0));
            let admitted =
                (c.authenticated || !to.authenticated) && to.except != Some(c.id) && subscribed;
            if c.phase == ModelPhase::Open && admitted && !self.offer_frames(i, payloads) {
                evict.push(i);
            }
        }
        for i in evict {
            self.close(i, RemoveReason::SlowConsumer);
        }
    }

    pub(super) fn send(&mut self, id: ClientId, payload: Payload) {
        let now = self.instant(self.now);
        self.state_mut().send(id, &payload, now);
        let open = self
            .clients
            .iter()
            .position(|c| c.id == id && c.phase == ModelPhase::Open);
        if let Some(i) = open
            && !self.offer_frames(i, std::slice::from_ref(&payload))
        {
            self.close(i, RemoveReason::SlowConsumer);
        }
    }

    /// The model of queueing `payloads` for client `i`; false: evict it.
    pub(super) fn offer_frames(&mut self, i: usize, payloads: &[Payload]) -> bool {
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
        if c.charge() > self.cap / 2 {
            c.backlogged = true;
        }
        self.expected.deliveries += n;
        true
    }

    /// Writes at most `k` bytes of client `i`'s queue, as its driver would: it asks the core
    /// what to do first, and acts on a close frame that is out (linger) or an end.
    pub(super) fn write(&mut self, i: usize, k: usize) {
        let Some(slot) = self.clients[i].slot else {
            return;
        };
        let now = self.instant(self.now);
        let next = self.core().poll_write(slot, now);
        assert_eq!(
            next,
            self.clients[i].next(),
            "next write of {:?}",
            self.clients[i]
        );
        match next {
            Next::Write => {}
            Next::Closed => return self.close_sent(i),
            Next::Done => return self.end(i),
            Next::Idle | Next::Delay(_) => return,
        }
        self.wire.clear();
        let (buf, wire, copy_max) = (&mut self.buf, &mut self.wire, self.copy_max);
        let gathered = self
            .core
            .as_ref()
            .expect("the shard runs")
            .state()
            .gather_into(slot, buf, copy_max, wire);
        let c = &mut self.clients[i];
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
        c.advance(n);
        c.blocked_since = None;
        self.expected.bytes_written += n as u64;
        self.expected.write_syscalls += 1;
        self.core().handle_written(slot, n);
    }

    /// Client `i`'s socket takes nothing: its driver tells the core.
    pub(super) fn stall(&mut self, i: usize) {
        let now = self.instant(self.now);
        let c = &mut self.clients[i];
        let Some(slot) = c.slot else { return };
        if c.next() != Next::Write {
            return;
        }
        c.blocked_since.get_or_insert(self.now);
        self.core().handle_write_blocked(slot, now);
    }

    pub(super) fn sweep(&mut self) {
        let now = self.instant(self.now);
        self.state_mut().sweep(now);
        let now = self.now;
        let mut doomed = Vec::new();
        for i in self.by_slot() {
            let c = &mut self.clients[i];
            let blocked = c
                .blocked_since
                .is_some_and(|t| now - t >= self.write_deadline);
            // A waiting client is not read: neither silent nor pinged.
            let silence = match c.stage.waits() {
                false => now - c.last_seen,
                true => Duration::ZERO,
            };
            match c.phase {
                ModelPhase::Open if blocked => doomed.push((i, RemoveReason::WriteDeadline)),
                ModelPhase::Open if silence > self.heartbeat => {
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
                        && self.ping_interval.is_some_and(|p| silence >= p) =>
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

    /// The model of `State::congested`: a client that crossed half its cap (by a delivery),
    /// is open, still holds more than half, and whose socket has not taken nothing for
    /// [`STALLED_AFTER`]; a client found otherwise is no longer counted until a delivery
    /// takes it over half again.
    pub(super) fn congested(&mut self) -> bool {
        let (high, now) = (self.cap / 2, self.now);
        let mut any = false;
        for c in &mut self.clients {
            if !c.backlogged {
                continue;
            }
            let stalled = c.blocked_since.is_some_and(|t| now - t >= STALLED_AFTER);
            c.backlogged =
                c.slot.is_some() && c.phase == ModelPhase::Open && c.charge() > high && !stalled;
            any |= c.backlogged;
        }
        any
    }

    /// What `Core::poll_read` must say for client `i`.
    pub(super) fn reading(&mut self, i: usize) -> Reading {
        let c = &self.clients[i];
        match (c.slot, c.phase, c.stage) {
            (None, _, _) => Reading::Hold,
            (_, _, ModelStage::Lingering | ModelStage::WaitingLingering) => Reading::Drain,
            (_, ModelPhase::Open, ModelStage::Serving) if self.congested() => Reading::Paused,
            (_, ModelPhase::Open, ModelStage::Serving) => Reading::Read,
            _ => Reading::Hold,
        }
    }

    /// Compares the core with the model, after telling the handler of the clients removed
    /// since the last check (as the shard does after each tick).
    pub(crate) fn check(&mut self) {
        let now = self.instant(self.now);
        let mut post = self.post();
        self.core().dispatch_removed(now, &mut post);
        let state = self.state();
        let mut open = 0;
        let mut queued = 0;
        for c in &self.clients {
            open += u64::from(c.phase == ModelPhase::Open);
            let Some(slot) = c.slot else { continue };
            queued += c.queued() as u64;
            let blocked = c.blocked_since.map(|t| self.t0 + t);
            let client = state.client(slot).expect("the slot of a served client");
            assert_eq!(
                format!("{:?}", client.phase),
                format!("{:?}", c.phase),
                "phase of {c:?}"
            );
            assert_eq!(
                format!("{:?}", client.stage()),
                format!("{:?}", c.stage),
                "stage of {c:?}"
            );
            assert_eq!(client.announced(), c.announced, "announced {c:?}");
            assert_eq!(client.out.bytes(), c.queued(), "queue of {c:?}");
            assert_eq!(client.out.frames(), c.queue.len(), "frames of {c:?}");
            assert_eq!(state.blocked_since(slot), blocked, "blocked time of {c:?}");
            let topics: Vec<Topic> = c.topics.iter().map(|&t| Topic::new(TOPICS[t])).collect();
            assert_eq!(state.topics_of(slot), topics, "topics of {c:?}");
        }
        let served = self.clients.iter().filter(|c| c.slot.is_some()).count();
        assert_eq!(state.connections(), served, "connections");
        assert_eq!(self.admission.connections(), served, "admissions");
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
        self.check_counters();
        self.check_removed();
    }

    /// The counters against the model's.
    pub(super) fn check_counters(&self) {
        let counters = &*self.counters;
        let load = |counter: &AtomicU64| counter.load(Relaxed);
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
            inbox_events: load(&counters.inbox_events),
            inbox_lost: load(&counters.inbox_lost),
        };
        assert_eq!(actual, self.expected, "counters");
    }

    /// The handler heard of exactly the clients the model removed since the last check.
    pub(super) fn check_removed(&mut self) {
        let mut told: Vec<_> =
            std::mem::take(&mut *self.told.lock().unwrap_or_else(|e| e.into_inner()));
        told.sort_by_key(|&(id, _)| id);
        self.removed.sort_by_key(|&(id, _)| id);
        assert_eq!(told, self.removed, "on_removed calls");
        self.removed.clear();
    }
}
