//! Messages as both sides see them, and tungstenite's reading of a stream: the oracle of the
//! `client_frames` and `server_frames` targets.

use std::io::{self, Cursor, Read, Write};

use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

use crate::wire::frame::CONTROL_PAYLOAD_MAX;
use crate::wire::{Inbound, Limits, ParseError};

mod msg;
pub(super) use msg::Msg;

/// The kind of a rejection, the level at which ours and tungstenite's errors are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
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
            // Close 1007 both; `Compression` needs an inflater, which the oracle never gives.
            ParseError::InvalidUtf8 | ParseError::Compression => Class::Utf8,
            ParseError::TooBig => Class::TooBig,
        }
    }
}

/// How tungstenite's reading ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TheirEnd {
    /// The input ran out (`ResetWithoutClosingHandshake`): nothing wrong in what was complete.
    Eof,
    /// It read a Close (the last message).
    Closed,
    /// It rejected the input.
    Failed(Class),
}

/// What tungstenite makes of one frame, when that can be said from the frame alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Expect {
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
pub(super) fn tungstenite_reads(
    stream: &[u8],
    role: Role,
    limits: Option<Limits>,
) -> (Vec<Msg>, TheirEnd) {
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
pub(super) fn tungstenite_control(opcode: u8, payload: &[u8]) -> Option<Expect> {
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
