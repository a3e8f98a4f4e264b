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
    loop {
        let accepted = tokio::select! {
            () = shared.stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
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
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(shard = shared.id.0, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
