//! `Registration`: how a stream handed to [`Engine::register_with`](crate::Engine::register_with)
//! is opened: upgraded by the engine or already upgraded, wrapped or not, with what data.

use crate::client::ClientData;
use crate::shard::{Accepted, Wrap};
use bytes::Bytes;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// How [`Engine::register_with`](crate::Engine::register_with) opens a stream. The default
/// ([`Registration::new`]) is what [`Engine::register`](crate::Engine::register) does: the
/// engine reads and answers the HTTP upgrade on the client's shard, within
/// [`Config::handshake_deadline`](crate::Config::handshake_deadline), deciding it as
/// [`Engine::decide`](crate::Engine::decide) does.
///
/// ```
/// use shardcast::{ClientData, Engine, Registration};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().shards(1).build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
/// let (stream, _) = listener.accept().await?;
/// // A wrap that adds nothing (a TLS acceptor would go here), and what the embedder knows
/// // of the connection: the listener it came through.
/// struct Listener(&'static str);
/// let plain = |tcp: tokio::net::TcpStream| async move { Ok::<_, std::io::Error>(tcp) };
/// let registration = Registration::new()
///     .wrap(plain)
///     .data(ClientData::new(Listener("public")));
/// engine.register_with(stream, registration).await?;
/// # engine.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct Registration {
    /// The decision for a stream whose upgrade the embedder answered; `None`: the shard reads
    /// and answers the upgrade.
    pub(crate) upgraded: Option<Accepted>,
    /// Turns the raw TCP stream into the one the engine speaks over, on its shard, before the
    /// upgrade.
    pub(crate) wrap: Option<Arc<dyn Wrap>>,
    /// The client's data, if its decision attaches none.
    pub(crate) data: Option<ClientData>,
    /// What the embedder's HTTP server read from the stream after the upgrade request (the
    /// client's first frames, sent without waiting for the 101): the shard parses it before
    /// reading the stream. Empty unless `upgraded` is `Some` (only `shardcast::axum` sets it,
    /// with the decision); bounded by that server's read buffer (hyper's: 400 KiB by default).
    pub(crate) read: Bytes,
    /// The peer's address, for a stream that is not a `TcpStream` (whose own address is read
    /// from the socket); only the `connection` span shows it.
    pub(crate) peer: Option<SocketAddr>,
}

impl Registration {
    /// The engine reads and answers the upgrade on the client's shard; no wrap, no data.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// let (_client, server) = tokio::io::duplex(4096);
    /// // The same as `engine.register(server)`.
    /// engine.register_with(server, shardcast::Registration::new()).await?;
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Registration {
        Registration::default()
    }

    /// For a stream on which the embedder already answered `101 Switching Protocols`, after
    /// asking [`Engine::decide`](crate::Engine::decide): the client is registered as soon as
    /// its shard takes the stream (so it receives every broadcast this caller issues after
    /// [`Engine::register_with`](crate::Engine::register_with) returns), authenticated and
    /// with data as `accepted` says.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// use shardcast::{Engine, Registration};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::builder().shards(1).build()?;
    /// // What the embedder's HTTP server parsed.
    /// let headers = [
    ///     ("Upgrade", "websocket"),
    ///     ("Connection", "Upgrade"),
    ///     ("Sec-WebSocket-Version", "13"),
    ///     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    /// ];
    /// let request = Request::new("/", headers)?;
    /// let accepted = engine.decide(&request, None)?;
    /// // The 101 answer, with the subprotocol and extensions agreed (permessage-deflate).
    /// let answer = accepted.response(request.key());
    /// # let _ = answer;
    /// // ... the server writes `answer`, then hands over the stream ...
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let id = engine.register_with(server, Registration::upgraded(accepted)).await?;
    /// assert!(engine.is_alive(id).await);
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn upgraded(accepted: Accepted) -> Registration {
        Registration {
            upgraded: Some(accepted),
            ..Registration::default()
        }
    }

    /// [`Registration::upgraded`], for a stream from which the embedder's HTTP server already
    /// read `read`: bytes the client sent after its upgrade request, which the shard must
    /// parse before anything it reads itself.
    #[cfg(feature = "axum")]
    pub(crate) fn upgraded_after(accepted: Accepted, read: Bytes) -> Registration {
        Registration {
            read,
            ..Registration::upgraded(accepted)
        }
    }

    /// The peer's address of a stream that is not a `TcpStream`.
    #[cfg(feature = "axum")]
    pub(crate) fn peer(mut self, peer: Option<SocketAddr>) -> Registration {
        self.peer = peer;
        self
    }

    /// Runs `wrap` (a TLS acceptor, say) on the raw stream, on the client's shard, within the
    /// handshake deadline, before the upgrade; a failed wrap counts in `handshakes_failed`.
    /// Only for a plain `tokio::net::TcpStream` that is not upgraded yet:
    /// [`Engine::register_with`](crate::Engine::register_with) refuses any other with
    /// [`RegisterError::CannotWrap`](crate::RegisterError::CannotWrap).
    ///
    /// ```
    /// use shardcast::{RegisterError, Registration};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = shardcast::Engine::builder().shards(1).build()?;
    /// let plain = |tcp: tokio::net::TcpStream| async move { Ok::<_, std::io::Error>(tcp) };
    /// // An in-memory stream is not TCP: there is nothing to wrap.
    /// let (_client, server) = tokio::io::duplex(4096);
    /// let refused = engine.register_with(server, Registration::new().wrap(plain)).await;
    /// assert!(matches!(refused, Err(RegisterError::CannotWrap)));
    /// # engine.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wrap(mut self, wrap: impl Wrap) -> Registration {
        self.wrap = Some(Arc::new(wrap));
        self
    }

    /// Attaches `data` to the client, unless its decision
    /// ([`Decision::with_data`](crate::Decision::with_data)) attaches its own: what the
    /// embedder knows of the connection (the listener or tenant it came through, a TLS
    /// client certificate), read with [`Context::data`](crate::Context::data) and in
    /// [`ClientInfo::data`](crate::ClientInfo::data).
    ///
    /// ```
    /// use shardcast::{ClientData, Registration};
    ///
    /// struct Tenant(u32);
    ///
    /// let registration = Registration::new().data(ClientData::new(Tenant(7)));
    /// # let _ = registration;
    /// ```
    pub fn data(mut self, data: ClientData) -> Registration {
        self.data = Some(data);
        self
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("upgraded", &self.upgraded)
            .field("wrap", &self.wrap.is_some())
            .field("data", &self.data)
            .field("read", &self.read.len())
            .field("peer", &self.peer)
            .finish()
    }
}
