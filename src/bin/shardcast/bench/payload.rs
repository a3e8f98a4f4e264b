//! What a publication carries, and what a receiver reads back of it: the stamp (send time,
//! publisher, sequence, topic) in one of two formats.
//!
//! - **Binary** (`--payload B`, the default): `u64le send time | u32le publisher | u32le
//!   sequence`, with `--topics` then `u32le topic` ([`super::topics::STAMP_BYTES`]), then
//!   filler bytes up to B; binary frames.
//! - **JSON** (`--payload-json B`): a realistic document of about B bytes (never more), an
//!   order-book update whose keys repeat as real JSON's do and whose numbers vary from message
//!   to message, drawn from a PRNG seeded by the message (publisher, sequence, topic); text
//!   frames. Its first member is the stamp, in fixed-width hex so that it sits at a known
//!   place: `{"stamp":"` then 16 hex digits of send time, 8 of publisher, 8 of sequence, 8 of
//!   topic (0 without topics) and 8 of the document's own length in bytes, then `",`. A
//!   receiver checks the prefix, the hex, the length and the closing brace: a document cut,
//!   grown or garbled (by a bad inflate, say) counts as lost.
//!
//! # Invariants
//!
//! - A JSON document is valid JSON, at most the size asked for, and the same bytes for the
//!   same message whatever the send time (apart from the send time's hex digits).
//! - [`read_json`] accepts exactly what [`json`] writes, and [`read_binary`] what [`binary`]
//!   writes.

use std::io::Write;

/// The format of the payloads of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// A binary stamp and filler bytes, in binary frames (`--payload`).
    Binary,
    /// A JSON document, in text frames (`--payload-json`).
    Json,
}

impl Format {
    /// How reports name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Binary => "binary",
            Format::Json => "json",
        }
    }
}

/// What every payload carries, whatever its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Send time, in ns since the bench's epoch.
    pub(crate) sent: u64,
    /// The publisher that sent it.
    pub(crate) publisher: u32,
    /// Its sequence number, per publisher (and topic).
    pub(crate) seq: u32,
    /// Its topic (0 without `--topics`).
    pub(crate) topic: u32,
}

/// Bytes of the binary stamp without topics.
pub(crate) const BINARY_STAMP_BYTES: usize = 16;

/// Writes the binary stamp into the start of `payload` (at least 16 bytes, or 20 with
/// `named_topics`), leaving the rest as it is.
pub(crate) fn binary(payload: &mut [u8], stamp: Stamp, named_topics: bool) {
    payload[0..8].copy_from_slice(&stamp.sent.to_le_bytes());
    payload[8..12].copy_from_slice(&stamp.publisher.to_le_bytes());
    payload[12..16].copy_from_slice(&stamp.seq.to_le_bytes());
    if named_topics {
        payload[16..20].copy_from_slice(&stamp.topic.to_le_bytes());
    }
}

/// The binary stamp at the start of `payload`; `None` if it is too short for one.
pub(crate) fn read_binary(payload: &[u8], named_topics: bool) -> Option<Stamp> {
    let field = |r: std::ops::Range<usize>| -> Option<u64> {
        Some(
            payload
                .get(r)?
                .iter()
                .rev()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        )
    };
    Some(Stamp {
        sent: field(0..8)?,
        publisher: field(8..12)? as u32,
        seq: field(12..16)? as u32,
        topic: if named_topics {
            field(16..20)? as u32
        } else {
            0
        },
    })
}

/// How a JSON document starts: its stamp member, whose hex digits follow.
const JSON_PREFIX: &[u8] = br#"{"stamp":""#;

/// Hex digits of the stamp: time 16, publisher 8, sequence 8, topic 8, length 8.
const JSON_HEX_DIGITS: usize = 48;

/// The smallest `--payload-json`: the stamp, the fixed members and one level of the book.
pub(crate) const JSON_MIN_BYTES: u64 = 256;

/// The products the documents are about.
const PRODUCTS: [&str; 8] = [
    "BTC-USD", "ETH-USD", "SOL-USD", "BTC-EUR", "ETH-BTC", "XRP-USD", "ADA-USD", "DOGE-USD",
];

/// How a document ends: the checksum member (at most 10 digits) and the closing brace.
const JSON_TAIL_MAX: usize = r#"],"checksum":4294967295}"#.len();

/// splitmix64: a cheap PRNG, seeded per message.
#[derive(Clone, Copy, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes into `out` (cleared first) the JSON document of the message `stamp` names, of about
/// `size` bytes and at most `size` (at least [`JSON_MIN_BYTES`]).
///
/// An order-book update: `{"stamp":"…","type":"l2update","product":"BTC-USD","time_ms":…,
/// "changes":[{"side":"buy","price":43125.50,"size":0.81234567,"orders":3},…],
/// "checksum":…}`, as many levels as fit.
pub(crate) fn json(out: &mut Vec<u8>, size: usize, stamp: Stamp) {
    out.clear();
    let seed = (u64::from(stamp.publisher) << 32 | u64::from(stamp.seq))
        ^ u64::from(stamp.topic).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut rng = Rng(seed);
    out.extend_from_slice(JSON_PREFIX);
    // The hex digits are written last, when the length is known.
    out.resize(JSON_PREFIX.len() + JSON_HEX_DIGITS, b'0');
    let product = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
    // Writing into a `Vec` cannot fail.
    let _ = write!(
        out,
        r#"","type":"l2update","product":"{product}","time_ms":{},"changes":["#,
        1_700_000_000_000 + rng.below(100_000_000_000)
    );
    // Prices in cents around a price of the message's own, sizes in units of 1e-8.
    let mut cents = 1_000_000 + rng.below(6_000_000);
    let mut levels = 0u32;
    loop {
        let mark = out.len();
        if levels > 0 {
            out.push(b',');
        }
        let side = if rng.below(2) == 0 { "buy" } else { "sell" };
        cents = (cents + rng.below(500)).saturating_sub(250).max(100);
        // Mostly under 1, now and then up to 100.
        let most = if rng.below(4) == 0 {
            10_000_000_000
        } else {
            100_000_000
        };
        let units = 1 + rng.below(most);
        let _ = write!(
            out,
            r#"{{"side":"{side}","price":{}.{:02},"size":{}.{:08},"orders":{}}}"#,
            cents / 100,
            cents % 100,
            units / 100_000_000,
            units % 100_000_000,
            1 + rng.below(40)
        );
        if out.len() + JSON_TAIL_MAX > size && levels > 0 {
            out.truncate(mark);
            break;
        }
        levels += 1;
    }
    let _ = write!(out, r#"],"checksum":{}}}"#, rng.next() as u32);
    let len = out.len() as u64;
    let mut hex = [0u8; JSON_HEX_DIGITS];
    put_hex(&mut hex[0..16], stamp.sent);
    put_hex(&mut hex[16..24], stamp.publisher.into());
    put_hex(&mut hex[24..32], stamp.seq.into());
    put_hex(&mut hex[32..40], stamp.topic.into());
    put_hex(&mut hex[40..48], len);
    out[JSON_PREFIX.len()..JSON_PREFIX.len() + JSON_HEX_DIGITS].copy_from_slice(&hex);
}

/// Writes the low `4 x out.len()` bits of `v` into `out` as lowercase hex, most significant
/// first.
fn put_hex(out: &mut [u8], mut v: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// The value of the hex digits `digits`; `None` if one is not a lowercase hex digit.
fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |v, &d| {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(v << 4 | u64::from(nibble))
    })
}

/// The stamp of a JSON document [`json`] wrote; `None` if `doc` does not start with one, does
/// not end with `}`, or is not as long as its stamp says.
pub(crate) fn read_json(doc: &[u8]) -> Option<Stamp> {
    let digits = doc
        .strip_prefix(JSON_PREFIX)?
        .get(..JSON_HEX_DIGITS + 1)?
        .strip_suffix(b"\"")?;
    let len = hex(&digits[40..48])?;
    if len != doc.len() as u64 || doc.last() != Some(&b'}') {
        return None;
    }
    Some(Stamp {
        sent: hex(&digits[0..16])?,
        publisher: hex(&digits[16..24])? as u32,
        seq: hex(&digits[24..32])? as u32,
        topic: hex(&digits[32..40])? as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u32, seq: u32, topic: u32) -> Stamp {
        Stamp {
            sent: 0x0123_4567_89ab_cdef,
            publisher,
            seq,
            topic,
        }
    }

    #[test]
    fn a_json_document_is_valid_json_of_about_its_size_and_carries_its_stamp() {
        let mut doc = Vec::new();
        for size in [JSON_MIN_BYTES as usize, 300, 1024, 4096, 16 << 10, 1 << 20] {
            for seq in 0..50 {
                let s = stamp(seq % 3, seq, seq % 7);
                json(&mut doc, size, s);
                let parsed: serde_json::Value = serde_json::from_slice(&doc)
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&doc)));
                assert!(doc.len() <= size, "{} > {size}", doc.len());
                assert!(doc.len() + 100 >= size, "{} for {size}", doc.len());
                assert_eq!(read_json(&doc), Some(s));
                let changes = parsed["changes"].as_array().expect("changes");
                assert!(!changes.is_empty());
                assert!(
                    changes
                        .iter()
                        .all(|c| c["price"].is_f64() && c["orders"].is_u64())
                );
            }
        }
    }

    #[test]
    fn documents_differ_by_message_and_repeat_for_the_same_one() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        json(&mut a, 1024, stamp(0, 1, 0));
        json(&mut b, 1024, stamp(0, 1, 0));
        assert_eq!(a, b);
        // Another message: other numbers, the same keys.
        json(&mut b, 1024, stamp(0, 2, 0));
        assert_ne!(a[60..], b[60..]);
        let count = |doc: &[u8], key: &[u8]| doc.windows(key.len()).filter(|w| w == &key).count();
        assert!(
            count(&a, b"\"price\":") >= 10,
            "{}",
            String::from_utf8_lossy(&a)
        );
        // The send time changes the stamp only.
        let mut later = Vec::new();
        json(
            &mut later,
            1024,
            Stamp {
                sent: 7,
                ..stamp(0, 1, 0)
            },
        );
        assert_eq!(a[60..], later[60..]);
    }

    #[test]
    fn a_cut_grown_or_garbled_document_has_no_stamp() {
        let mut doc = Vec::new();
        json(&mut doc, 1024, stamp(2, 9, 1));
        assert!(read_json(&doc).is_some());
        assert_eq!(read_json(&doc[..doc.len() - 1]), None);
        let mut grown = doc.clone();
        grown.push(b'}');
        assert_eq!(read_json(&grown), None);
        let mut garbled = doc.clone();
        garbled[12] = b'g';
        assert_eq!(read_json(&garbled), None);
        assert_eq!(read_json(b"{}"), None);
        assert_eq!(read_json(&doc[..20]), None);
    }

    #[test]
    fn the_binary_stamp_round_trips() {
        let mut payload = vec![0xab; 32];
        for topics in [false, true] {
            let s = stamp(3, 77, if topics { 5 } else { 0 });
            binary(&mut payload, s, topics);
            assert_eq!(read_binary(&payload, topics), Some(s));
        }
        assert_eq!(read_binary(&payload[..15], false), None);
        assert_eq!(read_binary(&payload[..19], true), None);
    }
}
