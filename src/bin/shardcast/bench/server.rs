//! The server under test: a child process the bench starts (our own `serve`, with TLS or
//! `--naive`, or one of the external baselines: Bun, Node `ws`), or an external target (`ws` or
//! `wss`); and what `/proc` says about a process.

use super::baselines;
use super::broker::Broker;
pub(crate) use crate::serve::Policy;
use crate::tls::{Generated, Trust};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Which server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// shardcast's engine (`shardcast serve`), started by the bench, on its default driver
    /// (the event loop writing through io_uring on Linux, unless `SHARDCAST_DRIVER` says
    /// otherwise).
    Embedded,
    /// shardcast's engine with a task per connection (`shardcast serve --driver tasks`),
    /// started by the bench: to compare the drivers side by side.
    #[value(name = "embedded-tasks")]
    EmbeddedTasks,
    /// shardcast's engine on the event loop with `write` per client (`shardcast serve
    /// --driver event-loop`), started by the bench.
    #[value(name = "embedded-epoll")]
    EmbeddedEpoll,
    /// shardcast's engine on the event loop with each pass's writes in one io_uring
    /// submission (`shardcast serve --driver io-uring`), started by the bench.
    #[value(name = "embedded-uring")]
    EmbeddedUring,
    /// shardcast's engine serving `wss` (`shardcast serve --tls-cert --tls-key`) with a
    /// certificate the bench makes at start, started by the bench.
    #[value(name = "embedded-tls")]
    EmbeddedTls,
    /// shardcast's engine behind axum (`shardcast serve --axum`): the upgrade answered by
    /// `shardcast::axum::Upgrade`, started by the bench.
    Axum,
    /// The naive baseline (`shardcast serve --naive`), started by the bench.
    Naive,
    /// uWebSockets' pub/sub through Bun (`baselines/bun-relay.js`), started by the bench.
    Bun,
    /// A Node `ws` relay, one send per client (`baselines/ws-relay.js`), started by the bench.
    #[value(name = "node-ws")]
    NodeWs,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Embedded => "embedded",
            Kind::EmbeddedTasks => "embedded-tasks",
            Kind::EmbeddedEpoll => "embedded-epoll",
            Kind::EmbeddedUring => "embedded-uring",
            Kind::EmbeddedTls => "embedded-tls",
            Kind::Axum => "axum",
            Kind::Naive => "naive",
            Kind::Bun => "bun",
            Kind::NodeWs => "node-ws",
        }
    }

    /// Whether it is our own `shardcast serve`, which has the options of [`ServerOptions`] and
    /// answers `stats` on a control line; the baselines have neither.
    pub(crate) fn is_shardcast(self) -> bool {
        match self {
            Kind::Embedded
            | Kind::EmbeddedTasks
            | Kind::EmbeddedEpoll
            | Kind::EmbeddedUring
            | Kind::EmbeddedTls
            | Kind::Axum
            | Kind::Naive => true,
            Kind::Bun | Kind::NodeWs => false,
        }
    }

    /// Whether it speaks `wss`.
    pub(crate) fn is_tls(self) -> bool {
        self == Kind::EmbeddedTls
    }

    /// The engine, with or without TLS: it takes the engine's options (queue cap, policy).
    pub(crate) fn is_engine(self) -> bool {
        matches!(
            self,
            Kind::Embedded
                | Kind::EmbeddedTasks
                | Kind::EmbeddedEpoll
                | Kind::EmbeddedUring
                | Kind::EmbeddedTls
        )
    }
}

/// How the bench starts its server (the baselines take `topics` only, and Bun `deflate`).
#[derive(Clone, Debug)]
pub(crate) struct ServerOptions {
    /// Speak the topics protocol (`--topics`), every server alike.
    pub(crate) topics: bool,
    /// The clients offer permessage-deflate (`--deflate`): Bun is started with
    /// `perMessageDeflate` and publishes compressed. (shardcast's own server answers the offer
    /// by itself; Node `ws` and the naive baseline decline it.)
    pub(crate) deflate: bool,
    /// Shards (threads).
    pub(crate) shards: Option<usize>,
    /// Each client's queue cap (embedded only).
    pub(crate) client_queue_bytes: Option<usize>,
    /// Slow-consumer policy (embedded only).
    pub(crate) slow_consumer: Policy,
    /// The certificate of the servers that speak `wss`, made once per bench run; `None` if no
    /// server of the run does.
    pub(crate) tls: Option<Arc<Generated>>,
}

/// What the bench starts: a server of `kind`, or `nodes` of our own `serve --nats` sharing
/// broadcasts through a `nats-server` the bench starts too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Setup {
    pub(crate) kind: Kind,
    /// `Some(n)`: n nodes and a broker (`--nodes`); `None`: one server, no broker.
    pub(crate) nodes: Option<usize>,
}

impl Setup {
    /// How reports name it: the kind, and the node count for a cluster (`embedded x2 nats`).
    pub(crate) fn label(self) -> String {
        match self.nodes {
            None => self.kind.name().into(),
            Some(n) => format!("{} x{n} nats", self.kind.name()),
        }
    }
}

/// Where the load goes.
#[derive(Debug)]
pub(crate) struct Target {
    /// Each node's address and `Host` header value; clients are spread over them in turn.
    pub(crate) nodes: Vec<(SocketAddr, String)>,
    /// Request path.
    pub(crate) path: String,
    /// Whom to trust, for `wss`; `None` for `ws`.
    pub(crate) tls: Option<Trust>,
    /// The processes the bench started (one per node), each with its control line.
    pub(crate) servers: Vec<Server>,
    /// The broker the nodes share, with `--nodes`.
    pub(crate) broker: Option<Broker>,
    /// Which server the bench started; `None` for an external target.
    pub(crate) kind: Option<Kind>,
    /// Label for reports.
    pub(crate) label: String,
}

/// A server the bench started, with a control line to ask it for counters if it is our own.
#[derive(Debug)]
pub(crate) struct Server {
    /// The child process; killed and reaped on drop.
    child: Child,
    /// The control line (`serve --control-stdin`); `None` for the baselines, which have none.
    stdin: Option<ChildStdin>,
    /// The child's standard output: its address, then the answers to `stats`. Held open until
    /// the child is killed, so that a late write of the child's never fails.
    stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts a server of `kind` on an ephemeral loopback port, and reads the address it
    /// prints first.
    ///
    /// The child inherits the bench's descriptor limit, which `bench::run` raises before it
    /// starts any server.
    pub(crate) fn start(
        kind: Kind,
        options: &ServerOptions,
        nats: Option<&str>,
    ) -> Result<(Server, SocketAddr), String> {
        let mut cmd = match kind {
            Kind::Bun => baselines::bun(options.topics, options.deflate)?,
            Kind::NodeWs => baselines::node_ws(options.topics)?,
            // Every other kind is ours (`Kind::is_shardcast`).
            _ => serve_command(kind, options, nats)?,
        };
        let control = kind.is_shardcast();
        // A baseline's own errors (a missing `node`, a crash) are worth seeing; it writes
        // nothing to standard error otherwise. Our own server's are read if it does not start
        // (a flag it refused), and discarded after.
        cmd.stdin(if control {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(if control {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
        let mut child = cmd.spawn().map_err(|e| {
            let program = cmd.get_program().to_string_lossy();
            format!("cannot start the {} server ({program}): {e}", kind.name())
        })?;
        let Some(stdout) = child.stdout.take() else {
            return Err("server has no stdio".into());
        };
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        if control && (stdin.is_none() || stderr.is_none()) {
            return Err("server has no stdio".into());
        }
        let mut server = Server {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let mut line = String::new();
        let read = server
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("server did not start: {e}"))?;
        if read == 0 {
            // It closed its output before announcing an address: it exited, and said why.
            return Err(format!(
                "the {} server did not start{}",
                kind.name(),
                stderr.map(first_line).unwrap_or_default()
            ));
        }
        if let Some(stderr) = stderr {
            // Drained on a thread of its own, so that the server never blocks on a full pipe;
            // it ends when the server exits.
            std::thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
        }
        let addr = line
            .split_once("://")
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                format!(
                    "the {} server did not print its address: {line:?}",
                    kind.name()
                )
            })?;
        Ok((server, addr))
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server for its counters; `None` if it has no control line (the baselines) or
    /// does not answer.
    fn stats_line(&mut self) -> Option<String> {
        let stdin = self.stdin.as_mut()?;
        writeln!(stdin, "stats").ok()?;
        stdin.flush().ok()?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(json) = line.strip_prefix("stats ") {
                return Some(json.trim().to_owned());
            }
        }
    }
}

/// ": " and the first line the exited server wrote to `stderr` (without the `shardcast: `
/// prefix), or nothing if it wrote none.
fn first_line(stderr: ChildStderr) -> String {
    let mut bytes = Vec::new();
    // The server has exited, so this reads to the end of what it wrote; bounded all the same.
    let _ = stderr.take(4096).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| format!(": {}", line.strip_prefix("shardcast: ").unwrap_or(line)))
        .unwrap_or_default()
}

/// `shardcast serve` (or `--naive`, `--axum`) with a control line, on an ephemeral loopback port; with
/// topics, `--topics`, for which the engine runs `crate::topics::TopicRelay`.
fn serve_command(
    kind: Kind,
    options: &ServerOptions,
    nats: Option<&str>,
) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--control-stdin"]);
    if let Some(n) = options.shards {
        cmd.args(["--shards", &n.to_string()]);
    }
    let driver = match kind {
        Kind::EmbeddedTasks => Some("tasks"),
        Kind::EmbeddedEpoll => Some("event-loop"),
        Kind::EmbeddedUring => Some("io-uring"),
        _ => None,
    };
    if let Some(driver) = driver {
        cmd.args(["--driver", driver]);
    }
    if kind.is_engine() {
        if let Some(bytes) = options.client_queue_bytes {
            cmd.args(["--client-queue-bytes", &bytes.to_string()]);
        }
        if let Some(policy) = clap::ValueEnum::to_possible_value(&options.slow_consumer) {
            cmd.args(["--slow-consumer", policy.get_name()]);
        }
    }
    match kind {
        Kind::Naive => {
            cmd.arg("--naive");
        }
        Kind::Axum => {
            cmd.arg("--axum");
        }
        Kind::Embedded
        | Kind::EmbeddedTasks
        | Kind::EmbeddedEpoll
        | Kind::EmbeddedUring
        | Kind::EmbeddedTls
        | Kind::Bun
        | Kind::NodeWs => {}
    }
    if kind.is_tls() {
        let generated = options
            .tls
            .as_ref()
            .ok_or("no certificate was made for the TLS server")?;
        cmd.arg("--tls-cert").arg(&generated.cert);
        cmd.arg("--tls-key").arg(&generated.key);
    }
    if options.topics {
        cmd.arg("--topics");
    }
    if let Some(url) = nats {
        cmd.args(["--nats", url]);
    }
    Ok(cmd)
}

/// The `stats` answers of every node: flat JSON objects of integers.
#[derive(Debug)]
pub(crate) struct Counters(Vec<String>);

impl Counters {
    /// The integer at `key`, summed over the nodes; `None` if a node does not have it.
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        let pattern = format!("\"{key}\":");
        self.0.iter().try_fold(0u64, |sum, json| {
            let start = json.find(&pattern)? + pattern.len();
            let digits: String = json[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some(sum + digits.parse::<u64>().ok()?)
        })
    }

    /// The integer at `key` of each node.
    pub(crate) fn each(&self, key: &str) -> Vec<Option<u64>> {
        self.0
            .iter()
            .map(|json| Counters(vec![json.clone()]).get(key))
            .collect()
    }
}

/// The counters of every server in `servers`; `None` if there are none or one does not answer.
pub(crate) fn counters(servers: &mut [Server]) -> Option<Counters> {
    if servers.is_empty() {
        return None;
    }
    let mut answers = Vec::with_capacity(servers.len());
    for server in servers {
        answers.push(server.stats_line()?);
    }
    Some(Counters(answers))
}

impl Target {
    /// Starts what `setup` asks for: one server, or a broker (`nats_server`) and its nodes.
    pub(crate) fn start(
        setup: Setup,
        options: &ServerOptions,
        nats_server: Option<&Path>,
    ) -> Result<Target, String> {
        let Some(n) = setup.nodes else {
            let (server, addr) = Server::start(setup.kind, options, None)?;
            let tls = match (setup.kind.is_tls(), &options.tls) {
                (false, _) => None,
                (true, Some(generated)) => Some(generated.trust(&addr.ip().to_string())?),
                (true, None) => return Err("no certificate was made for the TLS server".into()),
            };
            return Ok(Target {
                nodes: vec![(addr, addr.to_string())],
                path: "/".into(),
                tls,
                servers: vec![server],
                broker: None,
                kind: Some(setup.kind),
                label: setup.label(),
            });
        };
        if setup.kind != Kind::Embedded {
            return Err(format!(
                "--nodes runs shardcast's own nodes (embedded); {} has no NATS bridge",
                setup.kind.name()
            ));
        }
        let broker = Broker::start(&super::broker::find(nats_server)?)?;
        let mut nodes = Vec::with_capacity(n);
        let mut servers = Vec::with_capacity(n);
        for _ in 0..n {
            let (server, addr) = Server::start(setup.kind, options, Some(broker.url()))?;
            nodes.push((addr, addr.to_string()));
            servers.push(server);
        }
        Ok(Target {
            nodes,
            path: "/".into(),
            tls: None,
            servers,
            broker: Some(broker),
            kind: Some(setup.kind),
            label: setup.label(),
        })
    }

    /// An external server at `url`: `ws://HOST[:PORT]/PATH`, or `wss://` trusting the CA
    /// certificates of the PEM file `ca` (the system's roots without it). The port defaults
    /// to 80 or 443.
    pub(crate) fn external(url: &str, ca: Option<&Path>) -> Result<Target, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err(format!(
                "target must start with ws:// or wss:// (got {url:?})"
            ));
        };
        if let (false, Some(ca)) = (tls, ca) {
            return Err(format!(
                "--ca {} is for a wss:// target, and {url} is not one",
                ca.display()
            ));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (name, has_port) = split_host(host);
        let port = if tls { 443 } else { 80 };
        let resolved = if has_port {
            host.to_socket_addrs()
        } else {
            (name, port).to_socket_addrs()
        };
        let addr = resolved
            .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host:?} resolves to no address"))?;
        let tls = tls.then(|| Trust::new(ca, name)).transpose()?;
        Ok(Target {
            nodes: vec![(addr, host.into())],
            path: path.into(),
            tls,
            servers: Vec::new(),
            broker: None,
            kind: None,
            label: url.into(),
        })
    }

    /// The node the `i`-th connection goes to: they take turns.
    pub(crate) fn node_of(&self, i: usize) -> usize {
        i % self.nodes.len()
    }

    /// The process ids of the servers the bench started (none for an external target).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(Server::pid).collect()
    }

    /// The process ids whose CPU time is the server side's: the servers and their broker.
    pub(crate) fn cpu_pids(&self) -> Vec<u32> {
        let mut pids = self.pids();
        pids.extend(self.broker.as_ref().map(Broker::pid));
        pids
    }
}

/// The summed CPU time of `pids`, in nanoseconds; `None` if there are none or one is gone.
pub(crate) fn cpu_ns_of(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_ns(p)).sum()
}

/// The summed resident memory of `pids`, in bytes; `None` if there are none or one is gone.
pub(crate) fn rss_of(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

/// The name in `host` (`NAME`, `NAME:PORT`, `[IPv6]` or `[IPv6]:PORT`), without brackets, and
/// whether a port follows it.
fn split_host(host: &str) -> (&str, bool) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, after)) => (ip, after.starts_with(':')),
            None => (host, false),
        };
    }
    match host.rsplit_once(':') {
        Some((name, _)) => (name, true),
        None => (host, false),
    }
}

/// CPU time of every thread of a process, in nanoseconds (`/proc/PID/task/*/schedstat`).
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Busy time of the whole machine since boot, in nanoseconds: every CPU's time in `/proc/stat`
/// but idle and I/O wait (in clock ticks, 10 ms each where `USER_HZ` is 100, as on Linux).
pub(crate) fn machine_busy_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy: u64 = ticks.iter().take(8).sum::<u64>()
        - ticks.get(3).copied().unwrap_or(0)
        - ticks.get(4).copied().unwrap_or(0);
    Some(busy * 10_000_000)
}

/// TCP segments sent since boot by this machine (its network namespace, so a container's
/// own): `OutSegs` of `/proc/net/snmp`, retransmissions left out. Over loopback it counts both
/// ends of every connection: the server's segments and the load generator's, acks included.
pub(crate) fn tcp_out_segments() -> Option<u64> {
    out_segs(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// `OutSegs` of the text of `/proc/net/snmp`: its first `Tcp:` line names the fields, the
/// second holds their values.
fn out_segs(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "OutSegs")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Resident memory of a process, in bytes (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Waits until the summed resident memory of `pids` stops moving (allocators return memory
/// lazily), at most `limit`.
pub(crate) fn settled_rss(pids: &[u32], limit: Duration) -> Option<u64> {
    let start = std::time::Instant::now();
    let mut last = rss_of(pids)?;
    loop {
        std::thread::park_timeout(Duration::from_millis(100));
        let now = rss_of(pids)?;
        if now == last || start.elapsed() > limit {
            return Some(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_segs_is_read_from_the_tcp_values_under_its_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm ActiveOpens InSegs OutSegs RetransSegs\n\
                    Tcp: 1 12 3456 7890 5\n\
                    Udp: InDatagrams OutSegs\nUdp: 1 2\n";
        assert_eq!(out_segs(snmp), Some(7890));
        assert_eq!(out_segs("Tcp: RtoAlgorithm InSegs\nTcp: 1 2\n"), None);
        assert_eq!(out_segs(""), None);
    }
}
