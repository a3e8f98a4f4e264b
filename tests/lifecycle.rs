//! Client lifecycle: registration paths, upgrade decisions, removal and its reasons, and
//! shutdown (close 1001, `Closed` errors, no payload left behind). Heartbeat, pings and the
//! auth deadline are in `timing.rs`, on a paused clock.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use shardcast::wire::handshake::Request;
use shardcast::{
    Audience, BroadcastError, ClientId, Decision, Handler, ListenError, Payload, Principal,
    RegisterError, Registration, RemoveReason, SlowConsumerPolicy, TryBroadcastError, TrySendError,
    UpdateError,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The HTTP status of a refused upgrade.
async fn refused_status(request: impl IntoClientRequest + Unpin) -> u16 {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("answer in time")
    {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP error response, got {e}"),
        Ok(_) => panic!("expected the upgrade to be refused"),
    }
}

#[tokio::test]
async fn remove_closes_the_client_with_1000_and_forgets_it() {
    let (recorder, events) = Recorder::new();
    let (engine, addr) = start(builder().shards(2).handler(recorder)).await;
    let (mut ws, id) = connect_with_id(&engine, addr, &events).await;
    let (mut other, other_id) = connect_with_id(&engine, addr, &events).await;
    engine
        .set_authenticated(id, Principal::new(7u32))
        .await
        .unwrap();

    let info = engine.remove(id).await.expect("it was registered");
    assert_eq!(info.id, id);
    assert!(info.authenticated);
    assert_eq!(
        info.principal
            .as_ref()
            .and_then(|p| p.downcast_ref::<u32>()),
        Some(&7)
    );
    assert_eq!(close_code(&mut ws).await, Some(1000));

    assert!(engine.client(id).await.is_none());
    assert!(!engine.is_alive(id).await);
    assert_eq!(engine.idle_time(id).await, Duration::MAX);
    assert!(
        engine.remove(id).await.is_none(),
        "a second remove finds nothing"
    );
    assert!(
        engine.is_alive(other_id).await,
        "the other client is untouched"
    );
    assert!(engine.idle_time(other_id).await < Duration::from_secs(5));
    assert_eq!(engine.client_count(), 1);

    engine
        .broadcast(Payload::text("still here"), Audience::ALL)
        .await
        .unwrap();
    assert_eq!(next_text(&mut other).await, "still here");
    eventually(|| !events.removals_of(id).is_empty()).await;
    assert_eq!(events.removals_of(id), [RemoveReason::Removed]);
    drop(ws);
    shutdown_reading(&engine, vec![other]).await;
}

#[tokio::test]
async fn on_removed_is_called_once_per_client_with_its_reason() {
    let (recorder, events) = Recorder::new();
    let (engine, addr) = start(builder().shards(2).handler(recorder)).await;
    let (mut clients, ids) = connect_many_with_ids(&engine, addr, &events, 4).await;
    let shut = clients.pop().expect("four clients");
    let dropped = clients.pop().expect("four clients");
    let mut closing = clients.pop().expect("four clients");
    let mut removed = clients.pop().expect("four clients");

    engine.remove(ids[0]).await.expect("registered");
    assert_eq!(close_code(&mut removed).await, Some(1000));
    drop(removed);

    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    closing.send(Message::Close(Some(frame))).await.unwrap();
    assert_eq!(
        close_code(&mut closing).await,
        Some(1000),
        "the close is echoed"
    );
    drop(closing);

    drop(dropped);
    eventually(|| events.removed().len() == 3).await;

    assert_eq!(shutdown_reading(&engine, vec![shut]).await, [Some(1001)]);

    assert_eq!(events.removals_of(ids[0]), [RemoveReason::Removed]);
    assert_eq!(
        events.removals_of(ids[1]),
        [RemoveReason::ClientClosed(Some(1000))]
    );
    assert_eq!(events.removals_of(ids[2]), [RemoveReason::Disconnected]);
    assert_eq!(events.removals_of(ids[3]), [RemoveReason::Shutdown]);
    assert_eq!(events.removed().len(), 4, "exactly once each");
}

/// Accepts only requests with `Authorization: Bearer ok`; picks `chat` when offered.
#[derive(Debug)]
struct Gate;

impl Handler for Gate {
    fn on_upgrade(&self, request: &Request<'_>, peer: Option<SocketAddr>) -> Decision {
        if !peer.is_some_and(|p| p.ip().is_loopback()) {
            return Decision::reject(403, "from this host only");
        }
        if request.header("authorization") != Some(b"Bearer ok".as_slice()) {
            return Decision::reject(401, "token required");
        }
        let decision = Decision::accept().authenticated(Principal::new("bearer"));
        if request.protocols().any(|p| p == "chat") {
            decision.with_protocol("chat")
        } else {
            decision
        }
    }
}

#[tokio::test]
async fn a_rejected_upgrade_gets_its_http_status_and_an_accepted_one_is_authenticated() {
    let (engine, addr) = start(builder().shards(2).handler(Gate)).await;
    let url = format!("ws://{addr}/");
    assert_eq!(refused_status(url.as_str()).await, 401);
    let mut wrong = url.as_str().into_client_request().unwrap();
    wrong
        .headers_mut()
        .insert("Authorization", HeaderValue::from_static("Bearer no"));
    assert_eq!(refused_status(wrong).await, 401);
    eventually(|| engine.stats().total.handshakes_failed == 2).await;
    assert_eq!(engine.client_count(), 0);

    let mut good = url.as_str().into_client_request().unwrap();
    good.headers_mut()
        .insert("Authorization", HeaderValue::from_static("Bearer ok"));
    let (mut ws, response) = tokio_tungstenite::connect_async(good)
        .await
        .expect("accepted");
    assert_eq!(response.status().as_u16(), 101);
    assert!(
        response.headers().get("sec-websocket-protocol").is_none(),
        "none offered"
    );
    // Accepted as authenticated by the decision itself.
    engine
        .broadcast(Payload::text("members only"), Audience::AUTHENTICATED)
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "members only");
    shutdown_reading(&engine, vec![ws]).await;
}

#[tokio::test]
async fn the_subprotocol_chosen_by_the_handler_is_in_the_response() {
    let (engine, addr) = start(builder().shards(1).handler(Gate)).await;
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Authorization", HeaderValue::from_static("Bearer ok"));
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("superchat, chat"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("accepted");
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(protocol.as_deref(), Some("chat"));
    engine
        .broadcast(Payload::text("hi"), Audience::ALL)
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "hi");
    shutdown_reading(&engine, vec![ws]).await;
}

#[tokio::test]
async fn allowed_origins_refuse_a_missing_or_unlisted_origin_with_403() {
    let origins = vec![
        "https://good.example".to_owned(),
        "https://also.example".to_owned(),
    ];
    let (engine, addr) = start(builder().shards(2).allowed_origins(Some(origins))).await;
    let url = format!("ws://{addr}/");

    assert_eq!(refused_status(url.as_str()).await, 403, "no Origin");
    let mut evil = url.as_str().into_client_request().unwrap();
    evil.headers_mut()
        .insert("Origin", HeaderValue::from_static("https://evil.example"));
    assert_eq!(refused_status(evil).await, 403, "unlisted Origin");

    let mut good = url.as_str().into_client_request().unwrap();
    good.headers_mut()
        .insert("Origin", HeaderValue::from_static("https://also.example"));
    let (mut ws, _) = tokio_tungstenite::connect_async(good)
        .await
        .expect("listed origin accepted");
    engine
        .broadcast(Payload::text("hello"), Audience::ALL)
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");
    assert_eq!(engine.client_count(), 1);
    eventually(|| engine.stats().total.handshakes_failed == 2).await;
    shutdown_reading(&engine, vec![ws]).await;
}

#[tokio::test]
async fn register_serves_an_in_memory_duplex_stream() {
    let (recorder, events) = Recorder::new();
    let engine = builder().shards(2).handler(recorder).build().unwrap();
    let (client_half, server_half) = tokio::io::duplex(64 << 10);
    let id = engine.register(server_half).await.expect("registered");
    let mut ws = upgrade_over(client_half, "/").await;
    assert_eq!(registered(&events, 1).await, id);
    assert!(engine.client(id).await.is_some());

    engine
        .broadcast(Payload::text("over memory"), Audience::ALL)
        .await
        .unwrap();
    engine.send(id, Payload::binary([1, 2, 3])).await.unwrap();
    match next_data(&mut ws).await {
        Message::Text(t) => assert_eq!(t.as_str(), "over memory"),
        other => panic!("expected text, got {other:?}"),
    }
    assert_eq!(next_data(&mut ws).await, Message::binary(vec![1, 2, 3]));
    ws.send(Message::text("from memory")).await.unwrap();
    eventually(|| !events.messages().is_empty()).await;
    assert_eq!(events.messages(), [(id, "from memory".to_owned())]);

    let shutdown = engine.shutdown(Duration::from_secs(5));
    let read_close = async move { close_code(&mut ws).await };
    let (code, report) = tokio::join!(read_close, shutdown);
    assert_eq!(code, Some(1001));
    assert!(report.unjoined.is_empty(), "{report:?}");
}

#[tokio::test]
async fn register_adopts_a_tcp_stream_accepted_by_the_embedder() {
    let engine = builder().shards(2).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let connecting = tokio::spawn(tokio_tungstenite::connect_async(format!("ws://{addr}/")));
        let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        engine.register(tcp).await.expect("registered");
        let (ws, _) = tokio::time::timeout(WAIT, connecting)
            .await
            .unwrap()
            .unwrap()
            .expect("upgrade accepted");
        clients.push(ws);
    }
    // Each shard admits its client just after writing its 101: wait for the gauges to catch up.
    eventually(|| engine.client_count() == 3).await;
    assert!(
        engine.stats().shards.iter().all(|s| s.clients > 0),
        "spread over both shards"
    );
    engine
        .broadcast(Payload::text("adopted"), Audience::ALL)
        .await
        .unwrap();
    for ws in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "adopted");
    }
    shutdown_reading(&engine, clients).await;
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_and_later_calls_fail_with_closed() {
    let (recorder, events) = Recorder::new();
    let (engine, addr) = start(builder().shards(2).handler(recorder)).await;
    let (clients, ids) = connect_many_with_ids(&engine, addr, &events, 4).await;
    engine
        .broadcast(Payload::text("last words"), Audience::ALL)
        .await
        .unwrap();

    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let text = next_text(&mut ws).await;
                (text, close_code(&mut ws).await)
            })
        })
        .collect();
    tokio::time::timeout(WAIT, engine.shutdown(Duration::from_secs(5)))
        .await
        .expect("shutdown in time");
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            ("last words".to_owned(), Some(1001)),
            "queued data, then 1001"
        );
    }
    assert_eq!(engine.client_count(), 0);
    assert_eq!(engine.stats().total.clients, 0);
    let mut removed: Vec<RemoveReason> = events.removed().into_iter().map(|(_, r)| r).collect();
    removed.dedup();
    assert_eq!(removed, [RemoveReason::Shutdown]);
    assert_eq!(events.removed().len(), 4);

    let id = ids[0];
    assert!(matches!(
        engine.broadcast(Payload::text("x"), Audience::ALL).await,
        Err(BroadcastError::Closed(_))
    ));
    assert!(matches!(
        engine
            .broadcast_batch([Payload::text("x")], Audience::ALL)
            .await,
        Err(BroadcastError::Closed(_))
    ));
    assert!(matches!(
        engine.try_broadcast(Payload::text("x"), Audience::ALL),
        Err(TryBroadcastError::Closed(_))
    ));
    assert!(matches!(
        engine.send(id, Payload::text("x")).await,
        Err(BroadcastError::Closed(_))
    ));
    assert!(matches!(
        engine.try_send(id, Payload::text("x")),
        Err(TrySendError::Closed(_))
    ));
    assert!(matches!(
        engine.set_authenticated(id, Principal::new(())).await,
        Err(UpdateError::Closed)
    ));
    assert!(matches!(
        engine.update_last_ping(id).await,
        Err(UpdateError::Closed)
    ));
    let (_, server_half) = tokio::io::duplex(1024);
    assert!(matches!(
        engine.register(server_half).await,
        Err(RegisterError::Closed)
    ));
    assert!(matches!(
        engine.listen("127.0.0.1:0").await,
        Err(ListenError::Closed)
    ));
    assert!(engine.remove(id).await.is_none());
    assert!(engine.client(id).await.is_none());
    assert!(!engine.is_alive(id).await);
    // A second shutdown is harmless.
    tokio::time::timeout(WAIT, engine.shutdown(Duration::from_secs(1)))
        .await
        .expect("second shutdown returns");
}

/// A frame buffer that counts its own drop.
#[derive(Debug)]
struct FlagOnDrop(Vec<u8>, Arc<AtomicUsize>);

impl AsRef<[u8]> for FlagOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for FlagOnDrop {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn shutdown_drops_every_payload_even_those_queued_for_a_stalled_client() {
    const PAYLOADS: usize = 40;
    let builder = builder()
        .shards(2)
        .client_queue_bytes_max(64 << 10)
        .slow_consumer(SlowConsumerPolicy::DropNewest);
    let (engine, addr) = start(builder).await;
    let healthy = connect_many(&engine, addr, 3).await;
    // The stalled client: an in-memory stream whose 4 KiB buffer fills at once, read by no one.
    let (stalled_half, server_half) = tokio::io::duplex(4 << 10);
    let stalled_id = engine.register(server_half).await.unwrap();
    let stalled = upgrade_over(stalled_half, "/").await;
    let readers: Vec<_> = healthy
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { close_code(&mut ws).await }))
        .collect();

    let dropped = Arc::new(AtomicUsize::new(0));
    for i in 0..PAYLOADS {
        let mut body = vec![b'x'; 8 << 10];
        body[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let frame = shardcast::wire::frame::encode(shardcast::wire::Opcode::Binary, &body).to_vec();
        let owner = FlagOnDrop(frame, dropped.clone());
        let payload = Payload::from_frame(Bytes::from_owner(owner)).expect("a valid frame");
        // Even payloads go out as plain broadcasts; odd ones take the other paths: a `send`,
        // and a one-frame batch whose audience excludes an id that names no client.
        if i % 2 == 0 {
            engine.broadcast(payload, Audience::ALL).await.unwrap();
        } else {
            engine.send(stalled_id, payload.clone()).await.unwrap();
            engine
                .broadcast_batch(
                    [payload],
                    Audience::ALL.except(ClientId::from_u64(u64::MAX)),
                )
                .await
                .unwrap();
        }
    }
    // The stalled client holds frames in its queue, so the engine still owns payloads.
    eventually(|| engine.stats().total.frames_dropped > 0).await;
    let queued = engine
        .client(stalled_id)
        .await
        .expect("stalled client stays under DropNewest")
        .queued_bytes;
    assert!(queued > 0, "frames are queued for the stalled client");
    assert!(
        dropped.load(Ordering::SeqCst) < PAYLOADS,
        "the engine still holds payloads"
    );

    tokio::time::timeout(WAIT, engine.shutdown(Duration::from_millis(500)))
        .await
        .expect("shutdown in time");
    for reader in readers {
        assert_eq!(reader.await.unwrap(), Some(1001));
    }
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        PAYLOADS,
        "every payload's owner was dropped"
    );
    drop(stalled);
}

#[tokio::test]
async fn an_upgraded_registration_receives_a_broadcast_issued_right_after_it_returns() {
    use tokio_tungstenite::tungstenite::protocol::Role;
    let engine = builder().shards(2).build().expect("engine");
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (server_half, client_half) = tokio::io::duplex(64 << 10);
        let upgraded = Registration::upgraded(accepted(&engine));
        engine
            .register_with(server_half, upgraded)
            .await
            .expect("register");
        clients.push(
            tokio_tungstenite::WebSocketStream::from_raw_socket(client_half, Role::Client, None)
                .await,
        );
    }
    // No waiting for the count: the registration is ordered before this broadcast.
    engine
        .broadcast(Payload::text("first"), Audience::ALL)
        .await
        .expect("broadcast");
    for ws in clients.iter_mut() {
        let msg = tokio::time::timeout(WAIT, futures_util::StreamExt::next(ws))
            .await
            .expect("in time")
            .expect("open")
            .expect("valid");
        assert_eq!(msg.into_text().expect("text").as_str(), "first");
    }
    engine.shutdown(Duration::from_millis(100)).await;
}

/// A connected pair over loopback: the server's end as a tokio stream, plus a second handle
/// (a duplicated descriptor) on the same socket for reading its options afterwards.
async fn accepted_pair() -> (
    tokio::net::TcpStream,
    std::net::TcpStream,
    tokio::net::TcpStream,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let std = server.into_std().unwrap();
    let probe = std.try_clone().unwrap();
    let server = tokio::net::TcpStream::from_std(std).unwrap();
    assert!(!probe.nodelay().unwrap(), "Nagle is on for a fresh socket");
    (server, probe, client)
}

#[tokio::test]
async fn register_and_an_upgraded_registration_set_tcp_nodelay_on_a_tcp_stream() {
    let engine = builder().shards(1).build().unwrap();
    let (server, probe, _client) = accepted_pair().await;
    // Set on the shard, once it adopts the socket.
    engine.register(server).await.unwrap();
    eventually(|| probe.nodelay().unwrap()).await;
    let (server, probe, _client) = accepted_pair().await;
    let upgraded = Registration::upgraded(accepted(&engine));
    engine.register_with(server, upgraded).await.unwrap();
    eventually(|| probe.nodelay().unwrap()).await;
    engine.shutdown(Duration::from_millis(100)).await;
}

/// A handler that blocks its shard thread for a while on any message (which a handler must
/// never do).
struct Blocking(Arc<std::sync::Barrier>);

impl Handler for Blocking {
    fn on_message(&self, _: &mut shardcast::Context<'_>, _: shardcast::Incoming<'_>) {
        self.0.wait();
        // Deliberately blocking: the point of the test.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_a_shard_it_could_not_stop() {
    let entered = Arc::new(std::sync::Barrier::new(2));
    let builder = builder().shards(2).handler(Blocking(entered.clone()));
    let (engine, addr) = start(builder).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    eventually(|| engine.client_count() == 1).await;
    let stuck = engine
        .stats()
        .shards
        .iter()
        .position(|s| s.clients == 1)
        .unwrap();
    ws.send(Message::text("block")).await.unwrap();
    // Wait (off the runtime) until the handler is inside its sleep.
    tokio::task::spawn_blocking(move || entered.wait())
        .await
        .unwrap();
    let report = engine.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.unjoined, [shardcast::ShardId(stuck as u16)]);
}

/// Tells everyone who left.
struct Presence;

impl Handler for Presence {
    fn on_removed(&self, ctx: &mut shardcast::Context<'_>, reason: RemoveReason) {
        assert!(ctx.principal().is_none(), "the client is gone");
        let line = format!("{} left ({reason:?})", ctx.id());
        ctx.broadcast(Payload::text(line), Audience::ALL);
    }
}

#[tokio::test(start_paused = true)]
async fn on_removed_can_tell_the_clients_of_every_shard_who_left() {
    local(async {
        let engine = start_local(builder().shards(2).handler(Presence));
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect_pipe(&engine).await);
        }
        let (mut leaving, left) = clients.remove(0);
        engine.remove(left).await.expect("it was registered");
        assert_eq!(close_code(&mut leaving).await, Some(1000));
        for (ws, id) in clients.iter_mut() {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    assert_eq!(text.as_str(), format!("{left} left (Removed)"), "to {id}")
                }
                other => panic!("{id} got {other:?}"),
            }
        }
        assert!(
            clients.iter().any(|(_, id)| id.shard() != left.shard()),
            "another shard heard it too"
        );
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

/// Records the peer address each upgrade saw.
#[derive(Clone, Default)]
struct Peers(Arc<std::sync::Mutex<Vec<Option<SocketAddr>>>>);

impl Handler for Peers {
    fn on_upgrade(&self, _: &Request<'_>, peer: Option<SocketAddr>) -> Decision {
        lock(&self.0).push(peer);
        Decision::accept()
    }
}

#[tokio::test]
async fn on_upgrade_sees_the_peer_address_of_a_tcp_stream() {
    let peers = Peers::default();
    let (engine, addr) = start(builder().shards(1).handler(peers.clone())).await;
    // Through the engine's listener.
    let listened = connect(&engine, addr).await;
    let listened_from = listened.get_ref().get_ref().local_addr().unwrap();
    // Accepted by the embedder and handed over.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let client = client.unwrap();
    let handed_from = client.local_addr().unwrap();
    engine.register(accepted.unwrap().0).await.unwrap();
    let _handed = upgrade_over(client, "/").await;
    // Over an in-memory pipe: no address.
    let (pipe, server) = tokio::io::duplex(1 << 10);
    engine.register(server).await.unwrap();
    let _piped = upgrade_over(pipe, "/").await;
    assert_eq!(
        *lock(&peers.0),
        [Some(listened_from), Some(handed_from), None]
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_moves_a_tcp_stream_to_its_shard_so_it_outlives_the_runtime_that_accepted_it() {
    let engine = builder().shards(1).build().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connecting = tokio::spawn(tokio_tungstenite::connect_async(format!("ws://{addr}/")));
    // Accepted and handed over on a runtime of its own, which then goes away with its reactor.
    let handing = engine.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            handing.register(tcp).await.unwrap();
        });
    });
    let (mut ws, _) = tokio::time::timeout(WAIT, connecting)
        .await
        .unwrap()
        .unwrap()
        .expect("upgrade accepted");
    eventually(|| engine.client_count() == 1).await;
    engine
        .broadcast(Payload::text("still here"), Audience::ALL)
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "still here");
    shutdown_reading(&engine, vec![ws]).await;
}
