//! Engines on the test's own thread and clock (`build_local`, a paused clock), and clients over
//! in-memory pipes.

use super::WAIT;
use futures_util::StreamExt;
use shardcast::{Builder, ClientId, Engine};
use std::future::Future;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A client over an in-memory pipe.
pub type Pipe = WebSocketStream<DuplexStream>;

/// Bytes each direction of a client's pipe holds before its writer waits.
pub const PIPE_BYTES: usize = 64 << 10;

/// Runs `test` on a `LocalSet` of this thread, where `build_local` engines run.
pub async fn local<F: Future>(test: F) -> F::Output {
    tokio::task::LocalSet::new().run_until(test).await
}

/// Starts an engine on this thread (inside [`local`]).
pub fn start_local(builder: Builder) -> Engine {
    builder.build_local().expect("build")
}

/// Lets `d` of paused time pass: the clock jumps from timer to timer, and every task due at
/// each one runs before the next.
pub async fn elapse(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The text messages `ws` has received, until none arrives within `d` (on a paused clock, a
/// wait the clock skips once everything is idle).
pub async fn texts_within(ws: &mut Pipe, d: Duration) -> Vec<String> {
    let mut texts = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(d, ws.next()).await {
        if let Message::Text(text) = message {
            texts.push(text.to_string());
        }
    }
    texts
}

/// The client of an upgrade to `ws://localhost{path}` over `stream` (the client's side of a pipe,
/// say), once the server has answered 101. Bounded by [`WAIT`]: not for a paused clock, which
/// would skip ahead while shard threads work.
pub async fn upgrade_over<S>(stream: S, path: &str) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let url = format!("ws://localhost{path}");
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .expect("upgrade accepted");
    ws
}

/// Connects a client over a pipe of [`PIPE_BYTES`]; the upgrade runs on its shard.
pub async fn connect_pipe(engine: &Engine) -> (Pipe, ClientId) {
    connect_with_pipe(engine, PIPE_BYTES).await
}

/// Connects a client over a pipe holding `bytes` each way.
pub async fn connect_with_pipe(engine: &Engine, bytes: usize) -> (Pipe, ClientId) {
    let (client, server) = tokio::io::duplex(bytes);
    let id = engine.register(server).await.expect("register");
    let (ws, _) = tokio_tungstenite::client_async("ws://localhost/", client)
        .await
        .expect("upgrade");
    (ws, id)
}
