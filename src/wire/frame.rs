//! WebSocket frame encoders: server frames (unmasked, final), and client frames (masked).
//!
//! The server encoders build what the engine sends. The client encoders build what a client
//! sends, for load generators, tests and fuzzing; the engine itself never sends a masked frame.
//!
//! # Invariants
//!
//! - Every server frame built here ([`put_header`], [`encode`], [`encode_close`]) has FIN set,
//!   RSV bits clear and no mask (RFC 6455 5.1: servers never mask).
//! - Every frame [`put_masked`] builds is final, has RSV bits clear and is masked with the key
//!   it is given (RFC 6455 5.3: clients always mask). [`put_raw`] checks nothing: it writes the
//!   first byte and the mask it is given, so that tests can break the rules on purpose.
//! - Every frame uses the shortest length encoding.
//! - [`encode`] and [`encode_close`] allocate exactly once, with the exact final size;
//!   [`put_masked`] and [`put_raw`] reserve once, so a reused `Vec` that has room is not
//!   reallocated.

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

/// The RSV1 bit of a frame's first byte: set on the first frame of a compressed message
/// (permessage-deflate, RFC 7692 6), clear everywhere else.
pub const RSV1: u8 = 0x40;

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
    let (header, len) = header(0x80 | opcode as u8, false, payload_len);
    out.put_slice(&header[..len]);
}

/// The header of a frame whose first byte is `first` (as given), with the MASK bit set if
/// `masked`, and the shortest length encoding of `payload_len`: the bytes, and how many of
/// them are the header (2, 4 or 10). The masking key, if any, is not included.
fn header(first: u8, masked: bool, payload_len: usize) -> ([u8; HEADER_LEN_MAX], usize) {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut header = [0; HEADER_LEN_MAX];
    header[0] = first;
    // The casts cannot truncate: each arm bounds `payload_len`.
    let len = match payload_len {
        0..=125 => {
            header[1] = mask_bit | payload_len as u8;
            2
        }
        126..=0xFFFF => {
            header[1] = mask_bit | 126;
            header[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            header[1] = mask_bit | 127;
            header[2..].copy_from_slice(&(payload_len as u64).to_be_bytes());
            HEADER_LEN_MAX
        }
    };
    (header, len)
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

/// Appends a final frame of `opcode` carrying `payload`, masked with `mask`, as a client sends
/// it (RFC 6455 5.2, 5.3): FIN set, RSV bits clear, the shortest length encoding.
///
/// It reserves room once, so a `Vec` reused across frames is not reallocated once it has grown
/// to the largest frame. Nothing is checked: a control payload over 125 bytes is encoded as
/// given (the receiver rejects it).
///
/// ```
/// use std::ops::ControlFlow;
/// use shardcast::wire::{Inbound, Limits, Opcode, Parser, frame};
///
/// // The masked "Hello" of RFC 6455 5.7.
/// let mut out = Vec::new();
/// frame::put_masked(&mut out, Opcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
/// assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
///
/// // Our parser (the server side) reads it back.
/// let mut text = String::new();
/// let read = Parser::new(Limits::default()).feed(&mut out, |message| {
///     if let Inbound::Text(t) = message {
///         text.push_str(t);
///     }
///     ControlFlow::Continue(())
/// });
/// assert_eq!(read, Ok(11));
/// assert_eq!(text, "Hello");
/// ```
pub fn put_masked(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    put_raw(out, 0x80 | opcode as u8, payload, Some(mask));
}

/// Appends a frame built exactly as asked, whether or not a peer may send it: `first` as its
/// first byte (FIN, RSV1-3 and the opcode bits, unchecked), then the MASK bit and the masking
/// key if `mask` is `Some` (the payload masked with it), and the shortest length encoding.
///
/// It is for frames no valid client sends, built on purpose to test a receiver: reserved bits
/// or opcodes, a fragmented control frame, an unmasked frame. A valid client frame is
/// [`put_masked`]'s.
///
/// ```
/// use shardcast::wire::frame;
///
/// let mut out = Vec::new();
/// // A final text frame with RSV1 set, unmasked: two rules broken.
/// frame::put_raw(&mut out, 0x80 | 0x40 | 0x1, b"hi", None);
/// assert_eq!(out, [0xC1, 0x02, b'h', b'i']);
///
/// // A non-final ping (control frames must not be fragmented), masked with zeros.
/// out.clear();
/// frame::put_raw(&mut out, 0x09, b"p", Some([0; 4]));
/// assert_eq!(out, [0x09, 0x81, 0, 0, 0, 0, b'p']);
/// ```
pub fn put_raw(out: &mut Vec<u8>, first: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let (header, len) = header(first, mask.is_some(), payload.len());
    let key_len = if mask.is_some() { 4 } else { 0 };
    out.reserve(len + key_len + payload.len());
    out.extend_from_slice(&header[..len]);
    let Some(mask) = mask else {
        out.extend_from_slice(payload);
        return;
    };
    out.extend_from_slice(&mask);
    // RFC 6455 5.3: byte i of the payload is XORed with byte i mod 4 of the key. One pass,
    // from an iterator of known length: no second walk over the payload, no growth check per
    // byte.
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}
