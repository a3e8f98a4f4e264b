//! `Interest`: which shards have subscribers of which topics, engine-wide, read without a lock,
//! so that a publication is pushed only to shards that will deliver it.
//!
//! Topics are hashed into [`INTEREST_BUCKETS`] buckets; each bucket holds one bit per shard.
//! A shard sets its bit when it gets its first topic in the bucket and clears it when it loses
//! its last one (its topic index counts them), so a bit is written only when a shard's
//! subscriber count for a topic goes 0 -> 1 or 1 -> 0, and only by that shard's thread. Two
//! topics in one bucket can make a publication reach a shard with subscribers of the other
//! one: it then delivers nothing there, at the cost of one wake-up. A bit is never missing:
//!
//! # Ordering
//!
//! A shard sets its bit (Release) before it answers the subscribe, or before the handler that
//! subscribed returns; a publisher reads the bits (Acquire) when it publishes. So a
//! publication that starts after a subscription was acknowledged sees the bit and reaches the
//! shard, where it is applied after the subscription (the shard's queue is in order).

use crate::audience::Audience;
use crate::compression::Compression;
use crate::payload::Payload;
use crate::wire::deflate::{WINDOW_BITS_MAX, WINDOW_BITS_MIN};
use crossbeam_utils::CachePadded;
use smallvec::SmallVec;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Buckets of the interest table: a power of two. A bucket takes as many bits as there are
/// shards, rounded up to a power of two (a multiple of 64 past 64 shards), packed: 16 KiB for
/// 2 shards, 128 KiB for 16, 512 KiB for 64. The table is read once per publication and
/// shard, at a random bucket, so its size is its cost: at 512 KiB for every shard count, one
/// publication in two missed the cache there. A publication reaches a shard without subscribers of
/// its topic when that shard has another topic in the same bucket, with probability about
/// (its topics / 65,536): 15% with 10,000 topics, where 4,096 buckets sent nearly every
/// publication to every shard. Sharing costs a wasted push, never a miss.
pub(crate) const INTEREST_BUCKETS: usize = 1 << 16;

/// One bit per (bucket, shard), and the engine-wide count of subscriptions.
#[derive(Debug)]
pub(crate) struct Interest {
    /// Bits per bucket: the shard count rounded up to a power of two, or to a multiple of 64
    /// past 64 shards, so that a bucket's bits never straddle two words.
    stride: usize,
    /// `INTEREST_BUCKETS x stride` bits, bucket after bucket.
    bits: Box<[AtomicU64]>,
    /// Subscriptions (client, topic) held by every shard; at most `subscriptions_max`.
    subscriptions: CachePadded<AtomicUsize>,
    /// `Config::subscriptions_max`.
    subscriptions_max: usize,
    /// Open clients that negotiated permessage-deflate, by the window the server compresses
    /// for them (index: bits - 9): which compressed variants a broadcast needs. Written at
    /// admission and close only.
    deflate: CachePadded<[AtomicUsize; WINDOWS]>,
    /// Messages compressed, by any thread ([`Stats::compressions`](crate::Stats::compressions)).
    compressions: CachePadded<AtomicU64>,
}

/// Window sizes a server may compress with: 9 to 15 bits.
const WINDOWS: usize = (WINDOW_BITS_MAX - WINDOW_BITS_MIN + 1) as usize;

/// The window sizes of [`Interest::deflate_windows`].
pub(crate) type Windows = SmallVec<[u8; WINDOWS]>;

impl Interest {
    /// A table for `shards` shards, with no interest, and no bound on subscriptions.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn new(shards: usize) -> Interest {
        Interest::bounded(shards, usize::MAX)
    }

    /// A table for `shards` shards, with no interest, holding at most `subscriptions_max`
    /// subscriptions engine-wide.
    pub(crate) fn bounded(shards: usize, subscriptions_max: usize) -> Interest {
        let stride = match shards {
            0..=64 => shards.max(1).next_power_of_two(),
            _ => shards.div_ceil(64) * 64,
        };
        Interest {
            stride,
            bits: (0..(INTEREST_BUCKETS * stride).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            subscriptions: CachePadded::new(AtomicUsize::new(0)),
            subscriptions_max,
            deflate: CachePadded::new(Default::default()),
            compressions: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// The counter of clients compressed for with `bits`-bit windows, if `bits` is one.
    fn window(&self, bits: u8) -> Option<&AtomicUsize> {
        self.deflate
            .get(usize::from(bits.checked_sub(WINDOW_BITS_MIN)?))
    }

    /// An open client now gets frames compressed with `bits`-bit windows.
    pub(crate) fn deflate_joined(&self, bits: u8) {
        if let Some(n) = self.window(bits) {
            // Relaxed: a broadcast compressed without seeing this client reaches it plain,
            // which RFC 7692 allows (any message may go uncompressed).
            n.fetch_add(1, Relaxed);
        }
    }

    /// A client counted by [`Interest::deflate_joined`] left.
    pub(crate) fn deflate_left(&self, bits: u8) {
        if let Some(n) = self.window(bits) {
            n.fetch_sub(1, Relaxed);
        }
    }

    /// The window sizes some open client negotiated, smallest first: those a broadcast is
    /// compressed for (none, in an engine without such clients).
    pub(crate) fn deflate_windows(&self) -> Windows {
        (WINDOW_BITS_MIN..=WINDOW_BITS_MAX)
            .zip(self.deflate.iter())
            .filter(|(_, n)| n.load(Relaxed) > 0)
            .map(|(bits, _)| bits)
            .collect()
    }

    /// Compresses `payloads` once for every window size open clients negotiated, as
    /// `compression` says: where a broadcast is published, before it reaches the shards.
    pub(crate) fn compress(&self, payloads: &mut [Payload], compression: &Compression) {
        if !compression.enabled {
            return;
        }
        let windows = self.deflate_windows();
        if windows.is_empty() {
            return;
        }
        let made: usize = payloads
            .iter_mut()
            .map(|p| p.compress(&windows, compression))
            .sum();
        self.count_compressions(made);
    }

    /// Counts `n` messages compressed.
    pub(crate) fn count_compressions(&self, n: usize) {
        if n > 0 {
            self.compressions.fetch_add(n as u64, Relaxed);
        }
    }

    /// Messages compressed so far.
    pub(crate) fn compressions(&self) -> u64 {
        self.compressions.load(Relaxed)
    }

    /// Takes room for one subscription, engine-wide; `Err(max)` if there is none.
    pub(crate) fn take_subscription(&self) -> Result<(), usize> {
        // Relaxed: a count bounding memory, ordering nothing else.
        self.subscriptions
            .fetch_update(Relaxed, Relaxed, |n| {
                (n < self.subscriptions_max).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| self.subscriptions_max)
    }

    /// Gives back the room of one subscription.
    pub(crate) fn give_subscription(&self) {
        self.subscriptions.fetch_sub(1, Relaxed);
    }

    /// The bucket of a topic's hash.
    pub(crate) fn bucket(hash: u64) -> usize {
        // The high bits: the per-shard maps use the low ones.
        (hash >> 48) as usize & (INTEREST_BUCKETS - 1)
    }

    /// The word and bit of `shard` in `bucket`.
    fn at(&self, bucket: usize, shard: usize) -> (&AtomicU64, u64) {
        let bit = bucket * self.stride + shard;
        (&self.bits[bit / 64], 1 << (bit % 64))
    }

    /// Marks `shard` as having a topic in `bucket`. Called by that shard only.
    pub(crate) fn set(&self, bucket: usize, shard: usize) {
        let (word, bit) = self.at(bucket, shard);
        word.fetch_or(bit, Release);
    }

    /// Marks `shard` as having no topic in `bucket`. Called by that shard only.
    pub(crate) fn clear(&self, bucket: usize, shard: usize) {
        let (word, bit) = self.at(bucket, shard);
        word.fetch_and(!bit, Release);
    }

    /// Whether `shard` may have clients in `audience`: always for an audience not limited to
    /// topics; for topics, if its bit is set in one of their buckets.
    pub(crate) fn wants(&self, audience: &Audience, shard: usize) -> bool {
        match audience.topic_filter() {
            None => true,
            Some(topics) => topics.iter().any(|topic| {
                let (word, bit) = self.at(Interest::bucket(topic.hash()), shard);
                word.load(Acquire) & bit != 0
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topic;

    #[test]
    fn a_shard_is_wanted_exactly_while_its_bit_is_set() {
        let interest = Interest::new(130);
        let news = Topic::new("news");
        let audience = Audience::topic(&news);
        let bucket = Interest::bucket(news.hash());
        assert!(!interest.wants(&audience, 129));
        interest.set(bucket, 129);
        assert!(interest.wants(&audience, 129));
        assert!(!interest.wants(&audience, 65), "another shard's bit");
        assert!(interest.wants(&Audience::ALL, 65), "no topic: every shard");
        interest.clear(bucket, 129);
        assert!(!interest.wants(&audience, 129));
        assert!(!interest.wants(&Audience::topics(Vec::<Topic>::new()), 0));
    }

    /// Whether the bit of (`bucket`, `shard`) is set.
    fn is_set(interest: &Interest, bucket: usize, shard: usize) -> bool {
        let (word, bit) = interest.at(bucket, shard);
        word.load(Acquire) & bit != 0
    }

    #[test]
    fn packed_buckets_keep_every_shards_bit_apart() {
        for shards in [1, 2, 3, 5, 8, 33, 64, 65, 130] {
            let interest = Interest::new(shards);
            let last = INTEREST_BUCKETS - 1;
            for bucket in [0, 1, 2, 31, 32, 63, 64, last - 1, last] {
                for shard in 0..shards {
                    interest.set(bucket, shard);
                    for b in [bucket.saturating_sub(1), bucket, (bucket + 1).min(last)] {
                        for s in 0..shards {
                            let expected = b == bucket && s == shard;
                            assert_eq!(
                                is_set(&interest, b, s),
                                expected,
                                "{shards} shards: set ({bucket}, {shard}), read ({b}, {s})"
                            );
                        }
                    }
                    interest.clear(bucket, shard);
                    assert!(!is_set(&interest, bucket, shard));
                }
            }
        }
    }

    #[test]
    fn the_table_is_as_small_as_the_shard_count_allows() {
        let bytes = |shards| Interest::new(shards).bits.len() * 8;
        assert_eq!(bytes(1), INTEREST_BUCKETS / 8);
        assert_eq!(bytes(2), 16 << 10);
        assert_eq!(bytes(3), 32 << 10);
        assert_eq!(bytes(64), 512 << 10);
        assert_eq!(bytes(65), 1 << 20);
    }
}
