//! Protocol violations: each closes the offending client with its RFC 6455 code (1002, 1007,
//! 1009) and is counted, while clients receiving broadcasts at the same time notice nothing.
//! Frames are written by hand over a bare TCP stream.

mod common;

use common::*;
use shardcast::RemoveReason;
use std::time::Duration;

/// Largest inbound message and frame in these tests.
const MAX_MESSAGE: usize = 1000;

/// Sends `chunks` (each in its own write) from a raw client while healthy clients receive a
/// stream of broadcasts; checks that the raw client alone is closed with `code`.
async fn violation_closes_only_its_client(chunks: &[Vec<u8>], code: u16) {
    let builder = builder().shards(2).max_message_size(MAX_MESSAGE);
    let (engine, addr, events) = start_recording(builder).await;
    // Each healthy registration recorded before the raw client connects, so that the fourth
    // recorded is the raw client (see `connect`).
    let (healthy, _) = connect_many_with_ids(&engine, addr, &events, 3).await;
    let mut raw = RawClient::connect(addr).await;
    let raw_id = registered(&events, 4).await;

    let watch = Watch::start(&engine, healthy).await;
    for chunk in chunks {
        // The engine may close before the last chunk is written; what it says is what counts.
        let _ = raw.send(chunk).await;
    }
    let (_, end) = raw.read_to_close().await;
    raw.hang_up().await;
    assert_eq!(end, RawEnd::Close(Some(code)));
    // Every healthy client received every broadcast: it noticed nothing.
    let clients = watch.finish().await;
    assert_eq!(engine.stats().total.evicted.protocol, 1);
    assert_eq!(engine.client_count(), 3);
    eventually(|| !events.removals_of(raw_id).is_empty()).await;
    assert_eq!(events.removals_of(raw_id), [RemoveReason::Protocol(code)]);
    let codes = shutdown_reading(&engine, clients).await;
    assert_eq!(codes, [Some(1001); 3]);
}

/// A masked close frame with `code` and no reason.
fn close_with(code: u16) -> Vec<u8> {
    masked(0x88, &code.to_be_bytes())
}

#[tokio::test]
async fn an_unmasked_frame_closes_with_1002() {
    violation_closes_only_its_client(&[unmasked(0x81, b"hello")], 1002).await;
}

#[tokio::test]
async fn a_reserved_bit_closes_with_1002() {
    violation_closes_only_its_client(&[masked(0x80 | 0x40 | 0x1, b"hello")], 1002).await;
}

#[tokio::test]
async fn an_unknown_opcode_closes_with_1002() {
    violation_closes_only_its_client(&[masked(0x83, b"")], 1002).await;
}

#[tokio::test]
async fn a_fragmented_control_frame_closes_with_1002() {
    violation_closes_only_its_client(&[masked(0x09, b"ping")], 1002).await;
}

#[tokio::test]
async fn a_control_frame_over_125_bytes_closes_with_1002() {
    violation_closes_only_its_client(&[masked(0x89, &[b'p'; 126])], 1002).await;
}

#[tokio::test]
async fn a_continuation_without_a_start_closes_with_1002() {
    violation_closes_only_its_client(&[masked(0x80, b"orphan")], 1002).await;
}

#[tokio::test]
async fn a_close_code_below_1000_closes_with_1002() {
    violation_closes_only_its_client(&[close_with(999)], 1002).await;
}

#[tokio::test]
async fn the_reserved_close_code_1005_closes_with_1002() {
    violation_closes_only_its_client(&[close_with(1005)], 1002).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_closes_with_1007() {
    violation_closes_only_its_client(&[masked(0x81, b"ok \xc3\x28 not ok")], 1007).await;
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_with_1007_before_the_final_fragment() {
    // The first fragment ends inside a valid 4-byte sequence; the second breaks it. The final
    // fragment is never sent: the close must come as soon as the bad byte arrives.
    let first = masked(0x01, b"ab\xf0\x9f");
    let second = masked(0x00, b"\x28cd");
    violation_closes_only_its_client(&[first, second], 1007).await;
}

#[tokio::test]
async fn a_frame_over_the_message_size_limit_closes_with_1009() {
    violation_closes_only_its_client(&[masked(0x82, &[7; 2 * MAX_MESSAGE])], 1009).await;
}

#[tokio::test]
async fn a_message_over_the_limit_across_fragments_closes_with_1009() {
    let part = [b'f'; 400];
    let fragments = [
        masked(0x01, &part),
        masked(0x00, &part),
        masked(0x80, &part),
    ];
    violation_closes_only_its_client(&fragments, 1009).await;
}

/// A whole pong frame carrying `payload`, as the server sends it.
fn pong(payload: &[u8]) -> RawFrame {
    RawFrame {
        fin: true,
        opcode: 0xa,
        rsv1: false,
        payload: payload.to_vec(),
    }
}

#[tokio::test]
async fn a_ping_gets_a_pong_with_the_same_payload() {
    let (engine, addr, events) = start_recording(builder().shards(2)).await;
    let mut raw = RawClient::connect(addr).await;
    let id = registered(&events, 1).await;
    for payload in [&b"are you there?"[..], b"", &[0xab; 125]] {
        raw.send(&masked(0x89, payload)).await.unwrap();
        assert_eq!(raw.read_frame().await.expect("a pong"), pong(payload));
    }
    // A ping between the fragments of a message is answered, and the message still arrives.
    raw.send(&masked(0x01, b"frag")).await.unwrap();
    raw.send(&masked(0x89, b"mid")).await.unwrap();
    assert_eq!(raw.read_frame().await.expect("a pong"), pong(b"mid"));
    raw.send(&masked(0x80, b"ment")).await.unwrap();
    eventually(|| !events.messages().is_empty()).await;
    assert_eq!(events.messages(), [(id, "fragment".to_owned())]);
    assert_eq!(engine.stats().total.evicted.protocol, 0);
    assert!(engine.client(id).await.is_some());
    raw.hang_up().await;
    drop(raw);
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_client_close_1000_is_echoed_with_1000() {
    let (engine, addr, events) = start_recording(builder().shards(2)).await;
    let mut raw = RawClient::connect(addr).await;
    let id = registered(&events, 1).await;
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    raw.send(&masked(0x88, &body)).await.unwrap();
    assert_eq!(
        raw.read_to_close().await,
        (vec![], RawEnd::Close(Some(1000)))
    );
    // Having closed, the server ends the stream.
    assert_eq!(raw.read_frame().await, None);
    raw.hang_up().await;
    eventually(|| !events.removals_of(id).is_empty()).await;
    assert_eq!(
        events.removals_of(id),
        [RemoveReason::ClientClosed(Some(1000))]
    );
    assert_eq!(engine.stats().total.evicted.protocol, 0);
    assert_eq!(engine.client_count(), 0);
    engine.shutdown(Duration::from_secs(2)).await;
}
