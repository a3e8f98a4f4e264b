//! `TopicIndex`: one shard's subscriptions, both ways: topic -> its subscribers here, and
//! client -> its topics. Owned by the shard's `State`, so subscribing takes no lock.
//!
//! # Layout
//!
//! A subscription costs a 4-byte client slot in its topic's list and an 8-byte entry (the
//! topic's entry and the position in that list) in its client's list; with growth slack a
//! subscription holds 12 to 24 bytes. Both lists start inside their owners: a client's first
//! [`INLINE_SUBSCRIPTIONS`] in the room of its list's header, a topic's first
//! [`INLINE_SUBSCRIBERS`] subscribers on a shard in its entry, so that a publication to a topic
//! with few of them reads no list apart from the entry. Removal is O(1) in the topic's list
//! (swap-remove, then the moved subscriber's back-pointer is fixed, found among its at most
//! `topics_per_client_max` entries) and O(topics of the client) in the client's list. A topic
//! costs its entry (64 bytes with the slab's tag), its name (shared with every `Topic` value of
//! it) and a 4-byte slot in the table that finds it; a topic left with no subscriber is
//! forgotten at once, so memory follows what is subscribed now, not what ever was.
//!
//! # Invariants
//!
//! - `entries[e].subscribers[i] == slot` exactly when `of_client[slot]` holds
//!   `Sub { entry: e, at: i }`; no slot appears twice in one list.
//! - `by_topic` maps exactly the topics of `entries`, none with an empty list.
//! - `per_bucket[b]` counts the entries whose topic is in interest bucket `b`, and this shard's
//!   bit in `interest` is set exactly when it is not zero.
//! - Only clients in phase `Open` are subscribed (`State` calls `leave_all` when it closes one).

use super::interest::Interest;
use crate::error::SubscribeError;
use crate::link::Link;
use crate::topic::{Prehashed, Topic};
use hashbrown::HashTable;
use slab::Slab;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

/// Subscribers a topic's entry holds without a list of its own: as many as fit in the room a
/// `Vec` would take (24 bytes) and 8 more, so that an entry with its slab tag is 64 bytes.
pub(crate) const INLINE_SUBSCRIBERS: usize = 6;

/// A topic with subscribers on this shard.
#[derive(Debug)]
struct Entry {
    /// The topic.
    topic: Topic,
    /// Its subscribers, by client slot, in no particular order.
    subscribers: SmallVec<[u32; INLINE_SUBSCRIBERS]>,
}

/// Subscriptions a client's list holds without an allocation: two, in the room of a `Vec`.
pub(crate) const INLINE_SUBSCRIPTIONS: usize = 2;

/// One client's subscriptions.
type ClientSubs = SmallVec<[Sub; INLINE_SUBSCRIPTIONS]>;

/// One subscription, in its client's list.
#[derive(Clone, Copy, Debug)]
struct Sub {
    /// Its topic's entry.
    entry: u32,
    /// The client's position in that entry's `subscribers`.
    at: u32,
}

/// The limits a subscription must respect.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Longest topic name, in bytes.
    pub(crate) topic_bytes_max: usize,
    /// Most subscriptions per client.
    pub(crate) topics_per_client_max: usize,
}

impl Limits {
    /// The limits `config` sets.
    pub(crate) fn of(config: &crate::Config) -> Limits {
        Limits {
            topic_bytes_max: config.topic_bytes_max,
            topics_per_client_max: config.topics_per_client_max,
        }
    }

    /// Whether `topic` may be subscribed (or published) to at all.
    pub(crate) fn check(&self, topic: &Topic) -> Result<(), SubscribeError> {
        self.check_name(topic.as_str())
    }

    /// Whether a topic called `name` may be subscribed (or published) to at all.
    pub(crate) fn check_name(&self, name: &str) -> Result<(), SubscribeError> {
        let len = name.len();
        if len == 0 {
            return Err(SubscribeError::EmptyTopic);
        }
        if len > self.topic_bytes_max {
            return Err(SubscribeError::TopicTooLong {
                len,
                max: self.topic_bytes_max,
            });
        }
        Ok(())
    }
}

/// The entry of `topic` in `by_topic`, if it has one.
fn find(by_topic: &HashTable<u32>, entries: &Slab<Entry>, topic: &Topic) -> Option<u32> {
    by_topic
        .find(topic.hash(), |&e| entries[e as usize].topic == *topic)
        .copied()
}

/// One shard's subscriptions.
#[derive(Debug)]
pub(crate) struct TopicIndex {
    /// Each topic with subscribers here, as its entry's index, placed by the topic's hash:
    /// 4 bytes a topic, where a map keyed by `Topic` took 32, so that the table a publication
    /// probes (at a random place) stays in the cache; the name is compared in the entry,
    /// which the publication reads anyway.
    by_topic: HashTable<u32>,
    /// The entries.
    entries: Slab<Entry>,
    /// Each client's subscriptions, by client slot (empty for clients without any).
    of_client: Vec<ClientSubs>,
    /// Entries per interest bucket, for the buckets that have any (a map, not a table of
    /// every bucket: a shard's cost follows its topics).
    per_bucket: HashMap<u32, u32, BuildHasherDefault<Prehashed>>,
    /// The engine-wide interest table, in which this shard keeps its bits.
    interest: Arc<Interest>,
    /// This shard's index.
    shard: usize,
    /// The bridge, if any, told of each topic's first and last subscriber on this shard.
    link: Option<Arc<Link>>,
    /// Subscriptions in all.
    subscriptions: usize,
    /// One bit per client slot, set while a delivery to several topics has reached the
    /// client, so that it gets each frame once; all clear between deliveries.
    seen: Vec<u64>,
}

impl TopicIndex {
    pub(crate) fn new(
        interest: Arc<Interest>,
        shard: usize,
        link: Option<Arc<Link>>,
    ) -> TopicIndex {
        TopicIndex {
            by_topic: HashTable::new(),
            entries: Slab::new(),
            of_client: Vec::new(),
            per_bucket: HashMap::default(),
            interest,
            shard,
            link,
            subscriptions: 0,
            seen: Vec::new(),
        }
    }

    /// The engine-wide interest table.
    pub(crate) fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Whether shard `shard` may have clients in `audience`.
    pub(crate) fn wants(&self, audience: &crate::Audience, shard: usize) -> bool {
        self.interest.wants(audience, shard)
    }

    /// Topics with subscribers here.
    pub(crate) fn topic_count(&self) -> usize {
        self.entries.len()
    }

    /// Subscriptions here.
    pub(crate) fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    /// Subscribes the client in `slot` to `topic`. `Ok(false)` if it already was.
    pub(crate) fn subscribe(
        &mut self,
        slot: usize,
        topic: &Topic,
        limits: Limits,
    ) -> Result<bool, SubscribeError> {
        limits.check(topic)?;
        let existing = self.find(topic);
        let subs = self
            .of_client
            .get(slot)
            .map_or(&[][..], ClientSubs::as_slice);
        if let Some(e) = existing
            && subs.iter().any(|s| s.entry == e)
        {
            return Ok(false);
        }
        if subs.len() >= limits.topics_per_client_max {
            return Err(SubscribeError::TooManyTopics {
                max: limits.topics_per_client_max,
            });
        }
        self.interest
            .take_subscription()
            .map_err(|max| SubscribeError::TooManySubscriptions { max })?;
        let e = match existing {
            Some(e) => e,
            None => self.add_topic(topic),
        };
        let subscribers = &mut self.entries[e as usize].subscribers;
        let at = subscribers.len() as u32;
        subscribers.push(slot as u32);
        if self.of_client.len() <= slot {
            self.of_client.resize_with(slot + 1, ClientSubs::new);
        }
        self.of_client[slot].push(Sub { entry: e, at });
        self.subscriptions += 1;
        Ok(true)
    }

    /// Unsubscribes the client in `slot` from `topic`. `false` if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, slot: usize, topic: &Topic) -> bool {
        let Some(e) = self.find(topic) else {
            return false;
        };
        let Some(subs) = self.of_client.get_mut(slot) else {
            return false;
        };
        let Some(i) = subs.iter().position(|s| s.entry == e) else {
            return false;
        };
        let sub = subs.swap_remove(i);
        if subs.is_empty() {
            // Give the memory back: a client's list is kept only while it has topics.
            *subs = ClientSubs::new();
        }
        self.leave(sub);
        true
    }

    /// Unsubscribes the client in `slot` from every topic.
    pub(crate) fn leave_all(&mut self, slot: usize) {
        let Some(subs) = self.of_client.get_mut(slot) else {
            return;
        };
        for sub in std::mem::take(subs) {
            self.leave(sub);
        }
    }

    /// The topics of the client in `slot`, sorted by name.
    pub(crate) fn topics_of(&self, slot: usize) -> Vec<Topic> {
        let subs = self
            .of_client
            .get(slot)
            .map_or(&[][..], ClientSubs::as_slice);
        let mut topics: Vec<Topic> = subs
            .iter()
            .map(|s| self.entries[s.entry as usize].topic.clone())
            .collect();
        topics.sort_unstable();
        topics
    }

    /// Subscribers of `topic` here.
    pub(crate) fn subscriber_count(&self, topic: &Topic) -> usize {
        self.find(topic)
            .map_or(0, |e| self.entries[e as usize].subscribers.len())
    }

    /// The entry of `topic`, if it has subscribers here.
    fn find(&self, topic: &Topic) -> Option<u32> {
        find(&self.by_topic, &self.entries, topic)
    }

    /// Calls `f` with the slot of every subscriber of any of `topics`, once each.
    pub(crate) fn for_each_subscriber(&mut self, topics: &[Topic], mut f: impl FnMut(usize)) {
        let mut lists = topics
            .iter()
            .filter_map(|t| self.find(t))
            .map(|e| &self.entries[e as usize].subscribers);
        let (Some(first), None) = (lists.next(), lists.clone().next()) else {
            // None, or several topics with subscribers here: the general case below.
            return self.for_each_subscriber_of_many(topics, f);
        };
        for &slot in first {
            f(slot as usize);
        }
    }

    /// `for_each_subscriber` for several topics with subscribers here: `seen` marks the
    /// clients already called, and is cleared after.
    fn for_each_subscriber_of_many(&mut self, topics: &[Topic], mut f: impl FnMut(usize)) {
        let words = self.of_client.len().div_ceil(64);
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        let (by_topic, entries) = (&self.by_topic, &self.entries);
        let lists = || {
            topics
                .iter()
                .filter_map(|t| find(by_topic, entries, t))
                .map(|e| &entries[e as usize].subscribers)
        };
        for list in lists() {
            for &slot in list {
                let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
                if self.seen[word] & bit == 0 {
                    self.seen[word] |= bit;
                    f(slot as usize);
                }
            }
        }
        for list in lists() {
            for &slot in list {
                self.seen[slot as usize / 64] = 0;
            }
        }
    }

    /// Adds an entry for `topic`, with no subscriber yet; the shard's interest bit for its
    /// bucket is set if it is the bucket's first.
    fn add_topic(&mut self, topic: &Topic) -> u32 {
        let e = self.entries.insert(Entry {
            topic: topic.clone(),
            subscribers: SmallVec::new(),
        }) as u32;
        let entries = &self.entries;
        self.by_topic
            .insert_unique(topic.hash(), e, |&e| entries[e as usize].topic.hash());
        let bucket = Interest::bucket(topic.hash());
        let count = self.per_bucket.entry(bucket as u32).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.interest.set(bucket, self.shard);
        }
        if let Some(link) = &self.link {
            // This shard's 0 -> 1: the node may need the broker subscription.
            link.registry.joined(topic);
        }
        e
    }

    /// Removes one subscription (already out of its client's list) from its topic's list; a
    /// topic left with no subscriber is forgotten.
    fn leave(&mut self, sub: Sub) {
        self.subscriptions -= 1;
        self.interest.give_subscription();
        let entry = &mut self.entries[sub.entry as usize];
        entry.subscribers.swap_remove(sub.at as usize);
        if let Some(&moved) = entry.subscribers.get(sub.at as usize) {
            // The last subscriber took the freed place: point its own entry there.
            if let Some(s) = self.of_client[moved as usize]
                .iter_mut()
                .find(|s| s.entry == sub.entry)
            {
                s.at = sub.at;
            }
        }
        if entry.subscribers.is_empty() {
            let entry = self.entries.remove(sub.entry as usize);
            if let Ok(found) = self
                .by_topic
                .find_entry(entry.topic.hash(), |&e| e == sub.entry)
            {
                found.remove();
            }
            if let Some(link) = &self.link {
                // This shard's 1 -> 0.
                link.registry.left(&entry.topic);
            }
            let bucket = Interest::bucket(entry.topic.hash());
            if let Some(count) = self.per_bucket.get_mut(&(bucket as u32)) {
                *count -= 1;
                if *count == 0 {
                    self.per_bucket.remove(&(bucket as u32));
                    self.interest.clear(bucket, self.shard);
                }
            }
            if self.entries.is_empty() {
                // Every topic gone: give back what a busier past left.
                self.entries.shrink_to_fit();
                self.by_topic.shrink_to_fit(|_| 0);
                self.per_bucket.shrink_to_fit();
            }
        }
    }

    /// Checks the invariants (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut count = 0;
        for (slot, subs) in self.of_client.iter().enumerate() {
            for s in subs {
                assert_eq!(
                    self.entries[s.entry as usize].subscribers[s.at as usize], slot as u32,
                    "back-pointer of slot {slot}"
                );
                count += 1;
            }
        }
        assert_eq!(count, self.subscriptions);
        let listed: usize = self.entries.iter().map(|(_, e)| e.subscribers.len()).sum();
        assert_eq!(listed, self.subscriptions);
        assert_eq!(self.by_topic.len(), self.entries.len());
        for (e, entry) in &self.entries {
            assert!(!entry.subscribers.is_empty());
            assert_eq!(self.find(&entry.topic), Some(e as u32));
        }
        let per_bucket: u32 = self.per_bucket.values().sum();
        assert_eq!(per_bucket as usize, self.entries.len());
        assert!(self.per_bucket.values().all(|&n| n > 0));
        assert!(self.seen.iter().all(|&w| w == 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Audience;

    const LIMITS: Limits = Limits {
        topic_bytes_max: 16,
        topics_per_client_max: 3,
    };

    fn index() -> TopicIndex {
        TopicIndex::new(Arc::new(Interest::new(2)), 1, None)
    }

    fn members(index: &mut TopicIndex, topics: &[&str]) -> Vec<usize> {
        let topics: Vec<Topic> = topics.iter().map(|&t| Topic::new(t)).collect();
        let mut got = Vec::new();
        index.for_each_subscriber(&topics, |slot| got.push(slot));
        got.sort_unstable();
        got
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_entry_with_its_inline_subscribers_and_slab_tag_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>() + 8, 64);
        // A client's list holds its first subscriptions in the room of a `Vec`.
        assert_eq!(
            std::mem::size_of::<ClientSubs>(),
            std::mem::size_of::<Vec<Sub>>()
        );
    }

    #[test]
    fn subscribers_are_found_once_however_many_of_their_topics_are_targeted() {
        let mut index = index();
        let (a, b) = (Topic::new("a"), Topic::new("b"));
        assert_eq!(index.subscribe(0, &a, LIMITS), Ok(true));
        assert_eq!(
            index.subscribe(0, &a, LIMITS),
            Ok(false),
            "twice is a no-op"
        );
        index.subscribe(0, &b, LIMITS).unwrap();
        index.subscribe(1, &b, LIMITS).unwrap();
        index.subscribe(7, &a, LIMITS).unwrap();
        index.check();
        assert_eq!(members(&mut index, &["a"]), [0, 7]);
        assert_eq!(members(&mut index, &["a", "b"]), [0, 1, 7]);
        assert_eq!(members(&mut index, &["b", "zzz"]), [0, 1]);
        assert_eq!(members(&mut index, &["zzz"]), Vec::<usize>::new());
        index.check();
        assert_eq!(index.subscriber_count(&a), 2);
        assert_eq!(index.topics_of(0), [a, b]);
    }

    #[test]
    fn limits_refuse_and_change_nothing() {
        let mut index = index();
        assert_eq!(
            index.subscribe(0, &Topic::new(""), LIMITS),
            Err(SubscribeError::EmptyTopic)
        );
        let long = Topic::new("x".repeat(17));
        assert_eq!(
            index.subscribe(0, &long, LIMITS),
            Err(SubscribeError::TopicTooLong { len: 17, max: 16 })
        );
        for t in ["a", "b", "c"] {
            index.subscribe(0, &Topic::new(t), LIMITS).unwrap();
        }
        assert_eq!(
            index.subscribe(0, &Topic::new("d"), LIMITS),
            Err(SubscribeError::TooManyTopics { max: 3 })
        );
        assert_eq!(index.subscribe(0, &Topic::new("c"), LIMITS), Ok(false));
        assert_eq!(index.topic_count(), 3);
        assert_eq!(index.subscription_count(), 3);
        index.check();
    }

    #[test]
    fn the_last_subscriber_leaving_forgets_the_topic_and_clears_the_shards_interest() {
        let interest = Arc::new(Interest::new(2));
        let mut index = TopicIndex::new(interest.clone(), 1, None);
        let news = Topic::new("news");
        let audience = Audience::topic(&news);
        index.subscribe(3, &news, LIMITS).unwrap();
        index.subscribe(4, &news, LIMITS).unwrap();
        assert!(interest.wants(&audience, 1));
        assert!(!interest.wants(&audience, 0), "only this shard's bit");
        assert!(index.unsubscribe(3, &news));
        assert!(!index.unsubscribe(3, &news), "not subscribed any more");
        assert!(interest.wants(&audience, 1));
        index.leave_all(4);
        assert!(!interest.wants(&audience, 1));
        assert_eq!(index.topic_count(), 0);
        assert_eq!(index.subscription_count(), 0);
        index.check();
    }

    proptest::proptest! {
        /// Any sequence of subscribes, unsubscribes and leaves keeps the index consistent with
        /// a plain set of (client, topic) pairs.
        #[test]
        fn matches_a_set_of_pairs(ops in proptest::collection::vec((0u8..3, 0usize..6, 0u8..5), 0..200)) {
            let mut index = index();
            let mut model = std::collections::BTreeSet::new();
            let limits = Limits { topic_bytes_max: 8, topics_per_client_max: 4 };
            for (op, slot, t) in ops {
                let topic = Topic::new(format!("t{t}"));
                match op {
                    0 => {
                        let mine = model.iter().filter(|(s, _)| *s == slot).count();
                        let had = model.contains(&(slot, t));
                        let got = index.subscribe(slot, &topic, limits);
                        if had {
                            proptest::prop_assert_eq!(got, Ok(false));
                        } else if mine >= 4 {
                            proptest::prop_assert!(got.is_err());
                        } else {
                            proptest::prop_assert_eq!(got, Ok(true));
                            model.insert((slot, t));
                        }
                    }
                    1 => {
                        proptest::prop_assert_eq!(index.unsubscribe(slot, &topic), model.remove(&(slot, t)));
                    }
                    _ => {
                        index.leave_all(slot);
                        model.retain(|(s, _)| *s != slot);
                    }
                }
                index.check();
                for t in 0..5u8 {
                    let want: Vec<usize> = model.iter().filter(|p| p.1 == t).map(|p| p.0).collect();
                    let name = format!("t{t}");
                    proptest::prop_assert_eq!(members(&mut index, &[name.as_str()]), want);
                }
                proptest::prop_assert_eq!(index.subscription_count(), model.len());
            }
        }
    }
}
