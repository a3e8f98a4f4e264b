//! Incremental parser for masked client frames.
//!
//! The shard reads every socket into one reused scratch buffer and hands it to
//! [`Parser::feed`]; the parser unmasks it in place and hands complete messages back as
//! slices of it. Only what a read cut in two stays behind, inside the parser.
//!
//! # Invariants
//!
//! - A complete, unfragmented frame found whole in `input` is delivered as a slice of
//!   `input`: no copy, no allocation.
//! - Between calls the parser holds at most a partial header (≤ 14 bytes, inline) and, in
//!   `buf`, the open fragmented message followed by the payload received so far of the frame
//!   cut by the end of the last input. `buf`'s length and capacity are bounded by
//!   `message_bytes_max` plus one control frame (125 bytes): every length is checked against
//!   the limits when its header is read, before any of its payload is stored, and `buf` never
//!   grows past that sum.
//! - `buf` grows with what arrived, not with what a header announced: a growth leaves it at
//!   most twice the bytes it then holds. Nor does it grow past the end of a frame after which
//!   it is emptied (the final frame of a message, a control frame outside one), so a message
//!   cut by reads costs at most its own length; inside a fragmented message it doubles, up to
//!   the bound, so that many small fragments cost linear copying, not quadratic.
//! - When no frame is in progress (`Stage::Header`), `buf` holds exactly the open
//!   fragmented message (empty when none).
//! - Text is validated as it arrives ("fail fast"): the call that receives a byte making a
//!   text message or fragment invalid UTF-8 returns [`ParseError::InvalidUtf8`].
//! - Every error poisons the parser: later calls return the same error.
//!
//! # Shutdown
//!
//! A Close frame ends the stream. [`Parser::feed`] returns right after delivering it, as if
//! the callback had returned `Break`, and every later call discards its input: the peer may
//! send nothing after Close (RFC 6455 5.5.1). The caller answers the Close and stops reading.

use std::ops::ControlFlow;
use std::str;

use super::deflate::{InflateError, Inflater};
use super::frame::{CONTROL_PAYLOAD_MAX, Opcode, RSV1};
use super::utf8::Utf8;

/// Size limits the parser enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest single frame payload accepted.
    pub frame_bytes_max: usize,
    /// Largest reassembled message accepted.
    pub message_bytes_max: usize,
}

impl Default for Limits {
    /// 64 KiB for both.
    fn default() -> Limits {
        Limits {
            frame_bytes_max: 64 * 1024,
            message_bytes_max: 64 * 1024,
        }
    }
}

/// One complete thing the peer said.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A complete text message (reassembled if it was fragmented).
    Text(&'a str),
    /// A complete binary message (reassembled if it was fragmented).
    Binary(&'a [u8]),
    /// A Ping frame with its payload; answer with a Pong carrying the same payload.
    Ping(&'a [u8]),
    /// A Pong frame with its payload.
    Pong(&'a [u8]),
    /// A Close frame; `code` None when the frame had no payload.
    Close {
        /// The status code, if the frame had a payload; always a valid code.
        code: Option<u16>,
        /// The UTF-8 reason (empty when absent).
        reason: &'a str,
    },
}

/// Why the peer's bytes were rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Framing rule broken: unmasked frame, reserved bits, unknown opcode, fragmented control
    /// frame, control payload over 125 bytes, continuation without start, new data frame
    /// while a fragmented message is open, close payload of 1 byte, invalid close code, 64-bit
    /// length with top bit set. Close with 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Text message or close reason not valid UTF-8. Close with 1007.
    #[error("invalid utf-8")]
    InvalidUtf8,
    /// Frame or message over its limit (a compressed message: inflated). Close with 1009.
    #[error("message too big")]
    TooBig,
    /// A compressed message that does not inflate (permessage-deflate). Close with 1007.
    #[error("invalid compressed data")]
    Compression,
}

impl ParseError {
    /// The close code to send for this error: 1002, 1007 or 1009.
    ///
    /// ```
    /// use shardcast::wire::ParseError;
    /// assert_eq!(ParseError::TooBig.close_code(), 1009);
    /// ```
    pub fn close_code(self) -> u16 {
        match self {
            ParseError::Protocol(_) => 1002,
            ParseError::InvalidUtf8 | ParseError::Compression => 1007,
            ParseError::TooBig => 1009,
        }
    }
}

/// A parse error in one byte, so that the poisoned state stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Fault {
    /// The frame's MASK bit is clear.
    Unmasked = 1,
    /// RSV2 or RSV3 set; RSV1 without permessage-deflate, or on a control frame or a
    /// continuation.
    Reserved,
    /// Opcode 3-7 or B-F.
    UnknownOpcode,
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame with a payload over 125 bytes.
    LongControl,
    /// A continuation frame with no fragmented message open.
    StrayContinuation,
    /// A Text or Binary frame while a fragmented message is open.
    InterleavedData,
    /// A Close payload of exactly one byte.
    ShortClose,
    /// A Close code that may not be sent on the wire.
    CloseCode,
    /// A 64-bit payload length with its most significant bit set.
    LengthTopBit,
    /// Invalid UTF-8 in a text message or close reason.
    Utf8,
    /// A frame or message over its limit.
    TooBig,
    /// A compressed message that does not inflate.
    Corrupt,
}

impl Fault {
    /// The public error for this fault.
    fn error(self) -> ParseError {
        let reason = match self {
            Fault::Unmasked => "unmasked client frame",
            Fault::Reserved => "reserved bits set",
            Fault::UnknownOpcode => "unknown opcode",
            Fault::FragmentedControl => "fragmented control frame",
            Fault::LongControl => "control frame payload over 125 bytes",
            Fault::StrayContinuation => "continuation frame without a started message",
            Fault::InterleavedData => "new data frame while a fragmented message is open",
            Fault::ShortClose => "close payload of 1 byte",
            Fault::CloseCode => "invalid close code",
            Fault::LengthTopBit => "64-bit payload length with the top bit set",
            Fault::Utf8 => return ParseError::InvalidUtf8,
            Fault::TooBig => return ParseError::TooBig,
            Fault::Corrupt => return ParseError::Compression,
        };
        ParseError::Protocol(reason)
    }
}

/// Whether the stream can still be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Parsing.
    Open,
    /// A Close frame was delivered; later input is discarded.
    Closed,
    /// The peer broke the protocol; later calls return this error.
    Failed(Fault),
}

/// Where the parser is inside the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Reading a header; `bytes[..len]` arrived in earlier calls (`len == 0`: idle).
    Header {
        /// Header bytes received so far: 0..=13.
        len: u8,
        /// The received header bytes (a header is at most 2 + 8 + 4 bytes).
        bytes: [u8; 14],
    },
    /// Reading a payload whose start has been appended to `buf`.
    Payload {
        /// Payload bytes still to come: ≥ 1, ≤ `frame_bytes_max`.
        remaining: usize,
        /// The mask, rotated so that `mask[0]` applies to the next byte.
        mask: [u8; 4],
        /// The frame's opcode.
        opcode: Opcode,
        /// The frame's FIN bit.
        fin: bool,
        /// For a control frame, its whole payload length (≤ 125), so it can be found at the
        /// end of `buf`, after the open message; 0 for data frames.
        control_len: u8,
    },
}

impl Stage {
    /// No frame in progress.
    const IDLE: Stage = Stage::Header {
        len: 0,
        bytes: [0; 14],
    };
}

/// A frame header, parsed and checked.
#[derive(Clone, Copy, Debug)]
struct Header {
    /// The frame's opcode.
    opcode: Opcode,
    /// The frame's FIN bit.
    fin: bool,
    /// Payload length, already checked against the limits.
    len: usize,
    /// The masking key.
    mask: [u8; 4],
    /// RSV1: the first frame of a compressed message.
    compressed: bool,
}

/// Incremental parser for one connection's inbound frames.
///
/// ```
/// use std::ops::ControlFlow;
/// use shardcast::wire::{Inbound, Limits, Parser};
///
/// let mut parser = Parser::new(Limits::default());
/// // A masked "Hi" text frame (mask 1, 2, 3, 4), delivered in two reads.
/// let mut frame = [0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2];
/// let (first, second) = frame.split_at_mut(5);
/// let mut got = Vec::new();
/// let mut on = |m: Inbound<'_>| {
///     got.push(format!("{m:?}"));
///     ControlFlow::Continue(())
/// };
/// assert_eq!(parser.feed(first, &mut on), Ok(5));
/// assert_eq!(parser.feed(second, &mut on), Ok(3));
/// assert_eq!(got, [r#"Text("Hi")"#]);
/// ```
#[derive(Debug)]
pub struct Parser {
    /// The open fragmented message, then the partial payload of the current frame; empty
    /// and unallocated until a read cuts a frame or a message is fragmented.
    buf: Vec<u8>,
    /// The limits enforced; fixed at construction.
    limits: Limits,
    /// Progress through the current frame.
    stage: Stage,
    /// UTF-8 state of the text being received in pieces (carry of ≤ 3 bytes).
    utf8: Utf8,
    /// Opcode (Text or Binary) of the open fragmented message, if any.
    open: Option<Opcode>,
    /// Whether the message being received (the open one, or the frame in progress) is
    /// compressed: its text is checked once inflated, not as it arrives.
    compressed: bool,
    /// Open, closed or poisoned.
    status: Status,
}

impl Parser {
    /// A parser enforcing `limits`. Allocates nothing.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            buf: Vec::new(),
            limits,
            stage: Stage::IDLE,
            utf8: Utf8::default(),
            open: None,
            compressed: false,
            status: Status::Open,
        }
    }

    /// Parses masked client bytes. `input` is unmasked in place (it is the caller's scratch
    /// read buffer).
    ///
    /// Calls `on` for each complete message: data messages reassembled across fragments;
    /// control frames, which may arrive between fragments, delivered as they complete.
    ///
    /// If `on` returns `ControlFlow::Break(())`, parsing stops right after that frame and
    /// `feed` returns `Ok(n)`, where `n` is the number of bytes of `input` consumed so far;
    /// `input[n..]` is untouched and must be fed again later. Otherwise returns
    /// `Ok(input.len())`: a frame or message cut at the end of `input` is kept inside the
    /// parser and completed by later calls.
    ///
    /// After a Close frame is delivered, `feed` returns at once (as on `Break`) and every
    /// later call consumes and discards its whole input: answer the Close and stop reading.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when the peer broke the protocol; close the connection with
    /// [`ParseError::close_code`]. The parser is then poisoned: every later call returns the
    /// same error.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        on: impl FnMut(Inbound<'_>) -> ControlFlow<()>,
    ) -> Result<usize, ParseError> {
        self.feed_with(input, None, on)
    }

    /// [`Parser::feed`] for a connection that negotiated permessage-deflate: a data message
    /// whose first frame has RSV1 set is compressed, and is delivered inflated by `inflater`
    /// (a shard's, shared by its connections: nothing of a message stays in it between calls),
    /// its inflated size bounded by `message_bytes_max` as it inflates (the compressed size
    /// is bounded by it too, as any message). With `None`, RSV1 is refused as `feed` refuses it.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use shardcast::wire::deflate::{Deflater, Inflater};
    /// use shardcast::wire::{Inbound, Limits, Parser, frame};
    ///
    /// let text = "compressible ".repeat(20);
    /// let body = Deflater::new(6, 15).compress(text.as_bytes()).to_vec();
    /// // A client's frame: FIN, RSV1, text; masked with a zero key.
    /// let mut wire = vec![0x80 | frame::RSV1 | 0x1, 0x80 | body.len() as u8, 0, 0, 0, 0];
    /// wire.extend_from_slice(&body);
    ///
    /// let mut inflater = Inflater::new();
    /// let mut got = String::new();
    /// Parser::new(Limits::default()).feed_with(&mut wire, Some(&mut inflater), |m| {
    ///     if let Inbound::Text(t) = m {
    ///         got.push_str(t);
    ///     }
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(got, text);
    /// # Ok::<(), shardcast::wire::ParseError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Parser::feed`]; also [`ParseError::Compression`] for a message that does not
    /// inflate, and [`ParseError::TooBig`] for one that inflates past the limit.
    pub fn feed_with(
        &mut self,
        input: &mut [u8],
        mut inflater: Option<&mut Inflater>,
        mut on: impl FnMut(Inbound<'_>) -> ControlFlow<()>,
    ) -> Result<usize, ParseError> {
        match self.status {
            Status::Open => {}
            Status::Closed => return Ok(input.len()),
            Status::Failed(fault) => return Err(fault.error()),
        }
        match self.run(input, &mut inflater, &mut on) {
            Ok(n) => Ok(n),
            Err(fault) => {
                self.status = Status::Failed(fault);
                self.stage = Stage::IDLE;
                self.buf = Vec::new();
                Err(fault.error())
            }
        }
    }

    /// Bytes held between calls (partial frame / partial message); 0 when idle.
    pub fn buffered_bytes(&self) -> usize {
        let header = match self.stage {
            Stage::Header { len, .. } => usize::from(len),
            Stage::Payload { .. } => 0,
        };
        self.buf.len() + header
    }

    /// Heap capacity of the internal buffers (memory held per connection beyond
    /// `size_of::<Parser>()`).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Frees the internal reassembly buffer when idle (call after bursts). Does nothing while
    /// a fragmented message or a cut frame is held.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// The body of [`Parser::feed`]; any error it returns poisons the parser.
    fn run(
        &mut self,
        input: &mut [u8],
        inflater: &mut Option<&mut Inflater>,
        on: &mut impl FnMut(Inbound<'_>) -> ControlFlow<()>,
    ) -> Result<usize, Fault> {
        let mut pos = 0;
        let deflate = inflater.is_some();
        loop {
            let header = match self.stage {
                Stage::Payload { .. } => {
                    let flow = self.resume_payload(input, &mut pos, inflater, on)?;
                    if flow.is_break() || pos == input.len() {
                        return Ok(pos);
                    }
                    continue;
                }
                Stage::Header { len, bytes } => {
                    let Some(header) = self.read_header(len, bytes, input, &mut pos, deflate)?
                    else {
                        return Ok(input.len());
                    };
                    header
                }
            };
            let flow = self.frame(header, input, &mut pos, inflater, on)?;
            if flow.is_break() {
                return Ok(pos);
            }
        }
    }

    /// Reads the next header from the stash (`bytes[..len]`) and `input[*pos..]`.
    /// `Ok(None)`: input exhausted, the partial header is stashed in `self.stage`.
    fn read_header(
        &mut self,
        len: u8,
        mut bytes: [u8; 14],
        input: &[u8],
        pos: &mut usize,
        deflate: bool,
    ) -> Result<Option<Header>, Fault> {
        let rest = input.get(*pos..).unwrap_or_default();
        let mut have = usize::from(len);
        // Fast path: nothing stashed and the whole header is in `input`.
        if let (0, &[b0, b1, ..]) = (have, rest) {
            let need = self.check_head(b0, b1, deflate)?;
            if let Some(header) = rest.get(..need) {
                *pos += need;
                return self.check_header(header).map(Some);
            }
        }
        // Slow path: assemble the header in `bytes`, checking its first two bytes as soon as
        // they are in so that a bad frame fails fast.
        let mut taken = 0;
        let mut need: usize = 2;
        loop {
            // Copy `input` bytes into `bytes[have..need]` (at most 14 bytes, slow path only).
            let slots = bytes.iter_mut().take(need).skip(have);
            for (dst, src) in slots.zip(rest.iter().skip(taken)) {
                *dst = *src;
                have += 1;
                taken += 1;
            }
            if have < need {
                *pos += taken;
                // INVARIANT: `have < need <= 14`.
                self.stage = Stage::Header {
                    len: have as u8,
                    bytes,
                };
                return Ok(None);
            }
            if need == 2 {
                need = self.check_head(bytes[0], bytes[1], deflate)?;
                if have < need {
                    continue;
                }
            }
            *pos += taken;
            self.stage = Stage::IDLE;
            return self
                .check_header(bytes.get(..need).unwrap_or_default())
                .map(Some);
        }
    }

    /// Checks the first two header bytes; returns the whole header's length (6, 8 or 14).
    /// `deflate`: permessage-deflate was negotiated, so RSV1 may start a data message.
    fn check_head(&self, b0: u8, b1: u8, deflate: bool) -> Result<usize, Fault> {
        let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(Fault::UnknownOpcode)?;
        match b0 & 0x70 {
            0 => {}
            RSV1 if deflate && matches!(opcode, Opcode::Text | Opcode::Binary) => {}
            _ => return Err(Fault::Reserved),
        }
        if b1 & 0x80 == 0 {
            return Err(Fault::Unmasked);
        }
        let fin = b0 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        match opcode {
            _ if opcode.is_control() => {
                if !fin {
                    return Err(Fault::FragmentedControl);
                }
                if usize::from(len7) > CONTROL_PAYLOAD_MAX {
                    return Err(Fault::LongControl);
                }
            }
            Opcode::Continuation if self.open.is_none() => return Err(Fault::StrayContinuation),
            Opcode::Text | Opcode::Binary if self.open.is_some() => {
                return Err(Fault::InterleavedData);
            }
            _ => {}
        }
        Ok(match len7 {
            126 => 2 + 2 + 4,
            127 => 2 + 8 + 4,
            _ => 2 + 4,
        })
    }

    /// Parses a whole header (`h`: exactly the length [`Parser::check_head`] returned) and
    /// checks its length against the limits, before any payload is read.
    fn check_header(&self, h: &[u8]) -> Result<Header, Fault> {
        // Fixed-length patterns: direct loads, no copy of the header.
        let (b0, len, mask) = match *h {
            [b0, b1, m0, m1, m2, m3] => (b0, u64::from(b1 & 0x7F), [m0, m1, m2, m3]),
            [b0, _, l0, l1, m0, m1, m2, m3] => (
                b0,
                u64::from(u16::from_be_bytes([l0, l1])),
                [m0, m1, m2, m3],
            ),
            [b0, _, l0, l1, l2, l3, l4, l5, l6, l7, m0, m1, m2, m3] => (
                b0,
                u64::from_be_bytes([l0, l1, l2, l3, l4, l5, l6, l7]),
                [m0, m1, m2, m3],
            ),
            // Unreachable: `check_head` returns 6, 8 or 14.
            _ => return Err(Fault::Reserved),
        };
        if len >> 63 != 0 {
            return Err(Fault::LengthTopBit);
        }
        let len = usize::try_from(len).map_err(|_| Fault::TooBig)?;
        if len > self.limits.frame_bytes_max {
            return Err(Fault::TooBig);
        }
        let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(Fault::UnknownOpcode)?;
        if !opcode.is_control() {
            // INVARIANT: at a header, `buf` holds exactly the open message (see module docs).
            let before = if opcode == Opcode::Continuation {
                self.buf.len()
            } else {
                0
            };
            if before.saturating_add(len) > self.limits.message_bytes_max {
                return Err(Fault::TooBig);
            }
        }
        Ok(Header {
            opcode,
            fin: b0 & 0x80 != 0,
            len,
            mask,
            compressed: b0 & RSV1 != 0,
        })
    }

    /// Handles the frame whose header was just read and whose payload starts at
    /// `input[*pos..]`.
    fn frame(
        &mut self,
        header: Header,
        input: &mut [u8],
        pos: &mut usize,
        inflater: &mut Option<&mut Inflater>,
        on: &mut impl FnMut(Inbound<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, Fault> {
        let Header {
            opcode,
            fin,
            len,
            mask,
            compressed,
        } = header;
        if opcode == Opcode::Text {
            self.utf8.reset();
        }
        if matches!(opcode, Opcode::Text | Opcode::Binary) {
            self.compressed = compressed;
        }
        if !fin && !opcode.is_control() && opcode != Opcode::Continuation {
            self.open = Some(opcode);
        }
        let rest = input.get_mut(*pos..).unwrap_or_default();
        if let Some(payload) = rest.get_mut(..len) {
            // The whole payload is here.
            *pos += len;
            unmask(payload, mask);
            return self.complete(opcode, fin, payload, inflater, on);
        }
        // The payload is cut by the end of `input`: keep what arrived.
        *pos += rest.len();
        unmask(rest, mask);
        let control_len = if opcode.is_control() {
            // INVARIANT: `check_head` bounded a control payload by 125.
            len as u8
        } else {
            if self.is_text(opcode) {
                self.utf8.push(rest).map_err(|_| Fault::Utf8)?;
            }
            0
        };
        // Grow with what arrived, not with what the header announced: a peer that sends a
        // header and stalls must not make the connection hold `frame_bytes_max`.
        self.append(rest, len, self.ends_buffer(opcode, fin));
        self.stage = Stage::Payload {
            remaining: len - rest.len(),
            mask: rotate(mask, rest.len()),
            opcode,
            fin,
            control_len,
        };
        Ok(ControlFlow::Continue(()))
    }

    /// Continues the frame cut at the end of an earlier input with `input[*pos..]`.
    fn resume_payload(
        &mut self,
        input: &mut [u8],
        pos: &mut usize,
        inflater: &mut Option<&mut Inflater>,
        on: &mut impl FnMut(Inbound<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, Fault> {
        let Stage::Payload {
            remaining,
            mask,
            opcode,
            fin,
            control_len,
        } = self.stage
        else {
            return Ok(ControlFlow::Continue(()));
        };
        let rest = input.get_mut(*pos..).unwrap_or_default();
        let take = remaining.min(rest.len());
        let chunk = rest.get_mut(..take).unwrap_or_default();
        *pos += take;
        unmask(chunk, mask);
        let done = take == remaining;
        // The last chunk of a message is checked with the whole message in `complete_from_buf`.
        if self.is_text(opcode) && !(done && fin) {
            self.utf8.push(chunk).map_err(|_| Fault::Utf8)?;
        }
        self.append(chunk, remaining, self.ends_buffer(opcode, fin));
        if !done {
            self.stage = Stage::Payload {
                remaining: remaining - take,
                mask: rotate(mask, take),
                opcode,
                fin,
                control_len,
            };
            return Ok(ControlFlow::Continue(()));
        }
        self.stage = Stage::IDLE;
        if opcode.is_control() {
            let start = self.buf.len().saturating_sub(usize::from(control_len));
            let flow = {
                let payload = self.buf.get(start..).unwrap_or_default();
                deliver_control(opcode, payload, on)?
            };
            self.buf.truncate(start);
            return Ok(self.after_control(opcode, flow));
        }
        if fin {
            self.finish_message(opcode, inflater, on)
        } else {
            Ok(ControlFlow::Continue(()))
        }
    }

    /// Handles a frame whose whole `payload` is in `input`.
    fn complete(
        &mut self,
        opcode: Opcode,
        fin: bool,
        payload: &[u8],
        inflater: &mut Option<&mut Inflater>,
        on: &mut impl FnMut(Inbound<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, Fault> {
        match opcode {
            _ if opcode.is_control() => {
                let flow = deliver_control(opcode, payload, on)?;
                Ok(self.after_control(opcode, flow))
            }
            Opcode::Text | Opcode::Binary if fin && self.compressed => {
                let kind = opcode;
                deliver_inflated(kind, payload, self.limits.message_bytes_max, inflater, on)
            }
            // The common case: a whole message in one frame, delivered without a copy.
            Opcode::Text if fin => {
                let text = str::from_utf8(payload).map_err(|_| Fault::Utf8)?;
                Ok(on(Inbound::Text(text)))
            }
            Opcode::Binary if fin => Ok(on(Inbound::Binary(payload))),
            _ => {
                if self.is_text(opcode) && !fin {
                    self.utf8.push(payload).map_err(|_| Fault::Utf8)?;
                }
                self.append(payload, payload.len(), self.ends_buffer(opcode, fin));
                if fin {
                    self.finish_message(opcode, inflater, on)
                } else {
                    Ok(ControlFlow::Continue(()))
                }
            }
        }
    }

    /// Delivers the message completed in `buf` by a final frame with `opcode`.
    fn finish_message(
        &mut self,
        opcode: Opcode,
        inflater: &mut Option<&mut Inflater>,
        on: &mut impl FnMut(Inbound<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, Fault> {
        let kind = if opcode == Opcode::Continuation {
            self.open.take()
        } else {
            Some(opcode)
        };
        if self.compressed {
            let kind = kind.unwrap_or(Opcode::Binary);
            let max = self.limits.message_bytes_max;
            let flow = deliver_inflated(kind, &self.buf, max, inflater, on);
            self.buf.clear();
            return flow;
        }
        // This pass also validates the final fragment, which `utf8` has not seen, and fails
        // on a message ending inside a sequence.
        let flow = match kind {
            Some(Opcode::Text) => {
                let text = str::from_utf8(&self.buf).map_err(|_| Fault::Utf8)?;
                on(Inbound::Text(text))
            }
            _ => on(Inbound::Binary(&self.buf)),
        };
        self.buf.clear();
        Ok(flow)
    }

    /// Appends `bytes`, the next payload bytes of the frame being received, to `buf`.
    /// `remaining`: that frame's payload bytes still to come, `bytes` included. `last`: `buf`
    /// is emptied (down to where this frame began, outside a message) once this frame is in.
    fn append(&mut self, bytes: &[u8], remaining: usize, last: bool) {
        let len = self.buf.len();
        let needed = len.saturating_add(bytes.len());
        let capacity = self.buf.capacity();
        if needed > capacity {
            let bound = self
                .limits
                .message_bytes_max
                .saturating_add(CONTROL_PAYLOAD_MAX);
            let ceiling = if last {
                len.saturating_add(remaining)
            } else {
                bound
            };
            // INVARIANT: `buf`'s capacity stays (a) within `bound`; (b) while a `last` frame
            // is received, within the larger of that frame's end and the capacity it found;
            // (c) within twice what `buf` holds after a growth.
            // Premises: (1) `buf` grows only here, to exactly `target` (`reserve_exact` asks
            // for that capacity, and std's `Vec` records what it asked for); it shrinks only
            // to nothing (`shrink`, Close, an error). (2) `needed <= len + remaining`: callers
            // pass at most the `remaining` bytes. (3) `len + remaining <= bound`: at its
            // header, `check_header` bounds a data frame plus the open message before it by
            // `message_bytes_max`, and `check_head` a control frame by 125 bytes, after an open
            // message within `message_bytes_max`.
            // Conclusion: `target = max(needed, min(2 * capacity, ceiling))` and `needed <=
            // ceiling <= bound` by (2) and (3), so `target <= ceiling`: (a), and (b) where
            // `ceiling` is the frame's end. We grow only when `capacity < needed`, so `target
            // <= max(needed, 2 * capacity) < 2 * needed`: (c).
            // Why `bound` and not the frame's end when the frame is not `last`: the message
            // goes on past it, and capping each growth at the frame's end would reallocate, and
            // copy the whole message, once per small fragment (or per ping cut between two):
            // quadratic work for a linear input. Here a growth either at least doubles the
            // capacity (geometric: the copies sum to less than the final capacity), or stops
            // at `bound` (then nothing grows again), or stops at a `last` frame's end (then
            // that frame fits, and `buf` is emptied after it, so this happens once per message
            // or control frame and copies fewer bytes than that message or frame brought).
            let target = needed.max(capacity.saturating_mul(2).min(ceiling));
            self.buf.reserve_exact(target.saturating_sub(len));
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether `buf` is emptied (down to where the frame began) once a frame with `opcode`
    /// and `fin` is in: a message's final frame is delivered from it and cleared; a control
    /// frame is cut off it, and outside a fragmented message nothing follows it.
    fn ends_buffer(&self, opcode: Opcode, fin: bool) -> bool {
        if opcode.is_control() {
            self.open.is_none()
        } else {
            fin
        }
    }

    /// Whether the payload of a frame with `opcode` is text to check as it arrives: text, and
    /// not compressed (compressed text is checked once inflated).
    fn is_text(&self, opcode: Opcode) -> bool {
        !self.compressed
            && (opcode == Opcode::Text
                || (opcode == Opcode::Continuation && self.open == Some(Opcode::Text)))
    }

    /// After a control frame was delivered: a Close ends the stream.
    fn after_control(&mut self, opcode: Opcode, flow: ControlFlow<()>) -> ControlFlow<()> {
        if opcode == Opcode::Close {
            self.status = Status::Closed;
            self.buf = Vec::new();
            return ControlFlow::Break(());
        }
        flow
    }
}

/// Inflates the compressed message `body` (of `kind`, Text or Binary) within `max` bytes and
/// delivers it.
fn deliver_inflated(
    kind: Opcode,
    body: &[u8],
    max: usize,
    inflater: &mut Option<&mut Inflater>,
    on: &mut impl FnMut(Inbound<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, Fault> {
    // A compressed frame is accepted only with an inflater (`check_head`).
    let inflater = inflater.as_deref_mut().ok_or(Fault::Reserved)?;
    let message = inflater.inflate(body, max).map_err(|e| match e {
        InflateError::TooBig => Fault::TooBig,
        InflateError::Corrupt => Fault::Corrupt,
    })?;
    Ok(match kind {
        Opcode::Text => on(Inbound::Text(
            str::from_utf8(message).map_err(|_| Fault::Utf8)?,
        )),
        _ => on(Inbound::Binary(message)),
    })
}

/// Delivers a complete control frame.
fn deliver_control(
    opcode: Opcode,
    payload: &[u8],
    on: &mut impl FnMut(Inbound<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, Fault> {
    let inbound = match opcode {
        Opcode::Ping => Inbound::Ping(payload),
        Opcode::Pong => Inbound::Pong(payload),
        _ => match *payload {
            [] => Inbound::Close {
                code: None,
                reason: "",
            },
            [_] => return Err(Fault::ShortClose),
            [hi, lo, ref reason @ ..] => {
                let code = u16::from_be_bytes([hi, lo]);
                if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                    return Err(Fault::CloseCode);
                }
                let reason = str::from_utf8(reason).map_err(|_| Fault::Utf8)?;
                Inbound::Close {
                    code: Some(code),
                    reason,
                }
            }
        },
    };
    Ok(on(inbound))
}

/// The mask for the byte `consumed` bytes after the one `mask[0]` applied to.
fn rotate(mut mask: [u8; 4], consumed: usize) -> [u8; 4] {
    mask.rotate_left(consumed % 4);
    mask
}

/// XORs `data` with the repeated `mask`, 8 bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
        }
    }
    // 8 is a multiple of 4, so the tail starts at mask phase 0.
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_stays_within_one_cache_line() {
        assert!(size_of::<Parser>() <= 64, "{}", size_of::<Parser>());
    }

    #[test]
    fn unmask_matches_the_bytewise_definition() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut fast = original.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn rotated_mask_continues_where_the_cut_was() {
        let mask = [1, 2, 3, 4];
        let original: Vec<u8> = (0..23).collect();
        let mut whole = original.clone();
        unmask(&mut whole, mask);
        for cut in 0..original.len() {
            let mut split = original.clone();
            let (a, b) = split.split_at_mut(cut);
            unmask(a, mask);
            unmask(b, rotate(mask, cut));
            assert_eq!(split, whole);
        }
    }
}
