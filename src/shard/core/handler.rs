//! `Handler`: the embedder's code, run on the shard threads, and its `Context`. The contract
//! (a handler must not block; back-pressure) is on [`Handler`], where rustdoc renders it.

use super::decision::Decision;
use super::outbox::{Delivery, Outbox};
use super::state::State;
use super::topics::Limits;
use crate::client::{ClientData, Incoming, Principal, RemoveReason};
use crate::error::SubscribeError;
use crate::payload::Payloads;
use crate::wire::handshake::Request;
use crate::{Audience, ClientId, Payload, ShardId, Topic};
use smallvec::smallvec;
use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use tokio::time::Instant;

/// The embedder's hooks. Every method has a default that does nothing (or accepts), so an
/// implementation overrides only what it needs.
///
/// ```
/// use shardcast::{Audience, Context, Handler, Incoming, Payload};
///
/// /// Relays every text message to everyone else.
/// struct Chat;
///
/// impl Handler for Chat {
///     fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
///         if let Incoming::Text(text) = message {
///             let from = ctx.id();
///             ctx.broadcast(Payload::text(text), Audience::ALL.except(from));
///         }
///     }
/// }
/// ```
///
/// # A handler must not block
///
/// Every hook runs on the shard thread that owns the client, synchronously: while it runs,
/// that shard reads, delivers and writes nothing, for any of its clients. Keep hooks short.
/// For messages that need slow work (a database write, an auth call), turn on the
/// [`Inbox`](crate::Inbox): a task of yours reads them and awaits what it needs, bounded, and
/// only the clients whose messages wait are slowed down ([`Handler::forward`] picks which
/// messages go there). A handler that blocks anyway holds up its shard, and
/// [`Engine::shutdown`](crate::Engine::shutdown) reports a shard it could not stop.
///
/// # Back-pressure
///
/// [`Context::broadcast`] and [`Context::send`] never wait: the frame is delivered at once on
/// the handler's own shard, and pushed without waiting into every other shard's queue once the
/// messages of the current read are handled (so that a burst reaches each shard together, in
/// order, and is written to each client at once). If one of those queues is full, the engine
/// stops reading from the client whose messages are being handled until the queue has room,
/// so back-pressure reaches that client through TCP and no shard ever waits for another.
pub trait Handler: Send + Sync + 'static {
    /// Decides on an upgrade request (after the engine checked it and its `Origin`): inspect
    /// auth headers, the peer's address (`None` for a stream that is not a plain TCP stream),
    /// pick a subprotocol, attach data. Default: accept.
    ///
    /// It runs on the client's shard when the engine reads the upgrade, and on the caller's
    /// thread when an embedder that answers the upgrade itself asks
    /// [`Engine::decide`](crate::Engine::decide): the same decision on every path.
    fn on_upgrade(&self, request: &Request<'_>, peer: Option<SocketAddr>) -> Decision {
        let _ = (request, peer);
        Decision::accept()
    }

    /// A client completed its upgrade and now receives broadcasts.
    fn on_registered(&self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// A client sent a complete text or binary message (reassembled if it was fragmented; its
    /// bytes are valid only during the call).
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let _ = (ctx, message);
    }

    /// With an [`Inbox`](crate::Inbox) ([`Builder::inbox`](crate::Builder::inbox)): whether
    /// `message` goes to the inbox (`true`, the default) or to [`Handler::on_message`], here on
    /// the shard (`false`). Never called without an inbox, where every message goes to
    /// `on_message`.
    ///
    /// Keep cheap messages on the fast path and send the ones that need awaiting to the inbox:
    ///
    /// ```
    /// use shardcast::{Audience, Context, Handler, Incoming, Payload};
    ///
    /// /// Chat lines are relayed on the shard; everything else (`save ...`) goes to the inbox.
    /// struct Split;
    ///
    /// impl Handler for Split {
    ///     fn forward(&self, _ctx: &Context<'_>, message: Incoming<'_>) -> bool {
    ///         !matches!(message, Incoming::Text(text) if text.starts_with("say "))
    ///     }
    ///
    ///     fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
    ///         if let Incoming::Text(text) = message {
    ///             ctx.broadcast(Payload::text(text), Audience::ALL);
    ///         }
    ///     }
    /// }
    /// ```
    fn forward(&self, ctx: &Context<'_>, message: Incoming<'_>) -> bool {
        let _ = (ctx, message);
        true
    }

    /// A registered client left (`ctx.id()`), for `reason`; called exactly once per
    /// registered client, after it left every audience. `ctx` broadcasts and sends as in
    /// [`Handler::on_message`], so the handler can tell the others who left:
    ///
    /// ```
    /// use shardcast::{Audience, Context, Handler, Payload, RemoveReason};
    ///
    /// struct Presence;
    ///
    /// impl Handler for Presence {
    ///     fn on_removed(&self, ctx: &mut Context<'_>, _reason: RemoveReason) {
    ///         let left = format!("{} left", ctx.id());
    ///         ctx.broadcast(Payload::text(left), Audience::ALL);
    ///     }
    /// }
    /// ```
    fn on_removed(&self, ctx: &mut Context<'_>, reason: RemoveReason) {
        let _ = (ctx, reason);
    }
}

/// The handler that accepts every client and ignores what they send.
impl Handler for () {}

/// What a handler can do from the shard thread, about the client at hand and the others.
pub struct Context<'a> {
    /// The client this call is about.
    pub(crate) id: ClientId,
    /// Its slot in the shard state; `None` once it is removed (in `on_removed`).
    pub(crate) slot: Option<usize>,
    /// When the driver began handling the current read (one clock for all it leads to).
    pub(crate) now: Instant,
    /// The shard's clients.
    pub(crate) state: &'a mut State,
    /// How many shards the engine has (their indices are `0..shards`).
    pub(crate) shards: usize,
    /// Commands for other shards, in order; posted when the current read is handled.
    pub(crate) outbox: &'a mut Outbox,
    /// The data of a client that left (in `on_removed`, where its record is gone); `None`
    /// otherwise, as the record holds it.
    pub(crate) left: Option<ClientData>,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// The client this call is about.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The shard running this call.
    pub fn shard(&self) -> ShardId {
        self.id.shard()
    }

    /// The client's principal, if authenticated (`None` in [`Handler::on_removed`]: the
    /// client is gone).
    pub fn principal(&self) -> Option<&Principal> {
        self.state.principal(self.slot?)
    }

    /// What the embedder attached to this client ([`ClientData`]), if it is a `T`; in every
    /// hook, [`Handler::on_removed`] included.
    ///
    /// ```
    /// use shardcast::{Context, Handler, Incoming, Payload};
    ///
    /// struct Nick(String);
    ///
    /// struct Echo;
    ///
    /// impl Handler for Echo {
    ///     fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
    ///         let from = ctx.data::<Nick>().map_or("anonymous", |n| n.0.as_str());
    ///         if let Incoming::Text(text) = message {
    ///             let reply = Payload::text(format!("{from}: {text}"));
    ///             let id = ctx.id();
    ///             ctx.send(id, reply);
    ///         }
    ///     }
    /// }
    /// ```
    pub fn data<T: Any>(&self) -> Option<&T> {
        let data = match self.slot {
            Some(slot) => self.state.data(slot),
            None => self.left.as_ref(),
        };
        data?.downcast_ref()
    }

    /// Broadcasts `payload` to `audience` on every shard. Never waits (see the module docs for
    /// back-pressure).
    ///
    /// A topic of the audience past the limits (empty, or longer than
    /// [`Config::topic_bytes_max`](crate::Config::topic_bytes_max)) makes the broadcast
    /// refused: it goes to nobody, here or on other nodes, and is counted in
    /// [`ShardStats::broadcasts_refused`](crate::ShardStats::broadcasts_refused). Ask
    /// [`Context::check_topic`] first to answer the client instead.
    pub fn broadcast(&mut self, payload: Payload, audience: Audience) {
        self.publish(smallvec![payload], audience);
    }

    /// Broadcasts several frames; each client receives them adjacent and in order.
    pub fn broadcast_batch(
        &mut self,
        payloads: impl IntoIterator<Item = Payload>,
        audience: Audience,
    ) {
        self.publish(payloads.into_iter().collect(), audience);
    }

    /// Delivers a broadcast on this shard now and queues it for every other shard (the engine's
    /// fan-out, from a handler: never waiting). A broadcast to a topic past the limits is
    /// refused and counted: nobody can be subscribed to it, and it cannot cross to other
    /// nodes.
    fn publish(&mut self, mut payloads: Payloads, audience: Audience) {
        if payloads.is_empty() {
            return;
        }
        if let Some(topics) = audience.topic_filter()
            && let Some(Err(e)) = topics
                .iter()
                .map(|t| self.check_topic(t))
                .find(Result::is_err)
        {
            tracing::debug!(client = %self.id, error = %e, "broadcast refused");
            crate::stats::bump(&self.state.counters().broadcasts_refused, 1);
            return;
        }
        // Once, here, for every recipient that negotiated permessage-deflate.
        self.state.compress(&mut payloads);
        let own = self.id.shard().index();
        for index in 0..self.shards {
            if index == own || !self.state.wants(&audience, index) {
                continue;
            }
            let cmd = Delivery::Broadcast {
                payloads: payloads.clone(),
                audience: audience.clone(),
            };
            self.push(index, cmd);
        }
        if own < self.shards {
            self.state.broadcast(&[&payloads[..]], &audience, self.now);
            self.state.charge_read(&payloads);
        }
        let published = &self.state.counters().broadcasts_published;
        crate::stats::bump(published, payloads.len() as u64);
        // Delivered here and queued for the other shards: now, once, for the other nodes
        // (handed to the bridge when the driver is through with this read).
        self.state.gather_for_bridge(payloads, audience);
    }

    /// Sends `payload` to one client, on any shard. Never waits.
    pub fn send(&mut self, to: ClientId, payload: Payload) {
        let index = to.shard().index();
        if index == self.id.shard().index() {
            self.state.send(to, &payload, self.now);
            self.state.charge_read(std::slice::from_ref(&payload));
        } else if index < self.shards {
            self.push(index, Delivery::Send { id: to, payload });
        }
    }

    /// Marks this client authenticated as `principal`.
    pub fn set_authenticated(&mut self, principal: Principal) {
        self.state.set_authenticated(self.id, Some(principal));
    }

    /// Subscribes this client to `topic` (at once: a broadcast to the topic that this shard
    /// applies after this call reaches it). Subscribing twice is a no-op.
    ///
    /// ```
    /// use shardcast::{Context, Handler, Incoming};
    ///
    /// /// `join ROOM` subscribes to a room.
    /// struct Rooms;
    ///
    /// impl Handler for Rooms {
    ///     fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
    ///         if let Incoming::Text(text) = message
    ///             && let Some(room) = text.strip_prefix("join ")
    ///             && ctx.subscribe(room).is_err()
    ///         {
    ///             ctx.close(1008);
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Engine::subscribe`](crate::Engine::subscribe): past a limit nothing changes;
    /// [`SubscribeError::NotRegistered`] in [`Handler::on_removed`].
    pub fn subscribe(&mut self, topic: impl Into<Topic>) -> Result<(), SubscribeError> {
        let slot = self.slot.ok_or(SubscribeError::NotRegistered(self.id))?;
        self.state
            .subscribe_slot(self.id, slot, &topic.into())
            .map(drop)
    }

    /// Whether `topic` is within the engine's topic limits (not empty, at most
    /// [`Config::topic_bytes_max`](crate::Config::topic_bytes_max) bytes): the topics one may
    /// subscribe to and publish to.
    ///
    /// ```
    /// use shardcast::{Audience, Context, Handler, Incoming, Payload, close_code};
    ///
    /// /// `TOPIC BODY` publishes BODY to TOPIC.
    /// struct Publish;
    ///
    /// impl Handler for Publish {
    ///     fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
    ///         let Incoming::Text(text) = message else { return };
    ///         let (topic, body) = text.split_once(' ').unwrap_or((text, ""));
    ///         match ctx.check_topic(topic) {
    ///             Ok(()) => ctx.broadcast(Payload::text(body), Audience::topic(topic)),
    ///             Err(e) => ctx.close_with_reason(close_code::POLICY, &e.to_string()),
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SubscribeError::EmptyTopic`] or [`SubscribeError::TopicTooLong`].
    pub fn check_topic(&self, topic: impl AsRef<str>) -> Result<(), SubscribeError> {
        Limits::of(self.state.config()).check_name(topic.as_ref())
    }

    /// Unsubscribes this client from `topic`; returns whether it was subscribed.
    pub fn unsubscribe(&mut self, topic: impl Into<Topic>) -> bool {
        match self.slot {
            Some(slot) => self.state.unsubscribe_slot(slot, &topic.into()),
            None => false,
        }
    }

    /// The topics this client is subscribed to, sorted by name (none in
    /// [`Handler::on_removed`]: it left them all).
    pub fn topics(&self) -> Vec<Topic> {
        self.slot
            .map(|slot| self.state.topics_of(slot))
            .unwrap_or_default()
    }

    /// Closes this client with `code` once its queued frames are written (nothing in
    /// [`Handler::on_removed`]: it is closed already).
    pub fn close(&mut self, code: u16) {
        if let Some(slot) = self.slot {
            self.state.close(slot, RemoveReason::Closed(code));
        }
    }

    /// Closes this client with `code` and a short `reason` for its peer (cut to the 123 bytes
    /// a close frame holds, at a character boundary), once its queued frames are written.
    ///
    /// ```
    /// use shardcast::{Context, Handler, Incoming, close_code};
    ///
    /// struct Strict;
    ///
    /// impl Handler for Strict {
    ///     fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
    ///         if matches!(message, Incoming::Binary(_)) {
    ///             ctx.close_with_reason(close_code::POLICY, "text only");
    ///         }
    ///     }
    /// }
    /// ```
    pub fn close_with_reason(&mut self, code: u16, reason: &str) {
        if let Some(slot) = self.slot {
            self.state
                .close_saying(slot, RemoveReason::Closed(code), Some(reason));
        }
    }

    /// Queues `cmd` for shard `index`; it is posted, in order, when the read is handled.
    fn push(&mut self, index: usize, cmd: Delivery) {
        self.outbox.push((index, cmd));
    }
}
