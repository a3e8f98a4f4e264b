//! `Topic`: a name clients subscribe to, hashed once when it is made.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, LazyLock};

/// The keys of every topic hash in this process: random, so that clients who choose topic
/// names cannot choose colliding ones; the same for every shard, so that a hash computed once
/// serves them all.
static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A topic name, with its hash computed once: publishing a `Topic` hashes nothing, however
/// many shards it reaches. Cheap to clone (a reference count).
///
/// Any UTF-8 string is a topic; the engine takes subscriptions to names of 1 to
/// [`Config::topic_bytes_max`](crate::Config::topic_bytes_max) bytes.
///
/// ```
/// use shardcast::Topic;
///
/// let news = Topic::new("news");
/// assert_eq!(news.as_str(), "news");
/// assert_eq!(news, Topic::from("news"));
/// ```
#[derive(Clone)]
pub struct Topic {
    /// `KEYS.hash_one(name)`.
    hash: u64,
    /// The name.
    name: Arc<str>,
}

impl Topic {
    /// The topic named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Topic {
        let name = name.into();
        Topic {
            hash: KEYS.hash_one(&*name),
            name,
        }
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Its hash (the same for equal topics, in this process).
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for Topic {
    fn eq(&self, other: &Topic) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.name, &other.name) || self.name == other.name)
    }
}

impl Eq for Topic {}

/// Hashes as the hash computed at construction: a map keyed by topics with `Prehashed`
/// hashes nothing more.
impl Hash for Topic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for Topic {
    fn partial_cmp(&self, other: &Topic) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By name.
impl Ord for Topic {
    fn cmp(&self, other: &Topic) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl From<&str> for Topic {
    fn from(name: &str) -> Topic {
        Topic::new(name)
    }
}

impl From<String> for Topic {
    fn from(name: String) -> Topic {
        Topic::new(name)
    }
}

impl From<&String> for Topic {
    fn from(name: &String) -> Topic {
        Topic::new(name.as_str())
    }
}

impl From<&Topic> for Topic {
    fn from(topic: &Topic) -> Topic {
        topic.clone()
    }
}

/// A hasher that takes a hash already computed (a [`Topic`]'s) as it is.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Topic`; anything else still hashes, if poorly.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    /// Small numbers (interest buckets, cut from a topic's hash): spread over all 64 bits by a
    /// multiply, so that the table's control bits differ.
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_are_equal_topics_with_equal_hashes() {
        let a = Topic::new("room/1");
        let b = Topic::from(String::from("room/1"));
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a, Topic::new("room/2"));
    }
}
