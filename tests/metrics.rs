//! `Metrics` (feature `metrics`): an engine's counters, recorded into a Prometheus recorder,
//! render under their Prometheus names with shard and reason labels.
#![cfg(feature = "metrics")]

mod common;

use common::*;
use metrics_exporter_prometheus::PrometheusHandle;
use shardcast::Audience;
use std::collections::HashMap;

/// A Prometheus text exposition, and its samples.
struct Exposition {
    /// The text, as rendered.
    text: String,
    /// `name{labels}` (as rendered) to value.
    samples: HashMap<String, f64>,
}

impl Exposition {
    /// What `handle` renders now.
    fn render(handle: &PrometheusHandle) -> Exposition {
        let text = handle.render();
        let samples = (text.lines())
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Exposition { text, samples }
    }

    /// The value of `series`, which must be there.
    fn value(&self, series: &str) -> f64 {
        *(self.samples.get(series))
            .unwrap_or_else(|| panic!("{series} missing from:\n{}", self.text))
    }
}

#[tokio::test]
async fn metrics_record_clients_broadcasts_and_deliveries_by_shard() {
    let (engine, addr) = start(builder().shards(2)).await;
    let mut clients = connect_many(&engine, addr, 3).await;
    for i in 0..5 {
        broadcast(&engine, format!("m{i}"), Audience::ALL).await;
    }
    for ws in clients.iter_mut() {
        for i in 0..5 {
            assert_eq!(next_text(ws).await, format!("m{i}"));
        }
    }
    // A shard counts a write once the call returns, which may be a moment after the client
    // read the frames (with io_uring, after the submission that made them): let it settle.
    eventually(|| {
        let t = engine.stats().total;
        t.bytes_written > 0 && t.deliveries == 15
    })
    .await;

    let (metrics, handle) = recorded(&engine);
    let exposition = Exposition::render(&handle);
    let text = &exposition.text;
    let value = |series: &str| exposition.value(series);

    let stats = engine.stats();
    assert_eq!(value("shardcast_broadcasts_total"), 5.0);
    let build = format!(
        "shardcast_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&build), 1.0);
    assert_eq!(value("shardcast_connections"), 3.0);
    let mut clients_total = 0.0;
    let mut deliveries_total = 0.0;
    let mut written = 0.0;
    for (i, shard) in stats.shards.iter().enumerate() {
        let clients = value(&format!("shardcast_clients{{shard=\"{i}\"}}"));
        assert_eq!(clients, shard.clients as f64);
        clients_total += clients;
        let deliveries = value(&format!("shardcast_deliveries_total{{shard=\"{i}\"}}"));
        deliveries_total += deliveries;
        assert_eq!(
            value(&format!(
                "shardcast_broadcasts_applied_total{{shard=\"{i}\"}}"
            )),
            5.0
        );
        written += value(&format!("shardcast_written_bytes_total{{shard=\"{i}\"}}"));
        // These clients did not offer permessage-deflate: its families are there, at zero.
        for series in [
            "shardcast_deflate_clients",
            "shardcast_deflate_deliveries_total",
            "shardcast_deflate_saved_bytes_total",
            "shardcast_inflated_messages_total",
        ] {
            assert_eq!(value(&format!("{series}{{shard=\"{i}\"}}")), 0.0);
        }
        for reason in ["too_big", "corrupt"] {
            let series =
                format!("shardcast_inflate_refused_total{{shard=\"{i}\",reason=\"{reason}\"}}");
            assert_eq!(value(&series), 0.0);
        }
        for reason in [
            "slow_consumer",
            "write_deadline",
            "heartbeat",
            "auth_deadline",
            "protocol",
        ] {
            assert_eq!(
                value(&format!(
                    "shardcast_evictions_total{{shard=\"{i}\",reason=\"{reason}\"}}"
                )),
                0.0
            );
        }
    }
    assert_eq!(clients_total, 3.0);
    // Every client received every broadcast before the snapshot.
    assert_eq!(deliveries_total, 15.0);
    assert!(written > 0.0, "{text}");
    assert!(
        text.contains("# TYPE shardcast_deliveries_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE shardcast_clients gauge"), "{text}");
    // Labels are shards and reasons only (and the version, once): never a client or a topic.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, labels)) = line.split_once('{') {
            let labels = labels.split_once('}').expect("closed labels").0;
            for label in labels.split(',') {
                let key = label.split_once('=').expect("key=value").0;
                assert!(
                    ["shard", "reason"].contains(&key) || line.starts_with("shardcast_build_info{"),
                    "label {key} in {line}"
                );
            }
        }
    }

    // Counters move forward with the engine; gauges follow it down.
    drop(clients);
    eventually(|| engine.client_count() == 0).await;
    metrics.record();
    let exposition = Exposition::render(&handle);
    let sum = |series: &str| -> f64 {
        (0..2)
            .map(|i| exposition.value(&series.replace("SHARD", &i.to_string())))
            .sum()
    };
    assert_eq!(sum("shardcast_registered_total{shard=\"SHARD\"}"), 3.0);
    // Dropped without a close frame: their connections ended.
    assert_eq!(
        sum("shardcast_closes_total{shard=\"SHARD\",reason=\"disconnected\"}")
            + sum("shardcast_closes_total{shard=\"SHARD\",reason=\"by_client\"}"),
        3.0
    );
    assert_eq!(exposition.value("shardcast_clients{shard=\"0\"}"), 0.0);
    assert_eq!(exposition.value("shardcast_clients{shard=\"1\"}"), 0.0);
    assert_eq!(exposition.value("shardcast_broadcasts_total"), 5.0);
    engine.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn metrics_show_the_inbox_queue_and_the_clients_it_pauses() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    local(async {
        let engine = start_local(builder().shards(1).inbox(true).inbox_capacity(1));
        // Taken and never read: `Registered` fills the queue, and the message waits.
        let _inbox = engine.inbox().expect("an inbox");
        let (mut ws, _) = connect_pipe(&engine).await;
        ws.send(Message::text("waits")).await.expect("send");
        elapse(std::time::Duration::from_millis(10)).await;
        let (_metrics, handle) = recorded(&engine);
        let exposition = Exposition::render(&handle);
        let text = &exposition.text;
        let value = |series: &str| exposition.value(&format!("{series}{{shard=\"0\"}}"));
        assert_eq!(value("shardcast_inbox_events_total"), 1.0);
        assert_eq!(value("shardcast_inbox_depth"), 1.0);
        assert_eq!(value("shardcast_inbox_pauses_total"), 1.0);
        assert_eq!(value("shardcast_inbox_waiting"), 1.0);
        assert_eq!(value("shardcast_inbox_lost_total"), 0.0);
        assert!(
            text.contains("# TYPE shardcast_inbox_depth gauge"),
            "{text}"
        );
        engine.shutdown(std::time::Duration::from_secs(1)).await;
    })
    .await;
}

/// Every `shardcast_*` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("shardcast_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..len].to_owned());
        rest = &tail[len..];
    }
    names
}

#[test]
fn the_grafana_dashboard_refers_only_to_metrics_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard =
        std::fs::read_to_string(format!("{root}/examples/deploy/grafana-dashboard.json"))
            .expect("the dashboard");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let mut exprs = Vec::new();
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("an expr").to_owned());
        }
    }
    assert!(exprs.len() >= 19, "{exprs:?}");
    // The names the recorder registers: the `name` module of src/telemetry.rs.
    let telemetry = std::fs::read_to_string(format!("{root}/src/telemetry.rs")).expect("source");
    let module = telemetry
        .split_once("mod name {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .expect("the name module")
        .0;
    let exported = metric_names(module);
    assert!(exported.len() >= 30, "{exported:?}");
    let used = metric_names(&exprs.join("\n"));
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "the dashboard refers to {unknown:?}");
    // And every family the engine exports is on it.
    let unshown: Vec<_> = exported.difference(&used).collect();
    assert!(unshown.is_empty(), "not on the dashboard: {unshown:?}");
}
