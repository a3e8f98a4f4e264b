//! The bridge thread: its own current-thread runtime, on which the broker connection lives,
//! and three tasks: publish (outbound queue -> broker), fan out (inbound queue -> local
//! shards), and follow interest (the registry -> broker subscriptions). Thin: `plan` decides.
//!
//! # Back-pressure
//!
//! Nothing here makes a shard wait: shards and the engine only `try_send` into the outbound
//! queue. The fan-out task waits for room in the shards' queues, as `Engine::broadcast` does;
//! meanwhile what the broker receives gathers in the bounded inbound queue, and past it is
//! dropped and counted.
//!
//! # Shutdown
//!
//! On `stop`, the publisher publishes what is already queued (for at most a second), then the
//! thread drops its runtime, which closes the connection.

use super::broker::{Broker, Channel, Connection, Inbound, Publication, Received, charge, split};
use crate::compression::Compression;
use crate::config::Config;
use crate::error::BuildError;
use crate::link::{BROADCASTS_PER_MESSAGE_MAX, Link, Outgoing, Topics, fits_one_message};
use crate::payload::Payloads;
use crate::shard::{Handle, Interest, reserve_wanted, send_each};
use crate::stats::add;
use crate::{Audience, Topic};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the publisher keeps publishing what was queued before a shutdown, and how long a
/// subscription round trip may take before the bridge moves on.
const GRACE: Duration = Duration::from_secs(1);

/// Everything the bridge thread needs.
pub(crate) struct Startup {
    /// The engine's limits.
    pub(crate) config: Arc<Config>,
    /// The engine's side of the bridge.
    pub(crate) link: Arc<Link>,
    /// The outbound queue's receiving end.
    pub(crate) outbound: mpsc::Receiver<Outgoing>,
    /// Every shard.
    pub(crate) shards: Arc<[Handle]>,
    /// Which shards have subscribers of which topics.
    pub(crate) interest: Arc<Interest>,
    /// Cancelled at shutdown, or when the engine is dropped.
    pub(crate) stop: CancellationToken,
}

/// Starts a bridge thread (monomorphized for one broker, boxed by the builder).
pub(crate) type Spawn =
    Box<dyn FnOnce(Startup) -> Result<std::thread::JoinHandle<()>, BuildError> + Send>;

/// Starts the bridge thread; returns once it has connected (or, with `bridge_optional`, has
/// started trying).
pub(crate) fn spawn<B: Broker>(
    broker: B,
    startup: Startup,
) -> Result<std::thread::JoinHandle<()>, BuildError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), BuildError>>(1);
    let thread = std::thread::Builder::new()
        .name("shardcast-bridge".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(BuildError::Spawn(e)));
                    return;
                }
            };
            runtime.block_on(run(broker, startup, ready_tx));
        })
        .map_err(BuildError::Spawn)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(BuildError::Spawn(std::io::Error::other(
            "bridge thread died while starting",
        ))),
    }
}

async fn run<B: Broker>(
    broker: B,
    startup: Startup,
    ready: std::sync::mpsc::SyncSender<Result<(), BuildError>>,
) {
    let Startup {
        config,
        link,
        outbound,
        shards,
        interest,
        stop,
    } = startup;
    let (tx, rx) = mpsc::channel(config.bridge_inbound_capacity);
    let inbound = Inbound::new(tx, link.clone());
    let connection = match broker.connect(inbound, !config.bridge_optional).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let _ = ready.send(Err(BuildError::Bridge(e)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let compression = config.compression;
    let fan_out = tokio::spawn(fan_out(rx, shards, interest, link.clone(), compression));
    let follow = tokio::spawn(follow_interest(
        connection.clone(),
        link.clone(),
        config.bridge_unsubscribe_delay,
        stop.clone(),
    ));
    publish(&*connection, outbound, &link, &stop).await;
    fan_out.abort();
    follow.abort();
}

/// Publishes the queued broadcasts, in queue order, until `stop`; then what is left, for at
/// most [`GRACE`]. Takes what is queued at once, and joins consecutive broadcasts for the
/// same channel into one message ([`joined`]).
async fn publish<C: Connection>(
    connection: &C,
    mut outbound: mpsc::Receiver<Outgoing>,
    link: &Link,
    stop: &CancellationToken,
) {
    let mut queued = Vec::with_capacity(BROADCASTS_PER_MESSAGE_MAX);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            n = outbound.recv_many(&mut queued, BROADCASTS_PER_MESSAGE_MAX) => {
                if n == 0 {
                    return;
                }
                publish_queued(connection, &mut queued, link).await;
            }
        }
    }
    outbound.close();
    let rest = async {
        while outbound
            .recv_many(&mut queued, BROADCASTS_PER_MESSAGE_MAX)
            .await
            > 0
        {
            publish_queued(connection, &mut queued, link).await;
        }
        connection.sync().await;
    };
    let _ = tokio::time::timeout(GRACE, rest).await;
}

/// Publishes and empties `queued`, a message per run of broadcasts [`joined`] finds, then
/// waits until the broker client has written them out (`Connection::flush`): only then are
/// they counted as published, and their bytes given back to `bridge_outbound_bytes_max`. So
/// what the client holds (its command queue, its write buffer) is within the outbound bound
/// even while the broker stalls, and what a broken connection held is counted as lost.
async fn publish_queued<C: Connection>(connection: &C, queued: &mut Vec<Outgoing>, link: &Link) {
    let mut handed = Handed::default();
    let mut start = 0;
    while start < queued.len() {
        let end = start + joined(&queued[start..]);
        publish_run(connection, &queued[start..end], link, &mut handed).await;
        start = end;
    }
    if handed.messages > 0 {
        let counters = &link.counters;
        match connection.flush().await {
            Ok(()) => {
                add(&counters.published, handed.broadcasts);
                add(&counters.messages, handed.messages);
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection lost with publications in it");
                add(&counters.disconnected, handed.broadcasts);
            }
        }
    }
    link.outbound_bytes
        .give(queued.iter().map(Outgoing::bytes).sum());
    queued.clear();
}

/// What the broker client took since its last flush.
#[derive(Default)]
struct Handed {
    /// Broadcasts, once per message they travel in.
    broadcasts: u64,
    /// Messages.
    messages: u64,
}

/// How many of the entries at the front of `queued` travel in one message (at least one):
/// those with the same channel and flags as the first (so order within a channel is kept and
/// a receiving node treats them alike), and, beyond the first entry, within the limits of one
/// message ([`fits_one_message`]).
fn joined(queued: &[Outgoing]) -> usize {
    let Some(first) = queued.first() else {
        return 0;
    };
    let (mut broadcasts, mut frames, mut bytes) =
        (first.broadcasts, first.payloads.len(), first.bytes());
    let mut n = 1;
    for next in &queued[1..] {
        broadcasts += next.broadcasts;
        frames += next.payloads.len();
        bytes += next.bytes();
        if !first.same_channel(next) || !fits_one_message(broadcasts, frames, bytes) {
            break;
        }
        n += 1;
    }
    n
}

/// Publishes a run of broadcasts with one audience as one message: on the channel for
/// everyone, or once per topic. Dropped and counted while the broker is not connected (at
/// most once: never queued for a later connection).
async fn publish_run<C: Connection>(
    connection: &C,
    run: &[Outgoing],
    link: &Link,
    handed: &mut Handed,
) {
    let counters = &link.counters;
    let broadcasts = run.iter().map(|o| o.broadcasts).sum();
    if !connection.is_connected() {
        add(&counters.disconnected, broadcasts as u64);
        return;
    }
    let audience = &run[0].audience;
    let frames = frames_of(run);
    let authenticated_only = audience.is_authenticated_only();
    let Some(topics) = audience.topic_filter() else {
        let publication = Publication {
            channel: &Channel::Everyone,
            authenticated_only,
            topics: None,
            frames: &frames,
            broadcasts,
        };
        return count(
            connection.publish(publication).await,
            broadcasts,
            link,
            handed,
        );
    };
    let several = Some(topics).filter(|t| t.len() > 1);
    for topic in topics.iter().filter(|t| !t.as_str().is_empty()) {
        let channel = Channel::Topic(topic.clone());
        let publication = Publication {
            channel: &channel,
            authenticated_only,
            topics: several,
            frames: &frames,
            broadcasts,
        };
        count(
            connection.publish(publication).await,
            broadcasts,
            link,
            handed,
        );
    }
}

/// Notes what a publication did: taken by the client (counted once flushed), or refused.
fn count(
    result: Result<(), crate::BridgeError>,
    broadcasts: usize,
    link: &Link,
    handed: &mut Handed,
) {
    match result {
        Ok(()) => {
            handed.broadcasts += broadcasts as u64;
            handed.messages += 1;
        }
        Err(e) => {
            tracing::debug!(error = %e, "publish refused");
            add(&link.counters.publish_failed, broadcasts as u64);
        }
    }
}

/// The frames of a run of broadcasts as one `Bytes`: a single frame's own bytes (no copy),
/// or the frames one after the other (copied once per message, at the origin).
fn frames_of(run: &[Outgoing]) -> Bytes {
    if let [one] = run
        && let [frame] = &one.payloads[..]
    {
        return frame.frame().clone();
    }
    let mut out = BytesMut::with_capacity(run.iter().map(Outgoing::bytes).sum());
    for p in run.iter().flat_map(|o| o.payloads.iter()) {
        out.put_slice(p.frame());
    }
    out.freeze()
}

/// Hands each received broadcast to the local shards that may have clients for it (never
/// back to the broker), waiting for room in their queues. The broker carries plain frames;
/// this node compresses each once, here, for its own clients that negotiated
/// permessage-deflate (as a local publisher would).
async fn fan_out(
    mut inbound: mpsc::Receiver<Received>,
    shards: Arc<[Handle]>,
    interest: Arc<Interest>,
    link: Arc<Link>,
    compression: Compression,
) {
    while let Some(received) = inbound.recv().await {
        let broadcasts = received.counted();
        // Within `bridge_inbound_bytes_max` until handed to the shards (whose queues bound
        // them from then on).
        let bytes = charge(&received);
        let Some((mut payloads, audience)) = admit(received, &link) else {
            link.inbound_bytes.give(bytes);
            continue;
        };
        interest.compress(&mut payloads, &compression);
        let Some(permits) = reserve_wanted(&shards, &interest, &audience).await else {
            // The shards are stopping.
            return;
        };
        // Counted before the sends, which cannot fail once reserved: a client that reads the
        // frame never finds the count behind it.
        add(&link.counters.delivered, broadcasts);
        send_each(permits, payloads, audience);
        link.inbound_bytes.give(bytes);
    }
}

/// What a received message becomes for the shards, or `None` if it is malformed (counted) or
/// a copy another channel delivers.
///
/// A broadcast to several topics comes once per topic; this node delivers only the copy on
/// the first of its topics the node is subscribed to, to the subscribers of any of them, so
/// that each client receives it once.
fn admit(received: Received, link: &Link) -> Option<(Payloads, Audience)> {
    let Received {
        channel,
        authenticated_only,
        topics,
        frames,
        broadcasts: _,
    } = received;
    let malformed = || add(&link.counters.malformed, 1);
    let payloads = match split(frames) {
        Ok(p) => p,
        Err(why) => {
            tracing::debug!(why, "malformed frames from the broker");
            malformed();
            return None;
        }
    };
    let audience = match (channel, topics) {
        (Channel::Everyone, None) => Audience::ALL,
        (Channel::Topic(topic), None) => Audience::topic(topic),
        (Channel::Topic(topic), Some(list)) if list.contains(&topic) => {
            if link.registry.first_subscribed(&list) != Some(&topic) {
                return None;
            }
            Audience::topics(list)
        }
        _ => {
            malformed();
            return None;
        }
    };
    let audience = if authenticated_only {
        audience.authenticated()
    } else {
        audience
    };
    Some((payloads, audience))
}

/// Keeps the broker subscriptions in line with the registry: subscribes a topic when its
/// first shard gets a subscriber, unsubscribes it `delay` after its last one left, unless one
/// came back.
async fn follow_interest<C: Connection>(
    connection: Arc<C>,
    link: Arc<Link>,
    delay: Duration,
    stop: CancellationToken,
) {
    let mut leaving = VecDeque::new();
    loop {
        let next = leaving.front().map(|(at, _): &(Instant, Topic)| *at);
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = link.registry.changed.notified() => {}
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
        }
        let (join, leave) = plan(
            &mut link.registry.lock(),
            &mut leaving,
            Instant::now(),
            delay,
        );
        let counters = &link.counters;
        for topic in &join {
            match connection.subscribe(topic).await {
                Ok(()) => add(&counters.subscribes, 1),
                Err(e) => {
                    tracing::warn!(topic = topic.as_str(), error = %e, "cannot subscribe");
                    add(&counters.subscribe_failed, 1);
                    refused(&mut link.registry.lock(), topic);
                }
            }
        }
        for topic in &leave {
            connection.unsubscribe(topic).await;
            add(&counters.unsubscribes, 1);
        }
        if !join.is_empty() {
            // Counted as held once the broker has them: a remote publication made after the
            // gauge moved reaches this node.
            let _ = tokio::time::timeout(GRACE, connection.sync()).await;
        }
        if !(join.is_empty() && leave.is_empty()) {
            let held = link
                .registry
                .lock()
                .map
                .values()
                .filter(|n| n.subscribed)
                .count();
            counters.subscriptions.store(held as u64, Relaxed);
        }
    }
}

/// Marks a topic whose subscription the broker refused as not held (tried again at its next
/// change).
fn refused(topics: &mut Topics, topic: &Topic) {
    if let Some(node) = topics.map.get_mut(topic) {
        node.subscribed = false;
        if node.shards == 0 {
            topics.map.remove(topic);
        }
    }
}

/// Decides, at `now`, which topics to subscribe (a shard has subscribers, none held) and
/// which to unsubscribe (no shard has had subscribers for `delay`), from the changes since
/// the last call; `leaving` holds the pending unsubscriptions in deadline order.
///
/// # Invariants
///
/// A topic is unsubscribed only if its count has been 0 since its deadline was set: a topic
/// that came back has no deadline (`leave_at` is `None`), and one that left again has a later
/// deadline than the one queued first, so the older entry finds a mismatch and is skipped.
pub(crate) fn plan(
    topics: &mut Topics,
    leaving: &mut VecDeque<(Instant, Topic)>,
    now: Instant,
    delay: Duration,
) -> (Vec<Topic>, Vec<Topic>) {
    let mut join = Vec::new();
    let mut leave = Vec::new();
    let Topics { map, dirty } = topics;
    for topic in dirty.drain(..) {
        let Some(node) = map.get_mut(&topic) else {
            continue;
        };
        node.dirty = false;
        if node.shards > 0 {
            node.leave_at = None;
            if !node.subscribed {
                node.subscribed = true;
                join.push(topic);
            }
        } else if node.subscribed {
            if node.leave_at.is_none() {
                let at = now + delay;
                node.leave_at = Some(at);
                leaving.push_back((at, topic));
            }
        } else {
            map.remove(&topic);
        }
    }
    while leaving.front().is_some_and(|(at, _)| *at <= now) {
        let Some((at, topic)) = leaving.pop_front() else {
            break;
        };
        if map
            .get(&topic)
            .is_some_and(|n| n.shards == 0 && n.leave_at == Some(at))
        {
            map.remove(&topic);
            leave.push(topic);
        }
    }
    // A node that followed many topics once gives the room back when they are gone (at most
    // half of it stays empty); halving at a quarter keeps it amortized.
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
    if dirty.capacity() > 64 {
        dirty.shrink_to(64);
    }
    if leaving.capacity() > 64 && leaving.len() < leaving.capacity() / 4 {
        leaving.shrink_to(leaving.len() * 2);
    }
    (join, leave)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::MESSAGE_BYTES_MAX;
    use crate::link::Registry;
    use std::sync::atomic::Ordering::Relaxed;

    fn step(
        registry: &Registry,
        leaving: &mut VecDeque<(Instant, Topic)>,
        now: Instant,
    ) -> (Vec<&'static str>, Vec<&'static str>) {
        let (join, leave) = plan(&mut registry.lock(), leaving, now, Duration::from_secs(1));
        let names = |v: Vec<Topic>| -> Vec<&'static str> {
            v.iter()
                .map(|t| &*String::from(t.as_str()).leak())
                .collect()
        };
        (names(join), names(leave))
    }

    /// A connection that records what is published: (channel, broadcasts, frames).
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(Channel, usize, Bytes)>>);

    impl Connection for Recorder {
        fn is_connected(&self) -> bool {
            true
        }
        async fn publish(&self, p: Publication<'_>) -> Result<(), crate::BridgeError> {
            let entry = (p.channel.clone(), p.broadcasts, p.frames.clone());
            self.0.lock().expect("lock").push(entry);
            Ok(())
        }
        async fn subscribe(&self, _: &Topic) -> Result<(), crate::BridgeError> {
            Ok(())
        }
        async fn unsubscribe(&self, _: &Topic) {}
        async fn sync(&self) {}
    }

    fn outgoing(body: &[u8], audience: Audience) -> Outgoing {
        Outgoing {
            payloads: smallvec::smallvec![crate::Payload::binary(body)],
            audience,
            broadcasts: 1,
        }
    }

    fn published(queued: Vec<Outgoing>) -> (Vec<(Channel, usize, Bytes)>, Link) {
        let (tx, _rx) = mpsc::channel(1);
        let link = Link::new(tx, &crate::Config::default());
        let recorder = Recorder::default();
        let mut queued = queued;
        for o in &queued {
            // As `Link::offer` does for what it queues.
            assert!(link.outbound_bytes.take(o.bytes()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(publish_queued(&recorder, &mut queued, &link));
        assert!(queued.is_empty());
        (recorder.0.into_inner().expect("lock"), link)
    }

    #[test]
    fn consecutive_broadcasts_with_one_audience_travel_in_one_message_in_order() {
        let news = || Audience::topic(Topic::new("news"));
        let queued = vec![
            outgoing(b"a", Audience::ALL),
            outgoing(b"b", Audience::ALL),
            outgoing(b"c", news()),
            outgoing(b"d", news()),
            outgoing(b"e", Audience::ALL.authenticated()),
            outgoing(b"f", Audience::ALL),
        ];
        let (sent, link) = published(queued);
        let runs: Vec<(Channel, usize, Vec<Vec<u8>>)> = sent
            .into_iter()
            .map(|(channel, n, frames)| {
                let bodies = split(frames).expect("frames");
                (
                    channel,
                    n,
                    bodies.iter().map(|p| p.body().to_vec()).collect(),
                )
            })
            .collect();
        let news = Channel::Topic(Topic::new("news"));
        assert_eq!(
            runs,
            vec![
                (Channel::Everyone, 2, vec![b"a".to_vec(), b"b".to_vec()]),
                (news, 2, vec![b"c".to_vec(), b"d".to_vec()]),
                (Channel::Everyone, 1, vec![b"e".to_vec()]),
                (Channel::Everyone, 1, vec![b"f".to_vec()]),
            ]
        );
        let c = &link.counters;
        assert_eq!(
            (c.published.load(Relaxed), c.messages.load(Relaxed)),
            (6, 4)
        );
    }

    #[test]
    fn a_message_holds_at_most_its_limits_and_a_lone_frame_is_not_copied() {
        let many: Vec<Outgoing> = (0..BROADCASTS_PER_MESSAGE_MAX + 1)
            .map(|_| outgoing(b"x", Audience::ALL))
            .collect();
        let counts: Vec<usize> = published(many).0.iter().map(|(_, n, _)| *n).collect();
        assert_eq!(counts, vec![BROADCASTS_PER_MESSAGE_MAX, 1]);

        let big = vec![0u8; MESSAGE_BYTES_MAX / 2];
        let large: Vec<Outgoing> = (0..3).map(|_| outgoing(&big, Audience::ALL)).collect();
        let counts: Vec<usize> = published(large).0.iter().map(|(_, n, _)| *n).collect();
        assert_eq!(
            counts,
            vec![1, 1, 1],
            "two would pass {MESSAGE_BYTES_MAX} B"
        );

        let lone = outgoing(&big, Audience::ALL);
        let frame = lone.payloads[0].frame().clone();
        let (sent, _) = published(vec![lone]);
        assert_eq!(sent[0].2.as_ptr(), frame.as_ptr(), "not copied");
    }

    #[test]
    fn a_topic_is_subscribed_on_its_first_shard_and_left_a_delay_after_its_last() {
        let registry = Registry::default();
        let mut leaving = VecDeque::new();
        let t0 = Instant::now();
        let news = Topic::new("news");
        registry.joined(&news);
        registry.joined(&news);
        assert_eq!(step(&registry, &mut leaving, t0), (vec!["news"], vec![]));
        registry.left(&news);
        assert_eq!(step(&registry, &mut leaving, t0), (vec![], vec![]));
        registry.left(&news);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(step(&registry, &mut leaving, at(10)), (vec![], vec![]));
        assert_eq!(
            step(&registry, &mut leaving, at(1009)),
            (vec![], vec![]),
            "too early"
        );
        assert_eq!(
            step(&registry, &mut leaving, at(1010)),
            (vec![], vec!["news"])
        );
        assert!(registry.lock().map.is_empty(), "forgotten");
    }

    #[test]
    fn a_topic_that_comes_back_within_the_delay_stays_subscribed() {
        let registry = Registry::default();
        let mut leaving = VecDeque::new();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let news = Topic::new("news");
        registry.joined(&news);
        step(&registry, &mut leaving, t0);
        registry.left(&news);
        step(&registry, &mut leaving, at(0));
        registry.joined(&news);
        assert_eq!(
            step(&registry, &mut leaving, at(500)),
            (vec![], vec![]),
            "held"
        );
        registry.left(&news);
        step(&registry, &mut leaving, at(800));
        assert_eq!(
            step(&registry, &mut leaving, at(1000)),
            (vec![], vec![]),
            "old deadline"
        );
        assert_eq!(
            step(&registry, &mut leaving, at(1800)),
            (vec![], vec!["news"])
        );
    }

    #[test]
    fn a_topic_that_leaves_before_the_bridge_looks_is_never_subscribed() {
        let registry = Registry::default();
        let mut leaving = VecDeque::new();
        let news = Topic::new("news");
        registry.joined(&news);
        registry.left(&news);
        assert_eq!(
            step(&registry, &mut leaving, Instant::now()),
            (vec![], vec![])
        );
        assert!(registry.lock().map.is_empty());
    }
}
