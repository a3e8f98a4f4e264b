//! `shardcast serve`, run as a child process: relaying keeps the opcode, the flags choose the
//! audience, the size limit closes with 1009, and SIGTERM shuts it down cleanly.

mod common;

use common::serve::{Serve, get, run_to_end, scrape, shardcast};
use common::*;
use futures_util::SinkExt;
use std::cell::RefCell;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn either_driver_relays_to_every_client() {
    for driver in ["event-loop", "tasks"] {
        let server = Serve::start(&["--driver", driver]);
        let mut clients = server.connect_many(3).await;
        send_text(&mut clients[1], driver).await;
        for ws in clients.iter_mut() {
            assert_eq!(next_data(ws).await, Message::text(driver));
        }
    }
}

#[tokio::test]
async fn text_stays_text_and_binary_stays_binary_relayed_to_every_client_including_the_sender() {
    let server = Serve::start(&[]);
    let mut clients = server.connect_many(3).await;

    send_text(&mut clients[0], "hello").await;
    for ws in clients.iter_mut() {
        assert_eq!(next_data(ws).await, Message::text("hello"));
    }
    let bytes = vec![0u8, 1, 2, 255, 128];
    clients[1]
        .send(Message::binary(bytes.clone()))
        .await
        .unwrap();
    for ws in clients.iter_mut() {
        assert_eq!(next_data(ws).await, Message::binary(bytes.clone()));
    }
    let empty = Message::text("");
    clients[2].send(empty.clone()).await.unwrap();
    for ws in clients.iter_mut() {
        assert_eq!(next_data(ws).await, empty);
    }
}

#[tokio::test]
async fn exclude_sender_relays_to_everyone_but_the_sender() {
    let server = Serve::start(&["--exclude-sender"]);
    let mut clients = server.connect_many(3).await;

    send_text(&mut clients[0], "from 0").await;
    send_text(&mut clients[1], "from 1").await;
    send_text(&mut clients[2], "from 2").await;
    // Each client's messages arrive in its send order per sender; collect two of them.
    for (i, ws) in clients.iter_mut().enumerate() {
        let mut got = vec![next_text(ws).await, next_text(ws).await];
        got.sort();
        let expected: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("from {j}"))
            .collect();
        assert_eq!(
            got, expected,
            "client {i} got everyone's message but its own"
        );
    }
    // Nothing else is pending: the next message each receives is this one.
    send_text(&mut clients[0], "last").await;
    assert_eq!(next_text(&mut clients[1]).await, "last");
    assert_eq!(next_text(&mut clients[2]).await, "last");
}

#[tokio::test]
async fn echo_sends_each_message_back_to_its_sender_only() {
    let server = Serve::start(&["--echo"]);
    let mut clients = server.connect_many(3).await;

    send_text(&mut clients[0], "zero").await;
    send_text(&mut clients[1], "one").await;
    clients[2]
        .send(Message::binary(vec![2u8; 3]))
        .await
        .unwrap();
    assert_eq!(next_text(&mut clients[0]).await, "zero");
    assert_eq!(next_text(&mut clients[1]).await, "one");
    assert_eq!(
        next_data(&mut clients[2]).await,
        Message::binary(vec![2u8; 3])
    );
    // Had anyone got another's message, it would come before this echo.
    for (i, ws) in clients.iter_mut().enumerate() {
        send_text(ws, &format!("again {i}")).await;
        assert_eq!(next_text(ws).await, format!("again {i}"));
    }
}

#[tokio::test]
async fn max_message_size_closes_a_client_that_sends_more_with_1009() {
    let server = Serve::start(&["--max-message-size", "1000"]);
    let mut clients = server.connect_many(2).await;

    clients[0]
        .send(Message::binary(vec![9u8; 1000]))
        .await
        .unwrap();
    for ws in clients.iter_mut() {
        assert_eq!(
            next_data(ws).await,
            Message::binary(vec![9u8; 1000]),
            "the limit itself is allowed"
        );
    }
    clients[0]
        .send(Message::binary(vec![9u8; 2000]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut clients[0]).await, Some(1009));
    // The other client is still served, and never saw the oversized message.
    send_text(&mut clients[1], "still here").await;
    assert_eq!(next_text(&mut clients[1]).await, "still here");
}

#[tokio::test]
async fn addr_may_be_a_host_name_which_is_resolved() {
    let server = Serve::start_on("localhost:0", &[]);
    let addr: std::net::SocketAddr = server.addr.parse().expect("an IP address is announced");
    assert!(addr.ip().is_loopback(), "{addr} is a loopback address");
    let mut clients = server.connect_many(2).await;
    send_text(&mut clients[0], "by name").await;
    for ws in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "by name");
    }
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut server = Serve::start(&[]);
    let clients = server.connect_many(2).await;
    let closing: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { close_code(&mut ws).await }))
        .collect();

    server.terminate();
    let (status, stderr) = server.exit_status().await;
    assert!(
        status.success(),
        "exit status {status:?}, stderr: {stderr:?}"
    );
    for task in closing {
        assert_eq!(task.await.unwrap(), Some(1001));
    }
}

#[tokio::test]
async fn topics_subscribe_at_upgrade_and_by_message_publish_with_the_opcode_and_close_with_1008() {
    let server = Serve::start(&["--topics"]);
    let mut a = server.connect_to("/?sub=news&sub=caf%C3%A9").await;
    let mut b = server.connect().await;
    let mut c = server.connect().await;
    send_text(&mut b, "sub news").await;
    // b's own publication comes back once b's subscription is in place (same connection,
    // handled in order).
    send_text(&mut b, "pub news b is in").await;
    assert_eq!(next_text(&mut b).await, "b is in");
    assert_eq!(next_text(&mut a).await, "b is in");

    send_text(&mut c, "pub news hello everyone").await;
    assert_eq!(next_text(&mut a).await, "hello everyone");
    assert_eq!(next_text(&mut b).await, "hello everyone");
    c.send(Message::binary(b"pub caf\xc3\xa9 \x00\xff".to_vec()))
        .await
        .unwrap();
    assert_eq!(next_data(&mut a).await, Message::binary(vec![0u8, 0xff]));

    // After `unsub`, b's own publication reaches a but not b, whose next message is the one
    // it publishes to a topic it then joins.
    send_text(&mut b, "unsub news").await;
    send_text(&mut b, "pub news b left").await;
    send_text(&mut b, "sub mine").await;
    send_text(&mut b, "pub mine just me").await;
    assert_eq!(next_text(&mut a).await, "b left");
    assert_eq!(next_text(&mut b).await, "just me");
    // c never subscribed: the first thing it sees is its own publication to a topic it joins.
    send_text(&mut c, "sub own").await;
    send_text(&mut c, "pub own mine").await;
    assert_eq!(next_text(&mut c).await, "mine");

    // A message outside the protocol closes its sender with 1008 and a reason, and nothing
    // else changes for the others.
    let mut rude = server.connect().await;
    send_text(&mut rude, "hello?").await;
    match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut rude)).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert!(frame.reason.contains("expected"), "{}", frame.reason);
        }
        other => panic!("expected close 1008, got {other:?}"),
    }
    // So does a publication to a topic past the limits, saying which.
    let mut long = server.connect().await;
    send_text(&mut long, &format!("pub {} body", "x".repeat(300))).await;
    match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut long)).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert!(frame.reason.contains("256"), "{}", frame.reason);
        }
        other => panic!("expected close 1008, got {other:?}"),
    }
    send_text(&mut c, "pub news still here").await;
    assert_eq!(next_text(&mut a).await, "still here");
}

/// A loopback URL where no NATS server listens.
fn unreachable_nats() -> String {
    format!("nats://127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn serve_with_an_unreachable_nats_says_so_and_exits_non_zero() {
    let url = unreachable_nats();
    let mut server = Serve::spawn(&mut shardcast([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--nats",
        &url,
    ]));
    let (status, stderr) = server.exit_status().await;
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains(&format!("NATS at {url}")), "{stderr}");
    assert!(stderr.contains("--nats-optional"), "{stderr}");
}

#[tokio::test]
async fn serve_with_nats_optional_starts_local_only_and_relays() {
    let url = unreachable_nats();
    let server = Serve::start(&["--nats", &url, "--nats-optional"]);
    let mut clients = server.connect_many(2).await;
    send_text(&mut clients[0], "local").await;
    for ws in clients.iter_mut() {
        assert_eq!(next_data(ws).await, Message::text("local"));
    }
}

/// The value of the sample `series` (`name{labels}` as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test]
async fn metrics_addr_serves_prometheus_metrics_by_shard_and_logs_go_to_stderr() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut server = Serve::start(&["--metrics-addr", &metrics_addr]);
    let mut ws = server.connect().await;
    send_text(&mut ws, "counted").await;
    assert_eq!(next_text(&mut ws).await, "counted");

    // The engine's counters are copied into the exporter every second: wait for this
    // delivery to show, bounded.
    let text = RefCell::new(String::new());
    until_async(
        async || {
            let scraped = scrape(&metrics_addr).await;
            let delivered = (0..2).any(|shard| {
                sample(
                    &scraped,
                    &format!("shardcast_deliveries_total{{shard=\"{shard}\"}}"),
                )
                .is_some_and(|n| n > 0.0)
            });
            *text.borrow_mut() = scraped;
            delivered
        },
        || format!("no delivery counted:\n{}", text.borrow()),
    )
    .await;
    let text = text.into_inner();
    assert!(
        text.contains("# TYPE shardcast_deliveries_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE shardcast_clients gauge"), "{text}");
    let clients: Vec<f64> = (0..2)
        .map(|shard| {
            sample(&text, &format!("shardcast_clients{{shard=\"{shard}\"}}"))
                .unwrap_or_else(|| panic!("shard {shard} has no clients gauge:\n{text}"))
        })
        .collect();
    assert_eq!(clients.iter().sum::<f64>(), 1.0, "{text}");
    assert_eq!(
        sample(&text, "shardcast_broadcasts_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "shardcast_evictions_total{shard=\"0\",reason=\"slow_consumer\"}"
        ),
        Some(0.0),
        "{text}"
    );

    server.terminate();
    let (status, stderr) = server.exit_status().await;
    assert!(
        status.success(),
        "exit status {status:?}, stderr: {stderr:?}"
    );
    assert!(
        stderr.contains(&format!("metrics on http://{metrics_addr}/metrics")),
        "{stderr}"
    );
    assert!(stderr.contains("serving ws://"), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.contains("stopped"))
        .unwrap_or_else(|| panic!("no shutdown summary: {stderr}"));
    assert!(summary.contains("broadcasts=1"), "{summary}");
    assert!(summary.contains("deliveries=1"), "{summary}");
    assert!(summary.contains("clients=1"), "{summary}");
}

#[tokio::test]
async fn metrics_addr_with_port_0_is_refused_by_name() {
    let serve = ["serve", "--addr", "127.0.0.1:0", "--metrics-addr"];
    let (status, _, stderr) = run_to_end(
        &mut shardcast(serve.into_iter().chain(["127.0.0.1:0"])),
        WAIT,
    );
    assert!(!status.success());
    assert!(stderr.contains("--metrics-addr"), "{stderr}");
}

/// With the process at its descriptor limit (reached from the WebSocket port alone), a pending
/// connection to the metrics port makes no thread spin and fills no log: the accept loops back
/// off and log at most once per period. Once descriptors are free, the port answers again.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_metrics_port_at_the_descriptor_limit_neither_spins_nor_floods_the_log() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut server = Serve::start_limited(64, &["--metrics-addr", &metrics_addr]);
    assert_eq!(get(&metrics_addr, "/health").await.1, "ok\n");
    // Connections that never send their upgrade hold a descriptor each until the handshake
    // deadline: more than the limit leaves the process with none.
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(
            tokio::net::TcpStream::connect(&server.addr)
                .await
                .expect("connect"),
        );
    }
    let pending = tokio::net::TcpStream::connect(&metrics_addr)
        .await
        .expect("the kernel queues it");
    // Let the accept loops find the descriptors gone, then measure.
    tokio::time::sleep(ms(200)).await;
    let before = server.cpu_time();
    tokio::time::sleep(ms(2000)).await;
    let used = server.cpu_time() - before;
    assert!(
        used < ms(300),
        "the server used {used:?} of CPU in 2 s with nothing to do but wait"
    );
    // Descriptors free again: the pending scrape is served, and a new one too.
    drop(held);
    drop(pending);
    let (head, body) = get(&metrics_addr, "/health").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
    assert!(scrape(&metrics_addr).await.contains("shardcast_clients"));
    server.terminate();
    let (_, stderr) = server.exit_status().await;
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.to_ascii_lowercase().contains("accept"))
        .count();
    // At most one per accept loop (two shards, the metrics port) in the 10 s period.
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} accept warnings:\n{stderr}"
    );
}

/// The metrics port holds at most 64 connections at once (one more is closed at once), and
/// gives each 5 s to send its request and take the answer.
#[tokio::test]
async fn the_metrics_port_bounds_its_connections_and_their_time() {
    use tokio::io::AsyncReadExt;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let _server = Serve::start(&["--metrics-addr", &metrics_addr]);
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(
            tokio::net::TcpStream::connect(&metrics_addr)
                .await
                .expect("connect"),
        );
    }
    // Accepted in order: once the 64 are taken, one more finds the cap and is closed.
    tokio::time::sleep(ms(200)).await;
    let mut over = tokio::net::TcpStream::connect(&metrics_addr)
        .await
        .expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, over.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a 65th connection is closed at once: {read:?}"
    );
    // An idle connection is closed after its 5 s.
    let started = tokio::time::Instant::now();
    let read = tokio::time::timeout(WAIT, idle[0].read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let waited = started.elapsed();
    assert!(waited <= ms(6000), "closed after {waited:?}");
    // And the port serves again.
    drop(idle);
    assert!(scrape(&metrics_addr).await.contains("shardcast_clients"));
}
