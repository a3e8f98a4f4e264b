//! Topic names as NATS subjects.
//!
//! NATS gives `.` (token separator), `*` and `>` (wildcards) and whitespace meaning in a
//! subject, and a topic name is any UTF-8 string. So a topic travels as one subject token under
//! the node's prefix and its bucket, `{prefix}.t.{bucket}.{token}`, where the token is the
//! name's UTF-8 bytes with ASCII letters, digits and `-` kept as they are, and every other byte
//! (`_` included) written as `_` and two uppercase hex digits: `room-1` is `room-1`, `room/1`
//! is `room_2F1`, `a.b` is `a_2Eb`, `é` is `_C3_A9`. The encoding is one-to-one (decoding
//! accepts only what encoding produces), so every topic has exactly one subject and back.
//! Broadcasts to everyone travel on `{prefix}.all`, which no topic's subject can equal.
//!
//! The bucket is the name's FNV-1a hash modulo [`TOPIC_BUCKETS`], in decimal: the same on every
//! node. A node subscribes to a bucket (`{prefix}.t.{bucket}.*`) while it has local subscribers
//! of a topic in it, not to each topic: a NATS subscription costs a node about 7 KB (measured
//! with `examples/topic_memory`), so a node of 100,000 topics held 713 MB of them, where
//! buckets bound it to 1,024 subscriptions. What arrives for a topic of the bucket the node
//! does not follow is dropped unseen.
//!
//! A token is at most three times the name's length: with the default
//! [`Config::topic_bytes_max`](crate::Config::topic_bytes_max) of 256 bytes, 768, well below
//! nats-server's default 4 KiB control line. A subject the server refuses is counted in
//! `dropped.subscribe_failed` or `dropped.publish_failed`.

use crate::Topic;
use std::fmt::Write;

/// The buckets topics are spread over, as NATS subjects: every node must use the same number.
pub(crate) const TOPIC_BUCKETS: u64 = 1024;

/// The bucket of a topic called `name`: its FNV-1a hash (64 bits) modulo [`TOPIC_BUCKETS`].
/// Not the process's own topic hash, which is keyed at random: every node must agree.
pub(crate) fn bucket(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % TOPIC_BUCKETS
}

/// The subjects of one node's prefix.
#[derive(Clone, Debug)]
pub(crate) struct Subjects {
    /// `{prefix}.all`.
    everyone: String,
    /// `{prefix}.sync`: no node subscribes to it; a request to it is a round trip.
    sync: String,
    /// `{prefix}.t.`, which every topic's subject starts with.
    topics: String,
}

/// Whether `prefix` is one or more valid tokens: non-empty, without wildcards or whitespace.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    prefix.split('.').all(|token| {
        !token.is_empty()
            && !token
                .chars()
                .any(|c| c == '*' || c == '>' || c.is_whitespace() || c.is_control())
    })
}

impl Subjects {
    /// The subjects under `prefix`, or `None` if it is not a valid subject prefix.
    pub(crate) fn new(prefix: &str) -> Option<Subjects> {
        valid_prefix(prefix).then(|| Subjects {
            everyone: format!("{prefix}.all"),
            sync: format!("{prefix}.sync"),
            topics: format!("{prefix}.t."),
        })
    }

    /// The subject of broadcasts to everyone.
    pub(crate) fn everyone(&self) -> &str {
        &self.everyone
    }

    /// The subject of round trips, which no node subscribes to.
    pub(crate) fn sync(&self) -> &str {
        &self.sync
    }

    /// The subject of `topic`.
    pub(crate) fn topic(&self, topic: &Topic) -> String {
        let name = topic.as_str();
        let mut subject = String::with_capacity(self.topics.len() + 5 + name.len());
        subject.push_str(&self.topics);
        let _ = write!(subject, "{}.", bucket(name));
        encode(name, &mut subject);
        subject
    }

    /// The subject that matches every topic of `bucket`.
    pub(crate) fn bucket(&self, bucket: u64) -> String {
        format!("{}{bucket}.*", self.topics)
    }

    /// The topic a subject is for: `Ok(None)` for the subject of everyone; `Err` if it is
    /// neither (a topic in the wrong bucket included).
    pub(crate) fn parse(&self, subject: &str) -> Result<Option<Topic>, ()> {
        if subject == self.everyone {
            return Ok(None);
        }
        let rest = subject.strip_prefix(&*self.topics).ok_or(())?;
        let (number, token) = rest.split_once('.').ok_or(())?;
        let name = decode(token).ok_or(())?;
        if number != bucket(&name).to_string() {
            return Err(());
        }
        Ok(Some(Topic::new(name)))
    }
}

/// Whether a byte stands for itself in a token.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Appends the token of `name` to `out`.
pub(crate) fn encode(name: &str, out: &mut String) {
    for &b in name.as_bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "_{b:02X}");
        }
    }
}

/// The name whose token is `token`, if it is one `encode` produces.
pub(crate) fn decode(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if plain(b) {
            name.push(b);
            i += 1;
        } else if b == b'_' {
            let hex = bytes.get(i + 1..i + 3)?;
            let digit = |h: u8| match h {
                b'0'..=b'9' => Some(h - b'0'),
                b'A'..=b'F' => Some(h - b'A' + 10),
                _ => None,
            };
            let byte = digit(hex[0])? << 4 | digit(hex[1])?;
            if plain(byte) {
                // Not what `encode` writes: one name, one token.
                return None;
            }
            name.push(byte);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str) -> String {
        let mut out = String::new();
        encode(name, &mut out);
        out
    }

    #[test]
    fn readable_names_stay_readable() {
        assert_eq!(token("room-1"), "room-1");
        assert_eq!(token("room/1"), "room_2F1");
        assert_eq!(token("a.b"), "a_2Eb");
        assert_eq!(token("a_b"), "a_5Fb");
        assert_eq!(token("é"), "_C3_A9");
        assert_eq!(token("> *"), "_3E_20_2A");
    }

    #[test]
    fn only_canonical_tokens_decode() {
        for bad in ["_61", "_2f", "_2", "a.b", "a b", "_FF", "*", ">"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_subject_of_everyone_is_no_topics() {
        let subjects = Subjects::new("app.sc").expect("valid");
        assert_eq!(subjects.everyone(), "app.sc.all");
        assert_eq!(subjects.parse("app.sc.all"), Ok(None));
        let all = format!("app.sc.t.{}.all", bucket("all"));
        assert_eq!(subjects.topic(&Topic::new("all")), all);
        assert_eq!(subjects.parse(&all), Ok(Some(Topic::new("all"))));
        // The same topic under another bucket is nobody's.
        let wrong = format!("app.sc.t.{}.all", (bucket("all") + 1) % TOPIC_BUCKETS);
        assert_eq!(subjects.parse(&wrong), Err(()));
        assert_eq!(subjects.parse("app.sc.t.all"), Err(()));
        assert_eq!(subjects.bucket(7), "app.sc.t.7.*");
        assert_eq!(subjects.parse("other.t.x"), Err(()));
        for bad in ["", "a..b", "a.*", "a b", ">", "a."] {
            assert!(Subjects::new(bad).is_none(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Any topic a client may subscribe to (1 to 256 bytes of UTF-8) round-trips, and its
        /// subject has exactly the prefix's tokens plus `t`, its bucket and one valid token.
        #[test]
        fn every_topic_round_trips_through_one_valid_token(
            name in "\\PC{1,64}|.{1,64}|[a-z./*> \t_-]{1,64}|\\PC{200,256}",
        ) {
            // The default `topic_bytes_max`: cut at a character boundary.
            let mut name = name;
            while name.len() > 256 {
                name.pop();
            }
            let subjects = Subjects::new("shardcast").expect("valid");
            let topic = Topic::new(name.as_str());
            let subject = subjects.topic(&topic);
            proptest::prop_assert_eq!(subjects.parse(&subject), Ok(Some(topic)));
            let tokens: Vec<&str> = subject.split('.').collect();
            proptest::prop_assert_eq!(tokens.len(), 4);
            proptest::prop_assert!(tokens[2].parse::<u64>().is_ok_and(|b| b < TOPIC_BUCKETS));
            let token = tokens[3];
            proptest::prop_assert!(!token.is_empty());
            let kept = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            proptest::prop_assert!(token.bytes().all(kept));
            proptest::prop_assert!(token.len() <= 3 * name.len());
            // And the NATS client agrees that it is a subject.
            proptest::prop_assert!(async_nats::Subject::validated(&subject).is_ok());
        }
    }
}
