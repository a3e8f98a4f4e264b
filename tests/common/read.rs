//! What clients read: the next message of any client stream, a client read by its own task
//! until [`END`], and the close codes clients read at shutdown; and the text a client sends.

use super::{Client, WAIT};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use shardcast::Engine;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The text every test broadcasts last, so that a reader knows it has seen everything.
pub const END: &str = "END";

/// The next message of any client stream (a TCP, TLS or in-memory client, or the read half of
/// one), whatever it is.
pub async fn next_message<S>(ws: &mut S) -> Message
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("message in time")
        .expect("stream open")
        .expect("valid message")
}

/// The next data message (text or binary) of any client stream, skipping pings and pongs.
pub async fn next_data<S>(ws: &mut S) -> Message
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match next_message(ws).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// The next text message of any client stream.
pub async fn next_text<S>(ws: &mut S) -> String
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    match next_data(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends a text message from any client (or the write half of one).
pub async fn send_text<S>(ws: &mut S, text: &str)
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    ws.send(Message::text(text)).await.expect("send");
}

/// Waits until the next thing the client sees is a close frame; returns its code. Works for any
/// client stream (TCP, in-memory duplex).
pub async fn close_code<S>(ws: &mut WebSocketStream<S>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => return None,
        }
    }
}

/// A client read by its own task until the text [`END`]; counts what it has read so far.
#[derive(Debug)]
pub struct Reader {
    /// Data messages read so far (not counting `END`).
    pub count: Arc<AtomicUsize>,
    /// The reading task: every data message before `END`, and the client.
    task: JoinHandle<(Vec<Message>, Client)>,
}

/// Spawns a task that reads `ws` until [`END`].
pub fn spawn_reader(mut ws: Client) -> Reader {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let task = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let msg = next_data(&mut ws).await;
            if matches!(&msg, Message::Text(t) if t.as_str() == END) {
                return (got, ws);
            }
            got.push(msg);
            seen.store(got.len(), Ordering::Release);
        }
    });
    Reader { count, task }
}

impl Reader {
    /// Messages read so far.
    pub fn read(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits for `END`; returns every data message before it, and the client.
    pub async fn until_end(self) -> (Vec<Message>, Client) {
        match tokio::time::timeout(WAIT * 2, self.task)
            .await
            .expect("reader finishes in time")
        {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("reader task failed: {e}"),
        }
    }
}

/// The texts of `messages`, panicking on anything else.
pub fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            Message::Text(t) => t.to_string(),
            other => panic!("expected text, got {other:?}"),
        })
        .collect()
}

/// Reads texts from `ws` until [`END`] (excluded).
pub async fn texts_until_end(ws: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let text = next_text(ws).await;
        if text == END {
            return got;
        }
        got.push(text);
    }
}

/// Shuts `engine` down while each client reads to its close frame (and then hangs up, so
/// that the engine need not wait out its close timeout). Returns each client's close code.
pub async fn shutdown_reading(engine: &Engine, clients: Vec<Client>) -> Vec<Option<u16>> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { close_code(&mut ws).await }))
        .collect();
    tokio::time::timeout(WAIT, engine.shutdown(Duration::from_secs(5)))
        .await
        .expect("shutdown in time");
    let mut codes = Vec::with_capacity(tasks.len());
    for task in tasks {
        codes.push(task.await.expect("close reader"));
    }
    codes
}
