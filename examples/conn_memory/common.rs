//! The body of `conn_memory` and `conn_memory_mimalloc`: memory per connection of an engine
//! with 2 shards serving real loopback connections.
//!
//! The clients run in a child process (this same binary, `client` mode), as with an external
//! load generator: the server process holds only the server side, and each process gets its
//! own open-file limit. The server side measures its live heap (when the allocator counts it)
//! and its resident memory (`VmRSS`, as `shardcast bench` samples it) before the clients
//! connect, once they are all registered and idle, and under load: `rounds` rounds of 16
//! broadcasts of 32 bytes (window 16, as `bench`), each round waiting until every frame is
//! queued and written to the kernel; the clients read them (`read`) or never do (`stall`).
//! It then exits without closing anything, so that a heap profiler's end-of-run snapshot is the
//! state just measured (after `linger_s` seconds more, if given: a sweep gives back the queue
//! capacity of idle clients).
//!
//! The engine runs on its default driver; `SHARDCAST_DRIVER` (`event-loop`, `io-uring` or
//! `tasks`) picks another: `SHARDCAST_DRIVER=tasks` measures a task per connection instead.

use shardcast::{Audience, Driver, Engine, Payload};
use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Broadcasts per round.
const WINDOW: usize = 16;
/// Bytes per broadcast payload.
const PAYLOAD: usize = 32;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// What the process holds at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    /// Live heap bytes and blocks, if the allocator counts them.
    heap: Option<(i64, i64)>,
    /// Resident bytes.
    rss: i64,
}

fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn snapshot(live: Option<fn() -> (i64, i64)>) -> Snapshot {
    Snapshot {
        heap: live.map(|f| f()),
        rss: rss(),
    }
}

fn report(label: &str, base: Snapshot, now: Snapshot, clients: usize) {
    let n = clients as f64;
    let rss = (now.rss - base.rss) as f64 / n;
    match (base.heap, now.heap) {
        (Some((b0, k0)), Some((b1, k1))) => {
            let heap = (b1 - b0) as f64 / n;
            println!(
                "{label:<34} heap {heap:>7.1} B/conn in {:>5.2} blocks/conn | RSS {rss:>7.1} B/conn \
                 | RSS - heap {:>6.1} B/conn | RSS {:.1} MiB",
                (k1 - k0) as f64 / n,
                rss - heap,
                now.rss as f64 / (1 << 20) as f64
            );
        }
        _ => println!(
            "{label:<34} RSS {rss:>7.1} B/conn | RSS {:.1} MiB",
            now.rss as f64 / (1 << 20) as f64
        ),
    }
}

fn raise_nofile() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// `[clients] [rounds] [read|stall] [linger_s]`, or `client ADDR N MODE` for the child.
pub(crate) fn main(
    allocator: &str,
    live: Option<fn() -> (i64, i64)>,
) -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        return client(&args[1..]);
    }
    let arg = |i: usize, default: u64| {
        args.get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let clients = arg(0, 10_000).max(1) as usize;
    let rounds = arg(1, 0) as usize;
    let mode = args.get(2).cloned().unwrap_or_else(|| "read".into());
    let linger = arg(3, 0);
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(server(allocator, live, clients, rounds, mode, linger))
}

/// The driver `SHARDCAST_DRIVER` names, if it is set.
fn driver_from_env() -> Result<Option<Driver>, Box<dyn Error>> {
    let Some(name) = std::env::var_os("SHARDCAST_DRIVER") else {
        return Ok(None);
    };
    match name.to_str() {
        Some("event-loop") => Ok(Some(Driver::EventLoop)),
        Some("io-uring") => Ok(Some(Driver::IoUring)),
        Some("tasks") => Ok(Some(Driver::Tasks)),
        _ => Err(format!(
            "SHARDCAST_DRIVER must be `event-loop`, `io-uring` or `tasks`, not {name:?}"
        )
        .into()),
    }
}

/// The server side: the engine, the measurements.
async fn server(
    allocator: &str,
    live: Option<fn() -> (i64, i64)>,
    clients: usize,
    rounds: usize,
    mode: String,
    linger: u64,
) -> Result<(), Box<dyn Error>> {
    let mut builder = Engine::builder().shards(2);
    if let Some(driver) = driver_from_env()? {
        builder = builder.driver(driver);
    }
    let engine = builder.build()?;
    {
        let addr = engine.listen("127.0.0.1:0").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = snapshot(live);
        println!(
            "allocator {allocator}, 2 shards, driver {:?}, {clients} clients, {rounds} rounds of \
             {WINDOW} x {PAYLOAD} B, clients {mode}",
            engine.config().driver
        );
        let mut child = Command::new(std::env::current_exe()?)
            .args(["client", &addr.to_string(), &clients.to_string(), &mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let started = Instant::now();
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("client process: {line:?}").into());
        }
        while engine.client_count() < clients {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("connected in {:.1} s", started.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = snapshot(live);
        report("idle", before, idle, clients);

        if rounds > 0 {
            let payload = Payload::binary([b'x'; PAYLOAD]);
            let first = engine.stats().total.deliveries;
            let (mut peak_heap, mut peak_rss) = (idle, idle);
            let started = Instant::now();
            for r in 0..rounds {
                for _ in 0..WINDOW {
                    engine.broadcast(payload.clone(), Audience::ALL).await?;
                }
                let want = first + ((r + 1) * WINDOW * clients) as u64;
                loop {
                    let s = snapshot(live);
                    if s.heap.map(|h| h.0) > peak_heap.heap.map(|h| h.0) {
                        peak_heap = s;
                    }
                    if s.rss > peak_rss.rss {
                        peak_rss = s;
                    }
                    let t = engine.stats().total;
                    if t.deliveries >= want && t.queued_bytes == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let loaded = snapshot(live);
            println!(
                "{rounds} rounds in {elapsed:.1} s ({:.0} deliveries/s)",
                (rounds * WINDOW * clients) as f64 / elapsed
            );
            report("end of the last round", before, loaded, clients);
            if live.is_some() {
                report("heap peak during the rounds", before, peak_heap, clients);
            }
            report("RSS peak during the rounds", before, peak_rss, clients);
        }
        if linger > 0 {
            tokio::time::sleep(Duration::from_secs(linger)).await;
            report(
                &format!("after {linger} s more"),
                before,
                snapshot(live),
                clients,
            );
        }
        // Everything stays open: a profiler's end snapshot is what was measured. The child
        // exits when its stdin closes.
        std::io::stdout().flush()?;
        std::process::exit(0)
    }
}

/// The child: connects `n` clients, says `ready`, then reads them all (`read`) or never
/// (`stall`) until its stdin closes.
fn client(args: &[String]) -> Result<(), Box<dyn Error>> {
    let addr: SocketAddr = args.first().ok_or("address")?.parse()?;
    let n: usize = args.get(1).ok_or("clients")?.parse()?;
    let reading = args.get(2).map(String::as_str) != Some("stall");
    raise_nofile();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.write_all(REQUEST)?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 512];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            let got = s.read(&mut chunk)?;
            if got == 0 {
                return Err("closed during the upgrade".into());
            }
            response.extend_from_slice(&chunk[..got]);
        }
        if !response.starts_with(b"HTTP/1.1 101") {
            return Err(String::from_utf8_lossy(&response).into_owned().into());
        }
        streams.push(s);
    }
    println!("ready");
    std::io::stdout().flush()?;
    let _reader = if reading {
        Some(std::thread::spawn(move || drain(streams)))
    } else {
        std::mem::forget(streams);
        None
    };
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    Ok(())
}

/// Reads every stream as data arrives, discarding it.
fn drain(streams: Vec<TcpStream>) -> std::io::Result<()> {
    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(1024);
    let mut socks = Vec::with_capacity(streams.len());
    for (i, s) in streams.into_iter().enumerate() {
        s.set_nonblocking(true)?;
        let mut s = mio::net::TcpStream::from_std(s);
        poll.registry()
            .register(&mut s, mio::Token(i), mio::Interest::READABLE)?;
        socks.push(s);
    }
    let mut buf = vec![0u8; 1 << 16];
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            let Some(s) = socks.get_mut(event.token().0) else {
                continue;
            };
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
    }
}
