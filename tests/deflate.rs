//! permessage-deflate (RFC 7692) end to end, with raw clients that offer it as browsers do: the
//! answer, one compression per broadcast whatever the number of recipients, the frame each
//! client negotiated, windows honoured, bounded inflate of what clients send, and the ways to
//! decline.

mod common;

use common::*;
use flate2::{Decompress, FlushDecompress};
use shardcast::wire::deflate::Deflater;
use shardcast::wire::handshake::Request;
use shardcast::wire::{Opcode, frame};
use shardcast::{Audience, Compression, Context, Decision, Handler, Incoming, Payload};
use std::net::SocketAddr;

/// Chrome's offer.
const CHROME: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// The answer every accepted offer gets (without a window bound).
const ANSWER: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                      client_no_context_takeover\r\n";

/// A JSON document of about `bytes` bytes, with varied numbers, as applications broadcast.
fn json(bytes: usize) -> String {
    let mut out = String::from("[");
    let mut i = 0u64;
    while out.len() < bytes {
        let price = 100_000 + (i * 7919) % 5000;
        out.push_str(&format!(
            "{{\"id\":{i},\"price\":{}.{:02},\"qty\":{},\"side\":\"{}\"}},",
            price / 100,
            price % 100,
            (i * 31) % 97 + 1,
            if i.is_multiple_of(3) { "sell" } else { "buy" }
        ));
        i += 1;
    }
    out.pop();
    out.push(']');
    out
}

/// Inflates one message's body as a client with windows of `bits` bits would (RFC 7692 7.2.2),
/// taking the output 64 bytes at a time: zlib lets a back-reference reach into the output
/// buffer it was given, so only a small buffer makes the window the limit.
fn inflate(body: &[u8], bits: u8) -> Result<Vec<u8>, flate2::DecompressError> {
    let mut inflater = Decompress::new_with_window_bits(false, bits);
    let mut out = Vec::new();
    let input = [body, &[0, 0, 0xff, 0xff]].concat();
    let mut chunk = [0u8; 64];
    loop {
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
        let at = before_in as usize;
        inflater.decompress(&input[at..], &mut chunk, FlushDecompress::Sync)?;
        let made = (inflater.total_out() - before_out) as usize;
        out.extend_from_slice(&chunk[..made]);
        if made == 0 && inflater.total_in() == before_in {
            return Ok(out);
        }
    }
}

/// A client that offered `extensions` (a whole header line), and the response head.
async fn offering(addr: SocketAddr, extensions: &str) -> (RawClient, String) {
    RawClient::connect_with(addr, extensions).await
}

/// Relays every message to every client (its sender included).
struct Relay;

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let payload = match message {
            Incoming::Text(text) => Payload::text(text),
            Incoming::Binary(bytes) => Payload::binary(bytes),
        };
        ctx.broadcast(payload, Audience::ALL);
    }
}

#[tokio::test]
async fn a_broadcast_is_compressed_once_and_each_client_gets_the_frame_it_negotiated() {
    let (engine, addr) = start(builder().shards(2)).await;
    let mut deflating = Vec::new();
    for _ in 0..4 {
        let (client, head) = offering(addr, CHROME).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(head.contains(ANSWER), "{head}");
        deflating.push(client);
    }
    let (mut plain, head) = offering(addr, "").await;
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    eventually(|| engine.client_count() == 5).await;

    let doc = json(2000);
    broadcast(&engine, &doc, Audience::ALL).await;
    broadcast(&engine, "short", Audience::ALL).await;
    for client in &mut deflating {
        let big = client.read_frame().await.expect("a frame");
        assert!(big.rsv1 && big.fin && big.opcode == 0x1, "{big:?}");
        assert!(big.payload.len() < doc.len() / 3, "{}", big.payload.len());
        assert_eq!(inflate(&big.payload, 15).expect("inflates"), doc.as_bytes());
        // Under the 256-byte threshold: plain, which the extension always allows.
        let small = client.read_frame().await.expect("a frame");
        assert!(!small.rsv1, "{small:?}");
        assert_eq!(small.payload, b"short");
    }
    let big = plain.read_frame().await.expect("a frame");
    assert!(!big.rsv1);
    assert_eq!(big.payload, doc.as_bytes());

    until(
        || {
            let stats = engine.stats();
            stats.total.deflate.deliveries == 4 && stats.total.deliveries == 10
        },
        || format!("{:?}", engine.stats().total),
    )
    .await;
    let stats = engine.stats();
    assert_eq!(
        stats.compressions, 1,
        "once for four recipients on two shards"
    );
    assert_eq!(stats.total.deflate.clients, 4);
    assert!(stats.total.deflate.bytes_saved > 4 * (doc.len() as u64 / 2));
    engine.shutdown(WAIT).await;
}

#[tokio::test]
async fn the_server_window_a_client_asks_for_is_the_one_it_gets() {
    let (engine, addr) = start(builder().shards(1)).await;
    // Two copies of one incompressible-looking block, 1,500 bytes apart: with a 32 KiB window
    // the second copy is a back-reference a 1 KiB window cannot follow.
    let block: String = (0..1500u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    let doc = format!("{block}{block}");
    let (mut narrow, head) = offering(
        addr,
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",
    )
    .await;
    assert!(head.contains("; server_max_window_bits=10\r\n"), "{head}");
    let (mut wide, _) = offering(addr, CHROME).await;
    let (mut eight, head) = offering(
        addr,
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n",
    )
    .await;
    assert!(head.contains("; server_max_window_bits=8\r\n"), "{head}");
    eventually(|| engine.client_count() == 3).await;

    broadcast(&engine, &doc, Audience::ALL).await;
    let to_wide = wide.read_frame().await.expect("a frame");
    let to_narrow = narrow.read_frame().await.expect("a frame");
    assert!(to_wide.rsv1 && to_narrow.rsv1);
    assert!(
        inflate(&to_wide.payload, 10).is_err(),
        "the wide frame reaches back past 1 KiB"
    );
    assert_eq!(
        inflate(&to_narrow.payload, 10).expect("fits"),
        doc.as_bytes()
    );
    assert_eq!(inflate(&to_wide.payload, 15).expect("fits"), doc.as_bytes());
    // zlib cannot write 8-bit windows: that client gets the message plain.
    let to_eight = eight.read_frame().await.expect("a frame");
    assert!(!to_eight.rsv1);
    assert_eq!(to_eight.payload, doc.as_bytes());
    assert_eq!(engine.stats().compressions, 2, "one per window size");
    engine.shutdown(WAIT).await;
}

#[tokio::test]
async fn compressed_messages_are_inflated_and_a_bomb_closes_only_its_sender_with_1009() {
    let (engine, addr) = start(builder().shards(2).handler(Relay)).await;
    let (mut sender, _) = offering(addr, CHROME).await;
    let (mut listener, _) = offering(addr, "").await;
    eventually(|| engine.client_count() == 2).await;
    let mut deflater = Deflater::new(6, 15);

    // Whole, then in three fragments (RSV1 on the first only), with a ping between.
    let doc = json(3000);
    let body = deflater.compress(doc.as_bytes()).to_vec();
    sender
        .send(&masked(0x80 | frame::RSV1 | 0x1, &body))
        .await
        .unwrap();
    let (a, rest) = body.split_at(body.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut fragmented = masked(frame::RSV1 | 0x1, a);
    fragmented.extend(masked(0x0, b));
    fragmented.extend(masked(0x89, b"ping"));
    fragmented.extend(masked(0x80, c));
    sender.send(&fragmented).await.unwrap();
    for _ in 0..2 {
        let got = listener.read_frame().await.expect("relayed");
        assert!(!got.rsv1, "the listener did not negotiate it");
        assert_eq!(got.payload, doc.as_bytes());
    }

    // 10 MiB of zeros in about 10 KiB: stopped at the 64 KiB limit.
    let bomb = deflater.compress(&vec![0; 10 << 20]).to_vec();
    assert!(bomb.len() < 64 << 10);
    sender
        .send(&masked(0x80 | frame::RSV1 | 0x2, &bomb))
        .await
        .unwrap();
    let (_, end) = sender.read_to_close().await;
    assert_eq!(end, RawEnd::Close(Some(1009)));
    // The other client goes on.
    broadcast(&engine, "after", Audience::ALL).await;
    let mut after = listener.read_frame().await.expect("a frame");
    while after.opcode != 0x1 || after.payload != b"after" {
        after = listener.read_frame().await.expect("a frame");
    }
    until(
        || {
            let d = engine.stats().total.deflate;
            d.inflated == 2 && d.too_big == 1
        },
        || format!("{:?}", engine.stats().total.deflate),
    )
    .await;
    // Two whole messages (the bomb was refused), and every byte the sender wrote was read.
    let total = engine.stats().total;
    assert_eq!(total.messages_received, 2);
    assert!(total.bytes_received as usize > 2 * body.len() + bomb.len());
    engine.shutdown(WAIT).await;
}

#[tokio::test]
async fn misplaced_or_unnegotiated_rsv1_is_1002_and_a_corrupt_stream_1007() {
    let (engine, addr) = start(builder().shards(1).handler(Relay)).await;
    let body = Deflater::new(6, 15).compress(json(500).as_bytes()).to_vec();
    let cases: [(&str, Vec<u8>, u16); 4] = [
        // RSV1 from a client that did not negotiate the extension.
        ("", masked(0x80 | frame::RSV1 | 0x1, &body), 1002),
        // RSV1 on a continuation.
        (
            CHROME,
            [masked(0x1, b"{"), masked(0x80 | frame::RSV1, b"}")].concat(),
            1002,
        ),
        // RSV1 on a control frame.
        (CHROME, masked(0x80 | frame::RSV1 | 0x9, b"ping"), 1002),
        // Not a deflate stream (block type 3 is reserved).
        (
            CHROME,
            masked(0x80 | frame::RSV1 | 0x1, &[0xff, 0xff, 0xff]),
            1007,
        ),
    ];
    for (offer, bytes, code) in cases {
        let (mut client, _) = offering(addr, offer).await;
        client.send(&bytes).await.unwrap();
        let (_, end) = client.read_to_close().await;
        assert_eq!(end, RawEnd::Close(Some(code)), "{offer:?} {bytes:02x?}");
    }
    until(
        || engine.stats().total.deflate.corrupt == 1,
        || format!("{:?}", engine.stats().total.deflate),
    )
    .await;
    engine.shutdown(WAIT).await;
}

/// Declines compression for the path `/plain`.
struct PlainPath;

impl Handler for PlainPath {
    fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
        match request.path() {
            "/plain" => Decision::accept().without_compression(),
            _ => Decision::accept(),
        }
    }
}

#[tokio::test]
async fn compression_is_declined_by_the_engine_or_for_one_connection() {
    let (engine, addr) = start(builder().shards(1).compression(Compression::OFF)).await;
    let (mut client, head) = offering(addr, CHROME).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    eventually(|| engine.client_count() == 1).await;
    let doc = json(2000);
    broadcast(&engine, &doc, Audience::ALL).await;
    let got = client.read_frame().await.expect("a frame");
    assert!(!got.rsv1);
    assert_eq!(got.payload, doc.as_bytes());
    assert_eq!(engine.stats().compressions, 0);
    engine.shutdown(WAIT).await;

    let (engine, addr) = start(builder().shards(1).handler(PlainPath)).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut plain = RawClient::new(stream);
    let request = UPGRADE_REQUEST
        .replacen("GET / ", "GET /plain ", 1)
        .replacen("\r\n\r\n", &format!("\r\n{CHROME}\r\n"), 1);
    plain.send(request.as_bytes()).await.unwrap();
    let head = plain.read_http_head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    let (_, head) = offering(addr, CHROME).await;
    assert!(
        head.contains(ANSWER),
        "other paths still negotiate it: {head}"
    );
    engine.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_payload_compressed_ahead_is_not_compressed_again() {
    let (engine, addr) = start(builder().shards(2)).await;
    let (mut client, _) = offering(addr, CHROME).await;
    eventually(|| engine.client_count() == 1).await;
    let mut payload = Payload::text(json(4000));
    assert_eq!(payload.compress(&[15], &Compression::default()), 1);
    let compressed = payload.deflated(15).expect("smaller").clone();
    for _ in 0..3 {
        engine
            .broadcast(payload.clone(), Audience::ALL)
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let got = client.read_frame().await.expect("a frame");
        assert!(got.rsv1);
        assert_eq!(
            got.payload,
            compressed[frame::header_len(got.payload.len())..]
        );
    }
    assert_eq!(engine.stats().compressions, 0);
    assert_eq!(payload.opcode(), Opcode::Text);
    engine.shutdown(WAIT).await;
}

#[tokio::test]
async fn batches_envelopes_and_topics_go_out_compressed_in_order() {
    let (engine, addr) = start(builder().shards(2)).await;
    let (mut client, _) = offering(addr, CHROME).await;
    eventually(|| engine.client_count() == 1).await;
    let docs: Vec<String> = (0..3).map(|i| json(1000 + i * 500)).collect();
    engine
        .broadcast_batch(docs.iter().map(Payload::text), Audience::ALL)
        .await
        .unwrap();
    for doc in &docs {
        let got = client.read_frame().await.expect("a frame");
        assert!(got.rsv1, "{got:?}");
        assert_eq!(inflate(&got.payload, 15).unwrap(), doc.as_bytes());
    }
    engine.shutdown(WAIT).await;

    // A topic, and a client subscribed at its upgrade.
    struct News;
    impl Handler for News {
        fn on_upgrade(&self, _: &Request<'_>, _: Option<SocketAddr>) -> Decision {
            Decision::accept().subscribe("news")
        }
    }
    let (engine, addr) = start(builder().shards(2).handler(News)).await;
    let (mut subscriber, _) = offering(addr, CHROME).await;
    eventually(|| engine.client_count() == 1).await;
    engine
        .broadcast(Payload::text(&docs[0]), Audience::topic("news"))
        .await
        .unwrap();
    let got = subscriber.read_frame().await.expect("a frame");
    assert!(got.rsv1);
    assert_eq!(inflate(&got.payload, 15).unwrap(), docs[0].as_bytes());
    engine.shutdown(WAIT).await;

    // Batch envelopes: built once per shard tick, compressed there once.
    let (engine, addr) = start(builder().shards(1).batch_envelope(true)).await;
    let (mut client, _) = offering(addr, CHROME).await;
    eventually(|| engine.client_count() == 1).await;
    for doc in &docs {
        engine
            .try_broadcast(Payload::text(doc), Audience::ALL)
            .unwrap();
    }
    let mut bodies = Vec::new();
    let mut compressed_envelopes = 0;
    while bodies.len() < docs.len() {
        let got = client.read_frame().await.expect("a frame");
        compressed_envelopes += usize::from(got.rsv1 && got.opcode == 0x2);
        let body = if got.rsv1 {
            inflate(&got.payload, 15).unwrap()
        } else {
            got.payload
        };
        if got.opcode == 0x2 {
            // An envelope: u32le count | (u32le len | bytes)*.
            let mut rest = &body[4..];
            while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                let len = u32::from_le_bytes(*len) as usize;
                bodies.push(tail[..len].to_vec());
                rest = &tail[len..];
            }
        } else {
            bodies.push(body);
        }
    }
    let sent: Vec<Vec<u8>> = docs.iter().map(|d| d.clone().into_bytes()).collect();
    assert_eq!(bodies, sent);
    // The three fit one tick as a rule, but a tick may take fewer: then some go alone.
    if compressed_envelopes == 0 {
        assert_eq!(
            engine.stats().total.deflate.deliveries,
            3,
            "each alone, compressed"
        );
    }
    engine.shutdown(WAIT).await;
}
