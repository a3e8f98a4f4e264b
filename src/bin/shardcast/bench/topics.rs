//! The topics layout of `shardcast bench --topics K --subscriptions S`: which topics each client
//! subscribes to at upgrade, and which topic each publication goes to, so that the load
//! generator knows how many deliveries each publication makes.
//!
//! # Layout
//!
//! The topics are named `t0` to `t{K-1}`. Client `i` (counting from 0, in connection order)
//! subscribes at upgrade (`?sub=...`) to S distinct topics:
//! - first `i mod K`: its personal topic when there are at least as many topics as clients
//!   (with fewer, clients `i`, `i+K`, `i+2K`... share it);
//! - then S-1 group topics: the clients form groups of [`GROUP_CLIENTS`] (group `g = i div
//!   10`), and the `j`-th topic of group `g` (`0 <= j < S-1`) is `K-1 - ((g (S-1) + j) mod K)`,
//!   counting down from the last topic so that it seldom is a personal topic of the group's;
//!
//! each in turn, or if the client already has it, the next topic up (mod K) it does not have.
//!
//! Publisher `p`'s `n`-th publication (`n = 0, 1, ...`) goes to topic `(n P + p) mod K`: the P
//! publishers together go round-robin over the topics. A publication's expected deliveries are
//! the measured clients subscribed to its topic (stalled clients subscribe, but are not counted).
//!
//! What the rows mean, for the clients given:
//! - K=1 (with any clients): everyone on one topic, a broadcast to all through the topics path.
//! - K=100 S=1, 1,000 clients: 10 subscribers per topic.
//! - K=1,000 S=10, 1,000 clients: each client has its own topic and 9 topics shared with its
//!   group of 10; `t100`-`t999` have 11 subscribers (the group and the topic's owner, but for
//!   a few around the one group whose topics include its own), the others 1: 10 deliveries per
//!   publication on average.
//! - K=10,000 S=2, 10,000 clients: a personal topic plus a group of 10 (the layout of
//!   Centrifugo's million-connection test, its group topics sharing names with personal ones):
//!   `t9000`-`t9999` have 11 subscribers (but `t9090`, 10, and `t9091`, 12), the others 1: 2
//!   deliveries per publication on average.
//!
//! In general a publication makes `clients x S / K` deliveries on average.
//!
//! # Sequence numbers
//!
//! With topics, a publication's body is the bench payload stamped with `u64le send time | u32le
//! publisher | u32le sequence | u32le topic` ([`STAMP_BYTES`]). The sequence counts the
//! publisher's publications to that topic: publisher `p`'s topics repeat with period `K /
//! gcd(P, K)`, each topic once per period, so its `n`-th publication is the `(n div
//! period)`-th to its topic. A client checks, per (publisher, topic), that the sequence numbers
//! it receives are consecutive: a gap, a duplicate or a publication of a topic it is not
//! subscribed to counts as lost.
//!
//! Without `--topics` the same code runs with K=1, S=1, and the 16-byte stamp without topic.

/// Clients in a group, who share their group topics.
pub(crate) const GROUP_CLIENTS: u64 = 10;

/// Bytes of the stamp of a publication with topics.
pub(crate) const STAMP_BYTES: usize = 20;

/// K topics, S subscriptions per client.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// K: topics `t0` to `t{K-1}`; at least 1.
    topics: u64,
    /// S: topics per client; from 1 to `topics`.
    subscriptions: u64,
}

impl Layout {
    /// A broadcast to all: one topic everyone has.
    pub(crate) const ALL: Layout = Layout {
        topics: 1,
        subscriptions: 1,
    };

    /// K topics, S per client; the error names the flag.
    pub(crate) fn new(topics: u64, subscriptions: u64) -> Result<Layout, String> {
        if topics == 0 {
            return Err("--topics must be at least 1".into());
        }
        if subscriptions == 0 || subscriptions > topics {
            return Err(format!(
                "--subscriptions {subscriptions} must be from 1 to --topics {topics}: each \
                 client subscribes to that many distinct topics"
            ));
        }
        Ok(Layout {
            topics,
            subscriptions,
        })
    }

    /// K.
    pub(crate) fn topics(self) -> u64 {
        self.topics
    }

    /// S.
    pub(crate) fn subscriptions(self) -> u64 {
        self.subscriptions
    }

    /// The topics client `i` subscribes to, sorted.
    pub(crate) fn of_client(self, i: u64) -> Vec<u32> {
        let (k, s) = (self.topics, self.subscriptions);
        let group = i / GROUP_CLIENTS;
        let wanted =
            std::iter::once(i % k).chain((0..s - 1).map(|j| k - 1 - (group * (s - 1) + j) % k));
        let mut mine: Vec<u32> = Vec::with_capacity(s as usize);
        for mut topic in wanted {
            // Terminates: the client has fewer than S <= K topics, so one is free.
            while mine.contains(&(topic as u32)) {
                topic = (topic + 1) % k;
            }
            mine.push(topic as u32);
        }
        mine.sort_unstable();
        mine
    }

    /// How `publishers` publishers go over the topics.
    pub(crate) fn rotation(self, publishers: u64) -> Rotation {
        Rotation {
            topics: self.topics,
            publishers,
            period: self.topics / gcd(self.topics, publishers.max(1)),
        }
    }
}

/// Which topic each publication goes to, and its sequence number there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rotation {
    /// K.
    topics: u64,
    /// P.
    publishers: u64,
    /// After this many publications a publisher's topics repeat: `K / gcd(P, K)`.
    period: u64,
}

impl Rotation {
    /// The topic of publisher `p`'s `n`-th publication, and its sequence number among `p`'s
    /// publications to that topic.
    pub(crate) fn of(self, p: usize, n: u64) -> (u32, u32) {
        let topic = (n.wrapping_mul(self.publishers).wrapping_add(p as u64)) % self.topics;
        (topic as u32, (n / self.period) as u32)
    }
}

/// The query that subscribes to `topics` at upgrade: `sub=t1&sub=t7` (names that need no
/// encoding).
pub(crate) fn query(topics: &[u32]) -> String {
    let names: Vec<String> = topics.iter().map(|t| format!("sub=t{t}")).collect();
    names.join("&")
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribers per topic over `clients` clients.
    fn fanout(layout: Layout, clients: u64) -> Vec<u64> {
        let mut counts = vec![0; layout.topics as usize];
        for i in 0..clients {
            let mine = layout.of_client(i);
            assert_eq!(
                mine.len() as u64,
                layout.subscriptions,
                "client {i}: {mine:?}"
            );
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "distinct: {mine:?}");
            for t in mine {
                counts[t as usize] += 1;
            }
        }
        counts
    }

    #[test]
    fn one_topic_holds_every_client() {
        assert_eq!(fanout(Layout::new(1, 1).unwrap(), 1000), vec![1000]);
    }

    #[test]
    fn one_subscription_spreads_the_clients_evenly() {
        let counts = fanout(Layout::new(100, 1).unwrap(), 1000);
        assert!(counts.iter().all(|&c| c == 10), "{counts:?}");
    }

    #[test]
    fn a_personal_topic_and_a_group_of_ten() {
        let layout = Layout::new(10_000, 2).unwrap();
        assert_eq!(layout.of_client(1234), vec![1234, 9876]);
        // Client 9090's group topic is its own, so it takes the next one.
        assert_eq!(layout.of_client(9090), vec![9090, 9091]);
        let counts = fanout(layout, 10_000);
        assert!(counts[..9000].iter().all(|&c| c == 1));
        assert_eq!((counts[9090], counts[9091]), (10, 12));
        let groups = counts[9000..].iter().filter(|&&c| c == 11).count();
        assert_eq!(groups, 998);
    }

    #[test]
    fn ten_subscriptions_of_a_thousand_topics_make_ten_deliveries_on_average() {
        let counts = fanout(Layout::new(1000, 10).unwrap(), 1000);
        assert_eq!(counts.iter().sum::<u64>(), 10_000);
        assert!(counts[..100].iter().all(|&c| c == 1), "{counts:?}");
        let groups = counts[100..].iter().filter(|&&c| c == 11).count();
        assert!(groups >= 880, "{groups}: {counts:?}");
    }

    #[test]
    fn subscriptions_beyond_the_topics_are_refused_naming_both_flags() {
        let e = Layout::new(3, 4).unwrap_err();
        assert!(
            e.contains("--subscriptions 4") && e.contains("--topics 3"),
            "{e}"
        );
        assert!(Layout::new(3, 3).is_ok());
    }

    #[test]
    fn publishers_go_round_robin_and_count_per_topic() {
        // K=4, P=2: publisher 0 takes t0, t2, t0, t2...; publisher 1 takes t1, t3...
        let r = Layout::new(4, 1).unwrap().rotation(2);
        let of0: Vec<_> = (0..4).map(|n| r.of(0, n)).collect();
        assert_eq!(of0, vec![(0, 0), (2, 0), (0, 1), (2, 1)]);
        assert_eq!(r.of(1, 1), (3, 0));
        // K=3, P=2: each publisher covers every topic, once per period of 3.
        let r = Layout::new(3, 1).unwrap().rotation(2);
        let of0: Vec<_> = (0..6).map(|n| r.of(0, n)).collect();
        assert_eq!(of0, vec![(0, 0), (2, 0), (1, 0), (0, 1), (2, 1), (1, 1)]);
        // Without topics: one topic, the sequence counts every publication.
        assert_eq!(Layout::ALL.rotation(3).of(2, 7), (0, 7));
    }

    #[test]
    fn the_query_names_each_topic() {
        assert_eq!(query(&[1, 20]), "sub=t1&sub=t20");
    }
}
