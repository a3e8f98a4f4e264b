//! Heap bytes per subscription: 10,000 clients subscribe to 10 topics each, in three layouts,
//! and the heap the engine holds for the subscriptions is counted by a counting allocator
//! (`stats_alloc`: bytes requested, live; the allocator's own rounding is not included).
//!
//! ```text
//! cargo run --release --example topic_memory
//! ```
//!
//! Layouts: every client on the same 10 topics; 1,000 topics of 100 subscribers; 100,000
//! topics of one subscriber each (only personal topics, the worst case: every subscription
//! pays for a topic). After each layout every client unsubscribes, and the heap must return to
//! where it was.

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
        _ => format!("c{i}/{j}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for shards in [1, 2] {
        let engine = Engine::builder()
            .shards(shards)
            .heartbeat_timeout(Duration::from_secs(3600))
            .ping_interval(None)
            .build()?;
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
        for layout in ["shared", "groups", "personal"] {
            for (i, &id) in ids.iter().enumerate() {
                for j in 0..PER_CLIENT {
                    let t = Topic::new(topic(layout, i, j));
                    engine.subscribe(id, &t).await?;
                    engine.unsubscribe(id, &t).await?;
                }
            }
            let region = Region::new(GLOBAL);
            for (i, &id) in ids.iter().enumerate() {
                for j in 0..PER_CLIENT {
                    engine.subscribe(id, topic(layout, i, j)).await?;
                }
            }
            let held = live(&region);
            let stats = engine.stats().total;
            for (i, &id) in ids.iter().enumerate() {
                for j in 0..PER_CLIENT {
                    engine.unsubscribe(id, topic(layout, i, j)).await?;
                }
            }
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
