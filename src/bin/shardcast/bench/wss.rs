//! The load generator's `wss`: rustls driven by hand over the same raw sockets as `ws`, so that
//! a TLS client costs what TLS costs and nothing more.
//!
//! The receiver threads read ciphertext with the same large reads as plain clients (one
//! syscall for up to [`super::loadgen`]'s read buffer) and hand it to rustls from memory:
//! rustls reading a socket itself would take 4 KiB per syscall. Plaintext is parsed where
//! rustls holds it, without a copy.
//!
//! # Sharing
//!
//! A publisher's connection is written by the publishing thread and read by a receiver
//! thread, and a TLS session is one state for both directions; so each session sits behind a
//! mutex, which the measured clients (read and pinged by one thread) take uncontended.

use super::super::tls::Trust;
use std::io::{self, BufRead, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a writer waits before it tries again when the socket takes no more.
const FULL_SOCKET_WAIT: Duration = Duration::from_micros(50);

/// One client's TLS session; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Session(Arc<Mutex<rustls::ClientConnection>>);

impl Session {
    /// A session with the server `trust` names; its handshake runs with the first blocking
    /// write or read.
    pub(crate) fn new(trust: &Trust) -> io::Result<Session> {
        let conn = rustls::ClientConnection::new(trust.config.clone(), trust.name.clone())
            .map_err(io::Error::other)?;
        Ok(Session(Arc::new(Mutex::new(conn))))
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, rustls::ClientConnection>> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("a thread panicked holding a TLS session"))
    }

    /// Runs `f` over the session as a blocking stream on `socket` (the handshake first, if not
    /// done yet): for the upgrade, before the socket turns non-blocking.
    pub(crate) fn blocking<T>(
        &self,
        socket: &mut std::net::TcpStream,
        f: impl FnOnce(&mut dyn ReadWrite) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut conn = self.lock()?;
        let mut stream = rustls::Stream::new(&mut *conn, socket);
        f(&mut stream)
    }

    /// Appends the plaintext rustls already decrypted to `out`: what came with the upgrade
    /// response, which no event of the socket will announce again.
    pub(crate) fn take_plaintext(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut conn = self.lock()?;
        match conn.reader().read_to_end(out) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other.map(drop),
        }
    }

    /// Decrypts `ciphertext` (bytes read from the socket), handing each piece of plaintext to
    /// `sink` in order. Returns `false` once the server closed the session.
    ///
    /// # Errors
    ///
    /// A TLS error (a corrupt record, an alert): the connection is unusable.
    pub(crate) fn decrypt(
        &self,
        mut ciphertext: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> io::Result<bool> {
        let mut conn = self.lock()?;
        while !ciphertext.is_empty() {
            if conn.read_tls(&mut ciphertext)? == 0 {
                return Ok(false);
            }
            let state = conn.process_new_packets().map_err(io::Error::other)?;
            // Drained after each record batch: rustls refuses to read more while it holds more
            // than 16 KiB of plaintext.
            let mut reader = conn.reader();
            loop {
                match reader.fill_buf() {
                    Ok([]) => return Ok(false),
                    Ok(chunk) => {
                        let n = chunk.len();
                        sink(chunk);
                        reader.consume(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if state.peer_has_closed() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Encrypts `bytes` and writes them to `socket`, waiting while it is full (a non-blocking
    /// socket shared with a receiver thread's poll: the publishers).
    pub(crate) fn send(&self, socket: &mut impl Write, mut bytes: &[u8]) -> io::Result<()> {
        loop {
            let mut conn = self.lock()?;
            if !bytes.is_empty() {
                // Takes less than all (even nothing) while rustls's outgoing buffer is full.
                let n = conn.writer().write(bytes)?;
                bytes = &bytes[n..];
            }
            let full = write_out(&mut conn, socket)?;
            if bytes.is_empty() && !conn.wants_write() {
                return Ok(());
            }
            drop(conn);
            if full {
                std::thread::park_timeout(FULL_SOCKET_WAIT);
            }
        }
    }

    /// Encrypts `bytes` and writes what `socket` takes now, without waiting; rustls keeps the
    /// rest for the next call (a ping, which can wait).
    pub(crate) fn try_send(&self, socket: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
        let mut conn = self.lock()?;
        conn.writer().write_all(bytes)?;
        write_out(&mut conn, socket).map(drop)
    }
}

/// Writes the records rustls has ready until `socket` is full; returns whether it was.
fn write_out(conn: &mut rustls::ClientConnection, socket: &mut impl Write) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(socket) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// A blocking byte stream (plain TCP, or TLS over it), for the upgrade.
pub(crate) trait ReadWrite: Read + Write {}

impl<T: Read + Write> ReadWrite for T {}
