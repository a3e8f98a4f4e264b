//! `Payload`: one complete, pre-encoded server frame, built once per broadcast.
//!
//! # Invariants
//!
//! `frame` is exactly one final (FIN), unmasked WebSocket frame: header, then `frame.len() -
//! header_len` payload bytes. Server frames are never masked, so the same bytes are correct for
//! every recipient: a shard delivers a `Payload` by cloning the `Bytes` (a refcount), never by
//! copying it.

use crate::wire::Opcode;
use crate::wire::frame;
use bytes::Bytes;
use std::sync::Arc;

/// A queued data frame: one pointer (a `Bytes` is four), because under load every client holds
/// a window of them. Cloned per recipient by refcount, like the `Bytes` inside.
pub(crate) type Frame = Arc<Bytes>;

/// A complete WebSocket frame (header and body in one [`Bytes`]), ready to go to any number of
/// clients. Cloning is a refcount increment.
///
/// ```
/// # use shardcast::Payload;
/// let p = Payload::text("hello");
/// assert_eq!(p.body(), b"hello");
/// assert_eq!(p.frame().len(), 2 + 5); // 2-byte header
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The whole frame, shared by every queue it is delivered to.
    frame: Frame,
    /// Length of the frame header (2, 4 or 10).
    header_len: u8,
    /// The frame's opcode.
    opcode: Opcode,
}

impl Payload {
    /// A text frame carrying `text`.
    pub fn text(text: impl AsRef<str>) -> Payload {
        Self::encode(Opcode::Text, text.as_ref().as_bytes())
    }

    /// A binary frame carrying `body`.
    pub fn binary(body: impl AsRef<[u8]>) -> Payload {
        Self::encode(Opcode::Binary, body.as_ref())
    }

    /// A frame of `opcode` carrying `body`, encoded once.
    pub(crate) fn encode(opcode: Opcode, body: &[u8]) -> Payload {
        let frame = frame::encode(opcode, body);
        Payload {
            frame: Arc::new(frame),
            header_len: frame::header_len(body.len()) as u8,
            opcode,
        }
    }

    /// Wraps bytes that already hold one complete server frame, without copying them (for
    /// frames built elsewhere, or payloads whose owner must observe when the last copy is
    /// dropped, via [`Bytes::from_owner`]).
    ///
    /// # Errors
    ///
    /// [`PayloadError::NotAFrame`] unless `frame` is exactly one final, unmasked text, binary,
    /// ping, pong or close frame with a valid length encoding.
    ///
    /// ```
    /// # use shardcast::{Payload, wire::{frame, Opcode}};
    /// let p = Payload::from_frame(frame::encode(Opcode::Binary, b"\x01\x02")).unwrap();
    /// assert_eq!(p.body(), b"\x01\x02");
    /// assert!(Payload::from_frame(bytes::Bytes::from_static(b"\x82")).is_err());
    /// ```
    pub fn from_frame(frame: Bytes) -> Result<Payload, PayloadError> {
        let [b0, b1] = match frame.get(..2) {
            Some(&[b0, b1]) => [b0, b1],
            _ => return Err(PayloadError::NotAFrame("shorter than a header")),
        };
        if b0 & 0x80 == 0 {
            return Err(PayloadError::NotAFrame("not final"));
        }
        if b0 & 0x70 != 0 {
            return Err(PayloadError::NotAFrame("reserved bits set"));
        }
        let opcode = match Opcode::from_u8(b0 & 0x0f) {
            Some(Opcode::Continuation) | None => {
                return Err(PayloadError::NotAFrame("bad opcode"));
            }
            Some(op) => op,
        };
        if b1 & 0x80 != 0 {
            return Err(PayloadError::NotAFrame("masked"));
        }
        let Some((header_len, len)) = frame::lengths(&frame) else {
            return Err(PayloadError::NotAFrame("truncated length"));
        };
        if frame.len() as u64 != header_len as u64 + len {
            return Err(PayloadError::NotAFrame("length does not match"));
        }
        if opcode.is_control() && len > 125 {
            return Err(PayloadError::NotAFrame("control frame over 125 bytes"));
        }
        Ok(Payload {
            frame: Arc::new(frame),
            // At most HEADER_LEN_MAX (10).
            header_len: header_len as u8,
            opcode,
        })
    }

    /// The complete frame, as written to sockets.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The frame as clients' queues hold it.
    pub(crate) fn shared_frame(&self) -> &Frame {
        &self.frame
    }

    /// The message body (the frame without its header).
    pub fn body(&self) -> &[u8] {
        self.frame
            .get(usize::from(self.header_len)..)
            .unwrap_or_default()
    }

    /// The frame's opcode.
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// Bytes the frame occupies in a client's queue.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether the frame is empty (never: a frame has at least a 2-byte header).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }
}

/// [`crate::Payload::from_frame`] was given bytes that are not one complete server frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The bytes are not exactly one final, unmasked frame with a valid opcode; build the frame
    /// with [`crate::wire::frame::encode`].
    #[error("not a complete server frame: {0}")]
    NotAFrame(&'static str),
}

/// The payloads of one broadcast: one, or the frames of a batch, in order (inline when one).
pub(crate) type Payloads = smallvec::SmallVec<[Payload; 1]>;
