//! The connections of one run: its clients (each subscribed at upgrade to its topics, with
//! `--topics`; some never read, with `--stall`) and its publishers, spread over the target's
//! nodes and the load generator's receiver threads; across nodes, the wait until every node's
//! bridge holds its clients' topics.

use super::args::Args;
use super::loadgen::{self, Connected, Link};
use super::plan::Shape;
use super::server::{self, Target};
use super::tcp_info::Receivers;
use super::topics::{self, Layout};
use super::watch;
use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long a connection may take to connect and upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the nodes' NATS subscriptions may take to be in place before a `--nodes` run.
const BRIDGES_READY_WITHIN: Duration = Duration::from_secs(10);

/// A run's connections, upgraded and ready for the load.
#[derive(Debug)]
pub(crate) struct Connections {
    /// What each receiver thread reads, one group per `--loadgen-threads`: the measured
    /// clients, and a reading half of each publisher (whose echoes must be drained).
    pub(crate) groups: Vec<Vec<Connected>>,
    /// The publishers' writing halves, one per `--publishers`.
    pub(crate) publishers: Vec<Link>,
    /// The clients that never read (`--stall`): held open and unread until the run ends.
    pub(crate) stalled: Vec<Link>,
    /// Measured subscribers per topic: the deliveries a publication to it makes (without
    /// topics, everyone on topic 0).
    pub(crate) fanout: Vec<u64>,
    /// The measured clients: all but the stalled ones.
    pub(crate) healthy: u64,
    /// The measured clients' sockets by address, to read what they received; `None` if an
    /// address cannot be read.
    pub(crate) receivers: Option<Receivers>,
    /// The measured clients whose server accepted permessage-deflate (`--deflate`).
    pub(crate) deflate_negotiated: u64,
}

/// Connects `shape.clients` clients and `--publishers` publishers to `target`, spread over its
/// nodes in turn and over the receiver threads; with a broker, waits until every node's bridge
/// holds the topics of its clients, so that the first publications reach every node.
///
/// # Errors
///
/// When a connection or its upgrade fails (naming the client or publisher and the address),
/// or the bridges are not ready in time.
pub(crate) fn connect(
    args: &Args,
    shape: Shape,
    layout: Option<Layout>,
    target: &mut Target,
    interactive: bool,
) -> Result<Connections, Box<dyn std::error::Error>> {
    let nodes = target.nodes.len();
    // The topics each node's clients subscribe to: the NATS subscriptions it must hold.
    let mut node_topics = vec![HashSet::new(); nodes];

    let connecting = watch::bar(interactive, shape.clients + args.publishers, "connecting");
    let threads = args.loadgen_threads as usize;
    let mut groups: Vec<Vec<Connected>> = (0..threads).map(|_| Vec::new()).collect();
    // Stalled clients are spread evenly; they are connected like the others, then never read.
    let stalled_at =
        |i: u64| (((i + 1) as f64 * args.stall) as u64) > ((i as f64 * args.stall) as u64);
    let mut stalled = Vec::new();
    let mut fanout = vec![0u64; layout.map_or(1, |l| l.topics() as usize)];
    let mut deflate_negotiated = 0u64;
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
        let upgraded = loadgen::connect(
            *addr,
            host,
            &path,
            source,
            CONNECT_TIMEOUT,
            recv_buffer,
            target.tls.as_ref(),
            args.deflate,
        )
        .map_err(|e| format!("client {i} cannot connect to {addr}: {e}"))?;
        let link = upgraded.link;
        if layout.is_some() {
            node_topics[node].extend(topics.iter().copied());
        }
        if stall {
            stalled.push(link);
        } else {
            for &t in &topics {
                fanout[t as usize] += 1;
            }
            deflate_negotiated += u64::from(upgraded.deflate);
            groups[i % threads].push(Connected {
                link,
                leftover: upgraded.leftover,
                measured: true,
                topics,
                node,
                deflate: upgraded.deflate,
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
        // Publishers offer deflate too, as a browser would; what they send stays plain, which
        // RFC 7692 allows, and their echoes are drained unread.
        let upgraded = loadgen::connect(
            *addr,
            host,
            &target.path,
            None,
            CONNECT_TIMEOUT,
            None,
            target.tls.as_ref(),
            args.deflate,
        )
        .map_err(|e| format!("publisher {p} cannot connect to {addr}: {e}"))?;
        let link = upgraded.link;
        // Its echoes are read (and drained) by a receiver thread; its TLS session is shared.
        let reader = Link {
            stream: link.stream.try_clone()?,
            tls: link.tls.clone(),
        };
        groups[p % threads].push(Connected {
            link: reader,
            leftover: upgraded.leftover,
            measured: false,
            topics: Vec::new(),
            node,
            deflate: upgraded.deflate,
        });
        publishers.push(link);
        connecting.inc(1);
    }
    connecting.finish_and_clear();
    if target.broker.is_some() {
        let wanted: Vec<u64> = node_topics.iter().map(|t| t.len() as u64).collect();
        await_bridges(&mut target.servers, &wanted)?;
    }
    let receivers = measured_sockets(&groups);
    Ok(Connections {
        groups,
        publishers,
        stalled,
        fanout,
        healthy,
        receivers,
        deflate_negotiated,
    })
}

/// The sockets of the measured clients among `groups`, by address; `None` if an address
/// cannot be read.
fn measured_sockets(groups: &[Vec<Connected>]) -> Option<Receivers> {
    let ends = groups
        .iter()
        .flatten()
        .filter(|c| c.measured)
        .map(|c| Ok((c.link.stream.local_addr()?, c.link.stream.peer_addr()?)))
        .collect::<std::io::Result<Vec<_>>>();
    ends.ok().map(Receivers::new)
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
