//! Fuzz target bodies (compiled for tests and `cargo fuzz` only).
//!
//! Each `pub fn` here is the whole body of one target in `fuzz/fuzz_targets/`, which only
//! forwards its input. Structure is read out of the input by a small byte `Reader` (reads
//! past the end yield zeros), so every input is a valid test case and no `arbitrary` is needed.
//!
//! | target            | feeds                                    | oracle                             |
//! |-------------------|------------------------------------------|------------------------------------|
//! | [`client_frames`] | bytes to `wire::Parser`, in chunks       | tungstenite (server role)          |
//! | [`server_frames`] | opcodes and bodies to the encoders       | tungstenite (client role)          |
//! | [`batch_envelope`]| bytes to `envelope::decode`, bodies      | a naive decoder; encode round trip |
//! | [`handshake`]     | bytes to `handshake::parse`              | httparse on the responses          |
//! | [`shard_ops`]     | operation sequences to the shard `State` | a model: a list of clients         |
//!
//! # Replay
//!
//! The inputs committed under `fuzz/seeds/<target>/` are replayed by this module's tests, so
//! plain `cargo test` (stable) runs every target on them.

use std::collections::VecDeque;
use std::io::{self, Cursor, Read, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

use crate::client::{Principal, RemoveReason};
use crate::config::{Config, FRAME_OVERHEAD_BYTES, SlowConsumerPolicy};
use crate::shard::State;
use crate::stats::{Counters, ShardCounters};
use crate::wire::envelope::{self, EnvelopeError};
use crate::wire::frame::{self, CONTROL_PAYLOAD_MAX};
use crate::wire::handshake::{self, HEADERS_MAX};
use crate::wire::{Inbound, Limits, Opcode, ParseError, Parser};
use crate::{Audience, ClientId, Payload, ShardId};

// ---------------------------------------------------------------------------------------------
// Input reader
// ---------------------------------------------------------------------------------------------

/// Reads structure out of fuzz input. Past the end it yields zeros and empty slices, so that
/// every input decodes to something.
struct Reader<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { rest: data }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// Everything not read yet.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

// ---------------------------------------------------------------------------------------------
// Messages, as both sides see them
// ---------------------------------------------------------------------------------------------

/// An owned message, so that ours ([`Inbound`]) and tungstenite's can be compared.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

impl From<Inbound<'_>> for Msg {
    fn from(m: Inbound<'_>) -> Msg {
        match m {
            Inbound::Text(t) => Msg::Text(t.to_owned()),
            Inbound::Binary(b) => Msg::Binary(b.to_vec()),
            Inbound::Ping(b) => Msg::Ping(b.to_vec()),
            Inbound::Pong(b) => Msg::Pong(b.to_vec()),
            Inbound::Close { code, reason } => Msg::Close(code, reason.to_owned()),
        }
    }
}

impl From<tungstenite::Message> for Msg {
    fn from(m: tungstenite::Message) -> Msg {
        use tungstenite::Message as M;
        match m {
            M::Text(t) => Msg::Text(t.as_str().to_owned()),
            M::Binary(b) => Msg::Binary(b.to_vec()),
            M::Ping(b) => Msg::Ping(b.to_vec()),
            M::Pong(b) => Msg::Pong(b.to_vec()),
            M::Close(None) => Msg::Close(None, String::new()),
            M::Close(Some(c)) => Msg::Close(Some(c.code.into()), c.reason.as_str().to_owned()),
            M::Frame(_) => panic!("tungstenite never reads raw frames"),
        }
    }
}

/// The kind of a rejection, the level at which ours and tungstenite's errors are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// A framing rule (close 1002).
    Protocol,
    /// Invalid UTF-8 (close 1007).
    Utf8,
    /// A frame or message over its limit (close 1009).
    TooBig,
}

impl From<ParseError> for Class {
    fn from(e: ParseError) -> Class {
        match e {
            ParseError::Protocol(_) => Class::Protocol,
            ParseError::InvalidUtf8 => Class::Utf8,
            ParseError::TooBig => Class::TooBig,
        }
    }
}

/// How tungstenite's reading ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TheirEnd {
    /// The input ran out (`ResetWithoutClosingHandshake`): nothing wrong in what was complete.
    Eof,
    /// It read a Close (the last message).
    Closed,
    /// It rejected the input.
    Failed(Class),
}

/// What tungstenite makes of one frame, when that can be said from the frame alone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Msg(Msg),
    Fail(Class),
}

/// A stream for tungstenite that reads `input` and discards what is written (pongs, closes).
struct Duplex<'a> {
    input: Cursor<&'a [u8]>,
}

impl Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every message tungstenite reads from `stream` in `role`, and how its reading ended.
fn tungstenite_reads(stream: &[u8], role: Role, limits: Option<Limits>) -> (Vec<Msg>, TheirEnd) {
    let config = WebSocketConfig::default()
        .max_frame_size(limits.map(|l| l.frame_bytes_max))
        .max_message_size(limits.map(|l| l.message_bytes_max));
    let duplex = Duplex {
        input: Cursor::new(stream),
    };
    let mut ws = WebSocket::from_raw_socket(duplex, role, Some(config));
    let mut messages = Vec::new();
    loop {
        // Every message takes at least a 2-byte header: more means tungstenite loops.
        assert!(messages.len() <= stream.len() / 2, "tungstenite loops");
        let end = match ws.read() {
            Ok(message) => {
                let closed = message.is_close();
                messages.push(Msg::from(message));
                if !closed {
                    continue;
                }
                TheirEnd::Closed
            }
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => TheirEnd::Eof,
            Err(WsError::Protocol(_)) => TheirEnd::Failed(Class::Protocol),
            Err(WsError::Utf8(_)) => TheirEnd::Failed(Class::Utf8),
            Err(WsError::Capacity(_)) => TheirEnd::Failed(Class::TooBig),
            Err(e) => panic!("unexpected tungstenite error: {e}"),
        };
        return (messages, end);
    }
}

/// What tungstenite (either role) makes of a complete, final, unextended control frame with
/// this opcode and (unmasked) payload. `None` for data opcodes.
fn tungstenite_control(opcode: u8, payload: &[u8]) -> Option<Expect> {
    if payload.len() > CONTROL_PAYLOAD_MAX {
        return Some(Expect::Fail(Class::Protocol));
    }
    Some(match opcode {
        0x9 => Expect::Msg(Msg::Ping(payload.to_vec())),
        0xA => Expect::Msg(Msg::Pong(payload.to_vec())),
        0x8 => match payload {
            [] => Expect::Msg(Msg::Close(None, String::new())),
            [_] => Expect::Fail(Class::Protocol),
            [hi, lo, reason @ ..] => {
                let Ok(reason) = std::str::from_utf8(reason) else {
                    // tungstenite checks the reason's UTF-8 before the code.
                    return Some(Expect::Fail(Class::Utf8));
                };
                let code = u16::from_be_bytes([*hi, *lo]);
                // A code it does not allow is not an error to tungstenite: it reads the Close
                // with a substituted code and reason.
                Expect::Msg(if CloseCode::from(code).is_allowed() {
                    Msg::Close(Some(code), reason.to_owned())
                } else {
                    Msg::Close(Some(1002), "Protocol violation".to_owned())
                })
            }
        },
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// client_frames
// ---------------------------------------------------------------------------------------------

/// Parser limits to choose from: small, so that inputs reach them; the frame limit both below
/// and above the message limit.
const CLIENT_LIMITS: [Limits; 4] = [
    Limits {
        frame_bytes_max: 1024,
        message_bytes_max: 4096,
    },
    Limits {
        frame_bytes_max: 1024,
        message_bytes_max: 4096,
    },
    Limits {
        frame_bytes_max: 4096,
        message_bytes_max: 1024,
    },
    Limits {
        frame_bytes_max: 200,
        message_bytes_max: 300,
    },
];

/// Whether our parser accepts a Close with `code` from a peer. The policy (RFC 6455 7.4 and
/// the IANA registry) is the parser's own and is pinned by `tests/wire.rs`; it is learnt from
/// the parser here so that this harness checks how it is applied, not which one it is.
fn close_code_accepted(code: u16) -> bool {
    let [hi, lo] = code.to_be_bytes();
    // A masked Close carrying just `code`, with a zero mask.
    let mut frame = [0x88, 0x82, 0, 0, 0, 0, hi, lo];
    Parser::new(Limits::default())
        .feed(&mut frame, |_| ControlFlow::Continue(()))
        .is_ok()
}

/// Client bytes, fed to [`Parser`] in chunk sizes taken from the input, checked against
/// tungstenite reading the same bytes as a server.
///
/// Input: `[limits, plan_len | pause << 3, plan[plan_len], stream..]`. The stream is fed in
/// chunks of `plan[i] + 1` bytes, cycling (no plan: in one piece); with `pause` the callback
/// returns `Break` after every message and the rest of the chunk is fed again.
///
/// Checks:
/// - no panic; `feed` always makes progress; an error poisons the parser; after a Close every
///   input is discarded;
/// - `buffered_bytes()` never exceeds `message_bytes_max` plus one control payload (the
///   parser's bound), and neither does the buffer's capacity (growth never passes it);
/// - the outcome does not depend on chunking: the same messages and the same end (still open,
///   closed, or the same error) as when fed one byte at a time;
/// - tungstenite, reading the same stream with the same limits, reads the same messages in
///   the same order and ends the same way: EOF where ours is still open, the same Close, or
///   an error of the same class (protocol / UTF-8 / too big). The exceptions, where the two
///   legitimately differ, are documented on `compare_with_tungstenite`.
pub fn client_frames(data: &[u8]) {
    let mut r = Reader::new(data);
    let limits = CLIENT_LIMITS[usize::from(r.u8()) % CLIENT_LIMITS.len()];
    let mode = r.u8();
    let plan: Vec<usize> = r
        .bytes(usize::from(mode & 0x07))
        .iter()
        .map(|&b| usize::from(b) + 1)
        .collect();
    let pause = mode & 0x08 != 0;
    let stream = r.rest();

    let chunked = parse_ours(stream, limits, &plan, pause);
    let bytewise = parse_ours(stream, limits, &[1], false);
    assert_eq!(
        chunked.messages, bytewise.messages,
        "chunking changed the messages"
    );
    assert_eq!(chunked.end, bytewise.end, "chunking changed the outcome");
    if bytewise.end == End::Closed {
        assert_eq!(chunked.at, bytewise.at, "chunking moved the Close");
    }
    let theirs = tungstenite_reads(stream, Role::Server, Some(limits));
    compare_with_tungstenite(stream, limits, &bytewise, theirs);
}

/// How our parse of a whole stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Every byte was consumed; a frame or message may be cut at the end.
    Open,
    /// A Close was delivered (the last message).
    Closed,
    /// The parser rejected the stream.
    Failed(ParseError),
}

/// Our parse of a whole stream.
#[derive(Debug)]
struct Parsed {
    messages: Vec<Msg>,
    end: End,
    /// Closed: index of the Close's last byte. Failed: index of the last byte fed (with
    /// one-byte chunks, the byte on which the parser failed). Open: the stream length.
    at: usize,
}

/// A callback for feeds that must deliver nothing (after a Close or an error).
fn no_message(m: Inbound<'_>) -> ControlFlow<()> {
    panic!("message after the end of the stream: {m:?}")
}

/// Feeds `stream` to a new parser in chunks of the `plan` sizes (cycled; empty: one chunk).
fn parse_ours(stream: &[u8], limits: Limits, plan: &[usize], pause: bool) -> Parsed {
    let mut input = stream.to_vec();
    let mut parser = Parser::new(limits);
    let bound = limits.message_bytes_max + CONTROL_PAYLOAD_MAX;
    let mut messages = Vec::new();
    assert_eq!(parser.feed(&mut [], no_message), Ok(0));
    let mut sizes = plan.iter().copied().cycle();
    let mut start = 0;
    while start < input.len() {
        let end = input.len().min(start + sizes.next().unwrap_or(input.len()));
        let mut pos = start;
        while pos < end {
            let before = messages.len();
            let result = parser.feed(&mut input[pos..end], |m| {
                messages.push(Msg::from(m));
                if pause {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            match result {
                Ok(n) => {
                    assert!(
                        n > 0 && n <= end - pos,
                        "feed consumed {n} of {}",
                        end - pos
                    );
                    let delivered = messages.len() - before;
                    let closed = delivered > 0 && matches!(messages.last(), Some(Msg::Close(..)));
                    if pause {
                        assert!(delivered <= 1, "feed went on after Break");
                    } else if n < end - pos {
                        assert!(closed, "feed stopped early without Break or Close");
                    }
                    pos += n;
                    if closed {
                        let rest = input.len() - pos;
                        assert_eq!(parser.feed(&mut input[pos..], no_message), Ok(rest));
                        assert_eq!(parser.feed(&mut [0x81, 0x80], no_message), Ok(2));
                        return Parsed {
                            messages,
                            end: End::Closed,
                            at: pos - 1,
                        };
                    }
                }
                Err(e) => {
                    // Poisoned: later calls fail the same way and deliver nothing.
                    assert_eq!(parser.feed(&mut input[end..], no_message), Err(e));
                    assert_eq!(parser.buffered_bytes(), 0);
                    return Parsed {
                        messages,
                        end: End::Failed(e),
                        at: end - 1,
                    };
                }
            }
            assert!(
                parser.buffered_bytes() <= bound,
                "parser holds {} bytes, bound {bound}",
                parser.buffered_bytes()
            );
            assert!(
                parser.buffered_capacity() <= bound,
                "parser buffer capacity {}, bound {bound}",
                parser.buffered_capacity()
            );
        }
        start = end;
    }
    Parsed {
        messages,
        end: End::Open,
        at: input.len(),
    }
}

/// One frame of a client stream, as a plain reading of RFC 6455 5.2 sees it (no rule checked:
/// only where the frame lies).
#[derive(Debug)]
struct RawFrame {
    /// First header byte: FIN, RSV1-3, opcode.
    b0: u8,
    /// The MASK bit.
    masked: bool,
    /// The 7-bit length field.
    len7: u8,
    /// The payload length, `None` while the header is cut.
    len: Option<u64>,
    /// The unmasked payload, `None` while the frame is cut.
    payload: Option<Vec<u8>>,
}

/// The frame of `stream` that contains byte `at`.
fn frame_at(stream: &[u8], at: usize) -> RawFrame {
    let mut start = 0;
    loop {
        let rest = stream.get(start..).unwrap_or_default();
        let (b0, b1) = match rest {
            [b0, b1, ..] => (*b0, *b1),
            [b0] => (*b0, 0),
            [] => (0, 0),
        };
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + ext + if masked { 4 } else { 0 };
        let mut frame = RawFrame {
            b0,
            masked,
            len7,
            len: None,
            payload: None,
        };
        let Some(header) = rest.get(..header_len) else {
            return frame;
        };
        let len = match ext {
            0 => u64::from(len7),
            _ => header[2..2 + ext]
                .iter()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b)),
        };
        frame.len = Some(len);
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| (start + header_len).checked_add(len));
        let Some(payload) = end.and_then(|end| stream.get(start + header_len..end)) else {
            return frame;
        };
        let mask = if masked {
            &header[header_len - 4..]
        } else {
            &[0; 4][..]
        };
        let payload: Vec<u8> = payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        let end = start + header_len + payload.len();
        frame.payload = Some(payload);
        if at < end {
            return frame;
        }
        start = end;
    }
}

/// Checks tungstenite's reading of `stream` against ours (`ours` fed one byte at a time).
///
/// Where ours is still open or ends with a Close, tungstenite must read exactly the same
/// messages and then hit EOF or end with the same Close: ours accepts nothing tungstenite
/// rejects. Where ours fails on frame F (the frame holding the byte it failed on), the
/// messages before F must be the same, and then tungstenite must fail with the same class,
/// except in these cases, each a legitimate difference:
///
/// 1. **Non-minimal control length.** F is a masked, final, unextended control frame whose
///    7-bit length field is 126 or 127 but whose payload is ≤ 125 bytes (and within the frame
///    limit). Ours rejects it from the length field (protocol); tungstenite checks the decoded
///    length and reads the frame, then goes on with the stream. Checked: tungstenite's next
///    message is what it makes of F; nothing after it is comparable.
/// 2. **Close code.** F is a complete, masked, final, unextended Close of at most 125 bytes
///    whose code ours does not accept (see [`close_code_accepted`]). Ours rejects it
///    (protocol, checked before the reason's UTF-8). tungstenite checks the reason's UTF-8
///    first (utf8 error), then reads the Close, substituting 1002 "Protocol violation" for a
///    code it does not allow either and passing through one it allows. Checked: ours is a
///    protocol error and tungstenite's result is exactly that.
///
///    2b. Conversely, where ours reads a Close whose code tungstenite does not allow (1014),
///    tungstenite reads it with that substitution. Checked: exactly that Close.
/// 3. **Size first.** F's header is complete and declares a payload over the frame limit, and
///    ours reports a protocol error: ours checks the first two header bytes (reserved bits,
///    opcode, mask bit, control rules, continuation state) and a set top bit of a 64-bit
///    length before the length against the limit; tungstenite checks the length against the
///    limit as soon as it has the header, and the rest only once the payload has arrived.
///    Checked: tungstenite reports too big.
/// 4. **Fail fast.** F is cut by the end of the input, and tungstenite hits EOF: ours rejects
///    what it can as soon as the bytes that break a rule arrive (the first two header bytes,
///    UTF-8 as it arrives, the message limit at the header); tungstenite waits for the whole
///    frame (except for the frame limit and the opcode, checked at the header).
fn compare_with_tungstenite(
    stream: &[u8],
    limits: Limits,
    ours: &Parsed,
    (theirs, their_end): (Vec<Msg>, TheirEnd),
) {
    let error = match ours.end {
        End::Open => {
            assert_eq!(theirs, ours.messages, "messages differ");
            assert_eq!(
                their_end,
                TheirEnd::Eof,
                "tungstenite rejected what ours accepts"
            );
            return;
        }
        End::Closed => {
            assert_eq!(
                their_end,
                TheirEnd::Closed,
                "tungstenite did not end with the Close"
            );
            assert_eq!(theirs.len(), ours.messages.len(), "{theirs:?}");
            let k = ours.messages.len() - 1;
            assert_eq!(theirs[..k], ours.messages[..k], "messages differ");
            // Exception 2b: tungstenite reads the same Close, but with its substitution for a
            // code it does not allow.
            let Some(Msg::Close(code, reason)) = ours.messages.last() else {
                panic!("closed without a Close: {:?}", ours.messages);
            };
            let payload: Vec<u8> = match code {
                Some(code) => code
                    .to_be_bytes()
                    .iter()
                    .chain(reason.as_bytes())
                    .copied()
                    .collect(),
                None => Vec::new(),
            };
            assert_eq!(
                tungstenite_control(0x8, &payload),
                Some(Expect::Msg(theirs[k].clone())),
                "tungstenite read the Close differently"
            );
            return;
        }
        End::Failed(e) => e,
    };
    let k = ours.messages.len();
    assert_eq!(
        theirs.get(..k),
        Some(&ours.messages[..]),
        "messages before the error differ ({their_end:?})"
    );
    let f = frame_at(stream, ours.at);
    let plain = f.masked && f.b0 & 0xF0 == 0x80;
    let within = f
        .len
        .is_some_and(|len| len <= limits.frame_bytes_max as u64);
    let opcode = f.b0 & 0x0F;
    if let (true, 0x8..=0xA, Some(payload)) = (plain && within, opcode, &f.payload) {
        let short_ext = f.len7 >= 126 && payload.len() <= CONTROL_PAYLOAD_MAX;
        let bad_code = opcode == 0x8
            && f.len7 <= 125
            && matches!(payload[..], [hi, lo, ..] if !close_code_accepted(u16::from_be_bytes([hi, lo])));
        if short_ext || bad_code {
            // Exceptions 1 and 2.
            assert_eq!(Class::from(error), Class::Protocol, "{f:?}");
            match tungstenite_control(opcode, payload) {
                Some(Expect::Msg(m)) => {
                    assert_eq!(theirs.get(k), Some(&m), "tungstenite's reading of {f:?}");
                    if short_ext {
                        return;
                    }
                    assert_eq!((theirs.len(), their_end), (k + 1, TheirEnd::Closed));
                }
                Some(Expect::Fail(class)) => {
                    assert_eq!((theirs.len(), their_end), (k, TheirEnd::Failed(class)));
                }
                None => panic!("not a control opcode: {f:?}"),
            }
            return;
        }
    }
    assert_eq!(
        theirs.len(),
        k,
        "tungstenite read past our error ({error}) in {f:?}"
    );
    let over_limit = f.len.is_some_and(|len| len > limits.frame_bytes_max as u64);
    match their_end {
        TheirEnd::Failed(class) if class == Class::from(error) => {}
        // Exception 3.
        TheirEnd::Failed(Class::TooBig) if Class::from(error) == Class::Protocol && over_limit => {}
        // Exception 4.
        TheirEnd::Eof if f.payload.is_none() => {}
        _ => panic!("ours failed with {error:?}, tungstenite ended {their_end:?}, at {f:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// server_frames
// ---------------------------------------------------------------------------------------------

/// Opcodes for raw [`frame::encode`].
const OPCODES: [Opcode; 6] = [
    Opcode::Text,
    Opcode::Binary,
    Opcode::Ping,
    Opcode::Pong,
    Opcode::Close,
    Opcode::Continuation,
];

/// Most frames built from one input, and most bytes they may take.
const SERVER_FRAMES_MAX: usize = 16;
const SERVER_STREAM_MAX: usize = 256 << 10;

/// Server frames built by [`frame::encode`], [`frame::encode_close`], [`Payload::text`] and
/// [`Payload::binary`] from opcodes and bodies taken from the input, read back by tungstenite
/// as a client.
///
/// Input: items `[kind, (opcode | code u16), body]` (see `body`) until the input ends. Kind
/// 0: `frame::encode` with one of text, binary, ping, pong, close, continuation; 1:
/// `encode_close` with the body as a (lossy UTF-8) reason; 2: `Payload::text`; 3:
/// `Payload::binary`.
///
/// Checks, for each frame: FIN set, RSV clear, no mask, the right opcode, the shortest length
/// encoding, a payload equal to the body; a `Payload` reports the same body, opcode and length
/// and survives [`Payload::from_frame`]; `encode_close` keeps the longest prefix of the reason
/// that fits 123 bytes on a char boundary. Then tungstenite, reading every frame in sequence,
/// reads exactly the message each one encodes: the same text or bytes, the same Close (with
/// its substitution for codes it does not allow), and rejects exactly the frames no valid
/// server sends (text that is not UTF-8, a control frame over 125 bytes, a continuation with
/// no message started, a Close of one byte).
pub fn server_frames(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    while !r.is_empty() && expected.len() < SERVER_FRAMES_MAX && stream.len() < SERVER_STREAM_MAX {
        let (frame, expect) = match r.u8() % 4 {
            0 => {
                let opcode = OPCODES[usize::from(r.u8()) % OPCODES.len()];
                let body = body(&mut r);
                let frame = frame::encode(opcode, &body);
                check_server_frame(&frame, opcode, &body);
                let expect = match opcode {
                    Opcode::Text => match String::from_utf8(body) {
                        Ok(text) => Expect::Msg(Msg::Text(text)),
                        Err(_) => Expect::Fail(Class::Utf8),
                    },
                    Opcode::Binary => Expect::Msg(Msg::Binary(body)),
                    Opcode::Continuation => Expect::Fail(Class::Protocol),
                    control => tungstenite_control(control as u8, &body)
                        .unwrap_or(Expect::Fail(Class::Protocol)),
                };
                (frame, expect)
            }
            1 => {
                let code = r.u16();
                let reason = String::from_utf8_lossy(&body(&mut r)).into_owned();
                let frame = frame::encode_close(code, &reason);
                // The longest prefix of whole chars that fits beside the code.
                let mut kept = String::new();
                for c in reason.chars() {
                    if kept.len() + c.len_utf8() > CONTROL_PAYLOAD_MAX - 2 {
                        break;
                    }
                    kept.push(c);
                }
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(kept.as_bytes());
                check_server_frame(&frame, Opcode::Close, &payload);
                let expect = tungstenite_control(0x8, &payload).expect("a control opcode");
                (frame, expect)
            }
            2 => {
                let text = String::from_utf8_lossy(&body(&mut r)).into_owned();
                let payload = Payload::text(&text);
                check_payload(&payload, Opcode::Text, text.as_bytes());
                (payload.frame().clone(), Expect::Msg(Msg::Text(text)))
            }
            _ => {
                let body = body(&mut r);
                let payload = Payload::binary(&body);
                check_payload(&payload, Opcode::Binary, &body);
                (payload.frame().clone(), Expect::Msg(Msg::Binary(body)))
            }
        };
        stream.extend_from_slice(&frame);
        expected.push(expect);
    }
    let (theirs, their_end) = tungstenite_reads(&stream, Role::Client, None);
    let mut read = theirs.into_iter();
    for expect in expected {
        match expect {
            Expect::Msg(m) => {
                let closes = matches!(m, Msg::Close(..));
                assert_eq!(read.next(), Some(m));
                if closes {
                    assert_eq!(their_end, TheirEnd::Closed);
                    return;
                }
            }
            Expect::Fail(class) => {
                assert_eq!(read.next(), None);
                assert_eq!(their_end, TheirEnd::Failed(class));
                return;
            }
        }
    }
    assert_eq!(read.next(), None);
    assert_eq!(their_end, TheirEnd::Eof);
}

/// A body: `[mode, len.., fill_len, fill..]`. `mode % 8` picks a length that needs the 2-byte
/// header (0-3: `len` u8), the 4-byte one (4, 5: 126 + `len` u16 % 1024), the 10-byte one
/// (6: 65536 + `len` u8; rare, as such bodies are slow to check), or one at a boundary (7:
/// `mode >> 3` picks 0, 1, 2, 123, 124, 125, 126, 127 or 65535); the `fill` bytes are cycled
/// to fill it.
fn body(r: &mut Reader<'_>) -> Vec<u8> {
    let mode = r.u8();
    let len = match mode % 8 {
        0..=3 => usize::from(r.u8()),
        4 | 5 => 126 + usize::from(r.u16() % 1024),
        6 => 0x1_0000 + usize::from(r.u8()),
        _ => [0, 1, 2, 123, 124, 125, 126, 127, 0xFFFF][usize::from(mode >> 3) % 9],
    };
    let n = usize::from(r.u8() % 32);
    let fill = Some(r.bytes(n)).filter(|f| !f.is_empty()).unwrap_or(b"x");
    fill.iter().copied().cycle().take(len).collect()
}

/// Checks `frame` is one final, unmasked frame of `opcode` carrying `payload`, with the
/// shortest length encoding.
fn check_server_frame(frame: &[u8], opcode: Opcode, payload: &[u8]) {
    let n = payload.len();
    let mut header = vec![0x80 | opcode as u8];
    if n <= 125 {
        header.push(n as u8);
    } else if n <= 0xFFFF {
        header.push(126);
        header.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        header.push(127);
        header.extend_from_slice(&(n as u64).to_be_bytes());
    }
    assert_eq!(frame.len(), header.len() + n);
    assert_eq!(
        frame[..header.len()],
        header[..],
        "header of a {n}-byte frame"
    );
    assert!(frame[header.len()..] == *payload, "payload");
    assert_eq!(frame::header_len(n), header.len());
}

/// Checks a [`Payload`] carries `body` as one `opcode` frame and survives `from_frame`.
fn check_payload(payload: &Payload, opcode: Opcode, body: &[u8]) {
    check_server_frame(payload.frame(), opcode, body);
    assert_eq!(payload.body(), body);
    assert_eq!(payload.opcode(), opcode);
    assert_eq!(payload.len(), payload.frame().len());
    assert!(!payload.is_empty());
    assert_eq!(
        Payload::from_frame(payload.frame().clone()).as_ref(),
        Ok(payload)
    );
}

// ---------------------------------------------------------------------------------------------
// batch_envelope
// ---------------------------------------------------------------------------------------------

/// Most bodies cut from one input for the round trip.
const BODIES_MAX: usize = 64;

/// The batch envelope decoder on arbitrary bytes, and the encode → decode round trip of bodies
/// cut from them.
///
/// Checks: [`envelope::decode`] never panics and agrees with a naive reference decoder (same
/// bodies, same error); what it accepts holds at most `input.len() / 4` bodies (it allocates
/// nothing, and a count never makes anyone else allocate more than the input justifies) and
/// re-encodes to exactly the input. Bodies cut from the input at lengths it gives encode to
/// [`envelope::encoded_len`] bytes appended after what `out` held, decode back to the same
/// bodies, travel in [`envelope::encode_frame`] as one binary frame, and the envelope cut short
/// or given a trailing byte is rejected (truncated / count too large, trailing).
pub fn batch_envelope(data: &[u8]) {
    let decoded = envelope::decode(data);
    assert_eq!(
        decoded.clone().map(|b| b.collect::<Vec<_>>()),
        reference_decode(data),
        "decode disagrees with the reference"
    );
    if let Ok(bodies) = decoded {
        assert!(bodies.len() <= data.len() / 4);
        let mut out = BytesMut::new();
        envelope::encode(bodies.clone(), &mut out);
        assert_eq!(&out[..], data, "a decoded envelope re-encodes to itself");
        assert_eq!(envelope::encoded_len(bodies), data.len());
    }

    let mut r = Reader::new(data);
    let mut bodies: Vec<&[u8]> = Vec::new();
    while !r.is_empty() && bodies.len() < BODIES_MAX {
        let len = usize::from(r.u8());
        bodies.push(r.bytes(len));
    }
    let prefix = &data[..data.len().min(3)];
    let mut out = BytesMut::from(prefix);
    envelope::encode(bodies.iter().copied(), &mut out);
    assert_eq!(&out[..prefix.len()], prefix, "encode appends");
    let encoded = out.split_off(prefix.len()).freeze();
    assert_eq!(encoded.len(), envelope::encoded_len(bodies.iter().copied()));
    let back: Vec<&[u8]> = envelope::decode(&encoded)
        .expect("an encoded envelope decodes")
        .collect();
    assert_eq!(back, bodies);

    let framed = envelope::encode_frame(bodies.iter().copied());
    let payload = Payload::from_frame(framed).expect("encode_frame builds one frame");
    assert_eq!(payload.opcode(), Opcode::Binary);
    assert_eq!(payload.body(), &encoded[..]);

    let cut = data.len().wrapping_mul(7) % encoded.len();
    assert!(matches!(
        envelope::decode(&encoded[..cut]),
        Err(EnvelopeError::Truncated | EnvelopeError::CountTooLarge)
    ));
    let mut longer = encoded.to_vec();
    longer.push(data.first().copied().unwrap_or(0));
    assert_eq!(
        envelope::decode(&longer).map(|b| b.len()),
        Err(EnvelopeError::Trailing)
    );
}

/// A straightforward envelope decoder, as the format's description reads.
fn reference_decode(input: &[u8]) -> Result<Vec<&[u8]>, EnvelopeError> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = input.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0).ok_or(EnvelopeError::Truncated)?;
    // Each body takes at least its 4-byte length.
    if count.saturating_mul(4) > input.len() - 4 {
        return Err(EnvelopeError::CountTooLarge);
    }
    let mut bodies = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let len = u32_at(at).ok_or(EnvelopeError::Truncated)?;
        let body = input
            .get(at + 4..)
            .and_then(|rest| rest.get(..len))
            .ok_or(EnvelopeError::Truncated)?;
        bodies.push(body);
        at += 4 + len;
    }
    if at != input.len() {
        return Err(EnvelopeError::Trailing);
    }
    Ok(bodies)
}

// ---------------------------------------------------------------------------------------------
// handshake
// ---------------------------------------------------------------------------------------------

/// Arbitrary bytes as an HTTP upgrade request, under a small header budget.
///
/// Input: `[budget, cut, request..]`; the budget is `16 + 4 * budget` bytes (16..=1036).
///
/// Checks: [`handshake::parse`] never panics and returns `Ok(None)` only while the input is
/// shorter than the budget (a request longer than the budget is never "incomplete" forever);
/// `Ok(Some((req, n)))` has `n` within the input and the budget, a key of 22 base64 characters
/// and `==` that is the request's trimmed `Sec-WebSocket-Key`, at most [`HEADERS_MAX`] headers,
/// and [`handshake::accept_response`] for it (with and without the first offered subprotocol)
/// is a well-formed 101 response; `Err(e)` has a 4xx status and
/// [`handshake::reject_response`] for it is a well-formed response whose Content-Length is its
/// body. And a decision is final: the prefix of the request cut at `cut` (scaled to the input)
/// either is still incomplete or gets the same decision as the whole input.
pub fn handshake(data: &[u8]) {
    let mut r = Reader::new(data);
    let budget = 16 + 4 * usize::from(r.u8());
    let cut = usize::from(r.u8());
    let input = r.rest();
    let result = handshake::parse(input, budget);
    match &result {
        Ok(None) => assert!(input.len() < budget, "incomplete past the budget"),
        Ok(Some((req, n))) => {
            assert!(
                *n <= input.len() && *n <= budget,
                "{n} bytes of {}",
                input.len()
            );
            let key = req.key();
            assert_eq!(key.len(), 24);
            assert!(key.ends_with("=="));
            assert!(
                key[..22]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
            );
            let header = req.header("Sec-WebSocket-Key").map(<[u8]>::trim_ascii);
            assert_eq!(header, Some(key.as_bytes()));
            assert!(req.headers().count() <= HEADERS_MAX);
            let _ = req.origin();
            let _ = req.path();
            check_accept(key, None);
            if let Some(protocol) = req.protocols().next() {
                check_accept(key, Some(protocol));
            }
        }
        Err(e) => {
            let status = e.status();
            assert!((400..500).contains(&status), "{e:?} answers {status}");
            check_reject(status, &e.to_string());
        }
    }
    let cut = input.len() * cut / 255;
    let early = handshake::parse(&input[..cut], budget);
    match (early, &result) {
        (Ok(None), _) => {}
        (Err(a), Err(b)) => assert_eq!(a, *b, "the decision on a prefix changed"),
        (Ok(Some((a, an))), Ok(Some((b, bn)))) => {
            assert_eq!((an, a.key(), a.path()), (*bn, b.key(), b.path()));
        }
        (early, _) => panic!("a prefix got {early:?}, the whole input {result:?}"),
    }
}

/// Checks the 101 response for `key` parses as HTTP/1.1 with the required headers.
fn check_accept(key: &str, protocol: Option<&str>) {
    let response = handshake::accept_response(key, protocol);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Response::new(&mut headers);
    assert_eq!(
        parsed.parse(&response),
        Ok(httparse::Status::Complete(response.len())),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!((parsed.version, parsed.code), (Some(1), Some(101)));
    let value = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    assert_eq!(value("upgrade"), Some(&b"websocket"[..]));
    assert_eq!(value("connection"), Some(&b"Upgrade"[..]));
    let accept = value("sec-websocket-accept").expect("Sec-WebSocket-Accept");
    // Base64 of a 20-byte SHA-1.
    assert_eq!(accept.len(), 28);
    assert!(accept.ends_with(b"="));
    assert_eq!(value("sec-websocket-protocol"), protocol.map(str::as_bytes));
}

/// Checks an error response parses with `status` and a Content-Length equal to its body.
fn check_reject(status: u16, body: &str) {
    let response = handshake::reject_response(status, body);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = parsed.parse(&response) else {
        panic!("malformed: {}", String::from_utf8_lossy(&response));
    };
    assert_eq!(parsed.code, Some(status));
    let length = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value);
    assert_eq!(length, Some(body.len().to_string().as_bytes()));
    assert_eq!(&response[head..], body.as_bytes());
    if status == 426 {
        assert!(
            parsed
                .headers
                .iter()
                .any(|h| h.name == "Sec-WebSocket-Version" && h.value == b"13")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// shard_ops
// ---------------------------------------------------------------------------------------------

/// Most clients admitted in one run.
const SHARD_CLIENTS_MAX: usize = 24;

/// Most pongs a client may have queued (`state::CONTROL_FRAMES_MAX`).
const PONGS_MAX: usize = 16;

/// One simulated clock step.
const TICK: Duration = Duration::from_millis(125);

/// The reasons a client can be closed with directly.
const CLOSE_REASONS: [RemoveReason; 14] = [
    RemoveReason::Removed,
    RemoveReason::ClientClosed(Some(1000)),
    RemoveReason::ClientClosed(Some(4321)),
    RemoveReason::ClientClosed(None),
    RemoveReason::Disconnected,
    RemoveReason::SlowConsumer,
    RemoveReason::WriteDeadline,
    RemoveReason::HeartbeatTimeout,
    RemoveReason::AuthDeadline,
    RemoveReason::Protocol(1002),
    RemoveReason::Protocol(1007),
    RemoveReason::Protocol(1009),
    RemoveReason::Closed(4100),
    RemoveReason::Shutdown,
];

/// Sequences of operations run against the shard's `State` and against a model.
///
/// Input: `[policy | auth << 2, cap, timeouts, auth deadline, copy_max, write buffer, ops..]`.
/// The client queue cap is 16..=1036 bytes, the timeouts multiples of 250 ms on a simulated
/// clock that ops move in 125 ms steps, so every deadline is hit exactly, early and late.
///
/// Operations: admit a client (maybe authenticated); close a client for any reason (`remove`
/// for `Removed`); set or clear its authentication; deliver a payload to an audience (all,
/// authenticated, either except one client, maybe one never admitted); send to one client;
/// deliver a batch; write k bytes of a client's queue (gathered as the connection task does,
/// through a small write buffer, then `wrote`); stall a client (its socket takes nothing: the
/// connection task marks it blocked); advance the clock; sweep; release a client; an inbound
/// frame (touch); a ping (touch and pong); shut down.
///
/// The model keeps, per client, its phase and its queue as one list of whole frames in write
/// order, and states the rules plainly:
/// - a delivery appends the frames to every open client of the audience, unless it would take
///   the queue over the cap. Then `Disconnect` evicts the client: it loses every data frame not
///   yet started and gets a 4008 close ahead of them; `DropNewest` drops the delivery (a batch
///   whole); `DropOldest` drops data frames not yet started, oldest first, until the delivery
///   fits, or drops only the delivery if it could not fit even with all of them dropped;
/// - a pong goes after the frame being written and after the control frames already queued,
///   ahead of every data frame not started; at most 16 are queued;
/// - a close (other than an eviction) queues its close frame after the data, or aborts the
///   client (no frame) for `Disconnected` and `WriteDeadline`;
/// - a sweep closes open clients blocked for the write deadline, else idle for more than the
///   heartbeat timeout (4002), else unauthenticated for the auth deadline (4001), and aborts
///   closing clients blocked for the write deadline;
/// - an aborted client is written no more.
///
/// Checks after every operation: each client's phase, queue bytes, frame count and blocked
/// time; the bytes each write hands over are the model's next bytes for that client, and the
/// whole of what is gathered is a prefix of its queue; the `clients` gauge equals the open
/// clients, `queued_bytes` the sum of the queues; deliveries, drops, evictions by reason,
/// protocol closes, bytes written and writes match; the removed events are those the model
/// expects. At the end every queue that can be written is drained, every client released, the
/// gauges are zero, and every admitted client produced exactly one removed event.
pub fn shard_ops(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut sim = Sim::new(&mut r);
    while !r.is_empty() {
        sim.step(&mut r);
        sim.check();
    }
    sim.finish();
}

/// A client's phase, as the model sees it; named as `state::Phase`, whose `Debug` it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelPhase {
    Open,
    Closing,
    Abort,
}

/// One queued frame in the model.
#[derive(Debug)]
struct Queued {
    frame: Bytes,
    /// Pong or close frame queued ahead of data.
    control: bool,
}

/// One client in the model.
#[derive(Debug)]
struct ModelClient {
    id: ClientId,
    /// Its slab slot; `None` once released (the slot may then hold another client).
    slot: Option<usize>,
    phase: ModelPhase,
    authenticated: bool,
    /// Simulated times.
    last_seen: Duration,
    /// Whether a server ping went out since `last_seen`.
    pinged: bool,
    registered_at: Duration,
    blocked_since: Option<Duration>,
    /// Frames not completely written, in write order.
    queue: VecDeque<Queued>,
    /// Bytes of the front frame already written.
    offset: usize,
    /// Removed events produced.
    removed: usize,
}

impl ModelClient {
    fn queued(&self) -> usize {
        self.queue.iter().map(|q| q.frame.len()).sum::<usize>() - self.offset
    }

    fn push_data(&mut self, frame: Bytes) {
        self.queue.push_back(Queued {
            frame,
            control: false,
        });
    }

    /// A control frame goes after the frame being written and the control frames queued
    /// before it.
    fn push_control(&mut self, frame: Bytes) {
        let mut at = usize::from(self.offset > 0);
        while self.queue.get(at).is_some_and(|q| q.control) {
            at += 1;
        }
        self.queue.insert(
            at,
            Queued {
                frame,
                control: true,
            },
        );
    }

    /// Bytes of the data frames not started (what `DropOldest` may drop).
    /// The memory the queue is charged for: its bytes plus a fixed overhead per frame.
    fn charge(&self) -> usize {
        self.queued() + self.queue.len() * FRAME_OVERHEAD_BYTES
    }

    /// The charge of the data frames not started.
    fn droppable(&self) -> usize {
        let at = usize::from(self.offset > 0);
        self.queue
            .iter()
            .skip(at)
            .filter(|q| !q.control)
            .map(|q| q.frame.len() + FRAME_OVERHEAD_BYTES)
            .sum()
    }

    /// Drops data frames not started, oldest first, while `more` bytes would take the queue
    /// over `cap` (`cap` 0: all of them). Returns how many.
    fn drop_data(&mut self, more: usize, cap: usize) -> u64 {
        let mut dropped = 0;
        let mut at = usize::from(self.offset > 0);
        while self.charge() + more > cap && at < self.queue.len() {
            if self.queue[at].control {
                at += 1;
            } else {
                self.queue.remove(at);
                dropped += 1;
            }
        }
        dropped
    }

    /// Whether `bytes` is a prefix of what is left to write.
    fn starts_with(&self, mut bytes: &[u8]) -> bool {
        let mut skip = self.offset;
        for q in &self.queue {
            let rest = &q.frame[skip..];
            skip = 0;
            let n = rest.len().min(bytes.len());
            if rest[..n] != bytes[..n] {
                return false;
            }
            bytes = &bytes[n..];
        }
        bytes.is_empty()
    }

    /// Marks `n` bytes written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.queue[0].frame.len() - self.offset;
            if n >= left {
                self.queue.pop_front();
                self.offset = 0;
                n -= left;
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }

    fn control_frames(&self) -> usize {
        self.queue.iter().filter(|q| q.control).count()
    }
}

/// A close frame with `code` and `reason`, built by hand.
fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut f = vec![0x88, (2 + reason.len()) as u8];
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason.as_bytes());
    Bytes::from(f)
}

/// Counters the model expects.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    deliveries: u64,
    frames_dropped: u64,
    evicted_slow_consumer: u64,
    evicted_write_deadline: u64,
    evicted_heartbeat: u64,
    evicted_auth_deadline: u64,
    protocol_errors: u64,
    bytes_written: u64,
    write_syscalls: u64,
}

/// The shard state under test, the model, and the simulated clock.
struct Sim {
    state: State,
    counters: Arc<ShardCounters>,
    cap: usize,
    policy: SlowConsumerPolicy,
    heartbeat: Duration,
    write_deadline: Duration,
    auth_deadline: Option<Duration>,
    /// Server pings to clients silent this long.
    ping_interval: Option<Duration>,
    /// Simulated time zero, and the time since it.
    t0: Instant,
    now: Duration,
    clients: Vec<ModelClient>,
    shutting_down: bool,
    /// The shard's write buffer (its capacity bounds the copied part of a write).
    buf: Vec<u8>,
    copy_max: usize,
    /// What a write gathered.
    wire: Vec<u8>,
    /// Payloads built so far (their bytes tell them apart).
    payloads: u8,
    expected: Expected,
    /// Removed events expected from the current operation.
    removed: Vec<(ClientId, RemoveReason)>,
}

impl Sim {
    fn new(r: &mut Reader<'_>) -> Sim {
        let mode = r.u8();
        let policy = [
            SlowConsumerPolicy::Disconnect,
            SlowConsumerPolicy::DropNewest,
            SlowConsumerPolicy::DropOldest,
        ][usize::from(mode % 3)];
        let cap = 16 + 4 * usize::from(r.u8());
        let timeouts = r.u8();
        let heartbeat = 2 * TICK * (1 + u32::from(timeouts & 0x0F));
        let write_deadline = 2 * TICK * (1 + u32::from(timeouts >> 4));
        let deadlines = r.u8();
        let auth = 2 * TICK * (1 + u32::from(deadlines & 0x0F));
        let auth_deadline = (mode & 0x04 != 0).then_some(auth);
        let ping = 2 * TICK * (1 + u32::from(deadlines >> 4));
        let ping_interval = (mode & 0x08 != 0 && ping < heartbeat).then_some(ping);
        let copy_max = usize::from(r.u8());
        let buf = Vec::with_capacity(4 * usize::from(r.u8()));
        static DEFAULT: OnceLock<Config> = OnceLock::new();
        let config = Config {
            client_queue_bytes_max: cap,
            slow_consumer: policy,
            heartbeat_timeout: heartbeat,
            write_deadline,
            auth_deadline,
            ping_interval,
            copy_bytes_max: copy_max,
            // Built once: `Config::default` asks the OS for the number of cores.
            ..DEFAULT.get_or_init(Config::default).clone()
        };
        let counters = Arc::new(ShardCounters::new(Counters::default()));
        let state = State::new(Arc::new(config), counters.clone());
        let t0 = Instant::now();
        Sim {
            state,
            counters,
            cap,
            policy,
            heartbeat,
            write_deadline,
            auth_deadline,
            ping_interval,
            t0,
            now: Duration::ZERO,
            clients: Vec::new(),
            shutting_down: false,
            buf,
            copy_max,
            wire: Vec::new(),
            payloads: 0,
            expected: Expected::default(),
            removed: Vec::new(),
        }
    }

    fn instant(&self, at: Duration) -> Instant {
        self.t0 + at
    }

    /// A client picked by the input, admitted or not yet released alike.
    fn pick(&self, r: &mut Reader<'_>) -> Option<usize> {
        let b = usize::from(r.u8());
        (!self.clients.is_empty()).then(|| b % self.clients.len())
    }

    /// Indices of unreleased clients, in slot order (the shard's iteration order).
    fn by_slot(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].slot.is_some())
            .collect();
        v.sort_by_key(|&i| self.clients[i].slot);
        v
    }

    /// A new payload (text or binary), its bytes unlike the previous ones'.
    fn payload(&mut self, r: &mut Reader<'_>) -> Payload {
        let b = r.u8();
        let len = if b & 0x80 != 0 {
            usize::from(b & 0x7F) * 8
        } else {
            usize::from(b)
        };
        self.payloads = self.payloads.wrapping_add(1);
        let fill = b'a' + self.payloads % 26;
        let body = vec![fill; len];
        if self.payloads.is_multiple_of(2) {
            Payload::binary(body)
        } else {
            Payload::text(String::from_utf8(body).unwrap_or_default())
        }
    }

    fn step(&mut self, r: &mut Reader<'_>) {
        match r.u8() % 14 {
            0 => {
                let authenticated = r.u8() & 1 != 0;
                self.admit(authenticated);
            }
            1 => {
                let reason = CLOSE_REASONS[usize::from(r.u8()) % CLOSE_REASONS.len()];
                if let Some(i) = self.pick(r) {
                    self.close_op(i, reason);
                }
            }
            2 => {
                let on = r.u8() & 1 != 0;
                if let Some(i) = self.pick(r) {
                    let id = self.clients[i].id;
                    let principal = on.then(|| Principal::new(id.as_u64()));
                    self.state.set_authenticated(id, principal);
                    if self.clients[i].phase == ModelPhase::Open {
                        self.clients[i].authenticated = on;
                    }
                }
            }
            3 => {
                let audience = self.audience(r);
                let payloads = self.batch(r);
                self.deliver(&payloads, audience);
            }
            5 => {
                // Consecutive broadcasts to one audience, as the worker delivers them: in one
                // pass, each group offered on its own.
                let audience = self.audience(r);
                let groups: Vec<Vec<Payload>> =
                    (0..2 + r.u8() % 3).map(|_| self.batch(r)).collect();
                self.deliver_groups(&groups, audience);
            }
            4 => {
                let payload = self.payload(r);
                let id = match self.pick(r) {
                    Some(i) => self.clients[i].id,
                    None => ClientId::new(999, ShardId(0)),
                };
                self.send(id, payload);
            }
            6 => {
                let b = r.u8();
                let k = if b & 0x80 != 0 {
                    usize::from(b & 0x7F) * 32 + 1
                } else {
                    usize::from(b) + 1
                };
                if let Some(i) = self.pick(r) {
                    self.write(i, k);
                }
            }
            7 => {
                if let Some(i) = self.pick(r) {
                    self.stall(i);
                }
            }
            8 => {
                self.now += TICK * u32::from(r.u8() % 32);
            }
            9 => self.sweep(),
            10 => {
                if let Some(i) = self.pick(r) {
                    self.release(i);
                }
            }
            11 => {
                if let Some(i) = self.pick(r) {
                    self.inbound(i, None);
                }
            }
            12 => {
                let len = usize::from(r.u8()) % (CONTROL_PAYLOAD_MAX + 1);
                let ping = r.bytes(len);
                if let Some(i) = self.pick(r) {
                    self.inbound(i, Some(ping));
                }
            }
            _ => {
                self.state.shutdown();
                self.shutting_down = true;
                for i in 0..self.clients.len() {
                    self.close(i, RemoveReason::Shutdown);
                }
            }
        }
    }

    fn admit(&mut self, authenticated: bool) {
        if self.clients.len() >= SHARD_CLIENTS_MAX {
            return;
        }
        let seq = self.clients.len() as u64 + 1;
        let id = ClientId::new(seq, ShardId(0));
        let principal = authenticated.then(|| Principal::new(seq));
        let slot = self.state.admit(id, principal, self.instant(self.now));
        assert!(
            self.clients.iter().all(|c| c.slot != Some(slot)),
            "slot {slot} handed out twice"
        );
        self.clients.push(ModelClient {
            id,
            slot: Some(slot),
            phase: ModelPhase::Open,
            authenticated,
            last_seen: self.now,
            pinged: false,
            registered_at: self.now,
            blocked_since: None,
            queue: VecDeque::new(),
            offset: 0,
            removed: 0,
        });
        if self.shutting_down {
            self.close(self.clients.len() - 1, RemoveReason::Shutdown);
        }
    }

    /// Closes client `i` through the shard's API, for `reason`.
    fn close_op(&mut self, i: usize, reason: RemoveReason) {
        let c = &self.clients[i];
        if reason == RemoveReason::Removed {
            // The embedder's path: by id, answered with what was known.
            let info = self.state.remove(c.id, self.instant(self.now));
            assert_eq!(info.is_some(), c.phase == ModelPhase::Open);
            if let Some(info) = info {
                assert_eq!((info.id, info.authenticated), (c.id, c.authenticated));
                assert_eq!(info.queued_bytes, c.queued());
            }
        } else if let Some(slot) = c.slot {
            self.state.close(slot, reason);
        } else {
            return;
        }
        self.close(i, reason);
    }

    /// The model of `State::close`.
    fn close(&mut self, i: usize, reason: RemoveReason) {
        let c = &mut self.clients[i];
        if c.phase != ModelPhase::Open {
            return;
        }
        let e = &mut self.expected;
        let frame = match reason {
            RemoveReason::Removed => Some(close_frame(1000, "")),
            RemoveReason::ClientClosed(Some(code)) => Some(close_frame(code, "")),
            RemoveReason::ClientClosed(None) => Some(Bytes::from_static(&[0x88, 0x00])),
            RemoveReason::Disconnected => None,
            RemoveReason::SlowConsumer => {
                e.evicted_slow_consumer += 1;
                Some(close_frame(4008, "slow consumer"))
            }
            RemoveReason::WriteDeadline => {
                e.evicted_write_deadline += 1;
                None
            }
            RemoveReason::HeartbeatTimeout => {
                e.evicted_heartbeat += 1;
                Some(close_frame(4002, "idle"))
            }
            RemoveReason::AuthDeadline => {
                e.evicted_auth_deadline += 1;
                Some(close_frame(4001, "not authenticated"))
            }
            RemoveReason::Protocol(code) => {
                e.protocol_errors += 1;
                Some(close_frame(code, ""))
            }
            RemoveReason::Closed(code) => Some(close_frame(code, "")),
            RemoveReason::Shutdown => Some(close_frame(1001, "")),
        };
        c.phase = match frame {
            // Only a slow consumer loses its queue (what was not started), and its close
            // jumps ahead.
            Some(frame) if reason == RemoveReason::SlowConsumer => {
                c.drop_data(0, 0);
                c.push_control(frame);
                ModelPhase::Closing
            }
            Some(frame) => {
                c.push_data(frame);
                ModelPhase::Closing
            }
            None => ModelPhase::Abort,
        };
        c.removed += 1;
        self.removed.push((c.id, reason));
    }

    /// The audience picked by the input: `(authenticated only, except)`.
    fn audience(&mut self, r: &mut Reader<'_>) -> (bool, Option<ClientId>) {
        let kind = r.u8();
        let except = (kind & 0x02 != 0).then(|| match self.pick(r) {
            Some(i) if kind & 0x04 == 0 => self.clients[i].id,
            _ => ClientId::new(999, ShardId(0)),
        });
        (kind & 0x01 != 0, except)
    }

    /// One broadcast's frames: one, or a batch of 2 to 4.
    fn batch(&mut self, r: &mut Reader<'_>) -> Vec<Payload> {
        let batch = if r.u8() & 1 != 0 { 2 + r.u8() % 3 } else { 1 };
        (0..batch).map(|_| self.payload(r)).collect()
    }

    fn deliver(&mut self, payloads: &[Payload], audience: (bool, Option<ClientId>)) {
        let now = self.instant(self.now);
        self.state
            .deliver(payloads, Self::to_audience(audience), now);
        self.expect_deliver(payloads, audience);
    }

    fn deliver_groups(&mut self, groups: &[Vec<Payload>], audience: (bool, Option<ClientId>)) {
        let now = self.instant(self.now);
        self.state
            .deliver_groups(groups, Self::to_audience(audience), now);
        for payloads in groups {
            self.expect_deliver(payloads, audience);
        }
    }

    fn to_audience((authenticated, except): (bool, Option<ClientId>)) -> Audience {
        let mut audience = if authenticated {
            Audience::AUTHENTICATED
        } else {
            Audience::ALL
        };
        if let Some(id) = except {
            audience = audience.except(id);
        }
        audience
    }

    /// The model of delivering `payloads` to the audience.
    fn expect_deliver(
        &mut self,
        payloads: &[Payload],
        (authenticated, except): (bool, Option<ClientId>),
    ) {
        let mut evict = Vec::new();
        for i in self.by_slot() {
            let c = &self.clients[i];
            let admitted = (c.authenticated || !authenticated) && except != Some(c.id);
            if c.phase == ModelPhase::Open && admitted && !self.offer(i, payloads) {
                evict.push(i);
            }
        }
        for i in evict {
            self.close(i, RemoveReason::SlowConsumer);
        }
    }

    fn send(&mut self, id: ClientId, payload: Payload) {
        self.state.send(id, &payload, self.instant(self.now));
        let open = self
            .clients
            .iter()
            .position(|c| c.id == id && c.phase == ModelPhase::Open);
        if let Some(i) = open
            && !self.offer(i, std::slice::from_ref(&payload))
        {
            self.close(i, RemoveReason::SlowConsumer);
        }
    }

    /// The model of queueing `payloads` for client `i`; false: evict it.
    fn offer(&mut self, i: usize, payloads: &[Payload]) -> bool {
        let total: usize = payloads.iter().map(Payload::len).sum();
        let n = payloads.len() as u64;
        let charge = total + payloads.len() * FRAME_OVERHEAD_BYTES;
        let c = &mut self.clients[i];
        if c.charge() + charge > self.cap {
            match self.policy {
                SlowConsumerPolicy::Disconnect => return false,
                SlowConsumerPolicy::DropNewest => {
                    self.expected.frames_dropped += n;
                    return true;
                }
                SlowConsumerPolicy::DropOldest => {
                    if c.charge() - c.droppable() + charge > self.cap {
                        // It would not fit even in an emptied queue: only it is dropped.
                        self.expected.frames_dropped += n;
                        return true;
                    }
                    self.expected.frames_dropped += c.drop_data(charge, self.cap);
                }
            }
        }
        for p in payloads {
            c.push_data(p.frame().clone());
        }
        self.expected.deliveries += n;
        true
    }

    /// Writes at most `k` bytes of client `i`'s queue, as its connection task would.
    fn write(&mut self, i: usize, k: usize) {
        let c = &mut self.clients[i];
        let Some(slot) = c.slot else { return };
        if c.phase == ModelPhase::Abort {
            // The connection task drops an aborted client without writing.
            return;
        }
        self.wire.clear();
        let gathered = self
            .state
            .gather_into(slot, &mut self.buf, self.copy_max, &mut self.wire);
        if c.queued() == 0 {
            assert_eq!(gathered, 0, "gathered bytes from an empty queue");
            return;
        }
        assert!(
            gathered > 0,
            "nothing gathered from a queue of {}",
            c.queued()
        );
        assert!(
            c.starts_with(&self.wire),
            "client {i} would be written {:?}, expected {:?}",
            self.wire,
            c.queue
        );
        let n = k.min(gathered);
        self.state.wrote(slot, n);
        c.advance(n);
        c.blocked_since = None;
        self.expected.bytes_written += n as u64;
        self.expected.write_syscalls += 1;
    }

    /// Client `i`'s socket takes nothing: its connection task marks it blocked.
    fn stall(&mut self, i: usize) {
        let now = self.instant(self.now);
        let c = &mut self.clients[i];
        let Some(slot) = c.slot else { return };
        if c.phase == ModelPhase::Abort || c.queued() == 0 {
            return;
        }
        if let Some(client) = self.state.client(slot)
            && client.blocked_since.is_none()
        {
            client.blocked_since = Some(now);
        }
        c.blocked_since.get_or_insert(self.now);
    }

    /// A frame arrives from client `i` (a ping, if `ping`), as its connection task handles it.
    fn inbound(&mut self, i: usize, ping: Option<&[u8]>) {
        let now = self.instant(self.now);
        let c = &mut self.clients[i];
        let Some(slot) = c.slot else { return };
        if c.phase != ModelPhase::Open {
            return;
        }
        self.state.touch(slot, now);
        c.last_seen = self.now;
        c.pinged = false;
        if let Some(ping) = ping {
            self.state.pong(slot, ping);
            if c.control_frames() < PONGS_MAX {
                let mut pong = vec![0x8A, ping.len() as u8];
                pong.extend_from_slice(ping);
                c.push_control(Bytes::from(pong));
            }
        }
    }

    fn sweep(&mut self) {
        self.state.sweep(self.instant(self.now));
        let now = self.now;
        let mut doomed = Vec::new();
        for i in self.by_slot() {
            let c = &mut self.clients[i];
            let blocked = c
                .blocked_since
                .is_some_and(|t| now - t >= self.write_deadline);
            match c.phase {
                ModelPhase::Open if blocked => doomed.push((i, RemoveReason::WriteDeadline)),
                ModelPhase::Open if now - c.last_seen > self.heartbeat => {
                    doomed.push((i, RemoveReason::HeartbeatTimeout));
                }
                ModelPhase::Open
                    if !c.authenticated
                        && self
                            .auth_deadline
                            .is_some_and(|d| now - c.registered_at >= d) =>
                {
                    doomed.push((i, RemoveReason::AuthDeadline));
                }
                ModelPhase::Open
                    if !c.pinged
                        && c.control_frames() < PONGS_MAX
                        && self.ping_interval.is_some_and(|p| now - c.last_seen >= p) =>
                {
                    c.push_control(Bytes::from_static(&[0x89, 0x00]));
                    c.pinged = true;
                }
                ModelPhase::Closing if blocked => c.phase = ModelPhase::Abort,
                _ => {}
            }
        }
        for (i, reason) in doomed {
            self.close(i, reason);
        }
    }

    fn release(&mut self, i: usize) {
        let Some(slot) = self.clients[i].slot else {
            return;
        };
        self.state.release(slot);
        self.close(i, RemoveReason::Disconnected);
        self.clients[i].slot = None;
    }

    /// Compares the state with the model.
    fn check(&mut self) {
        let mut open = 0;
        let mut queued = 0;
        for c in &self.clients {
            open += u64::from(c.phase == ModelPhase::Open);
            let Some(slot) = c.slot else { continue };
            queued += c.queued() as u64;
            let blocked = c.blocked_since.map(|t| self.t0 + t);
            let client = self
                .state
                .client(slot)
                .expect("an unreleased client's slot");
            assert_eq!(
                format!("{:?}", client.phase),
                format!("{:?}", c.phase),
                "phase of {c:?}"
            );
            assert_eq!(client.out.bytes(), c.queued(), "queue of {c:?}");
            assert_eq!(client.out.frames(), c.queue.len(), "frames of {c:?}");
            assert_eq!(client.blocked_since, blocked, "blocked time of {c:?}");
        }
        let counters = &*self.counters;
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        assert_eq!(load(&counters.clients), open, "clients gauge");
        assert_eq!(load(&counters.queued_bytes), queued, "queued_bytes gauge");
        let actual = Expected {
            deliveries: load(&counters.deliveries),
            frames_dropped: load(&counters.frames_dropped),
            evicted_slow_consumer: load(&counters.evicted_slow_consumer),
            evicted_write_deadline: load(&counters.evicted_write_deadline),
            evicted_heartbeat: load(&counters.evicted_heartbeat),
            evicted_auth_deadline: load(&counters.evicted_auth_deadline),
            protocol_errors: load(&counters.protocol_errors),
            bytes_written: load(&counters.bytes_written),
            write_syscalls: load(&counters.write_syscalls),
        };
        assert_eq!(actual, self.expected, "counters");
        let mut removed = Vec::new();
        self.state.take_removed(&mut removed);
        removed.sort_by_key(|&(id, _)| id);
        self.removed.sort_by_key(|&(id, _)| id);
        assert_eq!(removed, self.removed, "removed events");
        self.removed.clear();
    }

    /// Drains every queue that can still be written, releases everyone, checks the totals.
    fn finish(&mut self) {
        for i in 0..self.clients.len() {
            while self.clients[i].slot.is_some()
                && self.clients[i].phase != ModelPhase::Abort
                && self.clients[i].queued() > 0
            {
                self.write(i, usize::MAX);
            }
        }
        self.check();
        for i in 0..self.clients.len() {
            self.release(i);
        }
        self.check();
        assert_eq!(self.counters.clients.load(Relaxed), 0);
        assert_eq!(self.counters.queued_bytes.load(Relaxed), 0);
        for c in &self.clients {
            assert_eq!(c.removed, 1, "removed events of {:?}", c.id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seed replay
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `target` on every file in `fuzz/seeds/<name>/`; fails if there is none.
    fn replay(name: &str, target: fn(&[u8])) {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds")).join(name);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "no seeds in {}", dir.display());
        let failed: Vec<String> = paths
            .iter()
            .filter(|path| {
                let data = std::fs::read(path).expect("seed file");
                std::panic::catch_unwind(|| target(&data)).is_err()
            })
            .map(|path| path.display().to_string())
            .collect();
        assert!(failed.is_empty(), "seeds failed: {failed:#?}");
    }

    #[test]
    fn client_frames_seeds_pass() {
        replay("client_frames", super::client_frames);
    }

    #[test]
    fn server_frames_seeds_pass() {
        replay("server_frames", super::server_frames);
    }

    #[test]
    fn batch_envelope_seeds_pass() {
        replay("batch_envelope", super::batch_envelope);
    }

    #[test]
    fn handshake_seeds_pass() {
        replay("handshake", super::handshake);
    }

    #[test]
    fn shard_ops_seeds_pass() {
        replay("shard_ops", super::shard_ops);
    }
}
