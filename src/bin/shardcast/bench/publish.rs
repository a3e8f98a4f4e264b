//! The publishers: rounds of `window` frames per publisher, closed loop (the next round starts
//! when every client received the last one) or open loop at a fixed rate.
//!
//! Without `--topics` a frame is the stamped payload, which the server relays to everyone; with
//! it, a frame is `pub tN <stamped payload>`, which it relays to `tN`'s subscribers: the topics
//! and the deliveries each publication makes follow [`super::topics`]. The payload is binary
//! (binary frames) or, with `--payload-json`, a JSON document made for each message (text
//! frames; see [`super::payload`]). Frames always go out plain, even where permessage-deflate
//! was negotiated: RFC 7692 lets a client send uncompressed messages.

use super::loadgen::{Link, MASK, STAMP_BYTES, Shared};
use super::payload::{self, Format, Stamp};
use super::topics::{self, Rotation};
use shardcast::wire::{Opcode, frame};
use std::io::{self, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How long the publisher waits for a round before it calls the run stalled.
const ROUND_TIMEOUT: Duration = Duration::from_secs(20);

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Length {
    /// After this long.
    Time(Duration),
    /// After this many rounds.
    Rounds(u64),
}

/// The shape of the load.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load<'a> {
    /// Measured subscribers of each topic: the deliveries a publication to it makes (without
    /// `--topics`, one topic: every measured client).
    pub(crate) fanout: &'a [u64],
    /// Which topic each publication goes to.
    pub(crate) rotation: Rotation,
    /// Whether frames name their topic (`pub tN ...`, with `--topics`) or go to everyone.
    pub(crate) named_topics: bool,
    /// Frames per publisher per round.
    pub(crate) window: usize,
    /// Bytes per frame payload (at least the stamp); with JSON, of each document at most.
    pub(crate) payload: usize,
    /// The payloads' format.
    pub(crate) format: Format,
    /// When to stop.
    pub(crate) length: Length,
    /// Open loop: frames per second over all publishers.
    pub(crate) rate: Option<u64>,
}

/// What the publishers did.
#[derive(Debug)]
pub(crate) struct Published {
    /// Frames sent.
    pub(crate) frames: u64,
    /// From the first send to the last expected delivery (or the end of the drain wait).
    pub(crate) elapsed: Duration,
    /// Deliveries expected but not seen by the end (open loop, or a stalled round).
    pub(crate) missing: u64,
    /// Deliveries the frames sent should have made.
    pub(crate) expected: u64,
}

/// Reused buffers for building frames: they allocate only while they grow.
struct Frames {
    /// The payload: binary, whose stamp each frame overwrites; or the JSON document, made
    /// anew for each frame.
    payload: Vec<u8>,
    /// `pub tN <payload>`, with topics.
    message: Vec<u8>,
    /// Whether frames name their topic.
    named_topics: bool,
    /// The payloads' format.
    format: Format,
    /// Bytes of a JSON document at most.
    json_bytes: usize,
}

impl Frames {
    /// Appends one stamped frame for `publisher`'s publication `seq` to `topic` to `out`.
    fn put(&mut self, out: &mut Vec<u8>, now_ns: u64, publisher: usize, (topic, seq): (u32, u32)) {
        let stamp = Stamp {
            sent: now_ns,
            publisher: publisher as u32,
            seq,
            topic,
        };
        let opcode = match self.format {
            Format::Binary => {
                payload::binary(&mut self.payload, stamp, self.named_topics);
                Opcode::Binary
            }
            Format::Json => {
                payload::json(&mut self.payload, self.json_bytes, stamp);
                Opcode::Text
            }
        };
        if !self.named_topics {
            frame::put_masked(out, opcode, &self.payload, MASK);
            return;
        }
        let message = &mut self.message;
        message.clear();
        // Into a `Vec`, which cannot fail; formatting an integer does not allocate.
        let _ = write!(message, "pub t{topic} ");
        message.extend_from_slice(&self.payload);
        frame::put_masked(out, opcode, message, MASK);
    }
}

/// Runs the publishers over `streams` (one per publisher) as `load` says.
pub(crate) fn run(
    streams: &mut [Link],
    load: Load<'_>,
    shared: &Shared,
    mut progress: impl FnMut(f64),
) -> io::Result<Published> {
    let stamp_bytes = if load.named_topics {
        topics::STAMP_BYTES
    } else {
        STAMP_BYTES
    };
    let mut frames_buf = Frames {
        payload: match load.format {
            Format::Binary => vec![0xabu8; load.payload.max(stamp_bytes)],
            Format::Json => Vec::with_capacity(load.payload),
        },
        message: Vec::new(),
        named_topics: load.named_topics,
        format: load.format,
        json_bytes: load.payload,
    };
    // Publications each publisher sent so far.
    let mut sent = vec![0u64; streams.len()];
    let fanout = |(topic, _): (u32, u32)| load.fanout.get(topic as usize).copied().unwrap_or(0);
    let mut expected = 0u64;
    let mut buf = Vec::new();
    let start = Instant::now();
    let mut frames = 0u64;
    let done = |rounds: u64, start: Instant| match load.length {
        Length::Time(t) => start.elapsed() >= t,
        Length::Rounds(r) => rounds >= r,
    };
    let fraction = |rounds: u64, start: Instant| match load.length {
        Length::Time(t) => start.elapsed().as_secs_f64() / t.as_secs_f64(),
        Length::Rounds(r) => rounds as f64 / r as f64,
    };
    let base = shared.delivered.load(Relaxed);
    let mut rounds = 0u64;
    if let Some(rate) = load.rate {
        // Open loop: send what the clock says is due, in slices of at most `window` frames.
        let rate = rate.max(1);
        while !done(rounds, start) {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if frames >= due {
                std::thread::park_timeout(Duration::from_micros(200));
                continue;
            }
            let batch = (due - frames).min(load.window as u64 * streams.len() as u64);
            for i in 0..batch {
                let p = ((frames + i) % streams.len() as u64) as usize;
                buf.clear();
                let publication = load.rotation.of(p, sent[p]);
                frames_buf.put(&mut buf, shared.now_ns(), p, publication);
                sent[p] += 1;
                expected += fanout(publication);
                streams[p].send(&buf)?;
            }
            frames += batch;
            rounds += 1;
            progress(fraction(rounds, start));
        }
    } else {
        while !done(rounds, start) {
            // The round's deliveries, known before any frame leaves.
            for (p, &n) in sent.iter().enumerate() {
                for k in 0..load.window as u64 {
                    expected += fanout(load.rotation.of(p, n + k));
                }
            }
            let target = base + expected;
            shared.target.store(target, Relaxed);
            for (p, stream) in streams.iter_mut().enumerate() {
                buf.clear();
                let now = shared.now_ns();
                for _ in 0..load.window {
                    frames_buf.put(&mut buf, now, p, load.rotation.of(p, sent[p]));
                    sent[p] += 1;
                }
                stream.send(&buf)?;
            }
            frames += (load.window * streams.len()) as u64;
            let waited = Instant::now();
            while shared.delivered.load(Relaxed) < target {
                if waited.elapsed() > ROUND_TIMEOUT {
                    let seen = shared.delivered.load(Relaxed) - base;
                    return Ok(Published {
                        frames,
                        elapsed: start.elapsed(),
                        missing: expected.saturating_sub(seen),
                        expected,
                    });
                }
                std::thread::park_timeout(Duration::from_millis(2));
            }
            rounds += 1;
            progress(fraction(rounds, start));
        }
    }
    // Wait for what is still in flight (open loop), bounded.
    let target = base + expected;
    let drain = Instant::now();
    while shared.delivered.load(Relaxed) < target && drain.elapsed() < Duration::from_secs(5) {
        shared.target.store(target, Relaxed);
        std::thread::park_timeout(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let seen = shared.delivered.load(Relaxed) - base;
    Ok(Published {
        frames,
        elapsed,
        missing: expected.saturating_sub(seen),
        expected,
    })
}
