//! `Decision`: what the handler decides about an upgrade request; [`decide`]: the one upgrade
//! policy every registration path runs; `Accepted`: what it lets in.

use super::state::State;
use super::topics::Limits;
use crate::ClientId;
use crate::Topic;
use crate::client::{ClientData, Principal};
use crate::config::Config;
use crate::error::{Rejected, SubscribeError};
use crate::wire::deflate::{self, Agreement};
use crate::wire::handshake::{self, Request};
use tokio::time::Instant;

/// The answer to an upgrade request, from [`Handler::on_upgrade`](crate::Handler::on_upgrade).
#[derive(Debug)]
pub struct Decision(pub(crate) Verdict);

#[derive(Debug)]
pub(crate) enum Verdict {
    Accept {
        protocol: Protocol,
        principal: Option<Principal>,
        data: Option<ClientData>,
        /// Subscribed at admission, without repeats.
        topics: Vec<Topic>,
        /// Whether a permessage-deflate offer may be accepted (if the engine accepts them).
        compression: bool,
    },
    Reject {
        status: u16,
        body: String,
    },
}

/// Which subprotocol an accepting [`Decision`] answers with.
#[derive(Debug)]
pub(crate) enum Protocol {
    /// The first the client offered that [`Config::protocols`] lists; refused if it offered
    /// some and none is listed.
    Negotiated,
    /// This one, which the client must have offered.
    Chosen(String),
    /// None, even if the client offered some.
    Declined,
}

impl Decision {
    /// Accept, unauthenticated, answering with the subprotocol the engine negotiates: the
    /// first of [`Builder::protocols`](crate::Builder::protocols), in that list's order, that
    /// the client offered, or none if it offered none.
    /// A client that offered subprotocols of which none is listed is refused with `400 Bad
    /// Request` (see `Builder::protocols` for why), unless the handler chooses itself with
    /// [`Decision::with_protocol`] or [`Decision::without_protocol`].
    pub fn accept() -> Decision {
        Decision(Verdict::Accept {
            protocol: Protocol::Negotiated,
            principal: None,
            data: None,
            topics: Vec::new(),
            compression: true,
        })
    }

    /// Accept and answer with this subprotocol, whatever
    /// [`Builder::protocols`](crate::Builder::protocols) lists. It must be one the client
    /// offered ([`Request::protocols`], compared exactly): a client fails a connection answered
    /// with a subprotocol it did not offer (RFC 6455 4.1), so the engine refuses such an
    /// upgrade with `400 Bad Request` instead, naming the subprotocol.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// use shardcast::{ClientData, Decision, Handler};
    /// use std::net::SocketAddr;
    ///
    /// /// Which version of the chat protocol a client speaks, for the other hooks.
    /// struct Version(&'static str);
    ///
    /// /// Chooses itself, v2 before v1, and keeps the choice for the other hooks.
    /// struct Chat;
    ///
    /// impl Handler for Chat {
    ///     fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
    ///         let offered = |name| request.protocols().any(|p| p == name);
    ///         match ["v2.chat", "v1.chat"].into_iter().find(|name| offered(*name)) {
    ///             Some(name) => Decision::accept()
    ///                 .with_protocol(name)
    ///                 .with_data(ClientData::new(Version(name))),
    ///             None => Decision::reject(400, "offer v2.chat or v1.chat"),
    ///         }
    ///     }
    /// }
    /// ```
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Decision {
        if let Verdict::Accept { protocol: p, .. } = &mut self.0 {
            *p = Protocol::Chosen(protocol.into());
        }
        self
    }

    /// Accept and answer without a subprotocol, even if the client offered some: for clients
    /// known to go on without one (Python's `websockets` does). Browsers, tungstenite and
    /// Node's `ws` fail such a connection (the WHATWG WebSockets Standard requires it of
    /// browsers; the page's `close` event then says 1006), which is why
    /// [`Decision::accept`] refuses it unless told so here.
    pub fn without_protocol(mut self) -> Decision {
        if let Verdict::Accept { protocol: p, .. } = &mut self.0 {
            *p = Protocol::Declined;
        }
        self
    }

    /// Accept without permessage-deflate, even if the client offered it and the engine
    /// accepts it ([`Config::compression`](crate::Config::compression)): the client gets plain
    /// frames and may not compress. For the clients known to mishandle it (some Safari
    /// versions have), recognised by their `User-Agent`, say.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// use shardcast::{Decision, Handler};
    /// use std::net::SocketAddr;
    ///
    /// struct NoDeflateForOldSafari;
    ///
    /// impl Handler for NoDeflateForOldSafari {
    ///     fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
    ///         let agent = request.header("user-agent").unwrap_or_default();
    ///         let old_safari = agent.windows(11).any(|w| w == b"Version/15.");
    ///         if old_safari { Decision::accept().without_compression() } else { Decision::accept() }
    ///     }
    /// }
    /// ```
    pub fn without_compression(mut self) -> Decision {
        if let Verdict::Accept { compression, .. } = &mut self.0 {
            *compression = false;
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
    /// The permessage-deflate agreement, if its offer was accepted.
    pub(crate) deflate: Option<Agreement>,
}

impl Accepted {
    /// The subprotocol chosen among those the client offered, for the
    /// `Sec-WebSocket-Protocol` header of the 101 answer; `None`: answer without one.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The `Sec-WebSocket-Extensions` header value of the 101 answer, if an extension was
    /// agreed (permessage-deflate): answer with it, or the client cannot read what it gets.
    pub fn extensions(&self) -> Option<String> {
        self.deflate.map(|agreement| agreement.response())
    }

    /// The complete `101 Switching Protocols` answer to the request whose key is `key`: the
    /// accept key, the subprotocol and the extensions agreed here. What an embedder that
    /// upgrades streams itself writes before [`Engine::register_with`](crate::Engine::register_with).
    pub fn response(&self, key: &str) -> Vec<u8> {
        handshake::accept_response(key, self.protocol(), self.extensions().as_deref())
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

    /// Adds `topic` to the subscriptions at admission, without repeats, as
    /// [`Decision::subscribe`] does; unchecked until [`Accepted::check_topics`].
    #[cfg(feature = "axum")]
    pub(crate) fn subscribe(&mut self, topic: Topic) {
        if !self.topics.contains(&topic) {
            self.topics.push(topic);
        }
    }

    /// Authenticates the client as `principal` at admission, replacing the decision's.
    #[cfg(feature = "axum")]
    pub(crate) fn authenticate(&mut self, principal: Principal) {
        self.principal = Some(principal);
    }

    /// Whether the subscriptions are within `config`'s topic limits: `400 Bad Request` naming
    /// the limit if not, as [`decide`] answers.
    #[cfg(feature = "axum")]
    pub(crate) fn check_topics(&self, config: &Config) -> Result<(), Rejected> {
        within_limits(config, &self.topics)
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
        if let Some(agreement) = self.deflate {
            state.set_deflate(slot, agreement);
        }
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
/// to that), whose subscriptions must be within the topic limits (else 400, naming the limit)
/// and whose subprotocol must be one the client offered (else 400, see [`negotiate`]). Every
/// way a request is decided, the shard's own upgrade, [`Engine::decide`](crate::Engine::decide)
/// and the axum extractor (through it), calls this, so they cannot drift apart.
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
            compression,
        } => {
            within_limits(config, &topics)?;
            let protocol = negotiate(&config.protocols, request, protocol)?;
            let deflate = (compression && config.compression.enabled)
                .then(|| deflate::negotiate(request.extension_offers()))
                .flatten();
            Ok(Accepted {
                protocol,
                principal,
                data,
                topics,
                deflate,
            })
        }
        Verdict::Reject { status, body } => Err(Rejected::new(status, body)),
    }
}

/// The subprotocol to answer `request` with, as `choice` says; `supported` is
/// [`Config::protocols`].
///
/// # Errors
///
/// `400 Bad Request` when the answer would make the client fail the connection: a subprotocol
/// it did not offer (RFC 6455 4.1), or none when it offered some (the WHATWG WebSockets
/// Standard, for browsers) and the choice was left to the engine. The body says which, for the developer reading the browser's network panel.
fn negotiate(
    supported: &[String],
    request: &Request<'_>,
    choice: Protocol,
) -> Result<Option<String>, Rejected> {
    match choice {
        Protocol::Declined => Ok(None),
        Protocol::Chosen(name) if request.protocols().any(|offered| offered == name) => {
            Ok(Some(name))
        }
        Protocol::Chosen(name) => Err(Rejected::new(
            400,
            format!("subprotocol {name:?} chosen by the server was not offered"),
        )),
        Protocol::Negotiated => match request.select_protocol(supported) {
            Some(name) => Ok(Some(name.to_owned())),
            None if request.offers_protocols() => {
                let supported = match supported {
                    [] => "none".to_owned(),
                    names => names.join(", "),
                };
                Err(Rejected::new(
                    400,
                    format!("no offered subprotocol is supported (supported: {supported})"),
                ))
            }
            None => Ok(None),
        },
    }
}

/// [`check_topics`], as the `400 Bad Request` naming the limit that refuses the upgrade.
fn within_limits(config: &Config, topics: &[Topic]) -> Result<(), Rejected> {
    check_topics(config, topics).map_err(|e| Rejected::new(400, e.to_string()))
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
