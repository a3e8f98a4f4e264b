//! `Outbound`: one client's queue of frames waiting for its socket, bounded in bytes.
//!
//! # Invariants
//!
//! - Write order is: the partly written data frame (if any), then control frames (pongs, close),
//!   then the remaining data frames. Control frames thus jump ahead of queued data without ever
//!   splitting a frame on the wire.
//! - `offset` bytes of the first frame in write order have been written. `data_started` is true
//!   exactly when that first frame is the front data frame and `offset > 0`.
//! - `bytes` is the number of unwritten bytes over all queued frames; `control_bytes` is the
//!   part of it in `control`. Both fit a `u32`: data frames are queued only under the client's
//!   cap (at most 2 GiB, `Config` checks it), and control frames are small and few
//!   (`CONTROL_FRAMES_MAX`).
//! - `control` is allocated only while it holds a frame.
//!
//! # Back-pressure
//!
//! The queue itself never refuses a frame; the shard state checks [`Outbound::charge`] (the
//! bytes plus [`FRAME_OVERHEAD_BYTES`] per frame: what the queue really holds in memory) against
//! the client's cap before pushing and applies the slow-consumer policy.

use crate::config::FRAME_OVERHEAD_BYTES;
use crate::payload::Frame;
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

/// Most slices handed to one vectored write (Linux `IOV_MAX` is 1024; 64 already amortises the
/// syscall).
pub(crate) const IOV_MAX: usize = 64;

/// Slices for one write: the parts of the queue in write order.
pub(crate) type IoSlices<'a> = SmallVec<[IoSlice<'a>; IOV_MAX]>;

/// A client's unwritten frames. Every client has one, so its size is memory per client (56
/// bytes): control frames are boxed, as most clients have none most of the time, and the
/// counts are `u32`.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Data frames (broadcasts, sends, the handshake response), oldest first.
    data: VecDeque<Frame>,
    /// Control frames (pong, ping, close) that go out before the next data frame starts;
    /// `None` while there are none.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes in every client's queue instead of 24; most never hold a control frame"
    )]
    control: Option<Box<Vec<Bytes>>>,
    /// Bytes of the first frame in write order already written.
    offset: u32,
    /// Whether the front data frame is partly written (and so precedes the control frames).
    data_started: bool,
    /// Unwritten bytes over all frames.
    bytes: u32,
    /// Unwritten bytes of the frames in `control`.
    control_bytes: u32,
}

/// The length of a queued frame, or of part of one, as the queue counts it. In range by the
/// invariants (frames are queued under a cap of at most 2 GiB).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Where [`Outbound::lay_out`] puts the parts of a write, in write order.
trait Sink<'a> {
    /// Appends `bytes` to the run of copied bytes that ends the write so far, or (`join`
    /// false) starts a new run.
    fn copy(&mut self, bytes: &[u8], join: bool);
    /// Appends `frame`'s bytes from `skip`, referenced in place.
    fn share(&mut self, frame: &'a Bytes, skip: usize);
}

/// A write from the shard's buffer and the queue's frames, borrowed: runs copied into `buf`
/// (as ranges of it) or frames' bytes.
struct Borrowed<'a, 'b> {
    buf: &'b mut Vec<u8>,
    parts: SmallVec<[Part<'a>; IOV_MAX]>,
}

/// One part of a borrowed write.
enum Part<'a> {
    Copied(Range<usize>),
    Shared(&'a [u8]),
}

impl<'a> Sink<'a> for Borrowed<'a, '_> {
    fn copy(&mut self, bytes: &[u8], join: bool) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        match self.parts.last_mut() {
            Some(Part::Copied(run)) if join => run.end = self.buf.len(),
            _ => self.parts.push(Part::Copied(start..self.buf.len())),
        }
    }

    fn share(&mut self, frame: &'a Bytes, skip: usize) {
        self.parts
            .push(Part::Shared(frame.get(skip..).unwrap_or_default()));
    }
}

/// A write whose parts own their bytes (they go to the kernel with an `io_uring` send and
/// come back when it is done): runs copied into `arena` and split off it, frames by reference
/// count.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
struct Owned<'b> {
    arena: &'b mut bytes::BytesMut,
    parts: &'b mut Vec<Bytes>,
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
impl Owned<'_> {
    /// Ends the copied run, if one is open.
    fn seal(&mut self) {
        if !self.arena.is_empty() {
            self.parts.push(self.arena.split().freeze());
        }
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
impl<'a> Sink<'a> for Owned<'_> {
    fn copy(&mut self, bytes: &[u8], join: bool) {
        if !join {
            self.seal();
        }
        self.arena.extend_from_slice(bytes);
    }

    fn share(&mut self, frame: &'a Bytes, skip: usize) {
        self.seal();
        self.parts.push(frame.slice(skip.min(frame.len())..));
    }
}

impl Outbound {
    /// Appends a data frame.
    pub(crate) fn push(&mut self, frame: impl Into<Frame>) {
        let frame = frame.into();
        self.bytes += len32(frame.len());
        self.data.push_back(frame);
    }

    /// Appends a control frame, which goes out before any data frame not yet started.
    pub(crate) fn push_control(&mut self, frame: Bytes) {
        self.bytes += len32(frame.len());
        self.control_bytes += len32(frame.len());
        self.control.get_or_insert_default().push(frame);
    }

    /// The control frames, in write order.
    fn control(&self) -> &[Bytes] {
        self.control.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Unwritten bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes as usize
    }

    /// The memory the queue is charged for: its bytes plus [`FRAME_OVERHEAD_BYTES`] per frame.
    pub(crate) fn charge(&self) -> usize {
        self.bytes() + self.frames() * FRAME_OVERHEAD_BYTES
    }

    /// Frames not completely written.
    pub(crate) fn frames(&self) -> usize {
        self.data.len() + self.control().len()
    }

    /// Whether nothing is left to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Pending control frames.
    pub(crate) fn control_frames(&self) -> usize {
        self.control().len()
    }

    /// The frames in write order; the first one is partly written by `offset` bytes.
    fn ordered(&self) -> impl Iterator<Item = &Bytes> {
        let started = self.data_started as usize;
        self.data
            .iter()
            .take(started)
            .map(|f| &**f)
            .chain(self.control())
            .chain(self.data.iter().skip(started).map(|f| &**f))
    }

    /// Lays out the next write: frames up to `copy_max` bytes are copied into `buf` (up to its
    /// capacity) so that runs of small frames become one slice; larger frames are referenced
    /// in place. Returns the slices in write order, at most [`IOV_MAX`].
    pub(crate) fn gather<'a>(
        &'a self,
        buf: &'a mut Vec<u8>,
        copy_max: usize,
        out: &mut IoSlices<'a>,
    ) {
        buf.clear();
        let cap = buf.capacity();
        let mut sink = Borrowed {
            buf,
            parts: SmallVec::new(),
        };
        self.lay_out(copy_max, cap, &mut sink);
        let Borrowed { buf, parts } = sink;
        let buf: &'a Vec<u8> = buf;
        out.clear();
        out.extend(parts.into_iter().map(|part| match part {
            Part::Copied(run) => IoSlice::new(buf.get(run).unwrap_or_default()),
            Part::Shared(bytes) => IoSlice::new(bytes),
        }));
    }

    /// As [`Outbound::gather`], into parts that own their bytes: runs of small frames copied
    /// into `arena` (at most `copy_room` bytes) and split off it, larger frames shared by
    /// reference count. Appends to `parts`, at most [`IOV_MAX`]; returns the bytes laid out.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub(crate) fn gather_owned(
        &self,
        arena: &mut bytes::BytesMut,
        copy_max: usize,
        copy_room: usize,
        parts: &mut Vec<Bytes>,
    ) -> usize {
        let start = parts.len();
        let mut sink = Owned { arena, parts };
        self.lay_out(copy_max, copy_room, &mut sink);
        sink.seal();
        parts
            .get(start..)
            .unwrap_or_default()
            .iter()
            .map(Bytes::len)
            .sum()
    }

    /// The layout both gathers share: the frames in write order from `offset`, small ones
    /// (at most `copy_max`) copied while `copy_room` bytes last, at most [`IOV_MAX`] parts.
    fn lay_out<'a>(&'a self, copy_max: usize, copy_room: usize, sink: &mut impl Sink<'a>) {
        let (mut parts, mut copied, mut copying) = (0, 0, false);
        let mut skip = self.offset as usize;
        for frame in self.ordered() {
            let len = frame.len().saturating_sub(skip);
            if len <= copy_max && copied + len <= copy_room {
                if !copying && parts == IOV_MAX {
                    break;
                }
                sink.copy(frame.get(skip..).unwrap_or_default(), copying);
                parts += usize::from(!copying);
                copying = true;
                copied += len;
            } else if parts < IOV_MAX {
                sink.share(frame, skip);
                parts += 1;
                copying = false;
            } else {
                break;
            }
            skip = 0;
        }
    }

    /// Marks `n` bytes as written; returns how many frames were completed.
    pub(crate) fn advance(&mut self, n: usize) -> usize {
        let mut n = len32(n);
        let mut completed = 0;
        while n > 0 {
            let from_data = self.data_started || self.control().is_empty();
            let first_len = if from_data {
                self.data.front().map_or(0, |f| f.len())
            } else {
                self.control().first().map_or(0, Bytes::len)
            };
            let left = len32(first_len).saturating_sub(self.offset);
            if left == 0 {
                // Written more than queued: the caller's accounting is broken; stop rather
                // than loop.
                debug_assert!(false, "advance past the end of the queue");
                break;
            }
            if !from_data {
                self.control_bytes -= n.min(left);
            }
            if n >= left {
                n -= left;
                self.bytes -= left;
                self.offset = 0;
                self.data_started = false;
                if from_data {
                    self.data.pop_front();
                } else if let Some(control) = &mut self.control {
                    control.remove(0);
                    if control.is_empty() {
                        self.control = None;
                    }
                }
                completed += 1;
            } else {
                self.offset += n;
                self.bytes -= n;
                self.data_started = from_data;
                n = 0;
            }
        }
        completed
    }

    /// Frees the queue's buffers if nothing is queued (after a burst, so that an idle client
    /// costs no queue memory).
    pub(crate) fn shrink_if_empty(&mut self) {
        if self.bytes == 0 && (self.data.capacity() > 0 || self.control.is_some()) {
            self.data = VecDeque::new();
            self.control = None;
        }
    }

    /// The charge of what `drop_oldest` could drop: the data frames not yet started. O(1):
    /// everything queued but the control frames and the started data frame.
    pub(crate) fn droppable_charge(&self) -> usize {
        let started = self.data_started as usize;
        let started_bytes = if self.data_started {
            self.data.front().map_or(0, |f| f.len()) - self.offset as usize
        } else {
            0
        };
        let kept_bytes = self.control_bytes as usize + started_bytes;
        let kept_frames = self.control().len() + started;
        self.charge() - kept_bytes - kept_frames * FRAME_OVERHEAD_BYTES
    }

    /// Drops data frames not yet started, oldest first, until a charge of `room` more fits
    /// under `cap` or none is left to drop. Returns (frames, bytes) dropped. Each frame is
    /// dropped at most once, so over a queue's life this costs O(1) per frame pushed.
    pub(crate) fn drop_oldest(&mut self, room: usize, cap: usize) -> (usize, usize) {
        // A partly written control frame lives in `control`, so only a started data frame must
        // stay at the front of `data`.
        let keep = self.data_started as usize;
        let (mut frames, mut bytes) = (0, 0);
        while self.charge() + room > cap && self.data.len() > keep {
            // `remove(0)` pops the front; `remove(1)` moves one element: both O(1).
            if let Some(frame) = self.data.remove(keep) {
                self.bytes -= len32(frame.len());
                bytes += frame.len();
                frames += 1;
            }
        }
        (frames, bytes)
    }

    /// Drops every data frame not yet started (on eviction). Returns the bytes dropped.
    pub(crate) fn clear_unstarted(&mut self) -> usize {
        let keep = self.data_started as usize;
        let mut dropped = 0;
        while self.data.len() > keep {
            if let Some(frame) = self.data.pop_back() {
                dropped += frame.len();
            }
        }
        self.bytes -= len32(dropped);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(q: &mut Outbound, buf: &mut Vec<u8>, chunk: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        while !q.is_empty() {
            let mut iov = IoSlices::new();
            q.gather(buf, 4, &mut iov);
            let all: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
            let n = all.len().min(chunk);
            wire.extend_from_slice(&all[..n]);
            drop(iov);
            q.advance(n);
        }
        wire
    }

    #[test]
    fn frames_go_out_in_order_for_any_write_size() {
        for chunk in 1..12 {
            let mut q = Outbound::default();
            q.push(Bytes::from_static(b"ab"));
            q.push(Bytes::from_static(b"cdefgh"));
            q.push(Bytes::from_static(b"ij"));
            let mut buf = Vec::with_capacity(8);
            assert_eq!(write_all(&mut q, &mut buf, chunk), b"abcdefghij");
            assert_eq!(q.bytes(), 0);
        }
    }

    #[test]
    fn control_frame_jumps_ahead_but_never_splits_a_started_frame() {
        let mut q = Outbound::default();
        q.push(Bytes::from_static(b"aaaa"));
        q.push(Bytes::from_static(b"bbbb"));
        q.advance(2);
        q.push_control(Bytes::from_static(b"PP"));
        let mut buf = Vec::with_capacity(64);
        assert_eq!(write_all(&mut q, &mut buf, 3), b"aaPPbbbb");
    }

    #[test]
    fn control_frames_keep_their_order_when_partly_written() {
        let mut q = Outbound::default();
        q.push(Bytes::from_static(b"dd"));
        q.push_control(Bytes::from_static(b"P1"));
        q.advance(1);
        q.push_control(Bytes::from_static(b"P2"));
        let mut buf = Vec::with_capacity(64);
        assert_eq!(write_all(&mut q, &mut buf, 1), b"1P2dd");
    }

    #[test]
    fn drop_oldest_keeps_the_started_frame() {
        let mut q = Outbound::default();
        q.push(Bytes::from_static(b"aaaa"));
        q.push(Bytes::from_static(b"bbbb"));
        q.push(Bytes::from_static(b"cccc"));
        q.advance(1);
        // 11 bytes in 3 frames; room for one more 4-byte frame under a cap of exactly that.
        let o = FRAME_OVERHEAD_BYTES;
        let (frames, bytes) = q.drop_oldest(4 + o, 11 + 3 * o);
        assert_eq!((frames, bytes), (1, 4));
        let mut buf = Vec::with_capacity(64);
        assert_eq!(write_all(&mut q, &mut buf, 100), b"aaacccc");
    }

    #[test]
    fn large_frames_are_referenced_not_copied() {
        let mut q = Outbound::default();
        q.push(Bytes::from_static(b"ab"));
        q.push(Bytes::from_static(b"0123456789"));
        q.push(Bytes::from_static(b"cd"));
        let mut buf = Vec::with_capacity(64);
        let mut iov = IoSlices::new();
        q.gather(&mut buf, 4, &mut iov);
        let parts: Vec<&[u8]> = iov.iter().map(|s| &s[..]).collect();
        assert_eq!(parts, vec![&b"ab"[..], &b"0123456789"[..], &b"cd"[..]]);
    }
}
