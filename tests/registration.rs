//! Registration: the same upgrade decision whether the engine reads the request or the
//! embedder asks `Engine::decide`, per-connection data, and what comes back when the engine is
//! shut down.

mod common;

use common::*;
use futures_util::SinkExt;
use shardcast::wire::handshake::{self, HandshakeError, Request};
use shardcast::{
    Audience, BroadcastError, ClientData, ClientId, Context, Decision, Engine, Handler, Incoming,
    Payload, Principal, Registration, RemoveReason,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;

/// Lets in only `Authorization: Bearer ok`, as `alice`; refuses the rest with 401.
struct Bouncer;

impl Handler for Bouncer {
    fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
        if request.header("authorization") == Some(b"Bearer ok".as_slice()) {
            Decision::accept().authenticated(Principal::new("alice"))
        } else {
            Decision::reject(401, "token required")
        }
    }
}

/// `GET path` with `headers`, as raw HTTP.
fn raw_request(path: &str, headers: &[(&str, &str)]) -> String {
    let mut raw = format!("GET {path} HTTP/1.1\r\n");
    // The Host an HTTP server requires before an embedder sees the request (`parse` does too).
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        raw.push_str("Host: example.com\r\n");
    }
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    raw
}

/// An upgrade request with `extra` headers, as raw HTTP and as the header list an embedder's
/// HTTP server would pass on.
fn request_with(
    extra: &[(&'static str, &'static str)],
) -> (String, Vec<(&'static str, &'static str)>) {
    let headers: Vec<_> = UPGRADE_HEADERS.iter().chain(extra).copied().collect();
    (raw_request("/", &headers), headers)
}

/// Registers the server side of a new pipe with `registration`; returns the client side and the
/// id.
async fn register(engine: &Engine, registration: Registration) -> (DuplexStream, ClientId) {
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    let id = engine
        .register_with(server, registration)
        .await
        .expect("register");
    (client, id)
}

/// What a shard answers to `raw` when it reads the upgrade itself: the status, and the body of
/// a refusal (empty for a 101).
async fn answer_on_the_shard(engine: &Engine, raw: &str) -> (u16, String) {
    let (mut client, server) = tokio::io::duplex(PIPE_BYTES);
    engine.register(server).await.expect("register");
    client
        .write_all(raw.as_bytes())
        .await
        .expect("send request");
    let mut answer = Vec::new();
    let mut chunk = [0; 1024];
    let head_end = loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(WAIT, client.read(&mut chunk))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "closed before the answer's head");
        answer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).into_owned();
    let status: u16 = head[9..12].parse().expect("status code");
    if status == 101 {
        return (status, String::new());
    }
    // A refusal closes the connection after its body.
    tokio::time::timeout(WAIT, client.read_to_end(&mut answer))
        .await
        .expect("close in time")
        .expect("read");
    let body = String::from_utf8_lossy(&answer[head_end..]).into_owned();
    (status, body)
}

/// What `Engine::decide` says to the same request.
fn answer_of_decide(engine: &Engine, headers: &[(&str, &str)]) -> (u16, String) {
    let request = Request::new("/", headers.iter().copied()).expect("valid upgrade request");
    match engine.decide(&request, None) {
        Ok(_) => (101, String::new()),
        Err(rejected) => (rejected.status(), rejected.body().to_owned()),
    }
}

#[tokio::test]
async fn a_refusal_is_the_same_whether_the_engine_reads_the_upgrade_or_the_embedder_asks() {
    let engine = builder()
        .shards(1)
        .allowed_origins(Some(vec!["https://ok.example".into()]))
        .handler(Bouncer)
        .build()
        .expect("engine");
    let cases: [(&[(&str, &str)], u16); 4] = [
        (
            &[
                ("Origin", "https://evil.example"),
                ("Authorization", "Bearer ok"),
            ],
            403,
        ),
        (&[("Authorization", "Bearer ok")], 403),
        (&[("Origin", "https://ok.example")], 401),
        (
            &[
                ("Origin", "https://ok.example"),
                ("Authorization", "Bearer ok"),
            ],
            101,
        ),
    ];
    for (extra, expected) in cases {
        let (raw, headers) = request_with(extra);
        let on_shard = answer_on_the_shard(&engine, &raw).await;
        let decided = answer_of_decide(&engine, &headers);
        assert_eq!(on_shard, decided, "{extra:?}");
        assert_eq!(decided.0, expected, "{extra:?}");
    }
    assert_eq!(
        answer_of_decide(
            &engine,
            &request_with(&[("Origin", "https://ok.example")]).1
        ),
        (401, "token required".to_owned())
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn decide_refuses_with_503_once_the_engine_is_shut_down() {
    let engine = builder().shards(1).build().expect("engine");
    assert_eq!(answer_of_decide(&engine, &UPGRADE_HEADERS).0, 101);
    engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        answer_of_decide(&engine, &UPGRADE_HEADERS),
        (503, "shutting down".to_owned())
    );
}

#[tokio::test]
async fn an_upgraded_registration_with_a_principal_is_authenticated() {
    let engine = builder()
        .shards(1)
        .handler(Bouncer)
        .build()
        .expect("engine");
    let (_, headers) = request_with(&[("Authorization", "Bearer ok")]);
    let request = Request::new("/", headers).expect("valid");
    let accepted = engine.decide(&request, None).expect("accepted");
    assert_eq!(
        accepted.principal().and_then(|p| p.downcast_ref::<&str>()),
        Some(&"alice")
    );
    let (_client, id) = register(&engine, Registration::upgraded(accepted)).await;
    let info = engine.client(id).await.expect("registered at once");
    assert!(info.authenticated);
    assert_eq!(
        info.principal
            .and_then(|p| p.downcast_ref::<&str>().copied()),
        Some("alice")
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

/// The room a client asked for in its path.
#[derive(Debug, PartialEq, Eq)]
struct Room(String);

/// What each hook saw of its client's `Room` (or `Tenant`, as a string).
#[derive(Default)]
struct Seen {
    registered: Mutex<Vec<Option<String>>>,
    messages: Mutex<Vec<Option<String>>>,
    removed: Mutex<Vec<(ClientId, Option<String>)>>,
}

/// Attaches a `Room` from the request path (none for `/`), and records what every hook reads.
struct Rooms(Arc<Seen>);

fn room(ctx: &Context<'_>) -> Option<String> {
    ctx.data::<Room>()
        .map(|r| r.0.clone())
        .or_else(|| ctx.data::<Tenant>().map(|t| format!("tenant {}", t.0)))
}

impl Handler for Rooms {
    fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
        match request.path().trim_start_matches('/') {
            "" => Decision::accept(),
            path => Decision::accept().with_data(ClientData::new(Room(path.to_owned()))),
        }
    }

    fn on_registered(&self, ctx: &mut Context<'_>) {
        lock(&self.0.registered).push(room(ctx));
    }

    fn on_message(&self, ctx: &mut Context<'_>, _message: Incoming<'_>) {
        lock(&self.0.messages).push(room(ctx));
    }

    fn on_removed(&self, ctx: &mut Context<'_>, _reason: RemoveReason) {
        lock(&self.0.removed).push((ctx.id(), room(ctx)));
    }
}

/// Data an embedder attaches at registration.
#[derive(Debug)]
struct Tenant(u32);

/// An engine of one shard with [`Rooms`], and what its hooks see.
fn rooms() -> (Engine, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let engine = builder()
        .shards(1)
        .handler(Rooms(seen.clone()))
        .build()
        .expect("engine");
    (engine, seen)
}

/// A registration with `Tenant(n)` attached.
fn tenant(n: u32) -> Registration {
    Registration::new().data(ClientData::new(Tenant(n)))
}

#[tokio::test]
async fn data_attached_by_the_decision_is_seen_by_every_hook_and_by_client() {
    let (engine, seen) = rooms();
    // The decision's data takes precedence over the registration's.
    let (client, id) = register(&engine, tenant(7)).await;
    let mut ws = upgrade_over(client, "/lobby").await;
    eventually(|| lock(&seen.registered).len() == 1).await;
    let info = engine.client(id).await.expect("registered");
    let data = info.data.expect("data attached");
    assert_eq!(data.downcast_ref::<Room>(), Some(&Room("lobby".into())));
    ws.send(Message::text("hi")).await.expect("send");
    eventually(|| lock(&seen.messages).len() == 1).await;
    engine.remove(id).await.expect("removed");
    eventually(|| lock(&seen.removed).len() == 1).await;
    let lobby = || Some("lobby".to_owned());
    assert_eq!(*lock(&seen.registered), [lobby()]);
    assert_eq!(*lock(&seen.messages), [lobby()]);
    assert_eq!(*lock(&seen.removed), [(id, lobby())]);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn registration_data_is_used_when_the_decision_attaches_none() {
    let (engine, seen) = rooms();
    // Upgraded by the shard: the path `/` gets no room from the handler.
    let (client, by_shard) = register(&engine, tenant(7)).await;
    let _ws = upgrade_over(client, "/").await;
    // Upgraded by the embedder.
    let registration = Registration::upgraded(accepted(&engine)).data(ClientData::new(Tenant(8)));
    let (_client, by_embedder) = register(&engine, registration).await;
    eventually(|| lock(&seen.registered).len() == 2).await;
    for (id, tenant) in [(by_shard, 7), (by_embedder, 8)] {
        let info = engine.client(id).await.expect("registered");
        let data = info.data.expect("data attached");
        assert_eq!(data.downcast_ref::<Tenant>().map(|t| t.0), Some(tenant));
    }
    let mut registered = lock(&seen.registered).clone();
    registered.sort();
    assert_eq!(
        registered,
        [Some("tenant 7".to_owned()), Some("tenant 8".to_owned())]
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_without_data_has_none() {
    let engine = builder().shards(1).build().expect("engine");
    let (_client, id) = register(&engine, Registration::upgraded(accepted(&engine))).await;
    let info = engine.client(id).await.expect("registered");
    assert!(info.data.is_none());
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn broadcast_and_send_after_shutdown_hand_back_what_was_not_sent() {
    let engine = builder().shards(2).build().expect("engine");
    let (_client, id) = register(&engine, Registration::upgraded(accepted(&engine))).await;
    engine.shutdown(Duration::from_secs(1)).await;
    match engine.broadcast(Payload::text("late"), Audience::ALL).await {
        Err(BroadcastError::Closed(payload)) => assert_eq!(payload.body(), b"late"),
        other => panic!("expected the payload back, got {other:?}"),
    }
    let batch = [Payload::text("a"), Payload::binary(b"b".as_slice())];
    match engine.broadcast_batch(batch, Audience::ALL).await {
        Err(BroadcastError::Closed(payloads)) => {
            let bodies: Vec<&[u8]> = payloads.iter().map(Payload::body).collect();
            assert_eq!(bodies, [b"a".as_slice(), b"b".as_slice()]);
        }
        other => panic!("expected the payloads back, got {other:?}"),
    }
    match engine.send(id, Payload::text("just you")).await {
        Err(BroadcastError::Closed(payload)) => assert_eq!(payload.body(), b"just you"),
        other => panic!("expected the payload back, got {other:?}"),
    }
}

/// Request headers as (name, value).
type Headers<'a> = &'a [(&'a str, &'a str)];

#[test]
fn request_new_refuses_what_parse_refuses_with_the_same_error() {
    let cases: [(Headers, Option<HandshakeError>); 5] = [
        (&UPGRADE_HEADERS, None),
        (&UPGRADE_HEADERS[..4], Some(HandshakeError::Version)),
        (
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            Some(HandshakeError::Version),
        ),
        (
            &[
                ("Upgrade", "h2c"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            Some(HandshakeError::NotUpgrade),
        ),
        (
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "short"),
            ],
            Some(HandshakeError::Key),
        ),
    ];
    for (headers, expected) in cases {
        let raw = raw_request("/x", headers);
        let parsed = handshake::parse(raw.as_bytes(), 8192).map(|r| r.map(|(r, _)| r.key()));
        let built = Request::new("/x", headers.iter().copied()).map(|r| r.key());
        assert_eq!(parsed.err(), expected, "{headers:?}");
        assert_eq!(built.err(), expected, "{headers:?}");
    }
    let too_many = vec![("X-Filler", "1"); handshake::HEADERS_MAX + 1];
    assert_eq!(
        Request::new("/", too_many).map(|r| r.key()).err(),
        Some(HandshakeError::TooLarge)
    );
}

#[tokio::test]
async fn upgrades_engine_decide_refuses_are_counted_apart_from_the_shards() {
    let engine = Engine::builder()
        .shards(1)
        .allowed_origins(Some(vec!["https://app.example".to_owned()]))
        .build()
        .expect("build");
    let with_origin = |origin: &'static str| {
        let mut headers = UPGRADE_HEADERS.to_vec();
        headers.push(("Origin", origin));
        Request::new("/", headers).expect("valid request")
    };
    let refused = engine.decide(&with_origin("https://evil.example"), None);
    assert_eq!(refused.expect_err("refused").status(), 403);
    assert!(
        engine
            .decide(&with_origin("https://app.example"), None)
            .is_ok()
    );
    let stats = engine.stats();
    assert_eq!(stats.upgrades_refused_by_decide, 1);
    assert_eq!(stats.total.handshake_failures.refused, 0, "no shard saw it");
    engine.shutdown(WAIT).await;
}
