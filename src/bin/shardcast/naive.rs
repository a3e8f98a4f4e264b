//! The naive baseline: how most Rust relay servers are written today.
//!
//! tokio-tungstenite with its default buffers, a multi-thread runtime, one reader and one writer
//! task per client, and a `tokio::sync::broadcast` channel as the relay. Each message is written
//! (and flushed) on its own. It is the honest answer to "what did sharding, encode-once and
//! coalescing buy", measured side by side by `shardcast bench --server naive`.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Messages the relay channel holds; a receiver that falls further behind skips (and counts)
/// the messages it missed.
const RELAY_CAPACITY: usize = 4096;

/// What the naive server counts.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connected clients.
    pub(crate) clients: AtomicU64,
    /// Messages written to clients.
    pub(crate) deliveries: AtomicU64,
    /// Messages a lagging client skipped.
    pub(crate) lagged: AtomicU64,
}

/// Accepts on `listener` forever, relaying each message to every client (the sender too unless
/// `exclude_sender`).
pub(crate) async fn serve(
    listener: TcpListener,
    max_message_size: usize,
    exclude_sender: bool,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    let (relay, _) = broadcast::channel::<(SocketAddr, Message)>(RELAY_CAPACITY);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let relay = relay.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_message_size))
                .max_frame_size(Some(max_message_size));
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
            else {
                return;
            };
            counters.clients.fetch_add(1, Relaxed);
            let (mut sink, mut stream) = ws.split();
            let mut rx = relay.subscribe();
            let writer_counters = counters.clone();
            let writer = tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok((from, _)) if exclude_sender && from == peer => {}
                        Ok((_, message)) => {
                            if sink.send(message).await.is_err() {
                                return;
                            }
                            writer_counters.deliveries.fetch_add(1, Relaxed);
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            writer_counters.lagged.fetch_add(n, Relaxed);
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            while let Some(Ok(message)) = stream.next().await {
                if message.is_text() || message.is_binary() {
                    let _ = relay.send((peer, message));
                }
            }
            writer.abort();
            counters.clients.fetch_sub(1, Relaxed);
        });
    }
}
