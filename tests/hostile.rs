//! Hostile clients: slowloris upgrades, malformed upgrade requests, protocol violations by the
//! dozen and ten thousand connections dropped at random points (a stress test, ignored by
//! default). Each is refused, closed or forgotten with its HTTP status or close code and counted
//! in `Engine::stats`, while healthy clients receiving a stream of broadcasts at the same time
//! lose nothing.

mod common;

use common::*;
use shardcast::{Engine, RemoveReason};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Healthy clients watching the broadcast stream in every test.
const HEALTHY: usize = 3;

/// Largest inbound message and frame in the protocol tests.
const MAX_MESSAGE: usize = 1000;

/// The only `Origin` the handshake tests allow.
const GOOD_ORIGIN: &str = "https://good.example";

/// A well-formed `Sec-WebSocket-Key`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

// ---------------------------------------------------------------------------------------------
// Healthy clients watching a broadcast stream (`Watch`, in tests/common)
// ---------------------------------------------------------------------------------------------

/// Waits until the engine holds exactly `n` connections, all registered.
async fn settle(engine: &Engine, n: usize) {
    until(
        || engine.connection_count() == n && engine.client_count() == n,
        || {
            format!(
                "{n} connections and clients; have {} connections, {} clients",
                engine.connection_count(),
                engine.client_count()
            )
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------------------------

/// How the server ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// A FIN: read returned 0.
    Eof,
    /// A reset or other error.
    Reset(std::io::ErrorKind),
}

async fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// Reads until the server closes the connection (bounded by [`WAIT`]).
async fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut got = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let read = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("the server closes the connection in time");
        match read {
            Ok(0) => return (got, Ending::Eof),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => return (got, Ending::Reset(e.kind())),
        }
    }
}

/// Reads an HTTP response head (through the blank line); returns it.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read response");
        assert_eq!(n, 1, "connection closed inside the response head");
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// An HTTP response as the client saw it.
#[derive(Debug)]
struct Response {
    /// The status code.
    status: u16,
    /// Status line and headers.
    head: String,
    /// Everything after the blank line.
    body: Vec<u8>,
}

impl Response {
    /// Parses `bytes`, or `None` if they do not hold a response head.
    fn parse(bytes: &[u8]) -> Option<Response> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(Response {
            status,
            head,
            body: bytes[end + 4..].to_vec(),
        })
    }

    /// Whether the head has this header line (name case-insensitive, value exact).
    fn has_header(&self, name: &str, value: &str) -> bool {
        self.head.lines().skip(1).any(|line| {
            line.split_once(':')
                .is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim() == value)
        })
    }

    /// The `Content-Length` value.
    fn content_length(&self) -> Option<usize> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
    }
}

/// An upgrade request from [`GOOD_ORIGIN`] with `changes` applied: each sets a header to a
/// value, adds it, or (`None`) removes it.
fn request(method: &str, changes: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut headers = vec![
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
        ("Origin", GOOD_ORIGIN),
    ];
    for &(name, value) in changes {
        let at = headers.iter().position(|(n, _)| *n == name);
        match (at, value) {
            (Some(i), Some(value)) => headers[i].1 = value,
            (Some(i), None) => {
                headers.remove(i);
            }
            (None, Some(value)) => headers.push((name, value)),
            (None, None) => {}
        }
    }
    let mut out = format!("{method} / HTTP/1.1\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Connects a healthy client that sends `Origin: origin`, and waits until it is registered.
async fn connect_from(engine: &Engine, addr: SocketAddr, origin: &str) -> Client {
    let before = engine.client_count();
    let mut request = format!("ws://{addr}/")
        .into_client_request()
        .expect("client request");
    request.headers_mut().insert(
        "Origin",
        HeaderValue::from_str(origin).expect("origin header"),
    );
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")
        .expect("upgrade accepted");
    eventually(|| engine.client_count() > before).await;
    ws
}

// ---------------------------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------------------------

/// What a slowloris saw.
#[derive(Debug)]
struct Dribbled {
    /// From before `connect` until the server ended the connection.
    elapsed: Duration,
    /// Bytes of the request written by then.
    sent: usize,
    /// Whatever the server sent.
    reply: Vec<u8>,
}

/// Dribbles a valid upgrade request one byte every 50 ms until the server ends the connection.
async fn slowloris(addr: SocketAddr) -> Dribbled {
    let request = request("GET", &[]);
    let started = Instant::now();
    let stream = connect_tcp(addr).await;
    let (mut rx, mut tx) = stream.into_split();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let give_up = tokio::time::sleep(WAIT);
    tokio::pin!(give_up);
    let (mut sent, mut reply, mut chunk) = (0, Vec::new(), [0; 1024]);
    loop {
        tokio::select! {
            read = rx.read(&mut chunk) => match read {
                Ok(0) | Err(_) => {
                    return Dribbled { elapsed: started.elapsed(), sent, reply };
                }
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
            },
            _ = tick.tick(), if sent < request.len() => {
                // Once the server has hung up, writes fail; the read arm reports it.
                if tx.write_all(&request[sent..=sent]).await.is_ok() {
                    sent += 1;
                }
            }
            () = &mut give_up => panic!("the server never hung up on a slowloris"),
        }
    }
}

#[tokio::test]
async fn a_slowloris_upgrade_is_cut_off_at_the_handshake_deadline() {
    const DEADLINE: Duration = Duration::from_millis(300);
    /// Room for a loaded 2-core machine; the point is "about the deadline", not "after 10 s".
    const MARGIN: Duration = Duration::from_millis(1500);
    const LORISES: usize = 4;
    let builder = builder().shards(2).handshake_deadline(DEADLINE);
    let (engine, addr) = start(builder).await;
    let watch = Watch::start(&engine, connect_many(&engine, addr, HEALTHY).await).await;

    let mut lorises = JoinSet::new();
    for _ in 0..LORISES {
        lorises.spawn(slowloris(addr));
    }
    let request_len = request("GET", &[]).len();
    while let Some(done) = lorises.join_next().await {
        let loris = done.expect("slowloris task");
        println!("slowloris: {loris:?}");
        assert!(
            loris.elapsed >= DEADLINE,
            "cut off before the deadline: {loris:?}"
        );
        assert!(
            loris.elapsed <= DEADLINE + MARGIN,
            "cut off long after the deadline: {loris:?}"
        );
        assert!(
            loris.sent < request_len,
            "the request was still unfinished: {loris:?}"
        );
        assert!(
            !loris.reply.starts_with(b"HTTP/1.1 101"),
            "a half request was upgraded: {loris:?}"
        );
    }
    let failed = || engine.stats().total.handshakes_failed;
    until(
        || failed() >= LORISES as u64,
        || format!("handshakes_failed reaches {LORISES}, is {}", failed()),
    )
    .await;
    assert_eq!(failed(), LORISES as u64);
    settle(&engine, HEALTHY).await;

    let clients = watch.finish().await;
    assert_eq!(engine.stats().total.evicted.protocol, 0);
    assert_eq!(
        shutdown_reading(&engine, clients).await,
        [Some(1001); HEALTHY]
    );
}

/// The handshake deadline in the timeout tests below.
const SHORT_DEADLINE: Duration = Duration::from_millis(200);

/// Connects, sends `sent` (maybe nothing), and waits for the server to end the connection,
/// which it must do at `SHORT_DEADLINE` at the earliest. Returns what the server sent, and
/// checks that the attempt counted as one failed handshake and left no connection behind.
async fn wait_out_the_handshake_deadline(sent: &[u8]) -> (Vec<u8>, Ending) {
    let builder = builder().shards(2).handshake_deadline(SHORT_DEADLINE);
    let (engine, addr) = start(builder).await;
    let started = Instant::now();
    let mut stream = connect_tcp(addr).await;
    stream.write_all(sent).await.expect("write the request");
    let (reply, ending) = read_to_close(&mut stream).await;
    assert!(
        started.elapsed() >= SHORT_DEADLINE,
        "ended after {:?}, before the deadline",
        started.elapsed()
    );
    let failed = || engine.stats().total.handshakes_failed;
    until(|| failed() >= 1, || "handshakes_failed moves".into()).await;
    assert_eq!(failed(), 1);
    settle(&engine, 0).await;
    engine.shutdown(WAIT).await;
    (reply, ending)
}

#[tokio::test]
async fn a_request_unfinished_at_the_handshake_deadline_is_answered_408_then_closed() {
    // The request line and a header, but no blank line: the request never completes.
    let (reply, ending) = wait_out_the_handshake_deadline(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    let response = Response::parse(&reply).unwrap_or_else(|| {
        panic!(
            "no HTTP response before the close ({ending:?}): {:?}",
            String::from_utf8_lossy(&reply)
        )
    });
    assert!(
        response
            .head
            .starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{}",
        response.head
    );
    assert!(
        response.has_header("Connection", "close"),
        "{}",
        response.head
    );
    // The whole response, then EOF (not a reset): nothing more, nothing cut.
    assert_eq!(
        response.content_length(),
        Some(response.body.len()),
        "{response:?}"
    );
    assert_eq!(ending, Ending::Eof);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_handshake_deadline_without_a_word() {
    let (reply, ending) = wait_out_the_handshake_deadline(b"").await;
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "",
        "a client that said nothing got an answer"
    );
    assert_eq!(ending, Ending::Eof);
}

// ---------------------------------------------------------------------------------------------
// Malformed upgrade requests
// ---------------------------------------------------------------------------------------------

/// A request the engine must refuse.
struct Refusal {
    /// What is wrong with it.
    name: &'static str,
    /// The bytes sent.
    request: Vec<u8>,
    /// The status it must be answered with.
    status: u16,
    /// A header line the answer must carry.
    header: Option<(&'static str, &'static str)>,
}

/// Sends `request` on a fresh connection and reads until the server ends it.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, Ending) {
    let mut stream = connect_tcp(addr).await;
    // The server may refuse (and close) before it has read everything; what it says counts.
    let _ = tokio::time::timeout(WAIT, stream.write_all(request))
        .await
        .expect("write in time");
    read_to_close(&mut stream).await
}

#[tokio::test]
async fn each_malformed_upgrade_request_is_refused_with_its_status_and_closed() {
    let builder = builder()
        .shards(2)
        .handshake_bytes_max(1024)
        .allowed_origins(Some(vec![GOOD_ORIGIN.into()]));
    let (engine, addr) = start(builder).await;
    let mut healthy = Vec::with_capacity(HEALTHY);
    for _ in 0..HEALTHY {
        healthy.push(connect_from(&engine, addr, GOOD_ORIGIN).await);
    }
    let watch = Watch::start(&engine, healthy).await;

    // The base request is accepted: each refusal below is for its one change.
    let mut control = connect_tcp(addr).await;
    control.write_all(&request("GET", &[])).await.unwrap();
    let head = read_head(&mut control).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "control refused: {head}");
    drop(control);

    let padding = "a".repeat(4096);
    let tls_client_hello = [
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5b, 0x90, 0x9d, 0x9b,
    ];
    let refusals = [
        Refusal {
            name: "a TLS client hello",
            request: tls_client_hello.to_vec(),
            status: 400,
            header: None,
        },
        Refusal {
            name: "text that is not HTTP",
            request: b"hello, is this the websocket?\r\n\r\n".to_vec(),
            status: 400,
            header: None,
        },
        Refusal {
            name: "no Sec-WebSocket-Key",
            request: request("GET", &[("Sec-WebSocket-Key", None)]),
            status: 400,
            header: None,
        },
        Refusal {
            name: "a Sec-WebSocket-Key of 10 bytes",
            request: request("GET", &[("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZQ=="))]),
            status: 400,
            header: None,
        },
        Refusal {
            name: "a Sec-WebSocket-Key of 24 characters that is not base64",
            request: request(
                "GET",
                &[("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZSBub25jZ!!!"))],
            ),
            status: 400,
            header: None,
        },
        Refusal {
            name: "no Upgrade header",
            request: request("GET", &[("Upgrade", None)]),
            status: 400,
            header: None,
        },
        Refusal {
            name: "Sec-WebSocket-Version: 8",
            request: request("GET", &[("Sec-WebSocket-Version", Some("8"))]),
            status: 426,
            header: Some(("Sec-WebSocket-Version", "13")),
        },
        Refusal {
            name: "an Origin not allowed",
            request: request("GET", &[("Origin", Some("https://evil.example"))]),
            status: 403,
            header: None,
        },
        Refusal {
            name: "no Origin where one is required",
            request: request("GET", &[("Origin", None)]),
            status: 403,
            header: None,
        },
        Refusal {
            name: "4 KiB of headers past handshake_bytes_max = 1024",
            request: request("GET", &[("X-Padding", Some(&padding))]),
            status: 431,
            header: None,
        },
        Refusal {
            name: "POST",
            request: request("POST", &[]),
            status: 405,
            header: Some(("Allow", "GET")),
        },
    ];

    for refusal in &refusals {
        let name = refusal.name;
        let failed_before = engine.stats().total.handshakes_failed;
        let (bytes, ending) = exchange(addr, &refusal.request).await;
        let response = Response::parse(&bytes).unwrap_or_else(|| {
            panic!(
                "{name}: no HTTP response before the close ({ending:?}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        println!("refusal: {name}: {}, then {ending:?}", response.status);
        assert_eq!(response.status, refusal.status, "{name}: {}", response.head);
        if let Some((header, value)) = refusal.header {
            assert!(
                response.has_header(header, value),
                "{name}: no `{header}: {value}` in {}",
                response.head
            );
        }
        // The whole response, then the close (`exchange` returned): nothing more, nothing cut.
        assert_eq!(
            response.content_length(),
            Some(response.body.len()),
            "{name}: {response:?}"
        );
        let failed = || engine.stats().total.handshakes_failed;
        until(
            || failed() > failed_before,
            || format!("{name}: handshakes_failed moves past {failed_before}"),
        )
        .await;
        assert_eq!(failed(), failed_before + 1, "{name}");
    }
    assert_eq!(
        engine.stats().total.handshakes_failed,
        refusals.len() as u64
    );
    settle(&engine, HEALTHY).await;

    let clients = watch.finish().await;
    assert_eq!(
        shutdown_reading(&engine, clients).await,
        [Some(1001); HEALTHY]
    );
}

#[tokio::test]
async fn headers_past_a_handshake_bytes_max_that_is_not_a_power_of_two_are_refused_with_431() {
    // 1100 bytes: the upgrade's read buffer grows 512 -> 1024, and at 1024 read bytes the room
    // left (76 bytes) is less than the smallest growth step.
    let builder = builder().shards(2).handshake_bytes_max(1100);
    let (engine, addr) = start(builder).await;
    let watch = Watch::start(&engine, connect_many(&engine, addr, HEALTHY).await).await;

    let padding = "a".repeat(2048);
    let (bytes, ending) = exchange(addr, &request("GET", &[("X-Padding", Some(&padding))])).await;
    let response = Response::parse(&bytes).unwrap_or_else(|| {
        panic!(
            "no HTTP response before the close ({ending:?}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(response.status, 431, "{}", response.head);
    let failed = || engine.stats().total.handshakes_failed;
    until(|| failed() >= 1, || "handshakes_failed moves".into()).await;
    assert_eq!(failed(), 1);
    settle(&engine, HEALTHY).await;

    let clients = watch.finish().await;
    assert_eq!(
        shutdown_reading(&engine, clients).await,
        [Some(1001); HEALTHY]
    );
}

// ---------------------------------------------------------------------------------------------
// Protocol violations
// ---------------------------------------------------------------------------------------------

/// A protocol violation: what a raw client sends after its upgrade (each chunk in its own
/// write), and the close code it must receive.
#[derive(Clone, Debug)]
struct Violation {
    name: &'static str,
    chunks: Vec<Vec<u8>>,
    code: u16,
}

fn violation(name: &'static str, chunks: &[Vec<u8>], code: u16) -> Violation {
    Violation {
        name,
        chunks: chunks.to_vec(),
        code,
    }
}

/// A masked close frame with `code` and `reason`.
fn close_with(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason);
    masked(0x88, &body)
}

/// A masked binary frame header announcing 2^63 + 16 bytes (the top bit must be 0), and a
/// few payload bytes.
fn top_bit_length() -> Vec<u8> {
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&((1u64 << 63) + 16).to_be_bytes());
    frame.extend_from_slice(&MASK);
    frame.extend_from_slice(b"0123456789abcdef");
    frame
}

/// Close codes that no endpoint may send (RFC 6455 7.4), not already in tests/protocol.rs.
const FORBIDDEN_CLOSE_CODES: [u16; 6] = [1004, 1006, 1015, 1016, 2999, 5000];

/// The violations tests/protocol.rs does not check one by one.
fn new_violations() -> Vec<Violation> {
    let mut rows = vec![
        violation(
            "a close frame with a 1-byte payload",
            &[masked(0x88, &[0x03])],
            1002,
        ),
        violation(
            "a close reason that is not UTF-8",
            &[close_with(1000, b"bye \xff\xfe")],
            1007,
        ),
        violation(
            "a 64-bit length with the top bit set",
            &[top_bit_length()],
            1002,
        ),
        violation(
            "a text frame inside a fragmented message",
            &[masked(0x01, b"first half"), masked(0x81, b"intruder")],
            1002,
        ),
        violation(
            "an undefined control opcode (0xB)",
            &[masked(0x8b, b"")],
            1002,
        ),
        violation("RSV3 set", &[masked(0x80 | 0x10 | 0x2, b"hello")], 1002),
    ];
    for code in FORBIDDEN_CLOSE_CODES {
        rows.push(violation(
            "a close code no endpoint may send",
            &[close_with(code, b"")],
            1002,
        ));
    }
    rows
}

/// Every violation in the brief, those of tests/protocol.rs included.
fn all_violations() -> Vec<Violation> {
    let part = [b'f'; 400];
    let mut rows = vec![
        violation(
            "a frame over the size limit",
            &[masked(0x82, &[7; 2 * MAX_MESSAGE])],
            1009,
        ),
        violation(
            "a message over the size limit across fragments",
            &[
                masked(0x01, &part),
                masked(0x00, &part),
                masked(0x80, &part),
            ],
            1009,
        ),
        violation(
            "invalid UTF-8 in a text message",
            &[masked(0x81, b"ok \xc3\x28 not ok")],
            1007,
        ),
        violation(
            "invalid UTF-8 split across fragments",
            &[masked(0x01, b"ab\xf0\x9f"), masked(0x00, b"\x28cd")],
            1007,
        ),
        violation("an unmasked frame", &[unmasked(0x81, b"hello")], 1002),
        violation("RSV1 set", &[masked(0x80 | 0x40 | 0x1, b"hello")], 1002),
        violation("an undefined data opcode (0x3)", &[masked(0x83, b"")], 1002),
        violation("a fragmented ping", &[masked(0x09, b"ping")], 1002),
        violation("a ping of 126 bytes", &[masked(0x89, &[b'p'; 126])], 1002),
        violation(
            "a continuation without a start",
            &[masked(0x80, b"orphan")],
            1002,
        ),
        violation("close code 999", &[close_with(999, b"")], 1002),
        violation("close code 1005", &[close_with(1005, b"")], 1002),
    ];
    rows.extend(new_violations());
    rows
}

/// Runs `copies` raw clients per violation, all at once, while healthy clients watch; checks
/// that each violator alone is closed with its code, and counted once.
async fn violations_close_only_their_clients(violations: &[Violation], copies: usize) {
    let builder = builder().shards(2).max_message_size(MAX_MESSAGE);
    let (engine, addr, events) = start_recording(builder).await;
    let (healthy, healthy_ids) = connect_many_with_ids(&engine, addr, &events, HEALTHY).await;
    let watch = Watch::start(&engine, healthy).await;
    let healthy_ids: HashSet<_> = healthy_ids.into_iter().collect();
    assert_eq!(healthy_ids.len(), HEALTHY);

    let mut violators = JoinSet::new();
    for v in violations {
        for _ in 0..copies {
            let v = v.clone();
            violators.spawn(async move {
                let mut raw = RawClient::connect(addr).await;
                for chunk in &v.chunks {
                    // The engine may close before the last chunk is written.
                    let _ = raw.send(chunk).await;
                }
                let (_, end) = raw.read_to_close().await;
                raw.hang_up().await;
                (v, end)
            });
        }
    }
    let mut expected = Vec::new();
    while let Some(done) = violators.join_next().await {
        let (v, end) = done.expect("violator task");
        assert_eq!(
            end,
            RawEnd::Close(Some(v.code)),
            "{}: {:02x?}",
            v.name,
            v.chunks
        );
        expected.push(v.code);
    }

    let total = expected.len();
    until(
        || events.removed().len() >= total,
        || format!("{total} removals, have {}", events.removed().len()),
    )
    .await;
    let mut codes: Vec<u16> = events
        .removed()
        .into_iter()
        .map(|(id, reason)| {
            assert!(!healthy_ids.contains(&id), "healthy {id:?} was removed");
            match reason {
                RemoveReason::Protocol(code) => code,
                other => panic!("{id:?} removed for {other:?}"),
            }
        })
        .collect();
    codes.sort_unstable();
    expected.sort_unstable();
    assert_eq!(codes, expected, "one removal per violator, with its code");
    let stats = engine.stats().total;
    assert_eq!(stats.evicted.protocol, total as u64);
    assert_eq!(stats.handshakes_failed, 0);
    settle(&engine, HEALTHY).await;

    let clients = watch.finish().await;
    assert_eq!(
        shutdown_reading(&engine, clients).await,
        [Some(1001); HEALTHY]
    );
}

/// The row called `name` of [`new_violations`].
fn new_violation(name: &str) -> Vec<Violation> {
    let rows: Vec<_> = new_violations()
        .into_iter()
        .filter(|v| v.name == name)
        .collect();
    assert!(!rows.is_empty(), "no violation called {name:?}");
    rows
}

#[tokio::test]
async fn a_close_frame_with_a_one_byte_payload_closes_with_1002() {
    violations_close_only_their_clients(&new_violation("a close frame with a 1-byte payload"), 1)
        .await;
}

#[tokio::test]
async fn a_close_reason_that_is_not_utf8_closes_with_1007() {
    violations_close_only_their_clients(&new_violation("a close reason that is not UTF-8"), 1)
        .await;
}

#[tokio::test]
async fn close_codes_no_endpoint_may_send_close_with_1002() {
    let rows = new_violation("a close code no endpoint may send");
    assert_eq!(rows.len(), FORBIDDEN_CLOSE_CODES.len());
    violations_close_only_their_clients(&rows, 1).await;
}

#[tokio::test]
async fn a_64_bit_length_with_the_top_bit_set_closes_with_1002() {
    violations_close_only_their_clients(&new_violation("a 64-bit length with the top bit set"), 1)
        .await;
}

#[tokio::test]
async fn a_data_frame_inside_a_fragmented_message_closes_with_1002() {
    violations_close_only_their_clients(
        &new_violation("a text frame inside a fragmented message"),
        1,
    )
    .await;
}

#[tokio::test]
async fn dozens_of_concurrent_protocol_violations_close_only_the_violators() {
    // Every row four times over: 96 violators at once against two shards.
    violations_close_only_their_clients(&all_violations(), 4).await;
}

// ---------------------------------------------------------------------------------------------
// Churn
// ---------------------------------------------------------------------------------------------

/// Where a churning connection is dropped.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Before sending anything.
    Silent,
    /// After this many bytes of the upgrade request (never all of it).
    MidRequest(usize),
    /// Right after reading the 101.
    AfterUpgrade,
    /// After the upgrade, with this many bytes of [`churn_frame`] sent (never all of it).
    MidFrame(usize),
}

/// A masked binary frame of 300 bytes (header with a 16-bit length).
fn churn_frame() -> Vec<u8> {
    masked(0x82, &[0x5a; 300])
}

/// SplitMix64: a fixed, well-spread sequence, so that a failure replays.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Connection `i`'s cut, and whether it ends with a reset (else a FIN).
fn pick(i: usize, request_len: usize, frame_len: usize) -> (Cut, bool) {
    let r = mix(i as u64);
    let within = |len: usize| 1 + ((r >> 16) as usize) % (len - 1);
    let cut = match r % 4 {
        0 => Cut::Silent,
        1 => Cut::MidRequest(within(request_len)),
        2 => Cut::AfterUpgrade,
        _ => Cut::MidFrame(within(frame_len)),
    };
    (cut, (r >> 8) & 1 == 1)
}

/// Connects, goes as far as `cut`, and drops the connection (with a reset if `reset`).
async fn churn_one(addr: SocketAddr, cut: Cut, reset: bool) {
    let mut stream = connect_tcp(addr).await;
    if reset {
        stream.set_zero_linger().expect("SO_LINGER 0");
    }
    let request = request("GET", &[]);
    match cut {
        Cut::Silent => {}
        Cut::MidRequest(n) => stream.write_all(&request[..n]).await.expect("half request"),
        Cut::AfterUpgrade | Cut::MidFrame(_) => {
            stream.write_all(&request).await.expect("request");
            let head = read_head(&mut stream).await;
            assert!(head.starts_with("HTTP/1.1 101 "), "refused: {head}");
            if let Cut::MidFrame(n) = cut {
                stream
                    .write_all(&churn_frame()[..n])
                    .await
                    .expect("half frame");
            }
        }
    }
    drop(stream);
}

/// This process's resident set size in bytes (Linux), from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Ten thousand connections, 256 at a time, each dropped (closed or reset) at a point of its
/// handshake or first frame: every one ends as a failed upgrade or a registered-then-removed
/// client, no healthy client is touched, and no queued byte or much memory is left behind.
///
/// A stress test: ignored by `cargo test`; run it on demand, in release (a few seconds there),
/// with
///
/// ```text
/// cargo test --release --test hostile -- --ignored ten_thousand
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress test: cargo test --release --test hostile -- --ignored ten_thousand"]
async fn ten_thousand_connections_dropped_at_random_points_leave_nothing_behind() {
    const CONNECTIONS: usize = 10_000;
    /// Open at once, at most: each costs two descriptors here (client and server side).
    const IN_FLIGHT: usize = 256;
    /// Growth allowed across the churn. Loose on purpose: the figure is the whole test
    /// process (client sockets and tasks, the readers' growing logs, the allocator keeping
    /// freed pages, other tests of this file running in parallel), not the engine alone.
    const RSS_GROWTH_MAX: u64 = 32 << 20;

    let (engine, addr, events) = start_recording(builder().shards(2)).await;
    let (healthy, healthy_ids) = connect_many_with_ids(&engine, addr, &events, HEALTHY).await;
    let watch = Watch::start(&engine, healthy).await;
    let healthy_ids: HashSet<_> = healthy_ids.into_iter().collect();
    let rss_before = resident_bytes();

    let (request_len, frame_len) = (request("GET", &[]).len(), churn_frame().len());
    let (mut silent, mut mid_request, mut after_upgrade, mut mid_frame, mut resets) =
        (0, 0, 0, 0, 0);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..CONNECTIONS {
        if tasks.len() >= IN_FLIGHT {
            let done = tasks.join_next().await.expect("a task in flight");
            done.expect("churn connection");
        }
        let (cut, reset) = pick(i, request_len, frame_len);
        match cut {
            Cut::Silent => silent += 1,
            Cut::MidRequest(_) => mid_request += 1,
            Cut::AfterUpgrade => after_upgrade += 1,
            Cut::MidFrame(_) => mid_frame += 1,
        }
        resets += usize::from(reset);
        tasks.spawn(async move {
            tokio::time::timeout(WAIT, churn_one(addr, cut, reset))
                .await
                .unwrap_or_else(|_| panic!("connection {i} ({cut:?}) stuck"));
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("churn connection");
    }
    let churned = started.elapsed();

    // Every connection has been accepted and has ended, by one road or the other: its
    // upgrade failed, or it registered and was removed.
    let failed = || engine.stats().total.handshakes_failed as usize;
    let registered = || events.registered().len() - HEALTHY;
    until(
        || {
            failed() + registered() == CONNECTIONS
                && events.removed().len() == registered()
                && engine.connection_count() == HEALTHY
                && engine.client_count() == HEALTHY
        },
        || {
            format!(
                "{CONNECTIONS} connections accounted for: {} failed upgrades, {} registered, \
                 {} removed; {} connections and {} clients left",
                failed(),
                registered(),
                events.removed().len(),
                engine.connection_count(),
                engine.client_count()
            )
        },
    )
    .await;
    let settled = started.elapsed();
    assert_eq!(failed(), silent + mid_request, "failed upgrades");
    assert_eq!(registered(), after_upgrade + mid_frame, "registrations");
    let mut removed = HashSet::new();
    for (id, reason) in events.removed() {
        assert!(!healthy_ids.contains(&id), "healthy {id:?} was removed");
        assert!(removed.insert(id), "{id:?} removed twice");
        assert_eq!(reason, RemoveReason::Disconnected, "{id:?}");
    }
    let stats = engine.stats().total;
    assert_eq!(stats.evicted.protocol, 0, "a cut frame is no violation");

    let clients = watch.finish().await;
    for mut ws in clients {
        use futures_util::StreamExt;
        let _ = ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    }
    settle(&engine, 0).await;
    // With no client left, no byte is queued anywhere (the gauge counts healthy clients'
    // queues too, so it is checked only now).
    let queued = || engine.stats().total.queued_bytes;
    until(
        || queued() == 0,
        || {
            format!(
                "no queued bytes once every client is gone, have {}",
                queued()
            )
        },
    )
    .await;
    let rss_after = resident_bytes();

    println!(
        "churn: {CONNECTIONS} connections ({silent} silent, {mid_request} mid-request, \
         {after_upgrade} after the upgrade, {mid_frame} mid-frame; {resets} reset) in \
         {churned:?}, settled after {settled:?}"
    );
    match (rss_before, rss_after) {
        (Some(before), Some(after)) => {
            println!(
                "churn: VmRSS {:.1} MiB before, {:.1} MiB after",
                before as f64 / f64::from(1 << 20),
                after as f64 / f64::from(1 << 20)
            );
            assert!(
                after.saturating_sub(before) < RSS_GROWTH_MAX,
                "VmRSS grew from {before} to {after} bytes"
            );
        }
        _ => println!("churn: VmRSS not available; memory not checked"),
    }
    tokio::time::timeout(WAIT, engine.shutdown(Duration::from_secs(1)))
        .await
        .expect("shutdown in time");
}
