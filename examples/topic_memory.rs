//! Heap bytes per subscription: 10,000 clients subscribe to 10 topics each, in three layouts,
//! and the heap the engine holds for the subscriptions is counted by a counting allocator
//! (`stats_alloc`: bytes requested, live; the allocator's own rounding is not included).
//!
//! ```text
//! cargo run --release --example topic_memory
//! NATS_URL=nats://127.0.0.1:4222 cargo run --release --example topic_memory   # with a bridge
//! ```
//!
//! Layouts: every client on the same 10 topics; 1,000 topics of 100 subscribers; 100,000
//! topics of one subscriber each (only personal topics: every subscription pays for a topic);
//! the same with names of 256 bytes, the longest allowed (the worst case). After each layout
//! every client unsubscribes, and the heap must return to where it was.
//!
//! With `NATS_URL`, the engine has a bridge to that server, which follows every topic with
//! local subscribers (one NATS subscription per bucket of topics, at most 1,024): the heap
//! then counts that too (the layout waits until the bridge holds them all).

use shardcast::wire::handshake::Request;
use shardcast::{Engine, Registration, Topic};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes since `region` began.
fn live(region: &Region<'_, System>) -> isize {
    // A realloc counts its growth in `bytes_allocated` and its shrinking in
    // `bytes_deallocated` already (`bytes_reallocated` is their sum, not more).
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize
}

const CLIENTS: usize = 10_000;
const PER_CLIENT: usize = 10;

/// The `j`th topic of client `i` in each layout.
fn topic(layout: &str, i: usize, j: usize) -> String {
    match layout {
        "shared" => format!("t{j}"),
        "groups" => format!("t{}", (i * PER_CLIENT + j) % 1_000),
        "personal" => format!("c{i}/{j}"),
        _ => format!("{:0>256}", format!("c{i}/{j}")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for shards in [1, 2] {
        let mut builder = Engine::builder()
            .shards(shards)
            .heartbeat_timeout(Duration::from_secs(3600))
            .ping_interval(None)
            .bridge_unsubscribe_delay(Duration::ZERO);
        let bridged = std::env::var("NATS_URL").ok();
        if let Some(url) = &bridged {
            builder = builder.bridge(shardcast::Nats::new(url.as_str()));
        }
        let engine = builder.build()?;
        let mut ids = Vec::with_capacity(CLIENTS);
        let mut peers = Vec::with_capacity(CLIENTS);
        // Streams whose upgrade an embedder's HTTP server answered.
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let request = Request::new("/", headers)?;
        for _ in 0..CLIENTS {
            let (client, server) = tokio::io::duplex(64);
            let accepted = engine.decide(&request, None)?;
            ids.push(
                engine
                    .register_with(server, Registration::upgraded(accepted))
                    .await?,
            );
            peers.push(client);
        }
        // Warm up what the first subscriptions allocate once (maps, the `seen` words).
        for layout in ["shared", "groups", "personal", "personal-256"] {
            for (i, &id) in ids.iter().enumerate() {
                for j in 0..PER_CLIENT {
                    let t = Topic::new(topic(layout, i, j));
                    engine.subscribe(id, &t).await?;
                    engine.unsubscribe(id, &t).await?;
                }
            }
            settle(&engine, 0).await;
            let region = Region::new(GLOBAL);
            for (i, &id) in ids.iter().enumerate() {
                for j in 0..PER_CLIENT {
                    engine.subscribe(id, topic(layout, i, j)).await?;
                }
            }
            if bridged.is_some() {
                let topics = (0..CLIENTS)
                    .flat_map(|i| (0..PER_CLIENT).map(move |j| topic(layout, i, j)))
                    .collect::<std::collections::HashSet<_>>()
                    .len();
                settle(&engine, topics as u64).await;
            }
            let held = live(&region);
            let stats = engine.stats().total;
            for (i, &id) in ids.iter().enumerate() {
                for j in 0..PER_CLIENT {
                    engine.unsubscribe(id, topic(layout, i, j)).await?;
                }
            }
            settle(&engine, 0).await;
            let left = live(&region);
            println!(
                "shards={shards} layout={layout:<8} subscriptions={} topics(per shard, summed)={} \
                 heap={held} B  {:.1} B/subscription  after unsubscribing all: {left:+} B",
                stats.subscriptions,
                stats.topics,
                held as f64 / stats.subscriptions as f64,
            );
        }
        drop(peers);
        engine.shutdown(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Waits until the engine's bridge (if any) holds `topics` subscriptions on the broker.
async fn settle(engine: &Engine, topics: u64) {
    if std::env::var("NATS_URL").is_err() {
        return;
    }
    while engine.stats().bridge.subscriptions != topics {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
