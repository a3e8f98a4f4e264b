//! The `client_frames` target: client bytes through our parser and through tungstenite.

use std::ops::ControlFlow;

use tungstenite::protocol::Role;

use super::oracle::{Class, Expect, Msg, TheirEnd, tungstenite_control, tungstenite_reads};
use super::reader::Reader;
use crate::wire::frame::{self, CONTROL_PAYLOAD_MAX};
use crate::wire::{Inbound, Limits, Opcode, ParseError, Parser};

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
    // A masked Close carrying just `code`, with a zero mask.
    let mut close = Vec::new();
    frame::put_masked(&mut close, Opcode::Close, &code.to_be_bytes(), [0; 4]);
    Parser::new(Limits::default())
        .feed(&mut close, |_| ControlFlow::Continue(()))
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
