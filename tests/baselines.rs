//! `shardcast bench` against the baselines it starts itself, uWebSockets through Bun and a Node
//! `ws` relay, the engine behind axum, and with `--topics` the naive one too: frames flow, none is lost, and with topics
//! each publication reaches exactly its topic's subscribers. Against the embedded server, the
//! figures the topics work is judged by (server CPU per publication, TCP segments per delivery)
//! are there and in range, and null where the bench cannot know them. Each test of an external baseline
//! is skipped when `npm ci --prefix baselines` has not installed it (CI installs them): it then
//! passes having checked nothing, so it says so on the terminal, past the test harness's capture.
//! With `--payload-json` and `--deflate`: JSON documents arrive whole and in order, compressed
//! by Bun and inflated by the bench's clients, and the report says how many bytes each
//! delivery took on the wire.

mod common;

use common::serve::{Serve, run_to_end, shardcast};
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

/// The number at `key` in the report, `None` if it is null; panics if it is missing or
/// neither.
fn number(report: &str, key: &str) -> Option<f64> {
    let key = format!("\"{key}\":");
    let at = report
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in {report}"))
        + key.len();
    let value = report[at..].split([',', '}']).next().unwrap_or_default();
    (value != "null").then(|| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{key} is neither a number nor null in {report}"))
    })
}

/// The number at `key` in the report; panics if it is missing or null.
fn figure(report: &str, key: &str) -> f64 {
    number(report, key).unwrap_or_else(|| panic!("{key} is null in {report}"))
}

/// Checks that the nodes published at most one NATS message per publication (fewer where
/// consecutive broadcasts travelled together), and some.
fn assert_at_most_one_message_per_publication(report: &str) {
    let ratio = figure(report, "broker_messages_per_publish");
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

/// The most TCP segments per delivery a run of [`figures_are_in_range`] may report. The bench's
/// own connections send at most two per delivery: the segment that carries it (a 32 B frame,
/// far below the loopback MSS, often with others) and the client's ack; the publisher's
/// segment, the server's ack and the publisher's echo add a few per round, over a round's
/// 160 to 800 deliveries. The counter is the whole machine's, though: whatever else runs in
/// the same window adds to it; 4 leaves room for that, and a wrong divisor (publications: 10
/// to 50 times more) or a count not taken over the window (since boot) still fails.
const SEGMENTS_PER_DELIVERY_MAX: f64 = 4.0;

/// Runs of [`figures_are_in_range`] before too many segments fail it. Other traffic can only
/// add segments, never take them away, so the fewest of a few runs is the closest to the
/// bench's own; a count that is wrong is wrong in every run.
const SEGMENT_RUNS_MAX: usize = 3;

#[test]
fn bench_reports_server_cpu_per_publication_and_tcp_segments_per_delivery() {
    figures_are_in_range(&["--clients", "50", "--rounds", "20"]);
}

#[test]
fn bench_with_topics_reports_server_cpu_per_publication_and_tcp_segments_per_delivery() {
    figures_are_in_range(&[
        "--topics",
        "10",
        "--subscriptions",
        "2",
        "--clients",
        "50",
        "--rounds",
        "20",
    ]);
}

/// Runs `bench args` against the embedded server: server CPU per publication is a number above
/// 0, the server's CPU time over the publications (not the deliveries); TCP segments per
/// delivery is above 0 and at most [`SEGMENTS_PER_DELIVERY_MAX`] in one of
/// [`SEGMENT_RUNS_MAX`] runs.
fn figures_are_in_range(args: &[&str]) {
    let mut segments = Vec::new();
    while segments.len() < SEGMENT_RUNS_MAX {
        let report = bench("embedded", args);
        let per_publication = figure(&report, "server_cpu_ns_per_publication");
        assert!(
            per_publication.is_finite() && per_publication > 0.0,
            "{report}"
        );
        let deliveries = field(&report, "deliveries") as f64;
        let publishes = field(&report, "publishes") as f64;
        let per_delivery = figure(&report, "server_cpu_ns_per_delivery");
        // The same CPU time, over the publications (both printed to 0.001 ns).
        let expected = per_delivery * deliveries / publishes;
        assert!(
            (per_publication - expected).abs() <= expected * 1e-3,
            "server CPU per publication {per_publication}, per delivery x deliveries / \
             publishes {expected}: {report}"
        );
        let per_delivery = figure(&report, "tcp_segments_per_delivery");
        assert!(per_delivery > 0.0, "{report}");
        if per_delivery <= SEGMENTS_PER_DELIVERY_MAX {
            return;
        }
        segments.push(per_delivery);
    }
    panic!(
        "more than {SEGMENTS_PER_DELIVERY_MAX} TCP segments per delivery in each of \
         {SEGMENT_RUNS_MAX} runs: {segments:?}"
    );
}

#[test]
fn bench_against_an_external_target_has_no_server_cpu_but_counts_its_loopback_segments() {
    let serve = Serve::start(&[]);
    let url = format!("ws://{}/", serve.addr);
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let args = [
        "bench",
        "--target",
        &url,
        "--clients",
        "20",
        "--rounds",
        "10",
    ];
    let (status, report, errors) = run_to_end(shardcast(args).arg("--json"), RUN_MAX);
    assert!(
        status.success(),
        "shardcast bench --target {url} failed: {errors}"
    );
    // The bench knows no process of the target's.
    assert_eq!(
        number(&report, "server_cpu_ns_per_delivery"),
        None,
        "{report}"
    );
    assert_eq!(
        number(&report, "server_cpu_ns_per_publication"),
        None,
        "{report}"
    );
    // Both ends are on loopback, so the machine's counter sees them.
    assert!(
        number(&report, "tcp_segments_per_delivery").is_some_and(|s| s > 0.0),
        "{report}"
    );
}

/// A small run of JSON documents of about 1 KiB (at most 1024 B): 20 clients, 20 rounds of 4.
const JSON_RUN: [&str; 8] = [
    "--clients",
    "20",
    "--window",
    "4",
    "--rounds",
    "20",
    "--payload-json",
    "1024",
];

/// The deliveries of [`JSON_RUN`].
const JSON_DELIVERIES: u64 = 20 * 20 * 4;

/// The report of `bench server args`, parsed.
fn parsed(server: &str, args: &[&str]) -> serde_json::Value {
    let report = bench(server, args);
    serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}: {report}"))
}

/// The number at `path` of `report`; panics if it is missing or not a number.
fn at(report: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(report, |v, key| &v[key])
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {report}"))
}

/// Checks that `report` is of [`JSON_RUN`]: JSON payloads, every delivery made, nothing lost.
fn json_run_lost_nothing(report: &serde_json::Value) {
    assert_eq!(report["payload"], "json", "{report}");
    assert_eq!(at(report, &["payload_bytes"]), 1024.0, "{report}");
    assert_eq!(at(report, &["lost"]), 0.0, "{report}");
    assert_eq!(at(report, &["closed"]), 0.0, "{report}");
    assert_eq!(
        at(report, &["deliveries"]),
        JSON_DELIVERIES as f64,
        "{report}"
    );
}

#[test]
fn bench_with_json_payloads_delivers_them_whole_and_reports_their_bytes_on_the_wire() {
    let report = parsed("embedded", &JSON_RUN);
    json_run_lost_nothing(&report);
    // Plain: a document of 924 to 1024 B and a 4-byte frame header per delivery (and a pong
    // or two over the run).
    let wire = at(&report, &["wire_bytes_per_delivery"]);
    assert!(
        (928.0..=1040.0).contains(&wire),
        "{wire} B per delivery: {report}"
    );
    assert!(report["deflate"].is_null(), "{report}");
}

/// A `--deflate` run of [`JSON_RUN`] against `server`: nothing lost, every client negotiated
/// deflate, every delivery came compressed, and order-book JSON took well under half its plain
/// bytes on the wire (a third, as measured).
fn json_run_with_deflate_is_compressed_throughout(server: &str) {
    let report = parsed(server, &[&JSON_RUN[..], &["--deflate"]].concat());
    json_run_lost_nothing(&report);
    assert_eq!(at(&report, &["deflate", "negotiated"]), 20.0, "{report}");
    assert_eq!(
        at(&report, &["deflate", "compressed_deliveries"]),
        JSON_DELIVERIES as f64,
        "{report}"
    );
    let wire = at(&report, &["wire_bytes_per_delivery"]);
    assert!(
        wire > 0.0 && wire < 0.5 * 1024.0,
        "{wire} B per delivery: {report}"
    );
}

#[test]
fn bench_with_deflate_against_the_embedded_server_gets_every_delivery_compressed() {
    // Every document (924 to 1024 B, over the 256-byte threshold) goes out compressed, once
    // per broadcast.
    json_run_with_deflate_is_compressed_throughout("embedded");
}

#[test]
fn bench_with_deflate_against_bun_inflates_every_delivery_and_loses_nothing() {
    let test = "bench_with_deflate_against_bun_inflates_every_delivery_and_loses_nothing";
    if !installed(test, "bun", "node_modules/.bin/bun") {
        return;
    }
    json_run_with_deflate_is_compressed_throughout("bun");
}
