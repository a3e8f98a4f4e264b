//! The `shardcast` command as a child process (feature `cli`, which builds it): `serve` running
//! beside a test, or any command run to its end; and the metrics `serve` exports.

use super::{Client, WAIT, connect_to, until};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `shardcast args`, with its standard input closed and its standard output and error piped.
pub fn shardcast<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardcast"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command` (see [`shardcast`]) to its end, within `max`; returns its exit status, standard
/// output and standard error.
pub fn run_to_end(command: &mut Command, max: Duration) -> (ExitStatus, String, String) {
    let deadline = Instant::now() + max;
    let mut running = Serve::spawn(command);
    let mut stdout = running.child.stdout.take().expect("piped stdout");
    // Read on a thread, so that a command that keeps running cannot hang the test.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let late = || panic!("{command:?} did not finish within {max:?}");
    let stdout = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_else(|_| late());
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            late();
        }
        std::thread::park_timeout(Duration::from_millis(10));
    };
    (status, stdout, running.stderr())
}

/// A running `shardcast`; killed and reaped on drop, whatever the test's outcome.
#[derive(Debug)]
pub struct Serve {
    /// The process.
    pub child: Child,
    /// The address it announced (empty until it has).
    pub addr: String,
    /// Reads its standard error to the end as it comes, so that a chatty process never waits
    /// for room in the pipe; taken by [`Serve::exit_status`].
    stderr: Option<JoinHandle<String>>,
}

impl Serve {
    /// Starts `shardcast serve` on an ephemeral loopback port with 2 shards and `flags`, and
    /// reads the address from its first line of output.
    pub fn start(flags: &[&str]) -> Serve {
        Serve::start_on("127.0.0.1:0", flags)
    }

    /// Like [`Serve::start`], listening on `addr`.
    pub fn start_on(addr: &str, flags: &[&str]) -> Serve {
        Serve::announcing("ws", addr, flags)
    }

    /// Like [`Serve::start`], with flags that make it serve `wss` (`--tls-cert`, `--tls-key`).
    pub fn start_wss(flags: &[String]) -> Serve {
        Serve::announcing("wss", "127.0.0.1:0", flags)
    }

    /// Like [`Serve::start`], with the process's descriptor limit (soft and hard) set to
    /// `descriptors` before it starts (through `sh -c 'ulimit -n ...'`).
    pub fn start_limited(descriptors: u64, flags: &[&str]) -> Serve {
        let script = format!("ulimit -n {descriptors} && exec \"$0\" \"$@\"");
        let mut command = Command::new("sh");
        command
            .args(["-c", &script, env!("CARGO_BIN_EXE_shardcast")])
            .args(["serve", "--addr", "127.0.0.1:0", "--shards", "2"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Serve::announced("ws", &mut command)
    }

    /// Starts `shardcast serve --addr addr --shards 2 flags`, which must announce
    /// `scheme://ADDR/ with 2 shards` on its first line; reads the address from it.
    fn announcing(scheme: &str, addr: &str, flags: &[impl AsRef<OsStr>]) -> Serve {
        let mut command = shardcast(["serve", "--addr", addr, "--shards", "2"]);
        Serve::announced(scheme, command.args(flags))
    }

    /// Starts `command`, a `shardcast serve` with 2 shards, which must announce
    /// `scheme://ADDR/ with 2 shards` on its first line; reads the address from it.
    fn announced(scheme: &str, command: &mut Command) -> Serve {
        let mut serve = Serve::spawn(command);
        let stdout = serve.child.stdout.take().expect("piped stdout");
        // Read the first line on a thread, so that a server that never prints cannot hang us.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(WAIT)
            .expect("the server announces its address in time");
        let (addr, shards) = line
            .trim_end()
            .strip_prefix(&format!("shardcast serving on {scheme}://"))
            .and_then(|rest| rest.split_once("/ with "))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        assert_eq!(shards, "2 shards");
        serve.addr = addr.to_owned();
        serve
    }

    /// Starts `command` (see [`shardcast`]), expecting nothing of it yet.
    pub fn spawn(command: &mut Command) -> Serve {
        let mut child = command.spawn().expect("spawn shardcast");
        let mut pipe = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Serve {
            child,
            addr: String::new(),
            stderr: Some(stderr),
        }
    }

    /// Connects a client.
    pub async fn connect(&self) -> Client {
        self.connect_to("/").await
    }

    /// Connects a client to `path` (with its query).
    pub async fn connect_to(&self, path: &str) -> Client {
        connect_to(format!("ws://{}{path}", self.addr)).await.0
    }

    /// Connects `n` clients.
    pub async fn connect_many(&self, n: usize) -> Vec<Client> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(self.connect().await);
        }
        clients
    }

    /// The CPU time (user and system) the process has used so far (Linux: `/proc/PID/stat`).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the process's stat");
        // The fields after the command's name (in parentheses, which may hold spaces).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("a stat line")
            .1
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15 of the line (11 and 12 after the name), in clock
        // ticks of 1/100 s on Linux.
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (bounded) for the process to exit; returns its status and what it wrote to stderr.
    pub async fn exit_status(&mut self) -> (ExitStatus, String) {
        let mut status = None;
        until(
            || {
                status = self.child.try_wait().expect("try_wait");
                status.is_some()
            },
            || "the server did not exit in time".to_owned(),
        )
        .await;
        (status.expect("exited"), self.stderr())
    }
}

impl Serve {
    /// What the process wrote to its standard error, once it has exited (the pipe is at its end
    /// then).
    fn stderr(&mut self) -> String {
        let reader = self.stderr.take().expect("stderr read once");
        reader.join().expect("stderr reader")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` over plain HTTP/1.1 from the exporter at `addr`, which must answer 200; the
/// response body.
pub async fn scrape(addr: &str) -> String {
    let (head, body) = get(addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

/// `GET path` over plain HTTP/1.1 from the server at `addr` (bounded by [`WAIT`]): the
/// response's head and body.
pub async fn get(addr: &str, path: &str) -> (String, String) {
    let mut tcp = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect to the metrics address");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send GET");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_owned(), body.to_owned())
}
