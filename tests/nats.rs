//! Nodes sharing broadcasts through a real `nats-server`, started by each test on a loopback
//! port of its own and stopped with it: broadcasts and topic publications cross nodes, interest
//! routing keeps a topic's publications from nodes without its subscribers, unsubscribing
//! waits for the delay, topics share broker subscriptions by bucket, a restarted server loses
//! nothing locally and delivery resumes, and authenticated-only audiences hold across nodes.
//!
//! The server is found through `NATS_SERVER`, on `PATH` or in `/usr/sbin` (CI installs it:
//! `.ci/run`); without one each test is skipped, saying so on the terminal past the test
//! harness's capture, except under CI (`CI` set), where that fails.
#![cfg(feature = "nats")]

mod common;

use common::*;
use shardcast::{Audience, Context, Engine, Handler, Incoming, Nats, Payload, Principal};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// A whole test, at most.
const TEST_MAX: Duration = Duration::from_secs(90);

/// A `nats-server` on loopback, killed and reaped on drop.
///
/// The server picks its own ports (`-p -1 -m -1`) and reports them in a ports file: ports picked
/// by the test and released before the server binds them could be taken by a parallel test's
/// server in between, which then answered in this one's name (and went away with its test).
struct NatsServer {
    /// The binary.
    bin: PathBuf,
    /// Where the server writes its ports file, empty otherwise; removed on drop.
    dir: PathBuf,
    /// Its client port, once known.
    port: u16,
    /// Its monitoring (HTTP) port, once known.
    monitor: u16,
    /// The running server, if any.
    child: Option<Child>,
}

/// The port in the first `"key":["scheme://127.0.0.1:PORT"` of a ports file.
fn port_of(ports: &str, key: &str) -> Option<u16> {
    let rest = &ports[ports.find(&format!("\"{key}\""))?..];
    let url = rest.split('"').nth(3)?;
    url.rsplit(':').next()?.parse().ok()
}

impl NatsServer {
    /// Starts a server, or says why test `test` is skipped and returns `None`.
    async fn start(test: &str) -> Option<NatsServer> {
        let bin = nats_server(test)?;
        let dir =
            std::env::temp_dir().join(format!("shardcast-nats-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("ports file directory");
        let mut server = NatsServer {
            bin,
            dir,
            port: 0,
            monitor: 0,
            child: None,
        };
        server.run().await;
        Some(server)
    }

    /// Starts the process (on the ports it had before, once it has had some) and waits until
    /// it has written its ports file, which it does once it listens on both.
    async fn run(&mut self) {
        for entry in std::fs::read_dir(&self.dir).expect("ports file directory") {
            let _ = std::fs::remove_file(entry.expect("directory entry").path());
        }
        let (port, monitor) = match self.port {
            0 => ("-1".to_string(), "-1".to_string()),
            port => (port.to_string(), self.monitor.to_string()),
        };
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &port, "-m", &monitor])
            .arg("--ports_file_dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let mut written = None;
        until(
            || {
                written = std::fs::read_dir(&self.dir)
                    .expect("ports file directory")
                    .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
                    .find(|text| text.contains("monitoring") && text.trim_end().ends_with('}'));
                if written.is_none() {
                    let exited = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    assert!(exited.is_none(), "nats-server exited at start: {exited:?}");
                }
                written.is_some()
            },
            || "nats-server did not start".to_owned(),
        )
        .await;
        let ports = written.expect("the ports file");
        self.port = port_of(&ports, "nats").expect("client port in the ports file");
        self.monitor = port_of(&ports, "monitoring").expect("monitoring port in the ports file");
    }

    /// Kills the process and reaps it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Sends the process `signal` (`STOP` stalls it, `CONT` resumes it).
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The subjects the server holds subscriptions to, from its monitoring endpoint.
    fn subscriptions(&self) -> String {
        let mut http = std::net::TcpStream::connect(("127.0.0.1", self.monitor)).expect("monitor");
        http.set_read_timeout(Some(WAIT)).expect("timeout");
        write!(
            http,
            "GET /subsz?subs=1&limit=10000 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .expect("request");
        let mut body = String::new();
        http.read_to_string(&mut body).expect("response");
        body
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The NATS subject a node subscribes to for a topic called `name`: its bucket's,
/// `shardcast.t.{FNV-1a 64 of the name mod 1024}.*` (the wire format every node shares).
fn bucket_subject(name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("shardcast.t.{}.*", hash % 1024)
}

/// Text commands, each answered `ok COMMAND` once done: `sub T`, `unsub T`, `auth`, `pub T
/// BODY`.
struct Commands;

impl Handler for Commands {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let Incoming::Text(text) = message else {
            return;
        };
        if let Some(topic) = text.strip_prefix("sub ") {
            ctx.subscribe(topic).expect("subscribe");
        } else if let Some(topic) = text.strip_prefix("unsub ") {
            ctx.unsubscribe(topic);
        } else if text == "auth" {
            ctx.set_authenticated(Principal::new("someone"));
        } else if let Some((topic, body)) =
            text.strip_prefix("pub ").and_then(|r| r.split_once(' '))
        {
            ctx.broadcast(Payload::text(body), Audience::topic(topic));
        }
        let id = ctx.id();
        ctx.send(id, Payload::text(format!("ok {text}")));
    }
}

/// A node on `server`, reconnecting every 50 ms, with `delay` before unsubscribing.
async fn node(server: &NatsServer, delay: Duration) -> (Engine, SocketAddr) {
    node_with(server, builder().bridge_unsubscribe_delay(delay)).await
}

/// A node on `server`, reconnecting every 50 ms, built from `builder`.
async fn node_with(server: &NatsServer, builder: shardcast::Builder) -> (Engine, SocketAddr) {
    let options = shardcast::bridge::async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(50));
    let nats = Nats::new(server.url()).options(options);
    let (engine, addr) = start(builder.shards(2).handler(Commands).bridge(nats)).await;
    eventually(|| engine.stats().bridge.connected).await;
    (engine, addr)
}

/// `N` nodes on `server`, with a second before unsubscribing.
async fn nodes<const N: usize>(server: &NatsServer) -> [(Engine, SocketAddr); N] {
    let mut nodes = Vec::with_capacity(N);
    for _ in 0..N {
        nodes.push(node(server, Duration::from_secs(1)).await);
    }
    let Ok(nodes) = nodes.try_into() else {
        unreachable!("{N} nodes were made")
    };
    nodes
}

/// Sends a command and waits for its answer (so it took effect).
async fn command(ws: &mut Client, text: &str) {
    send_text(ws, text).await;
    assert_eq!(next_text(ws).await, format!("ok {text}"));
}

/// A client of the node at `addr`, subscribed to `topic`.
async fn subscriber(engine: &Engine, addr: SocketAddr, topic: &str) -> Client {
    let mut ws = connect(engine, addr).await;
    command(&mut ws, &format!("sub {topic}")).await;
    ws
}

/// Waits until `engine` holds `n` topic subscriptions on the server.
async fn holds(engine: &Engine, n: u64) {
    eventually(|| engine.stats().bridge.subscriptions == n).await;
}

/// Publishes `prefix 0` to `prefix {n - 1}` from `engine` to topic `topic`.
async fn publish_numbered(engine: &Engine, prefix: &str, n: usize, topic: &str) {
    for i in 0..n {
        broadcast(engine, format!("{prefix} {i}"), Audience::topic(topic)).await;
    }
}

/// Shuts every node down.
async fn shut_down(nodes: impl IntoIterator<Item = Engine>) {
    for node in nodes {
        node.shutdown(Duration::from_secs(5)).await;
    }
}

/// Starts a server for test `test` and runs `body` on it within [`TEST_MAX`]; without a
/// server, the test is skipped (see [`NatsServer::start`]).
async fn with_server(test: &str, body: impl AsyncFnOnce(&mut NatsServer)) {
    let Some(mut server) = NatsServer::start(test).await else {
        return;
    };
    tokio::time::timeout(TEST_MAX, body(&mut server))
        .await
        .expect("the test finished in time");
}

#[tokio::test]
async fn a_broadcast_and_a_topic_publication_reach_clients_on_both_nodes() {
    let test = "a_broadcast_and_a_topic_publication_reach_clients_on_both_nodes";
    with_server(test, async |server| {
        let [(a, a_addr), (b, b_addr)] = nodes(server).await;
        let mut on_a = subscriber(&a, a_addr, "news").await;
        let mut on_b = subscriber(&b, b_addr, "news").await;
        command(&mut on_b, "sub sports").await;
        holds(&a, 1).await;
        holds(&b, 2).await;

        broadcast(&a, "to all", Audience::ALL).await;
        for ws in [&mut on_a, &mut on_b] {
            assert_eq!(next_text(ws).await, "to all");
        }
        // The rest travels on one channel (`news`), so it keeps its order across nodes.
        broadcast(&a, "news", Audience::topic("news")).await;
        // Two topics, one client subscribed to both: it receives the frame once.
        broadcast(&a, "both", Audience::topics(["news", "sports"])).await;
        // One publisher's broadcasts on one channel arrive in order on the other node.
        publish_numbered(&a, "seq", 100, "news").await;
        let batch = [Payload::text("x"), Payload::binary([1, 2])];
        a.broadcast_batch(batch, Audience::topic("news"))
            .await
            .expect("batch");
        for ws in [&mut on_a, &mut on_b] {
            assert_eq!(next_text(ws).await, "news");
            assert_eq!(next_text(ws).await, "both");
            for i in 0..100 {
                assert_eq!(next_text(ws).await, format!("seq {i}"));
            }
            assert_eq!(next_text(ws).await, "x");
            assert_eq!(
                next_data(ws).await,
                tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2])
            );
        }
        // And the other way: B's handler publishes, A's client receives.
        broadcast(&b, "from b", Audience::topic("news")).await;
        assert_eq!(next_text(&mut on_a).await, "from b");
        assert_eq!(next_text(&mut on_b).await, "from b");

        // The bridge threads count a delivery after handing it to the shards, which may be a
        // moment after a client read it: let the counters settle, then check them exactly.
        eventually(|| b.stats().bridge.delivered >= 104).await;
        let (sa, sb) = (a.stats().bridge, b.stats().bridge);
        // Once per broadcast (twice for the two-topic one), whatever the shards and clients.
        assert_eq!(sa.published, 1 + 1 + 2 + 100 + 1, "{sa:?}");
        // B took both copies of the two-topic broadcast and delivered one; a node never
        // receives its own publications (A received only B's).
        assert_eq!(sb.received, 105, "{sb:?}");
        assert_eq!(sb.delivered, 104, "{sb:?}");
        assert_eq!(sa.received, 1, "{sa:?}");
        assert_eq!(sa.dropped, Default::default());
        assert_eq!(sb.dropped, Default::default());
        shut_down([a, b]).await;
    })
    .await;
}

#[tokio::test]
async fn a_node_without_subscribers_of_a_topic_receives_none_of_its_publications() {
    let test = "a_node_without_subscribers_of_a_topic_receives_none_of_its_publications";
    with_server(test, async |server| {
        let [(a, a_addr), (b, b_addr), (c, c_addr)] = nodes(server).await;
        let mut on_b = subscriber(&b, b_addr, "only-b").await;
        let mut on_c = subscriber(&c, c_addr, "marker").await;
        let _idle_on_a = connect(&a, a_addr).await;
        holds(&b, 1).await;
        holds(&c, 1).await;
        publish_numbered(&a, "only", 50, "only-b").await;
        broadcast(&a, "done", Audience::topic("marker")).await;
        for i in 0..50 {
            assert_eq!(next_text(&mut on_b).await, format!("only {i}"));
        }
        assert_eq!(next_text(&mut on_c).await, "done");
        // The server routed by interest: C got the marker and nothing of `only-b`, whose
        // publications it never subscribed to.
        assert_eq!(c.stats().bridge.received, 1);
        assert_eq!(b.stats().bridge.received, 50);
        let subs = server.subscriptions();
        let only_b = bucket_subject("only-b");
        assert!(subs.contains(&only_b), "{subs}");
        assert_eq!(subs.matches(&only_b).count(), 1, "B only: {subs}");
        shut_down([a, b, c]).await;
    })
    .await;
}

#[tokio::test]
async fn an_unsubscribe_waits_for_the_delay_and_then_happens() {
    let test = "an_unsubscribe_waits_for_the_delay_and_then_happens";
    with_server(test, async |server| {
        let delay = Duration::from_millis(1500);
        let (b, b_addr) = node(server, delay).await;
        let mut on_b = subscriber(&b, b_addr, "news").await;
        holds(&b, 1).await;
        let news = bucket_subject("news");
        assert!(server.subscriptions().contains(&news));

        // Left and back within the delay: the subscription is kept.
        let left = Instant::now();
        command(&mut on_b, "unsub news").await;
        command(&mut on_b, "sub news").await;
        assert!(
            left.elapsed() < delay,
            "the machine is too slow for this test"
        );
        // Left for good: still held until the delay has passed, then dropped.
        let left = Instant::now();
        command(&mut on_b, "unsub news").await;
        let stats = b.stats().bridge;
        assert!(
            left.elapsed() < delay,
            "the machine is too slow for this test"
        );
        assert_eq!(
            (stats.subscriptions, stats.unsubscribes),
            (1, 0),
            "{stats:?}"
        );
        eventually(|| b.stats().bridge.unsubscribes == 1).await;
        assert!(
            left.elapsed() >= delay,
            "unsubscribed after {:?}",
            left.elapsed()
        );
        let stats = b.stats().bridge;
        assert_eq!((stats.subscriptions, stats.subscribes), (0, 1), "{stats:?}");
        eventually(|| !server.subscriptions().contains(&news)).await;
        shut_down([b]).await;
    })
    .await;
}

#[tokio::test]
async fn a_restarted_server_loses_nothing_locally_and_delivery_across_nodes_resumes() {
    let test = "a_restarted_server_loses_nothing_locally_and_delivery_across_nodes_resumes";
    with_server(test, async |server| {
        let [(a, a_addr), (b, b_addr)] = nodes(server).await;
        let mut on_a = subscriber(&a, a_addr, "news").await;
        let mut on_b = subscriber(&b, b_addr, "news").await;
        holds(&b, 1).await;
        broadcast(&a, "before", Audience::topic("news")).await;
        assert_eq!(next_text(&mut on_b).await, "before");
        assert_eq!(next_text(&mut on_a).await, "before");

        server.stop();
        eventually(|| !a.stats().bridge.connected && !b.stats().bridge.connected).await;
        for i in 0..20 {
            broadcast(&a, format!("outage {i}"), Audience::topic("news")).await;
            broadcast(&a, format!("all {i}"), Audience::ALL).await;
        }
        for i in 0..20 {
            assert_eq!(next_text(&mut on_a).await, format!("outage {i}"));
            assert_eq!(next_text(&mut on_a).await, format!("all {i}"));
        }
        // The local client has them all; the bridge thread drops its copies on its own time.
        eventually(|| a.stats().bridge.dropped.disconnected >= 40).await;
        let dropped = a.stats().bridge.dropped;
        assert_eq!(dropped.disconnected, 40, "{dropped:?}");
        assert!(a.stats().bridge.disconnects >= 1);

        server.run().await;
        eventually(|| a.stats().bridge.connected && b.stats().bridge.connected).await;
        // B holds its subscription again after the reconnect: A's publications reach it.
        let mut probe = 0;
        let mut first = None;
        until_async(
            async || {
                broadcast(&a, format!("probe {probe}"), Audience::topic("news")).await;
                probe += 1;
                first = tokio::time::timeout(ms(100), next_text(&mut on_b))
                    .await
                    .ok();
                first.is_some()
            },
            || "delivery across nodes did not resume".to_owned(),
        )
        .await;
        let first = first.expect("a probe");
        // Nothing published during the outage arrives late (at most once).
        assert!(first.starts_with("probe "), "{first}");
        for i in 0..probe {
            assert_eq!(next_text(&mut on_a).await, format!("probe {i}"));
        }
        let _ = first;
        broadcast(&a, "after", Audience::ALL).await;
        loop {
            let text = next_text(&mut on_b).await;
            if text == "after" {
                break;
            }
            assert!(text.starts_with("probe "), "{text}");
        }
        shut_down([a, b]).await;
    })
    .await;
}

#[tokio::test]
async fn authenticated_only_audiences_hold_across_nodes() {
    let test = "authenticated_only_audiences_hold_across_nodes";
    with_server(test, async |server| {
        let [(a, _), (b, b_addr)] = nodes(server).await;
        let mut anonymous = subscriber(&b, b_addr, "news").await;
        let mut known = subscriber(&b, b_addr, "news").await;
        command(&mut known, "auth").await;
        holds(&b, 1).await;
        broadcast(&a, "secret", Audience::AUTHENTICATED).await;
        broadcast(&a, "public", Audience::ALL).await;
        let news = Audience::topic("news");
        broadcast(&a, "secret news", news.clone().authenticated()).await;
        broadcast(&a, "public news", news).await;
        assert_eq!(next_text(&mut known).await, "secret");
        assert_eq!(next_text(&mut known).await, "public");
        assert_eq!(next_text(&mut known).await, "secret news");
        assert_eq!(next_text(&mut known).await, "public news");
        assert_eq!(next_text(&mut anonymous).await, "public");
        assert_eq!(next_text(&mut anonymous).await, "public news");
        shut_down([a, b]).await;
    })
    .await;
}

#[test]
fn a_node_whose_server_is_unreachable_fails_to_build_unless_optional() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let refused = builder().shards(1).bridge(Nats::new(&url)).build();
    assert!(
        matches!(refused, Err(shardcast::BuildError::Bridge(_))),
        "{refused:?}"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let engine = builder()
            .shards(1)
            .bridge(Nats::new(&url))
            .bridge_optional(true)
            .build()
            .expect("starts local-only");
        broadcast(&engine, "x", Audience::ALL).await;
        let stats = engine.stats().bridge;
        assert!(!stats.connected);
        eventually(|| engine.stats().bridge.dropped.disconnected == 1).await;
        engine.shutdown(Duration::from_secs(5)).await;
    });
}

#[tokio::test]
async fn a_node_that_stops_leaves_the_others_unaffected() {
    let test = "a_node_that_stops_leaves_the_others_unaffected";
    with_server(test, async |server| {
        let [(a, _), (b, b_addr), (gone, gone_addr)] = nodes(server).await;
        let mut on_b = subscriber(&b, b_addr, "news").await;
        let on_gone = subscriber(&gone, gone_addr, "news").await;
        holds(&b, 1).await;
        holds(&gone, 1).await;
        // Dropped without a shutdown, as a crashed process would leave it.
        drop(on_gone);
        drop(gone);
        publish_numbered(&a, "still", 20, "news").await;
        for i in 0..20 {
            assert_eq!(next_text(&mut on_b).await, format!("still {i}"));
        }
        assert_eq!(a.stats().bridge.dropped, Default::default());
        shut_down([a, b]).await;
    })
    .await;
}

/// A topic name past the limits is refused where it enters, on publish as on subscribe: no
/// publication with a subject the server would refuse reaches it (it used to drop the node's
/// connection, every time), and publications on valid topics keep crossing.
#[tokio::test]
async fn a_topic_past_the_limits_never_reaches_the_broker() {
    let test = "a_topic_past_the_limits_never_reaches_the_broker";
    with_server(test, async |server| {
        let [(a, a_addr), (b, b_addr)] = nodes(server).await;
        let mut on_b = subscriber(&b, b_addr, "news").await;
        holds(&b, 1).await;
        let long = "x".repeat(5000);
        // From a handler: refused, counted.
        let mut on_a = connect(&a, a_addr).await;
        for _ in 0..200 {
            command(&mut on_a, &format!("pub {long} lost")).await;
        }
        // From the engine: an error that hands the payload back.
        match a
            .broadcast(Payload::text("lost"), Audience::topic(long.as_str()))
            .await
        {
            Err(shardcast::BroadcastError::Topic(e, payload)) => {
                assert_eq!(payload.body(), b"lost");
                assert!(e.to_string().contains("256"), "{e}");
            }
            other => panic!("expected a topic error, got {other:?}"),
        }
        command(&mut on_a, "pub news still here").await;
        assert_eq!(next_text(&mut on_b).await, "still here");
        let stats = a.stats();
        assert_eq!(stats.total.broadcasts_refused, 200);
        assert_eq!(stats.bridge.disconnects, 0, "{:?}", stats.bridge);
        assert_eq!(stats.bridge.dropped, Default::default());
        shut_down([a, b]).await;
    })
    .await;
}

/// A node whose topics may be longer than NATS takes as a subject never sends one: what it
/// publishes to such a topic is counted as a failed publication, and the connection stays up.
#[tokio::test]
async fn a_subject_longer_than_nats_takes_is_never_sent() {
    let test = "a_subject_longer_than_nats_takes_is_never_sent";
    with_server(test, async |server| {
        let (a, a_addr) = node_with(server, builder().topic_bytes_max(10_000)).await;
        let (b, b_addr) = node_with(server, builder()).await;
        let mut on_b = subscriber(&b, b_addr, "news").await;
        holds(&b, 1).await;
        let long = "x".repeat(5000);
        let mut on_a = subscriber(&a, a_addr, &long).await;
        for _ in 0..20 {
            send_text(&mut on_a, &format!("pub {long} local")).await;
            // Delivered here (the limit is this node's), then the answer.
            assert_eq!(next_text(&mut on_a).await, "local");
            assert!(next_text(&mut on_a).await.starts_with("ok pub"));
        }
        command(&mut on_a, "pub news still here").await;
        assert_eq!(next_text(&mut on_b).await, "still here");
        eventually(|| a.stats().bridge.dropped.publish_failed == 20).await;
        let stats = a.stats().bridge;
        assert_eq!(stats.disconnects, 0, "{stats:?}");
        assert_eq!(stats.dropped.subscribe_failed, 1, "{stats:?}");
        shut_down([a, b]).await;
    })
    .await;
}

/// This process's resident memory (Linux: `/proc/self/statm`, pages of 4 KiB).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// With the broker stalled (the process stopped: the connection stays up, nothing is read),
/// what the bridge holds stays within its outbound bound: the NATS client is handed nothing
/// more until it has written out what it has, and what does not fit is dropped and counted.
/// It used to hold its own command queue beside the bound (+212 MiB against 64 MiB).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_stalled_broker_holds_the_bridge_within_its_outbound_bound() {
    const BROADCASTS: usize = 2000;
    const BYTES: usize = 64 << 10;
    let test = "a_stalled_broker_holds_the_bridge_within_its_outbound_bound";
    with_server(test, async |server| {
        let (a, _) = node_with(server, builder().bridge_outbound_bytes_max(4 << 20)).await;
        let before = resident_bytes();
        server.signal("STOP");
        let mut peak = before;
        for i in 0..BROADCASTS {
            let payload = Payload::binary(vec![i as u8; BYTES]);
            a.broadcast(payload, Audience::ALL)
                .await
                .expect("broadcast");
            if i % 100 == 0 {
                peak = peak.max(resident_bytes());
            }
        }
        // Let the bridge take what it can: it blocks on the stalled connection.
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(resident_bytes());
        let grown = peak.saturating_sub(before);
        let stats = a.stats().bridge;
        server.signal("CONT");
        // 128 MiB were offered; the bound is 4 MiB, and the client's write buffer 64 KiB.
        assert!(
            grown < 40 << 20,
            "the bridge grew the process by {} MiB with the broker stalled: {stats:?}",
            grown >> 20
        );
        assert!(stats.dropped.outbound_full > 0, "{stats:?}");
        // Once the broker resumes, every broadcast is accounted for: published, or dropped
        // and counted.
        eventually(|| {
            let s = a.stats().bridge;
            let d = s.dropped;
            s.published + d.outbound_full + d.disconnected == BROADCASTS as u64
        })
        .await;
        shut_down([a]).await;
    })
    .await;
}

/// Topics share NATS subscriptions by bucket: a node that follows one topic of a bucket never
/// delivers, nor counts as received, what comes for another topic of that bucket.
#[tokio::test]
async fn a_topic_of_a_followed_bucket_that_the_node_does_not_follow_reaches_nobody() {
    let test = "a_topic_of_a_followed_bucket_that_the_node_does_not_follow_reaches_nobody";
    with_server(test, async |server| {
        let [(a, _), (b, b_addr)] = nodes(server).await;
        let followed = bucket_subject("x");
        let other = (0..100_000)
            .map(|i| format!("y{i}"))
            .find(|name| bucket_subject(name) == followed)
            .expect("a name in the same bucket");
        let mut on_b = subscriber(&b, b_addr, "x").await;
        holds(&b, 1).await;
        broadcast(&a, "not for b", Audience::topic(other.as_str())).await;
        broadcast(&a, "for b", Audience::topic("x")).await;
        assert_eq!(next_text(&mut on_b).await, "for b");
        let stats = b.stats().bridge;
        assert_eq!((stats.received, stats.delivered), (1, 1), "{stats:?}");
        assert_eq!(stats.dropped, Default::default());
        shut_down([a, b]).await;
    })
    .await;
}

/// However many topics a node follows, it holds one NATS subscription per bucket they fall in
/// (at most 1,024) plus the one to everyone, and gives a bucket's up when its last topic goes.
#[tokio::test]
async fn a_node_holds_one_broker_subscription_per_bucket_not_per_topic() {
    let test = "a_node_holds_one_broker_subscription_per_bucket_not_per_topic";
    with_server(test, async |server| {
        const TOPICS: usize = 3000;
        let builder = builder()
            .topics_per_client_max(TOPICS)
            .bridge_unsubscribe_delay(Duration::from_millis(50));
        let (node, addr) = node_with(server, builder).await;
        let mut ws = connect(&node, addr).await;
        let names: Vec<String> = (0..TOPICS).map(|i| format!("personal/{i}")).collect();
        for name in &names {
            send_text(&mut ws, &format!("sub {name}")).await;
        }
        for name in &names {
            assert_eq!(next_text(&mut ws).await, format!("ok sub {name}"));
        }
        holds(&node, TOPICS as u64).await;
        let buckets: std::collections::HashSet<String> =
            names.iter().map(|n| bucket_subject(n)).collect();
        assert!(buckets.len() <= 1024 && buckets.len() < TOPICS);
        // The server's own (`$SYS`) subscriptions are listed too: count the node's.
        let held = || {
            server
                .subscriptions()
                .matches("\"subject\": \"shardcast.")
                .count()
        };
        let want = buckets.len() + 1;
        until(
            || held() == want,
            || format!("{} subscriptions, not {want}", held()),
        )
        .await;
        for name in &names {
            send_text(&mut ws, &format!("unsub {name}")).await;
        }
        for name in &names {
            assert_eq!(next_text(&mut ws).await, format!("ok unsub {name}"));
        }
        holds(&node, 0).await;
        until(
            || held() == 1,
            || format!("{} subscriptions, not 1", held()),
        )
        .await;
        shut_down([node]).await;
    })
    .await;
}
