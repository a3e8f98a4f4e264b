//! shardcast behind axum: REST routes and a WebSocket route on one port, the WebSocket clients
//! owned by the engine's shards.
//!
//! Run with `cargo run --release --example axum` (the default features include `axum`; without
//! them, add `--features axum`), then:
//!
//! - `GET /health`: `ok`.
//! - `GET /stats`: the engine's counters as JSON.
//! - `GET /ws`: a WebSocket; `/ws?topic=news&topic=sport` also subscribes it to those topics.
//! - `POST /publish`: broadcasts the body (text if it is UTF-8, else binary) to every client,
//!   or with `?topic=news` to that topic's subscribers only.
//!
//! ```text
//! websocat ws://127.0.0.1:3000/ws?topic=news       # or any WebSocket client
//! curl -d 'hello everyone' http://127.0.0.1:3000/publish
//! curl -d 'hello news' 'http://127.0.0.1:3000/publish?topic=news'
//! ```
//!
//! Options: `--addr HOST:PORT` (default `127.0.0.1:3000`; port 0 picks one, and the first line
//! printed says which), `--shards N` (default: one per core), and `--relay`: every message a
//! client sends is broadcast to every client, the protocol `shardcast bench` speaks:
//!
//! ```text
//! cargo run --release --example axum -- --relay
//! shardcast bench --target ws://127.0.0.1:3000/ws
//! ```
//!
//! (`shardcast bench --server axum` starts such a relay itself, `shardcast serve --axum`.)

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use shardcast::axum::Upgrade;
use shardcast::{Audience, Context, Engine, Handler, Incoming, Payload};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The engine's rules for this site.
struct Site {
    /// Broadcast every message a client sends to every client.
    relay: bool,
}

impl Handler for Site {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if !self.relay {
            return;
        }
        let payload = match message {
            Incoming::Text(text) => Payload::text(text),
            Incoming::Binary(bytes) => Payload::binary(bytes),
        };
        ctx.broadcast(payload, Audience::ALL);
    }
}

/// `GET /ws[?topic=T&topic=U]`: the engine takes the connection, subscribed to every `topic`
/// of the query (decoded by axum).
async fn ws(Query(query): Query<Vec<(String, String)>>, upgrade: Upgrade) -> Upgrade {
    query
        .into_iter()
        .filter(|(name, _)| name == "topic")
        .fold(upgrade, |upgrade, (_, topic)| upgrade.subscribe(topic))
}

/// `GET /stats`.
async fn stats(State(engine): State<Engine>) -> ([(&'static str, &'static str); 1], String) {
    let stats = engine.stats();
    let t = &stats.total;
    let json = format!(
        "{{\"shards\":{},\"clients\":{},\"connections\":{},\"broadcasts\":{},\"deliveries\":{},\
         \"bytes_written\":{},\"write_syscalls\":{},\"frames_dropped\":{},\
         \"handshakes_failed\":{},\"topics\":{},\"subscriptions\":{}}}\n",
        stats.shards.len(),
        t.clients,
        engine.connection_count(),
        stats.broadcasts,
        t.deliveries,
        t.bytes_written,
        t.write_syscalls,
        t.frames_dropped,
        t.handshakes_failed,
        t.topics,
        t.subscriptions,
    );
    ([("content-type", "application/json")], json)
}

/// `POST /publish[?topic=T]`.
async fn publish(
    State(engine): State<Engine>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let payload = match std::str::from_utf8(&body) {
        Ok(text) => Payload::text(text),
        Err(_) => Payload::binary(&body),
    };
    let audience = match query.get("topic") {
        Some(topic) => Audience::topic(topic.as_str()),
        None => Audience::ALL,
    };
    match engine.broadcast(payload, audience).await {
        Ok(()) => (StatusCode::OK, "published\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

/// The command line.
struct Args {
    addr: String,
    shards: Option<usize>,
    relay: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:3000".into(),
        shards: None,
        relay: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => args.addr = value()?,
            "--shards" => {
                let n = value()?;
                args.shards = Some(
                    n.parse()
                        .map_err(|_| format!("--shards {n}: not a number"))?,
                );
            }
            "--relay" => args.relay = true,
            other => {
                return Err(format!(
                    "unknown option {other}; options: --addr HOST:PORT, --shards N, --relay"
                ));
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut builder = Engine::builder().handler(Site { relay: args.relay });
    if let Some(shards) = args.shards {
        builder = builder.shards(shards);
    }
    let engine = builder.build()?;
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/stats", get(stats))
        .route("/ws", get(ws))
        .route("/publish", post(publish))
        .with_state(engine.clone());
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let addr = listener.local_addr()?;
    println!(
        "http://{addr}/ (WebSocket: ws://{addr}/ws), {} shards{}",
        engine.shard_count(),
        if args.relay { ", relaying" } else { "" }
    );
    println!("Ctrl-C stops");
    // `ConnectInfo` gives the engine's decision (and its logs) the peer's address.
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let report = engine.shutdown(Duration::from_secs(2)).await;
    println!("stopped: {report:?}");
    Ok(())
}
