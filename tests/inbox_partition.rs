//! The inbox split by client over several partitions (`Inbox::partition`): tasks that await
//! for different clients at once, while each client's events stay in order.
//!
//! The shards run on the test's own thread (`build_local`) with clients over in-memory pipes
//! and a paused clock: a consumer that "awaits 20 ms" per message takes no wall-clock time, and
//! how long a run took is exact, however loaded the machine.

mod common;

use common::{Pipe, builder, connect_pipe, elapse, local, ms, start_local as start, until};
use futures_util::SinkExt;
use shardcast::{ClientId, Engine, Event, EventKind, InboxPartition};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How long a consumer awaits per text message (a database write, say).
const STEP: Duration = Duration::from_millis(20);

/// What the consumers of the partitions have read.
#[derive(Default)]
struct Log {
    /// Every event each partition's task read, in order, by partition index.
    read: Vec<Vec<Event>>,
    /// Text messages being handled now, over every task.
    in_flight: usize,
    /// The most text messages ever handled at once.
    in_flight_max: usize,
    /// Text messages handled to the end.
    texts: usize,
    /// When the last text message was handled.
    last: Option<Instant>,
}

impl Log {
    /// The partitions `client`'s events went to, and those events in the order read.
    fn of(&self, client: ClientId) -> (Vec<usize>, Vec<EventKind>) {
        let (mut partitions, mut kinds) = (Vec::new(), Vec::new());
        for (k, events) in self.read.iter().enumerate() {
            let mine: Vec<_> = (events.iter())
                .filter(|e| e.client == client)
                .map(|e| e.kind.clone())
                .collect();
            if !mine.is_empty() {
                partitions.push(k);
                kinds.extend(mine);
            }
        }
        (partitions, kinds)
    }

    /// Events read, over every partition.
    fn events(&self) -> usize {
        self.read.iter().map(Vec::len).sum()
    }
}

/// Reads each partition to its end on its own task, awaiting [`STEP`] after each text message;
/// partition 0's task waits for `gate` to open before each one.
fn consume(
    partitions: Vec<InboxPartition>,
    gate: watch::Receiver<bool>,
) -> (Rc<RefCell<Log>>, Vec<JoinHandle<()>>) {
    let partitions_max = partitions.iter().map(|p| p.index() + 1).max();
    let log = Rc::new(RefCell::new(Log {
        read: vec![Vec::new(); partitions_max.unwrap_or(0)],
        ..Log::default()
    }));
    let tasks = (partitions.into_iter())
        .map(|mut partition| {
            let (log, mut gate) = (log.clone(), gate.clone());
            tokio::task::spawn_local(async move {
                let k = partition.index();
                while let Some(event) = partition.recv().await {
                    let text = matches!(event.kind, EventKind::Text(_));
                    log.borrow_mut().read[k].push(event);
                    if !text {
                        continue;
                    }
                    if k == 0 {
                        gate.wait_for(|open| *open).await.expect("gate kept");
                    }
                    {
                        let mut log = log.borrow_mut();
                        log.in_flight += 1;
                        log.in_flight_max = log.in_flight_max.max(log.in_flight);
                    }
                    tokio::time::sleep(STEP).await;
                    let mut log = log.borrow_mut();
                    log.in_flight -= 1;
                    log.texts += 1;
                    log.last = Some(Instant::now());
                }
            })
        })
        .collect();
    (log, tasks)
}

/// Connects `n` clients over pipes.
async fn connect(engine: &Engine, n: usize) -> Vec<(Pipe, ClientId)> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(connect_pipe(engine).await);
    }
    clients
}

/// Sends texts `from..to` from `ws`.
async fn say(ws: &mut Pipe, from: usize, to: usize) {
    for i in from..to {
        ws.send(Message::text(i.to_string())).await.expect("send");
    }
}

/// Closes every client, shuts the engine down, and waits for every partition's stream to end.
async fn finish(engine: &Engine, clients: Vec<(Pipe, ClientId)>, tasks: Vec<JoinHandle<()>>) {
    for (mut ws, _) in clients {
        ws.close(None).await.expect("close");
    }
    let report = engine.shutdown(Duration::from_secs(1)).await;
    assert!(report.unjoined.is_empty());
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("every partition's stream ends after shutdown")
            .expect("consumer");
    }
}

/// `client`'s events as read: registered, `0..messages` in order, removed.
fn assert_life(log: &Log, client: ClientId, messages: usize) -> usize {
    let (partitions, kinds) = log.of(client);
    assert_eq!(
        partitions.len(),
        1,
        "{client}: one partition, not {partitions:?}"
    );
    assert_eq!(kinds.len(), messages + 2, "{client}: {kinds:?}");
    assert_eq!(
        kinds[0],
        EventKind::Registered,
        "{client}: registered first"
    );
    for (i, kind) in kinds[1..=messages].iter().enumerate() {
        assert_eq!(*kind, EventKind::Text(i.to_string()), "{client}: in order");
    }
    assert!(
        matches!(kinds[messages + 1], EventKind::Removed(_)),
        "{client}: removed last, not {:?}",
        kinds[messages + 1]
    );
    partitions[0]
}

/// Ten clients send five messages each to an engine whose inbox is split into `n` partitions,
/// each read by a task that awaits [`STEP`] per message; returns what was read and how long
/// the messages took from the first send to the last handled.
async fn ten_clients_five_messages(n: usize) -> (Log, Vec<ClientId>, Duration) {
    const CLIENTS: usize = 10;
    const MESSAGES: usize = 5;
    let engine = start(builder().shards(2).inbox(true));
    let partitions = engine.inbox().expect("an inbox").partition(n);
    let (_gate, gate) = watch::channel(true);
    let (log, tasks) = consume(partitions, gate);
    let mut clients = connect(&engine, CLIENTS).await;
    let start = Instant::now();
    for (ws, _) in &mut clients {
        say(ws, 0, MESSAGES).await;
    }
    until(
        || log.borrow().texts == CLIENTS * MESSAGES,
        || format!("every message handled: {}", log.borrow().texts),
    )
    .await;
    let took = log.borrow().last.expect("handled") - start;
    let ids = clients.iter().map(|(_, id)| *id).collect();
    finish(&engine, clients, tasks).await;
    assert_eq!(engine.stats().total.inbox_lost, 0);
    assert_eq!(
        engine.stats().total.inbox_events,
        log.borrow().events() as u64
    );
    let log = Rc::try_unwrap(log).ok().expect("tasks ended").into_inner();
    for &id in &ids {
        assert_life(&log, id, MESSAGES);
    }
    (log, ids, took)
}

#[tokio::test(start_paused = true)]
async fn four_partitions_await_for_different_clients_at_once_and_keep_each_client_s_order() {
    local(async {
        let (log, ids, took) = ten_clients_five_messages(4).await;
        // Texts per partition: the busiest one sets the pace.
        let mut load: HashMap<usize, u32> = HashMap::new();
        for &id in &ids {
            *load.entry(log.of(id).0[0]).or_default() += 5;
        }
        let busiest = load.values().copied().max().expect("a partition");
        assert!(
            load.len() >= 2,
            "ten clients over {} partition(s)",
            load.len()
        );
        assert!(
            log.in_flight_max >= 2,
            "handled {} message(s) at once at most",
            log.in_flight_max
        );
        // One task would take 50 steps (1 s); four take as long as the busiest one's share.
        assert!(
            took <= STEP * busiest + ms(5),
            "took {took:?}, the busiest partition has {busiest} messages"
        );
        assert!(took < STEP * 50 * 3 / 4, "took {took:?}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn one_partition_keeps_every_client_s_order_and_handles_one_message_at_a_time() {
    local(async {
        let (log, _, took) = ten_clients_five_messages(1).await;
        assert_eq!(log.in_flight_max, 1);
        assert!(took >= STEP * 50, "took {took:?}: one after another");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stuck_partition_pauses_clients_once_its_buffer_is_full_and_loses_nothing() {
    /// Events each shard queues, and each partition buffers.
    const CAPACITY: usize = 2;
    /// Messages each client sends.
    const MESSAGES: usize = 20;
    local(async {
        let engine = start(builder().shards(1).inbox(true).inbox_capacity(CAPACITY));
        let partitions = engine.inbox().expect("an inbox").partition(2);
        // Partition 0's task stops at its first text message until the gate opens.
        let (open, gate) = watch::channel(false);
        let (log, tasks) = consume(partitions, gate);
        let mut clients = connect(&engine, 6).await;
        until(
            || log.borrow().events() == 6,
            || "every client's registration read".into(),
        )
        .await;
        let (mut stuck, mut free) = (Vec::new(), Vec::new());
        for (i, (_, id)) in clients.iter().enumerate() {
            match log.borrow().of(*id).0[..] {
                [0] => stuck.push(i),
                [1] => free.push(i),
                ref other => panic!("{id} in partitions {other:?}"),
            }
        }
        assert!(!stuck.is_empty() && !free.is_empty(), "{stuck:?} {free:?}");
        // Partition 0's task takes a message and stops: it reads nothing more.
        say(&mut clients[stuck[0]].0, 0, 1).await;
        elapse(ms(100)).await;
        // The others' clients are read and handled meanwhile.
        for &i in &free {
            say(&mut clients[i].0, 0, MESSAGES).await;
        }
        let handled = free.len() * MESSAGES;
        until(
            || log.borrow().texts == handled,
            || format!("the free partition handled {}", log.borrow().texts),
        )
        .await;
        // Partition 0's clients fill its buffer, then the shard's queue: they are paused.
        for (n, &i) in stuck.iter().enumerate() {
            let from = if n == 0 { 1 } else { 0 };
            say(&mut clients[i].0, from, MESSAGES).await;
        }
        until(
            || engine.stats().total.inbox_paused > 0,
            || "a client of the stuck partition paused".into(),
        )
        .await;
        elapse(ms(500)).await;
        let stats = engine.stats();
        assert!(stats.total.inbox_waiting > 0, "still paused");
        assert!(stats.total.inbox_depth <= CAPACITY as u64);
        assert_eq!(stats.total.inbox_lost, 0);
        // Its task goes on: everything arrives.
        open.send(true).expect("gate open");
        let all = (free.len() + stuck.len()) * MESSAGES;
        until(
            || log.borrow().texts == all,
            || format!("every message handled: {}", log.borrow().texts),
        )
        .await;
        let ids: Vec<_> = clients.iter().map(|(_, id)| *id).collect();
        finish(&engine, clients, tasks).await;
        let log = log.borrow();
        for id in ids {
            assert_life(&log, id, MESSAGES);
        }
        let stats = engine.stats();
        assert_eq!(stats.total.inbox_lost, 0);
        assert_eq!(stats.total.inbox_events, log.events() as u64);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_events_of_a_dropped_partition_are_counted_as_lost_and_the_others_arrive() {
    const MESSAGES: usize = 5;
    local(async {
        let engine = start(builder().shards(2).inbox(true));
        let mut partitions = engine.inbox().expect("an inbox").partition(2);
        drop(partitions.remove(0));
        let (_gate, gate) = watch::channel(true);
        let (log, tasks) = consume(partitions, gate);
        let mut clients = connect(&engine, 8).await;
        for (ws, _) in &mut clients {
            say(ws, 0, MESSAGES).await;
        }
        elapse(ms(100)).await;
        let ids: Vec<_> = clients.iter().map(|(_, id)| *id).collect();
        finish(&engine, clients, tasks).await;
        let log = log.borrow();
        let (mut kept, mut gone) = (0, 0);
        for id in ids {
            if log.of(id).0.is_empty() {
                gone += 1;
            } else {
                assert_life(&log, id, MESSAGES);
                kept += 1;
            }
        }
        assert!(kept > 0 && gone > 0, "{kept} kept, {gone} gone");
        let stats = engine.stats();
        assert_eq!(stats.total.inbox_lost, gone * (MESSAGES as u64 + 2));
        assert_eq!(
            stats.total.inbox_events,
            log.events() as u64 + stats.total.inbox_lost
        );
    })
    .await;
}
