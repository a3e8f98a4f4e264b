//! `Payload`: one complete, pre-encoded server frame, built once per broadcast.
//!
//! # Invariants
//!
//! `frame` is exactly one final (FIN), unmasked WebSocket frame: header, then `frame.len() -
//! header_len` payload bytes. Server frames are never masked, so the same bytes are correct for
//! every recipient: a shard delivers a `Payload` by cloning the `Bytes` (a refcount), never by
//! copying it.
//!
//! `deflated`, when present, holds the same message compressed (permessage-deflate), one
//! complete frame per window size, each made once and shared like the plain frame. A variant
//! made with a window of `w` bits suits every client that negotiated `w` bits or more.

use crate::compression::Compression;
use crate::wire::Opcode;
use crate::wire::deflate::Deflater;
use crate::wire::frame;
use bytes::Bytes;
use smallvec::SmallVec;
use std::cell::RefCell;
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
#[derive(Clone, Debug)]
pub struct Payload {
    /// The whole frame, shared by every queue it is delivered to.
    frame: Frame,
    /// The compressed frames, by window bits (see the module docs); `None` until compressed.
    deflated: Option<Arc<Deflated>>,
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
            deflated: None,
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
            deflated: None,
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

    /// The frame for a client that negotiated windows of `bits` (0: no permessage-deflate):
    /// the compressed variant with the largest window within `bits`, or the plain frame.
    pub(crate) fn frame_for(&self, bits: u8) -> &Frame {
        if bits == 0 {
            return &self.frame;
        }
        self.deflated
            .as_deref()
            .and_then(|variants| {
                variants
                    .iter()
                    .filter(|(w, _)| *w <= bits)
                    .max_by_key(|(w, _)| *w)
            })
            .map_or(&self.frame, |(_, f)| f)
    }

    /// Whether it has a compressed frame.
    pub(crate) fn is_deflated(&self) -> bool {
        self.deflated.is_some()
    }

    /// The compressed frame made for `bits`-bit windows, if there is one (it is smaller than
    /// the plain frame).
    ///
    /// ```
    /// # use shardcast::{Compression, Payload};
    /// let json = format!("[{}]", (0..100).map(|i| format!("{{\"n\":{i}}}")).collect::<Vec<_>>().join(","));
    /// let mut p = Payload::text(&json);
    /// assert!(p.deflated(15).is_none());
    /// p.compress(&[15], &Compression::default());
    /// assert!(p.deflated(15).unwrap().len() < p.len() / 3);
    /// ```
    pub fn deflated(&self, bits: u8) -> Option<&Bytes> {
        let variants = self.deflated.as_deref()?;
        variants.iter().find(|(w, _)| *w == bits).map(|(_, f)| &**f)
    }

    /// Compresses the message once for each window size in `windows` (9-15) that it has no
    /// frame for, as `compression` says: nothing for control frames, for messages under
    /// `min_bytes`, or when compression is off; a variant is kept only if it is smaller than
    /// the plain frame. The engine calls this where a broadcast is published, for the windows
    /// its clients negotiated; an embedder may call it ahead (for a payload it sends many
    /// times), and the engine then finds the work done. Returns the number of compressions run
    /// (a variant that would not be smaller is compressed, then not kept).
    pub fn compress(&mut self, windows: &[u8], compression: &Compression) -> usize {
        let mut runs = 0;
        if !compression.enabled
            || self.opcode.is_control()
            || self.body().len() < compression.min_bytes
        {
            return runs;
        }
        for &bits in windows {
            if self.deflated(bits).is_some() {
                continue;
            }
            let made = DEFLATERS.with(|cache| {
                let mut cache = cache.borrow_mut();
                let at = match cache
                    .iter()
                    .position(|(l, w, _)| *l == compression.level && *w == bits)
                {
                    Some(at) => at,
                    None => {
                        cache.push((
                            compression.level,
                            bits,
                            Deflater::new(compression.level, bits),
                        ));
                        cache.len() - 1
                    }
                };
                let (_, _, deflater) = &mut cache[at];
                deflater.frame(self.opcode, self.body())
            });
            runs += 1;
            if let Some(frame) = made {
                let mut variants = self.deflated.as_deref().cloned().unwrap_or_default();
                variants.push((bits, Arc::new(frame)));
                self.deflated = Some(Arc::new(variants));
            }
        }
        runs
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

impl PartialEq for Payload {
    /// The same message: the same plain frame (its compressed variants follow from it).
    fn eq(&self, other: &Payload) -> bool {
        self.frame == other.frame
    }
}

impl Eq for Payload {}

/// The compressed frames of one message, by window bits: one in practice (every browser
/// negotiates 15 bits).
type Deflated = SmallVec<[(u8, Frame); 1]>;

thread_local! {
    /// This thread's compressors, by (level, window bits): one in practice. Each holds zlib's
    /// state for its window (about 256 KiB at 15 bits), for as long as the thread lives.
    static DEFLATERS: RefCell<Vec<(u32, u8, Deflater)>> = const { RefCell::new(Vec::new()) };
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
