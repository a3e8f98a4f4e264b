//! One client as the model sees it: its phase, its connection's stage, its queue of whole
//! frames in write order, and what its driver keeps (parser, unread frames, its wait).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::ClientId;
use crate::client::RemoveReason;
use crate::config::FRAME_OVERHEAD_BYTES;
use crate::shard::{Held, Next};
use crate::wire::Parser;

use super::world::Sent;

/// A client's phase, as the model sees it; named as `state::Phase`, whose `Debug` it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ModelPhase {
    Open,
    Closing,
    Abort,
}

/// Where a client's connection is, as the model sees it; named as `state::Stage`, whose
/// `Debug` it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ModelStage {
    Serving,
    Waiting,
    WaitingLingering,
    Departing,
    Lingering,
}

impl ModelStage {
    pub(super) fn waits(self) -> bool {
        matches!(
            self,
            ModelStage::Waiting | ModelStage::WaitingLingering | ModelStage::Departing
        )
    }
}

/// One queued frame in the model.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) frame: Bytes,
    /// Pong or close frame queued ahead of data.
    pub(super) control: bool,
}

/// What the driver side of a client waits for.
#[derive(Debug, Default)]
pub(super) struct Wait {
    /// Deliveries the post kept for want of room.
    pub(super) relays: bool,
    /// Its event that found the inbox full.
    pub(super) held: Option<Box<Held>>,
}

/// An inbox event the model expects a client to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    Registered,
    Text(String),
    Removed(RemoveReason),
}

/// One client in the model, and what its driver keeps.
#[derive(Debug)]
pub(super) struct ModelClient {
    pub(super) id: ClientId,
    /// Its slab slot; `None` once its connection ended (the slot may then hold another).
    pub(super) slot: Option<usize>,
    pub(super) phase: ModelPhase,
    pub(super) stage: ModelStage,
    pub(super) authenticated: bool,
    /// Simulated times.
    pub(super) last_seen: Duration,
    /// Whether a server ping went out since `last_seen`.
    pub(super) pinged: bool,
    pub(super) registered_at: Duration,
    pub(super) blocked_since: Option<Duration>,
    /// Frames not completely written, in write order.
    pub(super) queue: VecDeque<Queued>,
    /// Bytes of the front frame already written.
    pub(super) offset: usize,
    /// Why it was closed, once it is.
    pub(super) left: Option<RemoveReason>,
    /// Removed events produced (for the handler's `on_removed`).
    pub(super) removed: usize,
    /// Its topics (indices into `TOPICS`), while open.
    pub(super) topics: BTreeSet<usize>,
    /// Whether the inbox heard it registered and not yet that it left.
    pub(super) announced: bool,
    /// Whether its queue passed half its cap since it was last found below it (the engine's
    /// backlog, which makes the shard congested while it drains).
    pub(super) backlogged: bool,
    /// Inbox events it produced that the consumer has not received yet, in order.
    pub(super) expected: VecDeque<Expect>,
    /// The driver's side: the client's parser, what it read but could not hand over yet, and
    /// what it waits for.
    pub(super) parser: Parser,
    pub(super) pending: Vec<Sent>,
    pub(super) wait: Option<Wait>,
}

impl ModelClient {
    pub(super) fn queued(&self) -> usize {
        self.queue.iter().map(|q| q.frame.len()).sum::<usize>() - self.offset
    }

    pub(super) fn push_data(&mut self, frame: Bytes) {
        self.queue.push_back(Queued {
            frame,
            control: false,
        });
    }

    /// A control frame goes after the frame being written and the control frames queued
    /// before it.
    pub(super) fn push_control(&mut self, frame: Bytes) {
        let mut at = usize::from(self.offset > 0);
        while self.queue.get(at).is_some_and(|q| q.control) {
            at += 1;
        }
        self.queue.insert(
            at,
            Queued {
                frame,
                control: true,
            },
        );
    }

    /// The memory the queue is charged for: its bytes plus a fixed overhead per frame.
    pub(super) fn charge(&self) -> usize {
        self.queued() + self.queue.len() * FRAME_OVERHEAD_BYTES
    }

    /// The charge of the data frames not started (what `DropOldest` may drop).
    pub(super) fn droppable(&self) -> usize {
        let at = usize::from(self.offset > 0);
        self.queue
            .iter()
            .skip(at)
            .filter(|q| !q.control)
            .map(|q| q.frame.len() + FRAME_OVERHEAD_BYTES)
            .sum()
    }

    /// Drops data frames not started, oldest first, while `more` bytes would take the queue
    /// over `cap` (`cap` 0: all of them). Returns how many.
    pub(super) fn drop_data(&mut self, more: usize, cap: usize) -> u64 {
        let mut dropped = 0;
        let mut at = usize::from(self.offset > 0);
        while self.charge() + more > cap && at < self.queue.len() {
            if self.queue[at].control {
                at += 1;
            } else {
                self.queue.remove(at);
                dropped += 1;
            }
        }
        dropped
    }

    /// Whether `bytes` is a prefix of what is left to write.
    pub(super) fn starts_with(&self, mut bytes: &[u8]) -> bool {
        let mut skip = self.offset;
        for q in &self.queue {
            let rest = &q.frame[skip..];
            skip = 0;
            let n = rest.len().min(bytes.len());
            if rest[..n] != bytes[..n] {
                return false;
            }
            bytes = &bytes[n..];
        }
        bytes.is_empty()
    }

    /// Marks `n` bytes written.
    pub(super) fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.queue[0].frame.len() - self.offset;
            if n >= left {
                self.queue.pop_front();
                self.offset = 0;
                n -= left;
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }

    pub(super) fn control_frames(&self) -> usize {
        self.queue.iter().filter(|q| q.control).count()
    }

    /// What `Core::poll_write` must say for it (the engine's default coalescing never delays).
    pub(super) fn next(&self) -> Next {
        match (self.slot, self.phase, self.stage) {
            (None, _, _) | (_, ModelPhase::Abort, _) | (_, _, ModelStage::Departing) => Next::Done,
            (_, _, ModelStage::Lingering | ModelStage::WaitingLingering) => Next::Idle,
            (_, ModelPhase::Closing, _) if self.queued() == 0 => Next::Closed,
            _ if self.queued() == 0 => Next::Idle,
            _ => Next::Write,
        }
    }

    /// Moves its connection to `stage`; out of a wait, its silence starts again at `now`.
    pub(super) fn set_stage(&mut self, stage: ModelStage, now: Duration) {
        if self.stage.waits() && !stage.waits() {
            self.last_seen = now;
            self.pinged = false;
        }
        self.stage = stage;
    }
}

/// A close frame with `code` and `reason`, built by hand.
pub(super) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut f = vec![0x88, (2 + reason.len()) as u8];
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason.as_bytes());
    Bytes::from(f)
}
