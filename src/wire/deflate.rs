//! permessage-deflate (RFC 7692): the negotiation, the compressor and the bounded inflater.
//!
//! shardcast compresses every message on its own (it always answers
//! `server_no_context_takeover`), so the compressed frame of a broadcast is the same bytes for
//! every recipient: it is built once, like the plain frame, and shared by refcount. It always
//! answers `client_no_context_takeover` too (RFC 7692 7.1.1.1 lets a server add it unasked),
//! so a client's messages inflate with one inflater per shard and no state per connection.
//!
//! There is no per-connection inflater for a client that would keep its window: RFC 7692 makes
//! `client_no_context_takeover` a parameter every client must accept in an answer, so no
//! conforming client refuses it, and one that ignores it sends a message referring to an
//! earlier one, which does not inflate on its own: it is closed with 1007 and counted as
//! corrupt. Declining such clients costs nothing; serving them would cost a 32 KiB window and
//! about 7 KiB of state per connection, several times what a connection costs otherwise.
//!
//! # Invariants
//!
//! - [`negotiate`] accepts the first `permessage-deflate` offer whose parameters are all
//!   known, well-formed and not repeated, and nothing else; its [`Agreement`] answers with
//!   both `no_context_takeover` parameters and, when the offer bounded it,
//!   `server_max_window_bits` with the offered value.
//! - A [`Deflater`] never writes a window larger than the agreement allows: an agreement of 8
//!   bits (which zlib cannot write) gets no compressed frames ([`Agreement::window_bits`] is
//!   `None`); the client gets plain frames, which RFC 7692 always allows.
//! - An [`Inflater`] never holds more than `max + 1` output bytes, whatever the input: a
//!   message that would inflate past `max` is refused as soon as its `max + 1`th byte is out.
//!   Its buffer's capacity is at most the larger of `max + 1` and the 64 KiB it keeps between
//!   messages (the latter only after a message under a larger limit: a shard uses one limit).

use super::frame::{self, Opcode};
use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name, as offered and answered.
pub const EXTENSION: &str = "permessage-deflate";

/// The four bytes a sync flush ends with, which RFC 7692 7.2.1 removes from each message and
/// 7.2.2 puts back before inflating.
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Smallest window zlib writes for raw deflate (it turns 8 into 9, which a peer with a 256-byte
/// window could not read).
pub const WINDOW_BITS_MIN: u8 = 9;

/// Largest window (32 KiB), the default.
pub const WINDOW_BITS_MAX: u8 = 15;

/// What was agreed with one client: the answer to its offer, and the window the server may
/// compress with.
///
/// ```
/// use shardcast::wire::deflate::negotiate;
/// // Chrome's offer.
/// let agreed = negotiate([&b"permessage-deflate; client_max_window_bits"[..]]).unwrap();
/// assert_eq!(
///     agreed.response(),
///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
/// );
/// assert_eq!(agreed.window_bits(), Some(15));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// `server_max_window_bits` as offered (8-15), answered with the same value; `None` when
    /// the offer did not bound it (15).
    server_max_window_bits: Option<u8>,
}

impl Agreement {
    /// The agreement a client gets when its offer bounds nothing: windows of 15 bits.
    pub const DEFAULT: Agreement = Agreement {
        server_max_window_bits: None,
    };

    /// The window the server compresses with (9-15), or `None` when the client asked for 8
    /// bits, which zlib cannot write: that client gets its messages uncompressed.
    pub fn window_bits(&self) -> Option<u8> {
        match self.server_max_window_bits {
            None => Some(WINDOW_BITS_MAX),
            Some(bits) if bits >= WINDOW_BITS_MIN => Some(bits),
            Some(_) => None,
        }
    }

    /// The value of the `Sec-WebSocket-Extensions` header of the 101 answer.
    pub fn response(&self) -> String {
        let mut out =
            format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        out
    }
}

/// The agreement for the first acceptable `permessage-deflate` offer among the
/// `Sec-WebSocket-Extensions` header values of a request (in order), or `None` to answer
/// without the extension.
///
/// An offer is acceptable when each of its parameters is one of RFC 7692's four, appears once
/// and has a valid value (`server_max_window_bits` 8-15, required; `client_max_window_bits`
/// 8-15 or none; the two `no_context_takeover` parameters without one). Offers of other
/// extensions are passed over. A header that does not parse as an extension list (RFC 6455
/// 9.1) offers nothing.
///
/// ```
/// use shardcast::wire::deflate::negotiate;
/// let first_fit = negotiate([&b"permessage-deflate; foo, permessage-deflate; server_max_window_bits=10"[..]]);
/// assert_eq!(first_fit.unwrap().window_bits(), Some(10));
/// assert!(negotiate([&b"permessage-deflate; server_max_window_bits=16"[..]]).is_none());
/// assert!(negotiate([&b"x-webkit-deflate-frame"[..]]).is_none());
/// ```
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreement> {
    for value in values {
        let Ok(offers) = parse_list(value) else {
            continue;
        };
        for (name, params) in offers {
            if !name.eq_ignore_ascii_case(EXTENSION) {
                continue;
            }
            if let Some(agreement) = accept(&params) {
                return Some(agreement);
            }
        }
    }
    None
}

/// A parameter: its name, and its value if it has one (unquoted).
type Param<'a> = (&'a str, Option<&'a str>);

/// The agreement for one `permessage-deflate` offer, or `None` if it cannot be accepted.
fn accept(params: &[Param<'_>]) -> Option<Agreement> {
    let mut seen = [false; 4];
    let mut server_max_window_bits = None;
    for &(name, value) in params {
        let which = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ]
        .iter()
        .position(|known| name.eq_ignore_ascii_case(known))?;
        if std::mem::replace(&mut seen[which], true) {
            return None;
        }
        match (which, value) {
            (0 | 1, None) => {}
            (2, Some(v)) => server_max_window_bits = Some(window_bits(v)?),
            (3, None) => {}
            (3, Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
    }
    Some(Agreement {
        server_max_window_bits,
    })
}

/// A window size parameter's value: 1*DIGIT from 8 to 15, without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Parses one `Sec-WebSocket-Extensions` value: `1#( token *( ";" token [ "=" ( token /
/// quoted-string ) ] ) )`, with optional whitespace around separators; empty list elements are
/// skipped. `Err` when it is not that.
fn parse_list(value: &[u8]) -> Result<Vec<(&str, Vec<Param<'_>>)>, ()> {
    let text = std::str::from_utf8(value).map_err(drop)?;
    let mut cursor = Cursor { text, pos: 0 };
    let mut list = Vec::new();
    loop {
        cursor.skip_space();
        if cursor.eat(',') {
            continue;
        }
        if cursor.at_end() {
            return Ok(list);
        }
        let name = cursor.token()?;
        let mut params = Vec::new();
        loop {
            cursor.skip_space();
            if cursor.at_end() || cursor.eat(',') {
                break;
            }
            if !cursor.eat(';') {
                return Err(());
            }
            cursor.skip_space();
            let param = cursor.token()?;
            cursor.skip_space();
            let value = if cursor.eat('=') {
                cursor.skip_space();
                Some(cursor.value()?)
            } else {
                None
            };
            params.push((param, value));
        }
        list.push((name, params));
    }
}

/// A position in a header value.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or_default()
    }

    fn at_end(&self) -> bool {
        self.rest().is_empty()
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t']).len();
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.rest().starts_with(c);
        if hit {
            self.pos += c.len_utf8();
        }
        hit
    }

    /// An RFC 9110 token (one or more tchar).
    fn token(&mut self) -> Result<&'a str, ()> {
        let rest = self.rest();
        let len = rest
            .bytes()
            .take_while(|&b| super::handshake::is_tchar(b))
            .count();
        if len == 0 {
            return Err(());
        }
        self.pos += len;
        Ok(rest.get(..len).unwrap_or_default())
    }

    /// A parameter value: a token, or a quoted string whose content (RFC 6455 9.1) must then
    /// be a token; escapes are refused (no token needs one).
    fn value(&mut self) -> Result<&'a str, ()> {
        if !self.eat('"') {
            return self.token();
        }
        let token = self.token()?;
        if !self.eat('"') {
            return Err(());
        }
        Ok(token)
    }
}

/// Compresses messages one at a time (no context kept between them) into complete frames.
///
/// ```
/// use shardcast::wire::deflate::{Deflater, Inflater};
/// use shardcast::wire::Opcode;
/// let json = br#"{"price":101.25,"qty":3,"side":"buy"}"#.repeat(20);
/// let frame = Deflater::new(6, 15).frame(Opcode::Text, &json).unwrap();
/// assert_eq!(frame[0], 0xC1); // FIN, RSV1 (compressed), text
/// assert!(frame.len() < json.len() / 4);
/// let body = &frame[2..]; // a header of 2 bytes: the body is under 126 bytes
/// assert_eq!(Inflater::new().inflate(body, 1 << 20).unwrap(), &json[..]);
/// ```
#[derive(Debug)]
pub struct Deflater {
    compress: Compress,
    /// The compressed body being built (reused).
    scratch: Vec<u8>,
}

impl Deflater {
    /// A compressor at zlib `level` (0-9, clamped) writing windows of `window_bits` (9-15,
    /// clamped).
    pub fn new(level: u32, window_bits: u8) -> Deflater {
        let bits = window_bits.clamp(WINDOW_BITS_MIN, WINDOW_BITS_MAX);
        Deflater {
            compress: Compress::new_with_window_bits(Compression::new(level.min(9)), false, bits),
            scratch: Vec::new(),
        }
    }

    /// The body of `message` compressed as RFC 7692 7.2.1 says (a raw deflate stream ending
    /// with a sync flush whose 4 last bytes are removed), in a buffer of the deflater's that
    /// the next call reuses.
    pub fn compress(&mut self, message: &[u8]) -> &[u8] {
        self.compress.reset();
        self.scratch.clear();
        // Enough for stored blocks (5 bytes per 16 KiB) and the flush: one pass, as a rule.
        self.scratch
            .reserve(message.len() + message.len() / 1024 * 5 + 64);
        let mut input = message;
        loop {
            let before = self.compress.total_in();
            // Errors only on a stream misuse (none here); then what came out is kept.
            let status = self
                .compress
                .compress_vec(input, &mut self.scratch, FlushCompress::Sync);
            let taken = usize::try_from(self.compress.total_in() - before).unwrap_or(input.len());
            input = input.get(taken..).unwrap_or_default();
            let room = self.scratch.capacity() - self.scratch.len();
            if status.is_err() || (input.is_empty() && room > 0) {
                break;
            }
            self.scratch.reserve(self.scratch.capacity().max(64));
        }
        if self.scratch.ends_with(&TRAILER) {
            self.scratch.truncate(self.scratch.len() - TRAILER.len());
        }
        &self.scratch
    }

    /// The complete compressed frame (FIN, RSV1, `opcode`) of `message`, in one allocation
    /// of exactly its size; `None` when compressing does not make the frame smaller.
    pub fn frame(&mut self, opcode: Opcode, message: &[u8]) -> Option<Bytes> {
        let body = self.compress(message);
        if frame::header_len(body.len()) + body.len()
            >= frame::header_len(message.len()) + message.len()
        {
            return None;
        }
        let mut out = BytesMut::with_capacity(frame::header_len(body.len()) + body.len());
        frame::put_header(&mut out, opcode, body.len());
        if let Some(first) = out.first_mut() {
            *first |= frame::RSV1;
        }
        out.put_slice(body);
        Some(out.freeze())
    }
}

/// Why a compressed message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InflateError {
    /// It inflates past the limit (close 1009).
    #[error("inflated message over the limit")]
    TooBig,
    /// It is not a valid deflate stream (close 1007).
    #[error("invalid compressed data")]
    Corrupt,
}

/// Output a refused or finished message may leave allocated in an [`Inflater`]; more is given
/// back after the message.
const KEEP_BYTES: usize = 64 << 10;

/// Inflates messages one at a time (no context kept between them), each within a limit.
///
/// One per shard: its window (32 KiB) and state (about 7 KiB) are the shard's, whatever the
/// number of clients. Its output buffer holds one message, at most `max + 1` bytes, and keeps
/// no more than 64 KiB between messages.
#[derive(Debug)]
pub struct Inflater {
    decompress: Decompress,
    out: Vec<u8>,
    /// Messages inflated, refused as too big, refused as corrupt, since the last
    /// [`Inflater::take_counts`].
    counts: InflateCounts,
}

/// What an [`Inflater`] did: messages inflated, and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InflateCounts {
    /// Messages inflated within their limit.
    pub inflated: u64,
    /// Messages refused because they inflate past their limit.
    pub too_big: u64,
    /// Messages refused because they are not a valid deflate stream.
    pub corrupt: u64,
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater::new()
    }
}

impl Inflater {
    /// An inflater for windows of up to 15 bits (every window a client may use).
    pub fn new() -> Inflater {
        Inflater {
            decompress: Decompress::new(false),
            out: Vec::new(),
            counts: InflateCounts::default(),
        }
    }

    /// What it did since the last call.
    pub fn take_counts(&mut self) -> InflateCounts {
        std::mem::take(&mut self.counts)
    }

    /// Inflates one message's compressed body (RFC 7692 7.2.2: the trailer is put back here).
    /// Stops with [`InflateError::TooBig`] as soon as more than `max` bytes come out: never
    /// more than `max + 1` bytes are held.
    ///
    /// # Errors
    ///
    /// [`InflateError::TooBig`] past `max`, [`InflateError::Corrupt`] for an invalid stream.
    pub fn inflate(&mut self, compressed: &[u8], max: usize) -> Result<&[u8], InflateError> {
        let result = self.run(compressed, max);
        let count = match result {
            Ok(()) => &mut self.counts.inflated,
            Err(InflateError::TooBig) => &mut self.counts.too_big,
            Err(InflateError::Corrupt) => &mut self.counts.corrupt,
        };
        *count += 1;
        result.map(|()| &self.out[..])
    }

    /// The body of [`Inflater::inflate`]: the message is in `out` when it succeeds.
    fn run(&mut self, compressed: &[u8], max: usize) -> Result<(), InflateError> {
        self.decompress.reset(false);
        if self.out.capacity() > KEEP_BYTES {
            self.out = Vec::new();
        }
        self.out.clear();
        let cap = max.saturating_add(1);
        for part in [compressed, &TRAILER[..]] {
            let mut input = part;
            loop {
                if self.out.len() == self.out.capacity() {
                    if self.out.len() >= cap {
                        return Err(InflateError::TooBig);
                    }
                    let want = self.out.capacity().max(1024).min(cap - self.out.len());
                    self.out.reserve_exact(want);
                }
                let before = self.decompress.total_in();
                let status = self
                    .decompress
                    .decompress_vec(input, &mut self.out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                let taken =
                    usize::try_from(self.decompress.total_in() - before).unwrap_or(input.len());
                input = input.get(taken..).unwrap_or_default();
                if self.out.len() > max {
                    return Err(InflateError::TooBig);
                }
                match status {
                    Status::StreamEnd => return Ok(()),
                    // Output full: there may be more to come; room is made above.
                    _ if self.out.len() == self.out.capacity() => {}
                    _ if input.is_empty() => break,
                    // Input left, room left, and no progress: cannot happen with a sync flush.
                    Status::BufError => return Err(InflateError::Corrupt),
                    Status::Ok => {}
                }
            }
        }
        Ok(())
    }

    /// Bytes the inflater holds for its output (its zlib state is fixed and not counted).
    pub fn capacity(&self) -> usize {
        self.out.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<Agreement> {
        negotiate([value.as_bytes()])
    }

    #[test]
    fn browsers_offers_are_accepted_with_both_no_context_takeover() {
        for value in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            "Permessage-Deflate ; Client_Max_Window_Bits",
        ] {
            let agreed = offer(value).unwrap_or_else(|| panic!("{value}"));
            assert_eq!(agreed, Agreement::DEFAULT, "{value}");
            assert_eq!(agreed.window_bits(), Some(15));
        }
    }

    #[test]
    fn the_server_window_is_honoured_and_answered() {
        for bits in 9..=15u8 {
            let agreed = offer(&format!(
                "permessage-deflate; server_max_window_bits={bits}"
            ));
            let agreed = agreed.unwrap();
            assert_eq!(agreed.window_bits(), Some(bits));
            assert!(
                agreed
                    .response()
                    .ends_with(&format!("; server_max_window_bits={bits}"))
            );
        }
        let eight = offer("permessage-deflate; server_max_window_bits=\"8\"").unwrap();
        assert_eq!(eight.window_bits(), None, "zlib cannot write 8-bit windows");
        assert!(eight.response().ends_with("server_max_window_bits=8"));
    }

    #[test]
    fn bad_or_repeated_parameters_decline_that_offer_only() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1a",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
            let fallback = offer(&format!("{bad}, permessage-deflate"));
            assert_eq!(fallback, Some(Agreement::DEFAULT), "{bad}");
        }
    }

    #[test]
    fn malformed_lists_offer_nothing_and_other_extensions_are_passed_over() {
        for bad in [
            "permessage-deflate;",
            "permessage-deflate; =3",
            "permessage-deflate server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=\"10",
            "permessage-deflate; server_max_window_bits=\"1\\0\"",
            "\"permessage-deflate\"",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        assert!(offer("x-webkit-deflate-frame, , permessage-deflate").is_some());
        assert!(offer("foo; a=\"b\"; c, permessage-deflate").is_some());
        assert_eq!(offer(""), None);
        // Across headers, the first acceptable offer wins.
        let both = negotiate([
            &b"permessage-deflate; bogus"[..],
            b"permessage-deflate; server_max_window_bits=12",
        ]);
        assert_eq!(both.unwrap().window_bits(), Some(12));
    }

    #[test]
    fn a_message_survives_the_round_trip_at_every_window_and_level() {
        let text: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"v\":{}}},", i * 7 % 13).into_bytes())
            .collect();
        let mut inflater = Inflater::new();
        for bits in 9..=15 {
            for level in [0, 1, 6, 9] {
                let mut deflater = Deflater::new(level, bits);
                let body = deflater.compress(&text).to_vec();
                assert!(!body.ends_with(&TRAILER));
                assert_eq!(inflater.inflate(&body, text.len()).unwrap(), &text[..]);
            }
        }
    }

    #[test]
    fn an_inflated_message_past_the_limit_is_refused_without_holding_more() {
        let bomb = Deflater::new(9, 15).compress(&vec![0u8; 10 << 20]).to_vec();
        assert!(bomb.len() < 20 << 10, "{}", bomb.len());
        let mut inflater = Inflater::new();
        for max in [0, 1, 1000, 64 << 10, (10 << 20) - 1] {
            assert_eq!(
                inflater.inflate(&bomb, max),
                Err(InflateError::TooBig),
                "{max}"
            );
            assert!(
                inflater.capacity() <= max + 1 || inflater.capacity() == 0,
                "{max}"
            );
        }
        assert_eq!(
            inflater.inflate(&bomb, 10 << 20).map(<[u8]>::len),
            Ok(10 << 20)
        );
    }

    #[test]
    fn corrupt_streams_are_refused() {
        let mut inflater = Inflater::new();
        // Block type 3 is reserved.
        assert_eq!(
            inflater.inflate(&[0xff, 0xff], 100),
            Err(InflateError::Corrupt)
        );
        // A distance before the start of the message (no context is kept).
        let mut deflater = Deflater::new(6, 15);
        let body = deflater.compress(b"hello hello hello hello").to_vec();
        assert!(inflater.inflate(&body, 100).is_ok());
        assert_eq!(inflater.inflate(&[], 100).map(<[u8]>::len), Ok(0));
    }

    #[test]
    fn frames_are_only_made_when_smaller() {
        let mut deflater = Deflater::new(6, 15);
        assert_eq!(deflater.frame(Opcode::Binary, &[1, 2, 3, 4, 5]), None);
        let long = vec![b'a'; 300];
        let frame = deflater.frame(Opcode::Binary, &long).unwrap();
        assert_eq!(frame[0], 0x80 | frame::RSV1 | 0x2);
        assert_eq!(usize::from(frame[1]), frame.len() - 2);
    }
}
