//! `shardcast::axum::Upgrade` behind a real axum server: WebSocket clients (tokio-tungstenite,
//! and raw TCP where the bytes on the wire matter) and REST calls through hyper's HTTP/1
//! client.
#![cfg(feature = "axum")]

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, Request as HttpRequest, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use shardcast::axum::Upgrade;
use shardcast::wire::handshake::Request;
use shardcast::{Audience, Context, Decision, Engine, Handler, Incoming, Payload, Principal};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The policy under test: subscribes `/ws?topic=T` to `T`, chooses `chat.v2` when offered,
/// refuses a request with `x-refuse` (403), and answers each text `t` with `echo:t`. Records the
/// peer address each decision saw.
#[derive(Clone, Default)]
struct Gate {
    peers: Arc<Mutex<Vec<Option<SocketAddr>>>>,
}

impl Handler for Gate {
    fn on_upgrade(&self, request: &Request<'_>, peer: Option<SocketAddr>) -> Decision {
        lock(&self.peers).push(peer);
        if request.header("x-refuse").is_some() {
            return Decision::reject(403, "refused by the handler");
        }
        let mut decision = Decision::accept();
        if request.protocols().any(|p| p == "chat.v2") {
            decision = decision.with_protocol("chat.v2");
        }
        if let Some(topic) = request.path().strip_prefix("/ws?topic=") {
            decision = decision.subscribe(topic);
        }
        decision
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if let Incoming::Text(text) = message {
            let id = ctx.id();
            ctx.send(id, Payload::text(format!("echo:{text}")));
        }
    }
}

/// `POST /publish[?topic=T]`, as in examples/axum.rs.
async fn publish(
    State(engine): State<Engine>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> StatusCode {
    let audience = match query.get("topic") {
        Some(topic) => Audience::topic(topic.as_str()),
        None => Audience::ALL,
    };
    let payload = Payload::text(String::from_utf8_lossy(&body));
    match engine.broadcast(payload, audience).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The routes under test: `/ws` (the extractor), `/publish`, `/health`.
fn app(engine: &Engine) -> Router {
    Router::new()
        .route("/ws", get(|upgrade: Upgrade| async { upgrade }))
        .route("/publish", post(publish))
        .route("/health", get(|| async { "ok" }))
        .with_state(engine.clone())
}

/// An engine with [`Gate`], and the gate to read what it saw.
fn engine() -> (Engine, Gate) {
    let gate = Gate::default();
    let engine = builder()
        .shards(2)
        .handler(gate.clone())
        .build()
        .expect("engine builds");
    (engine, gate)
}

/// Serves `app` with `axum::serve` on a loopback port of this runtime, with `ConnectInfo`.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    addr
}

/// A WebSocket client on `ws://addr{path}`, once the engine counts it.
async fn ws_connect(engine: &Engine, addr: SocketAddr, path: &str) -> Client {
    let before = engine.client_count();
    let (ws, response) = connect_to(format!("ws://{addr}{path}")).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    eventually(|| engine.client_count() > before).await;
    ws
}

/// The answer to an upgrade `request` that must be refused.
async fn refusal<R>(request: R) -> tungstenite::http::Response<Option<Vec<u8>>>
where
    R: IntoClientRequest + Unpin,
{
    let refused = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("answer in time");
    match refused {
        Err(tungstenite::Error::Http(response)) => *response,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The body of a refusal.
fn body(response: &tungstenite::http::Response<Option<Vec<u8>>>) -> &[u8] {
    response.body().as_deref().unwrap_or_default()
}

/// Drops `clients`, whose close frames the shutdown would otherwise wait for, and shuts
/// `engine` down.
async fn shut_down(engine: &Engine, clients: impl Sized) {
    drop(clients);
    engine.shutdown(Duration::from_secs(2)).await;
}

/// A request through hyper's HTTP/1 client: the status, headers and body of the answer.
async fn http(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http handshake");
        tokio::spawn(conn);
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("answer in time")
}

/// The upgrade request for `path` as raw HTTP/1.1.
fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends the upgrade request and a text frame `early` in one write (one segment on loopback),
/// so that the HTTP server reads the frame together with the request; returns the client once
/// it is upgraded and the handler has answered `early`.
async fn upgrade_with_early_frame(addr: SocketAddr, early: &str) -> RawClient {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut bytes = upgrade_request("/ws", "").into_bytes();
    bytes.extend_from_slice(&masked(0x81, early.as_bytes()));
    let mut client = RawClient::new(stream);
    client.send(&bytes).await.expect("send");
    let head = client.read_http_head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(raw_text(&mut client).await, format!("echo:{early}"));
    client
}

/// The next text frame the raw client reads.
async fn raw_text(client: &mut RawClient) -> String {
    let frame = client.read_frame().await.expect("a frame");
    assert_eq!(frame.opcode, 0x1, "a text frame");
    String::from_utf8(frame.payload).expect("utf-8")
}

#[tokio::test]
async fn upgraded_clients_receive_every_broadcast() {
    let (engine, gate) = engine();
    let addr = serve(app(&engine)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(ws_connect(&engine, addr, "/ws").await);
    }
    broadcast(&engine, "hello", Audience::ALL).await;
    for ws in &mut clients {
        assert_eq!(next_text(ws).await, "hello");
    }
    // `ConnectInfo` reached the decision: each peer is a loopback client address.
    let peers = lock(&gate.peers).clone();
    assert_eq!(peers.len(), 3);
    assert!(
        peers
            .iter()
            .all(|p| p.is_some_and(|p| p.ip().is_loopback())),
        "{peers:?}"
    );
    // The clients' own messages reach the handler, and its answers come back.
    send_text(&mut clients[0], "hi").await;
    assert_eq!(next_text(&mut clients[0]).await, "echo:hi");
    shut_down(&engine, clients).await;
}

#[tokio::test]
async fn publish_reaches_everyone_or_only_a_topics_subscribers() {
    let (engine, _) = engine();
    let addr = serve(app(&engine)).await;
    let mut news = ws_connect(&engine, addr, "/ws?topic=news").await;
    let mut other = ws_connect(&engine, addr, "/ws").await;
    let (status, _, _) = http(addr, "POST", "/publish?topic=news", &[], "n1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_text(&mut news).await, "n1");
    let (status, _, _) = http(addr, "POST", "/publish", &[], "all1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_text(&mut news).await, "all1");
    // `all1` was published after `n1`: had `other` received `n1`, it would come first.
    assert_eq!(next_text(&mut other).await, "all1");
    shut_down(&engine, (news, other)).await;
}

#[tokio::test]
async fn a_refusal_of_on_upgrade_is_answered_with_its_status_and_registers_nothing() {
    let (engine, _) = engine();
    let addr = serve(app(&engine)).await;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-refuse", HeaderValue::from_static("1"));
    let response = refusal(request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(&response), b"refused by the handler");
    // A client accepted after the refusal is the only one the engine ever had.
    let ws = ws_connect(&engine, addr, "/ws").await;
    assert_eq!(engine.client_count(), 1);
    assert_eq!(engine.connection_count(), 1);
    shut_down(&engine, ws).await;
}

#[tokio::test]
async fn a_request_over_clients_max_is_answered_503_before_any_upgrade() {
    let gate = Gate::default();
    let engine = builder()
        .shards(1)
        .clients_max(1)
        .handler(gate.clone())
        .build()
        .unwrap();
    let addr = serve(app(&engine)).await;
    let ws = ws_connect(&engine, addr, "/ws").await;
    let response = refusal(format!("ws://{addr}/ws")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body(&response), b"too many clients");
    assert_eq!(lock(&gate.peers).len(), 1, "the handler was asked");
    shut_down(&engine, ws).await;
}

#[tokio::test]
async fn the_subprotocol_the_handler_chose_is_answered() {
    let (engine, _) = engine();
    let addr = serve(app(&engine)).await;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("chat.v1, chat.v2"),
    );
    let (mut ws, response) = connect_to(request).await;
    assert_eq!(
        response.headers().get("sec-websocket-protocol"),
        Some(&HeaderValue::from_static("chat.v2"))
    );
    eventually(|| engine.client_count() == 1).await;
    broadcast(&engine, "v2", Audience::ALL).await;
    assert_eq!(next_text(&mut ws).await, "v2");
    shut_down(&engine, ws).await;
}

/// Refuses requests without `x-token: secret` with 401.
async fn require_token(request: HttpRequest, next: Next) -> Response {
    if request.headers().get("x-token") != Some(&HeaderValue::from_static("secret")) {
        return (StatusCode::UNAUTHORIZED, "token required").into_response();
    }
    next.run(request).await
}

/// Adds `x-served-by: axum` to every response.
async fn stamp(request: HttpRequest, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("x-served-by", HeaderValue::from_static("axum"));
    response
}

#[tokio::test]
async fn middleware_on_the_route_still_applies() {
    let (engine, gate) = engine();
    let app = Router::new()
        .route("/ws", get(|upgrade: Upgrade| async { upgrade }))
        .route_layer(middleware::from_fn(require_token))
        .layer(middleware::from_fn(stamp))
        .with_state(engine.clone());
    let addr = serve(app).await;

    // Without the token: the middleware answers, the engine never hears of it.
    let response = refusal(format!("ws://{addr}/ws")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers().get("x-served-by").unwrap(), "axum");
    assert!(lock(&gate.peers).is_empty(), "the handler was asked");

    // With it: the 101 carries the header the outer layer added.
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-token", HeaderValue::from_static("secret"));
    let (mut ws, response) = connect_to(request).await;
    assert_eq!(response.headers().get("x-served-by").unwrap(), "axum");
    eventually(|| engine.client_count() == 1).await;
    assert_eq!(engine.stats().total.handshakes_failed, 0);
    broadcast(&engine, "in", Audience::ALL).await;
    assert_eq!(next_text(&mut ws).await, "in");
    shut_down(&engine, ws).await;
}

#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_not_lost() {
    let (engine, _) = engine();
    let addr = serve(app(&engine)).await;
    for round in 0..5 {
        let early = format!("early{round}");
        let mut client = upgrade_with_early_frame(addr, &early).await;
        // And what follows the hand-over is read from the socket as usual.
        client.send(&masked(0x81, b"later")).await.unwrap();
        assert_eq!(raw_text(&mut client).await, "echo:later");
    }
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_plain_get_on_the_upgrade_route_is_a_clear_400() {
    let (engine, _) = engine();
    let addr = serve(app(&engine)).await;
    let (status, _, body) = http(addr, "GET", "/ws", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, "not an upgrade to websocket");
    // A wrong version names the one supported, as the engine's own listener does.
    let headers = [
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "8"),
    ];
    let (status, answer, _) = http(addr, "GET", "/ws", &headers, "").await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(answer.get("sec-websocket-version").unwrap(), "13");
    // The other routes are untouched.
    let (status, _, body) = http(addr, "GET", "/health", &[], "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(engine.connection_count(), 0);
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_socket_moves_to_its_shard_and_outlives_axums_runtime() {
    let (engine, _) = engine();
    // axum on a runtime of its own, which is shut down once the clients are connected.
    let axum_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let app = app(&engine);
    axum_runtime.spawn(async move {
        let listener = TcpListener::from_std(std_listener).unwrap();
        axum::serve(listener, app).await
    });
    let mut ws = ws_connect(&engine, addr, "/ws").await;
    let mut raw = upgrade_with_early_frame(addr, "first").await;
    eventually(|| engine.client_count() == 2).await;

    axum_runtime.shutdown_background();
    broadcast(&engine, "after", Audience::ALL).await;
    assert_eq!(next_text(&mut ws).await, "after");
    assert_eq!(raw_text(&mut raw).await, "after");
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "echo:still here");
    shut_down(&engine, (ws, raw)).await;
}

/// A TCP stream that is not a `TcpStream` to hyper (as a TLS stream is not): the extractor
/// cannot take the socket out of it.
struct Opaque(TcpStream);

impl AsyncRead for Opaque {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Opaque {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A listener whose connections are [`Opaque`].
struct OpaqueListener(TcpListener);

impl axum::serve::Listener for OpaqueListener {
    type Io = Opaque;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Opaque, SocketAddr) {
        loop {
            if let Ok((tcp, peer)) = self.0.accept().await {
                let _ = tcp.set_nodelay(true);
                return (Opaque(tcp), peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[tokio::test]
async fn a_connection_that_is_not_a_plain_tcp_stream_is_served_as_hypers_stream() {
    let (engine, gate) = engine();
    let listener = OpaqueListener(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.0.local_addr().unwrap();
    let app = app(&engine);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut ws = ws_connect(&engine, addr, "/ws?topic=t").await;
    let mut raw = upgrade_with_early_frame(addr, "first").await;
    eventually(|| engine.client_count() == 2).await;
    broadcast(&engine, "t1", Audience::topic("t")).await;
    broadcast(&engine, "all", Audience::ALL).await;
    assert_eq!(next_text(&mut ws).await, "t1");
    assert_eq!(next_text(&mut ws).await, "all");
    assert_eq!(raw_text(&mut raw).await, "all");
    // No `ConnectInfo` on this router: the decision saw no peer.
    assert_eq!(lock(&gate.peers).clone(), vec![None, None]);
    shut_down(&engine, (ws, raw)).await;
}

#[tokio::test]
async fn hypers_own_http1_connection_hands_over_its_socket_too() {
    let (engine, _) = engine();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app(&engine);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let app = app.clone();
            let service = hyper::service::service_fn(move |request| {
                tower_service::Service::call(&mut app.clone(), request)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades(),
            );
        }
    });
    let mut raw = upgrade_with_early_frame(addr, "first").await;
    eventually(|| engine.client_count() == 1).await;
    broadcast(&engine, "all", Audience::ALL).await;
    assert_eq!(raw_text(&mut raw).await, "all");
    shut_down(&engine, raw).await;
}

#[tokio::test]
async fn on_registered_learns_the_client_id() {
    let (engine, _) = engine();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let app = Router::new()
        .route(
            "/ws",
            get(move |upgrade: Upgrade| async move {
                upgrade.on_registered(move |registered| {
                    if let Some(tx) = lock(&tx).take() {
                        let _ = tx.send(registered);
                    }
                })
            }),
        )
        .with_state(engine.clone());
    let addr = serve(app).await;
    let mut ws = ws_connect(&engine, addr, "/ws").await;
    let id = tokio::time::timeout(WAIT, rx)
        .await
        .expect("told in time")
        .expect("told")
        .expect("registered");
    engine.send(id, Payload::text("just you")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "just you");
    shut_down(&engine, ws).await;
}

/// Who [`authenticate`] says the user is.
#[derive(Clone)]
struct User(&'static str);

/// Puts `User("alice")` in the extensions of a request with `x-token: secret`; lets every
/// request through.
async fn authenticate(mut request: HttpRequest, next: Next) -> Response {
    if request.headers().get("x-token") == Some(&HeaderValue::from_static("secret")) {
        request.extensions_mut().insert(User("alice"));
    }
    next.run(request).await
}

/// `/rooms?room=A&room=B`: subscribed to each room axum decoded, and authenticated as the
/// `User` the middleware found, if any.
async fn rooms(
    Query(query): Query<Vec<(String, String)>>,
    user: Option<Extension<User>>,
    upgrade: Upgrade,
) -> Upgrade {
    let upgrade = query
        .into_iter()
        .filter(|(name, _)| name == "room")
        .fold(upgrade, |upgrade, (_, room)| upgrade.subscribe(room));
    match user {
        Some(Extension(User(name))) => upgrade.authenticated(Principal::new(name)),
        None => upgrade,
    }
}

#[tokio::test]
async fn the_routes_extractors_subscribe_and_authenticate_the_client() {
    let (engine, _) = engine();
    let app = Router::new()
        .route("/rooms", get(rooms))
        .layer(middleware::from_fn(authenticate))
        .with_state(engine.clone());
    let addr = serve(app).await;
    let mut request = format!("ws://{addr}/rooms?room=news%2Fsport&room=caf%C3%A9+bar")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-token", HeaderValue::from_static("secret"));
    let (mut alice, response) = connect_to(request).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    eventually(|| engine.client_count() == 1).await;
    let mut anonymous = ws_connect(&engine, addr, "/rooms?room=other").await;

    broadcast(&engine, "sport", Audience::topic("news/sport")).await;
    broadcast(&engine, "cafe", Audience::topic("café bar")).await;
    broadcast(&engine, "members", Audience::AUTHENTICATED).await;
    broadcast(&engine, "other", Audience::topic("other")).await;
    for expected in ["sport", "cafe", "members"] {
        assert_eq!(next_text(&mut alice).await, expected);
    }
    // `other` was broadcast last: had `anonymous` received any of the others, it would come
    // first.
    assert_eq!(next_text(&mut anonymous).await, "other");
    let stats = engine.stats().total;
    assert_eq!((stats.topics, stats.subscriptions), (3, 3));
    shut_down(&engine, (alice, anonymous)).await;
}

#[tokio::test]
async fn a_topic_past_the_limits_from_the_route_is_answered_400_and_registers_nothing() {
    let (engine, _) = engine();
    let app = Router::new()
        .route("/rooms", get(rooms))
        .with_state(engine.clone());
    let addr = serve(app).await;
    let long = "x".repeat(engine.config().topic_bytes_max + 1);
    for query in [format!("room=ok&room={long}"), "room=".to_owned()] {
        let response = refusal(format!("ws://{addr}/rooms?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let reason = String::from_utf8_lossy(body(&response)).into_owned();
        assert!(reason.contains("topic name"), "{reason}");
    }
    // Well within the limits, the same route upgrades.
    let ws = ws_connect(&engine, addr, "/rooms?room=ok").await;
    assert_eq!(engine.client_count(), 1);
    assert_eq!(engine.stats().total.handshakes_failed, 0);
    shut_down(&engine, ws).await;
}
