//! What the simulation does as a driver, for the connection core: reads handed over, waits
//! done, close frames out, ends, the inbox's consumer, and the end of a run.

use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context as TaskContext, Waker};

use bytes::Bytes;
use tokio::time::Instant;

use super::client::{Expect, ModelPhase, ModelStage, Wait};
use super::sim::{PONGS_MAX, SHARD_CLIENTS_MAX, Sim, To};
use super::world::{Kind, PANIC_CLOSE, Sent};
use crate::Payload;
use crate::client::RemoveReason;
use crate::config::FRAME_OVERHEAD_BYTES;
use crate::inbox::EventKind;
use crate::shard::{Ending, Held, Linger, Next, Post, Reading, Resume};
use crate::wire::{Limits, Parser};

impl Sim {
    /// The model of the core offering client `i`'s next inbox event: `None` without an inbox,
    /// else whether it was queued (or must wait, held).
    pub(super) fn offer(&mut self, i: usize, event: Expect) -> Option<bool> {
        self.inbox.as_ref()?;
        self.clients[i].expected.push_back(event);
        if self.inbox_len < self.inbox_capacity {
            self.inbox_len += 1;
            self.expected.inbox_events += 1;
            Some(true)
        } else {
            Some(false)
        }
    }

    /// The core made client `i` wait (its post kept deliveries, or it holds `held`), or not.
    pub(super) fn began_waiting(&mut self, i: usize, relays: bool, held: Option<Box<Held>>) {
        if !relays && held.is_none() {
            return;
        }
        let now = self.now;
        let c = &mut self.clients[i];
        assert!(c.wait.is_none(), "a second wait for {:?}", c.id);
        c.wait = Some(Wait { relays, held });
        if c.stage == ModelStage::Serving {
            c.set_stage(ModelStage::Waiting, now);
        }
    }

    /// Client `i`'s close frame is out: it lingers; the inbox hears it left unless it waits.
    pub(super) fn close_sent(&mut self, i: usize) {
        let Some(slot) = self.clients[i].slot else {
            return;
        };
        let now = self.instant(self.now);
        let Linger { deadline, held } = self.core().handle_close_sent(slot, now);
        assert_eq!(deadline, now + self.state().config().close_timeout);
        let c = &mut self.clients[i];
        match c.stage {
            ModelStage::Waiting => c.set_stage(ModelStage::WaitingLingering, self.now),
            _ => {
                c.set_stage(ModelStage::Lingering, self.now);
                self.leave(i, held);
                return;
            }
        }
        assert!(held.is_none(), "Removed offered while waiting");
    }

    /// The model of the core telling the inbox client `i` left: `held` is what the core
    /// returned (its `Removed` event, if the inbox was full), queued apart by the driver.
    pub(super) fn leave(&mut self, i: usize, held: Option<Box<Held>>) {
        let c = &mut self.clients[i];
        if !c.announced {
            assert!(held.is_none(), "Removed offered twice for {:?}", c.id);
            return;
        }
        c.announced = false;
        let reason = c.left.unwrap_or(RemoveReason::Disconnected);
        let queued = self.offer(i, Expect::Removed(reason));
        assert_eq!(held.is_some(), queued == Some(false), "Removed held");
        self.apart.extend(held.map(|h| *h));
    }

    /// Client `i` sends `frames` in one read: its driver reads them, if the core lets it.
    pub(super) fn read(&mut self, i: usize, frames: Vec<Sent>) {
        let Some(slot) = self.clients[i].slot else {
            return;
        };
        let now = self.instant(self.now);
        let reading = self.core().poll_read(slot, now);
        assert_eq!(reading, self.reading(i), "reading {:?}", self.clients[i]);
        if reading == Reading::Read {
            // What it carries from an earlier read goes first.
            let mut sent = std::mem::take(&mut self.clients[i].pending);
            sent.extend(frames);
            self.hand(i, sent);
        }
    }

    /// Hands `frames`, read from client `i`'s socket, to the core, as its driver does, and
    /// checks what the core did against the model's reading of them.
    pub(super) fn hand(&mut self, i: usize, frames: Vec<Sent>) {
        let Some(slot) = self.clients[i].slot else {
            return;
        };
        let now = self.instant(self.now);
        let mut input: Vec<u8> = frames.iter().flat_map(|f| f.bytes.clone()).collect();
        let mut parser =
            std::mem::replace(&mut self.clients[i].parser, Parser::new(Limits::default()));
        let mut post = self.post();
        let read = self
            .core()
            .handle_read(slot, &mut parser, &mut input, now, &mut post);
        self.clients[i].parser = parser;
        let (handled, all, relayed) = self.expect_read(i, &frames);
        let consumed = if all {
            input.len()
        } else {
            frames[..handled].iter().map(|f| f.bytes.len()).sum()
        };
        assert_eq!(read.consumed, consumed, "bytes of {frames:?} handled");
        let relays = post.waits();
        assert_eq!(relays, self.full && relayed, "relays kept");
        if !all {
            // What it read after what made it wait, or after the read's budget, is handed over
            // once the wait is over, or at its next read.
            self.clients[i].pending = frames[handled..].to_vec();
        }
        self.began_waiting(i, relays, read.held);
    }

    /// The model of the core handling `frames` read from open client `i`: how many it handled
    /// before it stopped, and whether the whole read was consumed (a protocol error or a
    /// handler's panic discards the rest).
    pub(super) fn expect_read(&mut self, i: usize, frames: &[Sent]) -> (usize, bool, bool) {
        match self.reading(i) {
            Reading::Read => {}
            // Congested: nothing is handled yet.
            Reading::Paused => return (0, false, false),
            // Not open any more (closed while it waited): the core discards it all.
            Reading::Hold | Reading::Drain => return (frames.len(), true, false),
        }
        let now = self.now;
        {
            let c = &mut self.clients[i];
            c.last_seen = now;
            c.pinged = false;
        }
        let mut handled = 0;
        // Whether a handler relayed a broadcast to the other shard.
        let mut relayed = false;
        // What the read delivered, one client's worth; it stops at a quarter of the cap.
        let (mut charge, budget) = (0, (self.cap / 4).max(1));
        for f in frames {
            handled += 1;
            match &f.kind {
                Kind::Ping(p) => {
                    let c = &mut self.clients[i];
                    if c.phase == ModelPhase::Open && c.control_frames() < PONGS_MAX {
                        let mut pong = vec![0x8A, p.len() as u8];
                        pong.extend_from_slice(p);
                        c.push_control(Bytes::from(pong));
                    }
                }
                Kind::Pong => {}
                Kind::Close(code) => {
                    self.close(i, RemoveReason::ClientClosed(*code));
                    return (handled, false, relayed);
                }
                Kind::Bad => {
                    self.close(i, RemoveReason::Protocol(1002));
                    return (handled, true, relayed);
                }
                Kind::Text(text) => {
                    if self.inbox.is_some() && text.starts_with('i') {
                        if self.offer(i, Expect::Text(text.clone())) == Some(false) {
                            return (handled, false, relayed);
                        }
                        continue;
                    }
                    match text.as_bytes()[0] {
                        b'b' => {
                            let payload = Payload::text(&text[1..]);
                            charge += payload.len() + FRAME_OVERHEAD_BYTES;
                            self.expect_deliver(&[payload], To::ALL);
                            relayed = true;
                        }
                        b'x' => self.close(i, RemoveReason::Closed(4100)),
                        b'!' => {
                            let (code, reason) = PANIC_CLOSE;
                            self.close_saying(i, RemoveReason::Closed(code), reason);
                            return (handled, true, relayed);
                        }
                        _ => {}
                    }
                    if self.clients[i].phase != ModelPhase::Open || charge >= budget {
                        return (handled, false, relayed);
                    }
                }
            }
        }
        (handled, false, relayed)
    }

    /// The driver works on client `i`'s wait: the deliveries its post kept are sent (the other
    /// shards made room), and its held event is queued if the inbox has room. Once both are
    /// done, the core hears the wait is over.
    pub(super) fn room(&mut self, i: usize) {
        let Some(mut wait) = self.clients[i].wait.take() else {
            return;
        };
        wait.relays = false;
        if wait.held.is_some() && self.inbox_len < self.inbox_capacity {
            let mut cx = TaskContext::from_waker(Waker::noop());
            let held = wait.held.as_mut().expect("held");
            assert!(held.poll_queue(&mut cx).is_ready(), "room, and not queued");
            wait.held = None;
            self.inbox_len += 1;
            self.expected.inbox_events += 1;
        }
        if wait.held.is_some() {
            self.clients[i].wait = Some(wait);
            return;
        }
        self.wait_over(i);
    }

    /// Client `i`'s wait is over: the core says what comes next.
    pub(super) fn wait_over(&mut self, i: usize) {
        let slot = self.clients[i]
            .slot
            .expect("a waiting client keeps its slot");
        let now = self.instant(self.now);
        let mut post = self.post();
        let resume = self.core().handle_wait_over(slot, now, &mut post);
        match (self.clients[i].stage, resume) {
            (ModelStage::Waiting, Resume::Read) => {
                self.clients[i].set_stage(ModelStage::Serving, self.now);
                // The driver hands over what it read after the wait began, before reading on.
                let pending = std::mem::take(&mut self.clients[i].pending);
                if !pending.is_empty() {
                    self.hand(i, pending);
                }
            }
            (ModelStage::WaitingLingering, Resume::Lingering(held)) => {
                self.clients[i].set_stage(ModelStage::Lingering, self.now);
                self.clients[i].pending.clear();
                self.leave(i, held);
            }
            (ModelStage::Departing, Resume::Ended(ended)) => {
                self.clients[i].pending.clear();
                self.expect_end(i, ended.held, ended.idle);
            }
            (stage, resume) => panic!("{stage:?} resumed as {resume:?}"),
        }
    }

    /// Client `i`'s socket ended (EOF, an error, its linger over): it ends now, or once its
    /// wait is over.
    pub(super) fn end(&mut self, i: usize) {
        let Some(slot) = self.clients[i].slot else {
            return;
        };
        let now = self.instant(self.now);
        let mut post = self.post();
        let ending = self.core().handle_ended(slot, now, &mut post);
        match ending {
            Ending::Now(ended) => {
                assert!(!self.clients[i].stage.waits(), "ended while waiting");
                self.expect_end(i, ended.held, ended.idle);
            }
            Ending::AfterWait => {
                assert!(self.clients[i].stage.waits(), "kept without a wait");
                self.close(i, RemoveReason::Disconnected);
                self.clients[i].set_stage(ModelStage::Departing, self.now);
            }
        }
    }

    /// The model of a connection's end: closed if still open, its inbox told, its slot free.
    pub(super) fn expect_end(&mut self, i: usize, held: Option<Box<Held>>, idle: bool) {
        self.close(i, RemoveReason::Disconnected);
        self.leave(i, held);
        self.clients[i].slot = None;
        self.clients[i].backlogged = false;
        let live = self.clients.iter().filter(|c| c.slot.is_some()).count();
        assert_eq!(idle, self.shutting_down && live == 0, "idle after an end");
    }

    /// The inbox's consumer takes up to `n` events; each must be the next its client owes.
    pub(super) fn consume(&mut self, n: usize) {
        let Some(rx) = self.inbox.as_mut() else {
            return;
        };
        for _ in 0..n {
            let Ok(event) = rx.try_recv() else {
                assert_eq!(self.inbox_len, 0, "events the consumer cannot receive");
                return;
            };
            self.inbox_len -= 1;
            let c = self
                .clients
                .iter_mut()
                .find(|c| c.id == event.client)
                .expect("an event of a known client");
            let expected = c.expected.pop_front();
            let got = match event.kind {
                EventKind::Registered => Expect::Registered,
                EventKind::Text(t) => Expect::Text(t),
                EventKind::Removed(reason) => Expect::Removed(reason),
                other => panic!("unexpected event {other:?}"),
            };
            assert_eq!(Some(got), expected, "next inbox event of {:?}", c.id);
        }
    }

    /// The driver queues the `Removed` events it keeps apart, while the inbox has room.
    pub(super) fn queue_apart(&mut self) {
        let mut cx = TaskContext::from_waker(Waker::noop());
        while self.inbox_len < self.inbox_capacity
            && let Some(mut held) = self.apart.pop()
        {
            assert!(held.poll_queue(&mut cx).is_ready(), "room, and not queued");
            self.inbox_len += 1;
            self.expected.inbox_events += 1;
        }
    }

    /// Ends the run: either every connection ends (queues drained, waits done, the inbox
    /// told everything), or the shard stops and drops them (what the inbox was not told is
    /// counted lost). Then the totals.
    pub(crate) fn finish(&mut self) {
        if self.stop_at_end {
            return self.stop();
        }
        for _ in 0..4 * SHARD_CLIENTS_MAX {
            self.consume(usize::MAX);
            self.queue_apart();
            for i in 0..self.clients.len() {
                self.consume(usize::MAX);
                self.room(i);
                while self.clients[i].slot.is_some() && self.clients[i].next() == Next::Write {
                    self.write(i, usize::MAX);
                }
                self.write(i, usize::MAX);
                self.end(i);
            }
            self.check();
            if self.clients.iter().all(|c| c.slot.is_none()) && self.apart.is_empty() {
                break;
            }
        }
        self.consume(usize::MAX);
        self.check();
        assert_eq!(self.counters.clients.load(Relaxed), 0);
        assert_eq!(self.counters.queued_bytes.load(Relaxed), 0);
        assert_eq!(self.admission.connections(), 0, "admissions left");
        for c in &self.clients {
            assert_eq!(c.slot, None, "{:?} never ended", c.id);
            assert_eq!(c.removed, 1, "removed events of {:?}", c.id);
            assert!(
                c.expected.is_empty(),
                "{:?} owes the inbox {:?}",
                c.id,
                c.expected
            );
        }
        assert_eq!(self.expected.inbox_lost, 0);
    }

    /// The shard stops: the connections with a socket are dropped (the core is told), then
    /// the core itself with the connections that were waiting to end, and every held event.
    /// What the inbox was owed and not told is counted lost, once.
    pub(super) fn stop(&mut self) {
        let now = self.instant(self.now);
        // Clients the inbox heard of and will never hear left.
        let mut abandoned = 0;
        for i in 0..self.clients.len() {
            let c = &self.clients[i];
            let Some(slot) = c.slot else { continue };
            if c.stage == ModelStage::Departing {
                continue;
            }
            let mut post = self.post();
            let idle = self.core().handle_dropped(slot, now, &mut post);
            self.close(i, RemoveReason::Disconnected);
            let c = &mut self.clients[i];
            abandoned += u64::from(std::mem::take(&mut c.announced));
            c.slot = None;
            c.backlogged = false;
            let live = self.clients.iter().filter(|c| c.slot.is_some()).count();
            assert_eq!(idle, self.shutting_down && live == 0, "idle after a drop");
        }
        self.check_removed_after_dispatch(now);
        // The core goes with the shard, and the connections waiting to end with it; so does
        // every event still held.
        for c in &mut self.clients {
            abandoned += u64::from(std::mem::take(&mut c.announced));
            c.wait = None;
        }
        self.core = None;
        self.apart.clear();
        // What was queued is still received; what was held is lost.
        self.consume(usize::MAX);
        let unreceived: u64 = self.clients.iter().map(|c| c.expected.len() as u64).sum();
        self.expected.inbox_lost += abandoned + unreceived;
        self.check_counters();
    }

    /// Dispatches the removals of the dropped connections and checks them.
    pub(super) fn check_removed_after_dispatch(&mut self, now: Instant) {
        let mut post = self.post();
        self.core().dispatch_removed(now, &mut post);
        self.check_removed();
    }
}
