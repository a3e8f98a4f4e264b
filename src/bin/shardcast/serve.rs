//! `shardcast serve`: the relay server that benchmarks and conformance suites drive.

use crate::naive;
use crate::observe;
use crate::topics::TopicRelay;
use shardcast::Incoming;
use shardcast::{
    Audience, BuildError, Compression, Context, Driver, Engine, Handler, ListenError, Nats,
    Payload, SlowConsumerPolicy,
};
use std::error::Error;
use std::io::BufRead;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Options of `shardcast serve`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on: IP:PORT, or HOST:PORT (the first address HOST resolves to).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub(crate) addr: String,
    /// Number of shards (threads), 1 to 1024. Default: the number of cores.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub(crate) shards: Option<usize>,
    /// Do not send a client's messages back to itself.
    #[arg(long, conflicts_with = "echo")]
    pub(crate) exclude_sender: bool,
    /// Send each message back to its sender only (an echo server, for conformance suites).
    #[arg(long)]
    pub(crate) echo: bool,
    /// Be a pub/sub relay instead: `/?sub=T` subscribes at upgrade (URL-encoded), text
    /// messages `sub T` and `unsub T` subscribe and unsubscribe, and `pub T BODY` publishes
    /// BODY to T's subscribers with the message's opcode; anything else is closed with 1008.
    #[arg(long, conflicts_with = "echo")]
    pub(crate) topics: bool,
    /// Largest inbound message and frame, in bytes (at least 125).
    #[arg(long, default_value_t = 64 << 10)]
    pub(crate) max_message_size: usize,
    /// Bytes each client's outbound queue may hold (at least 1 KiB). Default: 1 MiB, or twice
    /// the largest message if that is more.
    #[arg(long)]
    pub(crate) client_queue_bytes: Option<usize>,
    /// Bind each shard thread to a core.
    #[arg(long)]
    pub(crate) pin_cores: bool,
    /// What to do with a client whose queue is full.
    #[arg(long, value_enum, default_value_t = Policy::Disconnect)]
    pub(crate) slow_consumer: Policy,
    /// How shards move their connections' bytes: `io-uring` (an event loop per shard for
    /// plain TCP connections, its writes in io_uring submissions), `event-loop` (the same with
    /// a `write` per client) or `tasks` (a task per connection). Default: `SHARDCAST_DRIVER` if
    /// set, else `io-uring` on Linux (`event-loop` where io_uring is refused).
    #[arg(long, value_enum)]
    pub(crate) driver: Option<DriverArg>,
    /// Run the naive baseline (tokio-tungstenite, a task per client, a tokio broadcast
    /// channel) instead of the shardcast engine, for side-by-side benchmarks.
    #[arg(long, conflicts_with = "echo")]
    pub(crate) naive: bool,
    /// Share broadcasts and topics with the other nodes on this NATS server
    /// (`nats://HOST:PORT`). Without `--nats-optional`, exits if it cannot be reached.
    #[arg(long, value_name = "URL", conflicts_with = "naive")]
    pub(crate) nats: Option<String>,
    /// Subject prefix on the NATS server: nodes with the same prefix share broadcasts.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "shardcast",
        requires = "nats"
    )]
    pub(crate) nats_prefix: String,
    /// Start even if the NATS server cannot be reached, local-only, and keep trying.
    #[arg(long, requires = "nats")]
    pub(crate) nats_optional: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT, port not 0).
    #[arg(long, value_name = "ADDR", conflicts_with = "naive")]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Serve wss: the TLS certificate chain, PEM (leaf first). Needs --tls-key.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        conflicts_with = "naive"
    )]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM (PKCS#8, PKCS#1 or SEC1). Needs --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Subprotocols to speak, comma-separated, preferred first (`--protocols v2.chat,v1.chat`):
    /// a client gets the first of the list that it offered; one that offers only others is
    /// refused with 400 (a browser would fail the connection anyway). Default: none.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        conflicts_with = "naive"
    )]
    pub(crate) protocols: Vec<String>,
    /// Decline permessage-deflate: every client gets plain frames (by default a client's
    /// offer, which every browser makes, is accepted, and each broadcast compressed once).
    #[arg(long)]
    pub(crate) no_deflate: bool,
    /// permessage-deflate: messages shorter than this go out uncompressed.
    #[arg(long, value_name = "BYTES", default_value_t = shardcast::Compression::default().min_bytes,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) deflate_min_bytes: usize,
    /// permessage-deflate: zlib level, 1 (fastest) to 9 (smallest).
    #[arg(long, value_name = "LEVEL", default_value_t = shardcast::Compression::default().level,
          value_parser = clap::value_parser!(u32).range(1..=9))]
    pub(crate) deflate_level: u32,
    /// Answer the WebSocket upgrade with axum (`shardcast::axum::Upgrade` on the route `/`)
    /// instead of the engine's own listener: the path an application behind axum takes, for
    /// side-by-side benchmarks (`bench --server axum`).
    #[arg(long, conflicts_with = "naive")]
    pub(crate) axum: bool,
    /// Accept upgrades only from this origin (the `Origin` header as browsers send it, e.g.
    /// `https://app.example.com`): repeat the flag, or separate origins with commas. Others, and
    /// requests without `Origin`, are refused with 403. Default: any origin (a page of any site
    /// may connect; `serve` warns at start when it listens beyond loopback without this flag).
    #[arg(
        long = "allowed-origin",
        value_name = "ORIGIN",
        value_delimiter = ',',
        conflicts_with = "naive"
    )]
    pub(crate) allowed_origins: Vec<String>,
    /// Ping a client that has been silent for this long (`10s`, `500ms`), or `off` (no server
    /// pings: clients keep themselves alive). Must be shorter than --heartbeat-timeout.
    /// Default: 10s, or half --heartbeat-timeout if that is shorter.
    #[arg(long, value_name = "DURATION", value_parser = ping_interval, conflicts_with = "naive")]
    pub(crate) ping_interval: Option<PingInterval>,
    /// Close a client silent for longer than this (`30s`, `1500ms`) with 4002. Default: 20s.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::duration,
          conflicts_with = "naive")]
    pub(crate) heartbeat_timeout: Option<Duration>,
    /// Most connections (upgraded or upgrading) at once: past it, a new connection is closed
    /// at once, before its upgrade (with --axum: answered 503). Default: 1048576.
    #[arg(long, value_name = "N", conflicts_with = "naive",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) max_connections: Option<usize>,
    /// Log format on standard error: `text` (one readable line per event) or `json` (one JSON
    /// object per line, for log collectors). `RUST_LOG` filters either.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Answer `stats` lines on standard input with one JSON line of counters (used by `bench`
    /// and tests/browser.rs): a flat object of integers, `deflate_*` for permessage-deflate.
    #[arg(long, hide = true)]
    pub(crate) control_stdin: bool,
}

/// `--ping-interval`: a duration, or `off` (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PingInterval(Option<Duration>);

/// Parses `--ping-interval`: `off`, or a duration with its unit.
fn ping_interval(text: &str) -> Result<PingInterval, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(PingInterval(None));
    }
    crate::units::duration(text)
        .map(|d| PingInterval(Some(d)))
        .map_err(|e| format!("{e} (or `off`)"))
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags refused after clap parsed them (a combination, or a value the engine refuses):
/// `main` exits with status 2, as clap does with the flags it refuses itself.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Usage {}

/// `SlowConsumerPolicy`, as a command-line value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Policy {
    /// Close the client with 4008.
    Disconnect,
    /// Drop the frame that does not fit.
    DropNewest,
    /// Drop the oldest queued frames.
    DropOldest,
}

impl From<Policy> for SlowConsumerPolicy {
    fn from(p: Policy) -> SlowConsumerPolicy {
        match p {
            Policy::Disconnect => SlowConsumerPolicy::Disconnect,
            Policy::DropNewest => SlowConsumerPolicy::DropNewest,
            Policy::DropOldest => SlowConsumerPolicy::DropOldest,
        }
    }
}

/// `Driver`, as a command-line value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DriverArg {
    /// One event loop per shard serves its plain TCP connections.
    EventLoop,
    /// The event loop, each pass's writes submitted to the kernel as one io_uring batch
    /// (falls back to `event-loop` where io_uring cannot be set up).
    IoUring,
    /// A task per connection.
    Tasks,
}

impl From<DriverArg> for Driver {
    fn from(d: DriverArg) -> Driver {
        match d {
            DriverArg::EventLoop => Driver::EventLoop,
            DriverArg::IoUring => Driver::IoUring,
            DriverArg::Tasks => Driver::Tasks,
        }
    }
}

/// Relays each message, opcode kept, to everyone (or back to its sender).
#[derive(Debug)]
struct Relay {
    /// Leave the sender out of the audience.
    exclude_sender: bool,
    /// Send back to the sender only.
    echo: bool,
}

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let payload = match message {
            Incoming::Text(text) => Payload::text(text),
            Incoming::Binary(bytes) => Payload::binary(bytes),
        };
        let sender = ctx.id();
        if self.echo {
            ctx.send(sender, payload);
        } else if self.exclude_sender {
            ctx.broadcast(payload, Audience::ALL.except(sender));
        } else {
            ctx.broadcast(payload, Audience::ALL);
        }
    }
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn Error>> {
    observe::install_logging(args.log_format);
    // Many connections need many descriptors; take what the hard limit allows.
    crate::raise_descriptor_limit();
    let addr = resolve(&args.addr)?;
    if args.naive {
        return run_naive(args, addr);
    }
    // Before anything starts: a certificate that cannot be used is a mistake in the flags.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let queue = args
        .client_queue_bytes
        .unwrap_or((1 << 20).max(args.max_message_size.saturating_mul(2)));
    let builder = if args.topics {
        Engine::builder().handler(TopicRelay {
            exclude_sender: args.exclude_sender,
        })
    } else {
        Engine::builder().handler(Relay {
            exclude_sender: args.exclude_sender,
            echo: args.echo,
        })
    };
    let mut builder = builder
        .max_message_size(args.max_message_size)
        .client_queue_bytes_max(queue)
        .slow_consumer(args.slow_consumer.into())
        .pin_cores(args.pin_cores)
        .protocols(args.protocols.iter().cloned())
        .compression(if args.no_deflate {
            Compression::OFF
        } else {
            Compression::default()
                .min_bytes(args.deflate_min_bytes)
                .level(args.deflate_level)
        });
    if let Some(shards) = args.shards {
        builder = builder.shards(shards);
    }
    builder = builder.allowed_origins(allowed_origins(&args.allowed_origins)?);
    check_heartbeat(&args)?;
    if let Some(timeout) = args.heartbeat_timeout {
        builder = builder.heartbeat_timeout(timeout);
    }
    if let Some(PingInterval(interval)) = args.ping_interval {
        builder = builder.ping_interval(interval);
    }
    if let Some(max) = args.max_connections {
        builder = builder.clients_max(max);
    }
    if let Some(driver) = args.driver.map(Driver::from).or(driver_from_env()?) {
        builder = builder.driver(driver);
    }
    if let Some(url) = &args.nats {
        builder = builder
            .bridge(Nats::new(url).prefix(&args.nats_prefix))
            .bridge_optional(args.nats_optional);
    }
    let engine = builder.build().map_err(|e| match (e, &args.nats) {
        (BuildError::Bridge(e), Some(url)) => {
            format!("NATS at {url}: {e} (start it, or pass --nats-optional to start without it)")
                .into()
        }
        (e, _) => flag_error(e),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // With TLS, each connection's handshake runs on the shard that accepted it, within the
        // handshake deadline, before the upgrade.
        let addr = if args.axum {
            serve_axum(addr, &engine).await?
        } else {
            let listening = match tls {
                Some(config) => engine.listen_wrapped(addr, crate::tls::acceptor(config)).await,
                None => engine.listen(addr).await,
            };
            listening.map_err(|e| match e {
                ListenError::Io(e) => listen_error(addr, e),
                other => other.into(),
            })?
        };
        let stop = StopSignal::install()?;
        if let Some(metrics_addr) = args.metrics_addr {
            observe::serve_metrics(metrics_addr, &engine)?;
        }
        println!("shardcast serving on {scheme}://{addr}/ with {} shards", engine.shard_count());
        tracing::info!("serving {scheme}://{addr}/ with {} shards", engine.shard_count());
        if args.allowed_origins.is_empty() && !addr.ip().is_loopback() {
            tracing::warn!(
                "listening on {addr} and accepting upgrades from any origin: a page of any web \
                 site can connect from its visitors' browsers (cross-site WebSocket hijacking); \
                 pass --allowed-origin to list the sites that may"
            );
        }
        if let Some(url) = &args.nats {
            let up = if engine.stats().bridge.connected { "connected" } else { "not connected yet" };
            tracing::info!("sharing through NATS at {url}, prefix {} ({up})", args.nats_prefix);
        }
        if args.control_stdin {
            let engine = engine.clone();
            answer_stats(move || {
                let stats = engine.stats();
                let (t, b) = (stats.total, stats.bridge);
                let d = b.dropped;
                let z = t.deflate;
                format!(
                    "{{\"clients\":{},\"deliveries\":{},\"write_syscalls\":{},\"io_uring_submissions\":{},\"bytes_written\":{},\"frames_dropped\":{},\"evicted\":{},\"protocol_errors\":{},\"handshakes_failed\":{},\"deflate_clients\":{},\"deflate_deliveries\":{},\"deflate_bytes_saved\":{},\"deflate_inflated\":{},\"deflate_too_big\":{},\"deflate_corrupt\":{},\"bridge_connected\":{},\"bridge_subscriptions\":{},\"bridge_published\":{},\"bridge_messages\":{},\"bridge_received\":{},\"bridge_dropped\":{}}}",
                    t.clients,
                    t.deliveries,
                    t.write_syscalls,
                    t.io_uring_submissions,
                    t.bytes_written,
                    t.frames_dropped,
                    t.evicted.slow_consumer + t.evicted.write_deadline + t.evicted.heartbeat
                        + t.evicted.auth_deadline + t.evicted.protocol,
                    t.evicted.protocol,
                    t.handshakes_failed,
                    z.clients,
                    z.deliveries,
                    z.bytes_saved,
                    z.inflated,
                    z.too_big,
                    z.corrupt,
                    u8::from(b.connected),
                    b.subscriptions,
                    b.published,
                    b.messages,
                    b.received,
                    d.outbound_full + d.disconnected + d.publish_failed + d.stopped
                        + d.inbound_full + d.malformed + d.slow_consumer,
                )
            });
        }
        stop.wait().await?;
        eprintln!("shardcast: shutting down");
        let clients = engine.stats().total.clients;
        engine.shutdown(Duration::from_secs(5)).await;
        observe::log_summary(clients, &engine.stats());
        Ok(())
    })
}

fn run_naive(args: Args, addr: SocketAddr) -> Result<(), Box<dyn Error>> {
    let threads = args
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| listen_error(addr, e))?;
        let addr = listener.local_addr()?;
        let stop = StopSignal::install()?;
        println!("shardcast (naive baseline) serving on ws://{addr}/ with {threads} threads");
        let counters = Arc::new(naive::Counters::default());
        if args.control_stdin {
            let counters = counters.clone();
            answer_stats(move || {
                format!(
                    "{{\"clients\":{},\"deliveries\":{},\"lagged\":{}}}",
                    counters.clients.load(Relaxed),
                    counters.deliveries.load(Relaxed),
                    counters.lagged.load(Relaxed),
                )
            });
        }
        let server = async {
            if args.topics {
                naive::serve_topics(
                    listener,
                    args.max_message_size,
                    args.exclude_sender,
                    counters,
                )
                .await
            } else {
                naive::serve(
                    listener,
                    args.max_message_size,
                    args.exclude_sender,
                    counters,
                )
                .await
            }
        };
        tokio::select! {
            r = server => r?,
            r = stop.wait() => r?,
        }
        Ok(())
    })
}

/// The address `--addr` names: `addr` itself, or the first address its host name resolves to.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve --addr {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve --addr {addr}: no address"))
}

/// The driver the environment variable `SHARDCAST_DRIVER` names, for a `serve` without
/// `--driver` (so that a comparison, or CI, can run the command on each driver unchanged).
/// `None` if it is not set.
fn driver_from_env() -> Result<Option<Driver>, Box<dyn Error>> {
    const NAMES: &str = "SHARDCAST_DRIVER must be `event-loop`, `io-uring` or `tasks`";
    match std::env::var("SHARDCAST_DRIVER") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(name) => match name.as_str() {
            "event-loop" => Ok(Some(Driver::EventLoop)),
            "io-uring" => Ok(Some(Driver::IoUring)),
            "tasks" => Ok(Some(Driver::Tasks)),
            _ => Err(format!("invalid SHARDCAST_DRIVER {name:?}: {NAMES}").into()),
        },
        Err(std::env::VarError::NotUnicode(_)) => Err(NAMES.into()),
    }
}

/// `--allowed-origin`: `None` (any origin) when not given; each origin trimmed, and an empty one
/// refused.
fn allowed_origins(flags: &[String]) -> Result<Option<Vec<String>>, Usage> {
    if flags.is_empty() {
        return Ok(None);
    }
    let origins: Vec<String> = flags.iter().map(|o| o.trim().to_owned()).collect();
    if let Some(bad) = origins
        .iter()
        .find(|o| o.is_empty() || o.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(Usage(format!(
            "invalid --allowed-origin {bad:?}: give an origin as browsers send it, like \
             https://app.example.com (scheme, host and any port, no path)"
        )));
    }
    Ok(Some(origins))
}

/// `--ping-interval` must be shorter than the heartbeat timeout (the given one, or the
/// engine's default), or no silent client would be pinged before it is closed.
fn check_heartbeat(args: &Args) -> Result<(), Usage> {
    let Some(PingInterval(Some(ping))) = args.ping_interval else {
        return Ok(());
    };
    let (timeout, named) = match args.heartbeat_timeout {
        Some(t) => (t, "--heartbeat-timeout"),
        None => (
            shardcast::Config::default().heartbeat_timeout,
            "the default --heartbeat-timeout",
        ),
    };
    if ping >= timeout {
        return Err(Usage(format!(
            "invalid --ping-interval {ping:?}: must be shorter than {named} ({timeout:?}), \
             so that a silent client is pinged before it is closed (or pass --ping-interval off)"
        )));
    }
    Ok(())
}

/// A refused setting named by the flag that set it, not by the engine's field (a [`Usage`]
/// error when a flag is to blame).
fn flag_error(e: BuildError) -> Box<dyn Error> {
    if let BuildError::InvalidProtocol(name) = &e {
        return Usage(format!(
            "invalid --protocols: {name:?} is not a subprotocol name (visible ASCII, no space, \
             none of ()<>@,;:\\\"/[]?={{}})"
        ))
        .into();
    }
    if let BuildError::Invalid { field, reason } = &e {
        let flag = match *field {
            "shards" => Some("--shards"),
            // `--max-message-size` sets both.
            "frame_bytes_max" | "message_bytes_max" => Some("--max-message-size"),
            "client_queue_bytes_max" => Some("--client-queue-bytes"),
            "ping_interval" => Some("--ping-interval"),
            "heartbeat_timeout" => Some("--heartbeat-timeout"),
            "clients_max" => Some("--max-connections"),
            "allowed_origins" => Some("--allowed-origin"),
            _ => None,
        };
        if let Some(flag) = flag {
            return Usage(format!("invalid {flag}: {reason}")).into();
        }
    }
    e.into()
}

/// Serves `engine` behind axum on `addr`: the upgrade on `/` is answered by axum and the
/// connection handed to the engine. Returns the bound address; the server runs on this
/// (current-thread) runtime until the process ends.
async fn serve_axum(addr: SocketAddr, engine: &Engine) -> Result<SocketAddr, Box<dyn Error>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| listen_error(addr, e))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|upgrade: shardcast::axum::Upgrade| async { upgrade }),
        )
        .with_state(engine.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("axum stopped: {e}");
        }
    });
    Ok(addr)
}

/// Why `addr` cannot be listened on, naming it.
fn listen_error(addr: SocketAddr, e: std::io::Error) -> Box<dyn Error> {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => ListenError::AddrInUse(addr).into(),
        _ => format!("cannot listen on {addr}: {e}").into(),
    }
}

/// Answers each `stats` line on standard input with `stats JSON` on standard output, from a
/// thread of its own; ends at EOF.
fn answer_stats(stats: impl Fn() -> String + Send + 'static) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if line.trim() == "stats" {
                println!("stats {}", stats());
            }
        }
    });
}

/// Ctrl-C or SIGTERM, with its handlers installed before the server says it is ready, so that a
/// signal sent as soon as the address is printed already finds them.
struct StopSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> std::io::Result<StopSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignal {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    /// Waits for either signal.
    async fn wait(mut self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok(()),
                _ = self.term.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await
    }
}
