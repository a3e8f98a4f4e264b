//! The `server_frames` target: our server frames, read back by tungstenite as a client.

use tungstenite::protocol::Role;

use super::oracle::{Class, Expect, Msg, TheirEnd, tungstenite_control, tungstenite_reads};
use super::reader::Reader;
use crate::Payload;
use crate::wire::Opcode;
use crate::wire::frame::{self, CONTROL_PAYLOAD_MAX};

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
