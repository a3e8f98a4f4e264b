//! The server under test: a child process the bench starts (our own `serve` or `serve
//! --naive`, or one of the external baselines: Bun, Node `ws`), or an external target; and what
//! `/proc` says about a process.

use super::baselines;
pub(crate) use crate::serve::Policy;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Which server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// shardcast's engine (`shardcast serve`), started by the bench.
    Embedded,
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
            Kind::Embedded | Kind::Axum | Kind::Naive => true,
            Kind::Bun | Kind::NodeWs => false,
        }
    }
}

/// How the bench starts its server (the baselines take `topics` only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerOptions {
    /// Speak the topics protocol (`--topics`), every server alike.
    pub(crate) topics: bool,
    /// Shards (threads).
    pub(crate) shards: Option<usize>,
    /// Each client's queue cap (embedded only).
    pub(crate) client_queue_bytes: Option<usize>,
    /// Slow-consumer policy (embedded only).
    pub(crate) slow_consumer: Policy,
}

/// Where the load goes.
#[derive(Debug)]
pub(crate) struct Target {
    /// Address to connect to.
    pub(crate) addr: SocketAddr,
    /// `Host` header value.
    pub(crate) host: String,
    /// Request path.
    pub(crate) path: String,
    /// The child process, when the bench started the server.
    pub(crate) child: Option<Server>,
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
    ) -> Result<(Server, SocketAddr), String> {
        let mut cmd = match kind {
            Kind::Embedded | Kind::Axum | Kind::Naive => serve_command(kind, options)?,
            Kind::Bun => baselines::bun(options.topics)?,
            Kind::NodeWs => baselines::node_ws(options.topics)?,
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
            .split("ws://")
            .nth(1)
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
    pub(crate) fn counters(&mut self) -> Option<Counters> {
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
                return Some(Counters(json.trim().to_owned()));
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
fn serve_command(kind: Kind, options: &ServerOptions) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--control-stdin"]);
    if let Some(n) = options.shards {
        cmd.args(["--shards", &n.to_string()]);
    }
    if matches!(kind, Kind::Embedded | Kind::Axum) {
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
        Kind::Embedded | Kind::Bun | Kind::NodeWs => {}
    }
    if options.topics {
        cmd.arg("--topics");
    }
    Ok(cmd)
}

/// One `stats` answer: a flat JSON object of integers.
#[derive(Debug)]
pub(crate) struct Counters(String);

impl Counters {
    /// The integer at `key`.
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        let pattern = format!("\"{key}\":");
        let start = self.0.find(&pattern)? + pattern.len();
        let digits: String = self.0[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }
}

impl Target {
    /// Starts a server of `kind`.
    pub(crate) fn start(kind: Kind, options: &ServerOptions) -> Result<Target, String> {
        let (server, addr) = Server::start(kind, options)?;
        Ok(Target {
            addr,
            host: addr.to_string(),
            path: "/".into(),
            child: Some(server),
            kind: Some(kind),
            label: kind.name().into(),
        })
    }

    /// An external server at `url` (`ws://HOST:PORT/PATH`).
    pub(crate) fn external(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| {
            format!("target must start with ws:// (got {url:?}; wss is not supported)")
        })?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host:?} resolves to no address"))?;
        Ok(Target {
            addr,
            host: host.into(),
            path: path.into(),
            child: None,
            kind: None,
            label: url.into(),
        })
    }

    /// The server process id, when the bench started it.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Server::pid)
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

/// Resident memory of a process, in bytes (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Waits until `pid`'s resident memory stops moving (allocators return memory lazily), at most
/// `limit`.
pub(crate) fn settled_rss(pid: u32, limit: Duration) -> Option<u64> {
    let start = std::time::Instant::now();
    let mut last = rss_bytes(pid)?;
    loop {
        std::thread::park_timeout(Duration::from_millis(100));
        let now = rss_bytes(pid)?;
        if now == last || start.elapsed() > limit {
            return Some(now);
        }
        last = now;
    }
}
