//! Server-side (unmasked, final) WebSocket frame encoder.
//!
//! # Invariants
//!
//! - Every frame built here has FIN set, RSV bits clear and no mask (RFC 6455 5.1: servers
//!   never mask), and uses the shortest length encoding.
//! - [`encode`] and [`encode_close`] allocate exactly once, with the exact final size.

use bytes::{BufMut, Bytes, BytesMut};

/// A WebSocket frame opcode (RFC 6455 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Continuation of a fragmented data message.
    Continuation = 0x0,
    /// UTF-8 text data.
    Text = 0x1,
    /// Binary data.
    Binary = 0x2,
    /// Connection close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

impl Opcode {
    /// The opcode with wire value `v`, or `None` when `v` is reserved or out of range.
    ///
    /// ```
    /// use shardcast::wire::Opcode;
    /// assert_eq!(Opcode::from_u8(0x1), Some(Opcode::Text));
    /// assert_eq!(Opcode::from_u8(0x3), None);
    /// ```
    pub fn from_u8(v: u8) -> Option<Opcode> {
        match v {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// Whether this is a control opcode (Close, Ping, Pong).
    ///
    /// ```
    /// use shardcast::wire::Opcode;
    /// assert!(Opcode::Ping.is_control());
    /// assert!(!Opcode::Binary.is_control());
    /// ```
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Longest possible server frame header (2 + 8 bytes).
pub const HEADER_LEN_MAX: usize = 10;

/// Largest control frame payload (RFC 6455 5.5).
pub const CONTROL_PAYLOAD_MAX: usize = 125;

/// Header length for a payload of `payload_len` bytes.
///
/// ```
/// use shardcast::wire::frame::header_len;
/// assert_eq!(header_len(125), 2);
/// assert_eq!(header_len(126), 4);
/// assert_eq!(header_len(65536), 10);
/// ```
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => HEADER_LEN_MAX,
    }
}

/// Reads the length fields of an unmasked frame starting at `bytes[0]`: the header length (2, 4
/// or 10) and the payload length. `None` until the whole header is there.
///
/// ```
/// use shardcast::wire::frame::lengths;
/// assert_eq!(lengths(b"\x82\x05hello"), Some((2, 5)));
/// assert_eq!(lengths(&[0x82, 126, 0x01, 0x2C]), Some((4, 300)));
/// assert_eq!(lengths(&[0x82, 127, 0, 0]), None);
/// ```
pub fn lengths(bytes: &[u8]) -> Option<(usize, u64)> {
    match *bytes.get(1)? & 0x7f {
        126 => {
            let b: [u8; 2] = bytes.get(2..4)?.try_into().ok()?;
            Some((4, u64::from(u16::from_be_bytes(b))))
        }
        127 => {
            let b: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            Some((HEADER_LEN_MAX, u64::from_be_bytes(b)))
        }
        n => Some((2, u64::from(n))),
    }
}

/// Appends the header of a final (FIN), unmasked frame to `out`.
///
/// ```
/// use bytes::BytesMut;
/// use shardcast::wire::{frame, Opcode};
/// let mut out = BytesMut::new();
/// frame::put_header(&mut out, Opcode::Binary, 300);
/// assert_eq!(&out[..], &[0x82, 126, 0x01, 0x2C]);
/// ```
pub fn put_header(out: &mut BytesMut, opcode: Opcode, payload_len: usize) {
    let first = 0x80 | opcode as u8;
    match payload_len {
        // The casts cannot truncate: each arm bounds `payload_len`.
        0..=125 => out.put_slice(&[first, payload_len as u8]),
        126..=0xFFFF => {
            out.put_slice(&[first, 126]);
            out.put_u16(payload_len as u16);
        }
        _ => {
            out.put_slice(&[first, 127]);
            out.put_u64(payload_len as u64);
        }
    }
}

/// A complete final unmasked frame (header + payload) in one allocation.
///
/// ```
/// use shardcast::wire::{frame, Opcode};
/// assert_eq!(&frame::encode(Opcode::Text, b"hi")[..], b"\x81\x02hi");
/// ```
pub fn encode(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A complete Close frame with `code` and `reason` (reason truncated on a char boundary to fit
/// the 125-byte control payload limit).
///
/// ```
/// use shardcast::wire::frame;
/// assert_eq!(&frame::encode_close(1000, "bye")[..], b"\x88\x05\x03\xE8bye");
/// ```
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(CONTROL_PAYLOAD_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.as_bytes().get(..end).unwrap_or_default();
    let mut out = BytesMut::with_capacity(2 + 2 + reason.len());
    put_header(&mut out, Opcode::Close, 2 + reason.len());
    out.put_u16(code);
    out.put_slice(reason);
    out.freeze()
}
