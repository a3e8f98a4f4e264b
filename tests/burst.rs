//! One client's burst: megabytes in one write, relayed to everyone, reach fast readers at
//! socket speed instead of piling into their queues and evicting them.

mod common;

use common::{UPGRADE_REQUEST, WAIT, builder, masked, parse_server_frame, start};
use shardcast::Incoming;
use shardcast::{Audience, Context, Handler, Payload};
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

/// Size of each relayed message.
const MESSAGE: usize = 1 << 10;
/// Readers besides the bursting client.
const READERS: usize = 20;

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

/// Reads as fast as the socket allows until `expected` binary messages arrived, or the
/// connection ends (a close frame, EOF, or no byte for [`WAIT`]).
fn read_all(mut stream: TcpStream, expected: usize) -> End {
    let mut buf = vec![0u8; 256 << 10];
    let (mut start, mut end) = (0, 0);
    let mut messages = 0;
    loop {
        while let Some((frame, used)) = parse_server_frame(&buf[start..end]) {
            start += used;
            match frame.opcode {
                0x2 => {
                    assert_eq!(frame.payload.len(), MESSAGE);
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

/// A well-behaved client (it reads everything it receives) sends `bytes` of 1 KiB messages in
/// one write while twenty clients read as fast as they can: nobody may be evicted, and everyone
/// receives every message.
async fn burst_reaches_every_fast_reader(shards: usize, bytes: usize) {
    let builder = builder().shards(shards).handler(Relay);
    let (engine, addr) = start(builder).await;
    let count = bytes / MESSAGE;
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let stream = connect(addr);
            std::thread::spawn(move || read_all(stream, count))
        })
        .collect();
    let mut burster = connect(addr);
    let echo = burster.try_clone().expect("clone");
    let echo = std::thread::spawn(move || read_all(echo, count));
    let connected = READERS + 1;
    common::eventually(|| engine.client_count() == connected).await;

    let burst: Vec<u8> = (0..count)
        .flat_map(|i| masked(0x82, &vec![i as u8; MESSAGE]))
        .collect();
    let writer = std::thread::spawn(move || {
        burster.write_all(&burst).expect("write the burst");
        burster
    });

    let ends: Vec<End> = tokio::task::spawn_blocking(move || {
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect()
    })
    .await
    .expect("readers");
    let echo = tokio::task::spawn_blocking(move || echo.join().expect("echo"))
        .await
        .expect("echo");
    let _burster = writer.join().expect("writer");
    let stats = engine.stats().total;
    assert_eq!(
        stats.evicted.slow_consumer, 0,
        "{shards} shard(s), {bytes} B burst: readers ended {ends:?}"
    );
    assert!(ends.iter().all(|e| *e == End::Complete), "{ends:?}");
    assert_eq!(
        echo,
        End::Complete,
        "the bursting client gets its own burst"
    );
    engine.shutdown(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_mib_burst_on_one_shard_evicts_no_fast_reader() {
    burst_reaches_every_fast_reader(1, 4 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mib_burst_across_two_shards_evicts_no_fast_reader() {
    burst_reaches_every_fast_reader(2, 2 << 20).await;
}
