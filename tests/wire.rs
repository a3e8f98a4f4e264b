//! Behaviour tests for `shardcast::wire`: frame encoder, parser, envelope and handshake,
//! checked against hand-built frames and against tungstenite as an oracle.

use std::io::{self, Cursor, Read, Write};
use std::ops::ControlFlow;

use bytes::BytesMut;
use proptest::prelude::*;
use shardcast::wire::envelope::{self, EnvelopeError};
use shardcast::wire::frame::{self, HEADER_LEN_MAX};
use shardcast::wire::handshake::{self, HandshakeError};
use shardcast::wire::{Inbound, Limits, Opcode, ParseError, Parser};
use tungstenite::WebSocket;
use tungstenite::protocol::Role;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

// The owned message that the fuzz targets' oracle compares too: one file for both.
#[path = "../src/fuzzing/oracle/msg.rs"]
mod msg;
use msg::Msg;

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A masked client frame, with the shortest length encoding.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    let first = if fin { 0x80 } else { 0 } | opcode;
    frame::put_raw(&mut out, first, payload, Some(mask));
    out
}

/// A final masked client frame.
fn masked(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_masked(&mut out, opcode, payload, MASK);
    out
}

/// The edges of the pieces that `cuts` (each at most `len`) make of `len` bytes: 0, the cuts
/// and `len`, in order, each once.
fn bounds(cuts: &[usize], len: usize) -> Vec<usize> {
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(len)).collect();
    bounds.extend([0, len]);
    bounds.sort_unstable();
    bounds.dedup();
    bounds
}

/// Feeds `bytes` to `parser` in pieces cut at `cuts`, collecting messages until an error.
fn feed_split(
    parser: &mut Parser,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<Msg>, Result<(), ParseError>) {
    feed_split_breaking(parser, bytes, cuts, 0)
}

/// Like [`feed_split`], stopping the parser with `Break` after every `break_every`th message
/// (never if 0), and feeding it the rest.
fn feed_split_breaking(
    parser: &mut Parser,
    bytes: &[u8],
    cuts: &[usize],
    break_every: usize,
) -> (Vec<Msg>, Result<(), ParseError>) {
    let mut data = bytes.to_vec();
    let mut got = Vec::new();
    for w in bounds(cuts, data.len()).windows(2) {
        let mut piece = &mut data[w[0]..w[1]];
        while !piece.is_empty() {
            match parser.feed(piece, |m| {
                got.push(Msg::from(m));
                if break_every > 0 && got.len() % break_every == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }) {
                Ok(n) => {
                    assert!(n > 0 && n <= piece.len(), "feed made no progress: {n}");
                    piece = &mut piece[n..];
                }
                Err(e) => return (got, Err(e)),
            }
        }
    }
    (got, Ok(()))
}

/// Feeds `bytes` in one piece to a parser with default limits.
fn feed_whole(bytes: &[u8]) -> (Vec<Msg>, Result<(), ParseError>) {
    feed_split(&mut Parser::new(Limits::default()), bytes, &[])
}

/// A stream for tungstenite that reads `input` and discards what is written (its pongs).
struct Duplex {
    input: Cursor<Vec<u8>>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every message tungstenite reads from `bytes` in `role`, until its first error.
fn tungstenite_reads(bytes: Vec<u8>, role: Role) -> Vec<Msg> {
    let stream = Duplex {
        input: Cursor::new(bytes),
    };
    let mut ws = WebSocket::from_raw_socket(stream, role, None);
    let mut got = Vec::new();
    while let Ok(m) = ws.read() {
        got.push(Msg::from(m));
    }
    got
}

// ---------------------------------------------------------------------------------------------
// frame
// ---------------------------------------------------------------------------------------------

#[test]
fn header_len_follows_the_three_length_encodings() {
    assert_eq!(frame::header_len(0), 2);
    assert_eq!(frame::header_len(125), 2);
    assert_eq!(frame::header_len(126), 4);
    assert_eq!(frame::header_len(65535), 4);
    assert_eq!(frame::header_len(65536), 10);
    assert_eq!(frame::header_len(usize::MAX), HEADER_LEN_MAX);
}

#[test]
fn encoded_headers_use_the_shortest_length_form() {
    let cases: [(usize, &[u8]); 5] = [
        (0, &[0x82, 0]),
        (125, &[0x82, 125]),
        (126, &[0x82, 126, 0, 126]),
        (65535, &[0x82, 126, 0xFF, 0xFF]),
        (65536, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ];
    for (len, header) in cases {
        let mut out = BytesMut::new();
        frame::put_header(&mut out, Opcode::Binary, len);
        assert_eq!(&out[..], header, "len {len}");
        assert_eq!(out.len(), frame::header_len(len));
        let whole = frame::encode(Opcode::Binary, &vec![7; len]);
        assert_eq!(&whole[..header.len()], header);
        assert_eq!(whole.len(), header.len() + len);
    }
}

#[test]
fn every_opcode_round_trips_through_its_wire_value() {
    for op in [
        Opcode::Continuation,
        Opcode::Text,
        Opcode::Binary,
        Opcode::Close,
        Opcode::Ping,
        Opcode::Pong,
    ] {
        assert_eq!(Opcode::from_u8(op as u8), Some(op));
        assert_eq!(
            op.is_control(),
            matches!(op, Opcode::Close | Opcode::Ping | Opcode::Pong)
        );
    }
    for reserved in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF, 0x10, 0x81] {
        assert_eq!(Opcode::from_u8(reserved), None);
    }
}

#[test]
fn close_reason_is_truncated_on_a_char_boundary_to_fit_125_bytes() {
    let reason = "é".repeat(100); // 200 bytes, 2 bytes per char
    let f = frame::encode_close(1001, &reason);
    assert_eq!(f[0], 0x88);
    let len = usize::from(f[1]);
    assert!(len <= 125);
    assert_eq!(f.len(), 2 + len);
    assert_eq!(&f[2..4], &1001u16.to_be_bytes());
    let kept = std::str::from_utf8(&f[4..]).expect("truncated on a char boundary");
    assert_eq!(kept, "é".repeat(61));
    assert_eq!(&frame::encode_close(1000, "")[..], &[0x88, 2, 0x03, 0xE8]);
}

#[test]
fn masked_frame_is_the_example_of_rfc_6455() {
    // RFC 6455 5.7: a single-frame masked text message "Hello", with the key of `MASK`.
    let mut out = Vec::new();
    frame::put_masked(&mut out, Opcode::Text, b"Hello", MASK);
    assert_eq!(
        out,
        [
            0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58
        ]
    );
}

#[test]
fn masked_headers_use_the_shortest_length_form() {
    let cases: [(usize, &[u8]); 5] = [
        (0, &[0x82, 0x80]),
        (125, &[0x82, 0x80 | 125]),
        (126, &[0x82, 0x80 | 126, 0, 126]),
        (65535, &[0x82, 0x80 | 126, 0xFF, 0xFF]),
        (65536, &[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ];
    for (len, header) in cases {
        let mut out = Vec::new();
        frame::put_masked(&mut out, Opcode::Binary, &vec![7; len], MASK);
        assert_eq!(&out[..header.len()], header, "len {len}");
        let (key, payload) = out[header.len()..].split_at(4);
        assert_eq!(key, MASK);
        assert_eq!(payload.len(), len);
        assert!(
            payload
                .iter()
                .enumerate()
                .all(|(i, &b)| b == 7 ^ MASK[i % 4]),
            "len {len}: payload not masked with the key"
        );
    }
}

#[test]
fn raw_frames_keep_the_first_byte_and_mask_they_are_given() {
    // Not final, RSV1-3 set, text: every bit of the first byte kept; no key, no masking.
    let mut out = Vec::new();
    frame::put_raw(&mut out, 0x71, &[5; 300], None);
    assert_eq!(out[..4], [0x71, 126, 0x01, 0x2C]);
    assert_eq!(out[4..], [5; 300]);
    // Unmasked with FIN and an opcode: exactly the server frame.
    out.clear();
    frame::put_raw(&mut out, 0x81, b"hi", None);
    assert_eq!(out, frame::encode(Opcode::Text, b"hi"));
    // Masked with FIN and an opcode: exactly the client frame.
    out.clear();
    frame::put_raw(&mut out, 0x8A, b"pong", Some(MASK));
    let mut pong = Vec::new();
    frame::put_masked(&mut pong, Opcode::Pong, b"pong", MASK);
    assert_eq!(out, pong);
}

#[test]
fn client_frames_append_to_a_vec_without_reallocating_one_with_room() {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"kept");
    let buffer = out.as_ptr();
    frame::put_masked(&mut out, Opcode::Text, b"one", MASK);
    frame::put_raw(&mut out, 0x89, b"two", None);
    assert_eq!(out.as_ptr(), buffer, "reallocated a Vec with room");
    let mut want = b"kept".to_vec();
    want.extend(masked(Opcode::Text, b"one"));
    want.extend([0x89, 3]);
    want.extend(b"two");
    assert_eq!(out, want);
}

/// A message to encode: its opcode and payload, and the message a reader should read from
/// the frame.
fn message_to_encode() -> impl Strategy<Value = (Opcode, Vec<u8>, Msg)> {
    let binary_len = prop_oneof![0usize..300, 65530usize..65540, 65536usize..70_000];
    prop_oneof![
        any::<String>().prop_map(|s| (Opcode::Text, s.clone().into_bytes(), Msg::Text(s))),
        (binary_len, any::<u8>()).prop_map(|(len, seed)| {
            let b: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect();
            (Opcode::Binary, b.clone(), Msg::Binary(b))
        }),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(|b| (
            Opcode::Ping,
            b.clone(),
            Msg::Ping(b)
        )),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(|b| (
            Opcode::Pong,
            b.clone(),
            Msg::Pong(b)
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tungstenite_reads_our_frames_as_the_same_message((opcode, payload, want) in message_to_encode()) {
        let bytes = frame::encode(opcode, &payload).to_vec();
        prop_assert_eq!(tungstenite_reads(bytes, Role::Client), vec![want]);
    }

    #[test]
    fn our_parser_and_tungstenite_read_masked_frames_as_the_same_message(
        (opcode, payload, want) in message_to_encode(),
        mask in any::<[u8; 4]>(),
    ) {
        let mut bytes = Vec::new();
        frame::put_masked(&mut bytes, opcode, &payload, mask);
        let limits = Limits { frame_bytes_max: 1 << 20, message_bytes_max: 1 << 20 };
        let (got, end) = feed_split(&mut Parser::new(limits), &bytes, &[]);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(got, vec![want.clone()]);
        prop_assert_eq!(tungstenite_reads(bytes, Role::Server), vec![want]);
    }

    #[test]
    fn our_parser_reads_masked_close_frames_with_their_code_and_reason(
        code in prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999],
        reason in ".{0,30}",
        mask in any::<[u8; 4]>(),
    ) {
        // At most 2 + 30 * 4 bytes: within a control frame.
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        let mut bytes = Vec::new();
        frame::put_masked(&mut bytes, Opcode::Close, &payload, mask);
        let (got, end) = feed_whole(&bytes);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(got, vec![Msg::Close(Some(code), reason)]);
    }

    #[test]
    fn tungstenite_reads_our_close_frames_with_their_code_and_reason(
        // 1014 (IANA: Bad Gateway) is valid for us but tungstenite 0.30 treats it as a protocol
        // error, so the oracle can only speak for the codes below it.
        code in prop_oneof![1000u16..=1003, 1007u16..=1013, 3000u16..=4999],
        reason in ".{0,80}",
    ) {
        let bytes = frame::encode_close(code, &reason).to_vec();
        let got = tungstenite_reads(bytes, Role::Client);
        prop_assert_eq!(got.len(), 1);
        let Msg::Close(Some(got_code), got_reason) = &got[0] else {
            panic!("not a close with a code: {got:?}");
        };
        prop_assert_eq!(*got_code, code);
        prop_assert!(reason.starts_with(got_reason.as_str()));
        prop_assert!(got_reason.len() <= 123);
        prop_assert!(got_reason.len() == reason.len() || reason.len() > 123);
    }
}

// ---------------------------------------------------------------------------------------------
// parser: delivery
// ---------------------------------------------------------------------------------------------

#[test]
fn whole_text_frame_is_delivered_as_a_slice_of_the_input() {
    let mut bytes = masked(Opcode::Text, b"hello, shard");
    let range = bytes.as_ptr_range();
    let mut parser = Parser::new(Limits::default());
    let mut seen = 0;
    let n = parser.feed(&mut bytes, |m| {
        let Inbound::Text(t) = m else {
            panic!("not text: {m:?}")
        };
        assert_eq!(t, "hello, shard");
        assert!(range.contains(&t.as_ptr()), "the text was copied");
        seen += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(n, Ok(bytes.len()));
    assert_eq!(seen, 1);
    assert_eq!(parser.buffered_bytes(), 0);
    assert_eq!(parser.buffered_capacity(), 0, "a whole frame allocated");
}

#[test]
fn binary_ping_pong_and_text_frames_in_one_input_are_delivered_in_order() {
    let mut bytes = masked(Opcode::Binary, &[0, 1, 2, 255]);
    bytes.extend(masked(Opcode::Ping, b"p"));
    bytes.extend(masked(Opcode::Pong, b""));
    bytes.extend(masked(Opcode::Text, "ünïcødé".as_bytes()));
    let (got, end) = feed_whole(&bytes);
    assert_eq!(end, Ok(()));
    assert_eq!(
        got,
        [
            Msg::Binary(vec![0, 1, 2, 255]),
            Msg::Ping(b"p".to_vec()),
            Msg::Pong(vec![]),
            Msg::Text("ünïcødé".into()),
        ]
    );
}

#[test]
fn fragmented_text_with_an_interleaved_ping_is_reassembled() {
    let mut bytes = client_frame(false, 0x1, b"hel", MASK);
    bytes.extend(masked(Opcode::Ping, b"are you there"));
    bytes.extend(client_frame(false, 0x0, b"lo ", [9, 8, 7, 6]));
    bytes.extend(client_frame(false, 0x0, b"", [1, 1, 1, 1]));
    bytes.extend(client_frame(true, 0x0, b"world", [0, 0, 0, 0]));
    let want = [
        Msg::Ping(b"are you there".to_vec()),
        Msg::Text("hello world".into()),
    ];
    for cut in 0..=bytes.len() {
        let (got, end) = feed_split(&mut Parser::new(Limits::default()), &bytes, &[cut]);
        assert_eq!(end, Ok(()), "cut at {cut}");
        assert_eq!(got, want, "cut at {cut}");
    }
}

#[test]
fn text_split_at_every_byte_yields_the_same_message() {
    let text = "a €, a 𝄞 and some padding to pass 126 bytes: ".repeat(4);
    let bytes = masked(Opcode::Text, text.as_bytes());
    assert!(text.len() > 125);
    let every: Vec<usize> = (0..bytes.len()).collect();
    let mut parser = Parser::new(Limits::default());
    let (got, end) = feed_split(&mut parser, &bytes, &every);
    assert_eq!(end, Ok(()));
    assert_eq!(got, [Msg::Text(text.clone())]);
    assert_eq!(parser.buffered_bytes(), 0);
    for cut in 0..=bytes.len() {
        let (got, end) = feed_split(&mut Parser::new(Limits::default()), &bytes, &[cut]);
        assert_eq!((got, end), (vec![Msg::Text(text.clone())], Ok(())));
    }
}

#[test]
fn utf8_sequence_split_across_fragments_is_accepted() {
    let euro = "€".as_bytes(); // E2 82 AC
    let mut bytes = client_frame(false, 0x1, &euro[..1], MASK);
    bytes.extend(client_frame(false, 0x0, &euro[1..2], MASK));
    bytes.extend(client_frame(true, 0x0, &euro[2..], MASK));
    assert_eq!(feed_whole(&bytes), (vec![Msg::Text("€".into())], Ok(())));
}

#[test]
fn non_minimal_length_encodings_are_accepted() {
    let payload = b"short";
    let mut two = vec![0x82, 0x80 | 126, 0, payload.len() as u8];
    two.extend(MASK);
    two.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    let mut eight = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, payload.len() as u8];
    eight.extend(MASK);
    eight.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    for bytes in [two, eight] {
        assert_eq!(
            feed_whole(&bytes),
            (vec![Msg::Binary(payload.to_vec())], Ok(()))
        );
    }
}

#[test]
fn close_frames_carry_their_code_and_reason() {
    assert_eq!(
        feed_whole(&masked(Opcode::Close, b"")),
        (vec![Msg::Close(None, String::new())], Ok(()))
    );
    let mut payload = 1001u16.to_be_bytes().to_vec();
    payload.extend("going away".as_bytes());
    assert_eq!(
        feed_whole(&masked(Opcode::Close, &payload)),
        (vec![Msg::Close(Some(1001), "going away".into())], Ok(()))
    );
}

#[test]
fn valid_close_codes_are_accepted() {
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999,
    ] {
        let (got, end) = feed_whole(&masked(Opcode::Close, &u16::to_be_bytes(code)));
        assert_eq!(end, Ok(()), "code {code}");
        assert_eq!(got, [Msg::Close(Some(code), String::new())]);
    }
}

#[test]
fn close_frame_stops_the_feed_and_later_input_is_discarded() {
    let mut bytes = masked(Opcode::Text, b"before");
    let close_end = bytes.len() + masked(Opcode::Close, b"\x03\xE8").len();
    bytes.extend(masked(Opcode::Close, b"\x03\xE8"));
    bytes.extend(masked(Opcode::Text, b"after"));
    let mut parser = Parser::new(Limits::default());
    let mut got = Vec::new();
    let mut on = |m: Inbound<'_>| {
        got.push(Msg::from(m));
        ControlFlow::Continue(())
    };
    assert_eq!(parser.feed(&mut bytes, &mut on), Ok(close_end));
    let mut rest = bytes[close_end..].to_vec();
    assert_eq!(parser.feed(&mut rest, &mut on), Ok(rest.len()));
    let mut garbage = [0u8; 7];
    assert_eq!(parser.feed(&mut garbage, &mut on), Ok(7));
    assert_eq!(
        got,
        [
            Msg::Text("before".into()),
            Msg::Close(Some(1000), String::new())
        ]
    );
    assert_eq!(parser.buffered_bytes(), 0);
}

#[test]
fn break_stops_right_after_the_frame_and_returns_the_bytes_consumed() {
    let first = masked(Opcode::Binary, b"one");
    let second = masked(Opcode::Ping, b"two");
    let third = masked(Opcode::Text, b"three");
    let mut bytes = [first.clone(), second.clone(), third.clone()].concat();
    let original = bytes.clone();
    let mut parser = Parser::new(Limits::default());
    let mut got = Vec::new();
    let n = parser.feed(&mut bytes, |m| {
        got.push(Msg::from(m));
        ControlFlow::Break(())
    });
    assert_eq!(n, Ok(first.len()));
    assert_eq!(got, [Msg::Binary(b"one".to_vec())]);
    assert_eq!(
        &bytes[first.len()..],
        &original[first.len()..],
        "rest was touched"
    );
    let rest = &mut bytes[first.len()..];
    let n = parser.feed(rest, |m| {
        got.push(Msg::from(m));
        ControlFlow::Break(())
    });
    assert_eq!(n, Ok(second.len()));
    let rest = &mut rest[second.len()..];
    let n = parser.feed(rest, |m| {
        got.push(Msg::from(m));
        ControlFlow::Continue(())
    });
    assert_eq!(n, Ok(third.len()));
    assert_eq!(
        got,
        [
            Msg::Binary(b"one".to_vec()),
            Msg::Ping(b"two".to_vec()),
            Msg::Text("three".into()),
        ]
    );
}

#[test]
fn break_on_a_frame_completed_from_an_earlier_call_returns_where_it_ends() {
    let first = masked(Opcode::Binary, b"a cut frame");
    let mut bytes = [first.clone(), masked(Opcode::Binary, b"next")].concat();
    let cut = 9;
    let mut parser = Parser::new(Limits::default());
    let (head, tail) = bytes.split_at_mut(cut);
    let n = parser.feed(head, |_| panic!("nothing is complete yet"));
    assert_eq!(n, Ok(cut));
    assert!(parser.buffered_bytes() > 0);
    let mut got = Vec::new();
    let n = parser.feed(tail, |m| {
        got.push(Msg::from(m));
        ControlFlow::Break(())
    });
    assert_eq!(n, Ok(first.len() - cut));
    assert_eq!(got, [Msg::Binary(b"a cut frame".to_vec())]);
    assert_eq!(parser.buffered_bytes(), 0);
}

#[test]
fn buffered_bytes_count_what_is_held_and_shrink_frees_it_when_idle() {
    let payload = vec![5u8; 1000];
    let mut bytes = masked(Opcode::Binary, &payload);
    let mut parser = Parser::new(Limits::default());
    let (a, rest) = bytes.split_at_mut(3);
    let (b, c) = rest.split_at_mut(500);
    parser.feed(a, |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(parser.buffered_bytes(), 3, "partial header");
    assert_eq!(parser.buffered_capacity(), 0, "a partial header allocated");
    parser.feed(b, |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(parser.buffered_bytes(), 503 - 8, "partial payload");
    let held = parser.buffered_capacity();
    assert!(held >= 495, "the received part is held");
    assert!(
        held < 1000,
        "the announced length was reserved before it arrived"
    );
    parser.shrink();
    assert!(
        parser.buffered_capacity() >= 495,
        "shrink freed a buffer in use"
    );
    let mut got = Vec::new();
    parser
        .feed(c, |m| {
            got.push(Msg::from(m));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(got, [Msg::Binary(payload)]);
    assert_eq!(parser.buffered_bytes(), 0);
    parser.shrink();
    assert_eq!(parser.buffered_capacity(), 0);
}

/// Room over a bound for what `Vec::reserve_exact` documents it may add (std's allocator
/// adds nothing today).
const ALLOCATOR_SLACK: usize = 16;

/// Feeds `bytes` in pieces cut at `cuts`; after every piece, checks that the parser's
/// capacity is within `bound`. Returns the messages.
fn feed_within(parser: &mut Parser, bytes: &[u8], cuts: &[usize], bound: usize) -> Vec<Msg> {
    let mut data = bytes.to_vec();
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    bounds.extend([0, data.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    let mut got = Vec::new();
    for w in bounds.windows(2) {
        let piece = &mut data[w[0]..w[1]];
        let n = parser.feed(piece, |m| {
            got.push(Msg::from(m));
            ControlFlow::Continue(())
        });
        assert_eq!(n, Ok(w[1] - w[0]));
        assert!(
            parser.buffered_capacity() <= bound + ALLOCATOR_SLACK,
            "capacity {} over {bound} after {} bytes",
            parser.buffered_capacity(),
            w[1],
        );
    }
    got
}

#[test]
fn a_cut_frame_never_grows_the_buffer_past_its_announced_length() {
    const LEN: usize = 65_000;
    let payload: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let bytes = masked(Opcode::Binary, &payload);
    let header = bytes.len() - LEN;
    // Cuts in payload offsets.
    let patterns: [(&str, Vec<usize>); 5] = [
        ("the last byte alone", vec![LEN - 1]),
        // Doubling from 1000 passes 65,000 at 128,000.
        ("reads of 1000", (1000..LEN).step_by(1000).collect()),
        ("reads of 4 KiB", (4096..LEN).step_by(4096).collect()),
        ("one byte, then the rest", vec![1]),
        ("halves", vec![LEN / 2]),
    ];
    for (name, cuts) in patterns {
        let cuts: Vec<usize> = cuts.iter().map(|c| header + c).collect();
        let mut parser = Parser::new(Limits::default());
        let got = feed_within(&mut parser, &bytes, &cuts, LEN);
        assert_eq!(got, [Msg::Binary(payload.clone())], "{name}");
    }
}

#[test]
fn the_final_fragment_never_grows_the_buffer_past_the_end_of_the_message() {
    // 40,000 bytes open, then a final fragment of 25,000 cut every 1000 bytes: doubling from
    // 40,000 would reach 80,000.
    let payload: Vec<u8> = (0..65_000u32).map(|i| (i % 253) as u8).collect();
    let mut bytes = client_frame(false, 0x2, &payload[..40_000], MASK);
    let open = bytes.len();
    bytes.extend(client_frame(true, 0x0, &payload[40_000..], [9, 8, 7, 6]));
    let cuts: Vec<usize> = (open + 1000..bytes.len()).step_by(1000).collect();
    let mut parser = Parser::new(Limits::default());
    let got = feed_within(&mut parser, &bytes, &cuts, payload.len());
    assert_eq!(got, [Msg::Binary(payload)]);
}

#[test]
fn many_small_fragments_grow_the_buffer_by_doubling_not_fragment_by_fragment() {
    // Growth capped at each frame's end would reallocate, copying the whole message, once per
    // fragment: quadratic work for a linear input. Pings between the fragments, whose payload
    // goes through the buffer when a read cuts them, must not bring that back either.
    const FRAGMENTS: usize = 20_000;
    let limits = Limits::default();
    let mut bytes = client_frame(false, 0x2, b"a", MASK);
    for _ in 0..FRAGMENTS {
        bytes.extend(client_frame(false, 0x0, b"b", MASK));
        bytes.extend(client_frame(true, 0x9, &[7; 125], MASK));
    }
    bytes.extend(client_frame(true, 0x0, b"c", MASK));
    // Reads of 7 bytes cut every ping and most fragments.
    let cuts: Vec<usize> = (7..bytes.len()).step_by(7).collect();
    let mut parser = Parser::new(limits);
    let mut capacities = vec![0];
    let mut messages = 0;
    let mut data = bytes;
    let mut start = 0;
    for end in cuts.into_iter().chain([data.len()]) {
        let n = parser.feed(&mut data[start..end], |_| {
            messages += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(n, Ok(end - start));
        start = end;
        if capacities.last() != Some(&parser.buffered_capacity()) {
            capacities.push(parser.buffered_capacity());
        }
    }
    assert_eq!(messages, FRAGMENTS + 1);
    assert!(
        capacities.len() <= 24,
        "{} capacities: {:?}",
        capacities.len(),
        &capacities[..capacities.len().min(40)]
    );
    let largest = capacities.iter().copied().max().unwrap_or(0);
    assert!(largest <= limits.message_bytes_max + 125 + ALLOCATOR_SLACK);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_cut_message_holds_at_most_its_length_and_twice_what_arrived(
        len in 1usize..70_000,
        text in any::<bool>(),
        feed_cuts in prop::collection::vec(any::<u16>(), 1..12),
    ) {
        let payload = vec![b'x'; len];
        let opcode = if text { Opcode::Text } else { Opcode::Binary };
        let mut bytes = masked(opcode, &payload);
        let header = bytes.len() - len;
        let limits = Limits { frame_bytes_max: 70_000, message_bytes_max: 70_000 };
        let mut parser = Parser::new(limits);
        let mut got = 0;
        for w in bounds(&cut_points(&feed_cuts, bytes.len()), bytes.len()).windows(2) {
            let n = parser.feed(&mut bytes[w[0]..w[1]], |_| {
                got += 1;
                ControlFlow::Continue(())
            });
            prop_assert_eq!(n, Ok(w[1] - w[0]));
            let capacity = parser.buffered_capacity();
            prop_assert!(capacity <= len + ALLOCATOR_SLACK, "capacity {} for {}", capacity, len);
            if w[1] <= header {
                prop_assert_eq!(capacity, 0, "allocated before any payload arrived");
            } else if got == 0 {
                // Held: the payload received so far; never reserved ahead of it.
                let held = w[1] - header;
                prop_assert!(
                    capacity <= 2 * held + ALLOCATOR_SLACK,
                    "capacity {} holding {}",
                    capacity,
                    held
                );
            }
        }
        prop_assert_eq!(got, 1);
    }
}

#[test]
fn parser_fits_in_64_bytes() {
    assert!(size_of::<Parser>() <= 64, "{} bytes", size_of::<Parser>());
}

// ---------------------------------------------------------------------------------------------
// parser: errors
// ---------------------------------------------------------------------------------------------

/// The error from feeding `bytes` whole and split at every byte (they must agree).
fn error_of(bytes: &[u8]) -> ParseError {
    let (_, whole) = feed_whole(bytes);
    let every: Vec<usize> = (0..bytes.len()).collect();
    let (_, split) = feed_split(&mut Parser::new(Limits::default()), bytes, &every);
    assert_eq!(whole, split, "splitting changed the outcome");
    whole.expect_err("bytes were accepted")
}

fn protocol(e: ParseError) -> bool {
    matches!(e, ParseError::Protocol(_))
}

#[test]
fn errors_map_to_their_rfc_6455_close_codes() {
    assert_eq!(ParseError::Protocol("x").close_code(), 1002);
    assert_eq!(ParseError::InvalidUtf8.close_code(), 1007);
    assert_eq!(ParseError::TooBig.close_code(), 1009);
}

#[test]
fn unmasked_frame_is_a_protocol_error() {
    assert!(protocol(error_of(&[0x81, 0x02, b'h', b'i'])));
}

#[test]
fn reserved_bits_are_a_protocol_error() {
    for rsv in [0x40, 0x20, 0x10] {
        let mut bytes = masked(Opcode::Text, b"x");
        bytes[0] |= rsv;
        assert!(protocol(error_of(&bytes)));
    }
}

#[test]
fn unknown_opcodes_are_a_protocol_error() {
    for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert!(
            protocol(error_of(&client_frame(true, op, b"", MASK))),
            "{op}"
        );
    }
}

#[test]
fn fragmented_control_frame_is_a_protocol_error() {
    assert!(protocol(error_of(&client_frame(false, 0x9, b"p", MASK))));
}

#[test]
fn control_frame_over_125_bytes_is_a_protocol_error() {
    assert!(protocol(error_of(&masked(Opcode::Ping, &[0; 126]))));
    assert_eq!(
        feed_whole(&masked(Opcode::Ping, &[0; 125])),
        (vec![Msg::Ping(vec![0; 125])], Ok(()))
    );
}

#[test]
fn continuation_without_a_started_message_is_a_protocol_error() {
    assert!(protocol(error_of(&client_frame(true, 0x0, b"x", MASK))));
}

#[test]
fn new_data_frame_inside_a_fragmented_message_is_a_protocol_error() {
    let mut bytes = client_frame(false, 0x2, b"x", MASK);
    bytes.extend(masked(Opcode::Text, b"y"));
    assert!(protocol(error_of(&bytes)));
}

#[test]
fn one_byte_close_payload_is_a_protocol_error() {
    assert!(protocol(error_of(&masked(Opcode::Close, &[3]))));
}

#[test]
fn invalid_close_codes_are_a_protocol_error() {
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        assert!(
            protocol(error_of(&masked(Opcode::Close, &u16::to_be_bytes(code)))),
            "code {code}"
        );
    }
}

#[test]
fn close_reason_that_is_not_utf8_is_invalid_utf8() {
    assert_eq!(
        error_of(&masked(Opcode::Close, b"\x03\xE8ok\xFF")),
        ParseError::InvalidUtf8
    );
}

#[test]
fn length_with_the_top_bit_set_is_a_protocol_error() {
    let mut bytes = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
    bytes.extend(MASK);
    assert!(protocol(error_of(&bytes)));
}

#[test]
fn invalid_utf8_in_a_whole_text_frame_is_invalid_utf8() {
    assert_eq!(
        error_of(&masked(Opcode::Text, b"ok \xC3\x28")),
        ParseError::InvalidUtf8
    );
}

#[test]
fn invalid_utf8_mid_frame_fails_in_the_call_that_delivers_it() {
    let mut payload = vec![b'a'; 200];
    payload[1] = 0xFF;
    let mut bytes = masked(Opcode::Text, &payload);
    // Header (2 + 2 + 4) and the first two payload bytes: the invalid one has arrived.
    let (head, tail) = bytes.split_at_mut(8 + 2);
    let mut parser = Parser::new(Limits::default());
    assert_eq!(
        parser.feed(head, |_| panic!("nothing to deliver")),
        Err(ParseError::InvalidUtf8)
    );
    assert_eq!(
        parser.feed(tail, |_| panic!("poisoned")),
        Err(ParseError::InvalidUtf8)
    );
}

#[test]
fn invalid_utf8_in_a_later_piece_of_a_cut_frame_fails_in_that_call() {
    let mut payload = "ok €".repeat(20).into_bytes();
    payload[50] = 0xC0; // can never start a sequence
    let mut bytes = masked(Opcode::Text, &payload);
    let (first, rest) = bytes.split_at_mut(8 + 20);
    let (second, third) = rest.split_at_mut(40);
    let mut parser = Parser::new(Limits::default());
    assert_eq!(parser.feed(first, |_| panic!()), Ok(28));
    assert_eq!(
        parser.feed(second, |_| panic!()),
        Err(ParseError::InvalidUtf8)
    );
    assert_eq!(
        parser.feed(third, |_| panic!()),
        Err(ParseError::InvalidUtf8)
    );
}

#[test]
fn invalid_utf8_in_a_first_fragment_fails_before_the_message_ends() {
    let mut parser = Parser::new(Limits::default());
    let mut first = client_frame(false, 0x1, b"fine so far \xED\xA0\x80", MASK);
    assert_eq!(
        parser.feed(&mut first, |_| panic!("nothing to deliver")),
        Err(ParseError::InvalidUtf8)
    );
}

#[test]
fn invalid_utf8_in_a_middle_fragment_split_mid_frame_fails_fast() {
    let mut parser = Parser::new(Limits::default());
    let mut first = client_frame(false, 0x1, "κόσμε".as_bytes(), MASK);
    assert_eq!(parser.feed(&mut first, |_| panic!()), Ok(first.len()));
    // A continuation whose payload is 20 bytes, the 3rd impossible (F4 90).
    let mut payload = b"ab\xF4\x90".to_vec();
    payload.resize(20, b'z');
    let mut second = client_frame(false, 0x0, &payload, MASK);
    let (head, _) = second.split_at_mut(6 + 4);
    assert_eq!(
        parser.feed(head, |_| panic!()),
        Err(ParseError::InvalidUtf8)
    );
}

#[test]
fn text_ending_inside_a_sequence_is_invalid_utf8() {
    let mut bytes = client_frame(false, 0x1, b"ab\xE2\x82", MASK);
    bytes.extend(client_frame(true, 0x0, b"", MASK));
    assert_eq!(error_of(&bytes), ParseError::InvalidUtf8);
    assert_eq!(
        error_of(&masked(Opcode::Text, b"ab\xE2\x82")),
        ParseError::InvalidUtf8
    );
}

#[test]
fn frame_over_the_frame_limit_is_too_big_as_soon_as_its_header_arrives() {
    let limits = Limits {
        frame_bytes_max: 100,
        message_bytes_max: 1000,
    };
    let mut bytes = masked(Opcode::Binary, &[0; 101]);
    let mut parser = Parser::new(limits);
    let header = &mut bytes[..2 + 2 + 4];
    assert_eq!(parser.feed(header, |_| panic!()), Err(ParseError::TooBig));
    assert_eq!(parser.buffered_capacity(), 0);
    let mut ok = masked(Opcode::Binary, &[0; 100]);
    let (got, end) = feed_split(&mut Parser::new(limits), &ok, &[]);
    assert_eq!((got.len(), end), (1, Ok(())));
    let mut parser = Parser::new(limits);
    assert_eq!(
        parser.feed(&mut ok, |_| ControlFlow::Continue(())),
        Ok(ok.len())
    );
}

#[test]
fn message_over_the_message_limit_is_too_big_at_the_fragment_that_exceeds_it() {
    let limits = Limits {
        frame_bytes_max: 100,
        message_bytes_max: 250,
    };
    let mut parser = Parser::new(limits);
    let mut bytes = client_frame(false, 0x2, &[1; 100], MASK);
    bytes.extend(client_frame(false, 0x0, &[2; 100], MASK));
    let accepted = bytes.len();
    // Header only: 200 held + 51 announced > 250.
    bytes.extend(&client_frame(true, 0x0, &[3; 51], MASK)[..6]);
    let (first, header) = bytes.split_at_mut(accepted);
    assert_eq!(parser.feed(first, |_| panic!()), Ok(accepted));
    assert_eq!(parser.feed(header, |_| panic!()), Err(ParseError::TooBig));

    let mut exact = client_frame(false, 0x2, &[1; 100], MASK);
    exact.extend(client_frame(false, 0x0, &[2; 100], MASK));
    exact.extend(client_frame(true, 0x0, &[3; 50], MASK));
    let (got, end) = feed_split(&mut Parser::new(limits), &exact, &[]);
    assert_eq!(end, Ok(()));
    assert_eq!(got.len(), 1);
}

#[test]
fn every_later_call_after_an_error_returns_the_same_error() {
    let mut parser = Parser::new(Limits::default());
    let mut bad = [0x81, 0x02, b'h', b'i'];
    let first = parser.feed(&mut bad, |_| panic!()).unwrap_err();
    let mut good = masked(Opcode::Text, b"fine");
    assert_eq!(parser.feed(&mut good, |_| panic!()), Err(first));
    assert_eq!(parser.feed(&mut [], |_| panic!()), Err(first));
    assert_eq!(parser.buffered_bytes(), 0);
}

// ---------------------------------------------------------------------------------------------
// parser: properties
// ---------------------------------------------------------------------------------------------

/// One client message, maybe fragmented, with pings between its fragments.
#[derive(Clone, Debug)]
enum Item {
    Data {
        text: bool,
        payload: Vec<u8>,
        /// Fragment boundaries as fractions of the payload (of 65536).
        cuts: Vec<u16>,
        /// Ping payloads sent between fragments (as many as there are cuts, or fewer).
        pings: Vec<Vec<u8>>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    let control = prop::collection::vec(any::<u8>(), 0..=125);
    let data = prop_oneof![
        any::<String>().prop_map(|s| (true, s.into_bytes())),
        "[a-zé€𝄞]{100,400}".prop_map(|s| (true, s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..400).prop_map(|b| (false, b)),
    ];
    prop_oneof![
        4 => (
            data,
            prop::collection::vec(any::<u16>(), 0..4),
            prop::collection::vec(control.clone(), 0..3),
        )
            .prop_map(|((text, payload), cuts, pings)| Item::Data {
                text,
                payload,
                cuts,
                pings,
            }),
        1 => control.clone().prop_map(Item::Ping),
        1 => control.prop_map(Item::Pong),
    ]
}

/// The masked client bytes of `items` and the messages they should parse to.
fn encode_items(items: &[Item], mask_seed: u32) -> (Vec<u8>, Vec<Msg>) {
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    let mut n = 0u32;
    let mut mask = || {
        n += 1;
        mask_seed
            .wrapping_mul(2_654_435_761)
            .wrapping_add(n.wrapping_mul(40_503))
            .to_le_bytes()
    };
    for item in items {
        match item {
            Item::Data {
                text,
                payload,
                cuts,
                pings,
            } => {
                let mut bounds: Vec<usize> = cuts
                    .iter()
                    .map(|&c| usize::from(c) * payload.len() / 65536)
                    .collect();
                bounds.sort_unstable();
                bounds.push(payload.len());
                let mut start = 0;
                for (i, &end) in bounds.iter().enumerate() {
                    let fin = i + 1 == bounds.len();
                    let opcode = match (i, text) {
                        (0, true) => 0x1,
                        (0, false) => 0x2,
                        _ => 0x0,
                    };
                    bytes.extend(client_frame(fin, opcode, &payload[start..end], mask()));
                    start = end;
                    if let (false, Some(p)) = (fin, pings.get(i)) {
                        bytes.extend(client_frame(true, 0x9, p, mask()));
                        want.push(Msg::Ping(p.clone()));
                    }
                }
                want.push(if *text {
                    Msg::Text(String::from_utf8(payload.clone()).unwrap())
                } else {
                    Msg::Binary(payload.clone())
                });
            }
            Item::Ping(p) => {
                bytes.extend(client_frame(true, 0x9, p, mask()));
                want.push(Msg::Ping(p.clone()));
            }
            Item::Pong(p) => {
                bytes.extend(client_frame(true, 0xA, p, mask()));
                want.push(Msg::Pong(p.clone()));
            }
        }
    }
    (bytes, want)
}

/// Feed cut points as fractions (of 65536) of `len`.
fn cut_points(fractions: &[u16], len: usize) -> Vec<usize> {
    fractions
        .iter()
        .map(|&f| usize::from(f) * len / 65536)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn message_sequences_split_anywhere_parse_to_the_same_messages(
        items in prop::collection::vec(item(), 0..8),
        mask_seed in any::<u32>(),
        feed_cuts in prop::collection::vec(any::<u16>(), 0..8),
        break_every in 0usize..4,
    ) {
        let (bytes, want) = encode_items(&items, mask_seed);
        let limits = Limits { frame_bytes_max: 1 << 20, message_bytes_max: 1 << 20 };

        // Our parser, fed in arbitrary pieces, sometimes stopping early with Break.
        let mut parser = Parser::new(limits);
        let cuts = cut_points(&feed_cuts, bytes.len());
        let (got, end) = feed_split_breaking(&mut parser, &bytes, &cuts, break_every);
        end.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(parser.buffered_bytes(), 0);

        // The oracle agrees on what these bytes mean.
        prop_assert_eq!(tungstenite_reads(bytes, Role::Server), want);
    }

    #[test]
    fn corrupted_streams_never_panic_and_splitting_never_changes_the_outcome(
        items in prop::collection::vec(item(), 1..6),
        mask_seed in any::<u32>(),
        corruptions in prop::collection::vec((any::<u16>(), any::<u8>()), 1..4),
        feed_cuts in prop::collection::vec(any::<u16>(), 0..8),
        frame_bytes_max in 0usize..500,
    ) {
        let (mut bytes, _) = encode_items(&items, mask_seed);
        for (at, value) in corruptions {
            let at = usize::from(at) * bytes.len() / 65536;
            bytes[at] = value;
        }
        let limits = Limits { frame_bytes_max, message_bytes_max: 2 * frame_bytes_max };
        let whole = feed_split(&mut Parser::new(limits), &bytes, &[]);
        let split = feed_split(&mut Parser::new(limits), &bytes, &cut_points(&feed_cuts, bytes.len()));
        prop_assert_eq!(whole, split);
    }
}

#[test]
fn large_fragmented_binary_message_split_everywhere_matches_tungstenite() {
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let mut bytes = client_frame(false, 0x2, &payload[..66_000], MASK);
    bytes.extend(client_frame(true, 0x9, b"mid", [4, 3, 2, 1]));
    bytes.extend(client_frame(true, 0x0, &payload[66_000..], [1, 2, 3, 5]));
    let want = vec![Msg::Ping(b"mid".to_vec()), Msg::Binary(payload)];
    assert_eq!(tungstenite_reads(bytes.clone(), Role::Server), want);
    let limits = Limits {
        frame_bytes_max: 66_000,
        message_bytes_max: 70_000,
    };
    let cuts: Vec<usize> = (0..bytes.len()).step_by(1021).collect();
    assert_eq!(
        feed_split(&mut Parser::new(limits), &bytes, &cuts),
        (want, Ok(()))
    );
}

// ---------------------------------------------------------------------------------------------
// envelope
// ---------------------------------------------------------------------------------------------

#[test]
fn envelope_round_trips_its_bodies() {
    let bodies: [&[u8]; 4] = [b"first", b"", b"third body", &[0xFF; 300]];
    let mut out = BytesMut::new();
    envelope::encode(bodies, &mut out);
    assert_eq!(out.len(), envelope::encoded_len(bodies));
    assert_eq!(&out[..4], &4u32.to_le_bytes());
    let decoded = envelope::decode(&out).unwrap();
    assert_eq!(decoded.len(), 4);
    assert_eq!(decoded.collect::<Vec<_>>(), bodies);
}

#[test]
fn empty_envelope_is_just_a_zero_count() {
    let mut out = BytesMut::new();
    envelope::encode(std::iter::empty::<&[u8]>(), &mut out);
    assert_eq!(&out[..], &[0, 0, 0, 0]);
    assert_eq!(envelope::decode(&out).unwrap().count(), 0);
}

#[test]
fn envelope_frame_is_one_binary_frame_around_the_envelope() {
    let bodies: [&[u8]; 2] = [b"a", &[9; 200]];
    let f = envelope::encode_frame(bodies);
    let mut payload = BytesMut::new();
    envelope::encode(bodies, &mut payload);
    assert_eq!(f, frame::encode(Opcode::Binary, &payload));
    assert_eq!(
        tungstenite_reads(f.to_vec(), Role::Client),
        [Msg::Binary(payload.to_vec())]
    );
}

#[test]
fn every_truncation_of_an_envelope_is_rejected() {
    let mut out = BytesMut::new();
    envelope::encode([&b"abc"[..], b"", b"defgh"], &mut out);
    for len in 0..out.len() {
        let err = envelope::decode(&out[..len]).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Truncated | EnvelopeError::CountTooLarge),
            "len {len}: {err:?}"
        );
    }
}

#[test]
fn huge_count_or_length_is_an_error_not_an_allocation() {
    assert_eq!(
        envelope::decode(&u32::MAX.to_le_bytes()).unwrap_err(),
        EnvelopeError::CountTooLarge
    );
    let mut huge_len = 1u32.to_le_bytes().to_vec();
    huge_len.extend(u32::MAX.to_le_bytes());
    huge_len.extend(b"tiny");
    assert_eq!(
        envelope::decode(&huge_len).unwrap_err(),
        EnvelopeError::Truncated
    );
}

#[test]
fn trailing_bytes_after_the_last_body_are_rejected() {
    let mut out = BytesMut::new();
    envelope::encode([&b"x"[..]], &mut out);
    out.extend_from_slice(b"!");
    assert_eq!(envelope::decode(&out).unwrap_err(), EnvelopeError::Trailing);
}

proptest! {
    #[test]
    fn envelopes_of_arbitrary_bodies_round_trip(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
    ) {
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let mut out = BytesMut::new();
        envelope::encode(refs.iter().copied(), &mut out);
        prop_assert_eq!(out.len(), envelope::encoded_len(refs.iter().copied()));
        let decoded: Vec<&[u8]> = envelope::decode(&out).unwrap().collect();
        prop_assert_eq!(decoded, refs);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_envelope_decoder(input in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(bodies) = envelope::decode(&input) {
            let n = bodies.len();
            prop_assert_eq!(bodies.count(), n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// handshake
// ---------------------------------------------------------------------------------------------

const UPGRADE: &str = "GET /chat?room=1 HTTP/1.1\r\n\
    Host: example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: keep-alive, Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: https://example.com\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Protocol: v2\r\n\
    Sec-WebSocket-Version: 13\r\n\
    \r\n";

/// `UPGRADE` with header `name` replaced by `line` (or removed when `line` is empty).
fn upgrade_with(name: &str, line: &str) -> String {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let mut out = String::new();
    for l in UPGRADE.trim_end().split("\r\n") {
        let l = if l.to_ascii_lowercase().starts_with(&prefix) {
            line
        } else {
            l
        };
        if !l.is_empty() {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out
}

fn reject(request: &str) -> HandshakeError {
    handshake::parse(request.as_bytes(), 8192).unwrap_err()
}

#[test]
fn valid_upgrade_request_is_parsed_with_its_headers() {
    let (req, n) = handshake::parse(UPGRADE.as_bytes(), 8192).unwrap().unwrap();
    assert_eq!(n, UPGRADE.len());
    assert_eq!(req.path(), "/chat?room=1");
    assert_eq!(req.key(), "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(req.origin(), Some("https://example.com"));
    assert_eq!(req.header("HOST"), Some(&b"example.com"[..]));
    assert_eq!(req.header("x-missing"), None);
    assert_eq!(
        req.protocols().collect::<Vec<_>>(),
        ["chat", "superchat", "v2"]
    );
    assert_eq!(req.headers().count(), 8);
}

#[test]
fn incomplete_request_asks_for_more() {
    for len in 0..UPGRADE.len() {
        assert!(
            handshake::parse(&UPGRADE.as_bytes()[..len], 8192)
                .unwrap()
                .is_none(),
            "len {len}"
        );
    }
}

#[test]
fn pipelined_frame_bytes_follow_the_request() {
    let mut buf = UPGRADE.as_bytes().to_vec();
    let frame = masked(Opcode::Text, b"early");
    buf.extend(&frame);
    let (_, n) = handshake::parse(&buf, 8192).unwrap().unwrap();
    assert_eq!(&buf[n..], &frame[..]);
}

#[test]
fn request_over_the_header_budget_is_too_large() {
    let max = UPGRADE.len() - 1;
    assert_eq!(
        handshake::parse(&UPGRADE.as_bytes()[..max], max).unwrap_err(),
        HandshakeError::TooLarge
    );
    assert_eq!(
        handshake::parse(UPGRADE.as_bytes(), max).unwrap_err(),
        HandshakeError::TooLarge
    );
    assert!(
        handshake::parse(&UPGRADE.as_bytes()[..max - 1], max)
            .unwrap()
            .is_none()
    );
    assert!(
        handshake::parse(UPGRADE.as_bytes(), UPGRADE.len())
            .unwrap()
            .is_some()
    );
}

#[test]
fn more_than_64_headers_is_too_large() {
    let extra: String = (0..60).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let request = UPGRADE.replacen("Host:", &format!("{extra}Host:"), 1);
    assert_eq!(reject(&request), HandshakeError::TooLarge);
}

#[test]
fn garbage_is_malformed() {
    assert_eq!(
        reject("\x16\x03\x01 not http\r\n\r\n"),
        HandshakeError::Malformed
    );
    assert_eq!(
        reject("GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
        HandshakeError::Malformed
    );
}

#[test]
fn non_get_method_is_rejected_with_405() {
    let err = reject(&UPGRADE.replacen("GET", "POST", 1));
    assert_eq!((err, err.status()), (HandshakeError::Method, 405));
}

#[test]
fn http_1_0_is_rejected() {
    let err = reject(&UPGRADE.replacen("HTTP/1.1", "HTTP/1.0", 1));
    assert_eq!((err, err.status()), (HandshakeError::HttpVersion, 400));
}

#[test]
fn missing_upgrade_or_connection_token_is_not_an_upgrade() {
    for request in [
        upgrade_with("upgrade", ""),
        upgrade_with("upgrade", "Upgrade: h2c"),
        upgrade_with("connection", ""),
        upgrade_with("connection", "Connection: keep-alive"),
        upgrade_with("connection", "Connection: upgrades"),
    ] {
        let err = reject(&request);
        assert_eq!(
            (err, err.status()),
            (HandshakeError::NotUpgrade, 400),
            "{request}"
        );
    }
    for ok in [
        upgrade_with("upgrade", "UPGRADE: WebSocket"),
        upgrade_with("connection", "connection: UPGRADE"),
    ] {
        assert!(
            handshake::parse(ok.as_bytes(), 8192).unwrap().is_some(),
            "{ok}"
        );
    }
}

#[test]
fn missing_or_malformed_key_is_rejected() {
    for line in [
        "",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ*==",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==AAAA",
        "Sec-WebSocket-Key: ",
    ] {
        let err = reject(&upgrade_with("sec-websocket-key", line));
        assert_eq!((err, err.status()), (HandshakeError::Key, 400), "{line}");
    }
}

#[test]
fn unsupported_version_is_426() {
    for line in [
        "",
        "Sec-WebSocket-Version: 8",
        "Sec-WebSocket-Version: 13, 8",
    ] {
        let err = reject(&upgrade_with("sec-websocket-version", line));
        assert_eq!(
            (err, err.status()),
            (HandshakeError::Version, 426),
            "{line}"
        );
    }
    assert_eq!(HandshakeError::TooLarge.status(), 431);
    assert_eq!(HandshakeError::Malformed.status(), 400);
}

#[test]
fn accept_response_carries_the_rfc_sample_accept_key_and_protocol() {
    let resp = String::from_utf8(handshake::accept_response(
        "dGhlIHNhbXBsZSBub25jZQ==",
        Some("chat"),
        Some("permessage-deflate; server_no_context_takeover"),
    ))
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(resp.contains("\r\nUpgrade: websocket\r\n"));
    assert!(resp.contains("\r\nConnection: Upgrade\r\n"));
    assert!(resp.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(resp.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
    assert!(resp.contains(
        "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
    ));
    assert!(resp.ends_with("\r\n\r\n"));
    let plain = String::from_utf8(handshake::accept_response("x", None, None)).unwrap();
    assert!(!plain.contains("Sec-WebSocket-Protocol"));
    assert!(!plain.contains("Sec-WebSocket-Extensions"));
}

#[test]
fn reject_response_has_status_length_and_the_version_header_for_426() {
    let resp = String::from_utf8(handshake::reject_response(426, "use version 13")).unwrap();
    assert!(resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(resp.contains("\r\nConnection: close\r\n"));
    assert!(resp.contains("\r\nContent-Length: 14\r\n"));
    assert!(resp.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    assert!(resp.ends_with("\r\n\r\nuse version 13"));
    let resp = String::from_utf8(handshake::reject_response(431, "")).unwrap();
    assert!(resp.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    assert!(!resp.contains("Sec-WebSocket-Version"));
    assert!(resp.ends_with("Content-Length: 0\r\n\r\n"));
}

/// A stream for a tungstenite client whose server is our handshake code.
struct OurServer {
    request: Vec<u8>,
    response: Option<Cursor<Vec<u8>>>,
}

impl Read for OurServer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            let (req, n) = handshake::parse(&self.request, 8192)
                .map_err(io::Error::other)?
                .ok_or_else(|| io::Error::other("client request incomplete"))?;
            assert_eq!(n, self.request.len());
            let protocol = req.protocols().find(|p| *p == "v2");
            self.response = Some(Cursor::new(handshake::accept_response(
                req.key(),
                protocol,
                None,
            )));
        }
        self.response.as_mut().map_or(Ok(0), |r| r.read(buf))
    }
}

impl Write for OurServer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.request.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn tungstenite_client_completes_a_handshake_with_our_responses() {
    use tungstenite::client::IntoClientRequest;
    let mut request = "ws://localhost/feed".into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "v1, v2".parse().unwrap());
    let stream = OurServer {
        request: Vec::new(),
        response: None,
    };
    let (_, response) = tungstenite::client::client(request, stream).unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "v2");
}
