//! Engines as the behaviour tests build them: started on a loopback port, and told to broadcast.

use shardcast::{Audience, Builder, Engine, Payload};
use std::net::SocketAddr;

/// Builds the engine and listens on an ephemeral loopback port.
pub async fn start(builder: Builder) -> (Engine, SocketAddr) {
    let engine = builder.build().expect("engine builds");
    let addr = engine
        .listen("127.0.0.1:0")
        .await
        .expect("listen on loopback");
    (engine, addr)
}

/// Broadcasts the text `text` to `audience`; the engine must be running.
pub async fn broadcast(engine: &Engine, text: impl AsRef<str>, audience: Audience) {
    engine
        .broadcast(Payload::text(text), audience)
        .await
        .expect("broadcast");
}
