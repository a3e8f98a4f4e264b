//! Topics: who receives a topic broadcast, subscriptions and their limits, interest routing.
//!
//! The shards run as tasks of the test's thread (`Builder::build_local`) on a paused clock, and
//! clients talk to them over in-memory pipes: "nothing more arrives" is a wait that the clock
//! skips, not a guess about how busy the machine is.

mod common;

use common::{Pipe, builder, connect_pipe as connect, local, start_local as start};
use futures_util::{SinkExt, StreamExt};
use shardcast::wire::handshake::Request;
use shardcast::{
    Audience, BroadcastError, ClientId, Context, Decision, Engine, Handler, Incoming, Payload,
    Principal, SubscribeError, Topic, TryBroadcastError,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// How long a client waits before it concludes nothing more is coming (paused time).
const QUIET: Duration = Duration::from_millis(100);

/// The texts `ws` receives until none arrives within [`QUIET`].
async fn texts(ws: &mut Pipe) -> Vec<String> {
    common::texts_within(ws, QUIET).await
}

async fn publish(engine: &Engine, text: &str, audience: Audience) {
    engine
        .broadcast(Payload::text(text), audience)
        .await
        .expect("broadcast");
}

#[tokio::test(start_paused = true)]
async fn a_client_receives_only_the_topics_it_subscribed_to() {
    local(async {
        let engine = start(builder().shards(2));
        let (mut a, a_id) = connect(&engine).await;
        let (mut b, b_id) = connect(&engine).await;
        let (mut none, _) = connect(&engine).await;
        engine.subscribe(a_id, "a").await.unwrap();
        engine.subscribe(b_id, "b").await.unwrap();

        publish(&engine, "to a", Audience::topic("a")).await;
        publish(&engine, "to b", Audience::topic("b")).await;
        publish(&engine, "to c", Audience::topic("c")).await;
        publish(&engine, "to all", Audience::ALL).await;

        assert_eq!(texts(&mut a).await, ["to a", "to all"]);
        assert_eq!(texts(&mut b).await, ["to b", "to all"]);
        assert_eq!(texts(&mut none).await, ["to all"]);
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_client_subscribed_to_two_target_topics_receives_the_frame_once() {
    local(async {
        let engine = start(builder().shards(2));
        let (mut both, both_id) = connect(&engine).await;
        let (mut one, one_id) = connect(&engine).await;
        let (mut both_too, both_too_id) = connect(&engine).await;
        for id in [both_id, both_too_id] {
            engine.subscribe(id, "x").await.unwrap();
            engine.subscribe(id, "y").await.unwrap();
        }
        engine.subscribe(one_id, "y").await.unwrap();

        publish(&engine, "x or y", Audience::topics(["x", "y"])).await;
        publish(&engine, "y or z", Audience::topics(["y", "z"])).await;

        assert_eq!(texts(&mut both).await, ["x or y", "y or z"]);
        assert_eq!(texts(&mut one).await, ["x or y", "y or z"]);
        assert_eq!(texts(&mut both_too).await, ["x or y", "y or z"]);
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_accepted_after_unsubscribe_returned_is_not_delivered_to_that_client() {
    local(async {
        let engine = start(builder().shards(2));
        let (mut leaver, leaver_id) = connect(&engine).await;
        let (mut stayer, stayer_id) = connect(&engine).await;
        for id in [leaver_id, stayer_id] {
            engine.subscribe(id, "t").await.unwrap();
        }
        publish(&engine, "before", Audience::topic("t")).await;
        assert!(engine.unsubscribe(leaver_id, "t").await.unwrap());
        publish(&engine, "after", Audience::topic("t")).await;

        assert_eq!(texts(&mut leaver).await, ["before"]);
        assert_eq!(texts(&mut stayer).await, ["before", "after"]);
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_client_leaves_every_topic_and_an_emptied_topic_is_forgotten() {
    local(async {
        let engine = start(builder().shards(2));
        let (_ws, id) = connect(&engine).await;
        let (_other, other) = connect(&engine).await;
        for t in 0..10 {
            engine.subscribe(id, format!("t{t}")).await.unwrap();
        }
        engine.subscribe(other, "t0").await.unwrap();
        let stats = engine.stats();
        assert_eq!(stats.total.subscriptions, 11);
        assert_eq!(
            stats.total.topics, 11,
            "t0 counts once on each of two shards"
        );

        let info = engine.remove(id).await.expect("was registered");
        assert_eq!(info.topics.len(), 10, "what it was subscribed to");
        for t in 0..10 {
            let expected = usize::from(t == 0);
            assert_eq!(engine.subscriber_count(format!("t{t}")).await, expected);
        }
        let stats = engine.stats();
        assert_eq!((stats.total.topics, stats.total.subscriptions), (1, 1));

        // Churn through many distinct topics: what is left is what is subscribed now.
        for t in 0..2_000 {
            let topic = Topic::new(format!("churn/{t}"));
            engine.subscribe(other, &topic).await.unwrap();
            assert!(engine.unsubscribe(other, &topic).await.unwrap());
        }
        let stats = engine.stats();
        assert_eq!((stats.total.topics, stats.total.subscriptions), (1, 1));
        assert!(engine.unsubscribe(other, "t0").await.unwrap());
        let stats = engine.stats();
        assert_eq!((stats.total.topics, stats.total.subscriptions), (0, 0));
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn interest_routing_does_not_wake_a_shard_without_subscribers() {
    local(async {
        let engine = start(builder().shards(2));
        let (mut subscriber, id) = connect(&engine).await;
        let (mut bystander, bystander_id) = connect(&engine).await;
        assert_ne!(id.shard(), bystander_id.shard());
        engine.subscribe(id, "news").await.unwrap();

        for i in 0..10 {
            publish(&engine, &format!("news {i}"), Audience::topic("news")).await;
        }
        assert_eq!(texts(&mut subscriber).await.len(), 10);
        assert!(texts(&mut bystander).await.is_empty());
        let stats = engine.stats();
        assert_eq!(stats.broadcasts, 10);
        let applied =
            |shard: ClientId| stats.shards[usize::from(shard.shard().0)].broadcasts_applied;
        assert_eq!(applied(id), 10);
        assert_eq!(applied(bystander_id), 0, "never pushed to the other shard");

        // Once the last subscriber left, no shard is woken at all.
        engine.unsubscribe(id, "news").await.unwrap();
        publish(&engine, "nobody", Audience::topic("news")).await;
        let stats = engine.stats();
        assert_eq!(stats.broadcasts, 11, "published");
        assert_eq!(stats.total.broadcasts_applied, 10, "applied nowhere");
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn limits_give_their_errors_and_change_nothing() {
    local(async {
        let engine = start(
            builder()
                .shards(1)
                .topic_bytes_max(4)
                .topics_per_client_max(2),
        );
        let (_ws, id) = connect(&engine).await;
        assert_eq!(
            engine.subscribe(id, "").await,
            Err(SubscribeError::EmptyTopic)
        );
        assert_eq!(
            engine.subscribe(id, "12345").await,
            Err(SubscribeError::TopicTooLong { len: 5, max: 4 })
        );
        engine.subscribe(id, "a").await.unwrap();
        engine.subscribe(id, "b").await.unwrap();
        engine.subscribe(id, "b").await.unwrap();
        assert_eq!(
            engine.subscribe(id, "c").await,
            Err(SubscribeError::TooManyTopics { max: 2 })
        );
        let info = engine.client(id).await.unwrap();
        assert_eq!(info.topics, [Topic::new("a"), Topic::new("b")]);

        let gone = ClientId::from_u64(id.as_u64() + (1 << 20));
        assert_eq!(
            engine.subscribe(gone, "a").await,
            Err(SubscribeError::NotRegistered(gone))
        );
        assert!(!engine.unsubscribe(gone, "a").await.unwrap());
        engine.shutdown(Duration::from_secs(1)).await;
        assert_eq!(engine.subscribe(id, "a").await, Err(SubscribeError::Closed));
    })
    .await;
}

/// Subscribes each client to the topics named in its path, `/?sub=A&sub=B`; `sub T` and
/// `pub T BODY` messages subscribe and publish.
struct PubSub;

impl Handler for PubSub {
    fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
        let query = request.path().split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("sub="))
            .fold(Decision::accept(), Decision::subscribe)
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let Incoming::Text(text) = message else {
            return;
        };
        if let Some(topic) = text.strip_prefix("sub ") {
            if let Err(e) = ctx.subscribe(topic) {
                ctx.close_with_reason(shardcast::close_code::POLICY, &e.to_string());
            }
        } else if let Some(topic) = text.strip_prefix("unsub ") {
            ctx.unsubscribe(topic);
        } else if let Some(rest) = text.strip_prefix("pub ")
            && let Some((topic, body)) = rest.split_once(' ')
        {
            ctx.broadcast(Payload::text(body), Audience::topic(topic));
        } else if text == "auth" {
            ctx.set_authenticated(Principal::new(()));
        }
    }
}

async fn connect_to(engine: &Engine, path: &str) -> Result<Pipe, String> {
    let (client, server) = tokio::io::duplex(64 << 10);
    engine.register(server).await.expect("register");
    tokio_tungstenite::client_async(format!("ws://localhost{path}"), client)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

#[tokio::test(start_paused = true)]
async fn subscriptions_chosen_at_upgrade_are_in_place_when_the_upgrade_completes() {
    local(async {
        let engine = start(builder().shards(2).handler(PubSub));
        let mut lobby = connect_to(&engine, "/?sub=lobby&sub=news").await.unwrap();
        let mut other = connect_to(&engine, "/?sub=other").await.unwrap();
        publish(&engine, "hello lobby", Audience::topic("lobby")).await;
        assert_eq!(texts(&mut lobby).await, ["hello lobby"]);
        assert!(texts(&mut other).await.is_empty());
        assert_eq!(engine.subscriber_count("news").await, 1);

        // A topic over the limit at upgrade: refused with 400, nothing registered.
        let before = engine.client_count();
        let long = "x".repeat(300);
        let refused = connect_to(&engine, &format!("/?sub={long}")).await;
        let error = refused.expect_err("refused");
        assert!(error.contains("400"), "{error}");
        assert_eq!(engine.client_count(), before);
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_subscribes_and_publishes_across_shards_and_a_refusal_closes_with_1008() {
    local(async {
        let engine = start(builder().shards(2).topics_per_client_max(1).handler(PubSub));
        let (mut alice, _) = connect(&engine).await;
        let (mut bob, bob_id) = connect(&engine).await;
        let (mut carol, _) = connect(&engine).await;
        for ws in [&mut alice, &mut bob] {
            ws.send(Message::text("sub chat")).await.unwrap();
        }
        // Bob's and carol's shard learned the subscription once bob's message was read.
        common::elapse(QUIET).await;
        assert_eq!(engine.subscriber_count("chat").await, 2);
        carol.send(Message::text("pub chat hi all")).await.unwrap();
        assert_eq!(texts(&mut alice).await, ["hi all"]);
        assert_eq!(texts(&mut bob).await, ["hi all"]);
        assert!(texts(&mut carol).await.is_empty(), "not subscribed");

        // A second topic is past bob's limit: closed with 1008 and the reason.
        bob.send(Message::text("sub more")).await.unwrap();
        match tokio::time::timeout(QUIET, bob.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 1008);
                assert!(frame.reason.contains("subscriptions"), "{}", frame.reason);
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
        common::elapse(QUIET).await;
        assert!(engine.client(bob_id).await.is_none());
        assert_eq!(
            engine.subscriber_count("chat").await,
            1,
            "bob left chat too"
        );
        carol
            .send(Message::text("pub chat still here"))
            .await
            .unwrap();
        assert_eq!(texts(&mut alice).await, ["still here"]);
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn one_publishers_frames_arrive_in_order_whatever_topics_carry_them() {
    local(async {
        let engine = start(builder().shards(2));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (ws, id) = connect(&engine).await;
            engine.subscribe(id, "a").await.unwrap();
            engine.subscribe(id, "b").await.unwrap();
            clients.push(ws);
        }
        let audiences = [
            Audience::topic("a"),
            Audience::topic("b"),
            Audience::topics(["a", "b"]),
            Audience::ALL,
        ];
        let mut expected = Vec::new();
        for i in 0..200 {
            let text = i.to_string();
            publish(&engine, &text, audiences[i % audiences.len()].clone()).await;
            expected.push(text);
        }
        for ws in &mut clients {
            assert_eq!(texts(ws).await, expected);
        }
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_topic_audience_narrows_by_authentication_and_exclusion_and_keeps_batches_whole() {
    local(async {
        let engine = start(builder().shards(2).handler(PubSub));
        let (mut authed, authed_id) = connect(&engine).await;
        let (mut anonymous, anonymous_id) = connect(&engine).await;
        let (mut sender, sender_id) = connect(&engine).await;
        authed.send(Message::text("auth")).await.unwrap();
        sender.send(Message::text("auth")).await.unwrap();
        common::elapse(QUIET).await;
        for id in [authed_id, anonymous_id, sender_id] {
            engine.subscribe(id, "t").await.unwrap();
        }
        let audience = Audience::topic("t").authenticated().except(sender_id);
        publish(&engine, "members only", audience.clone()).await;
        let batch = ["one", "two", "three"].map(Payload::text);
        engine.broadcast_batch(batch, audience).await.unwrap();

        assert_eq!(
            texts(&mut authed).await,
            ["members only", "one", "two", "three"]
        );
        assert!(texts(&mut anonymous).await.is_empty());
        assert!(texts(&mut sender).await.is_empty());
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn frames_from_several_topics_in_one_tick_go_out_in_one_write_in_publish_order() {
    local(async {
        let engine = start(builder().shards(1));
        let (mut ws, id) = connect(&engine).await;
        for topic in ["a", "b", "c"] {
            engine.subscribe(id, topic).await.unwrap();
        }
        let before = engine.stats().total.write_syscalls;
        // Queued without yielding: the shard, a task of this thread, takes them in one tick.
        for (text, topic) in [("1", "a"), ("2", "b"), ("3", "c"), ("4", "a")] {
            engine
                .try_broadcast(Payload::text(text), Audience::topic(topic))
                .expect("room in the queue");
        }
        assert_eq!(texts(&mut ws).await, ["1", "2", "3", "4"]);
        assert_eq!(engine.stats().total.write_syscalls - before, 1);
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_publication_to_a_topic_past_the_limits_is_refused_where_it_enters() {
    local(async {
        let engine = start(builder().shards(2));
        let long = "x".repeat(257);
        match engine
            .broadcast(Payload::text("a"), Audience::topic(long.as_str()))
            .await
        {
            Err(BroadcastError::Topic(SubscribeError::TopicTooLong { len, max }, payload)) => {
                assert_eq!((len, max, payload.body()), (257, 256, &b"a"[..]));
            }
            other => panic!("expected a topic error, got {other:?}"),
        }
        match engine.try_broadcast(Payload::text("b"), Audience::topics(["ok", ""])) {
            Err(TryBroadcastError::Topic(SubscribeError::EmptyTopic, payload)) => {
                assert_eq!(payload.body(), b"b");
            }
            other => panic!("expected a topic error, got {other:?}"),
        }
        let batch = [Payload::text("c")];
        assert!(matches!(
            engine.broadcast_batch(batch, Audience::topic("")).await,
            Err(BroadcastError::Topic(SubscribeError::EmptyTopic, _))
        ));
        assert_eq!(engine.stats().broadcasts, 0, "nothing was sent");
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn subscriptions_are_bounded_engine_wide_and_given_back_when_clients_leave() {
    local(async {
        let engine = start(builder().shards(2).subscriptions_max(3));
        let (_a, a) = connect(&engine).await;
        let (b_ws, b) = connect(&engine).await;
        engine.subscribe(a, "x").await.unwrap();
        engine.subscribe(a, "y").await.unwrap();
        engine.subscribe(b, "x").await.unwrap();
        assert_eq!(
            engine.subscribe(b, "y").await,
            Err(SubscribeError::TooManySubscriptions { max: 3 }),
            "over every client, whatever its own count"
        );
        // Subscribing again to what it has takes no room.
        assert_eq!(engine.subscribe(a, "x").await, Ok(()));
        assert!(engine.unsubscribe(a, "y").await.unwrap());
        engine.subscribe(b, "y").await.unwrap();
        // A client that leaves gives its subscriptions back.
        drop(b_ws);
        common::eventually(|| engine.client_count() == 1).await;
        engine.subscribe(a, "y").await.unwrap();
        engine.subscribe(a, "z").await.unwrap();
        engine.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}
