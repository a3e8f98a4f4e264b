//! The bridge through an in-process broker (the `Broker` trait, with no server): what crosses
//! nodes, once per broadcast; `except` stays on the origin node; a node receives a topic only
//! while it has subscribers of it; malformed frames are counted and dropped.

mod common;

use common::*;
use shardcast::bridge::{Broker, Channel, Connection, Inbound, Publication, Received};
use shardcast::{Audience, BridgeError, Context, Engine, Handler, Incoming, Payload, Topic};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every node's subscriptions and inbound queue: a broker in memory.
#[derive(Clone, Default)]
struct Hub {
    nodes: Arc<Mutex<Vec<Member>>>,
}

struct Member {
    topics: Arc<Mutex<HashSet<Topic>>>,
    inbound: Inbound,
}

/// One node's connection to the hub.
struct Link {
    hub: Hub,
    me: usize,
    topics: Arc<Mutex<HashSet<Topic>>>,
}

impl Broker for Hub {
    type Connection = Link;

    async fn connect(self, inbound: Inbound, _required: bool) -> Result<Link, BridgeError> {
        let topics = Arc::new(Mutex::new(HashSet::new()));
        let mut nodes = lock(&self.nodes);
        nodes.push(Member {
            topics: topics.clone(),
            inbound: inbound.clone(),
        });
        inbound.connection(true);
        let me = nodes.len() - 1;
        drop(nodes);
        Ok(Link {
            hub: self,
            me,
            topics,
        })
    }
}

impl Connection for Link {
    fn is_connected(&self) -> bool {
        true
    }

    async fn publish(&self, p: Publication<'_>) -> Result<(), BridgeError> {
        for (i, node) in lock(&self.hub.nodes).iter().enumerate() {
            let wanted = match p.channel {
                Channel::Everyone => true,
                Channel::Topic(t) => lock(&node.topics).contains(t),
            };
            if i != self.me && wanted {
                node.inbound.offer(Received {
                    channel: p.channel.clone(),
                    authenticated_only: p.authenticated_only,
                    topics: p.topics.map(<[Topic]>::to_vec),
                    frames: p.frames.clone(),
                    broadcasts: p.broadcasts,
                });
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BridgeError> {
        lock(&self.topics).insert(topic.clone());
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) {
        lock(&self.topics).remove(topic);
    }

    async fn sync(&self) {}
}

/// `sub T` subscribes and answers `ok`; `burst N` broadcasts `0` to `N-1` to everyone but its
/// sender; anything else is broadcast to everyone but its sender.
struct Relay;

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let Incoming::Text(text) = message else {
            return;
        };
        let id = ctx.id();
        if let Some(topic) = text.strip_prefix("sub ") {
            ctx.subscribe(topic).expect("subscribe");
            ctx.send(id, Payload::text("ok"));
        } else if let Some(n) = text.strip_prefix("burst ") {
            for i in 0..n.parse::<usize>().expect("a count") {
                ctx.broadcast(Payload::text(i.to_string()), Audience::ALL.except(id));
            }
        } else {
            ctx.broadcast(Payload::text(text), Audience::ALL.except(id));
        }
    }
}

async fn node(hub: &Hub) -> (Engine, SocketAddr) {
    start(
        builder()
            .shards(2)
            .handler(Relay)
            .bridge(hub.clone())
            .bridge_unsubscribe_delay(Duration::from_millis(50)),
    )
    .await
}

#[tokio::test]
async fn a_handlers_broadcast_crosses_nodes_once_and_except_stays_on_the_origin() {
    let hub = Hub::default();
    let (a, a_addr) = node(&hub).await;
    let (b, b_addr) = node(&hub).await;
    let mut sender = connect(&a, a_addr).await;
    let mut neighbour = connect(&a, a_addr).await;
    let mut far = connect(&b, b_addr).await;
    send_text(&mut sender, "hello").await;
    assert_eq!(next_text(&mut neighbour).await, "hello");
    assert_eq!(next_text(&mut far).await, "hello");
    // The sender was excluded on its own node only; it hears the next one, from B.
    b.broadcast(Payload::text("from b"), Audience::ALL)
        .await
        .expect("broadcast");
    assert_eq!(next_text(&mut sender).await, "from b");
    // A bridge counts a delivery once its fan-out returns, which may be a moment after the
    // client read the frame: wait for the counters to settle, then check them exactly.
    let settled = |e: &Engine| {
        let s = e.stats().bridge;
        (s.published, s.received, s.delivered)
    };
    eventually(|| settled(&a) == (1, 1, 1) && settled(&b) == (1, 1, 1)).await;
    let (sa, sb) = (a.stats().bridge, b.stats().bridge);
    assert_eq!((sa.published, sa.received), (1, 1));
    assert_eq!((sb.published, sb.received, sb.delivered), (1, 1, 1));
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

/// Two nodes, A and B, after a client on A sent `burst n` and a client on B received the
/// burst, in order.
async fn a_burst_across_two_nodes(n: usize) -> (Engine, Engine) {
    let hub = Hub::default();
    let (a, a_addr) = node(&hub).await;
    let (b, b_addr) = node(&hub).await;
    let mut sender = connect(&a, a_addr).await;
    let mut far = connect(&b, b_addr).await;
    send_text(&mut sender, &format!("burst {n}")).await;
    for i in 0..n {
        assert_eq!(next_text(&mut far).await, i.to_string());
    }
    (a, b)
}

#[tokio::test]
async fn broadcasts_a_handler_makes_in_one_read_cross_in_one_message_in_order() {
    let (a, b) = a_burst_across_two_nodes(10).await;
    let counted = |e: &Engine| {
        let s = e.stats().bridge;
        (s.published, s.messages, s.received, s.delivered)
    };
    eventually(|| counted(&b) == (0, 0, 10, 10)).await;
    // A counts its message once the hub took it, which may be a moment after B got it.
    until(
        || counted(&a) == (10, 1, 0, 0),
        || format!("A counted {:?}: ten broadcasts, one message", counted(&a)),
    )
    .await;
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_topic_reaches_another_node_only_while_it_has_subscribers() {
    let hub = Hub::default();
    let (a, _) = node(&hub).await;
    let (b, b_addr) = node(&hub).await;
    a.broadcast(Payload::text("nobody there"), Audience::topic("news"))
        .await
        .expect("publish");
    // Out of A before B subscribes: `broadcast` returns once A's shards have it, and its
    // bridge publishes a moment later, which could land after B's subscription.
    eventually(|| a.stats().bridge.messages == 1).await;
    let mut far = connect(&b, b_addr).await;
    send_text(&mut far, "sub news").await;
    assert_eq!(next_text(&mut far).await, "ok");
    eventually(|| b.stats().bridge.subscriptions == 1).await;
    a.broadcast(Payload::text("news"), Audience::topic("news"))
        .await
        .expect("publish");
    assert_eq!(next_text(&mut far).await, "news");
    assert_eq!(
        b.stats().bridge.received,
        1,
        "the first publication had no taker on B"
    );
    drop(far);
    eventually(|| b.stats().bridge.unsubscribes == 1).await;
    assert_eq!(b.stats().bridge.subscriptions, 0);
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn malformed_frames_from_the_broker_are_counted_and_dropped() {
    let hub = Hub::default();
    let (b, b_addr) = node(&hub).await;
    let mut far = connect(&b, b_addr).await;
    let inbound = lock(&hub.nodes)[0].inbound.clone();
    let offer = |frames: &'static [u8]| {
        inbound.offer(Received {
            channel: Channel::Everyone,
            authenticated_only: false,
            topics: None,
            frames: bytes::Bytes::from_static(frames),
            broadcasts: 1,
        })
    };
    offer(b"\x81\x05hel"); // truncated
    offer(b"\x89\x00"); // a ping
    offer(b"\x01\x01x"); // not final
    offer(b"\x81\x02ok"); // fine
    assert_eq!(next_text(&mut far).await, "ok");
    let stats = b.stats().bridge;
    assert_eq!(
        (stats.received, stats.delivered, stats.dropped.malformed),
        (4, 1, 3)
    );
    b.shutdown(Duration::from_secs(5)).await;
}

/// A broker message is checked against what a node sends before any of it reaches a client:
/// no more frames than a node puts in one message, joined broadcasts within the message limit,
/// a broadcast count in range, frames within the node's message limit and their lengths in
/// the shortest encoding. What fails is dropped and counted, and the clients see none of it.
#[tokio::test]
async fn a_broker_message_past_what_a_node_sends_reaches_no_client() {
    let hub = Hub::default();
    let (b, b_addr) = node(&hub).await;
    let mut far = connect(&b, b_addr).await;
    let inbound = lock(&hub.nodes)[0].inbound.clone();
    let offer = |frames: Vec<u8>, broadcasts: usize| {
        inbound.offer(Received {
            channel: Channel::Everyone,
            authenticated_only: false,
            topics: None,
            frames: bytes::Bytes::from(frames),
            broadcasts,
        })
    };
    let text = |body: &[u8]| {
        Payload::text(std::str::from_utf8(body).expect("ascii"))
            .frame()
            .to_vec()
    };
    // 2,000 empty frames as one broadcast: they would have filled every queue.
    offer(text(b"").repeat(2000), 1);
    // Two broadcasts of 40 KiB each: joined past the 64 KiB of one message.
    offer(text(&[b'x'; 40 << 10]).repeat(2), 2);
    // A count out of range, and more broadcasts than frames.
    offer(text(b"a"), 0);
    offer(text(b"a"), 65);
    offer(text(b"a"), 2);
    // A frame over the node's 64 KiB message limit.
    offer(Payload::binary(vec![0u8; 200 << 10]).frame().to_vec(), 1);
    // A 5-byte payload whose length is written in the 16-bit form.
    offer(b"\x81\x7e\x00\x05hello".to_vec(), 1);
    // And a fine one, which gets through.
    offer(text(b"ok"), 1);
    assert_eq!(next_text(&mut far).await, "ok");
    // Broadcasts as counted: each message's count where it is in range, else 1.
    let stats = b.stats().bridge;
    assert_eq!(
        (stats.received, stats.delivered, stats.dropped.malformed),
        (10, 1, 9),
        "{stats:?}"
    );
    b.shutdown(Duration::from_secs(5)).await;
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn metrics_show_what_crossed_nodes_and_every_reason_for_a_loss() {
    let (a, b) = a_burst_across_two_nodes(3).await;
    eventually(|| b.stats().bridge.delivered == 3).await;
    let render = |engine: &Engine| recorded(engine).1.render();
    let (text_a, text_b) = (render(&a), render(&b));
    for line in [
        "shardcast_bridge_connected 1",
        "shardcast_bridge_published_total 3",
        "shardcast_bridge_messages_total 1",
        "shardcast_bridge_received_total 0",
    ] {
        assert!(text_a.lines().any(|l| l == line), "{line} in:\n{text_a}");
    }
    for line in [
        "shardcast_bridge_received_total 3",
        "shardcast_bridge_delivered_total 3",
        "shardcast_bridge_dropped_total{reason=\"disconnected\"} 0",
        "shardcast_bridge_dropped_total{reason=\"inbound_full\"} 0",
    ] {
        assert!(text_b.lines().any(|l| l == line), "{line} in:\n{text_b}");
    }
    let reasons = text_b
        .lines()
        .filter(|l| l.starts_with("shardcast_bridge_dropped_total{"))
        .count();
    assert_eq!(reasons, 8, "one series per reason:\n{text_b}");
    // An engine without a bridge shows none of them.
    let (plain, _) = start(builder().shards(1)).await;
    assert!(!render(&plain).contains("shardcast_bridge_"));
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_broker_carries_plain_frames_and_each_node_compresses_once_for_its_own_clients() {
    let hub = Hub::default();
    let (a, _) = node(&hub).await;
    let (b, b_addr) = node(&hub).await;
    let (mut far, head) = RawClient::connect_with(
        b_addr,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    .await;
    assert!(head.contains("permessage-deflate"), "{head}");
    eventually(|| b.client_count() == 1).await;
    let doc = format!(
        "[{}]",
        (0..100)
            .map(|i| format!("{{\"n\":{i},\"v\":{}}}", i * 37 % 101))
            .collect::<Vec<_>>()
            .join(",")
    );
    a.broadcast(Payload::text(&doc), Audience::ALL)
        .await
        .expect("broadcast");
    let got = far.read_frame().await.expect("a frame");
    assert!(got.rsv1, "B's client negotiated it: {got:?}");
    assert!(got.payload.len() < doc.len() / 2);
    let mut inflater = shardcast::wire::deflate::Inflater::new();
    assert_eq!(inflater.inflate(&got.payload, 1 << 20), Ok(doc.as_bytes()));
    // A has no client that negotiated it: it compressed nothing, and the broker carried the
    // plain frame; B compressed it once, on its bridge thread.
    assert_eq!(a.stats().compressions, 0);
    assert_eq!(b.stats().compressions, 1);
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}
