//! The accept loop of a listener born on its shard, and the adoption of streams handed over.

use super::super::command::{Stream, Wrap};
use super::open::{self, Source};
use super::shared::Shared;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// The first wait after a failed accept, doubled after each failure in a row.
const BACKOFF_MIN: Duration = Duration::from_millis(5);

/// The longest wait after failed accepts.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// At most one warning about failed accepts per shard per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Adopts a stream on this shard's runtime; returns it with its peer's address, if known.
pub(crate) fn adopt(shared: &Shared, stream: Stream) -> io::Result<(Source, Option<SocketAddr>)> {
    match stream {
        Stream::Tcp(std, wrap) => {
            let peer = std.peer_addr().ok();
            let tcp = tokio::net::TcpStream::from_std(std)?;
            tcp.set_nodelay(true)?;
            Ok((source(shared, tcp, wrap), peer))
        }
        Stream::Boxed(io, peer) => Ok((Source::Ready(io), peer)),
    }
}

/// A TCP stream born on this shard, to be wrapped, or used as it is: by the shard's event loop
/// once upgraded, if it runs.
fn source(shared: &Shared, tcp: tokio::net::TcpStream, wrap: Option<Arc<dyn Wrap>>) -> Source {
    match wrap {
        Some(wrap) => Source::Wrap(tcp, wrap),
        None if shared.looped() => Source::Tcp(tcp),
        None => Source::Ready(Box::new(tcp)),
    }
}

/// Accepts connections born on this shard until shutdown.
pub(crate) async fn accept(
    shared: Rc<Shared>,
    listener: std::net::TcpListener,
    wrap: Option<Arc<dyn Wrap>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(shard = shared.id.0, error = %e, "cannot adopt listener");
            return;
        }
    };
    let mut backoff = BACKOFF_MIN;
    // When a failed accept was last logged, and how many failed since without a log.
    let (mut logged, mut suppressed): (Option<Instant>, u64) = (None, 0);
    loop {
        let accepted = tokio::select! {
            () = shared.stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = BACKOFF_MIN;
                let Some(id) = shared.admission.admit_on(shared.id) else {
                    // Over `clients_max`: refuse by closing at once.
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                shared.core.borrow_mut().handle_opening();
                let source = source(&shared, tcp, wrap.clone());
                open::spawn(shared.clone(), id, source, None, Some(peer), None);
            }
            Err(e) => {
                // Out of file descriptors or similar: the kernel offers the same pending
                // connection again at once, so back off instead of spinning, and log at most
                // once per LOG_EVERY, with how many failed meanwhile.
                let now = Instant::now();
                if logged.is_none_or(|at| now >= at + LOG_EVERY) {
                    tracing::warn!(shard = shared.id.0, error = %e, suppressed, "accept failed, backing off");
                    (logged, suppressed) = (Some(now), 0);
                } else {
                    suppressed += 1;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
