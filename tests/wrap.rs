//! A `Wrap` runs on the shard before the upgrade: what it returns is what the engine speaks
//! WebSocket over, and a failed wrap counts as a failed handshake.

mod common;

use common::{WAIT, accepted, builder, eventually, next_text};
use shardcast::{Audience, Payload, RegisterError, Registration};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn listen_wrapped_runs_the_wrap_on_each_connection_before_the_upgrade() {
    let engine = builder().shards(2).build().expect("engine");
    let wrapped = Arc::new(AtomicUsize::new(0));
    let count = wrapped.clone();
    let addr = engine
        .listen_wrapped("127.0.0.1:0", move |tcp: tokio::net::TcpStream| {
            count.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(tcp) }
        })
        .await
        .expect("listen");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("ws://{addr}/")),
        )
        .await
        .expect("in time")
        .expect("upgrade");
        clients.push(ws);
    }
    eventually(|| engine.client_count() == 3).await;
    assert_eq!(wrapped.load(Ordering::SeqCst), 3);
    engine
        .broadcast(Payload::text("through the wrap"), Audience::ALL)
        .await
        .expect("broadcast");
    for ws in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "through the wrap");
    }
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failed_wrap_counts_as_a_failed_handshake_and_registers_nobody() {
    let engine = builder().shards(1).build().expect("engine");
    let addr = engine
        .listen_wrapped("127.0.0.1:0", |_tcp: tokio::net::TcpStream| async move {
            Err::<tokio::net::TcpStream, _>(std::io::Error::other("tls handshake failed"))
        })
        .await
        .expect("listen");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    eventually(|| engine.stats().total.handshakes_failed == 1).await;
    eventually(|| engine.connection_count() == 0).await;
    assert_eq!(engine.client_count(), 0);
    assert_eq!(engine.stats().total.handshake_failures.wrap_failed, 1);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_registration_wrap_runs_on_the_owning_shard() {
    let engine = builder().shards(2).build().expect("engine");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connecting = tokio::spawn(tokio_tungstenite::connect_async(format!("ws://{addr}/")));
    let (tcp, _) = listener.accept().await.expect("accept");
    let shard_threads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = shard_threads.clone();
    let wrap = move |tcp: tokio::net::TcpStream| {
        let name = std::thread::current().name().map(str::to_owned);
        seen.lock().expect("lock").push(name);
        async move { Ok::<_, std::io::Error>(tcp) }
    };
    engine
        .register_with(tcp, Registration::new().wrap(wrap))
        .await
        .expect("register");
    let (mut ws, _) = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("in time")
        .expect("task")
        .expect("upgrade");
    eventually(|| engine.client_count() == 1).await;
    let names = shard_threads.lock().expect("lock").clone();
    assert_eq!(names.len(), 1);
    assert!(
        names[0]
            .as_deref()
            .is_some_and(|n| n.starts_with("shardcast-")),
        "wrap ran on {names:?}, not on a shard thread"
    );
    engine
        .broadcast(Payload::text("hi"), Audience::ALL)
        .await
        .expect("broadcast");
    assert_eq!(next_text(&mut ws).await, "hi");
    engine.shutdown(Duration::from_secs(1)).await;
}

/// A wrap that adds nothing.
async fn plain(tcp: tokio::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
    Ok(tcp)
}

#[tokio::test]
async fn a_wrap_on_a_stream_that_is_not_tcp_is_refused_and_registers_nothing() {
    let engine = builder().shards(1).build().expect("engine");
    let (_client, server) = tokio::io::duplex(4096);
    let refused = engine
        .register_with(server, Registration::new().wrap(plain))
        .await;
    assert!(
        matches!(refused, Err(RegisterError::CannotWrap)),
        "{refused:?}"
    );
    assert_eq!(engine.connection_count(), 0);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_wrap_on_an_upgraded_tcp_stream_is_refused_and_registers_nothing() {
    let engine = builder().shards(1).build().expect("engine");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let _client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (tcp, _) = listener.accept().await.expect("accept");
    let registration = Registration::upgraded(accepted(&engine)).wrap(plain);
    let refused = engine.register_with(tcp, registration).await;
    assert!(
        matches!(refused, Err(RegisterError::CannotWrap)),
        "{refused:?}"
    );
    assert_eq!(engine.connection_count(), 0);
    engine.shutdown(Duration::from_secs(1)).await;
}
