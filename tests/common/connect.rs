//! WebSocket clients over loopback TCP, connected once the engine counts them.

use super::{WAIT, eventually};
use shardcast::{ClientId, Engine};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client as the tests see it.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects one client and waits until the engine counts it as registered.
///
/// Not until a handler has seen it: the shard runs `on_registered` just after it counts the
/// client, and may be preempted in between. A test that learns ids from a [`Recorder`] uses
/// [`connect_with_id`] or [`connect_many_with_ids`].
pub async fn connect(engine: &Engine, addr: SocketAddr) -> Client {
    let before = engine.client_count();
    let (ws, _) = connect_to(format!("ws://{addr}/")).await;
    // The shard admits the client in the same poll in which it writes the 101, so no
    // broadcast can fall in between; but this thread may read the count a moment before that
    // shard thread has moved it, so wait for it to grow (it is a gauge other clients move too).
    eventually(|| engine.client_count() > before).await;
    ws
}

/// Connects a client with `request` (a URL, or a request with headers of its own), which must
/// be upgraded; returns the client and the server's 101.
pub async fn connect_to<R>(request: R) -> (Client, Response)
where
    R: IntoClientRequest + Unpin,
{
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")
        .expect("upgrade accepted")
}

/// Connects a client whose server side the test accepts on `listener` and registers itself, so
/// that registrations alternate over the shards (round robin); returns it with its id.
pub async fn connect_registered(engine: &Engine, listener: &TcpListener) -> (Client, ClientId) {
    let addr = listener.local_addr().expect("address");
    let connecting = tokio::spawn(tokio_tungstenite::connect_async(format!("ws://{addr}/")));
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    let id = engine.register(tcp).await.expect("register");
    let (ws, _) = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("upgrade in time")
        .expect("join")
        .expect("upgrade");
    (ws, id)
}

/// Connects `n` clients (see [`connect`]: a [`Recorder`] may not have seen the last one yet).
pub async fn connect_many(engine: &Engine, addr: SocketAddr, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(connect(engine, addr).await);
    }
    clients
}
