//! Delayed coalescing holds a client's frames until a threshold or the delay, then writes them
//! together.

mod common;

use common::{RawClient, WAIT, connect, connect_many, eventually, masked, next_text, start};
use shardcast::wire::Inbound;
use shardcast::{Audience, Coalescing, Context, Engine, Handler, Payload};
use std::time::Duration;

#[tokio::test]
async fn a_coalescing_delay_gathers_frames_sent_within_it_into_one_write() {
    let coalescing = Coalescing {
        frames_max: 1000,
        delay: Duration::from_millis(400),
        bytes_max: 1 << 20,
    };
    let (engine, addr) = start(Engine::builder().shards(1).coalescing(coalescing)).await;
    let mut ws = connect(&engine, addr).await;
    eventually(|| engine.client_count() == 1).await;
    let before = engine.stats().total.write_syscalls;
    let sent_at = tokio::time::Instant::now();
    for i in 0..10 {
        engine
            .broadcast(Payload::text(format!("c{i}")), Audience::ALL)
            .await
            .expect("broadcast");
    }
    let queued_in = sent_at.elapsed();
    for i in 0..10 {
        assert_eq!(next_text(&mut ws).await, format!("c{i}"));
    }
    // The counter moves after the write returns, which may be after the client read the frames.
    let writes = || engine.stats().total.write_syscalls - before;
    eventually(|| writes() >= 1).await;
    // Give a wrongly split flush time to show up as a second write.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let writes = writes();
    // Only meaningful if the ten broadcasts were all queued well within the delay.
    if queued_in < Duration::from_millis(200) {
        assert_eq!(
            writes, 1,
            "ten frames queued within the delay went out in {writes} writes"
        );
        assert!(
            sent_at.elapsed() >= Duration::from_millis(400),
            "flushed before the delay"
        );
    }
    engine.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn reaching_frames_max_flushes_at_once_without_waiting_for_the_delay() {
    let coalescing = Coalescing {
        frames_max: 4,
        delay: Duration::from_secs(30),
        bytes_max: 1 << 20,
    };
    let (engine, addr) = start(Engine::builder().shards(1).coalescing(coalescing)).await;
    let mut ws = connect(&engine, addr).await;
    eventually(|| engine.client_count() == 1).await;
    let sent_at = tokio::time::Instant::now();
    engine
        .broadcast_batch(
            (0..4).map(|i| Payload::text(format!("b{i}"))),
            Audience::ALL,
        )
        .await
        .expect("broadcast");
    for i in 0..4 {
        assert_eq!(next_text(&mut ws).await, format!("b{i}"));
    }
    assert!(sent_at.elapsed() < WAIT, "waited for the 30 s delay");
    engine.shutdown(Duration::from_millis(100)).await;
}

/// Relays every text message to every client.
struct Relay;

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Inbound<'_>) {
        if let Inbound::Text(text) = message {
            ctx.broadcast(Payload::text(text), Audience::ALL);
        }
    }
}

#[tokio::test]
async fn a_burst_relayed_to_another_shard_goes_out_to_each_client_in_one_write() {
    const BURST: usize = 16;
    let (engine, addr) = start(Engine::builder().shards(2).handler(Relay)).await;
    // Listeners share the port, so the kernel spreads connections over both shards.
    let mut readers = connect_many(&engine, addr, 12).await;
    let mut publisher = RawClient::connect(addr).await;
    let clients = readers.len() + 1;
    eventually(|| engine.client_count() == clients).await;
    assert!(
        engine.stats().shards.iter().all(|s| s.clients > 0),
        "both shards have clients"
    );
    eventually(|| engine.stats().total.queued_bytes == 0).await;
    let before = engine.stats().total.write_syscalls;
    let published_before = engine.stats().broadcasts;

    // One write, so one read on the server: the whole burst is handled in one go.
    let burst: Vec<u8> = (0..BURST)
        .flat_map(|i| masked(0x81, format!("r{i}").as_bytes()))
        .collect();
    publisher.send(&burst).await.expect("send burst");
    for ws in readers.iter_mut() {
        for i in 0..BURST {
            assert_eq!(next_text(ws).await, format!("r{i}"));
        }
    }
    let writes = || engine.stats().total.write_syscalls - before;
    // Counted after the write returns: wait for the last ones.
    eventually(|| writes() >= clients as u64).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        writes(),
        clients as u64,
        "each client, on either shard, got the burst in one write"
    );
    let stats = engine.stats();
    assert_eq!(
        stats.broadcasts - published_before,
        BURST as u64,
        "a handler's broadcast counts once, not once per shard"
    );
    assert_eq!(
        stats
            .shards
            .iter()
            .map(|s| s.broadcasts_published)
            .sum::<u64>(),
        BURST as u64
    );
    engine.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn delayed_coalescing_applies_to_what_a_handler_relays_on_its_own_shard() {
    let delay = Duration::from_millis(200);
    let coalescing = Coalescing {
        frames_max: 1000,
        delay,
        bytes_max: 1 << 20,
    };
    let builder = Engine::builder()
        .shards(1)
        .handler(Relay)
        .coalescing(coalescing);
    let (engine, addr) = start(builder).await;
    let mut reader = connect(&engine, addr).await;
    let mut publisher = RawClient::connect(addr).await;
    eventually(|| engine.client_count() == 2).await;
    // The shard's last command (the listener) is now older than the delay. A clock read only
    // when commands arrive stamped the relayed frames with that old tick, so they counted as
    // overdue and went out at once.
    tokio::time::sleep(2 * delay).await;
    let sent_at = tokio::time::Instant::now();
    let burst: Vec<u8> = (0..5)
        .flat_map(|i| masked(0x81, format!("h{i}").as_bytes()))
        .collect();
    publisher.send(&burst).await.expect("send burst");
    for i in 0..5 {
        assert_eq!(next_text(&mut reader).await, format!("h{i}"));
    }
    assert!(
        sent_at.elapsed() >= delay,
        "relayed frames were flushed after {:?}, before the {delay:?} delay",
        sent_at.elapsed()
    );
    engine.shutdown(Duration::from_millis(100)).await;
}
