//! The naive baseline: how most Rust relay servers are written today.
//!
//! tokio-tungstenite with its default buffers, a multi-thread runtime, one reader and one writer
//! task per client, and a `tokio::sync::broadcast` channel as the relay. Each message is written
//! (and flushed) on its own. It is the honest answer to "what did sharding, encode-once and
//! coalescing buy", measured side by side by `shardcast bench --server naive`.
//!
//! With `--topics` ([`serve_topics`]) it speaks the topics protocol ([`crate::pubsub`]) as most
//! servers do: a `HashMap` of topic to subscribers behind one lock, and a bounded queue per
//! client that a publication is pushed into, one clone per subscriber.

use crate::pubsub::{self, Request};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Response};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Utf8Bytes, handshake::server::Request as Upgrade};

/// Messages the relay channel holds; a receiver that falls further behind skips (and counts)
/// the messages it missed.
const RELAY_CAPACITY: usize = 4096;

/// Topics one client may subscribe to at once (with `--topics`); past it, it is closed (1008).
const TOPICS_PER_CLIENT_MAX: usize = 1024;

/// How long a client closed for a protocol error has to receive its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the naive server counts.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connected clients.
    pub(crate) clients: AtomicU64,
    /// Messages written to clients.
    pub(crate) deliveries: AtomicU64,
    /// Messages a lagging client skipped (with `--topics`: found its queue full).
    pub(crate) lagged: AtomicU64,
}

/// Accepts on `listener` forever, relaying each message to every client (the sender too unless
/// `exclude_sender`).
pub(crate) async fn serve(
    listener: TcpListener,
    max_message_size: usize,
    exclude_sender: bool,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    let (relay, _) = broadcast::channel::<(SocketAddr, Message)>(RELAY_CAPACITY);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let relay = relay.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_message_size))
                .max_frame_size(Some(max_message_size));
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
            else {
                return;
            };
            counters.clients.fetch_add(1, Relaxed);
            let (mut sink, mut stream) = ws.split();
            let mut rx = relay.subscribe();
            let writer_counters = counters.clone();
            let writer = tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok((from, _)) if exclude_sender && from == peer => {}
                        Ok((_, message)) => {
                            if sink.send(message).await.is_err() {
                                return;
                            }
                            writer_counters.deliveries.fetch_add(1, Relaxed);
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            writer_counters.lagged.fetch_add(n, Relaxed);
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            while let Some(Ok(message)) = stream.next().await {
                if message.is_text() || message.is_binary() {
                    let _ = relay.send((peer, message));
                }
            }
            writer.abort();
            counters.clients.fetch_sub(1, Relaxed);
        });
    }
}

/// One client's queue, as its subscriptions hold it.
type Outbox = mpsc::Sender<Message>;

/// Every topic's subscribers (client number -> queue), behind one lock; an emptied topic is
/// forgotten. Publishers only `try_send` under the lock, so it is never held across an await.
type Topics = Mutex<HashMap<Box<[u8]>, HashMap<u64, Outbox>>>;

/// Accepts on `listener` forever, speaking the topics protocol: each publication goes to the
/// subscribers of its topic (the sender too, if subscribed, unless `exclude_sender`).
pub(crate) async fn serve_topics(
    listener: TcpListener,
    max_message_size: usize,
    exclude_sender: bool,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    let topics: Arc<Topics> = Arc::default();
    let mut next_client = 0u64;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        next_client += 1;
        tokio::spawn(topic_client(
            tcp,
            next_client,
            topics.clone(),
            max_message_size,
            exclude_sender,
            counters.clone(),
        ));
    }
}

/// One client of [`serve_topics`], from its upgrade until it leaves every topic.
async fn topic_client(
    tcp: TcpStream,
    me: u64,
    topics: Arc<Topics>,
    max_message_size: usize,
    exclude_sender: bool,
    counters: Arc<Counters>,
) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));
    let mut target = String::new();
    #[expect(
        clippy::result_large_err,
        reason = "the signature of tungstenite's `Callback`"
    )]
    let remember = |request: &Upgrade, response: Response| -> Result<Response, ErrorResponse> {
        target = request.uri().to_string();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, remember, Some(config)).await
    else {
        return;
    };
    counters.clients.fetch_add(1, Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (outbox, mut queue) = mpsc::channel::<Message>(RELAY_CAPACITY);
    let writer_counters = counters.clone();
    let mut writer = tokio::spawn(async move {
        while let Some(message) = queue.recv().await {
            let close = message.is_close();
            if sink.send(message).await.is_err() || close {
                return;
            }
            writer_counters.deliveries.fetch_add(1, Relaxed);
        }
    });
    let lock = || topics.lock().unwrap_or_else(|e| e.into_inner());
    let mut mine: HashSet<Box<[u8]>> = HashSet::new();
    let subscribe = |mine: &mut HashSet<Box<[u8]>>, topic: &[u8]| {
        if mine.contains(topic) {
            return Ok(());
        }
        if mine.len() >= TOPICS_PER_CLIENT_MAX {
            return Err("too many topics");
        }
        mine.insert(topic.into());
        lock()
            .entry(topic.into())
            .or_default()
            .insert(me, outbox.clone());
        Ok(())
    };
    let unsubscribe = |topic: &[u8]| {
        let mut map = lock();
        if let Some(subscribers) = map.get_mut(topic) {
            subscribers.remove(&me);
            if subscribers.is_empty() {
                map.remove(topic);
            }
        }
    };
    let mut error = pubsub::subscriptions(&target)
        .and_then(|names| names.iter().try_for_each(|t| subscribe(&mut mine, t)))
        .err();
    while error.is_none() {
        let Some(Ok(message)) = stream.next().await else {
            break;
        };
        let (bytes, text) = match &message {
            Message::Text(t) => (t.as_bytes(), true),
            Message::Binary(b) => (&b[..], false),
            _ => continue,
        };
        match pubsub::parse(bytes, text) {
            Ok(Request::Subscribe(topic)) => error = subscribe(&mut mine, topic).err(),
            Ok(Request::Unsubscribe(topic)) => {
                if mine.remove(topic) {
                    unsubscribe(topic);
                }
            }
            Ok(Request::Publish { topic, body_at }) => {
                let body = match &message {
                    // The body starts after an ASCII space, so it is UTF-8 if the message was.
                    Message::Text(t) => {
                        match Utf8Bytes::try_from(Bytes::from(t.clone()).slice(body_at..)) {
                            Ok(body) => Message::Text(body),
                            Err(_) => continue,
                        }
                    }
                    _ => Message::Binary(message.clone().into_data().slice(body_at..)),
                };
                let map = lock();
                for (&client, subscriber) in map.get(topic).into_iter().flatten() {
                    if exclude_sender && client == me {
                        continue;
                    }
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        subscriber.try_send(body.clone())
                    {
                        counters.lagged.fetch_add(1, Relaxed);
                    }
                }
            }
            Err(reason) => error = Some(reason),
        }
    }
    for topic in mine.drain() {
        unsubscribe(&topic);
    }
    if let Some(reason) = error {
        let close = CloseFrame {
            code: CloseCode::Policy,
            reason: reason.into(),
        };
        let _ = outbox.send(Message::Close(Some(close))).await;
    }
    // Every subscription's clone of `outbox` is gone: the writer ends when its queue is empty.
    drop(outbox);
    if tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
        writer.abort();
    }
    counters.clients.fetch_sub(1, Relaxed);
}
