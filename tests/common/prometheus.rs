//! The engine's `Metrics` rendered by a Prometheus recorder of the test's own.

use shardcast::Engine;

/// `engine`'s `Metrics` in a Prometheus recorder of their own, recorded once; and the handle
/// that renders them.
pub fn recorded(
    engine: &Engine,
) -> (
    shardcast::Metrics,
    metrics_exporter_prometheus::PrometheusHandle,
) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let metrics = metrics::with_local_recorder(&recorder, || shardcast::Metrics::new(engine));
    metrics.record();
    (metrics, handle)
}
