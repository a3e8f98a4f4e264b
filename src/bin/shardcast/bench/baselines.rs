//! The external baselines the bench starts itself: uWebSockets' pub/sub through Bun, and a Node
//! `ws` relay. Their scripts and pinned packages live in the repository's `baselines/`
//! directory (or wherever `SHARDCAST_BASELINES` says); `npm ci --prefix baselines` installs
//! them.
//!
//! Each is started on an ephemeral loopback port (`PORT=0`) and prints `ws://127.0.0.1:PORT/`
//! first, as `shardcast serve` does; neither has a control line, so the engine's counters are
//! not available for them. With `--topics` each speaks the topics protocol of `shardcast serve
//! --topics` instead of relaying every message to everyone.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Names the baselines directory, overriding `baselines/` next to the crate's `Cargo.toml`.
const DIR_VAR: &str = "SHARDCAST_BASELINES";

/// `bun bun-relay.js`: Bun.serve, every message published to every client through
/// uWebSockets' pub/sub (with `topics`, `ws.subscribe` and `server.publish` per topic); with
/// `deflate` (`--deflate`), `perMessageDeflate` on and every publication compressed.
pub(crate) fn bun(topics: bool, deflate: bool) -> Result<Command, String> {
    let dir = dir()?;
    let bun = dir.join("node_modules/.bin/bun");
    installed(&dir, &bun)?;
    let mut cmd = relay(&dir, &bun, "bun-relay.js", topics)?;
    if deflate {
        cmd.arg("--deflate");
    }
    Ok(cmd)
}

/// `node ws-relay.js`: a `ws` WebSocketServer, every message sent to each of its clients (with
/// `topics`, to each subscriber, from a `Map` of topic to a `Set` of clients).
pub(crate) fn node_ws(topics: bool) -> Result<Command, String> {
    let dir = dir()?;
    installed(&dir, &dir.join("node_modules/ws"))?;
    relay(&dir, Path::new("node"), "ws-relay.js", topics)
}

/// The baselines directory, absolute: the child runs in it, and finds its script and program
/// from there.
fn dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os(DIR_VAR)
        .filter(|d| !d.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines"),
            PathBuf::from,
        );
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    if !dir.is_dir() {
        return Err(format!(
            "no baselines directory at {}: set {DIR_VAR} to the shardcast repository's baselines \
             directory",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Fails, saying how to install the packages, unless `what` (inside `dir/node_modules`) is there.
fn installed(dir: &Path, what: &Path) -> Result<(), String> {
    if what.exists() {
        return Ok(());
    }
    Err(format!(
        "{} is missing: run `npm ci --prefix {}` first",
        what.display(),
        dir.display()
    ))
}

/// `program dir/script` (`--topics` if `topics`) on an ephemeral port, run in `dir` so that
/// nothing around the caller's working directory (a `.env`, a `bunfig.toml`) changes it.
fn relay(dir: &Path, program: &Path, script: &str, topics: bool) -> Result<Command, String> {
    let script = dir.join(script);
    if !script.is_file() {
        return Err(format!(
            "{} is missing: set {DIR_VAR} to the shardcast repository's baselines directory",
            script.display()
        ));
    }
    let mut cmd = Command::new(program);
    cmd.arg(script).env("PORT", "0").current_dir(dir);
    if topics {
        cmd.arg("--topics");
    }
    Ok(cmd)
}
