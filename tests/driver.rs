//! The drivers (`Driver::EventLoop`, `Driver::IoUring`, `Driver::Tasks`): which connections
//! each serves, and what only a driver can get wrong (a relay waiting for room, a handler that
//! panics, a coalescing delay, a lingering close).
//! Every other behaviour test runs on the default driver, or on the one `SHARDCAST_DRIVER`
//! names (`common::builder`); the tests here name their own, on `Engine::builder()`.

mod common;

use common::*;
use futures_util::SinkExt;
use shardcast::{Audience, Context, Driver, Engine, Handler, Incoming, Payload};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const DRIVERS: [Driver; 3] = [Driver::EventLoop, Driver::IoUring, Driver::Tasks];

/// Connections the shards' event loops serve now.
fn looped(engine: &Engine) -> u64 {
    engine.stats().total.event_loop_connections
}

/// Waits until the shards' event loops serve `n` connections.
async fn looping(engine: &Engine, n: u64) {
    until(
        || looped(engine) == n,
        || format!("{} looped, not {n}", looped(engine)),
    )
    .await;
}

#[tokio::test]
async fn plain_tcp_connections_are_served_by_the_event_loop() {
    let (engine, addr) = start(Engine::builder().shards(2).driver(Driver::EventLoop)).await;
    let mut clients = connect_many(&engine, addr, 6).await;
    looping(&engine, 6).await;
    broadcast(&engine, "hello", Audience::ALL).await;
    for ws in &mut clients {
        assert_eq!(next_text(ws).await, "hello");
    }
    // A client that leaves leaves the loop.
    let mut gone = clients.pop().expect("a client");
    gone.close(None).await.expect("close");
    looping(&engine, 5).await;
}

#[tokio::test]
async fn the_tasks_driver_serves_every_connection_as_a_task() {
    let (engine, addr) = start(Engine::builder().shards(2).driver(Driver::Tasks)).await;
    let mut clients = connect_many(&engine, addr, 4).await;
    broadcast(&engine, "hello", Audience::ALL).await;
    for ws in &mut clients {
        assert_eq!(next_text(ws).await, "hello");
    }
    assert_eq!(looped(&engine), 0);
}

#[tokio::test]
async fn wrapped_and_in_memory_streams_are_served_as_tasks_beside_the_event_loop() {
    let engine = Engine::builder()
        .shards(2)
        .driver(Driver::EventLoop)
        .build()
        .expect("build");
    let plain = |tcp: tokio::net::TcpStream| async move { Ok::<_, std::io::Error>(tcp) };
    let wrapped_addr = engine
        .listen_wrapped("127.0.0.1:0", plain)
        .await
        .expect("listen");
    let plain_addr = engine.listen("127.0.0.1:0").await.expect("listen");
    let mut wrapped = connect(&engine, wrapped_addr).await;
    let (mut piped, _) = connect_pipe(&engine).await;
    let mut looped_client = connect(&engine, plain_addr).await;
    looping(&engine, 1).await;
    broadcast(&engine, "all", Audience::ALL).await;
    assert_eq!(next_text(&mut wrapped).await, "all");
    assert_eq!(next_text(&mut looped_client).await, "all");
    let piped_texts = texts_within(&mut piped, std::time::Duration::from_millis(500)).await;
    assert_eq!(piped_texts, ["all"]);
    assert_eq!(looped(&engine), 1, "only the plain TCP stream is looped");
}

/// Relays every text to every other client.
struct Relay;

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if let Incoming::Text(text) = message {
            let from = ctx.id();
            ctx.broadcast(Payload::text(text), Audience::ALL.except(from));
        }
    }
}

#[tokio::test]
async fn a_relay_that_finds_another_shards_queue_full_waits_and_loses_nothing() {
    const MESSAGES: usize = 3000;
    for driver in DRIVERS {
        // One command of room: the sender's shard finds the receiver's shard full again and
        // again, and the sender must stop being read until its relays are through.
        let engine = Engine::builder()
            .shards(2)
            .shard_queue_capacity(1)
            .handler(Relay)
            .driver(driver)
            .build()
            .expect("build");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (mut sender, a) = connect_registered(&engine, &listener).await;
        let (receiver, b) = connect_registered(&engine, &listener).await;
        assert_ne!(a.shard(), b.shard(), "registrations alternate over shards");
        eventually(|| engine.client_count() == 2).await;
        let reader = spawn_reader(receiver);
        for i in 0..MESSAGES {
            sender
                .feed(Message::text(format!("m{i}")))
                .await
                .expect("send");
        }
        sender.send(Message::text(END)).await.expect("send");
        let (got, _) = reader.until_end().await;
        let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
        assert_eq!(texts(&got), expected, "{driver:?}");
        engine.shutdown(WAIT).await;
    }
}

/// Panics on the text "boom"; records the rest.
struct Fragile(Recorder);

impl Handler for Fragile {
    fn on_registered(&self, ctx: &mut Context<'_>) {
        self.0.on_registered(ctx);
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if message == Incoming::Text("boom") {
            panic!("a handler bug (expected by the test)");
        }
        self.0.on_message(ctx, message);
    }

    fn on_removed(&self, ctx: &mut Context<'_>, reason: shardcast::RemoveReason) {
        self.0.on_removed(ctx, reason);
    }
}

#[tokio::test]
async fn a_handler_that_panics_ends_only_the_connection_it_was_handling() {
    for driver in DRIVERS {
        let (recorder, events) = Recorder::new();
        let (engine, addr) = start(
            Engine::builder()
                .shards(1)
                .handler(Fragile(recorder))
                .driver(driver),
        )
        .await;
        let mut doomed = connect(&engine, addr).await;
        let mut other = connect(&engine, addr).await;
        send_text(&mut doomed, "boom").await;
        until(
            || events.removed().len() == 1,
            || format!("{driver:?}: removed {:?}", events.removed()),
        )
        .await;
        assert_eq!(engine.client_count(), 1, "{driver:?}");
        // The shard goes on serving the others, reading and writing.
        send_text(&mut other, "still here").await;
        until(
            || !events.messages().is_empty(),
            || format!("{driver:?}: no message"),
        )
        .await;
        broadcast(&engine, "after", Audience::ALL).await;
        assert_eq!(next_text(&mut other).await, "after", "{driver:?}");
        engine.shutdown(WAIT).await;
    }
}

// What the event loop times itself (the task driver's timers are covered on a paused clock in
// timing.rs, over in-memory pipes): real time here, in short spans, over loopback TCP.

#[tokio::test]
async fn a_coalescing_delay_gathers_frames_into_one_write_on_every_driver() {
    for driver in DRIVERS {
        let coalescing = shardcast::Coalescing {
            frames_max: 1000,
            // Long enough that the ten broadcasts below fall within it on a loaded machine.
            delay: ms(2000),
            bytes_max: 1 << 20,
        };
        let (engine, addr) = start(
            Engine::builder()
                .shards(1)
                .coalescing(coalescing)
                .driver(driver),
        )
        .await;
        let mut ws = connect(&engine, addr).await;
        let before = engine.stats().total.write_syscalls;
        for i in 0..10 {
            broadcast(&engine, format!("c{i}"), Audience::ALL).await;
        }
        for i in 0..10 {
            assert_eq!(next_text(&mut ws).await, format!("c{i}"), "{driver:?}");
        }
        // The shard counts a write once it returns: the client may have read it first.
        let writes = || engine.stats().total.write_syscalls - before;
        until(|| writes() >= 1, || format!("{driver:?}: no write counted")).await;
        assert_eq!(
            writes(),
            1,
            "{driver:?}: ten frames within the delay go out in one write"
        );
        // Gone before the shutdown, which need not wait for its close.
        drop(ws);
        engine.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn a_peer_that_never_closes_after_our_close_is_dropped_at_the_close_timeout() {
    for driver in DRIVERS {
        let (engine, addr) = start(
            Engine::builder()
                .shards(1)
                .close_timeout(ms(200))
                .driver(driver),
        )
        .await;
        let mut raw = RawClient::connect(addr).await;
        eventually(|| engine.client_count() == 1).await;
        // It sends its close and reads ours, but keeps its socket open and keeps talking.
        raw.send(&masked(0x88, &1000u16.to_be_bytes()))
            .await
            .expect("close");
        let echo = raw.read_frame().await.expect("our close frame");
        assert_eq!(echo.opcode, 0x8, "{driver:?}");
        raw.send(&masked(0x81, b"ignored")).await.expect("send");
        // The engine discards it, then drops the connection at the close timeout.
        until(
            || engine.connection_count() == 0,
            || format!("{driver:?}: {} connections", engine.connection_count()),
        )
        .await;
        assert_eq!(
            raw.read_frame().await,
            None,
            "{driver:?}: then end of stream"
        );
        engine.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn a_socket_that_takes_nothing_is_dropped_at_the_write_deadline() {
    for driver in DRIVERS {
        let (engine, addr, events) = start_recording(
            Engine::builder()
                .shards(1)
                // Dropping, not disconnecting, keeps the full queue from evicting it first.
                .slow_consumer(shardcast::SlowConsumerPolicy::DropNewest)
                .ping_interval(None)
                .write_deadline(ms(300))
                .sweep_interval(ms(50))
                .driver(driver),
        )
        .await;
        let _stalled = RawClient::connect_with_recv_buffer(addr, Some(4096)).await;
        let stalled_id = registered(&events, 1).await;
        let mut healthy = connect(&engine, addr).await;
        let body = "x".repeat(32 << 10);
        let mut sent = 0;
        while events.removals_of(stalled_id).is_empty() {
            assert!(
                sent < 2000,
                "{driver:?}: not evicted after {sent} broadcasts"
            );
            broadcast(&engine, &body, Audience::ALL).await;
            assert_eq!(
                next_text(&mut healthy).await.len(),
                body.len(),
                "{driver:?}"
            );
            sent += 1;
            tokio::time::sleep(ms(5)).await;
        }
        assert_eq!(
            events.removals_of(stalled_id),
            [shardcast::RemoveReason::WriteDeadline],
            "{driver:?}"
        );
        engine.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn an_inbox_engine_pauses_a_client_for_room_and_tells_its_removal_last_on_every_driver() {
    use shardcast::EventKind;
    const MESSAGES: usize = 20;
    for driver in DRIVERS {
        let engine = Engine::builder()
            .shards(1)
            .inbox(true)
            .inbox_capacity(2)
            .driver(driver)
            .build()
            .expect("build");
        let mut inbox = engine.inbox().expect("an inbox");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (mut client, id) = connect_registered(&engine, &listener).await;
        if driver != Driver::Tasks {
            looping(&engine, 1).await;
        }
        for i in 0..MESSAGES {
            client
                .feed(Message::text(i.to_string()))
                .await
                .expect("send");
        }
        client.flush().await.expect("flush");
        // Nobody reads the inbox: it fills, and the client's reads pause with an event held.
        until(
            || engine.stats().total.inbox_paused > 0,
            || format!("not paused: {:?}", engine.stats().total),
        )
        .await;
        // Removed while it waits, and gone: its removal is told after every event it had.
        engine.remove(id).await.expect("registered");
        drop(client);
        if driver != Driver::Tasks {
            // The loop dropped the socket while the event waits.
            looping(&engine, 0).await;
        }
        let mut kinds = Vec::new();
        while !matches!(kinds.last(), Some(EventKind::Removed(_))) {
            let event = tokio::time::timeout(WAIT, inbox.recv())
                .await
                .unwrap_or_else(|_| panic!("{driver:?}: events so far {kinds:?}"))
                .expect("an event");
            assert_eq!(event.client, id, "{driver:?}");
            kinds.push(event.kind);
        }
        assert_eq!(kinds[0], EventKind::Registered, "{driver:?}");
        let texts: Vec<EventKind> = kinds[1..kinds.len() - 1].to_vec();
        let expected: Vec<EventKind> = (0..texts.len())
            .map(|i| EventKind::Text(i.to_string()))
            .collect();
        assert_eq!(texts, expected, "{driver:?}: in order, none lost");
        // Registered and "0" filled the queue; "1" was held, and is not lost.
        assert!(texts.len() >= 2, "{driver:?}: the held one too: {kinds:?}");
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_millis(200), inbox.recv())
                .await
                .ok()
                .flatten()
                .map(|e| e.kind),
            None,
            "{driver:?}: nothing after Removed"
        );
        eventually(|| engine.client_count() == 0).await;
        assert_eq!(looped(&engine), 0, "{driver:?}");
        assert_eq!(engine.stats().total.inbox_lost, 0, "{driver:?}");
        engine.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn an_inbox_hears_of_every_client_it_was_told_of_leaving_or_counts_the_loss() {
    use shardcast::EventKind;
    for driver in DRIVERS {
        let engine = Engine::builder()
            .shards(1)
            .inbox(true)
            .driver(driver)
            .build()
            .expect("build");
        let mut inbox = engine.inbox().expect("an inbox");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        // A client that never answers our close: it is still there when the shard stops.
        let (_client, id) = connect_registered(&engine, &listener).await;
        let first = tokio::time::timeout(WAIT, inbox.recv())
            .await
            .expect("in time");
        assert_eq!(
            first.map(|e| (e.client, e.kind)),
            Some((id, EventKind::Registered))
        );
        engine.shutdown(std::time::Duration::from_millis(100)).await;
        let mut removed = 0;
        while let Some(event) = tokio::time::timeout(WAIT, inbox.recv())
            .await
            .expect("ends")
        {
            assert!(
                matches!(event.kind, EventKind::Removed(_)),
                "{driver:?}: {event:?}"
            );
            removed += 1;
        }
        let lost = engine.stats().total.inbox_lost;
        assert_eq!(removed + lost, 1, "{driver:?}: told {removed}, lost {lost}");
    }
}
