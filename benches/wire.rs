//! Wire format: server-frame encoding and client-frame parsing, shardcast against tungstenite.
//!
//! Two groups per payload size (32 B, 1 KiB, 16 KiB):
//!
//! - `encode/<size>`: one binary server frame from a message body. `shardcast_payload` is
//!   [`Payload::binary`] (the public path: [`frame::encode`] into one exact-size allocation).
//!   `tungstenite_fresh_vec` formats a tungstenite `Frame` into a new `Vec` of the exact size
//!   (one allocation, one copy: the same work); `tungstenite_reused_vec` formats into a cleared,
//!   reused `Vec` (tungstenite's own write-buffer path, no allocation). Text frames take the
//!   same code path in both crates (the body is already a `str`), so only binary is measured.
//! - `parse/<size>`: about 1 MiB of masked client frames, alternating text and binary, read to
//!   the last message. `shardcast_parser` copies the input into a 64 KiB scratch buffer one
//!   chunk at a time (as a shard's read does) and hands each chunk to [`Parser::feed`];
//!   `tungstenite_websocket` is a server-role `WebSocket` over a `Cursor<Vec<u8>>`, which copies
//!   the input into its own read buffer. So both sides copy every byte once inside the timed
//!   routine, and both check UTF-8 on text. Building the parser or the `WebSocket` (and cloning
//!   the input for it) is setup, outside the timing.
//!
//! - `deflate/<size>` (256 B, 1 KiB and 16 KiB of order-book JSON): what permessage-deflate costs
//!   once per broadcast, `compress_level_N` (the compressed frame, [`Deflater::frame`], at zlib
//!   levels 1, 6 and 9), and once per received message, `inflate` ([`Inflater::inflate`] of
//!   the level-6 body). The compressed sizes are printed once per size, as criterion measures
//!   time only.
//!
//! Throughput is body bytes (encode, deflate) or wire bytes (parse), identical for both
//! contenders.
//!
//! Reading the 16 KiB encode figures: both encoders copy the body right after a 4-byte header,
//! and glibc copies that much with `rep movsb`, which some AMD Zen parts run many times slower
//! when the destination sits a few bytes past the source modulo 4 KiB. Where the allocator puts
//! source and frame then decides the figure more than the encoder does.

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_main};
use shardcast::Payload;
use shardcast::wire::deflate::{Deflater, Inflater};
use shardcast::wire::{Inbound, Limits, Opcode, Parser, frame};
use std::hint::black_box;
use std::io::Cursor;
use std::ops::ControlFlow;
use std::time::Duration;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{Role, WebSocket};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Message body sizes measured, with their labels.
const SIZES: [(usize, &str); 3] = [(32, "32B"), (1024, "1KiB"), (16 * 1024, "16KiB")];

/// Approximate size of the client byte stream each parse iteration reads.
const PARSE_INPUT_BYTES: usize = 1 << 20;

/// The shard's default read buffer (`Config::read_buffer_bytes`): what one socket read yields.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// A body of `len` printable ASCII bytes (valid as text and as binary).
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Masked client frames of `size`-byte bodies, alternating text and binary, about
/// [`PARSE_INPUT_BYTES`] long; encoded by tungstenite, each with its own mask. Returns the
/// stream and the number of frames in it.
fn client_stream(size: usize) -> (Vec<u8>, usize) {
    let body = Bytes::from(body(size));
    let mut out = Vec::with_capacity(PARSE_INPUT_BYTES + size + 16);
    let mut frames = 0usize;
    while out.len() < PARSE_INPUT_BYTES {
        let data = if frames.is_multiple_of(2) {
            Data::Text
        } else {
            Data::Binary
        };
        let m = frames as u32;
        let header = FrameHeader {
            opcode: OpCode::Data(data),
            mask: Some(m.wrapping_mul(0x9E37_79B9).to_le_bytes()),
            ..FrameHeader::default()
        };
        Frame::from_payload(header, body.clone())
            .format(&mut out)
            .unwrap_or_else(|e| panic!("tungstenite could not encode a client frame: {e}"));
        frames += 1;
    }
    (out, frames)
}

/// Reads `input` with shardcast's parser, one [`READ_CHUNK_BYTES`] chunk at a time copied into
/// `scratch`; returns (messages, body bytes) delivered.
fn shardcast_parse(parser: &mut Parser, input: &[u8], scratch: &mut [u8]) -> (usize, usize) {
    let mut messages = 0usize;
    let mut bytes = 0usize;
    for chunk in input.chunks(scratch.len()) {
        let Some(read) = scratch.get_mut(..chunk.len()) else {
            panic!("scratch buffer shorter than a chunk");
        };
        read.copy_from_slice(chunk);
        let fed = parser.feed(read, |message| {
            let len = match message {
                Inbound::Text(text) => black_box(text).len(),
                Inbound::Binary(bin) => black_box(bin).len(),
                other => panic!("unexpected inbound message: {other:?}"),
            };
            messages += 1;
            bytes += len;
            ControlFlow::Continue(())
        });
        match fed {
            Ok(n) if n == read.len() => {}
            other => panic!("shardcast parser stopped early: {other:?}"),
        }
    }
    (messages, bytes)
}

/// Reads every message of `ws` (until the end of its input); returns (messages, body bytes).
fn tungstenite_parse(ws: &mut WebSocket<Cursor<Vec<u8>>>) -> (usize, usize) {
    let mut messages = 0usize;
    let mut bytes = 0usize;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => bytes += black_box(text).len(),
            Ok(tungstenite::Message::Binary(bin)) => bytes += black_box(bin).len(),
            Ok(other) => panic!("unexpected tungstenite message: {other:?}"),
            // The input ends without a close frame: that is the end of the stream.
            Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => break,
            Err(e) => panic!("tungstenite failed to read the client stream: {e}"),
        }
        messages += 1;
    }
    (messages, bytes)
}

/// A server-role tungstenite connection reading a copy of `input`.
fn tungstenite_reader(input: &[u8]) -> WebSocket<Cursor<Vec<u8>>> {
    WebSocket::from_raw_socket(Cursor::new(input.to_vec()), Role::Server, None)
}

fn encode(c: &mut Criterion) {
    for (size, label) in SIZES {
        let mut group = c.benchmark_group(format!("encode/{label}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(1500))
            .throughput(Throughput::Bytes(size as u64));
        let raw = body(size);
        let shared = Bytes::from(raw.clone());

        // The two encoders must agree byte for byte before their speed is compared.
        let ours = Payload::binary(&raw);
        let mut theirs = Vec::new();
        Frame::message(shared.clone(), OpCode::Data(Data::Binary), true)
            .format(&mut theirs)
            .unwrap_or_else(|e| panic!("tungstenite could not encode: {e}"));
        assert_eq!(ours.frame().as_ref(), &theirs[..], "encoders disagree");
        assert_eq!(&frame::encode(ours.opcode(), &raw), ours.frame());
        let frame_len = theirs.len();

        group.bench_function(BenchmarkId::new("shardcast_payload", label), |b| {
            b.iter(|| Payload::binary(black_box(&raw[..])));
        });
        group.bench_function(BenchmarkId::new("tungstenite_fresh_vec", label), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(frame_len);
                Frame::message(black_box(&shared).clone(), OpCode::Data(Data::Binary), true)
                    .format(&mut out)
                    .unwrap_or_else(|e| panic!("tungstenite could not encode: {e}"));
                out
            });
        });
        let mut reused = Vec::with_capacity(frame_len);
        group.bench_function(BenchmarkId::new("tungstenite_reused_vec", label), |b| {
            b.iter(|| {
                reused.clear();
                Frame::message(black_box(&shared).clone(), OpCode::Data(Data::Binary), true)
                    .format(&mut reused)
                    .unwrap_or_else(|e| panic!("tungstenite could not encode: {e}"));
                black_box(reused.len())
            });
        });
        group.finish();
    }
}

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    for (size, label) in SIZES {
        let (input, frames) = client_stream(size);
        let expected = (frames, frames * size);
        let mut scratch = vec![0u8; READ_CHUNK_BYTES];

        // Both readers must see every message before their speed is compared.
        let got = shardcast_parse(&mut Parser::new(limits), &input, &mut scratch);
        assert_eq!(got, expected, "shardcast parser missed messages");
        let got = tungstenite_parse(&mut tungstenite_reader(&input));
        assert_eq!(got, expected, "tungstenite missed messages");

        let mut group = c.benchmark_group(format!("parse/{label}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(BenchmarkId::new("shardcast_parser", label), |b| {
            b.iter_batched_ref(
                || Parser::new(limits),
                |parser| shardcast_parse(parser, &input, &mut scratch),
                BatchSize::PerIteration,
            );
        });
        group.bench_function(BenchmarkId::new("tungstenite_websocket", label), |b| {
            b.iter_batched_ref(
                || tungstenite_reader(&input),
                tungstenite_parse,
                BatchSize::PerIteration,
            );
        });
        group.finish();
    }
}

/// About `len` bytes of order-book JSON, numbers varying as in a real feed.
fn json(len: usize) -> Vec<u8> {
    let mut out = String::from("{\"type\":\"book\",\"levels\":[");
    let mut i = 0u64;
    while out.len() + 64 < len {
        let price = 1_000_000 + i.wrapping_mul(7919) % 50_000;
        let qty = i.wrapping_mul(2_654_435_761) % 100_000;
        out.push_str(&format!(
            "{{\"p\":\"{}.{:02}\",\"q\":\"{}.{:03}\",\"n\":{}}},",
            price / 100,
            price % 100,
            qty / 1000,
            qty % 1000,
            i % 17 + 1
        ));
        i += 1;
    }
    out.pop();
    out.push_str("]}");
    out.into_bytes()
}

/// `deflate/<size>`: compressing once per broadcast, at three levels, and inflating.
fn deflate(c: &mut Criterion) {
    for (size, label) in [(256, "256B"), (1024, "1KiB"), (16 * 1024, "16KiB")] {
        let body = json(size);
        let mut group = c.benchmark_group(format!("deflate/{label}"));
        group
            .throughput(Throughput::Bytes(body.len() as u64))
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for level in [1, 6, 9] {
            let mut deflater = Deflater::new(level, 15);
            let frame_len = deflater.frame(Opcode::Text, &body).map_or(0, |f| f.len());
            eprintln!(
                "deflate/{label}: {} B of JSON, level {level}: a {frame_len}-byte frame ({:.2})",
                body.len(),
                frame_len as f64 / body.len() as f64
            );
            group.bench_function(
                BenchmarkId::new(format!("compress_level_{level}"), label),
                |b| b.iter(|| deflater.frame(Opcode::Text, black_box(&body))),
            );
        }
        let compressed = Deflater::new(6, 15).compress(&body).to_vec();
        let mut inflater = Inflater::new();
        group.bench_function(BenchmarkId::new("inflate", label), |b| {
            b.iter(|| {
                inflater
                    .inflate(black_box(&compressed), 1 << 20)
                    .map(<[u8]>::len)
            })
        });
        group.finish();
    }
}

/// Every benchmark of this file, with the settings given on the command line.
///
/// Written out rather than with `criterion_group!`, whose `pub fn` cannot carry a doc.
fn benches() {
    // Fewer bootstrap resamples than the default 100 000: analysis time adds up on a shared
    // 2-core machine, and the intervals barely move.
    let mut criterion = Criterion::default()
        .nresamples(10_000)
        .configure_from_args();
    encode(&mut criterion);
    parse(&mut criterion);
    deflate(&mut criterion);
}

criterion_main!(benches);
