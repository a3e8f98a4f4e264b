//! The publishers: rounds of `window` frames per publisher, closed loop (the next round starts
//! when every client received the last one) or open loop at a fixed rate.

use super::loadgen::{MASK, STAMP_BYTES, Shared};
use shardcast::wire::{Opcode, frame};
use std::io::{self, Write};
use std::net::TcpStream;
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
pub(crate) struct Load {
    /// Measured clients (each receives every frame).
    pub(crate) clients: u64,
    /// Frames per publisher per round.
    pub(crate) window: usize,
    /// Bytes per frame payload (at least the stamp).
    pub(crate) payload: usize,
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
}

/// Writes one stamped frame for `publisher` with `seq` into `out`.
fn stamp(out: &mut Vec<u8>, payload: &mut [u8], now_ns: u64, publisher: usize, seq: u32) {
    payload[0..8].copy_from_slice(&now_ns.to_le_bytes());
    payload[8..12].copy_from_slice(&(publisher as u32).to_le_bytes());
    payload[12..16].copy_from_slice(&seq.to_le_bytes());
    // Appends: `out` is reused across frames and sends, so this allocates only while it grows.
    frame::put_masked(out, Opcode::Binary, payload, MASK);
}

/// Runs the publishers over `streams` (one per publisher) as `load` says.
pub(crate) fn run(
    streams: &mut [TcpStream],
    load: Load,
    shared: &Shared,
    mut progress: impl FnMut(f64),
) -> io::Result<Published> {
    let mut payload = vec![0xabu8; load.payload.max(STAMP_BYTES)];
    let mut seqs = vec![0u32; streams.len()];
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
                stamp(&mut buf, &mut payload, shared.now_ns(), p, seqs[p]);
                seqs[p] = seqs[p].wrapping_add(1);
                streams[p].write_all(&buf)?;
            }
            frames += batch;
            rounds += 1;
            progress(fraction(rounds, start));
        }
    } else {
        while !done(rounds, start) {
            let target = base + (frames + (load.window * streams.len()) as u64) * load.clients;
            shared.target.store(target, Relaxed);
            for (p, stream) in streams.iter_mut().enumerate() {
                buf.clear();
                let now = shared.now_ns();
                for _ in 0..load.window {
                    stamp(&mut buf, &mut payload, now, p, seqs[p]);
                    seqs[p] = seqs[p].wrapping_add(1);
                }
                stream.write_all(&buf)?;
            }
            frames += (load.window * streams.len()) as u64;
            let waited = Instant::now();
            while shared.delivered.load(Relaxed) < target {
                if waited.elapsed() > ROUND_TIMEOUT {
                    let seen = shared.delivered.load(Relaxed) - base;
                    return Ok(Published {
                        frames,
                        elapsed: start.elapsed(),
                        missing: (frames * load.clients).saturating_sub(seen),
                    });
                }
                std::thread::park_timeout(Duration::from_millis(2));
            }
            rounds += 1;
            progress(fraction(rounds, start));
        }
    }
    // Wait for what is still in flight (open loop), bounded.
    let expected = base + frames * load.clients;
    let drain = Instant::now();
    while shared.delivered.load(Relaxed) < expected && drain.elapsed() < Duration::from_secs(5) {
        shared.target.store(expected, Relaxed);
        std::thread::park_timeout(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let seen = shared.delivered.load(Relaxed) - base;
    Ok(Published {
        frames,
        elapsed,
        missing: expected.saturating_sub(base).saturating_sub(seen),
    })
}
