//! Everything that depends on time, on a paused clock: heartbeat and server pings, the auth and
//! write deadlines, coalescing delays.
//!
//! The shards run as tasks of the test's own thread (`Builder::build_local`) and the clients
//! talk to them over in-memory pipes, so the test, the shards and the clients share one paused
//! clock: time moves only when every one of them waits for a timer, from one timer to the next.
//! A wait of 25 s takes no wall-clock time, and no outcome depends on how busy the machine is.

mod common;

use common::{
    Pipe, Recorder, builder, close_code, connect_pipe as connect, connect_with_pipe, elapse, local,
    ms, start_local as start, texts_within,
};
use futures_util::{SinkExt, StreamExt};
use shardcast::Incoming;
use shardcast::{
    Audience, Coalescing, Context, Engine, Handler, Payload, Principal, RemoveReason,
    SlowConsumerPolicy,
};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Bytes, Message};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Reads `ws` for `d`, answering pings as a browser does; returns how many pings it saw.
/// Anything else it receives fails the test.
async fn listen_for(ws: &mut Pipe, d: Duration) -> usize {
    let until = Instant::now() + d;
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => return pings,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("the listener got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_only_listens_stays_connected_across_five_default_heartbeat_timeouts() {
    local(async {
        let engine = start(builder().shards(1));
        let config = engine.config().clone();
        assert_eq!(config.ping_interval, Some(secs(10)), "the default");
        // Like a browser page: it never sends anything itself, and answers pings.
        let (mut listener, id) = connect(&engine).await;
        let pings = listen_for(&mut listener, 5 * config.heartbeat_timeout).await;
        // One ping per 10 s of silence, pinged at the 5 s sweeps: 9 or 10 in 100 s.
        assert!((9..=10).contains(&pings), "{pings} pings in 100 s");
        assert!(engine.is_alive(id).await);
        assert_eq!(engine.stats().total.evicted.heartbeat, 0);
        engine.shutdown(secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_pings_is_closed_with_4002_and_live_ones_stay() {
    local(async {
        let (recorder, events) = Recorder::new();
        let engine = start(builder().shards(2).handler(recorder));
        // Not read until the end: it never answers the server's pings.
        let (mut silent, silent_id) = connect(&engine).await;
        let (mut pinging, pinging_id) = connect(&engine).await;
        let (_refreshed, refreshed_id) = connect(&engine).await;
        // Two clients are kept fresh every 5 s for 60 s: one by its own pings, one by
        // `update_last_ping` (TopGun's application-level heartbeat).
        for _ in 0..12 {
            pinging
                .send(Message::Ping(Bytes::from_static(b"hb")))
                .await
                .unwrap();
            engine.update_last_ping(refreshed_id).await.unwrap();
            elapse(secs(5)).await;
        }
        assert_eq!(engine.stats().total.evicted.heartbeat, 1, "only the silent");
        assert!(!engine.is_alive(silent_id).await);
        assert!(engine.is_alive(pinging_id).await);
        assert!(engine.is_alive(refreshed_id).await);
        assert_eq!(
            events.removals_of(silent_id),
            [RemoveReason::HeartbeatTimeout]
        );
        // It was pinged, then closed: silent for 20 s is not yet over the timeout, the sweep
        // at 25 s closes it.
        // Read as bytes: tungstenite would answer the ping on a pipe the server has closed.
        let mut wire = Vec::new();
        silent.get_mut().read_to_end(&mut wire).await.unwrap();
        let mut frames = Vec::new();
        let mut rest = &wire[..];
        while let Some((frame, used)) = common::parse_server_frame(rest) {
            frames.push(frame);
            rest = &rest[used..];
        }
        let opcodes: Vec<u8> = frames.iter().map(|f| f.opcode).collect();
        assert_eq!(opcodes, [0x9, 0x8], "one ping, then the close");
        let code = u16::from_be_bytes([frames[1].payload[0], frames[1].payload[1]]);
        assert_eq!(code, 4002);
        engine.shutdown(secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn no_ping_interval_leaves_a_listening_client_to_the_heartbeat() {
    local(async {
        let builder = builder().shards(1).ping_interval(None);
        let engine = start(builder);
        let (mut listener, _) = connect(&engine).await;
        elapse(secs(26)).await;
        assert_eq!(close_code(&mut listener).await, Some(4002));
        assert_eq!(engine.stats().total.evicted.heartbeat, 1);
        engine.shutdown(secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn auth_deadline_closes_unauthenticated_clients_with_4001_and_spares_authenticated_ones() {
    local(async {
        let (recorder, events) = Recorder::new();
        let builder = builder()
            .shards(2)
            .handler(recorder)
            .auth_deadline(Some(secs(3)))
            .sweep_interval(ms(100));
        let engine = start(builder);
        let (mut anonymous, anonymous_id) = connect(&engine).await;
        let (mut known, known_id) = connect(&engine).await;
        engine
            .set_authenticated(known_id, Principal::new("known"))
            .await
            .unwrap();
        let registered = Instant::now();
        assert_eq!(close_code(&mut anonymous).await, Some(4001));
        let closed_after = registered.elapsed();
        assert!(
            (secs(3)..secs(3) + ms(200)).contains(&closed_after),
            "closed {closed_after:?} after registration"
        );
        elapse(secs(10)).await;
        assert_eq!(engine.stats().total.evicted.auth_deadline, 1, "only one");
        assert!(engine.client(known_id).await.is_some());
        assert_eq!(
            events.removals_of(anonymous_id),
            [RemoveReason::AuthDeadline]
        );
        engine
            .broadcast(Payload::text("welcome"), Audience::AUTHENTICATED)
            .await
            .unwrap();
        assert_eq!(texts_within(&mut known, ms(100)).await, ["welcome"]);
        engine.shutdown(secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn write_deadline_evicts_a_client_whose_socket_accepts_nothing() {
    local(async {
        let (recorder, events) = Recorder::new();
        let builder = builder()
            .shards(1)
            .handler(recorder)
            // Dropping, not disconnecting, keeps the full queue from evicting it first.
            .slow_consumer(SlowConsumerPolicy::DropNewest)
            .ping_interval(None)
            .write_deadline(secs(10))
            .sweep_interval(secs(1));
        let engine = start(builder);
        let (mut healthy, _) = connect(&engine).await;
        // Its pipe holds 4 KiB and it never reads.
        let (_stalled, stalled_id) = connect_with_pipe(&engine, 4 << 10).await;
        let body = "x".repeat(1 << 10);
        let mut received = 0;
        for second in 0..15 {
            engine
                .broadcast(Payload::text(&body), Audience::ALL)
                .await
                .unwrap();
            received += texts_within(&mut healthy, ms(100)).await.len();
            let evicted = engine.stats().total.evicted.write_deadline;
            // Its pipe filled at the fourth broadcast (3 s); ten seconds later it is gone.
            assert_eq!(evicted, u64::from(second >= 13), "after {second} s");
            elapse(secs(1) - ms(100)).await;
        }
        assert_eq!(received, 15, "the healthy client lost nothing");
        assert_eq!(
            events.removals_of(stalled_id),
            [RemoveReason::WriteDeadline]
        );
        assert_eq!(engine.stats().total.evicted.slow_consumer, 0);
        engine.shutdown(secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_coalescing_delay_gathers_frames_sent_within_it_into_one_write() {
    local(async {
        let coalescing = Coalescing {
            frames_max: 1000,
            delay: ms(400),
            bytes_max: 1 << 20,
        };
        let engine = start(builder().shards(1).coalescing(coalescing));
        let (mut ws, _) = connect(&engine).await;
        let before = engine.stats().total.write_syscalls;
        let sent_at = Instant::now();
        for i in 0..10 {
            engine
                .broadcast(Payload::text(format!("c{i}")), Audience::ALL)
                .await
                .unwrap();
            elapse(ms(20)).await;
        }
        let texts = texts_within(&mut ws, secs(1)).await;
        assert_eq!(texts, (0..10).map(|i| format!("c{i}")).collect::<Vec<_>>());
        assert_eq!(
            engine.stats().total.write_syscalls - before,
            1,
            "ten frames queued within the delay go out in one write"
        );
        // Read 1 s of quiet after the last frame arrived at 400 ms.
        assert_eq!(sent_at.elapsed(), ms(400) + secs(1));
        engine.shutdown(secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn reaching_frames_max_flushes_at_once_without_waiting_for_the_delay() {
    local(async {
        let coalescing = Coalescing {
            frames_max: 4,
            delay: secs(30),
            bytes_max: 1 << 20,
        };
        let engine = start(builder().shards(1).coalescing(coalescing));
        let (mut ws, _) = connect(&engine).await;
        let sent_at = Instant::now();
        engine
            .broadcast_batch(
                (0..4).map(|i| Payload::text(format!("b{i}"))),
                Audience::ALL,
            )
            .await
            .unwrap();
        for i in 0..4 {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), format!("b{i}")),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(sent_at.elapsed(), Duration::ZERO, "no wait at all");
        engine.shutdown(secs(1)).await;
    })
    .await;
}

/// Relays every text message to every client.
struct Relay;

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if let Incoming::Text(text) = message {
            ctx.broadcast(Payload::text(text), Audience::ALL);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn delayed_coalescing_applies_to_what_a_handler_relays_on_its_own_shard() {
    local(async {
        let delay = ms(200);
        let coalescing = Coalescing {
            frames_max: 1000,
            delay,
            bytes_max: 1 << 20,
        };
        let builder = builder().shards(1).handler(Relay).coalescing(coalescing);
        let engine = start(builder);
        let (mut reader, _) = connect(&engine).await;
        let (mut publisher, _) = connect(&engine).await;
        // The shard's last command is now older than the delay. A clock read only when
        // commands arrive stamped the relayed frames with that old tick, so they counted as
        // overdue and went out at once.
        elapse(secs(1)).await;
        let before = engine.stats().total.write_syscalls;
        let sent_at = Instant::now();
        for i in 0..5 {
            publisher
                .send(Message::text(format!("h{i}")))
                .await
                .unwrap();
            elapse(ms(10)).await;
        }
        let first = reader.next().await;
        assert_eq!(
            sent_at.elapsed(),
            delay,
            "the first relayed frame waited the delay"
        );
        assert!(matches!(first, Some(Ok(Message::Text(t))) if t.as_str() == "h0"));
        let rest = texts_within(&mut reader, ms(100)).await;
        assert_eq!(rest, ["h1", "h2", "h3", "h4"]);
        let writes = engine.stats().total.write_syscalls - before;
        assert_eq!(
            writes, 2,
            "one write to each client, however many reads relayed"
        );
        engine.shutdown(secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_relayed_to_another_shard_goes_out_to_each_client_in_one_write() {
    local(async {
        const BURST: usize = 16;
        let engine = start(builder().shards(2).handler(Relay));
        // `register` spreads clients over the shards in turn.
        let mut readers = Vec::new();
        for _ in 0..12 {
            readers.push(connect(&engine).await.0);
        }
        let (mut publisher, _) = connect(&engine).await;
        assert!(engine.stats().shards.iter().all(|s| s.clients > 0));
        let before = engine.stats();
        // One write, so one read on the server: the whole burst is handled in one go.
        let burst: Vec<Message> = (0..BURST).map(|i| Message::text(format!("r{i}"))).collect();
        for message in burst {
            publisher.feed(message).await.unwrap();
        }
        publisher.flush().await.unwrap();
        for ws in readers.iter_mut() {
            let texts = texts_within(ws, ms(100)).await;
            assert_eq!(
                texts,
                (0..BURST).map(|i| format!("r{i}")).collect::<Vec<_>>()
            );
        }
        let after = engine.stats();
        let clients = readers.len() as u64 + 1;
        assert_eq!(
            after.total.write_syscalls - before.total.write_syscalls,
            clients,
            "each client, on either shard, got the burst in one write"
        );
        assert_eq!(
            after.broadcasts - before.broadcasts,
            BURST as u64,
            "a handler's broadcast counts once, not once per shard"
        );
        assert_eq!(
            after.total.broadcasts_applied - before.total.broadcasts_applied,
            2 * BURST as u64
        );
        engine.shutdown(secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn each_failed_upgrade_is_counted_under_its_cause() {
    use tokio::io::AsyncWriteExt;
    local(async {
        let engine = start(
            builder()
                .shards(1)
                .allowed_origins(Some(vec!["https://example.com".into()])),
        );
        let open = |engine: &Engine| {
            let engine = engine.clone();
            async move {
                let (client, server) = tokio::io::duplex(4096);
                engine.register(server).await.expect("register");
                client
            }
        };
        // Not an upgrade: 400.
        let mut malformed = open(&engine).await;
        malformed
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // A valid upgrade without an allowed Origin: 403.
        let mut refused = open(&engine).await;
        refused
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
        // Half a request, then silence past the deadline: 408.
        let mut slow = open(&engine).await;
        slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        // Gone before saying anything.
        drop(open(&engine).await);
        elapse(secs(11)).await;
        let failures = engine.stats().total.handshake_failures;
        assert_eq!(
            (
                failures.malformed,
                failures.refused,
                failures.timed_out,
                failures.abandoned,
                failures.wrap_failed
            ),
            (1, 1, 1, 1, 0),
            "{failures:?}"
        );
        assert_eq!(engine.stats().total.handshakes_failed, 4);
        drop((malformed, refused, slow));
        engine.shutdown(secs(1)).await;
    })
    .await;
}
