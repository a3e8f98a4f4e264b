//! `Decision`: what the handler decides about an upgrade request; [`decide`]: the one upgrade
//! policy every registration path runs; `Accepted`: what it lets in.

use super::state::State;
use super::topics::Limits;
use crate::ClientId;
use crate::Topic;
use crate::client::{ClientData, Principal};
use crate::config::Config;
use crate::error::{Rejected, SubscribeError};
use crate::wire::handshake::Request;
use tokio::time::Instant;

/// The answer to an upgrade request, from [`Handler::on_upgrade`](crate::Handler::on_upgrade).
#[derive(Debug)]
pub struct Decision(pub(crate) Verdict);

#[derive(Debug)]
pub(crate) enum Verdict {
    Accept {
        protocol: Option<String>,
        principal: Option<Principal>,
        data: Option<ClientData>,
        /// Subscribed at admission, without repeats.
        topics: Vec<Topic>,
    },
    Reject {
        status: u16,
        body: String,
    },
}

impl Decision {
    /// Accept, with no subprotocol, unauthenticated.
    pub fn accept() -> Decision {
        Decision(Verdict::Accept {
            protocol: None,
            principal: None,
            data: None,
            topics: Vec::new(),
        })
    }

    /// Accept and answer with this subprotocol (one the client offered).
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Decision {
        if let Verdict::Accept { protocol: p, .. } = &mut self.0 {
            *p = Some(protocol.into());
        }
        self
    }

    /// Accept and mark the client authenticated as `principal` from the start.
    pub fn authenticated(mut self, principal: Principal) -> Decision {
        if let Verdict::Accept { principal: p, .. } = &mut self.0 {
            *p = Some(principal);
        }
        self
    }

    /// Accept and attach `data` to the client, apart from who it is: every hook reads it with
    /// [`Context::data`](crate::Context::data), and [`ClientInfo`](crate::ClientInfo) shows it.
    /// It takes precedence over [`Registration::data`](crate::Registration::data).
    ///
    /// ```
    /// use shardcast::{ClientData, Decision, Handler};
    /// use shardcast::wire::handshake::Request;
    /// use std::net::SocketAddr;
    ///
    /// /// The room a client asked for in its path.
    /// struct Room(String);
    ///
    /// struct Rooms;
    ///
    /// impl Handler for Rooms {
    ///     fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
    ///         let room = Room(request.path().trim_start_matches('/').to_owned());
    ///         Decision::accept().with_data(ClientData::new(room))
    ///     }
    /// }
    /// ```
    pub fn with_data(mut self, data: ClientData) -> Decision {
        if let Verdict::Accept { data: d, .. } = &mut self.0 {
            *d = Some(data);
        }
        self
    }

    /// Accept and subscribe the client to `topic` from the start: it is in the topic's
    /// audience from the moment it is registered. A topic past the limits
    /// ([`Config::topic_bytes_max`](crate::Config::topic_bytes_max), empty, or more than
    /// [`Config::topics_per_client_max`](crate::Config::topics_per_client_max) in all) turns
    /// the decision into `400 Bad Request` naming the limit.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// use shardcast::{Decision, Handler};
    /// use std::net::SocketAddr;
    ///
    /// /// Subscribes every client to the room named by its path, `/rooms/NAME`.
    /// struct Rooms;
    ///
    /// impl Handler for Rooms {
    ///     fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
    ///         match request.path().strip_prefix("/rooms/") {
    ///             Some(room) => Decision::accept().subscribe(room),
    ///             None => Decision::reject(404, "no such room"),
    ///         }
    ///     }
    /// }
    /// ```
    pub fn subscribe(mut self, topic: impl Into<Topic>) -> Decision {
        if let Verdict::Accept { topics, .. } = &mut self.0 {
            let topic = topic.into();
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        self
    }

    /// Refuse with this HTTP status (clamped to 400..=599) and a short text body.
    pub fn reject(status: u16, body: impl Into<String>) -> Decision {
        Decision(Verdict::Reject {
            status: status.clamp(400, 599),
            body: body.into(),
        })
    }
}

/// An upgrade request the engine's policy accepted, from
/// [`Engine::decide`](crate::Engine::decide): answer the client `101 Switching Protocols` with
/// [`Accepted::protocol`], then hand the stream over with
/// [`Registration::upgraded`](crate::Registration::upgraded), which gives the client the
/// principal and data decided here.
#[derive(Debug)]
pub struct Accepted {
    /// The subprotocol to answer with.
    pub(crate) protocol: Option<String>,
    /// Who the client is, if the handler authenticated it.
    pub(crate) principal: Option<Principal>,
    /// What the handler attached to it.
    pub(crate) data: Option<ClientData>,
    /// What it is subscribed to from the start (within the limits: `decide` checked them).
    pub(crate) topics: Vec<Topic>,
}

impl Accepted {
    /// The subprotocol chosen among those the client offered, for the
    /// `Sec-WebSocket-Protocol` header of the 101 answer; `None`: answer without one.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Who the client will be authenticated as, if the handler said so.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// What the client will carry, if the handler attached anything.
    pub fn data(&self) -> Option<&ClientData> {
        self.data.as_ref()
    }

    /// The topics the client will be subscribed to from the start.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    /// Admits the client `id` to `state` as accepted (its 101 answer is out); `data` is used
    /// if the decision attached none. Returns its slot. The one place an accepted upgrade
    /// becomes a client, for streams the shard upgraded and streams upgraded by the embedder.
    pub(crate) fn admit(
        self,
        state: &mut State,
        id: ClientId,
        data: Option<ClientData>,
        now: Instant,
    ) -> usize {
        let slot = state.admit(id, self.principal, now);
        state.set_data(slot, self.data.or(data));
        for topic in &self.topics {
            // Within the limits (`decide` checked them), and the client is open: this cannot
            // fail, except during shutdown, when the client is closed at once anyway.
            let _ = state.subscribe_slot(id, slot, topic);
        }
        slot
    }
}

/// The upgrade policy, in order: the `Origin` allow-list (403), refusal while the engine shuts
/// down (503, unless `accepting`), then the handler's decision (`ask`, called only if it comes
/// to that), whose subscriptions must be within the topic limits (else 400, naming the limit). Both ways a request is decided, the shard's own upgrade and
/// [`Engine::decide`](crate::Engine::decide), call this, so they cannot drift apart.
pub(crate) fn decide(
    config: &Config,
    accepting: bool,
    request: &Request<'_>,
    ask: impl FnOnce() -> Decision,
) -> Result<Accepted, Rejected> {
    if let Some(allowed) = &config.allowed_origins
        && !request
            .origin()
            .is_some_and(|o| allowed.iter().any(|a| a == o))
    {
        return Err(Rejected::new(403, "origin not allowed"));
    }
    if !accepting {
        return Err(Rejected::new(503, "shutting down"));
    }
    match ask().0 {
        Verdict::Accept {
            protocol,
            principal,
            data,
            topics,
        } => {
            check_topics(config, &topics).map_err(|e| Rejected::new(400, e.to_string()))?;
            Ok(Accepted {
                protocol,
                principal,
                data,
                topics,
            })
        }
        Verdict::Reject { status, body } => Err(Rejected::new(status, body)),
    }
}

/// Whether a new client may subscribe to all of `topics` (without repeats).
fn check_topics(config: &Config, topics: &[Topic]) -> Result<(), SubscribeError> {
    let limits = Limits::of(config);
    for topic in topics {
        limits.check(topic)?;
    }
    if topics.len() > limits.topics_per_client_max {
        return Err(SubscribeError::TooManyTopics {
            max: limits.topics_per_client_max,
        });
    }
    Ok(())
}
