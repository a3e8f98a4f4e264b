//! What `serve` tells operators: logs on standard error (`tracing`, filtered by `RUST_LOG`) and
//! Prometheus metrics over HTTP (`--metrics-addr`).
//!
//! Standard output stays the server's announcement, which scripts parse; logs never go there.

use crate::serve::LogFormat;
use metrics_exporter_prometheus::PrometheusBuilder;
use shardcast::{Engine, Metrics, Stats};
use std::error::Error;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// How often the engine's counters are copied into the exporter: a scrape sees values at most
/// this old. A copy is a few dozen atomic loads per shard.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// Installs the log subscriber: `RUST_LOG` if set (e.g. `RUST_LOG=shardcast=debug` for a line
/// per connection), else `info`; to standard error, as text (in colour only on a terminal) or
/// as one JSON object per line (`timestamp`, `level`, `target`, `fields`, and the spans).
pub(crate) fn install_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Either fails only if a subscriber is already installed, and then that one logs.
    let _ = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => fmt.json().with_ansi(false).try_init(),
    };
}

/// Serves `engine`'s metrics at `http://addr/metrics` in the Prometheus text format, recorded
/// every [`RECORD_EVERY`], and its health at `http://addr/health`, through the bounded server
/// of `scrape`. Call it on the runtime that will serve them.
///
/// # Errors
///
/// If `addr` has port 0 (the announcement names the port asked for) or cannot be listened on.
pub(crate) fn serve_metrics(addr: SocketAddr, engine: &Engine) -> Result<(), Box<dyn Error>> {
    if addr.port() == 0 {
        return Err("invalid --metrics-addr: needs a port other than 0".into());
    }
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let metrics = Metrics::new(engine);
    metrics.record();
    tokio::spawn(metrics.run(RECORD_EVERY));
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RECORD_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(crate::scrape::serve(listener, handle, engine.clone()));
    tracing::info!("metrics on http://{addr}/metrics, health on http://{addr}/health");
    Ok(())
}

/// Logs what the server did, once it has stopped; `clients` were connected when it was asked
/// to stop.
pub(crate) fn log_summary(clients: u64, stats: &Stats) {
    let t = &stats.total;
    let e = &t.evicted;
    tracing::info!(
        clients,
        broadcasts = stats.broadcasts,
        deliveries = t.deliveries,
        evictions = e.slow_consumer + e.write_deadline + e.heartbeat + e.auth_deadline,
        protocol_errors = e.protocol,
        frames_dropped = t.frames_dropped,
        handshakes_failed = t.handshakes_failed,
        "stopped"
    );
}
