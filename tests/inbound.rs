//! The inbox: clients' messages and lifecycle events as an async stream from a bounded queue
//! per shard, read by a consumer that awaits.
//!
//! Most tests run the shards on the test's own thread (`build_local`) with clients over
//! in-memory pipes and a paused clock: a consumer that "awaits 10 ms" per message then takes
//! no wall-clock time, and how far a client got before it was paused is exact. One test runs
//! real shard threads and TCP clients.

mod common;

use common::{
    Client, END, WAIT, broadcast, builder, connect_registered, connect_with_pipe, elapse, local,
    ms, next_message, next_text, start_local as start, until,
};
use futures_util::{SinkExt, StreamExt};
use shardcast::{
    Audience, BuildError, ClientId, Context, Engine, Event, EventKind, Handler, Incoming, Payload,
    RemoveReason,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How long the slow consumer awaits per message.
const STEP: Duration = Duration::from_millis(10);

/// What a consumer has read so far.
#[derive(Default)]
struct Log {
    /// Every event, with when it was read.
    events: Vec<(Instant, Event)>,
    /// Text messages read, by client.
    texts: HashMap<ClientId, usize>,
    /// The deepest any shard's inbox queue was seen.
    depth_max: u64,
}

impl Log {
    fn texts_of(&self, id: ClientId) -> usize {
        self.texts.get(&id).copied().unwrap_or(0)
    }

    /// The kinds of `id`'s events, in the order they were read.
    fn kinds_of(&self, id: ClientId) -> Vec<EventKind> {
        (self.events.iter())
            .filter(|(_, e)| e.client == id)
            .map(|(_, e)| e.kind.clone())
            .collect()
    }
}

/// Reads `inbox` to its end on this thread, awaiting [`STEP`] after each text message; notes
/// the deepest queue it sees after each read.
fn consume_slowly(engine: &Engine, mut inbox: shardcast::Inbox) -> Rc<RefCell<Log>> {
    let log = Rc::new(RefCell::new(Log::default()));
    let (engine, shared) = (engine.clone(), log.clone());
    tokio::task::spawn_local(async move {
        while let Some(event) = inbox.recv().await {
            let depth = (engine.stats().shards.iter())
                .map(|s| s.inbox_depth)
                .max()
                .unwrap_or(0);
            let text = matches!(event.kind, EventKind::Text(_));
            {
                let mut log = shared.borrow_mut();
                log.depth_max = log.depth_max.max(depth);
                if text {
                    *log.texts.entry(event.client).or_default() += 1;
                }
                log.events.push((Instant::now(), event));
            }
            if text {
                // A database write, say.
                tokio::time::sleep(STEP).await;
            }
        }
    });
    log
}

/// Reads broadcasts `tick <micros since start>` until [`END`]; returns the longest time any took
/// to arrive.
async fn worst_tick_latency<S>(mut stream: S, start: Instant) -> Duration
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut worst = Duration::ZERO;
    loop {
        let text = next_text(&mut stream).await;
        if text == END {
            return worst;
        }
        let micros: u64 = text
            .strip_prefix("tick ")
            .and_then(|t| t.parse().ok())
            .expect("a tick");
        let sent = start + Duration::from_micros(micros);
        worst = worst.max(Instant::now() - sent);
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_awaits_10_ms_per_message_back_pressures_its_clients_and_loses_nothing() {
    /// Messages each sender sends.
    const MESSAGES: usize = 200;
    /// Events each shard queues for the inbox.
    const CAPACITY: usize = 8;
    /// Bytes each client pipe holds in each direction.
    const PIPE: usize = 1024;
    /// How far a sender can get ahead of the consumer when its last send returns: the shard's
    /// queue, the event its connection holds, one read of bytes it could not parse yet, and
    /// what its pipe holds (about 10 messages of 106 bytes each for the last two).
    const SLACK: usize = CAPACITY + 1 + 10 + 10;
    local(async {
        let engine = start(builder().shards(2).inbox(true).inbox_capacity(CAPACITY));
        let log = consume_slowly(&engine, engine.inbox().expect("an inbox"));
        // Registered round robin: three clients on shard 0 send; on shard 1, one client only
        // listens and one says hello once.
        let mut on_0 = Vec::new();
        let mut on_1 = Vec::new();
        for _ in 0..5 {
            let (ws, id) = connect_with_pipe(&engine, PIPE).await;
            match id.shard().0 {
                0 => on_0.push((ws, id)),
                _ => on_1.push((ws, id)),
            }
        }
        assert_eq!((on_0.len(), on_1.len()), (3, 2));
        let start = Instant::now();
        let pad = "x".repeat(96);
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for (ws, id) in on_0 {
            let (mut sink, stream) = ws.split();
            readers.push(tokio::task::spawn_local(worst_tick_latency(stream, start)));
            let (pad, log) = (pad.clone(), log.clone());
            writers.push(tokio::task::spawn_local(async move {
                for i in 0..MESSAGES {
                    let text = format!("{i:03} {pad}");
                    sink.send(Message::text(text)).await.expect("send");
                }
                // Its last send returned: how far the consumer had got with this client.
                let read = log.borrow().texts_of(id);
                (id, read, sink)
            }));
        }
        let (listener, listener_id) = on_1.pop().expect("a listener");
        let (talker, talker_id) = on_1.pop().expect("a talker");
        // It reads what it is sent, and is still connected at shutdown.
        let (mut talker, mut talker_reads) = talker.split();
        tokio::task::spawn_local(async move { while talker_reads.next().await.is_some() {} });
        readers.push(tokio::task::spawn_local(worst_tick_latency(
            listener.split().1,
            start,
        )));
        // A broadcast to everyone every 25 ms while the senders are paused.
        let ticks = {
            let engine = engine.clone();
            tokio::task::spawn_local(async move {
                let mut every = tokio::time::interval(ms(25));
                for _ in 0..200 {
                    every.tick().await;
                    let micros = (Instant::now() - start).as_micros();
                    let tick = Payload::text(format!("tick {micros}"));
                    engine.broadcast(tick, Audience::ALL).await.expect("open");
                }
            })
        };
        // Half a second in, shard 0's queue is full and its three senders paused: a message
        // from shard 1 still reaches the consumer within a step or two.
        elapse(ms(500)).await;
        let said = Instant::now();
        talker.send(Message::text("hello")).await.expect("send");
        let mut senders = Vec::new();
        for writer in writers {
            let (id, read, sink) = writer.await.expect("writer");
            assert!(
                read + SLACK >= MESSAGES,
                "{id}: all {MESSAGES} sent when the consumer had read {read}: not held back"
            );
            senders.push((id, sink));
        }
        ticks.await.expect("ticks");
        broadcast(&engine, END, Audience::ALL).await;
        for reader in readers {
            let worst = reader.await.expect("reader");
            // Paused senders still receive (their connections keep writing), and shard 1
            // never waits for the consumer: no broadcast waited for even one of its steps.
            assert!(worst < STEP, "a broadcast took {worst:?}");
        }
        until(
            || log.borrow().texts.values().sum::<usize>() == 3 * MESSAGES + 1,
            || format!("every message read: {:?}", log.borrow().texts),
        )
        .await;
        for (_, sink) in &mut senders {
            sink.close().await.expect("close");
        }
        let report = engine.shutdown(Duration::from_secs(1)).await;
        assert!(report.unjoined.is_empty());
        // The stream ends once the shards have stopped: the consumer's task then finishes.
        until(|| Rc::strong_count(&log) == 1, || "the stream ended".into()).await;
        let log = log.borrow();
        let hello = (log.events.iter())
            .find(|(_, e)| e.client == talker_id && matches!(e.kind, EventKind::Text(_)))
            .map(|(at, _)| *at - said)
            .expect("hello read");
        assert!(hello <= 3 * STEP, "hello waited {hello:?} behind shard 0");
        for (id, _) in &senders {
            let kinds = log.kinds_of(*id);
            assert_eq!(kinds.len(), MESSAGES + 2, "{id}: {kinds:?}");
            assert_eq!(kinds[0], EventKind::Registered);
            for (i, kind) in kinds[1..=MESSAGES].iter().enumerate() {
                assert_eq!(
                    *kind,
                    EventKind::Text(format!("{i:03} {pad}")),
                    "{id}: in order"
                );
            }
            assert_eq!(
                kinds[MESSAGES + 1],
                EventKind::Removed(RemoveReason::ClientClosed(None))
            );
        }
        let hello = EventKind::Text("hello".into());
        let shutdown = EventKind::Removed(RemoveReason::Shutdown);
        assert_eq!(
            log.kinds_of(talker_id),
            [EventKind::Registered, hello, shutdown]
        );
        // The listener hung up once it had read `END`.
        let gone = EventKind::Removed(RemoveReason::Disconnected);
        assert_eq!(log.kinds_of(listener_id), [EventKind::Registered, gone]);
        let stats = engine.stats();
        assert!(
            log.depth_max <= CAPACITY as u64,
            "a queue held {}",
            log.depth_max
        );
        assert!(stats.shards[0].inbox_paused > 0, "the senders were paused");
        assert_eq!(stats.shards[1].inbox_paused, 0, "nobody on shard 1 was");
        assert_eq!(stats.total.inbox_lost, 0);
        assert_eq!(stats.total.inbox_depth, 0);
        assert_eq!(stats.total.inbox_waiting, 0);
        assert_eq!(stats.total.inbox_events, log.events.len() as u64);
    })
    .await;
}

#[tokio::test]
async fn a_slow_consumer_on_shard_threads_stalls_neither_other_clients_nor_other_shards() {
    const MESSAGES: usize = 50;
    let engine = builder()
        .shards(2)
        .inbox(true)
        .inbox_capacity(4)
        .build()
        .expect("build");
    let mut inbox = engine.inbox().expect("an inbox");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (a, a_id) = connect_registered(&engine, &listener).await;
    let (observer, observer_id) = connect_registered(&engine, &listener).await;
    let (b, b_id) = connect_registered(&engine, &listener).await;
    assert_eq!([a_id, observer_id, b_id].map(|id| id.shard().0), [0, 1, 0]);
    // Messages read so far, shared with the broadcaster: lag is measured in consumer steps,
    // which a slow machine slows down along with everything else.
    let read = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let read = read.clone();
        tokio::spawn(async move {
            let mut texts: HashMap<ClientId, Vec<String>> = HashMap::new();
            while let Some(event) = inbox.recv().await {
                if let EventKind::Text(text) = event.kind {
                    texts.entry(event.client).or_default().push(text);
                    read.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(STEP).await;
                }
            }
            texts
        })
    };
    let send_all = |ws: Client| {
        tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            // Keep reading broadcasts, as a client does, while the writes are held back.
            let drain = tokio::spawn(async move { while stream.next().await.is_some() {} });
            for i in 0..MESSAGES {
                sink.send(Message::text(i.to_string())).await.expect("send");
            }
            (sink, drain)
        })
    };
    let (a, b) = (send_all(a), send_all(b));
    // The observer on shard 1 only receives; each broadcast carries how many messages the
    // consumer had read when it went out.
    let observe = {
        let read = read.clone();
        tokio::spawn(async move {
            let (_sink, mut stream) = observer.split();
            let mut lag_max = 0;
            loop {
                let text = next_text(&mut stream).await;
                if text == END {
                    return lag_max;
                }
                let at: usize = text.parse().expect("a count");
                lag_max = lag_max.max(read.load(Ordering::Relaxed) - at);
            }
        })
    };
    // Until every message was read: a client closed at shutdown is not read any more.
    let deadline = tokio::time::Instant::now() + WAIT;
    while read.load(Ordering::Relaxed) < 2 * MESSAGES {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every message read in time"
        );
        let at = read.load(Ordering::Relaxed).to_string();
        broadcast(&engine, at, Audience::ALL).await;
        tokio::time::sleep(STEP * 2).await;
    }
    broadcast(&engine, END, Audience::ALL).await;
    let lag_max = tokio::time::timeout(WAIT, observe)
        .await
        .expect("observer in time")
        .expect("observer");
    // Stalled, it would lag by most of the run (about 90 messages).
    assert!(
        lag_max <= 10,
        "a broadcast to shard 1 waited for {lag_max} messages"
    );
    let stats = engine.stats();
    assert!(stats.shards[0].inbox_paused > 0, "the senders were paused");
    assert!(stats.shards[0].inbox_depth <= 4);
    for sender in [a, b] {
        let (_sink, drain) = tokio::time::timeout(WAIT, sender)
            .await
            .expect("sent in time")
            .expect("sender");
        drain.abort();
    }
    engine.shutdown(Duration::from_secs(2)).await;
    let texts = tokio::time::timeout(WAIT, consumer)
        .await
        .expect("the stream ends after shutdown")
        .expect("consumer");
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    assert_eq!(texts[&a_id], expected, "every message, in order");
    assert_eq!(texts[&b_id], expected, "every message, in order");
    assert_eq!(engine.stats().total.inbox_lost, 0);
}

/// Relays `say ...` on the shard; everything else goes to the inbox.
struct Split;

impl Handler for Split {
    fn forward(&self, _ctx: &Context<'_>, message: Incoming<'_>) -> bool {
        !matches!(message, Incoming::Text(text) if text.starts_with("say "))
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if let Incoming::Text(text) = message {
            ctx.broadcast(Payload::text(text), Audience::ALL);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_handler_keeps_the_messages_it_does_not_forward_even_while_the_inbox_is_full() {
    local(async {
        let engine = start(
            builder()
                .shards(1)
                .handler(Split)
                .inbox(true)
                .inbox_capacity(1),
        );
        let mut inbox = engine.inbox().expect("an inbox");
        let (mut ws, id) = connect_with_pipe(&engine, 64 << 10).await;
        assert_eq!(
            inbox.recv().await.expect("event").kind,
            EventKind::Registered
        );
        ws.send(Message::text("say hi")).await.expect("send");
        assert_eq!(next_message(&mut ws).await, Message::text("say hi"));
        // Fill the queue (one event) and hold one more: the client is paused.
        ws.send(Message::text("save 1")).await.expect("send");
        ws.send(Message::text("save 2")).await.expect("send");
        // Read on its own: the connection holds `save 2` with nothing left of its read.
        elapse(ms(10)).await;
        ws.send(Message::text("say later")).await.expect("send");
        elapse(ms(100)).await;
        assert_eq!(engine.stats().total.inbox_waiting, 1, "paused");
        assert!(
            tokio::time::timeout(ms(100), ws.next()).await.is_err(),
            "`say later` waits behind the message the connection holds"
        );
        let texts: Vec<EventKind> = [inbox.recv().await, inbox.recv().await]
            .map(|e| e.expect("event").kind)
            .into();
        assert_eq!(
            texts,
            [
                EventKind::Text("save 1".into()),
                EventKind::Text("save 2".into())
            ]
        );
        assert_eq!(next_message(&mut ws).await, Message::text("say later"));
        assert_eq!(engine.stats().total.inbox_waiting, 0);
        let _ = id;
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_client_paused_for_the_inbox_is_not_closed_for_its_silence() {
    local(async {
        let engine = start(
            builder()
                .shards(1)
                .inbox(true)
                .inbox_capacity(1)
                .heartbeat_timeout(Duration::from_secs(4))
                .sweep_interval(Duration::from_secs(1)),
        );
        let mut inbox = engine.inbox().expect("an inbox");
        let (mut ws, id) = connect_with_pipe(&engine, 64 << 10).await;
        // Registered fills the queue; the first message is held, and the client paused.
        ws.send(Message::text("1")).await.expect("send");
        ws.send(Message::text("2")).await.expect("send");
        // Five heartbeat timeouts, during which it is not read (it answers no ping either).
        elapse(Duration::from_secs(20)).await;
        assert!(engine.client(id).await.is_some(), "still registered");
        assert_eq!(engine.stats().total.evicted.heartbeat, 0);
        let kinds: Vec<EventKind> = [inbox.recv().await, inbox.recv().await, inbox.recv().await]
            .map(|e| e.expect("event").kind)
            .into();
        assert_eq!(
            kinds,
            [
                EventKind::Registered,
                EventKind::Text("1".into()),
                EventKind::Text("2".into())
            ]
        );
        // Read again, its silence counts from now on: it is closed once it lasts too long.
        elapse(Duration::from_secs(6)).await;
        assert_eq!(engine.stats().total.evicted.heartbeat, 1);
        let removed = inbox.recv().await.expect("event");
        assert_eq!(
            (removed.client, removed.kind),
            (id, EventKind::Removed(RemoveReason::HeartbeatTimeout))
        );
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_inbox_counts_every_event_it_loses_and_pauses_nobody() {
    local(async {
        let engine = start(builder().shards(1).inbox(true).inbox_capacity(2));
        let inbox = engine.inbox().expect("an inbox");
        let (mut ws, _) = connect_with_pipe(&engine, 64 << 10).await;
        for i in 0..5 {
            ws.send(Message::text(i.to_string())).await.expect("send");
        }
        elapse(ms(10)).await;
        // Registered and "0" queued, "1" held.
        let stats = engine.stats().total;
        assert_eq!((stats.inbox_depth, stats.inbox_waiting), (2, 1));
        drop(inbox);
        elapse(ms(10)).await;
        // The two queued, the held one, and the three read after: six events, none silently.
        assert_eq!(engine.stats().total.inbox_lost, 6);
        assert_eq!(engine.stats().total.inbox_waiting, 0);
        // The client is read again, and still served.
        ws.send(Message::text("more")).await.expect("send");
        broadcast(&engine, "still here", Audience::ALL).await;
        assert_eq!(next_message(&mut ws).await, Message::text("still here"));
        assert_eq!(engine.stats().total.inbox_lost, 7);
        ws.close(None).await.expect("close");
        elapse(ms(10)).await;
        assert_eq!(engine.stats().total.inbox_lost, 8, "and its Removed");
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test]
async fn the_inbox_is_off_by_default_taken_once_and_its_capacity_checked() {
    let engine = builder().shards(1).build().expect("build");
    assert!(!engine.config().inbox);
    assert_eq!(engine.config().inbox_capacity, 256);
    assert!(engine.inbox().is_none(), "off by default");
    engine.shutdown(Duration::from_secs(1)).await;
    let engine = builder().shards(1).inbox(true).build().expect("build");
    assert!(engine.inbox().is_some());
    assert!(engine.inbox().is_none(), "taken once");
    engine.shutdown(Duration::from_secs(1)).await;
    for capacity in [0, (1 << 20) + 1] {
        let refused = builder().inbox(true).inbox_capacity(capacity).build();
        assert!(
            matches!(
                refused,
                Err(BuildError::Invalid {
                    field: "inbox_capacity",
                    ..
                })
            ),
            "{capacity}"
        );
    }
}
