//! Server side of the HTTP/1.1 WebSocket upgrade (RFC 6455 4.2).
//!
//! [`parse`] reads the client's request from the connection's read buffer (or
//! [`Request::new`] checks one an HTTP server parsed), [`accept_response`] and
//! [`reject_response`] build the answer ([`accept_key`] for a server that builds its own).
//!
//! # Invariants
//!
//! - Parsing never reads past `headers_bytes_max` bytes nor keeps more than 64 headers, so a
//!   hostile client costs a bounded amount of work and memory.
//! - A [`Request`] only exists for a request that is a valid upgrade: GET, HTTP/1.1 or later,
//!   `Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Version: 13` and a
//!   well-formed `Sec-WebSocket-Key`, each of the last two once. [`parse`], which reads the
//!   request off the wire, is stricter still: a target in origin form (`/path?query`), exactly
//!   one `Host`, no body (so that the bytes after the request are the client's first
//!   WebSocket frames), and CRLF line endings.

use std::borrow::Cow;
use std::fmt::Write as _;

use smallvec::SmallVec;

/// Most headers a request may carry.
pub const HEADERS_MAX: usize = 64;

/// A parsed, valid upgrade request. Header refs borrowed from the input buffer.
#[derive(Debug)]
pub struct Request<'b> {
    /// The request target (path and query).
    path: &'b str,
    /// Every header as (name, value), in request order; at most [`HEADERS_MAX`].
    headers: SmallVec<[(&'b str, &'b [u8]); 24]>,
    /// The Sec-WebSocket-Key value, trimmed; 24 base64 characters.
    key: &'b str,
}

impl<'b> Request<'b> {
    /// The upgrade request an HTTP server (axum, hyper, ...) already parsed: its target and
    /// headers, checked as [`parse`] checks them (`Upgrade: websocket`, `Connection: upgrade`,
    /// `Sec-WebSocket-Version: 13`, a well-formed `Sec-WebSocket-Key`). The method and HTTP
    /// version are the server's to check. Pass it to
    /// [`Engine::decide`](crate::Engine::decide).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::TooLarge`] for more than [`HEADERS_MAX`] headers; otherwise the first
    /// rule of RFC 6455 4.2.1 the request breaks, as [`parse`].
    ///
    /// ```
    /// use shardcast::wire::handshake::{HandshakeError, Request};
    /// let headers = [
    ///     ("Upgrade", "websocket"),
    ///     ("Connection", "Upgrade"),
    ///     ("Sec-WebSocket-Version", "13"),
    ///     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    /// ];
    /// let request = Request::new("/chat", headers)?;
    /// assert_eq!(request.header("upgrade"), Some(&b"websocket"[..]));
    /// let without_key = Request::new("/chat", headers.into_iter().take(3));
    /// assert_eq!(without_key.unwrap_err(), HandshakeError::Key);
    /// # Ok::<(), HandshakeError>(())
    /// ```
    pub fn new<V>(
        path: &'b str,
        headers: impl IntoIterator<Item = (&'b str, &'b V)>,
    ) -> Result<Request<'b>, HandshakeError>
    where
        V: AsRef<[u8]> + ?Sized + 'b,
    {
        let mut list = SmallVec::new();
        for (name, value) in headers {
            if list.len() == HEADERS_MAX {
                return Err(HandshakeError::TooLarge);
            }
            list.push((name, value.as_ref()));
        }
        upgrade_request(path, list)
    }

    /// The request target (path and query), as the client sent it: not percent-decoded. For
    /// the query's parameters, decoded, see [`Request::query_pairs`].
    pub fn path(&self) -> &'b str {
        self.path
    }

    /// The query of the request target, as sent (not decoded): what follows the first `?`,
    /// up to a `#` if any (clients send no fragment, but [`Request::new`] does not check for
    /// one); `None` if the target has no `?` before any `#`.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// let headers = [
    ///     ("Upgrade", "websocket"),
    ///     ("Connection", "Upgrade"),
    ///     ("Sec-WebSocket-Version", "13"),
    ///     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    /// ];
    /// let request = Request::new("/ws?topic=news%2Fsport", headers)?;
    /// assert_eq!(request.query(), Some("topic=news%2Fsport"));
    /// assert_eq!(Request::new("/ws", headers)?.query(), None);
    /// # Ok::<(), shardcast::wire::handshake::HandshakeError>(())
    /// ```
    pub fn query(&self) -> Option<&'b str> {
        let target = self
            .path
            .split_once('#')
            .map_or(self.path, |(target, _)| target);
        target.split_once('?').map(|(_, query)| query)
    }

    /// The parameters of the query ([`Request::query`]) as (name, value), in order, decoded
    /// as browsers decode `URLSearchParams` (the WHATWG `application/x-www-form-urlencoded`
    /// parser): split on `&`, skipping empty parts; a part's first `=` splits name from value
    /// (no `=`: the value is empty); `+` is a space; `%XX` is the byte XX, and a `%` not
    /// followed by two hex digits stays as it is; decoded bytes that are not UTF-8 become
    /// U+FFFD (lossy, so a parameter is never lost, but two different invalid values may
    /// decode alike: compare raw values with [`Request::query`] if that matters). Borrowed
    /// from the request where nothing was decoded. A name may repeat: every pair is returned.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// let headers = [
    ///     ("Upgrade", "websocket"),
    ///     ("Connection", "Upgrade"),
    ///     ("Sec-WebSocket-Version", "13"),
    ///     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    /// ];
    /// let request = Request::new("/ws?topic=news%2Fsport&topic=caf%C3%A9+bar&token", headers)?;
    /// let topics: Vec<_> = request
    ///     .query_pairs()
    ///     .filter(|(name, _)| name == "topic")
    ///     .map(|(_, value)| value)
    ///     .collect();
    /// assert_eq!(topics, ["news/sport", "café bar"]);
    /// assert_eq!(request.query_value("token").as_deref(), Some(""));
    /// # Ok::<(), shardcast::wire::handshake::HandshakeError>(())
    /// ```
    pub fn query_pairs(&self) -> impl Iterator<Item = (Cow<'b, str>, Cow<'b, str>)> + 'b {
        form_urlencoded::parse(self.query().unwrap_or_default().as_bytes())
    }

    /// The decoded value of the first query parameter called `name` (decoded names are
    /// compared exactly), as [`Request::query_pairs`] decodes it; `None` if there is none.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// let headers = [
    ///     ("Upgrade", "websocket"),
    ///     ("Connection", "Upgrade"),
    ///     ("Sec-WebSocket-Version", "13"),
    ///     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    /// ];
    /// let request = Request::new("/ws?room=a+b&room=c", headers)?;
    /// assert_eq!(request.query_value("room").as_deref(), Some("a b"));
    /// assert_eq!(request.query_value("token"), None);
    /// # Ok::<(), shardcast::wire::handshake::HandshakeError>(())
    /// ```
    pub fn query_value(&self, name: &str) -> Option<Cow<'b, str>> {
        self.query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// First header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        header(&self.headers, name)
    }

    /// Every header as (name, value), in request order.
    pub fn headers(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + '_ {
        self.headers.iter().copied()
    }

    /// The Origin header, if present and UTF-8.
    pub fn origin(&self) -> Option<&'b str> {
        self.header("origin")
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The subprotocols the client offered, in its order of preference: the items of every
    /// `Sec-WebSocket-Protocol` header, in order, split on commas, without the spaces and tabs
    /// around them (RFC 9110 5.6.1 lists). Empty items (`a, ,b`) are skipped, as that list rule
    /// asks; an item that is not UTF-8 is skipped too, as no server can name it. Items are
    /// returned as sent, tokens or not (RFC 6455 4.1 asks clients for tokens).
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// let headers = [
    ///     ("Upgrade", "websocket"),
    ///     ("Connection", "Upgrade"),
    ///     ("Sec-WebSocket-Version", "13"),
    ///     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ///     ("Sec-WebSocket-Protocol", "v2.chat , ,v1.chat"),
    ///     ("Sec-WebSocket-Protocol", "graphql-ws"),
    /// ];
    /// let request = Request::new("/", headers)?;
    /// let offered: Vec<_> = request.protocols().collect();
    /// assert_eq!(offered, ["v2.chat", "v1.chat", "graphql-ws"]);
    /// # Ok::<(), shardcast::wire::handshake::HandshakeError>(())
    /// ```
    pub fn protocols(&self) -> impl Iterator<Item = &'b str> + '_ {
        self.protocol_items()
            .filter_map(|item| std::str::from_utf8(item).ok())
    }

    /// The first subprotocol of `supported`, in its order, that the client offered (compared
    /// exactly, case included, as browsers compare the answer with what they
    /// offered); `None` if the client offered none of them. What the engine answers with when
    /// the handler leaves the choice to it ([`Builder::protocols`]); a handler can call it with
    /// a list of its own and pass the result to
    /// [`Decision::with_protocol`](crate::Decision::with_protocol).
    ///
    /// The order of `supported` wins: the first name of `supported` that the client offered,
    /// as axum's `WebSocketUpgrade::protocols` (and Python's `websockets` and gorilla) choose,
    /// so that a server lists its preferred subprotocol first (RFC 6455 lets either side
    /// prefer: the client lists its offers by preference, the server picks one).
    ///
    /// [`Builder::protocols`]: crate::Builder::protocols
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// let headers = [
    ///     ("Upgrade", "websocket"),
    ///     ("Connection", "Upgrade"),
    ///     ("Sec-WebSocket-Version", "13"),
    ///     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ///     ("Sec-WebSocket-Protocol", "mqtt, v1.chat, v2.chat"),
    /// ];
    /// let request = Request::new("/", headers)?;
    /// assert_eq!(request.select_protocol(&["v2.chat", "v1.chat"]), Some("v2.chat"));
    /// assert_eq!(request.select_protocol(&["v1.chat", "v2.chat"]), Some("v1.chat"));
    /// assert_eq!(request.select_protocol(&["graphql-ws"]), None);
    /// # Ok::<(), shardcast::wire::handshake::HandshakeError>(())
    /// ```
    pub fn select_protocol<S: AsRef<str>>(&self, supported: &[S]) -> Option<&'b str> {
        supported
            .iter()
            .find_map(|s| self.protocols().find(|offered| *offered == s.as_ref()))
    }

    /// The values of the request's `Sec-WebSocket-Extensions` headers, in order: what
    /// [`deflate::negotiate`](super::deflate::negotiate) reads.
    pub fn extension_offers(&self) -> impl Iterator<Item = &'b [u8]> + '_ {
        self.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, value)| *value)
    }

    /// Whether the client offered any subprotocol: a non-empty item in a
    /// `Sec-WebSocket-Protocol` header, UTF-8 or not. A client that did fails a connection
    /// answered without one (browsers, as the WHATWG WebSockets Standard requires, and
    /// tungstenite and Node's `ws`).
    pub(crate) fn offers_protocols(&self) -> bool {
        self.protocol_items().next().is_some()
    }

    /// The non-empty items of every `Sec-WebSocket-Protocol` header, trimmed of spaces and
    /// tabs, in order.
    fn protocol_items(&self) -> impl Iterator<Item = &'b [u8]> + '_ {
        self.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|&(_, value)| value.split(|&b| b == b','))
            // Header values hold no CR, LF or form feed, so this trims exactly the optional
            // whitespace (spaces and tabs) of the list rule.
            .map(<[u8]>::trim_ascii)
            .filter(|item| !item.is_empty())
    }

    /// The Sec-WebSocket-Key value (24 base64 characters); pass it to [`accept_response`].
    pub fn key(&self) -> &'b str {
        self.key
    }
}

/// Why an upgrade request was rejected. [`HandshakeError::status`] gives the answer's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request did not end within the header budget, or has too many headers (431).
    #[error("request headers too large")]
    TooLarge,
    /// Not valid HTTP/1.x (400).
    #[error("malformed http request")]
    Malformed,
    /// The method is not GET (405).
    #[error("method not GET")]
    Method,
    /// `Upgrade: websocket` or `Connection: upgrade` missing (400).
    #[error("not an upgrade to websocket")]
    NotUpgrade,
    /// `Sec-WebSocket-Key` missing or not base64 of 16 bytes (400).
    #[error("missing or invalid sec-websocket-key")]
    Key,
    /// `Sec-WebSocket-Version` missing or not 13 (426, answered with
    /// `Sec-WebSocket-Version: 13`).
    #[error("unsupported websocket version")]
    Version,
    /// HTTP/1.0 (400).
    #[error("http version below 1.1")]
    HttpVersion,
    /// `Host` missing or repeated (400; RFC 9112 3.2).
    #[error("missing or repeated host header")]
    Host,
    /// A header that must appear once appears more than once (400).
    #[error("repeated {0} header")]
    Repeated(&'static str),
    /// A request target not in origin form (`*`, `host:port`, `http://...`): an upgrade names
    /// a path (400).
    #[error("request target not a path")]
    Target,
    /// The request announces a body (`Content-Length` other than 0, or
    /// `Transfer-Encoding`): an upgrade has none, and what follows it must be frames (400).
    #[error("upgrade request with a body")]
    Body,
    /// A line ends in a bare LF, without CR (400; RFC 9112 2.2 lets a server reject it, and
    /// a lenient reading is how requests get smuggled past proxies).
    #[error("line ending without CR")]
    LineEnding,
}

impl HandshakeError {
    /// The HTTP status code to answer with; build the answer with [`reject_response`].
    ///
    /// ```
    /// use shardcast::wire::handshake::HandshakeError;
    /// assert_eq!(HandshakeError::Version.status(), 426);
    /// ```
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::TooLarge => 431,
            HandshakeError::Method => 405,
            HandshakeError::Version => 426,
            HandshakeError::Malformed
            | HandshakeError::NotUpgrade
            | HandshakeError::Key
            | HandshakeError::HttpVersion
            | HandshakeError::Host
            | HandshakeError::Repeated(_)
            | HandshakeError::Target
            | HandshakeError::Body
            | HandshakeError::LineEnding => 400,
        }
    }
}

/// Parses `buf`. `Ok(None)`: incomplete, read more. `Ok(Some((req, n)))`: request complete,
/// `n` = bytes of it (bytes after `n` are the first WebSocket frames the client pipelined).
///
/// # Errors
///
/// [`HandshakeError::TooLarge`] when the request is still incomplete after
/// `headers_bytes_max` bytes or has more than [`HEADERS_MAX`] headers; otherwise the first
/// rule of RFC 6455 4.2.1 the request breaks.
///
/// ```
/// use shardcast::wire::handshake;
/// let buf = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
///             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///             Sec-WebSocket-Version: 13\r\n\r\n";
/// let (req, n) = handshake::parse(buf, 8192)?.expect("complete");
/// assert_eq!((req.path(), n), ("/chat", buf.len()));
/// # Ok::<(), handshake::HandshakeError>(())
/// ```
pub fn parse(
    buf: &[u8],
    headers_bytes_max: usize,
) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
    let window = buf.get(..headers_bytes_max).unwrap_or(buf);
    let mut slots = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() >= headers_bytes_max => {
            return Err(HandshakeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HandshakeError::Malformed);
    };
    if version < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if method != "GET" {
        return Err(HandshakeError::Method);
    }
    if !path.starts_with('/') {
        return Err(HandshakeError::Target);
    }
    let headers: SmallVec<[(&str, &[u8]); 24]> =
        req.headers.iter().map(|h| (h.name, h.value)).collect();
    if count(&headers, "host") != 1 {
        return Err(HandshakeError::Host);
    }
    let announces_body = header(&headers, "transfer-encoding").is_some()
        || headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .any(|(_, value)| value.trim_ascii() != b"0");
    if announces_body {
        return Err(HandshakeError::Body);
    }
    let head = window.get(..n).unwrap_or(window);
    let bare_lf = head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
    if bare_lf {
        return Err(HandshakeError::LineEnding);
    }
    Ok(Some((upgrade_request(path, headers)?, n)))
}

/// The headers of a request for `path` that must hold for a WebSocket upgrade (what [`parse`]
/// and [`Request::new`] both check), as a [`Request`].
fn upgrade_request<'b>(
    path: &'b str,
    headers: SmallVec<[(&'b str, &'b [u8]); 24]>,
) -> Result<Request<'b>, HandshakeError> {
    let has_token = |name: &str, token: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    for once in ["sec-websocket-key", "sec-websocket-version"] {
        if count(&headers, once) > 1 {
            return Err(HandshakeError::Repeated(once));
        }
    }
    if header(&headers, "sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::Version);
    }
    let key = header(&headers, "sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .filter(|k| is_key(k))
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or(HandshakeError::Key)?;
    Ok(Request { path, headers, key })
}

/// How many headers are called `name` (ASCII case-insensitive).
fn count(headers: &[(&str, &[u8])], name: &str) -> usize {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .count()
}

/// First header called `name` (ASCII case-insensitive).
fn header<'b>(headers: &[(&'b str, &'b [u8])], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
}

/// Whether `key` is base64 of 16 bytes: 22 alphabet characters then `==`.
fn is_key(key: &[u8]) -> bool {
    match key.split_last_chunk::<2>() {
        Some((data, b"==")) => {
            data.len() == 22
                && data
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        }
        _ => false,
    }
}

/// Whether `name` is an RFC 6455 subprotocol name: a token (RFC 9110 5.6.2), one or more
/// visible ASCII characters (U+0021 to U+007E) other than the separators
/// `( ) < > @ , ; : \ " / [ ] ? = { }`; so no space, and nothing a list or a header could
/// split.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

/// Whether `b` may be part of a token (RFC 9110 5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// The 101 Switching Protocols response, with the chosen subprotocol and the agreed extensions
/// (the `Sec-WebSocket-Extensions` value), if any.
///
/// `protocol` should be one the client offered ([`Request::protocols`]), `extensions` what was
/// agreed with it ([`Agreement::response`](super::deflate::Agreement::response)); both are
/// written as they are. An accepted upgrade has both: [`Accepted::response`](crate::Accepted::response).
///
/// ```
/// use shardcast::wire::handshake;
/// let resp = handshake::accept_response("dGhlIHNhbXBsZSBub25jZQ==", None, None);
/// let text = String::from_utf8(resp).unwrap();
/// assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
/// assert!(!text.contains("Sec-WebSocket-Extensions"));
/// ```
pub fn accept_response(key: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    let accept = accept_key(key);
    let mut out = String::with_capacity(160);
    out.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: ",
    );
    out.push_str(&accept);
    out.push_str("\r\n");
    if let Some(protocol) = protocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(protocol);
        out.push_str("\r\n");
    }
    if let Some(extensions) = extensions {
        out.push_str("Sec-WebSocket-Extensions: ");
        out.push_str(extensions);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The `Sec-WebSocket-Accept` value for `key` ([`Request::key`]), RFC 6455 section 4.2.2:
/// base64 of the SHA-1 of the key followed by the protocol's GUID. For an HTTP server that
/// builds its own 101 answer (as `shardcast::axum` does); [`accept_response`] includes it.
///
/// ```
/// use shardcast::wire::handshake;
/// let accept = handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ==");
/// assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes())
}

/// An error response (`status` + reason phrase, Connection: close, Content-Length, short text
/// body); for 426 includes `Sec-WebSocket-Version: 13` (and `Upgrade: websocket`), for 405
/// `Allow: GET`.
///
/// ```
/// use shardcast::wire::handshake;
/// let resp = handshake::reject_response(403, "origin not allowed");
/// assert!(resp.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
/// assert!(resp.ends_with(b"\r\n\r\norigin not allowed"));
/// ```
pub fn reject_response(status: u16, body: &str) -> Vec<u8> {
    let mut out = String::with_capacity(160 + body.len());
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        body.len(),
    );
    match status {
        405 => out.push_str("Allow: GET\r\n"),
        426 => out.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"),
        _ => {}
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// The reason phrase for `status` (RFC 9110), or a generic one.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        402..=499 => "Client Error",
        501..=599 => "Server Error",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::{Request, accept_key, is_token};
    use proptest::prelude::*;
    use std::borrow::Cow;

    /// An upgrade request with these `Sec-WebSocket-Protocol` header values (byte strings, so
    /// that a test can send what is not UTF-8).
    fn offering<'b>(values: &[&'b [u8]]) -> Request<'b> {
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Upgrade", b"websocket"),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Version", b"13"),
            ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        headers.extend(values.iter().map(|v| ("Sec-WebSocket-Protocol", *v)));
        Request::new("/", headers).expect("a valid upgrade")
    }

    #[test]
    fn offered_subprotocols_are_split_on_commas_and_trimmed_across_headers() {
        let request = offering(&[b" a,b\t,\tc ", b"d"]);
        assert_eq!(
            request.protocols().collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert!(request.offers_protocols());
    }

    #[test]
    fn empty_list_items_are_skipped_and_a_header_of_only_commas_offers_nothing() {
        let request = offering(&[b",a,, ,b,"]);
        assert_eq!(request.protocols().collect::<Vec<_>>(), ["a", "b"]);
        for nothing in [&b""[..], b" ", b",", b" , ,\t,"] {
            let request = offering(&[nothing]);
            assert_eq!(request.protocols().count(), 0, "{nothing:?}");
            assert!(!request.offers_protocols(), "{nothing:?}");
        }
        assert!(!offering(&[]).offers_protocols());
    }

    #[test]
    fn an_item_that_is_not_utf8_is_skipped_but_still_counts_as_offered() {
        let request = offering(&[b"\xff\xfe, v1"]);
        assert_eq!(request.protocols().collect::<Vec<_>>(), ["v1"]);
        let only = offering(&[b"\xff\xfe"]);
        assert_eq!(only.protocols().count(), 0);
        assert!(only.offers_protocols(), "the client offered something");
    }

    #[test]
    fn the_first_name_of_the_servers_list_that_the_client_offered_is_selected() {
        let request = offering(&[b"a, b", b"c"]);
        assert_eq!(request.select_protocol(&["b", "a"]), Some("b"));
        assert_eq!(request.select_protocol(&["c", "b"]), Some("c"));
        assert_eq!(request.select_protocol(&["d", "b"]), Some("b"));
        assert_eq!(request.select_protocol(&["c"]), Some("c"));
        assert_eq!(request.select_protocol(&["d"]), None);
        assert_eq!(request.select_protocol::<&str>(&[]), None);
        // Exact comparison: case matters, as it does to browsers.
        assert_eq!(request.select_protocol(&["A"]), None);
        // A non-token item is offered as sent, and only a name equal to it matches.
        let odd = offering(&[b"a b, \"q\""]);
        assert_eq!(odd.protocols().collect::<Vec<_>>(), ["a b", "\"q\""]);
        assert_eq!(odd.select_protocol(&["a", "b", "q"]), None);
    }

    #[test]
    fn tokens_are_visible_ascii_without_separators() {
        for good in [
            "v1.chat",
            "graphql-transport-ws",
            "mqtt",
            "a!#$%&'*+-.^_`|~9",
        ] {
            assert!(is_token(good), "{good:?}");
        }
        for bad in [
            "", " ", "a b", "a,b", "a;b", "a/b", "\"a\"", "a=b", "(a)", "[a]", "{a}", "a:b", "a@b",
            "a?b", "a\\b", "<a>", "a\tb", "é", "a\u{7f}",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    /// An upgrade request for `target`.
    fn to(target: &str) -> Request<'_> {
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        Request::new(target, headers).expect("a valid upgrade")
    }

    /// The decoded query pairs of an upgrade request for `target`.
    fn pairs(target: &str) -> Vec<(String, String)> {
        to(target)
            .query_pairs()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect()
    }

    /// `(name, value)` pairs as owned strings.
    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn the_query_is_what_follows_the_first_question_mark_up_to_a_fragment() {
        assert_eq!(to("/").query(), None);
        assert_eq!(to("/ws?").query(), Some(""));
        assert_eq!(to("/ws?a=1?b=2").query(), Some("a=1?b=2"));
        assert_eq!(to("/ws?a=1#frag").query(), Some("a=1"));
        assert_eq!(
            to("/ws#x?y").query(),
            None,
            "a `?` in the fragment starts no query"
        );
        assert_eq!(to("/a%20b?x").path(), "/a%20b?x", "the path stays raw");
    }

    #[test]
    fn empty_parts_are_skipped_and_a_part_without_equals_has_an_empty_value() {
        assert_eq!(pairs("/?a=1&&b"), owned(&[("a", "1"), ("b", "")]));
        assert_eq!(pairs("/?=x&&"), owned(&[("", "x")]));
        assert_eq!(pairs("/?a==b=c"), owned(&[("a", "=b=c")]));
        assert_eq!(pairs("/"), owned(&[]));
        assert_eq!(pairs("/?"), owned(&[]));
    }

    #[test]
    fn plus_is_a_space_and_percent_escapes_are_decoded_in_names_and_values() {
        assert_eq!(pairs("/?a+b=c+d"), owned(&[("a b", "c d")]));
        assert_eq!(pairs("/?%2B=%2b"), owned(&[("+", "+")]));
        assert_eq!(pairs("/?euro=%E2%82%AC"), owned(&[("euro", "\u{20ac}")]));
        assert_eq!(
            pairs("/?t=news%2Fsport%26more"),
            owned(&[("t", "news/sport&more")])
        );
    }

    #[test]
    fn invalid_escapes_stay_as_sent_and_invalid_utf8_becomes_the_replacement_character() {
        assert_eq!(
            pairs("/?a=%zz&b=%4&c=%"),
            owned(&[("a", "%zz"), ("b", "%4"), ("c", "%")])
        );
        assert_eq!(
            pairs("/?a=%FF&b=%E2%82"),
            owned(&[("a", "\u{fffd}"), ("b", "\u{fffd}")])
        );
    }

    #[test]
    fn query_value_is_the_first_value_of_that_decoded_name() {
        let request = to("/?t=a&t%61=b&x&t=c");
        assert_eq!(request.query_value("t").as_deref(), Some("a"));
        assert_eq!(request.query_value("ta").as_deref(), Some("b"));
        assert_eq!(request.query_value("x").as_deref(), Some(""));
        assert_eq!(request.query_value("y"), None);
        assert!(matches!(request.query_value("t"), Some(Cow::Borrowed("a"))));
    }

    #[test]
    fn the_accept_key_of_the_rfc_6455_example_is_the_one_the_rfc_gives() {
        // RFC 6455, section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    proptest! {
        #[test]
        fn any_encoded_name_and_value_decode_to_themselves(name in "\\PC*", value in "\\PC*") {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair(&name, &value)
                .finish();
            let target = format!("/?{query}");
            let decoded = pairs(&target);
            if name.is_empty() && value.is_empty() {
                // `=` alone is a part with an empty name and value, kept.
                prop_assert_eq!(decoded, owned(&[("", "")]));
            } else {
                prop_assert_eq!(decoded, vec![(name, value)]);
            }
        }

        #[test]
        fn the_accept_key_is_the_one_tungstenite_derives(key in "[ -~]{0,64}") {
            prop_assert_eq!(accept_key(&key), tungstenite::handshake::derive_accept_key(key.as_bytes()));
        }
    }
}
