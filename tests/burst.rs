//! Clients bursting at once, megabytes in one write each, relayed to everyone: the bursts reach
//! fast readers at socket speed instead of piling into their queues and evicting them. A shard
//! reads from publishers only as fast as what it read can drain, so no reader that keeps
//! reading is evicted, whatever the number of bursting clients and the size of their messages;
//! the publishers are slowed instead (through TCP).

mod common;

use common::{UPGRADE_REQUEST, WAIT, builder, masked, parse_server_frame, start};
use shardcast::{Audience, Context, Handler, Incoming, Payload, SlowConsumerPolicy};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Relays every binary message to every client, its sender included (as `shardcast serve`).
struct Relay;

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if let Incoming::Binary(body) = message {
            ctx.broadcast(Payload::binary(body), Audience::ALL);
        }
    }
}

/// Readers besides the bursting clients.
const READERS: usize = 20;

/// `release` in a release build (the sizes at which the defects showed, on this 2-core
/// machine), `debug` otherwise: a debug build reads and writes several times slower, and CI
/// runs the debug tests on three drivers.
fn sized(debug: usize, release: usize) -> usize {
    if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

/// How a reader's connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// It read every expected message.
    Complete,
    /// It was closed (with this close code) or cut off after this many messages.
    Cut { messages: usize, close: Option<u16> },
}

/// Connects a blocking client and completes its upgrade.
fn connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .write_all(UPGRADE_REQUEST.as_bytes())
        .expect("send upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read response"), 1, "eof");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "upgrade refused");
    stream
}

/// Reads as fast as the socket allows until `expected` binary messages of `size` bytes
/// arrived, or the connection ends (a close frame, EOF, or no byte for [`WAIT`]).
fn read_all(mut stream: TcpStream, expected: usize, size: usize) -> End {
    let mut buf = vec![0u8; 256 << 10];
    let (mut start, mut end) = (0, 0);
    let mut messages = 0;
    loop {
        while let Some((frame, used)) = parse_server_frame(&buf[start..end]) {
            start += used;
            match frame.opcode {
                0x2 => {
                    assert_eq!(frame.payload.len(), size);
                    messages += 1;
                    if messages == expected {
                        return End::Complete;
                    }
                }
                0x8 => {
                    let close = frame
                        .payload
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]));
                    return End::Cut { messages, close };
                }
                _ => {}
            }
        }
        buf.copy_within(start..end, 0);
        (start, end) = (0, end - start);
        match stream.read(&mut buf[end..]) {
            Ok(0) | Err(_) => {
                return End::Cut {
                    messages,
                    close: None,
                };
            }
            Ok(n) => end += n,
        }
    }
}

/// A burst: `clients` well-behaved clients (each reads everything it receives) send `count`
/// messages of `size` bytes each, in one write each, at once, while twenty clients read as
/// fast as they can.
#[derive(Clone, Copy, Debug)]
struct Burst {
    shards: usize,
    clients: usize,
    count: usize,
    size: usize,
    policy: SlowConsumerPolicy,
}

impl Burst {
    /// Runs the burst and checks that no reader was evicted, and that every client received
    /// every message (`Disconnect`), or received what its policy did not drop, exactly as
    /// counted (the drop policies).
    async fn run(self) {
        let Burst {
            shards,
            clients,
            count,
            size,
            policy,
        } = self;
        let builder = builder()
            .shards(shards)
            .slow_consumer(policy)
            .handler(Relay);
        let (engine, addr) = start(builder).await;
        let total = clients * count;
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let stream = connect(addr);
                std::thread::spawn(move || read_all(stream, total, size))
            })
            .collect();
        let bursters: Vec<TcpStream> = (0..clients).map(|_| connect(addr)).collect();
        let echoes: Vec<_> = bursters
            .iter()
            .map(|b| {
                let echo = b.try_clone().expect("clone");
                std::thread::spawn(move || read_all(echo, total, size))
            })
            .collect();
        let connected = READERS + clients;
        common::eventually(|| engine.client_count() == connected).await;

        let writers: Vec<_> = bursters
            .into_iter()
            .enumerate()
            .map(|(c, mut burster)| {
                let burst: Vec<u8> = (0..count)
                    .flat_map(|i| masked(0x82, &vec![(c + i) as u8; size]))
                    .collect();
                std::thread::spawn(move || {
                    burster.write_all(&burst).expect("write the burst");
                    burster
                })
            })
            .collect();
        let ends: Vec<End> = tokio::task::spawn_blocking(move || {
            readers
                .into_iter()
                .chain(echoes)
                .map(|r| r.join().expect("reader"))
                .collect()
        })
        .await
        .expect("readers");
        let _bursters: Vec<TcpStream> = writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect();
        let stats = engine.stats().total;
        assert_eq!(
            stats.evicted.slow_consumer, 0,
            "{self:?}: a reader that keeps reading was evicted; ended {ends:?}"
        );
        match policy {
            SlowConsumerPolicy::Disconnect => {
                assert!(
                    ends.iter().all(|e| *e == End::Complete),
                    "{self:?}: {ends:?}"
                );
                assert_eq!(stats.frames_dropped, 0, "{self:?}");
            }
            _ => {
                // What a reader missed is what its policy dropped, counted: nothing is lost
                // silently, and nobody was cut off.
                let missed: usize = ends
                    .iter()
                    .map(|e| match *e {
                        End::Complete => 0,
                        End::Cut {
                            messages,
                            close: None,
                        } => total - messages,
                        End::Cut { close, .. } => panic!("{self:?}: closed with {close:?}"),
                    })
                    .sum();
                assert_eq!(stats.frames_dropped, missed as u64, "{self:?}: {ends:?}");
            }
        }
        engine.shutdown(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_mib_burst_on_one_shard_evicts_no_fast_reader() {
    Burst {
        shards: 1,
        clients: 1,
        count: 4 << 10,
        size: 1 << 10,
        policy: SlowConsumerPolicy::Disconnect,
    }
    .run()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mib_burst_across_two_shards_evicts_no_fast_reader() {
    Burst {
        shards: 2,
        clients: 1,
        count: 2 << 10,
        size: 1 << 10,
        policy: SlowConsumerPolicy::Disconnect,
    }
    .run()
    .await;
}

/// Empty messages cost a reader's queue 82 bytes each for 6 read: 64 KiB read from each of
/// two clients in one pass used to fill every reader's 1 MiB queue past its cap (21 of 21
/// evicted, in release builds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursting_clients_of_empty_messages_evict_no_fast_reader() {
    for (shards, clients) in [(1, 1), (1, 2), (2, 2), (2, 4)] {
        Burst {
            shards,
            clients,
            count: sized(20_000, 100_000) / clients,
            size: 0,
            policy: SlowConsumerPolicy::Disconnect,
        }
        .run()
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clients_bursting_16_byte_messages_evict_no_fast_reader() {
    Burst {
        shards: 2,
        clients: 4,
        count: sized(5_000, 20_000),
        size: 16,
        policy: SlowConsumerPolicy::Disconnect,
    }
    .run()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_bursting_1_kib_messages_evict_no_fast_reader() {
    Burst {
        shards: 2,
        clients: 16,
        count: sized(128, 2 << 10),
        size: 1 << 10,
        policy: SlowConsumerPolicy::Disconnect,
    }
    .run()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_under_the_drop_policies_evict_nobody_and_count_every_drop() {
    for policy in [
        SlowConsumerPolicy::DropNewest,
        SlowConsumerPolicy::DropOldest,
    ] {
        Burst {
            shards: 2,
            clients: 2,
            count: sized(20_000, 100_000),
            size: 0,
            policy,
        }
        .run()
        .await;
    }
}
