//! A shard's `io_uring` ([`Driver::IoUring`]): the event loop's writes of one pass go to the
//! kernel as one submission instead of one `write` each.
//!
//! The loop stages a send per client it flushes ([`Ring::send`]): the client's gathered bytes,
//! owned (runs of small frames copied into the ring's arena and split off it, larger frames
//! shared by reference count), and the client's socket, lent to the operation. [`Ring::submit`]
//! hands the staged sends to the kernel in one `io_uring_enter` and gives back each socket
//! with what its send did, as a `write` would have said: a count, would-block, or an error.
//! A pass submits every [`SENDS_PER_SUBMISSION`] sends, and once at its end.
//!
//! Every send carries `MSG_DONTWAIT`: the kernel tries it at once, during the submission, and
//! completes it with `EAGAIN` rather than waiting for room. So a submission's sends are done
//! when it returns, and the loop goes on as after as many `write`s (a full socket waits for its
//! writable event, as on the epoll path). Should one not be done, the loop waits for it a
//! little ([`STRAGGLER_WAIT`]); one still not done after that ends its connection.
//!
//! Safe code on our side: compio's driver owns each operation, its buffers and its socket
//! until the kernel is done with them.
//!
//! # Bounds
//!
//! - At most [`SENDS_PER_SUBMISSION`] sends are staged at once (and never more than the ring's
//!   `Config::io_uring_entries`, 32); the loop submits when it has staged that many.
//! - The arena holds the copied runs of the staged sends, at most [`BATCH_COPY_BYTES_MAX`] (the
//!   loop submits before a send would pass it) plus one client's `write_buffer_bytes`; it is
//!   reused once a batch is done.
//!
//! [`Driver::IoUring`]: crate::Driver::IoUring

use bytes::{Bytes, BytesMut};
use compio_buf::BufResult;
use compio_driver::op::{Send, SendFlags, SendVectored};
use compio_driver::{Key, Proactor, PushEntry};
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// Sends staged at most before the loop submits them. Small batches keep the pipeline going:
/// the first clients' bytes leave while the loop gathers the next ones' (so that their readers
/// work meanwhile, on another core), and a batch's copies are still in the cache when the
/// kernel sends them. Measured at 1,000 clients, window 16 (`bench --server embedded-uring`,
/// four runs each, taking turns, noisy machine): 16 a submission gave 1.60M deliveries/s and
/// 1,001 ns of machine CPU per delivery, against 1.42M and 1,063 ns for the whole pass in one
/// submission, 1.45M for 64, 1.33M for 4, and 1.42M and 1,143 ns for a `write` each.
pub(crate) const SENDS_PER_SUBMISSION: usize = 16;

/// Bytes the staged sends' copied runs may hold at most before the loop submits them.
pub(crate) const BATCH_COPY_BYTES_MAX: usize = 1 << 20;

/// The arena's blocks: a run longer than this gets a block of its own. 16 KiB holds a
/// submission of 16 clients' small frames at window 16. At 10,000 clients under load, 64 KiB
/// blocks measured 509-513 bytes per connection, 16 KiB 495-502 (`bench --clients 10000`).
const ARENA_BLOCK_BYTES: usize = 16 * 1024;

/// How long the loop waits, in all, for sends a submission left unfinished (none should be:
/// see the module docs).
const STRAGGLER_WAIT: Duration = Duration::from_millis(100);

/// A connection's socket while a send holds it.
type Sock = Rc<mio::net::TcpStream>;

/// A staged send, by its number of parts.
enum Op {
    One(Key<Send<Bytes, Sock>>),
    Many(Key<SendVectored<Vec<Bytes>, Sock>>),
}

/// A send in flight: whose, on which socket, and how many bytes it carries.
struct Flight {
    slot: usize,
    sock: Sock,
    op: Op,
    bytes: usize,
}

/// What a send did, for the loop: its client's slot, the socket back (`None` if the send is
/// still not done; its connection must end), the bytes it carried, and the result.
pub(crate) struct Sent {
    pub(crate) slot: usize,
    pub(crate) stream: Option<mio::net::TcpStream>,
    pub(crate) bytes: usize,
    pub(crate) result: io::Result<usize>,
}

/// One shard's ring, with its staged sends.
pub(crate) struct Ring {
    proactor: Proactor,
    /// Sends staged at most before they are submitted.
    batch: usize,
    /// Copied runs of the staged sends.
    arena: BytesMut,
    /// Bytes copied into `arena` since the last submission.
    copied: usize,
    flights: Vec<Flight>,
    /// Sends the driver finished as they were pushed, reported with the next submission.
    done: Vec<Sent>,
    /// Part lists of finished sends, reused.
    spare: Vec<Vec<Bytes>>,
    /// Submissions made (`ShardStats::io_uring_submissions` counts them).
    pub(crate) submissions: u64,
}

impl Ring {
    /// Sets up a ring: fails where the kernel has no `io_uring` or refuses it (an old kernel, a
    /// seccomp policy, `kernel.io_uring_disabled`).
    pub(crate) fn new(entries: u32) -> io::Result<Ring> {
        let proactor = Proactor::builder().capacity(entries).build()?;
        Ok(Ring {
            proactor,
            batch: SENDS_PER_SUBMISSION.min(entries as usize),
            arena: BytesMut::with_capacity(ARENA_BLOCK_BYTES),
            copied: 0,
            flights: Vec::new(),
            done: Vec::new(),
            spare: Vec::new(),
            submissions: 0,
        })
    }

    /// Whether a send of up to `copy` more copied bytes must wait for a submission first.
    pub(crate) fn full(&self, copy: usize) -> bool {
        self.flights.len() >= self.batch
            || (self.copied > 0 && self.copied + copy > BATCH_COPY_BYTES_MAX)
    }

    /// Gathers one send: `gather` lays out the client's bytes into the arena and a part list
    /// and returns how many there are.
    pub(crate) fn gather(
        &mut self,
        gather: impl FnOnce(&mut BytesMut, &mut Vec<Bytes>) -> usize,
    ) -> (Vec<Bytes>, usize) {
        let mut parts = self.spare.pop().unwrap_or_default();
        parts.clear();
        let before = self.arena.len();
        let bytes = gather(&mut self.arena, &mut parts);
        self.copied += self.arena.len().saturating_sub(before);
        // Runs are split off as they end, so the arena is empty again here.
        (parts, bytes)
    }

    /// Stages a send of `parts` (`bytes` in all) on `stream`, the socket of `slot`.
    pub(crate) fn send(
        &mut self,
        slot: usize,
        stream: mio::net::TcpStream,
        mut parts: Vec<Bytes>,
        bytes: usize,
    ) {
        let sock = Rc::new(stream);
        // `DONTWAIT`: done during the submission, never parked (see the module docs).
        // `NOSIGNAL`: a peer gone is an error, not a signal.
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        let op = if parts.len() == 1
            && let Some(one) = parts.pop()
        {
            self.spare.push(parts);
            match self.proactor.push(Send::new(sock.clone(), one, flags)) {
                PushEntry::Pending(key) => Op::One(key),
                PushEntry::Ready(BufResult(result, _)) => {
                    return self.ready(slot, sock, bytes, result);
                }
            }
        } else {
            match self
                .proactor
                .push(SendVectored::new(sock.clone(), parts, flags))
            {
                PushEntry::Pending(key) => Op::Many(key),
                PushEntry::Ready(BufResult(result, op)) => {
                    self.spare.push(compio_buf::IntoInner::into_inner(op));
                    return self.ready(slot, sock, bytes, result);
                }
            }
        };
        self.flights.push(Flight {
            slot,
            sock,
            op,
            bytes,
        });
    }

    /// A send the driver finished as it was pushed (it does not, for sockets on `io_uring`;
    /// kept so that no result is lost): reported with the next submission's.
    fn ready(&mut self, slot: usize, sock: Sock, bytes: usize, result: io::Result<usize>) {
        self.done.push(Sent {
            slot,
            stream: Rc::try_unwrap(sock).ok(),
            bytes,
            result,
        });
    }

    /// Submits every staged send in one `io_uring_enter`, and appends to `out` what each did.
    pub(crate) fn submit(&mut self, out: &mut Vec<Sent>) {
        out.append(&mut self.done);
        if self.flights.is_empty() {
            self.copied = 0;
            return;
        }
        self.submissions += 1;
        let mut waited = Duration::ZERO;
        let mut wait = Duration::ZERO;
        loop {
            // `Err` is a timeout (nothing finished) or an interruption: look again below.
            let _ = self.proactor.poll(Some(wait));
            let flights = std::mem::take(&mut self.flights);
            for flight in flights {
                self.pop(flight, out);
            }
            if self.flights.is_empty() || waited >= STRAGGLER_WAIT {
                break;
            }
            wait = Duration::from_millis(1);
            waited += wait;
        }
        for Flight {
            slot, sock, bytes, ..
        } in self.flights.drain(..)
        {
            // Its operation keeps the socket until the kernel is done; the connection ends.
            drop(sock);
            out.push(Sent {
                slot,
                stream: None,
                bytes,
                result: Err(io::ErrorKind::TimedOut.into()),
            });
        }
        // The parts are dropped: the arena's blocks are free for the next batch (`BytesMut`
        // takes a block back once nothing refers to it).
        self.copied = 0;
    }

    /// Takes `flight`'s result if its send is done, or keeps it in flight.
    fn pop(&mut self, flight: Flight, out: &mut Vec<Sent>) {
        let Flight {
            slot,
            sock,
            op,
            bytes,
        } = flight;
        let result = match op {
            Op::One(key) => match self.proactor.pop(key) {
                PushEntry::Ready(BufResult(result, _)) => result,
                PushEntry::Pending(key) => {
                    return self.flights.push(Flight {
                        slot,
                        sock,
                        op: Op::One(key),
                        bytes,
                    });
                }
            },
            Op::Many(key) => match self.proactor.pop(key) {
                PushEntry::Ready(BufResult(result, op)) => {
                    self.spare.push(compio_buf::IntoInner::into_inner(op));
                    result
                }
                PushEntry::Pending(key) => {
                    return self.flights.push(Flight {
                        slot,
                        sock,
                        op: Op::Many(key),
                        bytes,
                    });
                }
            },
        };
        out.push(Sent {
            slot,
            stream: Rc::try_unwrap(sock).ok(),
            bytes,
            result,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;
    use crate::{Audience, Driver, Engine, Payload};
    use futures_util::StreamExt;
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::Message;

    const WAIT: Duration = Duration::from_secs(10);

    /// A kernel that refuses the ring (here: a ring of 0 entries, which `io_uring_setup`
    /// rejects with `EINVAL`, as a seccomp policy would with `EPERM`): every shard runs the
    /// event loop with `write`s, and serves its clients as ever.
    #[tokio::test]
    async fn a_ring_the_kernel_refuses_falls_back_to_writes() {
        assert!(
            Ring::new(0).is_err(),
            "the kernel sets up a ring of 0 entries"
        );
        let engine = Engine::builder()
            .shards(2)
            .driver(Driver::IoUring)
            .io_uring_entries(0)
            .build()
            .expect("engine builds");
        let addr = engine.listen("127.0.0.1:0").await.expect("listen");
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (ws, _) = tokio::time::timeout(
                WAIT,
                tokio_tungstenite::connect_async(format!("ws://{addr}/")),
            )
            .await
            .expect("in time")
            .expect("upgrade");
            clients.push(ws);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while engine.stats().total.event_loop_connections < 4 {
            assert!(tokio::time::Instant::now() < deadline, "clients not looped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        engine
            .broadcast(Payload::text("still here"), Audience::ALL)
            .await
            .expect("broadcast");
        for ws in &mut clients {
            let message = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("a frame");
            assert_eq!(message, Message::text("still here"));
        }
        // A write is counted once it returns: the clients may have read it first.
        while engine.stats().total.write_syscalls < 4 {
            assert!(tokio::time::Instant::now() < deadline, "writes not counted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stats = engine.stats().total;
        assert_eq!(stats.io_uring_rings, 0);
        assert_eq!(stats.io_uring_submissions, 0);
    }
}
