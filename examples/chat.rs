//! A chat room: every text message goes to every other client; `/auth NAME` marks the sender
//! authenticated, and authenticated clients also get a notice when someone leaves.
//!
//! Run with `cargo run --release --example chat`, then connect with any WebSocket client to
//! `ws://127.0.0.1:9002/`.

use shardcast::Incoming;
use shardcast::{Audience, Context, Engine, Handler, Payload, Principal, RemoveReason};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The chat room's rules.
struct Room;

impl Handler for Room {
    fn on_registered(&self, ctx: &mut Context<'_>) {
        let id = ctx.id();
        ctx.send(id, Payload::text(format!("welcome, you are {id}")));
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let Incoming::Text(text) = message else {
            return;
        };
        if let Some(name) = text.strip_prefix("/auth ") {
            ctx.set_authenticated(Principal::new(name.to_owned()));
            return;
        }
        let from = ctx.id();
        let name = ctx
            .principal()
            .and_then(|p| p.downcast_ref::<String>())
            .cloned();
        let line = format!("{}: {text}", name.unwrap_or_else(|| from.to_string()));
        ctx.broadcast(Payload::text(line), Audience::ALL.except(from));
    }

    fn on_removed(&self, ctx: &mut Context<'_>, reason: RemoveReason) {
        let id = ctx.id();
        println!("{id} left: {reason:?}");
        ctx.broadcast(Payload::text(format!("{id} left")), Audience::AUTHENTICATED);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder()
        .handler(Room)
        .heartbeat_timeout(Duration::from_secs(60))
        .build()?;
    let addr = engine.listen("127.0.0.1:9002").await?;
    println!(
        "chat on ws://{addr}/ ({} shards); Ctrl-C stops",
        engine.shard_count()
    );
    tokio::signal::ctrl_c().await?;
    engine.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
