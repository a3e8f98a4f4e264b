//! Incremental UTF-8 validation with at most 3 bytes carried between chunks.
//!
//! # Invariants
//!
//! - `carry[..carry_len]` is a valid but incomplete prefix of one UTF-8 sequence, so
//!   `carry_len <= 3`. Everything pushed before it has been validated.
//! - An invalid byte is reported by the [`Utf8::push`] call that delivers it ("fail fast"):
//!   only a prefix that can still become valid is ever carried.

use std::str;

/// The pushed bytes are not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

/// Validates a UTF-8 stream that arrives in chunks cut anywhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Utf8 {
    /// The incomplete sequence at the end of the last chunk (first `carry_len` bytes).
    carry: [u8; 3],
    /// How many bytes of `carry` are in use: 0..=3.
    carry_len: u8,
}

impl Utf8 {
    /// Forgets any carried bytes: the start of a new message.
    pub(crate) fn reset(&mut self) {
        self.carry_len = 0;
    }

    /// Validates the next chunk of the stream.
    ///
    /// # Errors
    ///
    /// [`Invalid`] as soon as the bytes seen so far cannot be a prefix of valid UTF-8.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), Invalid> {
        let mut rest = chunk;
        if self.carry_len > 0 {
            rest = self.complete_carry(rest)?;
            if self.carry_len > 0 {
                // The chunk was too short to finish the carried sequence.
                return Ok(());
            }
        }
        match str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Invalid),
            Err(e) => {
                // INVARIANT: `error_len() == None` means the input ends inside a sequence
                // that is valid so far; a sequence is at most 4 bytes, so the tail is 1..=3.
                let tail = rest.get(e.valid_up_to()..).unwrap_or_default();
                self.store(tail)
            }
        }
    }

    /// Feeds the start of `rest` to the carried sequence; returns what is left of `rest`.
    fn complete_carry<'a>(&mut self, rest: &'a [u8]) -> Result<&'a [u8], Invalid> {
        let have = usize::from(self.carry_len);
        let mut seq = [0u8; 4];
        let carried = self.carry.get(..have).ok_or(Invalid)?;
        seq[..have].copy_from_slice(carried);
        let want = sequence_len(self.carry[0]).saturating_sub(have);
        let take = want.min(rest.len());
        let (head, tail) = rest.split_at(take);
        let seq = seq.get_mut(..have + take).ok_or(Invalid)?;
        seq[have..].copy_from_slice(head);
        match str::from_utf8(seq) {
            Ok(_) => {
                self.carry_len = 0;
                Ok(tail)
            }
            Err(e) if e.error_len().is_some() => Err(Invalid),
            // Still incomplete: `rest` is exhausted (`take == rest.len()`), so `tail` is empty.
            Err(_) => self.store(seq).map(|()| tail),
        }
    }

    /// Carries `tail`, an incomplete sequence prefix, into the next chunk.
    fn store(&mut self, tail: &[u8]) -> Result<(), Invalid> {
        let slot = self.carry.get_mut(..tail.len()).ok_or(Invalid)?;
        slot.copy_from_slice(tail);
        // INVARIANT: `tail.len() <= 3` (it fitted in `carry`).
        self.carry_len = tail.len() as u8;
        Ok(())
    }
}

/// The length of the sequence that lead byte `b` starts (4 for anything unexpected, which
/// `str::from_utf8` then rejects).
fn sequence_len(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(bytes: &[u8]) -> Vec<Result<(), Invalid>> {
        (0..=bytes.len())
            .map(|cut| {
                let mut v = Utf8::default();
                v.push(&bytes[..cut])?;
                v.push(&bytes[cut..])?;
                if v.carry_len == 0 {
                    Ok(())
                } else {
                    Err(Invalid)
                }
            })
            .collect()
    }

    #[test]
    fn valid_text_split_anywhere_is_valid() {
        let text = "aé€𝄞z".as_bytes();
        assert!(split_everywhere(text).iter().all(Result::is_ok));
    }

    #[test]
    fn invalid_text_split_anywhere_is_invalid() {
        for bad in [
            &b"a\xFFb"[..],
            b"\xE0\x80\x80",
            b"\xED\xA0\x80",
            b"\xF4\x90\x80\x80",
            b"\xCE",
        ] {
            assert!(split_everywhere(bad).iter().all(Result::is_err), "{bad:?}");
        }
    }

    #[test]
    fn byte_at_a_time_fails_on_the_first_impossible_byte() {
        // U+10FFFF is F4 8F BF BF; F4 90 can never be valid.
        let mut v = Utf8::default();
        assert_eq!(v.push(b"\xF4"), Ok(()));
        assert_eq!(v.push(b"\x90"), Err(Invalid));
        let mut v = Utf8::default();
        for b in "𝄞€é".bytes() {
            assert_eq!(v.push(&[b]), Ok(()));
        }
        assert_eq!(v.carry_len, 0);
    }
}
