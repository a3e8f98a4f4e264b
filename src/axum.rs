//! axum integration (feature `axum`): [`Upgrade`], an extractor that answers a WebSocket
//! upgrade on an axum route and hands the connection to the engine.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use shardcast::Engine;
//! use shardcast::axum::Upgrade;
//! use std::net::SocketAddr;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder().build()?;
//! let app = Router::new()
//!     .route("/ws", get(|upgrade: Upgrade| async { upgrade }))
//!     .route("/health", get(|| async { "ok" }))
//!     .with_state(engine.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // `ConnectInfo` gives `Handler::on_upgrade` the peer's address.
//! let app = app.into_make_service_with_connect_info::<SocketAddr>();
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # The engine comes from the router's state
//!
//! [`Upgrade`] takes the [`Engine`] from the state with [`FromRef`], as axum's own extractors
//! take what they need (axum-extra's cookie `Key`, for instance): pass the engine itself as the
//! state (`.with_state(engine)`), or implement `FromRef<AppState> for Engine` (or derive it
//! with axum's `FromRef` macro) on a state that holds one.
//!
//! # One decision for every path
//!
//! The extractor checks the request (GET, HTTP/1.1, `Upgrade: websocket`, `Connection:
//! upgrade`, `Sec-WebSocket-Version: 13`, a valid key) and runs [`Engine::decide`]: the same
//! `Config::allowed_origins` check and [`Handler::on_upgrade`](crate::Handler::on_upgrade)
//! decision as a connection the engine accepts itself, with the peer's address when the router
//! was made with `into_make_service_with_connect_info::<SocketAddr>()` (else `None`), and the
//! request target as the client sent it (`OriginalUri`, even under `Router::nest`). A refusal
//! is answered with its status and body, like every [`UpgradeRejection`]; nothing reaches the
//! engine. Accepted, [`Upgrade`] as a response is the `101 Switching Protocols` with the
//! chosen subprotocol, and once hyper has written it, the connection goes to its shard with
//! [`Registration::upgraded`].
//!
//! # Topics and principal from the route
//!
//! The decision runs before the route's code, but the route has the last word on what the
//! client starts with: [`Upgrade::subscribe`] adds topics and [`Upgrade::authenticated`] sets
//! who it is, from axum's own extractors (`Query`, `Path`, an `Extension` a middleware put in
//! the request), so that [`Handler::on_upgrade`](crate::Handler::on_upgrade) need not parse
//! the request again. Both take effect when the client is registered, before it can miss a
//! broadcast; a topic past the limits turns the answer into `400 Bad Request`, as it does for
//! the decision's topics. For a handler that reads the query itself,
//! [`Request::query_pairs`] decodes it.
//!
//! # Subprotocols
//!
//! The subprotocol is part of that decision, as on the engine's own listener: the handler's
//! choice ([`Decision::with_protocol`](crate::Decision::with_protocol)), or else the first
//! of [`Builder::protocols`](crate::Builder::protocols), in that list's order, that the
//! client offered, answered in the 101's `Sec-WebSocket-Protocol`. A client that offered subprotocols
//! of which none is chosen is refused with `400 Bad Request` and a body naming the supported
//! ones (logged at debug), since a browser would fail the connection anyway (see
//! `Builder::protocols`). There is no per-route list on [`Upgrade`] as on axum's
//! `WebSocketUpgrade::protocols`: the decision, refusal included, is made when the extractor
//! runs, before the route's code. List every route's subprotocols on the engine, or choose by
//! path in [`Handler::on_upgrade`](crate::Handler::on_upgrade) with
//! [`Request::select_protocol`].
//!
//! Middleware on the route (`Router::layer`, `route_layer`, `middleware::from_fn`) runs as for
//! any route: it can refuse before the extractor runs, and the headers it adds to the response
//! are in the 101.
//!
//! # Where the socket goes
//!
//! Under `axum::serve` with a `tokio::net::TcpListener` (and under hyper's own HTTP/1
//! connection over `TokioIo<TcpStream>`), the upgraded connection gives back its
//! `TcpStream`: it is moved to the shard's reactor and gets `TCP_NODELAY`, as a connection
//! from [`Engine::listen`] has, and the bytes the client sent right behind its request (that
//! hyper already read) are parsed first. From then on the connection costs the same as one the
//! engine accepted itself.
//!
//! Any other connection (TLS terminated in front of axum, as `axum-server` with rustls does, a
//! listener whose stream is not a plain `TcpStream`) is registered as hyper's `Upgraded`
//! stream. It works, and costs more: the socket stays on the reactor of axum's runtime, so
//! each readiness event wakes the shard from another thread; every read and write goes through
//! hyper's boxed stream; the connection dies with axum's runtime; and the engine cannot reach
//! the socket to set `TCP_NODELAY`, which with small frames cut throughput about 5x in our
//! measurements: set it where the connection is accepted. For TLS with sockets on their shard,
//! use [`Engine::listen_wrapped`] instead.

use crate::error::{RegisterError, Rejected};
use crate::wire::handshake::{self, HandshakeError, Request};
use crate::{Accepted, ClientData, ClientId, Engine, Principal, Registration, Topic};
use ::axum::body::Body;
use ::axum::extract::{ConnectInfo, FromRef, FromRequestParts, OriginalUri};
use ::axum::http::{HeaderValue, Method, StatusCode, Version, header, request::Parts};
use ::axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// What [`Upgrade::on_registered`] calls with the outcome of the hand-over.
type OnRegistered = Box<dyn FnOnce(Result<ClientId, RegisterError>) + Send>;

/// An accepted WebSocket upgrade request, to answer with `101 Switching Protocols` by
/// returning it (it is the response): the engine then owns the connection. See the
/// [module docs](self) for where the engine comes from and what becomes of the socket.
///
/// Extracting it runs the engine's decision; a request that is no upgrade, or that the
/// decision refuses, is answered with an [`UpgradeRejection`] (take
/// `Result<Upgrade, UpgradeRejection>` to answer otherwise).
///
/// ```
/// use axum::{Router, extract::Extension, routing::get};
/// use shardcast::axum::Upgrade;
/// use shardcast::{ClientData, Engine};
///
/// /// Who the session middleware says the user is.
/// #[derive(Clone)]
/// struct User(String);
///
/// async fn ws(Extension(user): Extension<User>, upgrade: Upgrade) -> Upgrade {
///     // Read by every hook of the handler with `Context::data`.
///     upgrade.data(ClientData::new(user))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().shards(1).build()?;
/// let app: Router = Router::new().route("/ws", get(ws)).with_state(engine.clone());
/// # let _ = app;
/// # engine.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[must_use = "the upgrade is answered and handed over only when it is returned as the response"]
pub struct Upgrade {
    /// Where the connection goes.
    engine: Engine,
    /// The decision of the engine's policy (subprotocol, principal, data, topics), with the
    /// topics and principal the route added.
    accepted: Accepted,
    /// The `Sec-WebSocket-Accept` value.
    accept: HeaderValue,
    /// Resolves to the connection once hyper has written the 101.
    on_upgrade: OnUpgrade,
    /// The peer's address, from `ConnectInfo`.
    peer: Option<SocketAddr>,
    /// The client's data if the decision attaches none.
    data: Option<ClientData>,
    /// Told the outcome of the hand-over.
    on_registered: Option<OnRegistered>,
}

impl Upgrade {
    /// What the engine's policy decided: the subprotocol (answered in the 101's
    /// `Sec-WebSocket-Protocol`, [`Accepted::protocol`]), principal, data and topics the client
    /// gets, with the topics and principal [`Upgrade::subscribe`] and
    /// [`Upgrade::authenticated`] added so far.
    pub fn accepted(&self) -> &Accepted {
        &self.accepted
    }

    /// The peer's address, if the router was made with
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Subscribes the client to `topic` from the start, besides the topics the decision
    /// subscribed it to ([`Decision::subscribe`]): it is in the topic's audience from the
    /// moment it is registered, so it misses no broadcast issued after
    /// [`Upgrade::on_registered`] learns its id. Call it once per topic (repeats count once),
    /// with what the route's extractors give (`Query`, a path parameter).
    ///
    /// A topic past the limits ([`Config::topic_bytes_max`], empty, or more than
    /// [`Config::topics_per_client_max`] in all, the decision's included) turns the answer
    /// into `400 Bad Request` naming the limit instead of the 101, as it does for
    /// [`Decision::subscribe`]; the connection never reaches the engine.
    ///
    /// [`Config::topic_bytes_max`]: crate::Config::topic_bytes_max
    /// [`Config::topics_per_client_max`]: crate::Config::topics_per_client_max
    /// [`Decision::subscribe`]: crate::Decision::subscribe
    ///
    /// ```
    /// use axum::{Router, extract::Query, routing::get};
    /// use shardcast::Engine;
    /// use shardcast::axum::Upgrade;
    ///
    /// /// `/ws?room=A&room=B`: subscribed to every room, decoded by axum.
    /// async fn ws(Query(query): Query<Vec<(String, String)>>, upgrade: Upgrade) -> Upgrade {
    ///     query
    ///         .into_iter()
    ///         .filter(|(name, _)| name == "room")
    ///         .fold(upgrade, |upgrade, (_, room)| upgrade.subscribe(room))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder().shards(1).build()?;
    /// let app: Router = Router::new().route("/ws", get(ws)).with_state(engine.clone());
    /// # let _ = app;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(mut self, topic: impl Into<Topic>) -> Upgrade {
        self.accepted.subscribe(topic.into());
        self
    }

    /// Marks the client authenticated as `principal` from the start (it is in
    /// [`Audience::AUTHENTICATED`](crate::Audience::AUTHENTICATED) from the moment it is
    /// registered), replacing the principal of the decision
    /// ([`Decision::authenticated`](crate::Decision::authenticated)) if it set one: who the
    /// user is, as the route's extractors tell it (an `Extension` a session middleware put
    /// in the request).
    ///
    /// ```
    /// use axum::{Router, extract::Extension, routing::get};
    /// use shardcast::axum::Upgrade;
    /// use shardcast::{Engine, Principal};
    ///
    /// /// Who the session middleware says the user is.
    /// #[derive(Clone)]
    /// struct User(String);
    ///
    /// async fn ws(user: Option<Extension<User>>, upgrade: Upgrade) -> Upgrade {
    ///     match user {
    ///         // `Context::principal` gives it back to every hook of the handler.
    ///         Some(Extension(User(name))) => upgrade.authenticated(Principal::new(name)),
    ///         None => upgrade,
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder().shards(1).build()?;
    /// let app: Router = Router::new().route("/ws", get(ws)).with_state(engine.clone());
    /// # let _ = app;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn authenticated(mut self, principal: Principal) -> Upgrade {
        self.accepted.authenticate(principal);
        self
    }

    /// Attaches `data` to the client unless the decision attaches its own, as
    /// [`Registration::data`] does: what the route knows of the request (what a middleware
    /// put in its extensions, a path parameter).
    pub fn data(mut self, data: ClientData) -> Upgrade {
        self.data = Some(data);
        self
    }

    /// Calls `then` on the runtime that serves axum, with the client's id once the connection
    /// is queued to its shard (from then on it receives every broadcast issued after the
    /// call), or with why it is not: the client left before the upgrade completed
    /// ([`RegisterError::Io`]), the engine was shut down meanwhile, or
    /// [`Config::clients_max`] clients connected meanwhile (the extractor refuses with 503 a
    /// request that finds the engine full; one that got its 101 first sees its connection
    /// closed). `then` must not block.
    ///
    /// [`Config::clients_max`]: crate::Config::clients_max
    pub fn on_registered(
        mut self,
        then: impl FnOnce(Result<ClientId, RegisterError>) + Send + 'static,
    ) -> Upgrade {
        self.on_registered = Some(Box::new(then));
        self
    }
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade")
            .field("accepted", &self.accepted)
            .field("peer", &self.peer)
            .field("data", &self.data)
            .field("on_registered", &self.on_registered.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> FromRequestParts<S> for Upgrade
where
    Engine: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Upgrade, UpgradeRejection> {
        // HTTP/2's extended CONNECT (RFC 8441) carries a WebSocket in one stream of a shared
        // connection: there is no socket to hand to a shard. 426 tells the client to upgrade
        // an HTTP/1.1 connection instead.
        if parts.version > Version::HTTP_11 {
            return Err(UpgradeRejection::NotUpgradable);
        }
        if parts.version < Version::HTTP_11 {
            return Err(UpgradeRejection::Invalid(HandshakeError::HttpVersion));
        }
        if parts.method != Method::GET {
            return Err(UpgradeRejection::Invalid(HandshakeError::Method));
        }
        let engine = Engine::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        let (accepted, accept) = {
            let target = parts
                .extensions
                .get::<OriginalUri>()
                .map_or(&parts.uri, |OriginalUri(uri)| uri);
            let path = target.path_and_query().map_or("/", |p| p.as_str());
            let headers = parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value));
            let request = Request::new(path, headers).map_err(UpgradeRejection::Invalid)?;
            // Checked before the decision, so that the handler never accepts a client that
            // cannot come (hyper puts no upgrade handle on a request it cannot upgrade).
            if parts.extensions.get::<OnUpgrade>().is_none() {
                return Err(UpgradeRejection::NotUpgradable);
            }
            // What the shard checks again when the connection reaches it; checked here too, so
            // that a client over the limit gets an answer instead of a 101 and a hang-up.
            if engine.connection_count() >= engine.config().clients_max {
                return Err(UpgradeRejection::Refused(Rejected::new(
                    503,
                    "too many clients",
                )));
            }
            let accepted = engine.decide(&request, peer).map_err(|rejected| {
                // At debug, as the shards log theirs: a peer decides how often this happens.
                tracing::debug!(
                    peer = peer.map(tracing::field::display),
                    status = rejected.status(),
                    reason = rejected.body(),
                    "upgrade refused"
                );
                UpgradeRejection::Refused(rejected)
            })?;
            // Base64 is always a valid header value.
            let accept = HeaderValue::try_from(handshake::accept_key(request.key()))
                .map_err(|_| UpgradeRejection::Invalid(HandshakeError::Key))?;
            (accepted, accept)
        };
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeRejection::NotUpgradable)?;
        Ok(Upgrade {
            engine,
            accepted,
            accept,
            on_upgrade,
            peer,
            data: None,
            on_registered: None,
        })
    }
}

impl IntoResponse for Upgrade {
    /// The 101 answer; once hyper has written it, a task on axum's runtime hands the
    /// connection to its shard.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (axum always calls it inside one).
    fn into_response(self) -> Response {
        let Upgrade {
            engine,
            accepted,
            accept,
            on_upgrade,
            peer,
            data,
            on_registered,
        } = self;
        // The route's subscriptions, checked as `decide` checked the decision's: before the
        // 101, so that a refusal is still an answer the client can read.
        if let Err(rejected) = accepted.check_topics(engine.config()) {
            tracing::debug!(
                peer = peer.map(tracing::field::display),
                status = rejected.status(),
                reason = rejected.body(),
                "upgrade refused"
            );
            return UpgradeRejection::Refused(rejected).into_response();
        }
        let protocol = match accepted.protocol().map(HeaderValue::try_from) {
            None => None,
            Some(Ok(protocol)) => Some(protocol),
            // The handler chose a subprotocol that cannot be a header value: a bug of the
            // server's, answered as one rather than with a header the client cannot read.
            Some(Err(_)) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, "invalid subprotocol").into_response();
            }
        };
        // permessage-deflate, if agreed: made of tokens and digits, always a valid value.
        let extensions = accepted
            .extensions()
            .and_then(|value| HeaderValue::try_from(value).ok());
        tokio::spawn(async move {
            let registered = match on_upgrade.await {
                Ok(upgraded) => hand_over(&engine, upgraded, accepted, data, peer).await,
                Err(e) => Err(RegisterError::Io(std::io::Error::other(e))),
            };
            if let Err(e) = &registered {
                tracing::debug!(peer = peer.map(tracing::field::display), error = %e, "upgraded connection not registered");
            }
            if let Some(then) = on_registered {
                then(registered);
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        if let Some(protocol) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        if let Some(extensions) = extensions {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
        }
        response
    }
}

/// Registers the upgraded connection: its `TcpStream` and the bytes hyper read past the
/// request when it can be taken out of `upgraded`, else `upgraded` itself.
async fn hand_over(
    engine: &Engine,
    upgraded: Upgraded,
    accepted: Accepted,
    data: Option<ClientData>,
    peer: Option<SocketAddr>,
) -> Result<ClientId, RegisterError> {
    let registration = |read: Bytes| {
        let registration = Registration::upgraded_after(accepted, read);
        match data {
            Some(data) => registration.data(data),
            None => registration,
        }
    };
    // `axum::serve` serves with hyper-util's `auto` connection, which wraps the stream in a
    // type of its own; its `downcast` sees through it.
    let upgraded =
        match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded) {
            Ok(parts) => {
                let tcp = parts.io.into_inner();
                return engine
                    .register_with(tcp, registration(parts.read_buf))
                    .await;
            }
            Err(upgraded) => upgraded,
        };
    // hyper's own HTTP/1 connection.
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let tcp = parts.io.into_inner();
            return engine
                .register_with(tcp, registration(parts.read_buf))
                .await;
        }
        Err(upgraded) => upgraded,
    };
    // Anything else: `Upgraded` replays what hyper read before it reads the stream, so no
    // prefix is needed.
    let registration = registration(Bytes::new()).peer(peer);
    engine
        .register_with(TokioIo::new(upgraded), registration)
        .await
}

/// Why [`Upgrade`] refused a request; answered with the status [`UpgradeRejection::status`]
/// and a short text body, as the engine answers the same request on its own listener. Unlike a
/// refusal there, it is not counted in [`ShardStats::handshakes_failed`]: axum answered it,
/// no shard saw it.
///
/// [`ShardStats::handshakes_failed`]: crate::ShardStats::handshakes_failed
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeRejection {
    /// Not a valid WebSocket upgrade request: the method is not GET (405, with `Allow: GET`),
    /// HTTP/1.0, a header missing or wrong (400), a version other than 13 (426, with
    /// `Sec-WebSocket-Version: 13`), more than
    /// [`HEADERS_MAX`](crate::wire::handshake::HEADERS_MAX) headers (431).
    Invalid(HandshakeError),
    /// The connection cannot be upgraded: HTTP/2 or later, or a server that gives no upgrade
    /// handle (426 Upgrade Required).
    NotUpgradable,
    /// Refused by the engine's policy ([`Engine::decide`]), with its status and body, or
    /// with 503 when [`Config::clients_max`](crate::Config::clients_max) connections are live.
    Refused(Rejected),
}

impl UpgradeRejection {
    /// The HTTP status answered.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeRejection::Invalid(e) => e.status(),
            UpgradeRejection::NotUpgradable => 426,
            UpgradeRejection::Refused(rejected) => rejected.status(),
        }
    }
}

impl fmt::Display for UpgradeRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeRejection::Invalid(e) => e.fmt(f),
            UpgradeRejection::NotUpgradable => f.write_str("connection cannot be upgraded"),
            UpgradeRejection::Refused(rejected) => f.write_str(rejected.body()),
        }
    }
}

impl std::error::Error for UpgradeRejection {}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.to_string()).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            StatusCode::UPGRADE_REQUIRED => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            _ => {}
        }
        response
    }
}
