//! Raw clients: a hand-made upgrade and hand-made frames, for what tungstenite will not send.

use super::WAIT;
use shardcast::wire::frame;
use shardcast::wire::handshake::Request;
use shardcast::{Accepted, Engine};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A minimal valid upgrade request.
pub const UPGRADE_REQUEST: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The headers of [`UPGRADE_REQUEST`], as an embedder's HTTP server passes them on.
pub const UPGRADE_HEADERS: [(&str, &str); 5] = [
    ("Host", "127.0.0.1"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// The engine's decision on [`UPGRADE_HEADERS`], as an embedder that answers the upgrade
/// itself asks for it before `Registration::upgraded`.
pub fn accepted(engine: &Engine) -> Accepted {
    let request = Request::new("/", UPGRADE_HEADERS).expect("valid upgrade request");
    engine.decide(&request, None).expect("accepted")
}

/// The masking key of every frame the raw client builds.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A WebSocket client over a bare TCP stream: frames are built and parsed by hand.
#[derive(Debug)]
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

/// A frame the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The opcode (low 4 bits of the first byte).
    pub opcode: u8,
    /// RSV1: a compressed message (permessage-deflate).
    pub rsv1: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

/// How a raw read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawEnd {
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
    /// End of stream or reset, without a close frame.
    Eof,
}

impl RawClient {
    /// A client over `stream`, on which the caller already sent whatever it sends first.
    pub fn new(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and upgrades with [`UPGRADE_REQUEST`].
    pub async fn connect(addr: SocketAddr) -> RawClient {
        Self::connect_with_recv_buffer(addr, None).await
    }

    /// Connects with a small kernel receive buffer (so that it stalls sooner when it stops
    /// reading), and upgrades.
    pub async fn connect_with_recv_buffer(addr: SocketAddr, recv_buffer: Option<u32>) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .expect("set receive buffer");
        }
        let stream = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
        };
        client
            .send(UPGRADE_REQUEST.as_bytes())
            .await
            .expect("send upgrade request");
        let head = client.read_http_head().await;
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        client
    }

    /// Connects and sends [`UPGRADE_REQUEST`] with `headers` (whole lines, each ending in
    /// CRLF) added, and returns the client and the response head, whatever it says.
    pub async fn connect_with(addr: SocketAddr, headers: &str) -> (RawClient, String) {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut client = RawClient::new(stream);
        let request = UPGRADE_REQUEST.replacen("\r\n\r\n", &format!("\r\n{headers}\r\n"), 1);
        client
            .send(request.as_bytes())
            .await
            .expect("send upgrade request");
        let head = client.read_http_head().await;
        (client, head)
    }

    /// Reads an HTTP response head (through the blank line); keeps what follows it.
    pub async fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            assert!(
                self.fill().await,
                "connection closed inside the response head"
            );
        }
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
    }

    /// Reads more bytes into the buffer; false at end of stream or on error.
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0; 64 << 10];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("read in time")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame, or `None` at end of stream (or reset).
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Half-closes the connection (FIN), as a client does once the closing handshake is over.
    pub async fn hang_up(&mut self) {
        let _ = tokio::time::timeout(WAIT, self.stream.shutdown()).await;
    }

    /// Reads frames until a close frame or the end of the stream; returns the frames before.
    pub async fn read_to_close(&mut self) -> (Vec<RawFrame>, RawEnd) {
        let mut frames = Vec::new();
        loop {
            match self.read_frame().await {
                None => return (frames, RawEnd::Eof),
                Some(frame) if frame.opcode == 0x8 => {
                    let code = frame
                        .payload
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]));
                    return (frames, RawEnd::Close(code));
                }
                Some(frame) => frames.push(frame),
            }
        }
    }
}

/// Parses one unmasked server frame off the front of `buf`: the frame and the bytes it took,
/// or `None` if `buf` does not hold a whole frame yet.
pub fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let (&b0, rest) = buf.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    assert_eq!(b1 & 0x80, 0, "server frames are never masked");
    assert_eq!(b0 & 0x30, 0, "server frames have no RSV2 or RSV3");
    let (len, header) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    Some((
        RawFrame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            rsv1: b0 & 0x40 != 0,
            payload,
        },
        header + len,
    ))
}

/// A frame as a client sends it: first byte `b0` (FIN, RSV, opcode) as given, masked with
/// [`MASK`].
pub fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_raw(&mut out, b0, payload, Some(MASK));
    out
}

/// A frame with the MASK bit clear (which a client must never send).
pub fn unmasked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_raw(&mut out, b0, payload, None);
    out
}
