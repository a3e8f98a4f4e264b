//! The load generator's clients: raw TCP (with TLS for `wss`, see [`super::wss`]), our own
//! server-frame parser, large reads, no allocation per frame, one `mio` poll loop per thread.
//!
//! Every data frame the bench sends carries a stamp: send time (ns since the bench epoch),
//! publisher, sequence and, with `--topics`, topic, in binary or at the start of a JSON
//! document (see [`super::payload`]); a receiver checks that each (publisher, topic)'s sequence
//! numbers arrive consecutively (a gap, a duplicate, a reordering, a topic it did not subscribe
//! to or a stamp it cannot read counts as lost) and records the latency.
//!
//! With `--deflate` every connection offers permessage-deflate as Chrome does
//! ([`DEFLATE_OFFER`]), and a client whose server accepted inflates the compressed (RSV1)
//! frames it receives before it checks them, with its receiver thread's [`Inflating`]: one
//! inflater per thread, which the server's `server_no_context_takeover` allows (a server that
//! keeps its context is refused at the upgrade). A client whose server declined must get plain
//! frames only: a compressed one counts as lost. Each thread also counts the bytes its measured
//! clients read off their sockets, frames' headers included (TLS records with `wss`).

use super::super::tls::Trust;
use super::payload::{self, Format};
use super::topics;
use super::wss::{ReadWrite, Session};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use shardcast::wire::deflate::{self, Inflater};
use shardcast::wire::{Opcode, frame};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Bytes of the stamp at the start of every binary bench payload (without topics).
pub(crate) const STAMP_BYTES: usize = payload::BINARY_STAMP_BYTES;
/// The `Sec-WebSocket-Extensions` offer of `--deflate`: Chrome's.
pub(crate) const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// The largest message a client inflates (the largest `--payload-json`, and then some).
const INFLATED_MAX: usize = 32 << 20;
/// Bytes of distinct messages (compressed and inflated) a receiver thread keeps inflated.
const INFLATED_KEPT_BYTES: usize = 64 << 20;
/// Size of each receiver thread's read buffer.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// How often each client pings the server, so the heartbeat never evicts it.
const PING_EVERY: Duration = Duration::from_secs(5);
/// The mask of every frame the bench sends (servers must not care which).
pub(crate) const MASK: [u8; 4] = [0x5a, 0xc3, 0x17, 0x8e];

/// What receiver threads and the publisher share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Frames received by the measured clients (not the publishers).
    pub(crate) delivered: CachePadded<AtomicU64>,
    /// Sequence anomalies seen.
    pub(crate) lost: AtomicU64,
    /// Connections the server closed or reset.
    pub(crate) closed: AtomicU64,
    /// Bytes the measured clients read off their sockets (frames' headers included).
    pub(crate) wire_bytes: AtomicU64,
    /// Deliveries that came compressed (RSV1).
    pub(crate) compressed: AtomicU64,
    /// The publisher is woken when `delivered` reaches this.
    pub(crate) target: AtomicU64,
    /// Receivers stop when set.
    pub(crate) stop: AtomicBool,
    /// The publisher thread, to wake.
    pub(crate) publisher: OnceLock<Thread>,
    /// Time zero for the stamps.
    pub(crate) epoch: Instant,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            delivered: CachePadded::new(AtomicU64::new(0)),
            lost: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            compressed: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            stop: AtomicBool::new(false),
            publisher: OnceLock::new(),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch.
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// An upgraded connection: its socket, and its TLS session for `wss`.
#[derive(Debug)]
pub(crate) struct Link {
    /// The socket (blocking until a receiver thread adopts a clone of it).
    pub(crate) stream: std::net::TcpStream,
    /// The TLS session over `stream`, for `wss`.
    pub(crate) tls: Option<Session>,
}

impl Link {
    /// Sends `bytes` whole (encrypted for `wss`).
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &self.tls {
            None => self.stream.write_all(bytes),
            Some(tls) => tls.send(&mut self.stream, bytes),
        }
    }
}

/// A connected client before it joins a receiver thread.
#[derive(Debug)]
pub(crate) struct Connected {
    /// The socket and its TLS session.
    pub(crate) link: Link,
    /// Bytes (plaintext) after the 101 response: the start of the first frames.
    pub(crate) leftover: Vec<u8>,
    /// Whether its deliveries are measured (false for publishers, whose echoes are drained).
    pub(crate) measured: bool,
    /// The topics it subscribed to, sorted (`[0]` without `--topics`: everyone has topic 0).
    pub(crate) topics: Vec<u32>,
    /// The node it is connected to (`--nodes`; 0 otherwise).
    pub(crate) node: usize,
    /// Whether permessage-deflate was negotiated: then the server may send it compressed
    /// frames.
    pub(crate) deflate: bool,
}

/// A connection just upgraded.
#[derive(Debug)]
pub(crate) struct Upgraded {
    /// The socket and its TLS session.
    pub(crate) link: Link,
    /// Bytes (plaintext) after the 101 response: the start of the first frames.
    pub(crate) leftover: Vec<u8>,
    /// Whether the server accepted the permessage-deflate offer.
    pub(crate) deflate: bool,
}

/// Opens a TCP connection from `source` (if given), with TLS if `tls` says whom to trust, and
/// performs the WebSocket upgrade, offering permessage-deflate if `offer_deflate`. Returns the
/// link, the bytes that came after the 101 and whether deflate was agreed.
///
/// # Errors
///
/// When the connection or the upgrade fails, and when the server's answer to the offer is one
/// a client must refuse (RFC 7692 section 5), or keeps its compression context (the bench
/// inflates each message on its own).
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
    source: Option<IpAddr>,
    timeout: Duration,
    recv_buffer: Option<usize>,
    tls: Option<&Trust>,
    offer_deflate: bool,
) -> io::Result<Upgraded> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if let Some(bytes) = recv_buffer {
        // Before connect, so the window the server sees is small from the start.
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&addr.into(), timeout)?;
    socket.set_tcp_nodelay(true)?;
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(timeout))?;
    let offer = if offer_deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    let handshake = |s: &mut dyn ReadWrite| upgrade(s, &request, offer_deflate);
    let (tls, (leftover, deflate)) = match tls {
        None => (None, handshake(&mut stream)?),
        Some(trust) => {
            let session = Session::new(trust)?;
            let mut after = session.blocking(&mut stream, handshake)?;
            session.take_plaintext(&mut after.0)?;
            (Some(session), after)
        }
    };
    stream.set_read_timeout(None)?;
    Ok(Upgraded {
        link: Link { stream, tls },
        leftover,
        deflate,
    })
}

/// Sends the upgrade `request` and reads the response; returns what came after it, and
/// whether the server accepted permessage-deflate (which it may only if `offered`).
fn upgrade(
    stream: &mut dyn ReadWrite,
    request: &str,
    offered: bool,
) -> io::Result<(Vec<u8>, bool)> {
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut response = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during upgrade",
            ));
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if response.len() > 16 << 10 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "upgrade response too long",
            ));
        }
    };
    let status = response.split(|&b| b == b'\r').next().unwrap_or_default();
    if !status.windows(5).any(|w| w == b" 101 ") && !status.ends_with(b" 101") {
        let line = String::from_utf8_lossy(status).into_owned();
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("upgrade refused: {line}"),
        ));
    }
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&response[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(invalid("upgrade response cut short".into())),
        Err(e) => return Err(invalid(format!("malformed upgrade response: {e}"))),
    }
    let answers: Vec<&[u8]> = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .map(|h| h.value)
        .collect();
    let deflate = deflate_answer(&answers, offered).map_err(invalid)?;
    Ok((response.split_off(end), deflate))
}

/// Whether the `Sec-WebSocket-Extensions` values of a 101 (`answers`) accept the
/// permessage-deflate offer (if `offered`); `Err` for an answer a client must refuse: an
/// extension not offered, more than one, or an invalid permessage-deflate answer (RFC 7692
/// section 5: unknown, repeated or malformed parameters; [`deflate::negotiate`] says which are
/// valid); also for one without `server_no_context_takeover`, whose frames depend on earlier
/// ones, which the bench's inflater, one per thread, cannot follow.
fn deflate_answer(answers: &[&[u8]], offered: bool) -> Result<bool, String> {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let values: Vec<&[u8]> = answers
        .iter()
        .copied()
        .filter(|v| !v.iter().all(u8::is_ascii_whitespace))
        .collect();
    let value = match values[..] {
        [] => return Ok(false),
        [value] if offered && !value.contains(&b',') => value,
        _ if !offered => {
            return Err(format!(
                "the server answered extensions that were not offered: {:?}",
                values.iter().map(|v| text(v)).collect::<Vec<_>>()
            ));
        }
        _ => {
            return Err(format!(
                "the server answered more than the one extension offered: {:?}",
                values.iter().map(|v| text(v)).collect::<Vec<_>>()
            ));
        }
    };
    if deflate::negotiate([value]).is_none() {
        return Err(format!(
            "invalid answer to the permessage-deflate offer: {:?}",
            text(value)
        ));
    }
    let no_context_takeover = text(value)
        .split(';')
        .skip(1)
        .any(|p| p.trim().eq_ignore_ascii_case("server_no_context_takeover"));
    if !no_context_takeover {
        return Err(format!(
            "the server keeps its compression context ({:?}, without \
             server_no_context_takeover): the bench inflates each message on its own; \
             measure it without --deflate",
            text(value)
        ));
    }
    Ok(true)
}

/// The source address of the `i`-th connection: spread over 127.0.0.1-127.0.0.32 when the
/// target is loopback, so that tens of thousands of connections do not run out of ports.
pub(crate) fn source_for(i: usize, target: SocketAddr) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 32) as u8)))
        }
        _ => None,
    }
}

/// One client inside a receiver thread.
struct Client {
    stream: TcpStream,
    /// Its TLS session, for `wss`.
    tls: Option<Session>,
    /// Bytes of an unfinished frame from the previous read.
    partial: Vec<u8>,
    /// The topics it subscribed to, sorted: at most `--subscriptions` of them.
    topics: Vec<u32>,
    /// Next expected sequence number, per (publisher, topic): at `publisher x topics.len() +
    /// the topic's index in `topics``.
    next_seq: Vec<u32>,
    measured: bool,
    open: bool,
    /// The node it is connected to.
    node: usize,
    /// Whether it negotiated permessage-deflate.
    deflate: bool,
}

/// How a receiver thread reads its clients' frames.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reading {
    /// Publishers of the run: each client keeps a next sequence number per publisher (and
    /// topic).
    pub(crate) publishers: usize,
    /// Whether payloads carry their topic (`--topics`); else every one is of topic 0.
    pub(crate) named_topics: bool,
    /// Nodes the connections are spread over; publisher p is on node p mod `nodes`.
    pub(crate) nodes: usize,
    /// The payloads' format.
    pub(crate) format: Format,
    /// Distinct messages the publishers may have in flight at once (publishers x window, or
    /// more in open loop): how many inflated messages are worth keeping.
    pub(crate) in_flight: usize,
    /// Bytes of a payload (its largest size, for JSON).
    pub(crate) payload: usize,
    /// Poll without sleeping while frames keep coming.
    pub(crate) busy_poll: bool,
}

/// A receiver thread's inflater, and the messages it inflated last.
///
/// A server that answered `server_no_context_takeover` compresses each message on its own, so
/// the same compressed bytes always inflate to the same message: each distinct compressed
/// message is inflated once per thread and kept (up to `capacity` of them, the oldest
/// replaced first), and a client that receives the very same bytes (compared in full) reads
/// the message kept. A broadcast to N clients costs one inflate per thread, not N: the load
/// generator measures the server, not zlib. Every delivery is still checked (stamp, sequence)
/// on the inflated bytes.
#[derive(Debug)]
pub(crate) struct Inflating {
    inflater: Inflater,
    /// `(compressed, inflated)` of the messages kept, in a ring.
    kept: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the next message goes in `kept`.
    next: usize,
    /// How many messages `kept` may hold.
    capacity: usize,
    /// Index of `kept` by a hash of the compressed bytes.
    index: HashMap<u64, usize>,
    /// Messages inflated (not found in `kept`).
    pub(crate) inflated: u64,
}

impl Inflating {
    /// Keeps the last `in_flight` x 2 distinct messages (at least 16), within
    /// [`INFLATED_KEPT_BYTES`] for messages of `payload` bytes.
    fn new(in_flight: usize, payload: usize) -> Inflating {
        let by_bytes = INFLATED_KEPT_BYTES / payload.max(1).saturating_mul(2);
        Inflating {
            inflater: Inflater::new(),
            kept: Vec::new(),
            next: 0,
            capacity: in_flight
                .saturating_mul(2)
                .clamp(16, 4096)
                .min(by_bytes.max(1)),
            index: HashMap::new(),
            inflated: 0,
        }
    }

    /// The message `compressed` (a compressed frame's payload) inflates to; `None` if it does
    /// not inflate (or past [`INFLATED_MAX`]).
    fn inflate(&mut self, compressed: &[u8]) -> Option<&[u8]> {
        let key = fingerprint(compressed);
        if let Some(&i) = self.index.get(&key)
            && self.kept[i].0 == compressed
        {
            return Some(&self.kept[i].1);
        }
        let plain = self.inflater.inflate(compressed, INFLATED_MAX).ok()?;
        self.inflated += 1;
        let i = self.next;
        self.next = (i + 1) % self.capacity;
        if i == self.kept.len() {
            self.kept.push((compressed.to_vec(), plain.to_vec()));
        } else {
            let old = fingerprint(&self.kept[i].0);
            if self.index.get(&old) == Some(&i) {
                self.index.remove(&old);
            }
            let (c, p) = &mut self.kept[i];
            c.clear();
            c.extend_from_slice(compressed);
            p.clear();
            p.extend_from_slice(plain);
        }
        self.index.insert(key, i);
        Some(&self.kept[i].1)
    }
}

/// A hash of `bytes` (FNV-1a over 8-byte words), to find a kept message by.
fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x0100_0000_01b3);
        h ^= h >> 29;
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What a receiver thread measured.
#[derive(Debug)]
pub(crate) struct Received {
    /// Latency of the measured deliveries, in microseconds: `[same node, other node]` (a
    /// delivery is same-node when its publisher is connected to the receiver's node).
    pub(crate) latency_us: [Histogram<u64>; 2],
}

/// Empty polls in a row after which a busy-polling receiver sleeps in `epoll_wait` again.
const BUSY_POLLS_MAX: u32 = 2000;

/// Runs a receiver thread over `clients` until `shared.stop`, reading as `reading` says; with
/// `busy_poll`, it polls without sleeping while frames keep coming.
pub(crate) fn receive(
    clients: Vec<Connected>,
    reading: Reading,
    shared: Arc<Shared>,
) -> io::Result<Received> {
    let Reading {
        publishers,
        named_topics,
        nodes,
        format,
        busy_poll,
        ..
    } = reading;
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(clients.len());
    for (i, c) in clients.into_iter().enumerate() {
        c.link.stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(c.link.stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        conns.push(Client {
            stream,
            tls: c.link.tls,
            partial: c.leftover,
            next_seq: vec![0; publishers * c.topics.len()],
            topics: c.topics,
            measured: c.measured,
            open: true,
            node: c.node,
            deflate: c.deflate,
        });
    }
    let histogram = || Histogram::<u64>::new_with_bounds(1, 120_000_000, 3);
    let mut latency_us = [
        histogram().map_err(io::Error::other)?,
        histogram().map_err(io::Error::other)?,
    ];
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut ping = Vec::new();
    frame::put_masked(&mut ping, Opcode::Ping, b"", MASK);
    let pings_started = Instant::now();
    let mut pinged = 0u64;
    // Frames that were already in the upgrade response.
    let mut tally = Tally {
        named_topics,
        nodes: nodes.max(1),
        format,
        ..Tally::default()
    };
    let mut inflating = Inflating::new(reading.in_flight, reading.payload);
    let mut at = Reader {
        hist: &mut latency_us,
        tally: &mut tally,
        inflating: &mut inflating,
    };
    let now = shared.now_ns();
    for c in conns.iter_mut() {
        let partial = std::mem::take(&mut c.partial);
        if c.measured {
            at.tally.wire_bytes += partial.len() as u64;
        }
        ingest(c, &partial, now, &mut at);
    }
    let mut idle_polls = 0u32;
    while !shared.stop.load(Relaxed) {
        // Busy polling (while frames keep coming) spares the sender a wake-up per send, at the
        // price of this thread's core.
        let spin = busy_poll && idle_polls < BUSY_POLLS_MAX;
        let timeout = if spin {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        poll.poll(&mut events, Some(timeout))?;
        idle_polls = if events.is_empty() {
            idle_polls.saturating_add(1)
        } else {
            0
        };
        for event in events.iter() {
            let Some(c) = conns.get_mut(event.token().0) else {
                continue;
            };
            while c.open {
                match c.stream.read(&mut buf) {
                    Ok(0) => close(c, at.tally),
                    Ok(n) => {
                        let now = shared.now_ns();
                        if c.measured {
                            at.tally.wire_bytes += n as u64;
                        }
                        match c.tls.take() {
                            None => ingest(c, &buf[..n], now, &mut at),
                            Some(tls) => {
                                let open =
                                    tls.decrypt(&buf[..n], |plain| ingest(c, plain, now, &mut at));
                                c.tls = Some(tls);
                                if !matches!(open, Ok(true)) {
                                    close(c, at.tally);
                                }
                            }
                        }
                        if n < buf.len() {
                            // A short read drained the socket: the next byte to arrive raises
                            // a new edge, so a read that would only say EAGAIN is saved.
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => close(c, at.tally),
                }
            }
        }
        at.tally.publish(&shared);
        // Each client pings once per period, the clients spread evenly over it: pings from
        // every client at once (and their pongs) would make one round slow and show up in the
        // latency tail as if the server had stalled.
        let due = (pings_started.elapsed().as_secs_f64() / PING_EVERY.as_secs_f64()
            * conns.len() as f64) as u64;
        while pinged < due {
            let i = (pinged % conns.len() as u64) as usize;
            if let Some(c) = conns.get_mut(i).filter(|c| c.open) {
                // A ping the socket does not take now is not worth waiting for.
                let _ = match &c.tls {
                    None => c.stream.write(&ping).map(drop),
                    Some(tls) => tls.try_send(&mut c.stream, &ping),
                };
            }
            pinged += 1;
        }
    }
    Ok(Received { latency_us })
}

/// What a receiver thread counted since it last added it to [`Shared`], and how it reads.
#[derive(Debug)]
struct Tally {
    delivered: u64,
    lost: u64,
    closed: u64,
    /// Bytes the measured clients read off their sockets.
    wire_bytes: u64,
    /// Deliveries that came compressed.
    compressed: u64,
    /// Whether payloads carry their topic (`--topics`); else every one is of topic 0.
    named_topics: bool,
    /// Nodes the connections are spread over; publisher p is on node p mod `nodes`.
    nodes: usize,
    /// The payloads' format.
    format: Format,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            delivered: 0,
            lost: 0,
            closed: 0,
            wire_bytes: 0,
            compressed: 0,
            named_topics: false,
            nodes: 1,
            format: Format::Binary,
        }
    }
}

/// What a receiver thread reads frames with: where it records, counts and inflates.
struct Reader<'a> {
    /// Latency of the measured deliveries: same node, other node.
    hist: &'a mut [Histogram<u64>; 2],
    tally: &'a mut Tally,
    inflating: &'a mut Inflating,
}

impl Tally {
    fn publish(&mut self, shared: &Shared) {
        if self.delivered > 0 {
            let total = shared.delivered.fetch_add(self.delivered, Relaxed) + self.delivered;
            if total >= shared.target.load(Relaxed)
                && let Some(t) = shared.publisher.get()
            {
                t.unpark();
            }
        }
        if self.lost > 0 {
            shared.lost.fetch_add(self.lost, Relaxed);
        }
        if self.closed > 0 {
            shared.closed.fetch_add(self.closed, Relaxed);
        }
        if self.wire_bytes > 0 {
            shared.wire_bytes.fetch_add(self.wire_bytes, Relaxed);
        }
        if self.compressed > 0 {
            shared.compressed.fetch_add(self.compressed, Relaxed);
        }
        *self = Tally {
            named_topics: self.named_topics,
            nodes: self.nodes,
            format: self.format,
            ..Tally::default()
        };
    }
}

/// Counts `c` closed, once (a close frame and the end of its TLS session both close it).
fn close(c: &mut Client, tally: &mut Tally) {
    if c.open {
        c.open = false;
        tally.closed += 1;
    }
}

/// Parses server frames from `data` (after any partial frame kept from the last read).
fn ingest(c: &mut Client, data: &[u8], now_ns: u64, at: &mut Reader<'_>) {
    if c.partial.is_empty() {
        let used = parse(c, data, now_ns, at);
        c.partial.extend_from_slice(&data[used..]);
    } else {
        let mut joined = std::mem::take(&mut c.partial);
        joined.extend_from_slice(data);
        let used = parse(c, &joined, now_ns, at);
        joined.drain(..used);
        c.partial = joined;
    }
}

/// Parses every complete frame of `data`; returns the bytes used.
fn parse(c: &mut Client, data: &[u8], now_ns: u64, at: &mut Reader<'_>) -> usize {
    let mut used = 0;
    loop {
        let rest = &data[used..];
        let Some(&b0) = rest.first() else {
            return used;
        };
        let Some((header, len)) = shardcast::wire::frame::lengths(rest) else {
            return used;
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let Some(payload) = rest.get(header..header.saturating_add(len)) else {
            return used;
        };
        used += header + len;
        match b0 & 0x0f {
            0x1 | 0x2 if c.measured => deliver(c, b0 & frame::RSV1 != 0, payload, now_ns, at),
            0x8 => close(c, at.tally),
            _ => {}
        }
    }
}

/// Checks and records the delivery of a data frame's `payload` (`compressed` if RSV1) to a
/// measured client.
fn deliver(c: &mut Client, compressed: bool, payload: &[u8], now_ns: u64, at: &mut Reader<'_>) {
    let tally = &mut *at.tally;
    let message = match (compressed, c.deflate) {
        (false, _) => Some(payload),
        (true, true) => {
            tally.compressed += 1;
            at.inflating.inflate(payload)
        }
        // RSV1 without the extension: a protocol error, and nothing to read.
        (true, false) => None,
    };
    let stamp = match (message, tally.format) {
        (None, _) => None,
        (Some(m), Format::Json) => payload::read_json(m),
        (Some(m), Format::Binary) => {
            let stamp_bytes = if tally.named_topics {
                topics::STAMP_BYTES
            } else {
                STAMP_BYTES
            };
            if m.len() < stamp_bytes && !compressed {
                // Not one of the bench's frames.
                return;
            }
            payload::read_binary(m, tally.named_topics)
        }
    };
    tally.delivered += 1;
    let Some(stamp) = stamp else {
        // Unreadable: lost, as a gap would be.
        tally.lost += 1;
        return;
    };
    let publisher = stamp.publisher as usize;
    // `None` for a topic the client did not subscribe to: lost, as a gap would be.
    let slot = c
        .topics
        .binary_search(&stamp.topic)
        .ok()
        .map(|i| publisher.saturating_mul(c.topics.len()).saturating_add(i));
    match slot.and_then(|slot| c.next_seq.get_mut(slot)) {
        Some(next) if *next == stamp.seq => *next = stamp.seq.wrapping_add(1),
        Some(next) => {
            tally.lost += 1;
            *next = stamp.seq.wrapping_add(1);
        }
        None => tally.lost += 1,
    }
    let cross = publisher % tally.nodes != c.node;
    at.hist[usize::from(cross)]
        .saturating_record((now_ns.saturating_sub(stamp.sent) / 1000).max(1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast::wire::deflate::Deflater;

    fn answer(values: &[&str], offered: bool) -> Result<bool, String> {
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        deflate_answer(&values, offered)
    }

    #[test]
    fn the_answer_to_the_deflate_offer_is_accepted_only_when_a_client_may_take_it() {
        // Declined: no header (or an empty one).
        assert_eq!(answer(&[], true), Ok(false));
        assert_eq!(answer(&[""], true), Ok(false));
        assert_eq!(answer(&[], false), Ok(false));
        // shardcast's and Bun's answers.
        for ok in [
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            "permessage-deflate;server_no_context_takeover; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12",
        ] {
            assert_eq!(answer(&[ok], true), Ok(true), "{ok}");
        }
        for refused in [
            // Not offered.
            ("permessage-deflate; server_no_context_takeover", false),
            // Its context kept: the frames depend on each other.
            ("permessage-deflate", true),
            ("permessage-deflate; client_no_context_takeover", true),
            // Invalid parameters, another extension, more than one.
            (
                "permessage-deflate; server_no_context_takeover; mystery",
                true,
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                true,
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=16",
                true,
            ),
            ("x-webkit-deflate-frame; server_no_context_takeover", true),
            (
                "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover",
                true,
            ),
        ] {
            assert!(answer(&[refused.0], refused.1).is_err(), "{refused:?}");
        }
        let two = [
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ];
        assert!(answer(&two, true).is_err());
    }

    #[test]
    fn each_distinct_compressed_message_is_inflated_once_and_checked_in_full() {
        let mut deflater = Deflater::new(6, 15);
        let message = |i: u32| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "ab".repeat(50));
        let compressed: Vec<Vec<u8>> = (0..40)
            .map(|i| deflater.compress(message(i).as_bytes()).to_vec())
            .collect();
        let mut inflating = Inflating::new(8, 1024);
        assert_eq!(inflating.capacity, 16);
        // Three clients receive messages 0-7, as a window of 8: inflated once each.
        for _client in 0..3 {
            for (i, c) in compressed.iter().enumerate().take(8) {
                let plain = inflating.inflate(c).expect("inflates");
                assert_eq!(plain, message(i as u32).as_bytes());
            }
        }
        assert_eq!(inflating.inflated, 8);
        // More than it keeps: the oldest are replaced, every message still reads right.
        for (i, c) in compressed.iter().enumerate() {
            assert_eq!(inflating.inflate(c), Some(message(i as u32).as_bytes()));
        }
        assert_eq!(inflating.kept.len(), 16);
        assert_eq!(
            inflating.inflate(&compressed[0]),
            Some(message(0).as_bytes())
        );
        // A corrupt message is refused, and so is a kept one changed in a byte.
        assert_eq!(inflating.inflate(&[0xff, 0xff]), None);
        let mut changed = compressed[39].clone();
        let last = changed.len() - 1;
        changed[last] ^= 0x55;
        assert_ne!(inflating.inflate(&changed), Some(message(39).as_bytes()));
    }
}
