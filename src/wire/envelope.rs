//! The batch envelope: `u32le count | (u32le len | bytes)*`.
//!
//! Several messages sent as one WebSocket message (TopGun's BATCH body). A shard builds it
//! once per tick and shares it with every client that is caught up.
//!
//! # Invariants
//!
//! - [`decode`] validates the whole envelope before yielding anything, never allocates, and
//!   trusts no count or length: each is checked against the bytes actually present.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{self, Opcode};

/// Bytes taken by the count and by each length prefix.
const PREFIX_LEN: usize = 4;

/// Bytes the envelope of these bodies takes.
///
/// ```
/// use shardcast::wire::envelope;
/// assert_eq!(envelope::encoded_len([&b"ab"[..], b"c"]), 4 + (4 + 2) + (4 + 1));
/// ```
pub fn encoded_len<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> usize {
    bodies
        .into_iter()
        .fold(PREFIX_LEN, |sum, body| sum + PREFIX_LEN + body.len())
}

/// Appends the envelope of `bodies` to `out`, reserving the exact space first.
///
/// # Panics
///
/// If there are more than `u32::MAX` bodies or a body is longer than `u32::MAX` bytes: the
/// format cannot express them. Bodies are the application's, never a peer's.
///
/// ```
/// use bytes::BytesMut;
/// use shardcast::wire::envelope;
/// let mut out = BytesMut::new();
/// envelope::encode([&b"ab"[..], b"c"], &mut out);
/// assert_eq!(&out[..], b"\x02\0\0\0\x02\0\0\0ab\x01\0\0\0c");
/// ```
pub fn encode<'a>(bodies: impl IntoIterator<Item = &'a [u8]> + Clone, out: &mut BytesMut) {
    let (count, len) = bodies
        .clone()
        .into_iter()
        .fold((0usize, PREFIX_LEN), |(count, len), body| {
            (count + 1, len + PREFIX_LEN + body.len())
        });
    out.reserve(len);
    out.put_u32_le(to_u32(count));
    for body in bodies {
        out.put_u32_le(to_u32(body.len()));
        out.put_slice(body);
    }
}

/// A complete binary WebSocket frame whose payload is the envelope of `bodies`, in one
/// allocation.
///
/// # Panics
///
/// As [`encode`].
///
/// ```
/// use shardcast::wire::envelope;
/// let frame = envelope::encode_frame([&b"x"[..]]);
/// assert_eq!(&frame[..], b"\x82\x09\x01\0\0\0\x01\0\0\0x");
/// ```
pub fn encode_frame<'a>(bodies: impl IntoIterator<Item = &'a [u8]> + Clone) -> Bytes {
    let payload_len = encoded_len(bodies.clone());
    let mut out = BytesMut::with_capacity(frame::header_len(payload_len) + payload_len);
    frame::put_header(&mut out, Opcode::Binary, payload_len);
    encode(bodies, &mut out);
    out.freeze()
}

/// `n` as a `u32` length field.
fn to_u32(n: usize) -> u32 {
    match u32::try_from(n) {
        Ok(n) => n,
        Err(_) => panic!("envelope field {n} exceeds u32::MAX"),
    }
}

/// Why an envelope could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The input ends inside the count, a length or a body. Reject the message.
    #[error("envelope truncated")]
    Truncated,
    /// Bytes remain after the last body. Reject the message.
    #[error("envelope has trailing bytes")]
    Trailing,
    /// The count says more bodies than the input could hold (each takes at least 4 bytes).
    /// Reject the message.
    #[error("envelope count too large for its length")]
    CountTooLarge,
}

/// Validates the whole envelope, then iterates its bodies. Never allocates; a count or length
/// field larger than the input is an error, not an allocation.
///
/// # Errors
///
/// An [`EnvelopeError`] when the envelope is malformed.
///
/// ```
/// use shardcast::wire::envelope;
/// let bodies = envelope::decode(b"\x02\0\0\0\x02\0\0\0ab\x01\0\0\0c")?;
/// assert_eq!(bodies.collect::<Vec<_>>(), [&b"ab"[..], b"c"]);
/// # Ok::<(), envelope::EnvelopeError>(())
/// ```
pub fn decode(input: &[u8]) -> Result<Bodies<'_>, EnvelopeError> {
    let (count, rest) = split_u32(input).ok_or(EnvelopeError::Truncated)?;
    if count > rest.len() / PREFIX_LEN {
        return Err(EnvelopeError::CountTooLarge);
    }
    let mut walk = rest;
    for _ in 0..count {
        let (len, after) = split_u32(walk).ok_or(EnvelopeError::Truncated)?;
        let (_, after) = after
            .split_at_checked(len)
            .ok_or(EnvelopeError::Truncated)?;
        walk = after;
    }
    if !walk.is_empty() {
        return Err(EnvelopeError::Trailing);
    }
    Ok(Bodies {
        rest,
        remaining: count,
    })
}

/// Splits a little-endian `u32` off the front of `input`.
fn split_u32(input: &[u8]) -> Option<(usize, &[u8])> {
    let (head, rest) = input.split_first_chunk::<PREFIX_LEN>()?;
    let n = usize::try_from(u32::from_le_bytes(*head)).ok()?;
    Some((n, rest))
}

/// Iterator over the bodies of a validated envelope, as slices of its input.
#[derive(Clone, Debug)]
pub struct Bodies<'a> {
    /// The length-prefixed bodies not yet yielded.
    rest: &'a [u8],
    /// How many bodies `rest` holds.
    remaining: usize,
}

impl<'a> Iterator for Bodies<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        // `decode` validated every prefix, so these splits succeed.
        let (len, after) = split_u32(self.rest)?;
        let (body, after) = after.split_at_checked(len)?;
        self.rest = after;
        self.remaining -= 1;
        Some(body)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Bodies<'_> {}
