//! The metrics port (`serve --metrics-addr`): `GET /metrics` (the Prometheus text format) and
//! `GET /health`, over HTTP/1.1, one request per connection, served so that nothing a peer or
//! the machine does can make it spin or grow.
//!
//! # Bounds
//!
//! - At most [`CONNECTIONS_MAX`] connections at once; one more is closed at once.
//! - A connection has [`DEADLINE`] in all to send its request (at most [`REQUEST_BYTES_MAX`])
//!   and take the answer; then it is closed.
//! - An accept that fails (the process out of descriptors, say) backs off, from
//!   [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], and is logged at most once every
//!   [`LOG_EVERY`], with how many failed meanwhile: a pending connection the kernel keeps
//!   offering cannot make the loop spin or fill the log.

use metrics_exporter_prometheus::PrometheusHandle;
use shardcast::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Connections served at once.
pub(crate) const CONNECTIONS_MAX: usize = 64;

/// Bytes of a request (its line and headers).
pub(crate) const REQUEST_BYTES_MAX: usize = 8 << 10;

/// Time a connection has, from accept to the end of the answer.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

/// The first wait after a failed accept, doubled after each failure in a row.
const BACKOFF_MIN: Duration = Duration::from_millis(5);

/// The longest wait after failed accepts.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// At most one warning about failed accepts per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `metrics` and the health of `engine` on `listener` until the runtime stops.
pub(crate) async fn serve(listener: TcpListener, metrics: PrometheusHandle, engine: Engine) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut backoff = BACKOFF_MIN;
    let mut failures = Throttle::default();
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                backoff = BACKOFF_MIN;
                // Over the cap: closed at once, which costs nothing to hold.
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    continue;
                };
                let (metrics, engine) = (metrics.clone(), engine.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(DEADLINE, answer(tcp, &metrics, &engine)).await;
                });
            }
            Err(e) => {
                if let Some(suppressed) = failures.note(Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "metrics port: accept failed, backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Reads one request from `tcp` and answers it.
async fn answer(mut tcp: TcpStream, metrics: &PrometheusHandle, engine: &Engine) {
    let mut buf = Vec::with_capacity(1024);
    let route = loop {
        if buf.len() >= REQUEST_BYTES_MAX {
            break Err(431);
        }
        let mut chunk = [0u8; 4096];
        let room = (REQUEST_BYTES_MAX - buf.len()).min(chunk.len());
        match tcp.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break Ok((
                    request.method.unwrap_or_default() == "GET",
                    request.path.unwrap_or_default().to_owned(),
                ));
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => break Err(400),
        }
    };
    let (status, body) = match route {
        Err(status) => (status, String::new()),
        Ok((false, _)) => (405, String::new()),
        Ok((true, path)) => match path.split('?').next().unwrap_or_default() {
            "/metrics" => (200, metrics.render()),
            // Healthy while the engine serves (its shards are gone after a shutdown).
            "/health" if engine.shard_count() > 0 => (200, "ok\n".to_owned()),
            "/health" => (503, "stopped\n".to_owned()),
            _ => (404, String::new()),
        },
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if tcp.write_all(head.as_bytes()).await.is_ok() {
        let _ = tcp.write_all(body.as_bytes()).await;
    }
    let _ = tcp.shutdown().await;
}

/// Counts failures and says when one may be logged: the first, then at most one per
/// [`LOG_EVERY`].
#[derive(Default)]
struct Throttle {
    /// When a failure was last logged.
    logged: Option<Instant>,
    /// Failures since then, not logged.
    suppressed: u64,
}

impl Throttle {
    /// Notes a failure at `now`; `Some(failures not logged since the last log)` if this one
    /// may be logged.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self.logged.is_some_and(|at| now < at + LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_logs_the_first_failure_then_one_per_period_with_the_rest_counted() {
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.note(t0), Some(0));
        for i in 1..100 {
            assert_eq!(throttle.note(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.note(t0 + LOG_EVERY), Some(99));
        assert_eq!(throttle.note(t0 + LOG_EVERY + Duration::from_secs(1)), None);
    }
}
