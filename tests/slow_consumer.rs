//! Slow consumers: a client that stops reading is evicted (or loses frames, by policy) once its
//! bounded queue fills, while every healthy client still receives every broadcast in order.

mod common;

use common::*;
use shardcast::{
    Audience, Builder, ClientId, Engine, FRAME_OVERHEAD_BYTES, Payload, RemoveReason,
    SlowConsumerPolicy,
};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

/// Body size of each numbered broadcast.
const BODY: usize = 16 << 10;
/// What one numbered frame is charged in a client's queue: its body, its 4-byte header (a
/// 16-bit length) and the per-frame overhead.
const FRAME_CHARGE: usize = BODY + 4 + FRAME_OVERHEAD_BYTES;
/// Queue cap of every client: four numbered frames do not fit.
const QUEUE_MAX: usize = 64 << 10;
/// Frames sent but not yet read by every healthy client, at most: three frames fit in
/// [`QUEUE_MAX`], so a healthy client's queue never overflows whatever the shard ticks do.
const IN_FLIGHT_MAX: usize = 3;
// Three frames leave room for a few control frames (a ping, a pong); a fourth overflows.
const _: () = assert!(IN_FLIGHT_MAX * FRAME_CHARGE + 1024 <= QUEUE_MAX);
const _: () = assert!((IN_FLIGHT_MAX + 1) * FRAME_CHARGE > QUEUE_MAX);
/// Consecutive broadcasts that must each cost the stalled client a frame before it counts as
/// stalled for good.
const STALL_STREAK: u64 = 5;
/// Bound on the broadcasts it may take to fill the stalled client's socket and queue.
const BROADCASTS_MAX: u64 = 4000;

/// A binary broadcast of [`BODY`] bytes carrying `seq` in its first 8 bytes.
fn numbered(seq: u64) -> Payload {
    let mut body = vec![0xa5; BODY];
    body[..8].copy_from_slice(&seq.to_le_bytes());
    let payload = Payload::binary(body);
    assert_eq!(payload.len() + FRAME_OVERHEAD_BYTES, FRAME_CHARGE);
    payload
}

/// The sequence number of a numbered body.
fn seq_of(body: &[u8]) -> u64 {
    assert_eq!(body.len(), BODY, "a numbered frame arrives whole");
    u64::from_le_bytes(body[..8].try_into().unwrap())
}

/// Three healthy clients read by their own tasks, and one raw client that never reads.
struct Setup {
    engine: Engine,
    events: Arc<Events>,
    healthy: Vec<Reader>,
    stalled: RawClient,
    stalled_id: ClientId,
    /// Numbered broadcasts sent so far.
    sent: u64,
}

impl Setup {
    async fn new(configure: impl FnOnce(Builder) -> Builder) -> Setup {
        let (recorder, events) = Recorder::new();
        let builder = builder()
            .shards(2)
            .handler(recorder)
            .client_queue_bytes_max(QUEUE_MAX);
        let (engine, addr) = start(configure(builder)).await;
        // Each healthy client's registration is recorded before the next client connects, so
        // that the fourth recorded is the stalled one. Waiting for the client count is not
        // enough: a shard counts a client when it admits it and records it a moment later; if
        // that shard thread is preempted in between, the stalled client can be admitted and
        // recorded on the other shard first, and a healthy client is taken for it.
        let (healthy, _) = connect_many_with_ids(&engine, addr, &events, 3).await;
        let healthy = healthy.into_iter().map(spawn_reader).collect();
        // A small receive buffer: the kernel holds less for it, so it stalls sooner.
        let stalled = RawClient::connect_with_recv_buffer(addr, Some(4096)).await;
        let stalled_id = registered(&events, 4).await;
        Setup {
            engine,
            events,
            healthy,
            stalled,
            stalled_id,
            sent: 0,
        }
    }

    /// Broadcasts the next numbered frame, then waits until every shard has applied it and
    /// every healthy client has read all but [`IN_FLIGHT_MAX`]` - 1` frames, so that the next
    /// broadcast makes at most [`IN_FLIGHT_MAX`] frames that it has not read, and no shard
    /// gets a burst of them in one tick.
    async fn publish(&mut self) {
        assert!(
            self.sent < BROADCASTS_MAX,
            "the stalled client never filled up"
        );
        self.engine
            .broadcast(numbered(self.sent), Audience::ALL)
            .await
            .unwrap();
        self.sent += 1;
        let applied = self.sent * self.engine.shard_count() as u64;
        let behind = (self.sent + 1).saturating_sub(IN_FLIGHT_MAX as u64) as usize;
        until(
            || {
                self.engine.stats().total.broadcasts_applied >= applied
                    && self.healthy.iter().all(|r| r.read() >= behind)
            },
            || "shards or healthy clients stopped making progress".to_owned(),
        )
        .await;
    }

    /// Publishes until `cond` holds on the stats, then `more` frames.
    async fn publish_until(&mut self, cond: impl Fn(&shardcast::ShardStats) -> bool, more: usize) {
        while !cond(&self.engine.stats().total) {
            self.publish().await;
        }
        for _ in 0..more {
            self.publish().await;
        }
    }

    /// Publishes until each of the last [`STALL_STREAK`] broadcasts cost the stalled client a
    /// frame: its socket and its queue are full for good, not just during a burst.
    async fn publish_until_stalled(&mut self) {
        let mut streak = 0;
        while streak < STALL_STREAK {
            let before = self.engine.stats().total.frames_dropped;
            self.publish().await;
            let dropped = self.engine.stats().total.frames_dropped - before;
            assert!(
                dropped <= 1,
                "only the stalled client loses frames, one per broadcast"
            );
            streak = if dropped == 1 { streak + 1 } else { 0 };
        }
    }

    /// Waits for the removal the shard reports a moment after it counts it, and checks that
    /// the stalled client, and no other, was removed, for `reason` (until shutdown, the only
    /// removal). A failure names who was removed and the order in which clients registered.
    async fn only_stalled_removed(&self, reason: RemoveReason) {
        eventually(|| !self.events.removed().is_empty()).await;
        let removed = self.events.removed();
        assert_eq!(
            removed,
            [(self.stalled_id, reason)],
            "only the stalled client {} is removed; removed: {}; registered, in this order: {}",
            self.stalled_id,
            removed
                .iter()
                .map(|(id, reason)| format!("{id} ({reason:?})"))
                .collect::<Vec<_>>()
                .join(", "),
            self.events
                .registered()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(self.engine.client(self.stalled_id).await.is_none());
    }

    /// Sends END and checks that every healthy client got every numbered frame, in order.
    async fn check_healthy(&mut self) -> Vec<Client> {
        self.engine
            .broadcast(Payload::text(END), Audience::ALL)
            .await
            .unwrap();
        let mut clients = Vec::new();
        for reader in self.healthy.drain(..) {
            let (got, ws) = reader.until_end().await;
            let seqs: Vec<u64> = got
                .iter()
                .map(|m| match m {
                    Message::Binary(b) => seq_of(b),
                    other => panic!("expected a numbered frame, got {other:?}"),
                })
                .collect();
            assert_eq!(
                seqs,
                (0..self.sent).collect::<Vec<_>>(),
                "a healthy client got everything in order"
            );
            clients.push(ws);
        }
        clients
    }
}

/// The numbered frames among raw frames (a trailing END text is allowed and skipped).
fn numbered_frames(frames: &[RawFrame]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| !(f.opcode == 0x1 && f.payload == END.as_bytes()))
        .map(|f| {
            assert_eq!(
                (f.fin, f.opcode),
                (true, 0x2),
                "only numbered binary frames"
            );
            seq_of(&f.payload)
        })
        .collect()
}

#[tokio::test]
async fn stalled_client_is_evicted_with_4008_while_healthy_clients_receive_everything() {
    let mut setup = Setup::new(|b| b.slow_consumer(SlowConsumerPolicy::Disconnect)).await;
    setup
        .publish_until(|s| s.evicted.slow_consumer > 0, 10)
        .await;
    let healthy = setup.check_healthy().await;

    let stats = setup.engine.stats().total;
    assert_eq!(stats.evicted.slow_consumer, 1, "only the stalled client");
    assert_eq!(
        stats.frames_dropped, 0,
        "Disconnect drops no frame of a client it keeps"
    );
    setup.only_stalled_removed(RemoveReason::SlowConsumer).await;
    assert_eq!(setup.engine.client_count(), 3);

    // Reading now, it finds whole frames in order from the first, then the close (or the end).
    let (frames, end) = setup.stalled.read_to_close().await;
    setup.stalled.hang_up().await;
    let seqs = numbered_frames(&frames);
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "a contiguous prefix"
    );
    assert!(
        (seqs.len() as u64) < setup.sent,
        "it was evicted before receiving everything"
    );
    assert!(
        matches!(end, RawEnd::Close(Some(4008)) | RawEnd::Eof),
        "ended with {end:?}"
    );
    let codes = shutdown_reading(&setup.engine, healthy).await;
    assert_eq!(codes, [Some(1001); 3]);
}

/// Runs a drop policy against a stalled client; returns the numbered frames it received and
/// how many were sent.
async fn stalled_client_under(policy: SlowConsumerPolicy) -> (Vec<u64>, u64) {
    let mut setup = Setup::new(|b| b.slow_consumer(policy)).await;
    setup.publish_until_stalled().await;
    let healthy = setup.check_healthy().await;

    let stats = setup.engine.stats().total;
    assert_eq!(
        stats.evicted.slow_consumer, 0,
        "a drop policy evicts no one"
    );
    assert!(
        stats.frames_dropped >= STALL_STREAK,
        "the stalled client lost frames: {}",
        stats.frames_dropped
    );
    let info = setup
        .engine
        .client(setup.stalled_id)
        .await
        .expect("the stalled client stays");
    assert!(
        info.queued_bytes > 0 && info.queued_bytes <= QUEUE_MAX,
        "queue within its cap: {}",
        info.queued_bytes
    );
    assert_eq!(setup.engine.client_count(), 4);

    // At shutdown it gets what is queued, then 1001.
    let stalled = &mut setup.stalled;
    let read_stalled = async {
        let read = stalled.read_to_close().await;
        stalled.hang_up().await;
        read
    };
    let (codes, (frames, end)) =
        tokio::join!(shutdown_reading(&setup.engine, healthy), read_stalled);
    assert_eq!(codes, [Some(1001); 3]);
    assert_eq!(end, RawEnd::Close(Some(1001)));
    let seqs = numbered_frames(&frames);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "what it kept is in order: {seqs:?}"
    );
    assert_eq!(
        seqs.first(),
        Some(&0),
        "frames written before the stall were not taken back"
    );
    assert!((seqs.len() as u64) < setup.sent, "it lost frames");
    assert_eq!(
        setup.events.removals_of(setup.stalled_id),
        [RemoveReason::Shutdown]
    );
    (seqs, setup.sent)
}

#[tokio::test]
async fn drop_newest_keeps_a_stalled_client_connected_and_drops_what_does_not_fit() {
    let (seqs, sent) = stalled_client_under(SlowConsumerPolicy::DropNewest).await;
    // Each of the last broadcasts found the queue full: those newest frames were dropped.
    let last = sent - STALL_STREAK;
    assert!(
        seqs.iter().all(|&s| s < last),
        "none of the last {STALL_STREAK} frames kept: {seqs:?}"
    );
}

#[tokio::test]
async fn drop_oldest_keeps_a_stalled_client_connected_and_keeps_the_newest_frames() {
    let (seqs, sent) = stalled_client_under(SlowConsumerPolicy::DropOldest).await;
    // Each of the last broadcasts found the queue full: it made room by dropping older frames.
    assert_eq!(seqs.last(), Some(&(sent - 1)), "the newest frame was kept");
    let tail: Vec<u64> = seqs.iter().copied().filter(|&s| s >= sent - 2).collect();
    assert_eq!(
        tail,
        [sent - 2, sent - 1],
        "the newest frames that fit were kept"
    );
}
