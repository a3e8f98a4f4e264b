//! Broadcast behaviour: every client gets each broadcast once and in publisher order, batches
//! stay adjacent, audiences pick exactly their clients, and writes are coalesced.

mod common;

use common::*;
use shardcast::wire::envelope;
use shardcast::{Audience, Engine, Payload, Principal, TryBroadcastError};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_receives_each_broadcast_once_in_each_publishers_order() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 150;
    let (engine, addr) = start(builder().shards(2)).await;
    let clients = connect_many(&engine, addr, 8).await;
    let readers: Vec<Reader> = clients.into_iter().map(spawn_reader).collect();

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for i in 0..PER_PUBLISHER {
                    broadcast(&engine, format!("{p}:{i}"), Audience::ALL).await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    broadcast(&engine, END, Audience::ALL).await;

    let mut clients = Vec::new();
    for reader in readers {
        let (got, ws) = reader.until_end().await;
        let mut next = [0usize; PUBLISHERS];
        for text in texts(&got) {
            let (p, i) = text.split_once(':').expect("publisher:index");
            let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[p], "publisher {p}: got {i} out of order or twice");
            next[p] += 1;
        }
        assert_eq!(next, [PER_PUBLISHER; PUBLISHERS], "every broadcast arrived");
        clients.push(ws);
    }
    let deliveries = 8 * (PUBLISHERS * PER_PUBLISHER + 1) as u64;
    eventually(|| engine.stats().total.deliveries == deliveries).await;
    assert_eq!(engine.stats().total.evicted.slow_consumer, 0);
    assert!(
        shutdown_reading(&engine, clients)
            .await
            .iter()
            .all(|c| *c == Some(1001))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_frames_arrive_adjacent_and_in_order_amid_concurrent_broadcasts() {
    const BATCHES: usize = 60;
    const BATCH_LEN: usize = 5;
    const SINGLES: usize = 300;
    let (engine, addr) = start(builder().shards(2)).await;
    let clients = connect_many(&engine, addr, 4).await;
    let readers: Vec<Reader> = clients.into_iter().map(spawn_reader).collect();

    let singles = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for i in 0..SINGLES {
                broadcast(&engine, format!("s{i}"), Audience::ALL).await;
            }
        })
    };
    let batches = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for b in 0..BATCHES {
                let frames = (0..BATCH_LEN).map(|k| Payload::text(format!("b{b}.{k}")));
                engine.broadcast_batch(frames, Audience::ALL).await.unwrap();
            }
        })
    };
    singles.await.unwrap();
    batches.await.unwrap();
    broadcast(&engine, END, Audience::ALL).await;

    let mut clients = Vec::new();
    for reader in readers {
        let (got, ws) = reader.until_end().await;
        let got = texts(&got);
        assert_eq!(got.len(), SINGLES + BATCHES * BATCH_LEN);
        let mut next_single = 0;
        let mut next_batch = 0;
        let mut i = 0;
        while i < got.len() {
            if let Some(n) = got[i].strip_prefix('s') {
                assert_eq!(n.parse::<usize>().unwrap(), next_single, "singles in order");
                next_single += 1;
                i += 1;
                continue;
            }
            // A batch: its frames must be the next BATCH_LEN messages, with nothing between.
            let expected: Vec<String> = (0..BATCH_LEN)
                .map(|k| format!("b{next_batch}.{k}"))
                .collect();
            assert_eq!(
                got[i..(i + BATCH_LEN).min(got.len())],
                expected[..],
                "batch {next_batch} contiguous"
            );
            next_batch += 1;
            i += BATCH_LEN;
        }
        assert_eq!((next_single, next_batch), (SINGLES, BATCHES));
        clients.push(ws);
    }
    shutdown_reading(&engine, clients).await;
}

#[tokio::test]
async fn audience_all_except_leaves_out_exactly_that_client() {
    let (engine, addr, events) = start_recording(builder().shards(2)).await;
    let (mut clients, ids) = connect_many_with_ids(&engine, addr, &events, 5).await;

    broadcast(&engine, "not for 2", Audience::ALL.except(ids[2])).await;
    broadcast(&engine, END, Audience::ALL).await;

    for (i, ws) in clients.iter_mut().enumerate() {
        let got = texts_until_end(ws).await;
        let expected: Vec<&str> = if i == 2 { vec![] } else { vec!["not for 2"] };
        assert_eq!(got, expected, "client {i}");
    }
    shutdown_reading(&engine, clients).await;
}

#[tokio::test]
async fn authenticated_audience_reaches_only_authenticated_clients() {
    let (engine, addr, events) = start_recording(builder().shards(2)).await;
    let (mut clients, ids) = connect_many_with_ids(&engine, addr, &events, 5).await;
    let authenticated = [0, 3, 4];
    for &i in &authenticated {
        engine
            .set_authenticated(ids[i], Principal::new(format!("user{i}")))
            .await
            .unwrap();
    }

    broadcast(&engine, "secret", Audience::AUTHENTICATED).await;
    broadcast(
        &engine,
        "secret but not 3",
        Audience::AUTHENTICATED.except(ids[3]),
    )
    .await;
    broadcast(&engine, END, Audience::ALL).await;

    for (i, ws) in clients.iter_mut().enumerate() {
        let got = texts_until_end(ws).await;
        let expected: Vec<&str> = match i {
            3 => vec!["secret"],
            i if authenticated.contains(&i) => vec!["secret", "secret but not 3"],
            _ => vec![],
        };
        assert_eq!(got, expected, "client {i}");
        let info = engine.client(ids[i]).await.expect("still registered");
        assert_eq!(info.authenticated, authenticated.contains(&i));
        let principal = info
            .principal
            .as_ref()
            .and_then(|p| p.downcast_ref::<String>().cloned());
        assert_eq!(
            principal,
            authenticated.contains(&i).then(|| format!("user{i}"))
        );
    }
    shutdown_reading(&engine, clients).await;
}

#[tokio::test]
async fn send_reaches_only_its_client() {
    let (engine, addr, events) = start_recording(builder().shards(2)).await;
    let (mut clients, ids) = connect_many_with_ids(&engine, addr, &events, 4).await;

    engine.send(ids[1], Payload::text("for 1")).await.unwrap();
    engine
        .try_send(ids[2], Payload::text("for 2"))
        .expect("queue has room");
    broadcast(&engine, END, Audience::ALL).await;

    for (i, ws) in clients.iter_mut().enumerate() {
        let got = texts_until_end(ws).await;
        let expected: Vec<String> = match i {
            1 | 2 => vec![format!("for {i}")],
            _ => vec![],
        };
        assert_eq!(got, expected, "client {i}");
    }
    shutdown_reading(&engine, clients).await;
}

#[tokio::test]
async fn try_broadcast_succeeds_when_queues_have_room() {
    let (engine, addr) = start(builder().shards(2)).await;
    let mut clients = connect_many(&engine, addr, 3).await;

    for i in 0..10 {
        let result = engine.try_broadcast(Payload::text(format!("t{i}")), Audience::ALL);
        assert!(
            result.is_ok(),
            "queues of 1024 have room for 10: {result:?}"
        );
    }
    engine
        .try_broadcast(Payload::text(END), Audience::ALL)
        .unwrap();

    let expected: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    for ws in clients.iter_mut() {
        assert_eq!(texts_until_end(ws).await, expected);
    }
    shutdown_reading(&engine, clients).await;
    match engine.try_broadcast(Payload::text("late"), Audience::ALL) {
        Err(TryBroadcastError::Closed(payload)) => assert_eq!(payload.body(), b"late"),
        other => panic!("expected Closed with the payload back, got {other:?}"),
    }
}

#[tokio::test]
async fn stats_count_deliveries_and_many_queued_frames_share_a_write() {
    const FRAMES: usize = 200;
    let (engine, addr) = start(builder().shards(2)).await;
    let mut clients = connect_many(&engine, addr, 4).await;
    // Every client has had its 101 written; count from here.
    eventually(|| engine.stats().total.queued_bytes == 0).await;
    let before = engine.stats();

    // One batch: every client's queue gets all frames in one tick, so its flush can coalesce.
    engine
        .broadcast_batch(
            (0..FRAMES).map(|i| Payload::text(format!("c{i}"))),
            Audience::ALL,
        )
        .await
        .unwrap();
    broadcast(&engine, END, Audience::ALL).await;
    for ws in clients.iter_mut() {
        assert_eq!(texts_until_end(ws).await.len(), FRAMES);
    }

    let deliveries = 4 * (FRAMES as u64 + 1);
    let bytes: u64 = (0..FRAMES)
        .map(|i| 2 + format!("c{i}").len() as u64)
        .sum::<u64>()
        + 2
        + END.len() as u64;
    // The counters move after the write returns, so a client can read a frame before its write
    // is counted: wait for the bytes, then check every figure. Wait as well for every shard to
    // apply every broadcast: a shard with none of the clients (all four may land on the
    // other) delivers nothing, so what the clients read says nothing of how far it got.
    eventually(|| {
        let t = engine.stats().total;
        t.deliveries - before.total.deliveries == deliveries
            && t.bytes_written - before.total.bytes_written >= 4 * bytes
            && t.broadcasts_applied - before.total.broadcasts_applied >= 2 * (FRAMES as u64 + 1)
    })
    .await;
    let after = engine.stats();
    let writes = after.total.write_syscalls - before.total.write_syscalls;
    assert!(writes >= 4, "every client was written to at least once");
    assert!(
        writes * 10 < deliveries,
        "{writes} writes for {deliveries} deliveries: not coalesced"
    );
    assert_eq!(
        after.broadcasts - before.broadcasts,
        FRAMES as u64 + 1,
        "each broadcast counted once in all"
    );
    assert_eq!(
        after.total.broadcasts_applied - before.total.broadcasts_applied,
        2 * (FRAMES as u64 + 1),
        "and applied once per shard"
    );
    assert!(
        after
            .shards
            .iter()
            .zip(&before.shards)
            .all(|(a, b)| a.broadcasts_applied - b.broadcasts_applied == FRAMES as u64 + 1),
        "by each shard"
    );
    assert_eq!(
        after.total.bytes_written - before.total.bytes_written,
        4 * bytes
    );
    assert_eq!(after.shards.len(), 2);
    shutdown_reading(&engine, clients).await;
}

/// The bodies a client received, whether as plain text frames or inside batch envelopes.
fn bodies(messages: &[Message], envelopes: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    for message in messages {
        match message {
            Message::Text(t) => out.push(t.to_string()),
            Message::Binary(b) => {
                *envelopes += 1;
                let decoded = envelope::decode(b).expect("a valid batch envelope");
                out.extend(
                    decoded.map(|body| String::from_utf8(body.to_vec()).expect("utf-8 body")),
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn batch_envelope_carries_a_run_of_broadcasts_in_order() {
    let (engine, addr) = start(builder().shards(2).batch_envelope(true)).await;
    let mut clients = connect_many(&engine, addr, 3).await;

    let mut sent: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    // One command carrying 20 frames is one run: it must go out as an envelope.
    engine
        .broadcast_batch(sent.iter().map(Payload::text), Audience::ALL)
        .await
        .unwrap();
    for i in 20..120 {
        let text = format!("e{i}");
        broadcast(&engine, &text, Audience::ALL).await;
        sent.push(text);
    }
    broadcast(&engine, END, Audience::ALL).await;
    sent.push(END.to_owned());

    for ws in clients.iter_mut() {
        let mut got = Vec::new();
        let mut envelopes = 0;
        // END may travel inside an envelope too, so decode as we go.
        while got.last().map(String::as_str) != Some(END) {
            let message = next_data(ws).await;
            got.extend(bodies(std::slice::from_ref(&message), &mut envelopes));
        }
        assert_eq!(got, sent, "bodies in order, each once");
        assert!(envelopes >= 1, "a batch of 20 goes out as an envelope");
    }
    shutdown_reading(&engine, clients).await;
}

/// Fills shard `id.shard()`'s queue (of `capacity` commands) with sends to `id`, without
/// letting any shard run: on a `build_local` engine the shards run only when the test waits.
fn fill_queue_of(engine: &Engine, id: shardcast::ClientId, capacity: usize) {
    for i in 0..capacity {
        engine
            .try_send(id, Payload::text(format!("fill{i}")))
            .expect("room in the queue");
    }
    assert!(matches!(
        engine.try_send(id, Payload::text("over")),
        Err(shardcast::TrySendError::Full(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn try_broadcast_is_all_or_nothing_when_one_shard_is_full() {
    local(async {
        let engine = start_local(builder().shards(2).shard_queue_capacity(2));
        let (_a, a) = connect_pipe(&engine).await;
        let (_b, b) = connect_pipe(&engine).await;
        assert_ne!(a.shard(), b.shard(), "one client on each shard");
        fill_queue_of(&engine, a, 2);
        match engine.try_broadcast(Payload::text("x"), Audience::ALL) {
            Err(TryBroadcastError::Full { shards, payload }) => {
                assert_eq!(shards, [a.shard()]);
                assert_eq!(payload.body(), b"x");
            }
            other => panic!("expected Full, got {other:?}"),
        }
        // Let the shards run (paused time): the one with room took nothing either.
        elapse(Duration::from_millis(10)).await;
        let stats = engine.stats();
        assert_eq!(stats.total.broadcasts_applied, 0);
        assert_eq!(stats.broadcasts, 0);
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_broadcast_reaches_no_shard() {
    local(async {
        let engine = start_local(builder().shards(2).shard_queue_capacity(2));
        let (_a, a) = connect_pipe(&engine).await;
        let (_b, b) = connect_pipe(&engine).await;
        // The second shard in order is full; the first has room.
        let full = if a.shard() > b.shard() { a } else { b };
        fill_queue_of(&engine, full, 2);
        let mut waiting = Box::pin(engine.broadcast(Payload::text("x"), Audience::ALL));
        std::future::poll_fn(|cx| {
            assert!(waiting.as_mut().poll(cx).is_pending(), "waits for room");
            std::task::Poll::Ready(())
        })
        .await;
        drop(waiting);
        elapse(Duration::from_millis(10)).await;
        let stats = engine.stats();
        assert_eq!(stats.total.broadcasts_applied, 0, "no shard got it");
        assert_eq!(stats.broadcasts, 0);
        // And the slot it had reserved is free again: a broadcast now goes through.
        broadcast(&engine, "y", Audience::ALL).await;
        elapse(Duration::from_millis(10)).await;
        assert_eq!(engine.stats().total.broadcasts_applied, 2);
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}
