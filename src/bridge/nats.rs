//! `Nats`: the [`Broker`] on a NATS server (`async-nats`).
//!
//! One connection per node, opened with `no_echo` (the node never receives its own
//! publications) and reconnecting forever; one NATS subscription per topic bucket with local
//! subscribers of one of its topics (at most 1,024, see `subject`), plus `{prefix}.all`.
//! Subject mapping: see [`Nats::prefix`]. Audience flags
//! travel in headers: `Shardcast-Auth: 1` for authenticated-only, `Shardcast-Topics` (the
//! topics' subject tokens, comma-separated) for an audience of several topics, and
//! `Shardcast-Count` for a message carrying several broadcasts.

use super::broker::{Broker, Channel, Connection, Inbound, Publication, Received};
use super::subject::{self, Subjects};
use crate::Topic;
use crate::error::BridgeError;
use crate::link::BROADCASTS_PER_MESSAGE_MAX;
use async_nats::{Client, ConnectOptions, Event, HeaderMap, Message, connection::State};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// Messages each subscription's queue in the NATS client holds, at most: a message beyond
/// them is dropped by the client and counted (`dropped.slow_consumer`). The bridge's pump
/// empties the queue into the bounded inbound queue as it fills, so a full one means a flood.
/// A node sends messages of at most 64 KiB (`MESSAGE_BYTES_MAX`, or one frame within
/// `message_bytes_max`), so each queue holds at most 64 MiB of what nodes send; against
/// anyone else who can publish on the bridge's subjects, the server's `max_payload` (1 MB by
/// default; 128 KiB is enough for shardcast) bounds it. async-nats' own default is 65,536
/// messages (64 GB at 1 MB).
const SUBSCRIPTION_CAPACITY: usize = 1024;

/// Header marking a broadcast to authenticated clients only.
const AUTH: &str = "Shardcast-Auth";
/// Header listing every topic of an audience of several.
const TOPICS: &str = "Shardcast-Topics";
/// Header giving how many broadcasts a message carries, when more than one.
const COUNT: &str = "Shardcast-Count";

/// A NATS server to share broadcasts through, for [`Builder::bridge`](crate::Builder::bridge).
///
/// ```no_run
/// use shardcast::{Engine, Nats};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder()
///     .bridge(Nats::new("nats://127.0.0.1:4222").prefix("chat"))
///     .build()?; // fails if the server cannot be reached (see `bridge_optional`)
/// # engine.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Nats {
    /// Server address(es), as `async-nats` takes them (`nats://host:port`, comma-separated).
    url: String,
    /// Subject prefix.
    prefix: String,
    /// Connection options (auth, TLS, ...).
    options: ConnectOptions,
}

impl Nats {
    /// The NATS server at `url` (`nats://host:port`; several, comma-separated), with prefix
    /// `shardcast` and default options.
    pub fn new(url: impl Into<String>) -> Nats {
        Nats {
            url: url.into(),
            prefix: "shardcast".into(),
            options: ConnectOptions::new(),
        }
    }

    /// The subject prefix, one or more tokens (default `shardcast`): nodes share broadcasts
    /// with the nodes of the same prefix on the same server. Broadcasts to everyone use
    /// `{prefix}.all`; a topic uses `{prefix}.t.{bucket}.{token}`: the token is its name's UTF-8
    /// bytes with ASCII letters, digits and `-` kept and every other byte written `_XX`
    /// (uppercase hex), and the bucket (0 to 1,023) a hash of the name, so `room/1` is
    /// `{prefix}.t.{bucket}.room_2F1`. Any topic has one subject and round-trips. A node
    /// subscribes to buckets (`{prefix}.t.{bucket}.*`), not topics: however many topics its
    /// clients follow, it holds at most 1,025 NATS subscriptions.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Nats {
        self.prefix = prefix.into();
        self
    }

    /// Connection options (credentials, TLS, timeouts). The bridge sets `no_echo`, its own
    /// event callback and a subscription capacity of 64 messages on them, and
    /// `retry_on_initial_connect` with
    /// [`Builder::bridge_optional`](crate::Builder::bridge_optional).
    pub fn options(mut self, options: ConnectOptions) -> Nats {
        self.options = options;
        self
    }
}

impl Broker for Nats {
    type Connection = NatsConnection;

    async fn connect(
        self,
        inbound: Inbound,
        required: bool,
    ) -> Result<NatsConnection, BridgeError> {
        let subjects =
            Arc::new(Subjects::new(&self.prefix).ok_or(BridgeError::Invalid("nats prefix"))?);
        let events = inbound.clone();
        // Each subscription's queue inside the client holds at most SUBSCRIPTION_CAPACITY
        // messages (their pump hands them on at once, into the bounded inbound queue), not
        // async-nats' 65,536, which a flood could fill with a gigabyte per subscription.
        let mut options = self
            .options
            .no_echo()
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .event_callback(move |event| {
                match event {
                    Event::Connected => events.connection(true),
                    Event::Disconnected | Event::Closed => events.connection(false),
                    Event::SlowConsumer(_) => events.slow_consumer(),
                    _ => {}
                }
                async {}
            });
        if !required {
            options = options.retry_on_initial_connect();
        }
        let client = options
            .connect(self.url.as_str())
            .await
            .map_err(|e| BridgeError::Connect(Box::new(e)))?;
        if client.connection_state() == State::Connected {
            inbound.connection(true);
        }
        let everyone = client
            .subscribe(subjects.everyone().to_owned())
            .await
            .map_err(|e| BridgeError::Refused(Box::new(e)))?;
        let everyone = pump(everyone, subjects.clone(), inbound.clone(), None);
        Ok(NatsConnection {
            client,
            subjects,
            inbound,
            topics: Held::default(),
            buckets: Mutex::new(HashMap::new()),
            _everyone: Pump(everyone),
        })
    }
}

/// The longest subject the bridge sends: nats-server reads a command's line (`HPUB subject
/// header-bytes total-bytes`) within its `max_control_line` of 4 KiB, and drops the connection
/// of a client that sends a longer one. A publication or subscription whose subject is longer
/// is not sent, and counted (`dropped.publish_failed`, `dropped.subscribe_failed`).
const SUBJECT_BYTES_MAX: usize = 4000;

/// A node's live NATS connection (see [`Nats`]).
#[derive(Debug)]
pub struct NatsConnection {
    /// The connection (async-nats reconnects it and re-subscribes what it holds).
    client: Client,
    /// The node's subjects.
    subjects: Arc<Subjects>,
    /// Where received messages go.
    inbound: Inbound,
    /// The topics the node follows, by bucket; read by each bucket's pump, which drops what
    /// arrives for the others of its bucket.
    topics: Held,
    /// The task reading each bucket's subscription; dropping it unsubscribes.
    buckets: Mutex<HashMap<u64, Pump>>,
    /// The task reading the subscription to everyone.
    _everyone: Pump,
}

/// The topics a node follows, by bucket.
type Held = Arc<Mutex<HashMap<u64, HashSet<Topic>>>>;

/// Locks `held`; a panic while holding it cannot leave a set half-changed.
fn lock_held(held: &Held) -> std::sync::MutexGuard<'_, HashMap<u64, HashSet<Topic>>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

/// The task reading one subscription, stopped (and so unsubscribed) when dropped.
#[derive(Debug)]
struct Pump(JoinHandle<()>);

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads a subscription into `inbound`, in the order NATS delivers it; with `held`, only the
/// topics it holds (a bucket's subscription also brings the bucket's other topics).
fn pump(
    mut subscription: async_nats::Subscriber,
    subjects: Arc<Subjects>,
    inbound: Inbound,
    held: Option<Held>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            match decode(&subjects, message) {
                Some(received) => {
                    if let (Some(held), Channel::Topic(topic)) = (&held, &received.channel) {
                        let followed = lock_held(held)
                            .get(&subject::bucket(topic.as_str()))
                            .is_some_and(|topics| topics.contains(topic));
                        if !followed {
                            continue;
                        }
                    }
                    inbound.offer(received);
                }
                None => inbound.malformed(),
            }
        }
    })
}

/// A NATS message as the bridge reads it: `None` if its subject or headers are not ours.
fn decode(subjects: &Subjects, message: Message) -> Option<Received> {
    let channel = match subjects.parse(message.subject.as_str()).ok()? {
        None => Channel::Everyone,
        Some(topic) => Channel::Topic(topic),
    };
    let headers = message.headers.as_ref();
    let authenticated_only = headers
        .and_then(|h| h.get(AUTH))
        .is_some_and(|v| v.as_str() == "1");
    let topics = match headers.and_then(|h| h.get(TOPICS)) {
        None => None,
        Some(list) => Some(
            list.as_str()
                .split(',')
                .map(|token| subject::decode(token).map(Topic::new))
                .collect::<Option<Vec<Topic>>>()?,
        ),
    };
    let broadcasts = match headers.and_then(|h| h.get(COUNT)) {
        None => 1,
        Some(n) => n
            .as_str()
            .parse()
            .ok()
            .filter(|n| (1..=BROADCASTS_PER_MESSAGE_MAX).contains(n))?,
    };
    Some(Received {
        channel,
        authenticated_only,
        topics,
        frames: message.payload,
        broadcasts,
    })
}

impl Connection for NatsConnection {
    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<(), BridgeError> {
        let subject = match publication.channel {
            Channel::Everyone => self.subjects.everyone().to_owned(),
            Channel::Topic(topic) => self.subjects.topic(topic),
        };
        if subject.len() > SUBJECT_BYTES_MAX {
            // The server would drop the connection for it: never sent, counted.
            return Err(BridgeError::Invalid("subject longer than NATS takes"));
        }
        let mut headers = HeaderMap::new();
        if publication.authenticated_only {
            headers.insert(AUTH, "1");
        }
        if let Some(topics) = publication.topics {
            let mut list = String::new();
            for (i, topic) in topics.iter().enumerate() {
                if i > 0 {
                    list.push(',');
                }
                subject::encode(topic.as_str(), &mut list);
            }
            headers.insert(TOPICS, list.as_str());
        }
        if publication.broadcasts > 1 {
            headers.insert(COUNT, publication.broadcasts.to_string().as_str());
        }
        let frames = publication.frames.clone();
        let sent = if headers.is_empty() {
            self.client.publish(subject, frames).await
        } else {
            self.client
                .publish_with_headers(subject, headers, frames)
                .await
        };
        sent.map_err(|e| BridgeError::Refused(Box::new(e)))
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BridgeError> {
        if self.subjects.topic(topic).len() > SUBJECT_BYTES_MAX {
            return Err(BridgeError::Invalid("subject longer than NATS takes"));
        }
        let bucket = subject::bucket(topic.as_str());
        let first = {
            let mut held = lock_held(&self.topics);
            let topics = held.entry(bucket).or_default();
            topics.insert(topic.clone());
            topics.len() == 1
        };
        if !first && self.lock().contains_key(&bucket) {
            return Ok(());
        }
        let subscribed = self.client.subscribe(self.subjects.bucket(bucket)).await;
        let subscription = match subscribed {
            Ok(subscription) => subscription,
            Err(e) => {
                forget(&self.topics, bucket, topic);
                return Err(BridgeError::Refused(Box::new(e)));
            }
        };
        let pump = Pump(pump(
            subscription,
            self.subjects.clone(),
            self.inbound.clone(),
            Some(self.topics.clone()),
        ));
        self.lock().insert(bucket, pump);
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) {
        let bucket = subject::bucket(topic.as_str());
        if forget(&self.topics, bucket, topic) {
            // Dropping the pump drops its `Subscriber`, which unsubscribes.
            let pump = self.lock().remove(&bucket);
            drop(pump);
        }
    }

    async fn flush(&self) -> Result<(), BridgeError> {
        self.client
            .flush()
            .await
            .map_err(|e| BridgeError::Refused(Box::new(e)))
    }

    async fn sync(&self) {
        // A round trip on this connection, which the server handles in order: a request to a
        // subject nobody subscribes to comes back "no responders" once every command sent
        // before it (a SUB, say) is in place. A flush alone only hands them to the socket,
        // and a publication from another node could then still miss the new subscription.
        let _ = self
            .client
            .request(self.subjects.sync().to_owned(), bytes::Bytes::new())
            .await;
    }
}

impl NatsConnection {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pump>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Forgets that the node follows `topic`, of `bucket`; whether that emptied the bucket.
fn forget(held: &Held, bucket: u64, topic: &Topic) -> bool {
    let mut held = lock_held(held);
    let Some(topics) = held.get_mut(&bucket) else {
        return false;
    };
    topics.remove(topic);
    if topics.is_empty() {
        held.remove(&bucket);
        return true;
    }
    if topics.capacity() > 16 && topics.len() < topics.capacity() / 4 {
        topics.shrink_to(topics.len() * 2);
    }
    false
}
