//! The `batch_envelope` target: the envelope decoder against a naive one, and the round trip.

use bytes::BytesMut;

use super::reader::Reader;
use crate::Payload;
use crate::wire::Opcode;
use crate::wire::envelope::{self, EnvelopeError};

/// Most bodies cut from one input for the round trip.
const BODIES_MAX: usize = 64;

/// The batch envelope decoder on arbitrary bytes, and the encode → decode round trip of bodies
/// cut from them.
///
/// Checks: [`envelope::decode`] never panics and agrees with a naive reference decoder (same
/// bodies, same error); what it accepts holds at most `input.len() / 4` bodies (it allocates
/// nothing, and a count never makes anyone else allocate more than the input justifies) and
/// re-encodes to exactly the input. Bodies cut from the input at lengths it gives encode to
/// [`envelope::encoded_len`] bytes appended after what `out` held, decode back to the same
/// bodies, travel in [`envelope::encode_frame`] as one binary frame, and the envelope cut short
/// or given a trailing byte is rejected (truncated / count too large, trailing).
pub fn batch_envelope(data: &[u8]) {
    let decoded = envelope::decode(data);
    assert_eq!(
        decoded.clone().map(|b| b.collect::<Vec<_>>()),
        reference_decode(data),
        "decode disagrees with the reference"
    );
    if let Ok(bodies) = decoded {
        assert!(bodies.len() <= data.len() / 4);
        let mut out = BytesMut::new();
        envelope::encode(bodies.clone(), &mut out);
        assert_eq!(&out[..], data, "a decoded envelope re-encodes to itself");
        assert_eq!(envelope::encoded_len(bodies), data.len());
    }

    let mut r = Reader::new(data);
    let mut bodies: Vec<&[u8]> = Vec::new();
    while !r.is_empty() && bodies.len() < BODIES_MAX {
        let len = usize::from(r.u8());
        bodies.push(r.bytes(len));
    }
    let prefix = &data[..data.len().min(3)];
    let mut out = BytesMut::from(prefix);
    envelope::encode(bodies.iter().copied(), &mut out);
    assert_eq!(&out[..prefix.len()], prefix, "encode appends");
    let encoded = out.split_off(prefix.len()).freeze();
    assert_eq!(encoded.len(), envelope::encoded_len(bodies.iter().copied()));
    let back: Vec<&[u8]> = envelope::decode(&encoded)
        .expect("an encoded envelope decodes")
        .collect();
    assert_eq!(back, bodies);

    let framed = envelope::encode_frame(bodies.iter().copied());
    let payload = Payload::from_frame(framed).expect("encode_frame builds one frame");
    assert_eq!(payload.opcode(), Opcode::Binary);
    assert_eq!(payload.body(), &encoded[..]);

    let cut = data.len().wrapping_mul(7) % encoded.len();
    assert!(matches!(
        envelope::decode(&encoded[..cut]),
        Err(EnvelopeError::Truncated | EnvelopeError::CountTooLarge)
    ));
    let mut longer = encoded.to_vec();
    longer.push(data.first().copied().unwrap_or(0));
    assert_eq!(
        envelope::decode(&longer).map(|b| b.len()),
        Err(EnvelopeError::Trailing)
    );
}

/// A straightforward envelope decoder, as the format's description reads.
fn reference_decode(input: &[u8]) -> Result<Vec<&[u8]>, EnvelopeError> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = input.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0).ok_or(EnvelopeError::Truncated)?;
    // Each body takes at least its 4-byte length.
    if count.saturating_mul(4) > input.len() - 4 {
        return Err(EnvelopeError::CountTooLarge);
    }
    let mut bodies = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let len = u32_at(at).ok_or(EnvelopeError::Truncated)?;
        let body = input
            .get(at + 4..)
            .and_then(|rest| rest.get(..len))
            .ok_or(EnvelopeError::Truncated)?;
        bodies.push(body);
        at += 4 + len;
    }
    if at != input.len() {
        return Err(EnvelopeError::Trailing);
    }
    Ok(bodies)
}
