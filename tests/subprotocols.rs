//! Subprotocol negotiation (`Sec-WebSocket-Protocol`): the first subprotocol of
//! `Builder::protocols`, in that list's order, that the client offered is answered; a handler's `Decision` can choose
//! itself; a client that offered subprotocols and would get none is refused with 400 and a
//! reason, and counted, never accepted into a connection it would fail (a browser's 1006). On
//! the engine's own listener, through `Engine::decide`, through axum, and through `shardcast
//! serve --protocols`.

mod common;

use common::*;
use shardcast::wire::handshake::Request;
use shardcast::{BuildError, Decision, Engine, Handler};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request as ClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A tungstenite upgrade request for `url` offering `offers` (one header, as sent).
fn offering(url: &str, offers: &str) -> ClientRequest {
    let mut request = url.into_client_request().expect("a ws:// url");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(offers).expect("a header value"),
    );
    request
}

/// Connects with `request` (tungstenite checks the answer as a browser does: a subprotocol it
/// did not offer, or none when it offered some, fails the handshake); returns the subprotocol
/// answered.
async fn negotiated(request: ClientRequest) -> (Client, Option<String>) {
    let (ws, response) = connect_to(request).await;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (ws, protocol)
}

/// An HTTP answer read off a raw socket: its head (through the blank line) and, for a refusal,
/// its body (`Content-Length` bytes).
#[derive(Debug)]
struct Answer {
    /// The status line and headers.
    head: String,
    /// The body (empty for a 101).
    body: String,
    /// The connection, kept open: after a 101 the client stays registered while it is.
    stream: TcpStream,
}

impl Answer {
    /// The status code.
    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", self.head))
    }

    /// The value of the header `name` (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends an upgrade request for `/` with the extra header lines `extra` (each ending in CRLF)
/// to `addr` and reads the answer: the head, and the body of a refusal.
async fn raw_upgrade(addr: SocketAddr, extra: &str) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {extra}\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0; 1024];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed inside the head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).expect("ascii head");
        let mut answer = Answer {
            head,
            body: String::new(),
            stream,
        };
        let length: usize = answer
            .header("content-length")
            .map_or(0, |v| v.parse().expect("a length"));
        let mut body = buf[end..].to_vec();
        while body.len() < length {
            let mut chunk = [0; 1024];
            let n = answer.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        answer.body = String::from_utf8(body).expect("utf-8 body");
        answer
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("answered in time")
}

/// Upgrades refused by the policy so far, over every shard.
fn refused(engine: &Engine) -> u64 {
    engine.stats().total.handshake_failures.refused
}

/// Picks `v2` whenever the client offers it (whatever the engine's list), answers no
/// subprotocol to a client asking for `legacy`, and otherwise leaves the choice to the engine.
struct PrefersV2;

impl Handler for PrefersV2 {
    fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
        if request.protocols().any(|p| p == "v2") {
            Decision::accept().with_protocol("v2")
        } else if request.protocols().any(|p| p == "legacy") {
            Decision::accept().without_protocol()
        } else {
            Decision::accept()
        }
    }
}

/// Chooses `v9` for everyone, offered or not.
struct AlwaysV9;

impl Handler for AlwaysV9 {
    fn on_upgrade(&self, _request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
        Decision::accept().with_protocol("v9")
    }
}

#[tokio::test]
async fn the_first_subprotocol_of_the_servers_list_that_the_client_offered_is_answered() {
    let (engine, addr) = start(builder().shards(2).protocols(["b", "a", "c"])).await;
    let url = format!("ws://{addr}/");
    // The list's order wins over the client's, as with axum: b before a.
    let (first, protocol) = negotiated(offering(&url, "a, b")).await;
    assert_eq!(protocol.as_deref(), Some("b"));
    // Offers the server does not support are passed over.
    let (second, protocol) = negotiated(offering(&url, "mqtt, c, a")).await;
    assert_eq!(protocol.as_deref(), Some("a"));
    eventually(|| engine.client_count() == 2).await;
    broadcast(&engine, "both", shardcast::Audience::ALL).await;
    let mut clients = vec![first, second];
    for ws in &mut clients {
        assert_eq!(next_text(ws).await, "both");
    }
    assert_eq!(refused(&engine), 0);
    shutdown_reading(&engine, clients).await;
}

#[tokio::test]
async fn a_client_offering_only_unsupported_subprotocols_is_refused_with_400_and_counted() {
    let (recorder, events) = Recorder::new();
    let (engine, addr) = start(
        builder()
            .shards(2)
            .protocols(["v1.chat", "v2.chat"])
            .handler(recorder),
    )
    .await;
    let answer = raw_upgrade(addr, "Sec-WebSocket-Protocol: mqtt, graphql-ws\r\n").await;
    assert_eq!(answer.status(), 400, "{answer:?}");
    assert_eq!(
        answer.body,
        "no offered subprotocol is supported (supported: v1.chat, v2.chat)"
    );
    // What a browser-like client sees: an HTTP error, not a 101 and a 1006.
    let refusal = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(offering(&format!("ws://{addr}/"), "mqtt")),
    )
    .await
    .expect("answered in time");
    match refusal {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400);
        }
        other => panic!("expected a 400 refusal, got {other:?}"),
    }
    until(
        || refused(&engine) == 2,
        || format!("2 refusals counted, {}", refused(&engine)),
    )
    .await;
    assert_eq!(engine.stats().total.handshakes_failed, 2);
    assert_eq!(engine.client_count(), 0);
    assert!(events.registered().is_empty(), "no client was registered");
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn without_a_list_a_client_offering_subprotocols_is_refused_naming_none_supported() {
    let (engine, addr) = start(builder().shards(1)).await;
    let answer = raw_upgrade(addr, "Sec-WebSocket-Protocol: v1.chat\r\n").await;
    assert_eq!(answer.status(), 400, "{answer:?}");
    assert_eq!(
        answer.body,
        "no offered subprotocol is supported (supported: none)"
    );
    eventually(|| refused(&engine) == 1).await;
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_client_offering_nothing_is_accepted_without_the_header() {
    let (engine, addr) = start(builder().shards(1).protocols(["v1.chat"])).await;
    let (ws, protocol) = negotiated(format!("ws://{addr}/").into_client_request().unwrap()).await;
    assert_eq!(protocol, None);
    // A header with empty list items only offers nothing (RFC 9110 5.6.1).
    for empty in ["", " ", ", ,", "\t,"] {
        let answer = raw_upgrade(addr, &format!("Sec-WebSocket-Protocol:{empty}\r\n")).await;
        assert_eq!(answer.status(), 101, "{empty:?}: {answer:?}");
        assert_eq!(answer.header("sec-websocket-protocol"), None, "{empty:?}");
    }
    assert_eq!(refused(&engine), 0);
    shutdown_reading(&engine, vec![ws]).await;
}

#[tokio::test]
async fn offers_are_read_as_a_list_across_headers_with_optional_whitespace_and_empty_items() {
    let (engine, addr) = start(builder().shards(1).protocols(["v2.chat", "v1.chat"])).await;
    // The client offers x, v1.chat, v2.chat: v2.chat comes first in the server's list.
    let accepted = raw_upgrade(
        addr,
        "Sec-WebSocket-Protocol: ,  x ,,\t v1.chat\t,\r\nSec-WebSocket-Protocol: v2.chat\r\n",
    )
    .await;
    assert_eq!(accepted.status(), 101, "{accepted:?}");
    assert_eq!(accepted.header("sec-websocket-protocol"), Some("v2.chat"));
    // Gone before the shutdown, which would wait for its close frame.
    drop(accepted);
    // Names are compared exactly, case included (a browser compares the answer so).
    let answer = raw_upgrade(addr, "Sec-WebSocket-Protocol: V1.CHAT\r\n").await;
    assert_eq!(answer.status(), 400, "{answer:?}");
    // An item that is not a token is never a supported name.
    let answer = raw_upgrade(addr, "Sec-WebSocket-Protocol: \"v1.chat\", v1 .chat\r\n").await;
    assert_eq!(answer.status(), 400, "{answer:?}");
    eventually(|| refused(&engine) == 2).await;
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_handlers_choice_wins_over_the_list_and_it_can_choose_none() {
    let (engine, addr) = start(builder().shards(1).protocols(["v1"]).handler(PrefersV2)).await;
    let url = format!("ws://{addr}/");
    // Chosen by the handler, though the engine's list would answer v1.
    let (chosen, protocol) = negotiated(offering(&url, "v1, v2")).await;
    assert_eq!(protocol.as_deref(), Some("v2"));
    // Left to the engine.
    let (listed, protocol) = negotiated(offering(&url, "v3, v1")).await;
    assert_eq!(protocol.as_deref(), Some("v1"));
    // Declined by the handler: accepted without the header, though the client offered one.
    let answer = raw_upgrade(addr, "Sec-WebSocket-Protocol: legacy\r\n").await;
    assert_eq!(answer.status(), 101, "{answer:?}");
    assert_eq!(answer.header("sec-websocket-protocol"), None);
    eventually(|| engine.client_count() == 3).await;
    assert_eq!(refused(&engine), 0);
    drop(answer.stream);
    shutdown_reading(&engine, vec![chosen, listed]).await;
}

#[tokio::test]
async fn a_handler_choosing_a_subprotocol_the_client_did_not_offer_is_refused_with_400() {
    let (engine, addr) = start(builder().shards(1).protocols(["v1"]).handler(AlwaysV9)).await;
    let expected = "subprotocol \"v9\" chosen by the server was not offered";
    let answer = raw_upgrade(addr, "Sec-WebSocket-Protocol: v1\r\n").await;
    assert_eq!((answer.status(), answer.body.as_str()), (400, expected));
    // Offering nothing does not let the server answer a subprotocol either.
    let answer = raw_upgrade(addr, "").await;
    assert_eq!((answer.status(), answer.body.as_str()), (400, expected));
    // Offered, it is answered.
    let (ws, protocol) = negotiated(offering(&format!("ws://{addr}/"), "v9")).await;
    assert_eq!(protocol.as_deref(), Some("v9"));
    eventually(|| refused(&engine) == 2).await;
    shutdown_reading(&engine, vec![ws]).await;
}

#[tokio::test]
async fn engine_decide_negotiates_as_the_shards_do() {
    let engine = builder()
        .shards(1)
        .protocols(["graphql-transport-ws", "graphql-ws"])
        .build()
        .unwrap();
    let decide = |offers: Option<&str>| {
        let mut headers = UPGRADE_HEADERS.to_vec();
        headers.extend(offers.map(|o| ("Sec-WebSocket-Protocol", o)));
        let request = Request::new("/", headers).expect("valid");
        engine
            .decide(&request, None)
            .map(|a| a.protocol().map(str::to_owned))
    };
    assert_eq!(
        decide(Some("graphql-ws, graphql-transport-ws")),
        Ok(Some("graphql-transport-ws".to_owned()))
    );
    assert_eq!(decide(None), Ok(None));
    let refused = decide(Some("mqtt")).unwrap_err();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.body(),
        "no offered subprotocol is supported (supported: graphql-transport-ws, graphql-ws)"
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn a_subprotocol_that_is_not_a_token_is_refused_at_build_naming_it() {
    for bad in ["", "v1 chat", "a,b", "a/b", "\"q\"", "ü"] {
        match Engine::builder().protocols(["ok", bad]).build() {
            Err(BuildError::InvalidProtocol(name)) => {
                assert_eq!(name, bad);
                let message = BuildError::InvalidProtocol(name).to_string();
                assert!(
                    message.starts_with(&format!("invalid protocols: {bad:?} is not a token")),
                    "{message}"
                );
            }
            other => panic!("{bad:?}: expected InvalidProtocol, got {other:?}"),
        }
    }
    let engine = Engine::builder()
        .shards(1)
        .protocols([
            "v1.chat",
            "mqtt",
            "graphql-transport-ws",
            "x!#$%&'*+-.^_`|~",
        ])
        .build()
        .expect("tokens are valid");
    assert_eq!(engine.config().protocols.len(), 4);
    assert!(
        Engine::builder()
            .build()
            .unwrap()
            .config()
            .protocols
            .is_empty()
    );
}

#[cfg(feature = "axum")]
mod through_axum {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use shardcast::axum::Upgrade;
    use tokio::net::TcpListener;

    /// Serves `/` (the extractor) for `engine` on a loopback port.
    async fn serve(engine: &Engine) -> SocketAddr {
        let app = Router::new()
            .route("/", get(|upgrade: Upgrade| async { upgrade }))
            .with_state(engine.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn axum_answers_the_first_supported_offer_and_refuses_unmatched_offers_with_400() {
        let engine = builder()
            .shards(1)
            .protocols(["b", "a"])
            .handler(PrefersV2)
            .build()
            .unwrap();
        let addr = serve(&engine).await;
        let url = format!("ws://{addr}/");
        let (first, protocol) = negotiated(offering(&url, "a, b")).await;
        assert_eq!(protocol.as_deref(), Some("b"), "the list's order");
        let (chosen, protocol) = negotiated(offering(&url, "a, v2")).await;
        assert_eq!(protocol.as_deref(), Some("v2"), "the handler's choice");
        let (plain, protocol) = negotiated(url.as_str().into_client_request().unwrap()).await;
        assert_eq!(protocol, None);
        let answer = raw_upgrade(addr, "Sec-WebSocket-Protocol: mqtt\r\n").await;
        assert_eq!(answer.status(), 400, "{answer:?}");
        assert_eq!(
            answer.body,
            "no offered subprotocol is supported (supported: b, a)"
        );
        eventually(|| engine.client_count() == 3).await;
        shutdown_reading(&engine, vec![first, chosen, plain]).await;
    }
}

#[cfg(feature = "cli")]
mod through_serve {
    use super::*;
    use common::serve::{Serve, run_to_end, shardcast};

    #[tokio::test]
    async fn serve_protocols_answers_a_listed_offer_and_refuses_others_with_400() {
        for flags in [
            &["--protocols", "v2.chat,v1.chat"][..],
            &["--protocols", "v2.chat,v1.chat", "--axum"],
        ] {
            let serve = Serve::start(flags);
            let addr: SocketAddr = serve.addr.parse().expect("an address");
            let url = format!("ws://{addr}/");
            let (ws, protocol) = negotiated(offering(&url, "v1.chat")).await;
            assert_eq!(protocol.as_deref(), Some("v1.chat"), "{flags:?}");
            let answer = raw_upgrade(addr, "Sec-WebSocket-Protocol: mqtt\r\n").await;
            assert_eq!(answer.status(), 400, "{flags:?}: {answer:?}");
            assert_eq!(
                answer.body,
                "no offered subprotocol is supported (supported: v2.chat, v1.chat)"
            );
            drop(ws);
        }
    }

    #[test]
    fn serve_refuses_a_protocol_that_is_not_a_token_naming_the_flag() {
        let (status, _, stderr) = run_to_end(
            &mut shardcast([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--protocols",
                "v1,v2 beta",
            ]),
            Duration::from_secs(30),
        );
        assert!(!status.success(), "{stderr}");
        let line = stderr.lines().next().unwrap_or_default();
        assert!(
            line.contains("--protocols") && line.contains("\"v2 beta\""),
            "{stderr}"
        );
    }
}
