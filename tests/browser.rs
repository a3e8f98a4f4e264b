//! A real browser against `shardcast serve`: headless Chromium (Debian's `chromium`, driven by
//! `tests/browser/check.mjs` through `playwright-core` from `baselines/node_modules`) opens two
//! WebSockets from a page. With the defaults it negotiates permessage-deflate (the page reports
//! `ws.extensions`), sends a JSON document of a few KiB as text, a small one, and a larger one
//! as binary, and both sockets receive each of them relayed, byte for byte; the server's
//! counters say the relayed documents went out compressed and that what Chromium sent came in
//! compressed and was inflated, with no protocol error. With `--no-deflate` nothing is
//! negotiated and everything still arrives, plain. This is the test that says browsers work,
//! where the rest of the suite checks our own clients and tungstenite.
//!
//! The same relay over wss (`--tls-cert`/`--tls-key`, a certificate made at test time, which
//! the browser is told not to check); subprotocols (`--protocols`: the one the page asked for is
//! chosen, and a page asking only for others is refused and counted); topics from the query
//! string (`--topics`: only a topic's subscriber receives what is published to it); and
//! `examples/axum.rs`, the application an embedder writes (its `/ws?topic=` route, and its
//! `POST /publish` called by the page with `fetch`). Each test launches Chromium once.
//!
//! Without `/usr/bin/chromium` (`CHROMIUM` overrides the path), `node`, or `npm ci --prefix
//! baselines`, each test says why on the terminal and passes, unless
//! `SHARDCAST_REQUIRE_BROWSER=1` (as .ci/run sets, having installed them), where it fails.

mod common;

use common::WAIT;
use common::serve::{Serve, shardcast};
use common::skipped;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The page's run takes a second or two (the browser's start most of it); the script gives up
/// by 60 s, closing the browser. Past this the test stops waiting and kills it.
const RUN_MAX: Duration = Duration::from_secs(90);

/// After a SIGTERM, how long the script has to close its browser before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// One browser at a time: two would share the machine's few cores and slow each other down.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn chromium_negotiates_deflate_and_gets_json_relayed_compressed_and_intact() {
    let test = "chromium_negotiates_deflate_and_gets_json_relayed_compressed_and_intact";
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::find(test) else {
        return;
    };
    let started = Instant::now();
    let mut server = ControlledServe::start(&[]);
    let report = browser.run(&server.url(), test, "relay");
    let stats = server.stats_once_all_left().await;
    let (status, log) = server.stop().await;
    eprintln!("{test}: page {report}\nserver {stats}\nserver log:\n{log}");

    relayed_compressed(&report, &stats);
    assert!(
        status.success(),
        "the server stops cleanly on SIGTERM: {status}\n{log}"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

/// What the page and the server's counters say when the defaults (deflate) relayed the page's
/// three messages: see [`everything_arrived`]; deflate negotiated on both sockets, the two
/// documents sent compressed, what Chromium sent inflated, and no error.
fn relayed_compressed(report: &Value, stats: &Value) {
    everything_arrived(report);
    for extensions in strings(&report["extensions"]) {
        assert!(
            extensions.contains("permessage-deflate"),
            "Chromium offers permessage-deflate and the server accepts it; ws.extensions: \
             {extensions:?}"
        );
    }
    // Three messages relayed to two clients. The two documents (3 and 17 KiB of JSON) went out
    // compressed, once each whoever receives them; the small one (under `--deflate-min-bytes`)
    // plain.
    assert_eq!(field(stats, "deliveries"), 6, "{stats}");
    assert_eq!(field(stats, "deflate_deliveries"), 4, "{stats}");
    let sent = &report["sent"];
    let plain = field(sent, "doc") + field(sent, "binary");
    let saved = field(stats, "deflate_bytes_saved");
    assert!(
        saved > plain,
        "the compressed documents saved more than half their size for their two recipients \
         ({saved} of 2 x {plain} bytes): {stats}"
    );
    // Chromium compresses what it sends once deflate is negotiated (version 156 all three
    // messages, the small one too), and the server inflated it: the relayed copies are intact.
    let inflated = field(stats, "deflate_inflated");
    assert!(
        (1..=3).contains(&inflated),
        "Chromium's compressed messages inflated: {stats}"
    );
    no_errors(stats);
}

#[tokio::test]
async fn chromium_without_deflate_gets_the_same_messages_plain() {
    let test = "chromium_without_deflate_gets_the_same_messages_plain";
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::find(test) else {
        return;
    };
    let started = Instant::now();
    let mut server = ControlledServe::start(&["--no-deflate"]);
    let report = browser.run(&server.url(), test, "relay");
    let stats = server.stats_once_all_left().await;
    let (status, log) = server.stop().await;
    eprintln!("{test}: page {report}\nserver {stats}\nserver log:\n{log}");

    everything_arrived(&report);
    assert_eq!(
        strings(&report["extensions"]),
        ["", ""],
        "an offer declined: no extension in use"
    );
    assert_eq!(field(&stats, "deliveries"), 6, "{stats}");
    for key in [
        "deflate_deliveries",
        "deflate_bytes_saved",
        "deflate_inflated",
    ] {
        assert_eq!(field(&stats, key), 0, "{key}: {stats}");
    }
    no_errors(&stats);
    assert!(
        status.success(),
        "the server stops cleanly on SIGTERM: {status}\n{log}"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

#[tokio::test]
async fn chromium_over_wss_with_a_generated_certificate_gets_json_relayed_compressed() {
    let test = "chromium_over_wss_with_a_generated_certificate_gets_json_relayed_compressed";
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::find(test) else {
        return;
    };
    let started = Instant::now();
    let certificate = Certificate::new(test);
    let mut server = ControlledServe::start_scheme(
        "wss",
        &[
            "--tls-cert",
            certificate.cert.to_str().expect("a UTF-8 path"),
            "--tls-key",
            certificate.key.to_str().expect("a UTF-8 path"),
        ],
    );
    let url = server.url();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let report = browser.run(&url, test, "relay");
    let stats = server.stats_once_all_left().await;
    let (status, log) = server.stop().await;
    eprintln!("{test}: page {report}\nserver {stats}\nserver log:\n{log}");

    // The same as over ws://: deflate inside TLS, everything relayed intact.
    relayed_compressed(&report, &stats);
    assert!(
        status.success(),
        "the server stops cleanly on SIGTERM: {status}\n{log}"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

#[tokio::test]
async fn chromium_gets_the_subprotocol_it_asked_for_and_is_refused_without_one() {
    let test = "chromium_gets_the_subprotocol_it_asked_for_and_is_refused_without_one";
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::find(test) else {
        return;
    };
    let started = Instant::now();
    let mut server = ControlledServe::start(&["--protocols", "v2.chat,v1.chat"]);
    let report = browser.run(&server.url(), test, "protocols");
    let stats = server.stats_once_all_left().await;
    let (status, log) = server.stop().await;
    eprintln!("{test}: page {report}\nserver {stats}\nserver log:\n{log}");

    assert_eq!(
        report["opened"],
        serde_json::json!({"a": true, "b": true, "refused": false}),
        "{report}"
    );
    // The first of the server's list that the client offered (as axum chooses): `b` offered
    // v1.chat first, but the server lists v2.chat first.
    assert_eq!(
        report["protocols"],
        serde_json::json!({"a": "v1.chat", "b": "v2.chat", "refused": ""}),
        "{report}"
    );
    // Refused (400): the page sees an error, then an abnormal close, never an open.
    assert_eq!(report["refused"]["error"], true, "{report}");
    assert_eq!(report["refused"]["close"]["code"], 1006, "{report}");
    assert_eq!(report["refused"]["close"]["clean"], false, "{report}");
    // Messages flow with a subprotocol: `a`'s text and `b`'s bytes, each to both.
    let both = serde_json::json!(["hello v1", "binary:000102feff"]);
    assert_eq!(
        report["received"],
        serde_json::json!({"a": both, "b": both}),
        "{report}"
    );
    assert_eq!(report["unexpected"], serde_json::json!([0, 0]), "{report}");
    closed_cleanly(&report, &["a", "b"]);
    // The refusal is counted; nothing else failed.
    assert_eq!(field(&stats, "handshakes_failed"), 1, "{stats}");
    assert_eq!(field(&stats, "deliveries"), 4, "{stats}");
    let mut stats = stats;
    stats["handshakes_failed"] = 0.into();
    no_errors(&stats);
    assert!(
        status.success(),
        "the server stops cleanly on SIGTERM: {status}\n{log}"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

#[tokio::test]
async fn chromium_subscribes_from_the_query_string_and_gets_only_its_topic() {
    let test = "chromium_subscribes_from_the_query_string_and_gets_only_its_topic";
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::find(test) else {
        return;
    };
    let started = Instant::now();
    let mut server = ControlledServe::start(&["--topics"]);
    let report = browser.run(&server.url(), test, "topics");
    let stats = server.stats_once_all_left().await;
    let (status, log) = server.stop().await;
    eprintln!("{test}: page {report}\nserver {stats}\nserver log:\n{log}");

    assert_eq!(report["opened"], serde_json::json!([true, true, true]));
    // `?sub=caf%C3%A9%2Fnews` subscribed to `café/news`, decoded: what `pub café/news` sends.
    assert_eq!(
        report["received"],
        serde_json::json!({"news": ["hello news", "end"], "sport": ["hello sport", "end"]}),
        "{report}"
    );
    assert_eq!(
        report["unexpected"],
        serde_json::json!([0, 0, 0]),
        "{report}"
    );
    closed_cleanly(&report, &["news", "sport", "publisher"]);
    assert_eq!(field(&stats, "deliveries"), 4, "{stats}");
    no_errors(&stats);
    assert!(
        status.success(),
        "the server stops cleanly on SIGTERM: {status}\n{log}"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

#[tokio::test]
async fn chromium_against_the_axum_example_gets_what_it_publishes() {
    let test = "chromium_against_the_axum_example_gets_what_it_publishes";
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::find(test) else {
        return;
    };
    let Some(example) = axum_example(test) else {
        return;
    };
    let started = Instant::now();
    let app = AxumExample::start(&example);
    let report = browser.run(&app.url, test, "axum");
    let (status, stdout, log) = app.stop().await;
    eprintln!("{test}: page {report}\nexample's output:\n{stdout}\nexample's log:\n{log}");

    assert_eq!(
        report["opened"],
        serde_json::json!([true, true]),
        "{report}"
    );
    assert_eq!(
        report["published"],
        serde_json::json!([200, 200, 200, 200]),
        "{report}"
    );
    // `/ws?topic=news` got the topic's message too; `/ws` only what went to everyone.
    assert_eq!(
        report["received"],
        serde_json::json!({
            "news": ["hello everyone", "hello news", "binary:ff0080", "end"],
            "all": ["hello everyone", "binary:ff0080", "end"],
        }),
        "{report}"
    );
    assert_eq!(report["unexpected"], serde_json::json!([0, 0]), "{report}");
    closed_cleanly(&report, &["news", "all"]);
    let stats = &report["stats"];
    for (key, value) in [
        ("broadcasts", 4),
        ("handshakes_failed", 0),
        ("frames_dropped", 0),
    ] {
        assert_eq!(field(stats, key), value, "{key}: {stats}");
    }
    assert!(
        status.success(),
        "the example stops cleanly on SIGINT: {status}\n{log}"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

/// The page's sockets `names` closed with 1000, cleanly (the server answered their close).
fn closed_cleanly(report: &Value, names: &[&str]) {
    for name in names {
        let close = &report["closes"][name];
        assert_eq!(
            (&close["code"], &close["clean"]),
            (&Value::from(1000), &Value::from(true)),
            "socket {name} closes cleanly: {report}"
        );
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with rcgen, and its key, as PEM
/// files in a folder of their own (removed on drop).
struct Certificate {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certificate {
    fn new(test: &str) -> Certificate {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("a self-signed certificate");
        let dir = std::env::temp_dir().join(format!(
            "shardcast-browser-{}-{test}-tls",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the certificate's folder");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, made.cert.pem()).expect("write the certificate");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write the key");
        Certificate { dir, cert, key }
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// examples/axum.rs as `cargo test` builds it (`target/debug/examples/axum`, beside this test's
/// `deps/`), or `None` (having said so) if it is not there: a failure instead with
/// `SHARDCAST_REQUIRE_BROWSER=1`. `cargo test` with no target chosen builds it; `cargo test
/// --test browser` does not (`cargo build --example axum` first).
fn axum_example(test: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("this test's path");
    let example = exe
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("examples").join("axum"))
        .filter(|path| path.is_file());
    if example.is_none() {
        let missing = format!(
            "no examples/axum beside {} (`cargo build --example axum`)",
            exe.display()
        );
        assert!(
            std::env::var_os("SHARDCAST_REQUIRE_BROWSER").is_none_or(|v| v != "1"),
            "{test}: {missing}, and SHARDCAST_REQUIRE_BROWSER=1"
        );
        skipped(&format!("{test}: {missing}"));
    }
    example
}

/// examples/axum.rs running on a loopback port with 2 shards (killed on drop).
struct AxumExample {
    process: Serve,
    /// Its address, `http://IP:PORT/`.
    url: String,
    /// The lines of its standard output after the first.
    lines: Receiver<String>,
}

impl AxumExample {
    fn start(example: &Path) -> AxumExample {
        let mut command = Command::new(example);
        command
            .args(["--addr", "127.0.0.1:0", "--shards", "2"])
            .env("RUST_LOG", "shardcast=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = Serve::spawn(&mut command);
        let stdout = process.child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::sync_channel(16);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = lines
            .recv_timeout(WAIT)
            .expect("the example announces its address in time");
        // `http://ADDR/ (WebSocket: ws://ADDR/ws), 2 shards`
        let url = first
            .split_once(' ')
            .map(|(url, _)| url.to_owned())
            .filter(|url| url.starts_with("http://127.0.0.1:") && first.ends_with(", 2 shards"))
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
        process.addr = url.clone();
        AxumExample {
            process,
            url,
            lines,
        }
    }

    /// Stops it as Ctrl-C does (SIGINT); its exit status, the rest of its standard output, and
    /// what it logged.
    async fn stop(mut self) -> (std::process::ExitStatus, String, String) {
        let status = Command::new("kill")
            .args(["-INT", &self.process.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT failed");
        let (status, log) = self.process.exit_status().await;
        let stdout = self.lines.try_iter().collect::<Vec<_>>().join("\n");
        (status, stdout, log)
    }
}

/// What the page must have seen whatever was negotiated: Chromium offering permessage-deflate
/// (as every browser does) on both sockets, each answered 101; each of the three messages
/// (text, text, binary) received by both sockets, in order, byte for byte, and parsing back to
/// the same JSON; nothing else; and the server's answer to each close (1000).
fn everything_arrived(report: &Value) {
    let handshakes = report["handshakes"].as_array().expect("handshakes");
    assert_eq!(handshakes.len(), 2, "{report}");
    for handshake in handshakes {
        assert_eq!(handshake["status"], 101, "{report}");
        let offer = handshake["offer"].as_str().unwrap_or_default();
        assert!(offer.contains("permessage-deflate"), "{report}");
    }
    let sent = &report["sent"];
    let expected = [
        ("text", field(sent, "doc")),
        ("text", field(sent, "small")),
        ("binary", field(sent, "binary")),
    ];
    assert!(
        field(sent, "doc") > 2048 && field(sent, "binary") > 16384,
        "a document of a few KiB, and a larger one: {sent}"
    );
    for socket in ["a", "b"] {
        let received = report["received"][socket].as_array().expect("received");
        assert_eq!(received.len(), expected.len(), "socket {socket}: {report}");
        for (got, (kind, length)) in received.iter().zip(expected) {
            assert_eq!(got["kind"], kind, "socket {socket}: {report}");
            assert_eq!(field(got, "length"), length, "socket {socket}: {report}");
            assert_eq!(
                got["exact"], true,
                "socket {socket}, byte for byte: {report}"
            );
            assert_eq!(
                got["json"], true,
                "socket {socket}, the same JSON: {report}"
            );
        }
        let close = &report["closes"][socket];
        assert_eq!(
            (&close["code"], &close["clean"]),
            (&Value::from(1000), &Value::from(true)),
            "socket {socket} closes cleanly: {report}"
        );
    }
    assert_eq!(report["unexpected"], serde_json::json!([0, 0]), "{report}");
}

/// The server's counters show no failure: no protocol error, failed upgrade, eviction, drop,
/// or refused compressed message, and the deflate clients' gauge back to 0 with the clients.
fn no_errors(stats: &Value) {
    for key in [
        "protocol_errors",
        "handshakes_failed",
        "evicted",
        "frames_dropped",
        "deflate_too_big",
        "deflate_corrupt",
        "clients",
        "deflate_clients",
    ] {
        assert_eq!(field(stats, key), 0, "{key}: {stats}");
    }
}

/// The unsigned integer at `key` of a JSON object.
fn field(json: &Value, key: &str) -> u64 {
    json[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key} in {json}"))
}

/// A JSON array of strings.
fn strings(json: &Value) -> Vec<&str> {
    json.as_array()
        .unwrap_or_else(|| panic!("not an array: {json}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

/// What drives the browser: the Chromium binary, `node`, and `playwright-core` installed in
/// `baselines/`.
struct Browser {
    chromium: PathBuf,
    node: PathBuf,
    baselines: PathBuf,
}

impl Browser {
    /// What test `test` needs, or `None` (having said so) if something is missing: a failure
    /// instead with `SHARDCAST_REQUIRE_BROWSER=1`.
    fn find(test: &str) -> Option<Browser> {
        let chromium = std::env::var_os("CHROMIUM")
            .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        let baselines = Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines");
        let node = on_path("node");
        let missing = if !chromium.is_file() {
            format!(
                "no Chromium at {} (`apt-get install chromium`, or set CHROMIUM)",
                chromium.display()
            )
        } else if node.is_none() {
            "no `node` on PATH".to_owned()
        } else if !baselines
            .join("node_modules/playwright-core/package.json")
            .is_file()
        {
            "no playwright-core in baselines/node_modules (`npm ci --prefix baselines`)".to_owned()
        } else {
            return Some(Browser {
                chromium,
                node: node.expect("checked"),
                baselines,
            });
        };
        assert!(
            std::env::var_os("SHARDCAST_REQUIRE_BROWSER").is_none_or(|v| v != "1"),
            "{test}: {missing}, and SHARDCAST_REQUIRE_BROWSER=1"
        );
        skipped(&format!("{test}: {missing}"));
        None
    }

    /// Runs the page against `url` in a fresh profile (removed after); what the page reported.
    /// `scenario` is the page's (see tests/browser/check.mjs).
    fn run(&self, url: &str, test: &str, scenario: &str) -> Value {
        let profile =
            std::env::temp_dir().join(format!("shardcast-browser-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create the browser's profile directory");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check.mjs");
        let mut command = Command::new(&self.node);
        command
            .arg(script)
            .arg(url)
            .arg(&profile)
            .arg(&self.baselines)
            .arg(scenario)
            .env("CHROMIUM", &self.chromium)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let outcome = run_bounded(&mut command);
        let _ = std::fs::remove_dir_all(&profile);
        let (status, stdout, stderr) = outcome;
        assert!(
            status.success(),
            "{test}: the page's script failed ({status})\nstdout: {stdout}\nstderr: {stderr}"
        );
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("{test}: the page's report is not JSON ({e}): {stdout}\nstderr: {stderr}")
        })
    }
}

/// `name` in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `command` to its end within [`RUN_MAX`]; past it, SIGTERM (the script closes its
/// browser) and, after [`GRACE`], SIGKILL. Its exit status, standard output and error.
fn run_bounded(command: &mut Command) -> (std::process::ExitStatus, String, String) {
    let mut child = command.spawn().expect("start node");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out = read_on_a_thread(stdout);
    let err = read_on_a_thread(stderr);
    // Standard output ends when the script does (the browser does not hold it).
    let stdout = match out.recv_timeout(RUN_MAX) {
        Ok(text) => text,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let text = out.recv_timeout(GRACE).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.recv_timeout(GRACE).unwrap_or_default();
            panic!(
                "the page's script did not finish within {RUN_MAX:?}\nstdout: {text}\n\
                 stderr: {stderr}"
            );
        }
    };
    let stderr = err.recv_timeout(GRACE).unwrap_or_default();
    let status = child.wait().expect("wait for node");
    (status, stdout, stderr)
}

/// Reads `pipe` to its end on a thread of its own; the text, when it ends.
fn read_on_a_thread(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// `shardcast serve --control-stdin` on a loopback port (killed on drop): the counters on
/// request.
struct ControlledServe {
    serve: Serve,
    stdin: ChildStdin,
    /// The lines of its standard output.
    lines: Receiver<String>,
    /// `ws`, or `wss`.
    scheme: &'static str,
}

impl ControlledServe {
    /// Starts `shardcast serve` on an ephemeral loopback port with 2 shards, `--control-stdin`
    /// and `flags`, logging each connection (`RUST_LOG=shardcast=debug`), and reads its address
    /// from its announcement.
    fn start(flags: &[&str]) -> ControlledServe {
        ControlledServe::start_scheme("ws", flags)
    }

    /// Like [`ControlledServe::start`], with flags that make it serve `scheme` (`wss` with
    /// `--tls-cert` and `--tls-key`).
    fn start_scheme(scheme: &'static str, flags: &[&str]) -> ControlledServe {
        let mut command = shardcast([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--control-stdin",
        ]);
        command
            .args(flags)
            .env("RUST_LOG", "shardcast=debug")
            .stdin(Stdio::piped());
        let mut serve = Serve::spawn(&mut command);
        let stdin = serve.child.stdin.take().expect("piped stdin");
        let stdout = serve.child.stdout.take().expect("piped stdout");
        // Bounded: only the answers to `stats` come after the announcement, one per question.
        let (tx, lines) = std::sync::mpsc::sync_channel(16);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = lines
            .recv_timeout(WAIT)
            .expect("the server announces its address in time");
        let addr = first
            .strip_prefix(&format!("shardcast serving on {scheme}://"))
            .and_then(|rest| rest.strip_suffix("/ with 2 shards"))
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
        serve.addr = addr.to_owned();
        ControlledServe {
            serve,
            stdin,
            lines,
            scheme,
        }
    }

    /// The URL a browser connects to.
    fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.serve.addr)
    }

    /// Its counters (`stats`), read once no client is left (the page closed its sockets, and
    /// the server counts them gone when it has answered their close): bounded by [`WAIT`].
    async fn stats_once_all_left(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.stats(deadline);
            if field(&stats, "clients") == 0 || Instant::now() >= deadline {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asks for its counters, and reads the answer by `deadline`.
    fn stats(&mut self, deadline: Instant) -> Value {
        writeln!(self.stdin, "stats").expect("ask the server for its counters");
        self.stdin.flush().expect("flush");
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| match e {
                    RecvTimeoutError::Timeout => panic!("no answer to `stats` in time"),
                    RecvTimeoutError::Disconnected => panic!("the server's output ended"),
                });
            if let Some(json) = line.strip_prefix("stats ") {
                return serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("`stats` answered {json} ({e})"));
            }
        }
    }

    /// Stops it with SIGTERM; its exit status and what it logged.
    async fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.serve.terminate();
        self.serve.exit_status().await
    }
}
