//! `shardcast bench` against the baselines it starts itself, uWebSockets through Bun and a Node
//! `ws` relay, the engine behind axum, and with `--topics` the naive one too: frames flow, none is lost, and with topics
//! each publication reaches exactly its topic's subscribers. Each test of an external baseline
//! is skipped when `npm ci --prefix baselines` has not installed it (CI installs them): it then
//! passes having checked nothing, so it says so on the terminal, past the test harness's capture.

mod common;

use common::serve::{run_to_end, shardcast};
use common::{field, nats_server, skipped};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// A run takes a few seconds (connect, let the server's memory settle, 1 s of load); past this the
/// bench is stuck.
const RUN_MAX: Duration = Duration::from_secs(60);

/// One bench at a time: two on a small machine would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn bench_against_bun_delivers_and_loses_nothing() {
    bench_delivers_and_loses_nothing(
        "bench_against_bun_delivers_and_loses_nothing",
        "bun",
        "node_modules/.bin/bun",
    );
}

#[test]
fn bench_against_node_ws_delivers_and_loses_nothing() {
    bench_delivers_and_loses_nothing(
        "bench_against_node_ws_delivers_and_loses_nothing",
        "node-ws",
        "node_modules/ws",
    );
}

/// 100 clients on 10 topics, 3 each, and 2 publishers of 50 rounds of 4: each publisher takes
/// every other topic, so each topic gets 40 publications, and the 300 subscriptions make
/// 12,000 deliveries.
const TOPICS_RUN: [&str; 12] = [
    "--clients",
    "100",
    "--topics",
    "10",
    "--subscriptions",
    "3",
    "--publishers",
    "2",
    "--window",
    "4",
    "--rounds",
    "50",
];

/// The deliveries of [`TOPICS_RUN`].
const TOPICS_DELIVERIES: u64 = 12_000;

#[test]
fn bench_with_topics_against_the_embedded_server_delivers_each_publication_to_its_subscribers() {
    topics_deliver_to_their_subscribers("embedded");
}

#[test]
fn bench_with_topics_against_axum_delivers_each_publication_to_its_subscribers() {
    // `/?sub=T` goes through axum's router and the extractor to the same `on_upgrade`.
    topics_deliver_to_their_subscribers("axum");
}

#[test]
fn bench_against_the_axum_server_delivers_and_loses_nothing() {
    let report = bench("axum", &["--clients", "50", "--duration", "1"]);
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert!(field(&report, "deliveries") > 0, "{report}");
}

#[test]
fn bench_with_topics_against_naive_delivers_each_publication_to_its_subscribers() {
    topics_deliver_to_their_subscribers("naive");
}

#[test]
fn bench_with_topics_against_bun_delivers_each_publication_to_its_subscribers() {
    if installed(
        "bench_with_topics_against_bun_delivers_each_publication_to_its_subscribers",
        "bun",
        "node_modules/.bin/bun",
    ) {
        topics_deliver_to_their_subscribers("bun");
    }
}

#[test]
fn bench_with_topics_against_node_ws_delivers_each_publication_to_its_subscribers() {
    if installed(
        "bench_with_topics_against_node_ws_delivers_each_publication_to_its_subscribers",
        "node-ws",
        "node_modules/ws",
    ) {
        topics_deliver_to_their_subscribers("node-ws");
    }
}

/// Runs [`TOPICS_RUN`] against `server`: nothing lost, every expected delivery made, and the
/// expectation is the layout's.
fn topics_deliver_to_their_subscribers(server: &str) {
    let report = bench(server, &TOPICS_RUN);
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(
        field(&report, "expected_deliveries"),
        TOPICS_DELIVERIES,
        "{report}"
    );
    assert_eq!(field(&report, "deliveries"), TOPICS_DELIVERIES, "{report}");
    assert_eq!(field(&report, "publishes"), 400, "{report}");
}

/// Whether `installed` (in `baselines/`) is there; if not, test `test` is skipped, saying so.
fn installed(test: &str, server: &str, installed: &str) -> bool {
    let baselines = Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines");
    if baselines.join(installed).exists() {
        return true;
    }
    skipped(&format!(
        "{test}: the {server} baseline is not installed (no baselines/{installed}); install it \
         with `npm ci --prefix baselines`"
    ));
    false
}

/// Runs `shardcast bench --server server` briefly and checks its report, unless `installed`
/// (in `baselines/`) is missing: then test `test` is skipped, saying so.
fn bench_delivers_and_loses_nothing(test: &str, server: &str, installed_at: &str) {
    if !installed(test, server, installed_at) {
        return;
    }
    let report = bench(server, &["--clients", "50", "--duration", "1"]);
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert!(field(&report, "deliveries") > 0, "{report}");
}

/// Runs `shardcast bench --server server args --json`, one at a time; returns its report,
/// checked to be `server`'s.
fn bench(server: &str, args: &[&str]) -> String {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut bench = shardcast(["bench", "--server", server]);
    bench
        .args(args)
        .arg("--json")
        .env_remove("SHARDCAST_BASELINES");
    let (status, report, errors) = run_to_end(&mut bench, RUN_MAX);
    assert!(
        status.success(),
        "shardcast bench --server {server} failed: {errors}"
    );

    // `embedded x2 nats` with `--nodes 2`.
    assert!(
        report.contains(&format!("\"server\":\"{server}\""))
            || report.contains(&format!("\"server\":\"{server} x")),
        "{report}"
    );
    report
}

/// Runs `shardcast bench --nodes 2 args` (see [`bench`]) through a `nats-server`, if there is
/// one: if not, test `test` is skipped, saying so, and this is `None`.
fn bench_on_two_nodes(test: &str, args: &[&str]) -> Option<String> {
    let nats = nats_server(test)?;
    let nats = nats.to_string_lossy();
    let nodes = ["--nodes", "2", "--nats-server", &nats];
    Some(bench("embedded", &[&nodes[..], args].concat()))
}

/// Checks that the nodes published at most one NATS message per publication (fewer where
/// consecutive broadcasts travelled together), and some.
fn assert_at_most_one_message_per_publication(report: &str) {
    let key = "\"broker_messages_per_publish\":";
    let at = report
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {report}"))
        + key.len();
    let ratio: f64 = report[at..]
        .split([',', '}'])
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a number in {report}"));
    assert!(
        ratio > 0.0 && ratio <= 1.0,
        "at most one NATS message per publication: {report}"
    );
}

/// The integer at `key` inside the object at `object` of the report.
fn nested(report: &str, object: &str, key: &str) -> u64 {
    let at = report
        .find(&format!("\"{object}\":"))
        .unwrap_or_else(|| panic!("no {object} in {report}"));
    field(&report[at..], key)
}

#[test]
fn bench_across_two_nodes_reaches_every_client_and_publishes_at_most_once_per_broadcast() {
    let test =
        "bench_across_two_nodes_reaches_every_client_and_publishes_at_most_once_per_broadcast";
    let Some(report) = bench_on_two_nodes(test, &["--clients", "40", "--rounds", "30"]) else {
        return;
    };
    assert_eq!(field(&report, "lost"), 0, "{report}");
    // Every client gets every frame of every round, whichever node it is on.
    assert_eq!(field(&report, "deliveries"), 40 * 30 * 16, "{report}");
    assert_eq!(nested(&report, "cluster", "nodes"), 2, "{report}");
    // The publisher is on node 0, half the clients on each node.
    assert_eq!(
        nested(&report, "same_node_latency_us", "count"),
        20 * 30 * 16,
        "{report}"
    );
    assert_eq!(
        nested(&report, "cross_node_latency_us", "count"),
        20 * 30 * 16,
        "{report}"
    );
    assert_at_most_one_message_per_publication(&report);
}

#[test]
fn bench_with_topics_across_two_nodes_delivers_each_publication_to_its_subscribers() {
    let test = "bench_with_topics_across_two_nodes_delivers_each_publication_to_its_subscribers";
    let Some(report) = bench_on_two_nodes(test, &TOPICS_RUN) else {
        return;
    };
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(field(&report, "deliveries"), TOPICS_DELIVERIES, "{report}");
    assert!(
        nested(&report, "cross_node_latency_us", "count") > 0,
        "{report}"
    );
    assert_at_most_one_message_per_publication(&report);
}
