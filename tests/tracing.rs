//! What the engine tells `tracing`: a `connection` span per connection, and `registered`,
//! `removed`, `evicted` and `handshake refused` events with the fields an operator needs.
//!
//! The shards run on their own threads, so the capturing subscriber is the process's global
//! one. Client ids are per engine, so the tests take turns, each with the log emptied.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::MaybeTlsStream;
use tracing::field::{Field, Visit};
use tracing::span::Attributes;
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One event or span of the crate, as captured: its name (a span's) or message (an event's),
/// and its fields as text.
#[derive(Clone, Debug)]
struct Captured {
    /// The span's name or the event's message.
    name: String,
    /// Field name to its value, as `Debug` prints it (strings unquoted).
    fields: HashMap<String, String>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Collects fields as text.
struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// What the crate emitted, all tests together.
#[derive(Default)]
struct Log {
    events: Mutex<Vec<Captured>>,
    spans: Mutex<Vec<Captured>>,
}

/// A layer that keeps the crate's events and spans (every level).
struct Capture(Arc<Log>);

fn capture(metadata: &tracing::Metadata<'_>, attrs: impl FnOnce(&mut Fields<'_>)) -> Captured {
    let mut fields = HashMap::new();
    attrs(&mut Fields(&mut fields));
    let name = fields
        .remove("message")
        .unwrap_or_else(|| metadata.name().to_owned());
    Captured { name, fields }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target().starts_with("shardcast") {
            let captured = capture(event.metadata(), |f| event.record(f));
            lock(&self.0.events).push(captured);
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        if attrs.metadata().target().starts_with("shardcast") {
            let captured = capture(attrs.metadata(), |f| attrs.record(f));
            lock(&self.0.spans).push(captured);
        }
    }
}

/// The log, empty, for this test alone while the guard lives.
async fn log() -> (tokio::sync::MutexGuard<'static, ()>, Arc<Log>) {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    static LOG: OnceLock<Arc<Log>> = OnceLock::new();
    let turn = TURN.lock().await;
    let log = LOG
        .get_or_init(|| {
            let log = Arc::new(Log::default());
            let subscriber = tracing_subscriber::registry().with(Capture(log.clone()));
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber");
            log
        })
        .clone();
    lock(&log.events).clear();
    lock(&log.spans).clear();
    (turn, log)
}

impl Log {
    /// The events named `name` whose `field` is `value`.
    fn events(&self, name: &str, field: &str, value: &str) -> Vec<Captured> {
        lock(&self.events)
            .iter()
            .filter(|e| e.name == name && e.field(field) == Some(value))
            .cloned()
            .collect()
    }

    /// Waits (bounded) for the first event named `name` whose `field` is `value`: the shard
    /// emits it on its own thread.
    async fn event(&self, name: &str, field: &str, value: &str) -> Captured {
        eventually(|| !self.events(name, field, value).is_empty()).await;
        self.events(name, field, value).remove(0)
    }
}

/// The client's own address: the engine's peer address for it.
fn local_addr(ws: &Client) -> SocketAddr {
    match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address"),
        _ => unreachable!("plain TCP"),
    }
}

#[tokio::test]
async fn a_connection_has_a_span_and_registered_removed_and_evicted_events_with_their_fields() {
    let (_turn, log) = log().await;
    let (engine, addr) = start(
        builder()
            .shards(2)
            .auth_deadline(Some(Duration::from_millis(300)))
            .sweep_interval(Duration::from_millis(50)),
    )
    .await;

    // One client leaves by itself, one stays unauthenticated past the auth deadline.
    let mut leaving = connect(&engine, addr).await;
    let mut idle = connect(&engine, addr).await;
    let leaving_peer = local_addr(&leaving).to_string();
    let idle_peer = local_addr(&idle).to_string();

    let registered = log.event("registered", "peer", &leaving_peer).await;
    let leaving_id = registered.field("client").expect("client field").to_owned();
    let shard = registered.field("shard").expect("shard field").to_owned();
    assert!(shard == "0" || shard == "1", "shard {shard}");
    // The id as `ClientId` displays it (sequence@shard), the same in every span and event.
    assert_eq!(
        leaving_id.rsplit_once('@').map(|(_, s)| s),
        Some(shard.as_str()),
        "{leaving_id}"
    );
    let span = lock(&log.spans)
        .iter()
        .find(|s| s.name == "connection" && s.field("client") == Some(&leaving_id))
        .cloned()
        .expect("a connection span for the client");
    assert_eq!(span.field("peer"), Some(leaving_peer.as_str()));
    assert_eq!(span.field("shard"), Some(shard.as_str()));

    leaving.close(None).await.expect("send close");
    let removed = log.event("removed", "client", &leaving_id).await;
    assert_eq!(removed.field("shard"), Some(shard.as_str()));
    assert!(
        removed
            .field("reason")
            .is_some_and(|r| r.starts_with("ClientClosed")),
        "{removed:?}"
    );

    let idle_id = log
        .event("registered", "peer", &idle_peer)
        .await
        .field("client")
        .expect("client field")
        .to_owned();
    assert_eq!(close_code(&mut idle).await, Some(4001));
    let evicted = log.event("evicted", "client", &idle_id).await;
    assert_eq!(evicted.field("reason"), Some("AuthDeadline"));
    assert!(evicted.field("shard").is_some());
    assert!(
        log.events("removed", "client", &idle_id).is_empty(),
        "an eviction is reported once, as an eviction"
    );
    engine.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_refused_upgrade_is_an_event_with_its_status() {
    let (_turn, log) = log().await;
    let (engine, addr) = start(builder().shards(1)).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let peer = tcp.local_addr().expect("local address");
    // A plain GET, no upgrade: refused.
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .expect("read answer");
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split(' ')
        .nth(1)
        .expect("a status line")
        .to_owned();
    assert!(status.starts_with('4'), "refused: {response:?}");

    // The span of the connection says which client id the refused peer had.
    let client = lock(&log.spans)
        .iter()
        .find(|s| s.name == "connection" && s.field("peer") == Some(&peer.to_string()))
        .and_then(|s| s.field("client").map(str::to_owned))
        .expect("a connection span for the peer");
    let refused = log.event("handshake refused", "client", &client).await;
    assert_eq!(refused.field("status"), Some(status.as_str()));
    assert!(refused.field("reason").is_some_and(|r| !r.is_empty()));
    engine.shutdown(WAIT).await;
}
