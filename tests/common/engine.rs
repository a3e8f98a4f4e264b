//! Engines as the behaviour tests build them: on the driver the run asks for, started on a
//! loopback port, and told to broadcast.

use shardcast::{Audience, Builder, Driver, Engine, Payload};
use std::net::SocketAddr;

/// `Engine::builder()`, on the driver `SHARDCAST_DRIVER` names (`event-loop`, `io-uring` or
/// `tasks`) if it is set, so that one run of the suite can cover each driver (CI runs it once
/// per driver). A builder's own `.driver(...)` after this wins.
///
/// # Panics
///
/// If `SHARDCAST_DRIVER` names no driver.
pub fn builder() -> Builder {
    let Some(name) = std::env::var_os("SHARDCAST_DRIVER") else {
        return Engine::builder();
    };
    let driver = match name.to_str() {
        Some("event-loop") => Driver::EventLoop,
        Some("io-uring") => Driver::IoUring,
        Some("tasks") => Driver::Tasks,
        _ => panic!("SHARDCAST_DRIVER must be `event-loop`, `io-uring` or `tasks`, not {name:?}"),
    };
    Engine::builder().driver(driver)
}

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
