//! TLS: a stream that buffers what it is given (as TLS does) is flushed by the engine; the
//! `shardcast` command serves `wss` with `--tls-cert`/`--tls-key` (the TLS handshake runs on the
//! shard, and a failed one is a failed handshake), and `bench` measures `wss` with a certificate
//! it makes itself or a CA it is given.

mod common;

use common::*;
use shardcast::{Audience, Engine, Payload};
use std::time::Duration;

#[tokio::test]
async fn a_stream_that_buffers_writes_gets_its_101_and_every_broadcast() {
    let engine = Engine::builder().shards(1).build().expect("engine");
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    // Holds what it is given until it is flushed (or 64 KiB pile up), as a TLS stream may
    // when its socket is full.
    let buffering = tokio::io::BufWriter::with_capacity(64 << 10, server);
    engine.register(buffering).await.expect("register");
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async("ws://localhost/", client),
    )
    .await
    .expect("the 101 is flushed")
    .expect("upgrade");
    eventually(|| engine.client_count() == 1).await;
    for text in ["one", "two"] {
        engine
            .broadcast(Payload::text(text), Audience::ALL)
            .await
            .expect("broadcast");
        assert_eq!(pipe_text(&mut ws).await, text);
    }
    engine.shutdown(Duration::from_secs(1)).await;
}

/// The next text message on a pipe, bounded by [`WAIT`].
async fn pipe_text(ws: &mut Pipe) -> String {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("valid");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return text.to_string();
        }
    }
}
