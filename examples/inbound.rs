//! A guest book: `say ...` is relayed to everyone on the shard (the fast path, a `Handler`);
//! any other text is "written to a database" that takes 10 ms per entry, read from the
//! `Inbox`, and acknowledged once stored. A client that writes faster than the database is
//! slowed down by TCP; nothing is dropped, and the others are not held up.
//!
//! Run with `cargo run --release --example inbound`, then connect with any WebSocket client to
//! `ws://127.0.0.1:9003/`.

use shardcast::{Audience, Context, Engine, EventKind, Handler, Incoming, Payload};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Relays `say ...` on the shard; leaves everything else to the inbox.
struct Relay;

impl Handler for Relay {
    fn forward(&self, _ctx: &Context<'_>, message: Incoming<'_>) -> bool {
        !matches!(message, Incoming::Text(text) if text.starts_with("say "))
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if let Incoming::Text(text) = message {
            ctx.broadcast(Payload::text(text), Audience::ALL);
        }
    }
}

/// Stands for a database write.
async fn store(entries: &mut Vec<String>, entry: String) -> usize {
    tokio::time::sleep(Duration::from_millis(10)).await;
    entries.push(entry);
    entries.len()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder().handler(Relay).inbox(true).build()?;
    let mut inbox = engine.inbox().expect("turned on, taken once");
    let replies = engine.clone();
    let book = tokio::spawn(async move {
        let mut entries = Vec::new();
        while let Some(event) = inbox.recv().await {
            match event.kind {
                EventKind::Text(text) => {
                    let n = store(&mut entries, text).await;
                    let ack = Payload::text(format!("stored as entry {n}"));
                    let _ = replies.send(event.client, ack).await;
                }
                EventKind::Registered => println!("{} arrived", event.client),
                EventKind::Removed(reason) => println!("{} left: {reason:?}", event.client),
                _ => {}
            }
        }
        entries.len()
    });
    let addr = engine.listen("127.0.0.1:9003").await?;
    println!("guest book on ws://{addr}/; Ctrl-C stops");
    tokio::signal::ctrl_c().await?;
    engine.shutdown(Duration::from_secs(2)).await;
    let stats = engine.stats().total;
    println!(
        "{} entries; clients paused {} times; {} events lost",
        book.await?,
        stats.inbox_paused,
        stats.inbox_lost
    );
    Ok(())
}
