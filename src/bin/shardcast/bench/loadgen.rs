//! The load generator's clients: raw TCP (with TLS for `wss`, see [`super::wss`]), our own
//! server-frame parser, large reads, no allocation per frame, one `mio` poll loop per thread.
//!
//! Every data frame the bench sends carries `u64le send time (ns since the bench epoch) | u32le
//! publisher | u32le sequence`, and with `--topics` then `u32le topic` (see [`super::topics`]);
//! a receiver checks that each (publisher, topic)'s sequence numbers arrive consecutively (a
//! gap, a duplicate, a reordering or a topic it did not subscribe to counts as lost) and records
//! the latency.

use super::super::tls::Trust;
use super::topics;
use super::wss::{ReadWrite, Session};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use shardcast::wire::{Opcode, frame};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Bytes of the stamp at the start of every bench payload (without topics).
pub(crate) const STAMP_BYTES: usize = 16;
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
}

/// Opens a TCP connection from `source` (if given), with TLS if `tls` says whom to trust, and
/// performs the WebSocket upgrade. Returns the link and the bytes that came after the 101.
pub(crate) fn connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
    source: Option<IpAddr>,
    timeout: Duration,
    recv_buffer: Option<usize>,
    tls: Option<&Trust>,
) -> io::Result<(Link, Vec<u8>)> {
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
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (tls, leftover) = match tls {
        None => (None, upgrade(&mut stream, &request)?),
        Some(trust) => {
            let session = Session::new(trust)?;
            let mut leftover = session.blocking(&mut stream, |tls| upgrade(tls, &request))?;
            session.take_plaintext(&mut leftover)?;
            (Some(session), leftover)
        }
    };
    stream.set_read_timeout(None)?;
    Ok((Link { stream, tls }, leftover))
}

/// Sends the upgrade `request` and reads the response; returns what came after it.
fn upgrade(stream: &mut dyn ReadWrite, request: &str) -> io::Result<Vec<u8>> {
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
    Ok(response.split_off(end))
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
}

/// What a receiver thread measured.
#[derive(Debug)]
pub(crate) struct Received {
    /// Latency of the measured deliveries, in microseconds: `[same node, other node]` (a
    /// delivery is same-node when its publisher is connected to the receiver's node).
    pub(crate) latency_us: [Histogram<u64>; 2],
}

/// Runs a receiver thread over `clients` until `shared.stop`; with `busy_poll`, it polls
/// without sleeping while frames keep coming.
/// Empty polls in a row after which a busy-polling receiver sleeps in `epoll_wait` again.
const BUSY_POLLS_MAX: u32 = 2000;

pub(crate) fn receive(
    clients: Vec<Connected>,
    publishers: usize,
    named_topics: bool,
    nodes: usize,
    shared: Arc<Shared>,
    busy_poll: bool,
) -> io::Result<Received> {
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
        ..Tally::default()
    };
    let now = shared.now_ns();
    for c in conns.iter_mut() {
        let partial = std::mem::take(&mut c.partial);
        ingest(c, &partial, now, &mut latency_us, &mut tally);
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
                    Ok(0) => close(c, &mut tally),
                    Ok(n) => {
                        let now = shared.now_ns();
                        match c.tls.take() {
                            None => ingest(c, &buf[..n], now, &mut latency_us, &mut tally),
                            Some(tls) => {
                                let open = tls.decrypt(&buf[..n], |plain| {
                                    ingest(c, plain, now, &mut latency_us, &mut tally)
                                });
                                c.tls = Some(tls);
                                if !matches!(open, Ok(true)) {
                                    close(c, &mut tally);
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
                    Err(_) => close(c, &mut tally),
                }
            }
        }
        tally.publish(&shared);
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

#[derive(Default)]
struct Tally {
    delivered: u64,
    lost: u64,
    closed: u64,
    /// Whether payloads carry their topic (`--topics`); else every one is of topic 0.
    named_topics: bool,
    /// Nodes the connections are spread over; publisher p is on node p mod `nodes`.
    nodes: usize,
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
        *self = Tally {
            named_topics: self.named_topics,
            nodes: self.nodes,
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
fn ingest(
    c: &mut Client,
    data: &[u8],
    now_ns: u64,
    hist: &mut [Histogram<u64>; 2],
    tally: &mut Tally,
) {
    if c.partial.is_empty() {
        let used = parse(c, data, now_ns, hist, tally);
        c.partial.extend_from_slice(&data[used..]);
    } else {
        let mut joined = std::mem::take(&mut c.partial);
        joined.extend_from_slice(data);
        let used = parse(c, &joined, now_ns, hist, tally);
        joined.drain(..used);
        c.partial = joined;
    }
}

/// Parses every complete frame of `data`; returns the bytes used.
fn parse(
    c: &mut Client,
    data: &[u8],
    now_ns: u64,
    hist: &mut [Histogram<u64>; 2],
    tally: &mut Tally,
) -> usize {
    let mut at = 0;
    loop {
        let rest = &data[at..];
        let Some(&b0) = rest.first() else {
            return at;
        };
        let Some((header, len)) = shardcast::wire::frame::lengths(rest) else {
            return at;
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let Some(payload) = rest.get(header..header.saturating_add(len)) else {
            return at;
        };
        at += header + len;
        let stamp_bytes = if tally.named_topics {
            topics::STAMP_BYTES
        } else {
            STAMP_BYTES
        };
        match b0 & 0x0f {
            0x1 | 0x2 if c.measured && payload.len() >= stamp_bytes => {
                let field = |r: std::ops::Range<usize>| -> u64 {
                    payload[r]
                        .iter()
                        .rev()
                        .fold(0u64, |v, &b| (v << 8) | u64::from(b))
                };
                let sent = field(0..8);
                let publisher = field(8..12) as usize;
                let seq = field(12..16) as u32;
                let topic = if tally.named_topics {
                    field(16..20) as u32
                } else {
                    0
                };
                // `None` for a topic the client did not subscribe to: lost, as a gap would be.
                let slot = c
                    .topics
                    .binary_search(&topic)
                    .ok()
                    .map(|i| publisher.saturating_mul(c.topics.len()).saturating_add(i));
                match slot.and_then(|slot| c.next_seq.get_mut(slot)) {
                    Some(next) if *next == seq => *next = seq.wrapping_add(1),
                    Some(next) => {
                        tally.lost += 1;
                        *next = seq.wrapping_add(1);
                    }
                    None => tally.lost += 1,
                }
                tally.delivered += 1;
                let cross = publisher % tally.nodes != c.node;
                hist[usize::from(cross)]
                    .saturating_record((now_ns.saturating_sub(sent) / 1000).max(1));
            }
            0x8 => close(c, tally),
            _ => {}
        }
    }
}
