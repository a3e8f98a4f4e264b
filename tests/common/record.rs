//! A handler that records what the engine tells it ([`Recorder`], into [`Events`]), and clients
//! connected with the ids it learns.

use super::{Client, connect, eventually, start};
use shardcast::{Builder, ClientId, Context, Engine, Handler, Incoming, RemoveReason};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What a [`Recorder`] saw, in the order the shards reported it.
#[derive(Debug, Default)]
pub struct Events {
    /// Ids passed to `on_registered`.
    pub registered: Mutex<Vec<ClientId>>,
    /// Every `on_removed` call.
    pub removed: Mutex<Vec<(ClientId, RemoveReason)>>,
    /// Text messages received by `on_message`, with their sender.
    pub messages: Mutex<Vec<(ClientId, String)>>,
}

impl Events {
    /// Ids registered so far, in registration order.
    pub fn registered(&self) -> Vec<ClientId> {
        lock(&self.registered).clone()
    }

    /// Every `on_removed` call so far.
    pub fn removed(&self) -> Vec<(ClientId, RemoveReason)> {
        lock(&self.removed).clone()
    }

    /// The reasons `id` was reported removed with (exactly one entry when all is well).
    pub fn removals_of(&self, id: ClientId) -> Vec<RemoveReason> {
        lock(&self.removed)
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, r)| *r)
            .collect()
    }

    /// Text messages received so far.
    pub fn messages(&self) -> Vec<(ClientId, String)> {
        lock(&self.messages).clone()
    }
}

/// Locks `m`, ignoring poison (a panicking test thread must not hide the first failure).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handler that records registrations, removals and text messages into shared [`Events`].
#[derive(Clone, Debug, Default)]
pub struct Recorder(pub Arc<Events>);

impl Recorder {
    /// A recorder and the events it fills.
    pub fn new() -> (Recorder, Arc<Events>) {
        let events = Arc::new(Events::default());
        (Recorder(events.clone()), events)
    }
}

impl Handler for Recorder {
    fn on_registered(&self, ctx: &mut Context<'_>) {
        lock(&self.0.registered).push(ctx.id());
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        if let Incoming::Text(text) = message {
            lock(&self.0.messages).push((ctx.id(), text.to_owned()));
        }
    }

    fn on_removed(&self, ctx: &mut Context<'_>, reason: RemoveReason) {
        lock(&self.0.removed).push((ctx.id(), reason));
    }
}

/// Builds the engine with a [`Recorder`] as its handler and listens on an ephemeral loopback
/// port; returns the events it records too.
pub async fn start_recording(builder: Builder) -> (Engine, SocketAddr, Arc<Events>) {
    let (recorder, events) = Recorder::new();
    let (engine, addr) = start(builder.handler(recorder)).await;
    (engine, addr, events)
}

/// Waits until exactly `n` clients have been reported registered; returns the last one.
/// `on_registered` runs on the shard thread just after it writes the 101, so a client may see
/// its 101 a moment before the recorder does.
pub async fn registered(events: &Events, n: usize) -> ClientId {
    eventually(|| events.registered().len() >= n).await;
    let ids = events.registered();
    assert_eq!(ids.len(), n, "exactly one registration per connection");
    ids[n - 1]
}

/// Connects one client and learns its id from the recorder (clients must connect one at a
/// time, so that the new id is the last one).
pub async fn connect_with_id(
    engine: &Engine,
    addr: SocketAddr,
    events: &Events,
) -> (Client, ClientId) {
    let before = events.registered().len();
    let ws = connect(engine, addr).await;
    (ws, registered(events, before + 1).await)
}

/// Connects `n` clients one at a time, with their ids.
pub async fn connect_many_with_ids(
    engine: &Engine,
    addr: SocketAddr,
    events: &Events,
    n: usize,
) -> (Vec<Client>, Vec<ClientId>) {
    let mut clients = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let (ws, id) = connect_with_id(engine, addr, events).await;
        clients.push(ws);
        ids.push(id);
    }
    (clients, ids)
}
