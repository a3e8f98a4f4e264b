//! The server under test: our own binary as a child process (`serve` or `serve --naive`), or
//! an external target; and what `/proc` says about a process.

pub(crate) use crate::serve::Policy;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Which server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// shardcast's engine (`shardcast serve`), started by the bench.
    Embedded,
    /// The naive baseline (`shardcast serve --naive`), started by the bench.
    Naive,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Embedded => "embedded",
            Kind::Naive => "naive",
        }
    }
}

/// How the bench starts its server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerOptions {
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
    /// Label for reports.
    pub(crate) label: String,
}

/// A server the bench started, with a control line to ask it for counters.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `shardcast serve` (or `--naive`) on an ephemeral loopback port.
    pub(crate) fn start(
        kind: Kind,
        options: &ServerOptions,
    ) -> Result<(Server, SocketAddr), String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--control-stdin"]);
        if let Some(n) = options.shards {
            cmd.args(["--shards", &n.to_string()]);
        }
        if kind == Kind::Embedded {
            if let Some(bytes) = options.client_queue_bytes {
                cmd.args(["--client-queue-bytes", &bytes.to_string()]);
            }
            if let Some(policy) = clap::ValueEnum::to_possible_value(&options.slow_consumer) {
                cmd.args(["--slow-consumer", policy.get_name()]);
            }
        }
        if kind == Kind::Naive {
            cmd.arg("--naive");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start server: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("server has no stdio".into());
        };
        let mut server = Server {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let mut line = String::new();
        server
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("server did not start: {e}"))?;
        let addr = line
            .split("ws://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("server did not print its address: {line:?}"))?;
        Ok((server, addr))
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server for its counters; returns the value of `key`, if it has one.
    pub(crate) fn counters(&mut self) -> Option<Counters> {
        writeln!(self.stdin, "stats").ok()?;
        self.stdin.flush().ok()?;
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
