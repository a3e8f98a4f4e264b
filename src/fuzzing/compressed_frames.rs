//! The `compressed_frames` target: the client frames of a connection that negotiated
//! permessage-deflate, through the parser and the shard's inflater, against a model.

use std::ops::ControlFlow;
use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::oracle::Msg;
use super::reader::Reader;
use crate::wire::deflate::{Deflater, Inflater, WINDOW_BITS_MAX, WINDOW_BITS_MIN};
use crate::wire::frame::{self, CONTROL_PAYLOAD_MAX, RSV1};
use crate::wire::{Inbound, Limits, Opcode, ParseError, Parser};

/// Most items read from one input.
const ITEMS_MAX: usize = 8;
/// Most plaintext bytes the items of one input may ask to compress or send, all together.
const PLAIN_BUDGET: usize = 256 << 10;
/// Most plaintext bytes a message item has past the limit.
const PLAIN_OVER_LIMIT: usize = 256;
/// Most frames a message is cut into.
const FRAGMENTS_MAX: usize = 8;
/// The decompression bomb: this many zeros, compressed (about 1 KiB).
const BOMB_BYTES: usize = 1 << 20;
/// What RFC 7692 7.2.1 removes from the end of each compressed message.
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// RSV2 and RSV3: no extension of ours uses them.
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;
/// The parser's error for a reserved bit where it may not be.
const RESERVED: ParseError = ParseError::Protocol("reserved bits set");

/// Message flags (the byte after a message item's kind). A text message (else binary).
const TEXT: u8 = 0x01;
/// Deflated: the sender leaves the 4-byte trailer on (the inflater reads an empty block more).
const KEEP_TRAILER: u8 = 0x02;
/// Deflated: compressed to a final block (BFINAL, RFC 7692 7.2.3.4), then a `0x00`.
const FINAL_BLOCK: u8 = 0x04;
/// A reserved bit where it may not be (a Protocol error), one at most: the flags' bits 3-5 are
/// a number, 1-3 the one below and anything else none (so that most messages are well-formed).
const MISUSE: u8 = 0x38;
/// RSV1 on the last continuation frame (when there is one).
const RSV1_ON_CONTINUATION: u8 = 1 << 3;
/// RSV1 on the first ping sent inside the message (when there is one).
const RSV1_ON_PING: u8 = 2 << 3;
/// RSV2 on the first frame.
const RSV2_ON_FIRST: u8 = 3 << 3;
/// Deflated text: the plaintext is sent as is, not made valid UTF-8 first.
const RAW_TEXT: u8 = 0x40;
/// The plaintext is 64 KiB longer than its length field says.
const LONG: u8 = 0x80;

/// The compressed bomb, made once.
fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| Deflater::new(9, 15).compress(&vec![0; BOMB_BYTES]).to_vec())
}

/// A connection that negotiated permessage-deflate: client frames built from the input (whole
/// compressed messages, fragmented, with pings between fragments, RSV bits where they may and
/// may not be), fed to a [`Parser`] with [`Parser::feed_with`] and an [`Inflater`], in reads
/// cut where the input says, under a message limit the input chooses.
///
/// Input: `[limit u16 le, plan_len | pause << 3, plan[plan_len], items..]`. The message limit
/// is the `u16` (0..=65535; `0xffff` means 64 KiB); the frame limit is the same or 125 bytes,
/// whichever is larger. The stream is fed in chunks of `plan[i] + 1` bytes, cycling (no plan:
/// in one piece); with `pause` the callback returns `Break` after every message and the rest
/// of the chunk is fed again. At most 8 items, each `[kind % 6, ..]`:
///
/// - 0, deflated: `[flags, n, cuts[n % 8], pings, level | bits << 4, unit_len, unit..,
///   total u16]`: a plaintext of `total` bytes (64 KiB more with `LONG`; at most 256 bytes past
///   the limit) repeating `unit`, compressed by [`Deflater`] at `level` (0-15, clamped) and
///   window `8 + bits` (clamped), or to a final block with `FINAL_BLOCK`;
/// - 1, raw: `[flags, n, cuts.., pings, len u16, body[len]]`: bytes from the input as
///   the compressed body (corrupt, truncated, a bomb of its own, or valid);
/// - 2, bomb: `[flags, n, cuts.., pings]`: 1 MiB of zeros, compressed;
/// - 3, plain: `[flags, n, cuts.., pings, unit_len, unit.., total u16]`: the same
///   plaintext, sent without RSV1 (uncompressed; text made valid UTF-8);
/// - 4, control: `[which, len, payload[len % 126]]`: `which % 3` ping, pong, close (1000,
///   "bye"); `which >> 2` 0-2 set RSV1, RSV2, RSV3 on it;
/// - 5, bytes: `[len, bytes[len]]` appended as they are: no prediction past them.
///
/// A message's body is cut into frames at `cuts[i] / 255` of its length (up to 8 frames, fewer
/// at the end of the input); `pings` bit `i` puts a ping after frame `i` (bit 7: after the
/// message). `flags` are the constants above.
///
/// Checks:
/// - no panic; `feed_with` always makes progress; after a Close everything is discarded, after
///   an error the parser stays poisoned;
/// - every delivered message is at most the message limit; after every call the inflater
///   holds at most `limit + 1` bytes ([`Inflater::capacity`]), and the parser's buffer
///   ([`Parser::buffered_bytes`], [`Parser::buffered_capacity`]) at most `limit + 125`;
/// - the messages and the end (open, closed, error) are those a model of the stream predicts:
///   a compressed message whose compressed and inflated sizes are within the limit is delivered
///   as its plaintext (text: invalid UTF-8 refused with `InvalidUtf8`); past the limit, or the
///   bomb, `TooBig`; RSV1 on a continuation or a control frame, or RSV2/RSV3 anywhere, a
///   Protocol error ("reserved bits set"); pings between fragments delivered in place. A raw
///   body is predicted by [`reference_inflate`]. Past a `bytes` item, the model's messages
///   must be a prefix of what is delivered;
/// - the outcome does not depend on the reads: the same messages and end when the stream is
///   fed in one piece, with the same inflater (nothing of a message stays in it).
pub fn compressed_frames(data: &[u8]) {
    let mut r = Reader::new(data);
    let max = match r.u16() {
        u16::MAX => 64 << 10,
        n => usize::from(n),
    };
    let mode = r.u8();
    let plan: Vec<usize> = r
        .bytes(usize::from(mode & 0x07))
        .iter()
        .map(|&b| usize::from(b) + 1)
        .collect();
    let pause = mode & 0x08 != 0;

    let mut script = Script::new(max);
    let mut items = 0;
    while !r.is_empty() && items < ITEMS_MAX {
        items += 1;
        match r.u8() % 6 {
            0 => script.message(&mut r, Kind::Deflated),
            1 => script.message(&mut r, Kind::Raw),
            2 => script.message(&mut r, Kind::Bomb),
            3 => script.message(&mut r, Kind::Plain),
            4 => script.control(&mut r),
            _ => {
                let len = usize::from(r.u8());
                script.stream.extend_from_slice(r.bytes(len));
                script.end_with(Expect::Unknown);
            }
        }
    }

    let limits = Limits {
        frame_bytes_max: max.max(CONTROL_PAYLOAD_MAX),
        message_bytes_max: max,
    };
    let mut inflater = Inflater::new();
    let chunked = parse(&script.stream, limits, &plan, pause, &mut inflater);
    let whole = parse(&script.stream, limits, &[], false, &mut inflater);
    assert_eq!(
        chunked.messages, whole.messages,
        "the reads changed the messages"
    );
    assert_eq!(chunked.end, whole.end, "the reads changed the outcome");

    let ours = whole;
    match script.end {
        Expect::Open => assert_eq!(ours.end, Got::Open),
        Expect::Closed => assert_eq!(ours.end, Got::Closed),
        Expect::Failed(allowed) => assert!(
            matches!(ours.end, Got::Failed(e) if allowed.contains(&e)),
            "ended {:?}, expected one of {allowed:?}",
            ours.end
        ),
        Expect::Unknown => {
            assert!(
                ours.messages.starts_with(&script.messages),
                "before the raw bytes: {:?}, expected {:?}",
                ours.messages,
                script.messages
            );
            return;
        }
    }
    assert_eq!(
        ours.messages, script.messages,
        "messages differ from the model"
    );
}

/// What a message item sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A plaintext compressed by us.
    Deflated,
    /// Input bytes as the compressed body.
    Raw,
    /// 1 MiB of zeros, compressed.
    Bomb,
    /// A plaintext, uncompressed.
    Plain,
}

/// What inflating a compressed body gives, within the limit.
#[derive(Debug)]
enum Inflated {
    /// The message.
    To(Vec<u8>),
    /// More than the limit.
    TooBig,
    /// Not a deflate stream.
    Corrupt,
    /// Past the limit, and maybe invalid just after: which one the inflater sees first
    /// depends on where its output buffer ends (see [`reference_inflate`]).
    TooBigOrCorrupt,
}

/// How the model expects the stream to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Every message delivered, the parser still open.
    Open,
    /// After a Close.
    Closed,
    /// With one of these errors.
    Failed(&'static [ParseError]),
    /// Not predicted (raw bytes were appended).
    Unknown,
}

/// The stream being built, and the model's prediction of its reading.
struct Script {
    /// The message limit.
    max: usize,
    /// The client bytes.
    stream: Vec<u8>,
    /// The messages predicted so far.
    messages: Vec<Msg>,
    /// `Open` while the model still predicts.
    end: Expect,
    /// Frames built so far (each gets its own mask).
    frames: u8,
    /// Plaintext bytes the items may still ask for.
    budget: usize,
}

impl Script {
    fn new(max: usize) -> Script {
        Script {
            max,
            stream: Vec::new(),
            messages: Vec::new(),
            end: Expect::Open,
            frames: 0,
            budget: PLAIN_BUDGET,
        }
    }

    /// Appends a masked frame with first byte `first`.
    fn push(&mut self, first: u8, payload: &[u8]) {
        let n = self.frames;
        self.frames = n.wrapping_add(1);
        let mask = [n, n.wrapping_mul(31) ^ 0x5a, 0xa5, 0x3c];
        frame::put_raw(&mut self.stream, first, payload, Some(mask));
    }

    /// The model predicts `m` next, if it still predicts.
    fn expect(&mut self, m: Msg) {
        if self.end == Expect::Open {
            self.messages.push(m);
        }
    }

    /// The stream ends here for the model, if it did not already.
    fn end_with(&mut self, end: Expect) {
        if self.end == Expect::Open {
            self.end = end;
        }
    }

    /// A Ping after frame `i` of a message (or `0xff`: after it), with `rsv` set.
    fn ping(&mut self, i: u8, rsv: u8) {
        let payload = vec![i; usize::from(i % 4)];
        self.push(0x80 | rsv | Opcode::Ping as u8, &payload);
        if rsv != 0 {
            self.end_with(Expect::Failed(&[RESERVED]));
        }
        self.expect(Msg::Ping(payload));
    }

    /// A message item (see [`compressed_frames`] for its layout).
    fn message(&mut self, r: &mut Reader<'_>, kind: Kind) {
        let flags = r.u8();
        let wanted = usize::from(r.u8()) % FRAGMENTS_MAX;
        // Fewer at the end of the input.
        let cuts = r.bytes(wanted).to_vec();
        let fragments = cuts.len() + 1;
        let pings = r.u8();
        let text = flags & TEXT != 0;
        let opcode = if text { Opcode::Text } else { Opcode::Binary };
        let (body, inflated) = match kind {
            Kind::Deflated => {
                let tuning = r.u8();
                let (level, bits) = (u32::from(tuning & 0x0f), 8 + (tuning >> 4));
                let plain = self.plaintext(r, flags, text && flags & RAW_TEXT == 0);
                let mut body = if flags & FINAL_BLOCK != 0 {
                    let mut body = deflate_final(level, bits, &plain);
                    body.push(0x00);
                    body
                } else {
                    Deflater::new(level, bits).compress(&plain).to_vec()
                };
                if flags & KEEP_TRAILER != 0 {
                    body.extend_from_slice(&TRAILER);
                }
                let inflated = if plain.len() > self.max {
                    Inflated::TooBig
                } else {
                    Inflated::To(plain)
                };
                (body, Some(inflated))
            }
            Kind::Raw => {
                let len = usize::from(r.u16());
                let body = r.bytes(len).to_vec();
                let inflated = reference_inflate(&body, self.max);
                (body, Some(inflated))
            }
            // 1 MiB is over every limit (64 KiB at most).
            Kind::Bomb => (bomb().to_vec(), Some(Inflated::TooBig)),
            Kind::Plain => (self.plaintext(r, flags, text), None),
        };

        let mut cuts: Vec<usize> = cuts
            .iter()
            .map(|&c| body.len() * usize::from(c) / 255)
            .collect();
        cuts.sort_unstable();
        let bounds: Vec<usize> = [0].into_iter().chain(cuts).chain([body.len()]).collect();
        let mut sent = 0;
        let misuse = flags & MISUSE;
        let mut ping_rsv = if misuse == RSV1_ON_PING { RSV1 } else { 0 };
        for (i, span) in bounds.windows(2).enumerate() {
            let piece = &body[span[0]..span[1]];
            let last = i + 1 == fragments;
            let mut first = if last { 0x80 } else { 0 };
            let mut wrong_rsv = false;
            if i == 0 {
                first |= opcode as u8;
                if inflated.is_some() {
                    first |= RSV1;
                }
                if misuse == RSV2_ON_FIRST {
                    first |= RSV2;
                    wrong_rsv = true;
                }
            } else if last && misuse == RSV1_ON_CONTINUATION {
                first |= RSV1;
                wrong_rsv = true;
            }
            self.push(first, piece);
            // The header's checks, in the parser's order: reserved bits, then the size of the
            // message so far (the compressed size, for a compressed message).
            if wrong_rsv {
                self.end_with(Expect::Failed(&[RESERVED]));
            } else if sent + piece.len() > self.max {
                self.end_with(Expect::Failed(&[ParseError::TooBig]));
            }
            sent += piece.len();
            if !last && pings & (1 << i) != 0 {
                self.ping(i as u8, std::mem::take(&mut ping_rsv));
            }
        }

        let delivered = match inflated {
            None => Inflated::To(body),
            Some(inflated) => inflated,
        };
        match delivered {
            Inflated::To(message) if text => match String::from_utf8(message) {
                Ok(text) => self.expect(Msg::Text(text)),
                Err(_) => self.end_with(Expect::Failed(&[ParseError::InvalidUtf8])),
            },
            Inflated::To(message) => self.expect(Msg::Binary(message)),
            Inflated::TooBig => self.end_with(Expect::Failed(&[ParseError::TooBig])),
            Inflated::Corrupt => self.end_with(Expect::Failed(&[ParseError::Compression])),
            Inflated::TooBigOrCorrupt => self.end_with(Expect::Failed(&[
                ParseError::TooBig,
                ParseError::Compression,
            ])),
        }
        if pings & 0x80 != 0 {
            self.ping(0xff, 0);
        }
    }

    /// `[unit_len, unit.., total u16]`: `total` bytes (64 KiB more with `LONG`; at most 256
    /// past the limit, and within the budget) repeating `unit` (a zero if empty); with `utf8`,
    /// made valid UTF-8 (lossily).
    fn plaintext(&mut self, r: &mut Reader<'_>, flags: u8, utf8: bool) -> Vec<u8> {
        let unit_len = usize::from(r.u8());
        let unit = match r.bytes(unit_len) {
            [] => &[0][..],
            unit => unit,
        };
        let long = if flags & LONG != 0 { 64 << 10 } else { 0 };
        // Past the limit, more only costs time (compressing is most of this target's work).
        let total = (usize::from(r.u16()) + long)
            .min(self.max + PLAIN_OVER_LIMIT)
            .min(self.budget);
        self.budget -= total;
        let plain: Vec<u8> = unit.iter().copied().cycle().take(total).collect();
        if utf8 {
            String::from_utf8_lossy(&plain).into_owned().into_bytes()
        } else {
            plain
        }
    }

    /// A control item (see [`compressed_frames`] for its layout).
    fn control(&mut self, r: &mut Reader<'_>) {
        let which = r.u8();
        let len = usize::from(r.u8()) % (CONTROL_PAYLOAD_MAX + 1);
        let payload = r.bytes(len).to_vec();
        let rsv = match which >> 2 {
            0 => RSV1,
            1 => RSV2,
            2 => RSV3,
            _ => 0,
        };
        let (opcode, message) = match which % 3 {
            0 => (Opcode::Ping, Msg::Ping(payload)),
            1 => (Opcode::Pong, Msg::Pong(payload)),
            _ => (Opcode::Close, Msg::Close(Some(1000), "bye".into())),
        };
        let payload = match &message {
            Msg::Ping(p) | Msg::Pong(p) => p.clone(),
            _ => b"\x03\xe8bye".to_vec(),
        };
        self.push(0x80 | rsv | opcode as u8, &payload);
        if rsv != 0 {
            self.end_with(Expect::Failed(&[RESERVED]));
        }
        self.expect(message);
        if opcode == Opcode::Close {
            self.end_with(Expect::Closed);
        }
    }
}

/// `plain` compressed as a raw deflate stream ending with a final block (BFINAL), by zlib at
/// `level` with a window of `bits`, clamped as [`Deflater::new`] clamps them.
fn deflate_final(level: u32, bits: u8, plain: &[u8]) -> Vec<u8> {
    let bits = bits.clamp(WINDOW_BITS_MIN, WINDOW_BITS_MAX);
    let mut compress = Compress::new_with_window_bits(Compression::new(level.min(9)), false, bits);
    let mut out = Vec::with_capacity(plain.len() / 2 + 64);
    loop {
        let input = &plain[compress.total_in() as usize..];
        let status = compress
            .compress_vec(input, &mut out, FlushCompress::Finish)
            .expect("compressing in memory");
        if status == Status::StreamEnd {
            return out;
        }
        out.reserve(out.capacity().max(64));
    }
}

/// What a compressed `body` inflates to within `max` bytes: the reading of RFC 7692 7.2.2 by
/// zlib driven plainly (the trailer appended, all input in one buffer, the output in one buffer
/// of `max + 1` bytes), against the [`Inflater`]'s bounded, growing buffer.
///
/// Past `max` the answer is [`Inflated::TooBigOrCorrupt`]: zlib may go on decoding a block
/// header after the output is full and find it invalid, in the same call, and whether that call
/// is the one that fills the buffer depends on where the buffer ends.
fn reference_inflate(body: &[u8], max: usize) -> Inflated {
    let input: Vec<u8> = body.iter().chain(&TRAILER).copied().collect();
    let mut decompress = Decompress::new(false);
    let mut out = Vec::with_capacity(max + 1);
    loop {
        let (in_before, out_before) = (decompress.total_in(), out.len());
        let rest = &input[decompress.total_in() as usize..];
        let status = decompress.decompress_vec(rest, &mut out, FlushDecompress::None);
        if out.len() > max {
            return Inflated::TooBigOrCorrupt;
        }
        match status {
            Err(_) => return Inflated::Corrupt,
            Ok(Status::StreamEnd) => return Inflated::To(out),
            Ok(_) if decompress.total_in() as usize == input.len() => return Inflated::To(out),
            Ok(_) if decompress.total_in() == in_before && out.len() == out_before => {
                return Inflated::Corrupt;
            }
            Ok(_) => {}
        }
    }
}

/// How our parse ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    /// Every byte consumed.
    Open,
    /// A Close was delivered.
    Closed,
    /// The parser rejected the stream.
    Failed(ParseError),
}

/// Our parse of a whole stream.
#[derive(Debug)]
struct Parsed {
    messages: Vec<Msg>,
    end: Got,
}

/// A callback for feeds that must deliver nothing (after a Close or an error).
fn no_message(m: Inbound<'_>) -> ControlFlow<()> {
    panic!("message after the end of the stream: {m:?}")
}

/// Feeds `stream` to a new parser with `inflater`, in chunks of the `plan` sizes (cycled;
/// empty: one chunk), checking the bounds after every call.
fn parse(
    stream: &[u8],
    limits: Limits,
    plan: &[usize],
    pause: bool,
    inflater: &mut Inflater,
) -> Parsed {
    let max = limits.message_bytes_max;
    let bound = max + CONTROL_PAYLOAD_MAX;
    let mut input = stream.to_vec();
    let mut parser = Parser::new(limits);
    let mut messages = Vec::new();
    let mut sizes = plan.iter().copied().cycle();
    let mut start = 0;
    while start < input.len() {
        let end = input.len().min(start + sizes.next().unwrap_or(input.len()));
        let mut pos = start;
        while pos < end {
            let before = messages.len();
            let result = parser.feed_with(&mut input[pos..end], Some(&mut *inflater), |m| {
                if let Inbound::Text(t) = m {
                    assert!(t.len() <= max, "text of {} bytes, limit {max}", t.len());
                }
                if let Inbound::Binary(b) = m {
                    assert!(b.len() <= max, "binary of {} bytes, limit {max}", b.len());
                }
                messages.push(Msg::from(m));
                if pause {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            assert!(
                inflater.capacity() <= max + 1,
                "the inflater holds {} bytes, limit {max}",
                inflater.capacity()
            );
            assert!(
                parser.buffered_bytes() <= bound && parser.buffered_capacity() <= bound,
                "the parser holds {} bytes in {}, bound {bound}",
                parser.buffered_bytes(),
                parser.buffered_capacity()
            );
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
                        let after =
                            parser.feed_with(&mut input[pos..], Some(&mut *inflater), no_message);
                        assert_eq!(after, Ok(rest));
                        return Parsed {
                            messages,
                            end: Got::Closed,
                        };
                    }
                }
                Err(e) => {
                    let after =
                        parser.feed_with(&mut input[end..], Some(&mut *inflater), no_message);
                    assert_eq!(after, Err(e), "the parser did not stay poisoned");
                    assert_eq!(parser.buffered_capacity(), 0);
                    return Parsed {
                        messages,
                        end: Got::Failed(e),
                    };
                }
            }
        }
        start = end;
    }
    Parsed {
        messages,
        end: Got::Open,
    }
}
