//! `shardcast bench`: fan-out throughput and latency against the embedded server, the naive
//! baseline, the external baselines (uWebSockets through Bun, Node `ws`), or any relay server.
//!
//! The load generator must not be the bottleneck: its clients are raw TCP sockets read with
//! large buffers by `mio` poll loops and parsed without allocation (see [`loadgen`]), and it
//! reports its own CPU time next to the server's.
//!
//! With `--topics K --subscriptions S` it speaks the topics protocol of `shardcast serve
//! --topics` to every server: clients subscribe at upgrade, publishers send `pub T BODY`
//! round-robin over the topics, and the closed loop waits for each publication's subscribers;
//! the layout that says how many there are is in [`topics`].

mod args;
mod baselines;
mod broker;
mod loadgen;
mod plan;
mod publish;
mod report;
mod server;
mod sweep;
mod topics;
mod wss;

pub(crate) use args::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use loadgen::{Connected, Shared};
use plan::Shape;
use publish::{Length, Load};
use report::Report;
use server::{Kind, Policy, Target};
use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use topics::Layout;

/// How long the nodes' NATS subscriptions may take to be in place before a `--nodes` run.
const BRIDGES_READY_WITHIN: Duration = Duration::from_secs(10);

/// How often the bench samples the server's resident memory during a run.
const RSS_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Runs `shardcast bench`: checks the flags, then measures the one setup they ask for, or
/// several side by side (`--sweep`, `--nodes 1,2`), and prints the report.
///
/// # Errors
///
/// When a flag is refused (the error names it), a server does not start, a connection fails,
/// or the load stalls past recovery.
pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    args.check()?;
    let single = plan::server(&args)?;
    let options = plan::options(&args, single)?;
    crate::raise_descriptor_limit();
    plan::descriptors_suffice(&args)?;
    let interactive = std::io::stdout().is_terminal() && !args.json;
    let setups = plan::setups(&args, single);
    if args.sweep || setups.len() > 1 {
        let rows = sweep::run(&args, &setups, &options, interactive)?;
        if args.json {
            println!("{}", report::sweep_json(&rows));
        } else {
            print!("{}", report::sweep_table(&rows));
        }
        return Ok(());
    }
    let target = match (&args.target, setups.first()) {
        (Some(url), _) => Target::external(url, args.ca.as_deref())?,
        (None, Some(&setup)) => Target::start(setup, &options, args.nats_server.as_deref())?,
        (None, None) => return Err("nothing to measure".into()),
    };
    let report = measure(&args, plan::single_shape(&args), target, interactive)?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

fn bar(interactive: bool, len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// Connects, loads, measures and tears down one configuration against `target`.
fn measure(
    args: &Args,
    shape: Shape,
    mut target: Target,
    interactive: bool,
) -> Result<Report, Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(10);
    let layout = args.layout()?;
    let pids = target.pids();
    let cpu_pids = target.cpu_pids();
    let nodes = target.nodes.len();
    let rss_before = server::settled_rss(&pids, Duration::from_secs(2));
    // The topics each node's clients subscribe to: the NATS subscriptions it must hold.
    let mut node_topics = vec![std::collections::HashSet::new(); nodes];

    let connecting = bar(interactive, shape.clients + args.publishers, "connecting");
    let threads = args.loadgen_threads as usize;
    let mut groups: Vec<Vec<Connected>> = (0..threads).map(|_| Vec::new()).collect();
    // Stalled clients are spread evenly; they are connected like the others, then never read.
    let stalled_at =
        |i: u64| (((i + 1) as f64 * args.stall) as u64) > ((i as f64 * args.stall) as u64);
    let mut stalled = Vec::new();
    // Measured subscribers per topic (without topics, everyone on topic 0).
    let mut fanout = vec![0u64; layout.map_or(1, |l| l.topics() as usize)];
    for i in 0..shape.clients as usize {
        let node = target.node_of(i);
        let (addr, host) = &target.nodes[node];
        let source = loadgen::source_for(i, *addr);
        let stall = stalled_at(i as u64);
        let recv_buffer = stall.then_some(4 << 10);
        let (topics, path) = match layout {
            Some(layout) => {
                let topics = layout.of_client(i as u64);
                let join = if target.path.contains('?') { '&' } else { '?' };
                let path = format!("{}{join}{}", target.path, topics::query(&topics));
                (topics, Cow::Owned(path))
            }
            None => (vec![0], Cow::Borrowed(target.path.as_str())),
        };
        let (link, leftover) = loadgen::connect(
            *addr,
            host,
            &path,
            source,
            timeout,
            recv_buffer,
            target.tls.as_ref(),
        )
        .map_err(|e| format!("client {i} cannot connect to {addr}: {e}"))?;
        if layout.is_some() {
            node_topics[node].extend(topics.iter().copied());
        }
        if stall {
            stalled.push(link);
        } else {
            for &t in &topics {
                fanout[t as usize] += 1;
            }
            groups[i % threads].push(Connected {
                link,
                leftover,
                measured: true,
                topics,
                node,
            });
        }
        connecting.inc(1);
    }
    let healthy = shape.clients - stalled.len() as u64;
    let mut publishers = Vec::new();
    for p in 0..args.publishers as usize {
        // Publisher p is on node p mod nodes, as the receivers reckon.
        let node = target.node_of(p);
        let (addr, host) = &target.nodes[node];
        let (link, leftover) = loadgen::connect(
            *addr,
            host,
            &target.path,
            None,
            timeout,
            None,
            target.tls.as_ref(),
        )
        .map_err(|e| format!("publisher {p} cannot connect to {addr}: {e}"))?;
        // Its echoes are read (and drained) by a receiver thread; its TLS session is shared.
        let reader = loadgen::Link {
            stream: link.stream.try_clone()?,
            tls: link.tls.clone(),
        };
        groups[p % threads].push(Connected {
            link: reader,
            leftover,
            measured: false,
            topics: Vec::new(),
            node,
        });
        publishers.push(link);
        connecting.inc(1);
    }
    connecting.finish_and_clear();
    if target.broker.is_some() {
        let wanted: Vec<u64> = node_topics.iter().map(|t| t.len() as u64).collect();
        await_bridges(&mut target.servers, &wanted)?;
    }
    let rss_idle = server::settled_rss(&pids, Duration::from_secs(3));

    let shared = Arc::new(Shared::new());
    let _ = shared.publisher.set(std::thread::current());
    let mut receivers = Vec::new();
    for group in groups {
        let shared = shared.clone();
        let publishers = args.publishers as usize;
        let busy_poll = args.busy_poll;
        let named_topics = layout.is_some();
        receivers.push(
            std::thread::Builder::new()
                .name("bench-recv".into())
                .spawn(move || {
                    loadgen::receive(group, publishers, named_topics, nodes, shared, busy_poll)
                })?,
        );
    }

    let length = match args.rounds {
        Some(r) => Length::Rounds(r.max(1)),
        None => Length::Time(Duration::from_secs_f64(args.duration)),
    };
    let load = Load {
        fanout: &fanout,
        rotation: layout.unwrap_or(Layout::ALL).rotation(args.publishers),
        named_topics: layout.is_some(),
        window: shape.window as usize,
        payload: shape.payload as usize,
        length,
        rate: args.rate,
    };
    let counters_before = server::counters(&mut target.servers);
    let server_cpu_before = server::cpu_ns_of(&cpu_pids);
    let own_cpu_before = server::cpu_ns(std::process::id());
    let machine_cpu_before = server::machine_busy_ns();
    let wall = Instant::now();
    let running = bar(interactive, 1000, "running");
    // With stalled clients, watch the server's counters to see when they are all dealt with.
    let mut watch = Watch {
        every: Duration::from_millis(100),
        last: Instant::now(),
        resolved_after: None,
    };
    let stalled_count = stalled.len() as u64;
    let baseline = counters_before.as_ref().map(|c| {
        (
            c.get("evicted").unwrap_or(0),
            c.get("frames_dropped").unwrap_or(0),
        )
    });
    let started = Instant::now();
    let servers = &mut target.servers;
    // The server's memory every few seconds, to see whether it keeps growing (soak runs).
    let mut rss_samples: Vec<(f64, u64)> = Vec::new();
    let mut last_sample = Instant::now();
    let published = publish::run(&mut publishers, load, &shared, |f| {
        running.set_position((f.clamp(0.0, 1.0) * 1000.0) as u64);
        if last_sample.elapsed() >= RSS_SAMPLE_EVERY
            && let Some(rss) = server::rss_of(&pids)
        {
            last_sample = Instant::now();
            rss_samples.push((started.elapsed().as_secs_f64(), rss));
        }
        if stalled_count > 0
            && watch.resolved_after.is_none()
            && watch.last.elapsed() >= watch.every
        {
            watch.last = Instant::now();
            if let Some((evicted0, dropped0)) = baseline
                && let Some(c) = server::counters(servers)
            {
                let evicted = c.get("evicted").unwrap_or(0).saturating_sub(evicted0);
                let dropped = c
                    .get("frames_dropped")
                    .unwrap_or(0)
                    .saturating_sub(dropped0);
                if evicted >= stalled_count
                    || (args.slow_consumer != Policy::Disconnect && dropped > 0)
                {
                    watch.resolved_after = Some(started.elapsed());
                }
            }
        }
    })?;
    running.finish_and_clear();
    let wall = wall.elapsed();
    let server_cpu = server::cpu_ns_of(&cpu_pids)
        .zip(server_cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    let own_cpu = server::cpu_ns(std::process::id())
        .zip(own_cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    let machine_cpu = server::machine_busy_ns()
        .zip(machine_cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    let counters_after = server::counters(&mut target.servers);
    let rss_loaded = server::rss_of(&pids);

    shared.stop.store(true, Relaxed);
    let histogram = || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 120_000_000, 3);
    let (mut latency, mut same, mut cross) = (histogram()?, histogram()?, histogram()?);
    for r in receivers {
        let received = r.join().map_err(|_| "a receiver thread panicked")??;
        let [s, c] = &received.latency_us;
        same.add(s)?;
        cross.add(c)?;
        latency.add(s)?;
        latency.add(c)?;
    }
    let with_broker = target.broker.is_some();
    drop(publishers);
    let label = target.label.clone();
    let kind = target.kind;
    drop(target);

    drop(stalled);
    let delivered = shared.delivered.load(Relaxed);
    let server_delta = |key: &str| {
        counters_before
            .as_ref()
            .zip(counters_after.as_ref())
            .and_then(|(b, a)| a.get(key)?.checked_sub(b.get(key)?))
    };
    let syscalls = server_delta("write_syscalls")
        .zip(server_delta("deliveries"))
        .and_then(|(writes, deliveries)| {
            (deliveries > 0).then(|| writes as f64 / deliveries as f64)
        });
    let submissions = server_delta("io_uring_submissions")
        .zip(server_delta("deliveries"))
        .and_then(|(submissions, deliveries)| {
            (submissions > 0 && deliveries > 0).then(|| submissions as f64 / deliveries as f64)
        });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Report {
        server: label,
        clients: healthy,
        publishers: args.publishers,
        window: shape.window,
        payload_bytes: shape.payload,
        duration_s: published.elapsed.as_secs_f64(),
        deliveries: delivered,
        publishes: published.frames,
        lost: shared.lost.load(Relaxed) + published.missing,
        closed: shared.closed.load(Relaxed),
        latency_us: latency,
        server_cpu_ns: server_cpu,
        loadgen_cpu_ns: own_cpu,
        machine_cpu_ns: machine_cpu,
        loadgen_cpu_share: own_cpu.map(|c| c as f64 / (wall.as_nanos() as f64 * cores as f64)),
        rss_before,
        rss_idle,
        rss_loaded,
        write_syscalls_per_delivery: syscalls,
        io_uring_submissions_per_delivery: submissions,
        rss_samples,
        topics: layout.map(|l| report::Topics {
            topics: l.topics(),
            subscriptions: l.subscriptions(),
            expected_deliveries: published.expected,
        }),
        cluster: with_broker.then(|| report::Cluster {
            nodes,
            same_node_us: same,
            cross_node_us: cross,
            broker_messages_per_publish: server_delta("bridge_messages")
                .map(|m| m as f64 / published.frames.max(1) as f64),
        }),
        stall: (stalled_count > 0).then(|| report::Stall {
            stalled: stalled_count,
            evicted: server_delta("evicted"),
            frames_dropped: server_delta("frames_dropped"),
            resolved_after_s: watch.resolved_after.map(|d| d.as_secs_f64()),
            // No byte cap of ours for the baselines: Bun drops past its backpressure limit,
            // `ws` buffers without bound.
            queue_bytes_max: kind
                .is_none_or(Kind::is_shardcast)
                .then(|| args.client_queue_bytes.unwrap_or(1 << 20) as u64),
        }),
    })
}

/// Waits until every node's bridge is connected and holds the NATS subscriptions of its
/// clients' topics (`wanted`, per node), so that the first publications reach every node.
fn await_bridges(servers: &mut [server::Server], wanted: &[u64]) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let c = server::counters(servers).ok_or("a node does not answer `stats`")?;
        let connected = c.each("bridge_connected");
        let held = c.each("bridge_subscriptions");
        let ready = connected.iter().all(|c| *c == Some(1))
            && held.len() == wanted.len()
            && held.iter().zip(wanted).all(|(h, w)| *h == Some(*w));
        if ready {
            return Ok(());
        }
        if started.elapsed() > BRIDGES_READY_WITHIN {
            return Err(format!(
                "the nodes' NATS bridges are not ready after {BRIDGES_READY_WITHIN:?}: \
                 connected {connected:?}, topics held {held:?} of {wanted:?}"
            ));
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// When the bench last looked at the server's counters, and when the stalled clients were all
/// evicted (or first dropped from).
struct Watch {
    every: Duration,
    last: Instant,
    resolved_after: Option<Duration>,
}
