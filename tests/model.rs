//! Model test: random sequences of connect, disconnect, authenticate, subscribe, unsubscribe,
//! broadcast (to everyone or to topics), send and batch run against the engine and against a
//! trivial oracle; every client's deliveries must match.

mod common;

use common::{END, WAIT, builder, lock};
use futures_util::StreamExt;
use proptest::prelude::*;
use shardcast::{Audience, ClientId, Payload, Principal};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Who a broadcast is for; indices pick among the connected clients (modulo their number).
#[derive(Clone, Copy, Debug)]
enum To {
    All,
    Authenticated,
    AllExcept(usize),
    AuthenticatedExcept(usize),
    /// The subscribers of the topics in this mask (bit `t`: topic `t` of [`TOPICS`]),
    /// authenticated only or not.
    Topics(u8, bool),
}

/// The topics scenarios use.
const TOPICS: [&str; 3] = ["red", "green", "blue"];

/// One step of a scenario.
#[derive(Clone, Debug)]
enum Op {
    Connect,
    /// Disconnect a client: by `Engine::remove`, or by hanging up.
    Disconnect {
        which: usize,
        hang_up: bool,
    },
    Authenticate(usize),
    Broadcast(To),
    Send(usize),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    /// A batch of this many frames.
    Batch(usize, To),
}

fn to() -> impl Strategy<Value = To> {
    prop_oneof![
        3 => Just(To::All),
        2 => Just(To::Authenticated),
        2 => any::<usize>().prop_map(To::AllExcept),
        1 => any::<usize>().prop_map(To::AuthenticatedExcept),
        3 => (0..8u8, any::<bool>()).prop_map(|(mask, only)| To::Topics(mask, only)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Connect),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(which, hang_up)| Op::Disconnect { which, hang_up }),
        2 => any::<usize>().prop_map(Op::Authenticate),
        4 => to().prop_map(Op::Broadcast),
        2 => any::<usize>().prop_map(Op::Send),
        3 => (any::<usize>(), 0..TOPICS.len()).prop_map(|(c, t)| Op::Subscribe(c, t)),
        1 => (any::<usize>(), 0..TOPICS.len()).prop_map(|(c, t)| Op::Unsubscribe(c, t)),
        2 => (1..5usize, to()).prop_map(|(k, to)| Op::Batch(k, to)),
    ]
}

/// The trivial engine: one lock around every client's authentication flag and deliveries.
#[derive(Debug, Default)]
struct Oracle {
    /// Client key → (authenticated, messages delivered in order).
    clients: Mutex<HashMap<usize, (bool, Vec<String>)>>,
    /// Client key → the topics it is subscribed to.
    topics: Mutex<HashMap<usize, BTreeSet<usize>>>,
}

impl Oracle {
    fn connect(&self, key: usize) {
        lock(&self.clients).insert(key, (false, Vec::new()));
    }

    /// Returns whether it was authenticated.
    fn remove(&self, key: usize) -> Option<bool> {
        lock(&self.topics).remove(&key);
        lock(&self.clients)
            .remove(&key)
            .map(|(authenticated, _)| authenticated)
    }

    fn set_authenticated(&self, key: usize) {
        if let Some(client) = lock(&self.clients).get_mut(&key) {
            client.0 = true;
        }
    }

    /// Whether `key` is subscribed (`Some`: it changed).
    fn subscribe(&self, key: usize, topic: usize, on: bool) -> bool {
        let mut topics = lock(&self.topics);
        let mine = topics.entry(key).or_default();
        if on {
            mine.insert(topic)
        } else {
            mine.remove(&topic)
        }
    }

    /// Delivers to every client of the audience: authenticated (if `authenticated_only`), not
    /// `except`, and subscribed to one of `topics` (if given; a bit mask).
    fn broadcast(
        &self,
        messages: &[String],
        authenticated_only: bool,
        except: Option<usize>,
        topics: Option<u8>,
    ) {
        let subscribed = lock(&self.topics);
        for (key, (authenticated, got)) in lock(&self.clients).iter_mut() {
            let in_topics = topics.is_none_or(|mask| {
                subscribed
                    .get(key)
                    .is_some_and(|mine| mine.iter().any(|&t| mask & (1 << t) != 0))
            });
            if (*authenticated || !authenticated_only) && except != Some(*key) && in_topics {
                got.extend(messages.iter().cloned());
            }
        }
    }

    fn send(&self, key: usize, message: &str) {
        if let Some(client) = lock(&self.clients).get_mut(&key) {
            client.1.push(message.to_owned());
        }
    }

    fn deliveries(&self, key: usize) -> Vec<String> {
        lock(&self.clients)
            .get(&key)
            .map(|c| c.1.clone())
            .unwrap_or_default()
    }
}

/// A client connected to the engine through an in-memory stream.
struct Live {
    key: usize,
    id: ClientId,
    ws: WebSocketStream<DuplexStream>,
}

/// Reads texts until END.
async fn texts_until_end(
    ws: &mut WebSocketStream<DuplexStream>,
) -> Result<Vec<String>, TestCaseError> {
    let mut got = Vec::new();
    loop {
        let next = tokio::time::timeout(WAIT, ws.next()).await;
        let message = next.map_err(|_| TestCaseError::fail("no END in time"))?;
        match message {
            Some(Ok(Message::Text(text))) if text.as_str() == END => return Ok(got),
            Some(Ok(Message::Text(text))) => got.push(text.to_string()),
            other => return Err(TestCaseError::fail(format!("expected text, got {other:?}"))),
        }
    }
}

/// Runs `ops` against a fresh engine (2 shards) and the oracle, then compares deliveries.
async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let engine = builder().shards(2).build().expect("engine builds");
    let oracle = Oracle::default();
    let mut live: Vec<Live> = Vec::new();
    let mut next_key = 0;
    let mut next_message = 0;
    let mut message = || {
        next_message += 1;
        format!("m{next_message}")
    };

    for op in ops {
        // The audience as the engine and as the oracle see it.
        let audience = |to: To, live: &[Live]| {
            let pick = |i: usize| live.get(i % live.len().max(1)).map(|c| (c.id, c.key));
            let (base, only, except, topics) = match to {
                To::All => (Audience::ALL, false, None, None),
                To::Authenticated => (Audience::AUTHENTICATED, true, None, None),
                To::AllExcept(i) => (Audience::ALL, false, pick(i), None),
                To::AuthenticatedExcept(i) => (Audience::AUTHENTICATED, true, pick(i), None),
                To::Topics(mask, only) => {
                    let names = (0..TOPICS.len())
                        .filter(|t| mask & (1 << t) != 0)
                        .map(|t| TOPICS[t]);
                    let audience = Audience::topics(names);
                    let audience = if only {
                        audience.authenticated()
                    } else {
                        audience
                    };
                    (audience, only, None, Some(mask))
                }
            };
            match except {
                Some((id, key)) => (base.except(id), only, Some(key), topics),
                None => (base, only, None, topics),
            }
        };
        match op {
            Op::Connect => {
                let (client_half, server_half) = tokio::io::duplex(64 << 10);
                let id = engine.register(server_half).await.expect("register");
                let handshake = tokio_tungstenite::client_async("ws://localhost/", client_half);
                let (ws, _) = tokio::time::timeout(WAIT, handshake)
                    .await
                    .map_err(|_| TestCaseError::fail("upgrade in time"))?
                    .map_err(|e| TestCaseError::fail(format!("upgrade: {e}")))?;
                oracle.connect(next_key);
                live.push(Live {
                    key: next_key,
                    id,
                    ws,
                });
                next_key += 1;
            }
            Op::Disconnect { which, hang_up } => {
                if live.is_empty() {
                    continue;
                }
                let client = live.remove(which % live.len());
                let was_authenticated = oracle.remove(client.key);
                if hang_up {
                    drop(client);
                } else {
                    let info = engine.remove(client.id).await;
                    prop_assert_eq!(
                        info.map(|i| i.authenticated),
                        was_authenticated,
                        "remove of {}",
                        client.id
                    );
                }
            }
            Op::Authenticate(which) => {
                if let Some(client) = live.get(which % live.len().max(1)) {
                    engine
                        .set_authenticated(client.id, Principal::new(client.key))
                        .await
                        .unwrap();
                    oracle.set_authenticated(client.key);
                }
            }
            Op::Broadcast(to) => {
                let (audience, only, except, topics) = audience(to, &live);
                let text = message();
                engine
                    .broadcast(Payload::text(&text), audience)
                    .await
                    .unwrap();
                oracle.broadcast(std::slice::from_ref(&text), only, except, topics);
            }
            Op::Subscribe(which, topic) | Op::Unsubscribe(which, topic) => {
                let on = matches!(op, Op::Subscribe(..));
                if let Some(client) = live.get(which % live.len().max(1)) {
                    let changed = oracle.subscribe(client.key, topic, on);
                    if on {
                        engine.subscribe(client.id, TOPICS[topic]).await.unwrap();
                    } else {
                        let was = engine.unsubscribe(client.id, TOPICS[topic]).await.unwrap();
                        prop_assert_eq!(was, changed, "unsubscribe of {}", client.id);
                    }
                }
            }
            Op::Send(which) => {
                if let Some(client) = live.get(which % live.len().max(1)) {
                    let text = message();
                    engine.send(client.id, Payload::text(&text)).await.unwrap();
                    oracle.send(client.key, &text);
                }
            }
            Op::Batch(k, to) => {
                let (audience, only, except, topics) = audience(to, &live);
                let texts: Vec<String> = (0..k).map(|_| message()).collect();
                engine
                    .broadcast_batch(texts.iter().map(Payload::text), audience)
                    .await
                    .unwrap();
                oracle.broadcast(&texts, only, except, topics);
            }
        }
    }

    engine
        .broadcast(Payload::text(END), Audience::ALL)
        .await
        .unwrap();
    for client in live.iter_mut() {
        let got = texts_until_end(&mut client.ws).await?;
        prop_assert_eq!(
            got,
            oracle.deliveries(client.key),
            "client {} ({})",
            client.key,
            client.id
        );
    }
    // Hang up every client so that shutdown need not wait out close timeouts.
    drop(live);
    engine.shutdown(Duration::from_secs(2)).await;
    prop_assert_eq!(engine.client_count(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_clients_deliveries_match_a_trivial_oracle(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            match tokio::time::timeout(WAIT * 2, run(ops)).await {
                Ok(result) => result,
                Err(_) => Err(TestCaseError::fail("case did not finish in time")),
            }
        })?;
    }
}
