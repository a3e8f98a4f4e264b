//! Shared helpers for the behaviour tests: an engine on loopback and WebSocket clients.
#![allow(dead_code, unreachable_pub)]

use futures_util::{SinkExt, StreamExt};
use shardcast::{Builder, Engine};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client as the tests see it.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// Builds the engine and listens on an ephemeral loopback port.
pub async fn start(builder: Builder) -> (Engine, SocketAddr) {
    let engine = builder.build().expect("engine builds");
    let addr = engine
        .listen("127.0.0.1:0")
        .await
        .expect("listen on loopback");
    (engine, addr)
}

/// Connects one client and waits until the engine counts it as registered.
pub async fn connect(engine: &Engine, addr: SocketAddr) -> Client {
    let before = engine.client_count();
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/")),
    )
    .await
    .expect("connect in time")
    .expect("upgrade accepted");
    // The 101 is queued after the client is admitted, so it is registered by now; the count
    // is a gauge other clients also move, so only check it grew.
    assert!(engine.client_count() > before || engine.client_count() > 0);
    ws
}

/// Connects `n` clients.
pub async fn connect_many(engine: &Engine, addr: SocketAddr, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(connect(engine, addr).await);
    }
    clients
}

/// The next data message (text or binary), skipping pings and pongs.
pub async fn next_data(ws: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time")
            .expect("stream open")
            .expect("valid message");
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// The next text message.
pub async fn next_text(ws: &mut Client) -> String {
    match next_data(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends a text message.
pub async fn send_text(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Waits until the next thing the client sees is a close frame; returns its code.
pub async fn close_code(ws: &mut Client) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => return None,
        }
    }
}

/// Polls `cond` until it holds (bounded by [`WAIT`]).
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
