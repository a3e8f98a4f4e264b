//! One measurement against a target: connect, start the receivers, load while watching, stop
//! the receivers, stop everything, and turn what was counted into a [`Report`].
//!
//! # The measured window
//!
//! Every per-delivery (and per-publication) figure is a difference of cumulative counts read
//! just before the first publication and just after the last delivery (or the end of the drain
//! wait): CPU time of the server, of the load generator and of the machine, the machine's TCP
//! segments, the data segments the measured clients received (just outside the CPU readings,
//! so that reading them costs the load generator nothing measured), and the server's own
//! counters. Connecting and tearing down are outside it.

use super::args::Args;
use super::connect::{self, Connections};
use super::loadgen::{self, Connected, Shared};
use super::plan::Shape;
use super::publish::{self, Length, Load, Published};
use super::report::{self, Report};
use super::server::{self, Counters, Kind, Target};
use super::tcp_info::{self, Receivers};
use super::topics::Layout;
use super::watch::{Watch, Watched};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A receiver thread, ending with what it received.
type Receiver = JoinHandle<std::io::Result<loadgen::Received>>;

/// Connects, loads, measures and tears down one configuration against `target`.
///
/// # Errors
///
/// When a connection fails, a receiver thread fails or panics, or a publisher cannot send.
pub(crate) fn measure(
    args: &Args,
    shape: Shape,
    mut target: Target,
    interactive: bool,
) -> Result<Report, Box<dyn std::error::Error>> {
    let layout = args.layout()?;
    let pids = target.pids();
    let rss_before = server::settled_rss(&pids, Duration::from_secs(2));
    let mut connections = connect::connect(args, shape, layout, &mut target, interactive)?;
    let before = Before {
        label: target.label.clone(),
        kind: target.kind,
        nodes: target.nodes.len(),
        with_broker: target.broker.is_some(),
        loopback: target.nodes.iter().all(|(addr, _)| addr.ip().is_loopback()),
        healthy: connections.healthy,
        stalled: connections.stalled.len() as u64,
        rss_before,
        rss_idle: server::settled_rss(&pids, Duration::from_secs(3)),
        deflate_negotiated: connections.deflate_negotiated,
    };

    let shared = Arc::new(Shared::new());
    // The receiver threads take their groups; the rest of the connections stay here until
    // `stop`.
    let groups = std::mem::take(&mut connections.groups);
    let receivers = start_receivers(args, shape, layout, target.nodes.len(), groups, &shared)?;
    let window = load(
        args,
        shape,
        layout,
        &mut target,
        &mut connections,
        &shared,
        interactive,
    )?;
    let latency = stop_receivers(receivers, &shared)?;
    stop(target, connections);
    Ok(figures(
        args, shape, layout, before, window, latency, &shared,
    ))
}

/// Starts a receiver thread per group of connections.
fn start_receivers(
    args: &Args,
    shape: Shape,
    layout: Option<Layout>,
    nodes: usize,
    groups: Vec<Vec<Connected>>,
    shared: &Arc<Shared>,
) -> Result<Vec<Receiver>, Box<dyn std::error::Error>> {
    // The receivers wake this thread, the publishers', when a round is delivered.
    let _ = shared.publisher.set(std::thread::current());
    let reading = loadgen::Reading {
        publishers: args.publishers as usize,
        named_topics: layout.is_some(),
        nodes,
        format: args.format(),
        in_flight: (args.publishers * shape.window) as usize,
        payload: shape.payload as usize,
        busy_poll: args.busy_poll,
    };
    let mut receivers = Vec::new();
    for group in groups {
        let shared = shared.clone();
        receivers.push(
            std::thread::Builder::new()
                .name("bench-recv".into())
                .spawn(move || loadgen::receive(group, reading, shared))?,
        );
    }
    Ok(receivers)
}

/// What the load did and used, over the measured window.
#[derive(Debug)]
struct Window {
    /// What the publishers did.
    published: Published,
    /// Wall time of the window.
    wall: Duration,
    /// What was used over the window.
    used: Usage,
    /// The server's counters just before the window; `None` without counters.
    counters_before: Option<Counters>,
    /// The server's counters just after it.
    counters_after: Option<Counters>,
    /// Data segments the measured clients' sockets received over it (`tcpi_data_segs_in`):
    /// the server's to its subscribers; `None` where the kernel cannot say.
    data_segments_in: Option<u64>,
    /// The servers' resident memory at its end.
    rss_loaded: Option<u64>,
    /// What the watch saw during it.
    watched: Watched,
}

impl Window {
    /// How much the server's counter `key` grew over the window; `None` if a server has no
    /// such counter (or no counters at all).
    fn delta(&self, key: &str) -> Option<u64> {
        self.counters_before
            .as_ref()
            .zip(self.counters_after.as_ref())
            .and_then(|(b, a)| a.get(key)?.checked_sub(b.get(key)?))
    }
}

/// Cumulative counts of what a run uses, read at both ends of the window; `None` where
/// unavailable (off Linux; the server's, for an external target).
#[derive(Clone, Copy, Debug)]
struct Usage {
    /// CPU time of the server's processes (and their broker's), in ns.
    server_cpu_ns: Option<u64>,
    /// CPU time of this process, the load generator, in ns.
    loadgen_cpu_ns: Option<u64>,
    /// Busy time of the whole machine, in ns.
    machine_cpu_ns: Option<u64>,
    /// TCP segments the machine sent.
    tcp_segments: Option<u64>,
}

impl Usage {
    /// The counts now; `cpu_pids` are the server side's processes.
    fn read(cpu_pids: &[u32]) -> Usage {
        Usage {
            server_cpu_ns: server::cpu_ns_of(cpu_pids),
            loadgen_cpu_ns: server::cpu_ns(std::process::id()),
            machine_cpu_ns: server::machine_busy_ns(),
            tcp_segments: server::tcp_out_segments(),
        }
    }

    /// What was used from `before` until `self`.
    fn since(self, before: Usage) -> Usage {
        let delta = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a.saturating_sub(b));
        Usage {
            server_cpu_ns: delta(self.server_cpu_ns, before.server_cpu_ns),
            loadgen_cpu_ns: delta(self.loadgen_cpu_ns, before.loadgen_cpu_ns),
            machine_cpu_ns: delta(self.machine_cpu_ns, before.machine_cpu_ns),
            tcp_segments: delta(self.tcp_segments, before.tcp_segments),
        }
    }
}

/// The load: the publishers send as `args` and `shape` say over `connections`, while the
/// watch looks on; the window's counts are read just before and just after, and what the
/// measured clients received around them.
fn load(
    args: &Args,
    shape: Shape,
    layout: Option<Layout>,
    target: &mut Target,
    connections: &mut Connections,
    shared: &Shared,
    interactive: bool,
) -> Result<Window, Box<dyn std::error::Error>> {
    let pids = target.pids();
    let cpu_pids = target.cpu_pids();
    let length = match args.rounds {
        Some(r) => Length::Rounds(r.max(1)),
        None => Length::Time(Duration::from_secs_f64(args.duration)),
    };
    let load = Load {
        fanout: &connections.fanout,
        rotation: layout.unwrap_or(Layout::ALL).rotation(args.publishers),
        named_topics: layout.is_some(),
        window: shape.window as usize,
        payload: shape.payload as usize,
        format: args.format(),
        length,
        rate: args.rate,
    };
    let segments_before = connections
        .receivers
        .as_ref()
        .and_then(Receivers::data_segments_in);
    let counters_before = server::counters(&mut target.servers);
    let used_before = Usage::read(&cpu_pids);
    let wall = Instant::now();
    let mut watch = Watch::start(
        interactive,
        &pids,
        connections.stalled.len() as u64,
        counters_before.as_ref(),
        args.policy(),
    );
    let servers = &mut target.servers;
    let published = publish::run(&mut connections.publishers, load, shared, |f| {
        watch.tick(f, servers)
    })?;
    let watched = watch.finish();
    let wall = wall.elapsed();
    let used = Usage::read(&cpu_pids).since(used_before);
    let counters_after = server::counters(&mut target.servers);
    let segments_after = connections
        .receivers
        .as_ref()
        .and_then(Receivers::data_segments_in);
    let rss_loaded = server::rss_of(&pids);
    Ok(Window {
        published,
        wall,
        used,
        counters_before,
        counters_after,
        data_segments_in: tcp_info::growth(segments_before, segments_after),
        rss_loaded,
        watched,
    })
}

/// The latency of the measured deliveries, in µs.
#[derive(Debug)]
struct Latencies {
    /// Every delivery.
    all: Histogram<u64>,
    /// Deliveries by the publisher's own node.
    same_node: Histogram<u64>,
    /// Deliveries that crossed the broker to another node.
    cross_node: Histogram<u64>,
}

/// Stops the receivers and merges what they measured.
fn stop_receivers(
    receivers: Vec<Receiver>,
    shared: &Shared,
) -> Result<Latencies, Box<dyn std::error::Error>> {
    shared.stop.store(true, Relaxed);
    let histogram = || Histogram::<u64>::new_with_bounds(1, 120_000_000, 3);
    let (mut all, mut same_node, mut cross_node) = (histogram()?, histogram()?, histogram()?);
    for r in receivers {
        let received = r.join().map_err(|_| "a receiver thread panicked")??;
        let [s, c] = &received.latency_us;
        same_node.add(s)?;
        cross_node.add(c)?;
        all.add(s)?;
        all.add(c)?;
    }
    Ok(Latencies {
        all,
        same_node,
        cross_node,
    })
}

/// Hangs up, in the order the bench always has: the publishers, then the target (its servers
/// killed, its broker), then the stalled clients.
fn stop(target: Target, connections: Connections) {
    let Connections {
        publishers,
        stalled,
        ..
    } = connections;
    drop(publishers);
    drop(target);
    drop(stalled);
}

/// What the run had in place before the load: the target, the connections, the memory.
#[derive(Debug)]
struct Before {
    /// The target's label for reports.
    label: String,
    /// The server the bench started; `None` for an external target.
    kind: Option<Kind>,
    /// Nodes the connections were spread over.
    nodes: usize,
    /// Whether the nodes share a broker (`--nodes`).
    with_broker: bool,
    /// Whether every node is on loopback: then both ends of every connection are this
    /// machine's, and its TCP counters see all of their segments.
    loopback: bool,
    /// The measured clients.
    healthy: u64,
    /// The clients that never read.
    stalled: u64,
    /// The servers' resident memory before any client connected.
    rss_before: Option<u64>,
    /// Their resident memory with every client connected, before the load.
    rss_idle: Option<u64>,
    /// The measured clients whose server accepted permessage-deflate.
    deflate_negotiated: u64,
}

/// The report of a run: what was in place `before` it, what its `window` counted, and the
/// `latency` and counts of the receivers (`shared`).
fn figures(
    args: &Args,
    shape: Shape,
    layout: Option<Layout>,
    before: Before,
    window: Window,
    latency: Latencies,
    shared: &Shared,
) -> Report {
    let delivered = shared.delivered.load(Relaxed);
    let syscalls = window
        .delta("write_syscalls")
        .zip(window.delta("deliveries"))
        .and_then(|(writes, deliveries)| {
            (deliveries > 0).then(|| writes as f64 / deliveries as f64)
        });
    let submissions = window
        .delta("io_uring_submissions")
        .zip(window.delta("deliveries"))
        .and_then(|(submissions, deliveries)| {
            (submissions > 0 && deliveries > 0).then(|| submissions as f64 / deliveries as f64)
        });
    let evicted = window.delta("evicted");
    let frames_dropped = window.delta("frames_dropped");
    let broker_messages = window.delta("bridge_messages");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let own_cpu = window.used.loadgen_cpu_ns;
    Report {
        server: before.label,
        clients: before.healthy,
        publishers: args.publishers,
        window: shape.window,
        payload_bytes: shape.payload,
        payload_format: args.format(),
        duration_s: window.published.elapsed.as_secs_f64(),
        deliveries: delivered,
        publishes: window.published.frames,
        lost: shared.lost.load(Relaxed) + window.published.missing,
        closed: shared.closed.load(Relaxed),
        latency_us: latency.all,
        server_cpu_ns: window.used.server_cpu_ns,
        loadgen_cpu_ns: own_cpu,
        machine_cpu_ns: window.used.machine_cpu_ns,
        // Of a server elsewhere, the machine's counters would see one end only.
        tcp_segments: window.used.tcp_segments.filter(|_| before.loopback),
        server_data_segments: window.data_segments_in,
        loadgen_cpu_share: own_cpu
            .map(|c| c as f64 / (window.wall.as_nanos() as f64 * cores as f64)),
        rss_before: before.rss_before,
        rss_idle: before.rss_idle,
        rss_loaded: window.rss_loaded,
        wire_bytes: Some(shared.wire_bytes.load(Relaxed)),
        deflate: args.deflate.then(|| report::Deflate {
            negotiated: before.deflate_negotiated,
            compressed_deliveries: shared.compressed.load(Relaxed),
        }),
        write_syscalls_per_delivery: syscalls,
        io_uring_submissions_per_delivery: submissions,
        rss_samples: window.watched.rss_samples,
        topics: layout.map(|l| report::Topics {
            topics: l.topics(),
            subscriptions: l.subscriptions(),
            expected_deliveries: window.published.expected,
        }),
        cluster: before.with_broker.then(|| report::Cluster {
            nodes: before.nodes,
            same_node_us: latency.same_node,
            cross_node_us: latency.cross_node,
            broker_messages_per_publish: broker_messages
                .map(|m| m as f64 / window.published.frames.max(1) as f64),
        }),
        stall: (before.stalled > 0).then(|| report::Stall {
            stalled: before.stalled,
            evicted,
            frames_dropped,
            resolved_after_s: window.watched.resolved_after.map(|d| d.as_secs_f64()),
            // No byte cap of ours for the baselines: Bun drops past its backpressure limit,
            // `ws` buffers without bound.
            queue_bytes_max: before
                .kind
                .is_none_or(Kind::is_shardcast)
                .then(|| args.client_queue_bytes.unwrap_or(1 << 20) as u64),
        }),
    }
}
