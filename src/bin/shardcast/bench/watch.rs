//! What the bench shows and watches while a run goes on: its progress bars (on a terminal
//! only), the server's memory every few seconds during the load (to see whether it keeps
//! growing, in soak runs), and with stalled clients, when the server has dealt with them all.

use super::server::{self, Counters, Policy, Server};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// How often the bench samples the server's resident memory during a run.
const RSS_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// How often the bench asks the server for its counters while stalled clients are not yet
/// dealt with.
const COUNTERS_EVERY: Duration = Duration::from_millis(100);

/// A progress bar of `len` steps named `message`, drawn on standard error if `interactive`,
/// else hidden.
pub(crate) fn bar(interactive: bool, len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// The watch over one run's load, ticked by the publishers between rounds.
#[derive(Debug)]
pub(crate) struct Watch<'a> {
    /// The `running` bar, in thousandths of the run.
    bar: ProgressBar,
    /// The servers' processes, whose memory is sampled.
    pids: &'a [u32],
    /// When the load started: samples and the stall's resolution count from it.
    started: Instant,
    /// When the memory was last sampled.
    last_sample: Instant,
    /// The server's memory: (seconds since `started`, bytes), one per [`RSS_SAMPLE_EVERY`].
    rss_samples: Vec<(f64, u64)>,
    /// The stalled clients, when there are some and the server has counters.
    stall: Option<Stalled>,
}

/// The stalled clients of a run, as the watch follows them.
#[derive(Debug)]
struct Stalled {
    /// Clients that never read.
    clients: u64,
    /// The server's `evicted` and `frames_dropped` counters before the load.
    baseline: (u64, u64),
    /// The slow-consumer policy of the server: under a drop policy, the first drop resolves.
    policy: Policy,
    /// When the counters were last asked for.
    last: Instant,
    /// Time from the start of the load until every stalled client was evicted (or, under a
    /// drop policy, until the first drop); `None` until then.
    resolved_after: Option<Duration>,
}

/// What the watch saw.
#[derive(Debug)]
pub(crate) struct Watched {
    /// The server's memory during the load: (seconds since the first publish, bytes).
    pub(crate) rss_samples: Vec<(f64, u64)>,
    /// When the stalled clients were dealt with; `None` if they were not (or there were none).
    pub(crate) resolved_after: Option<Duration>,
}

impl<'a> Watch<'a> {
    /// Starts watching a load, now: the memory of `pids`, and `stalled` clients against the
    /// server's counters before the load (`before`, if it has counters) and its `policy`.
    pub(crate) fn start(
        interactive: bool,
        pids: &'a [u32],
        stalled: u64,
        before: Option<&Counters>,
        policy: Policy,
    ) -> Watch<'a> {
        let bar = bar(interactive, 1000, "running");
        let now = Instant::now();
        let stall = before.filter(|_| stalled > 0).map(|c| Stalled {
            clients: stalled,
            baseline: (
                c.get("evicted").unwrap_or(0),
                c.get("frames_dropped").unwrap_or(0),
            ),
            policy,
            last: now,
            resolved_after: None,
        });
        Watch {
            bar,
            pids,
            started: now,
            last_sample: now,
            rss_samples: Vec::new(),
            stall,
        }
    }

    /// The load is at `fraction` of its length: moves the bar, samples the memory when due,
    /// and asks `servers` for their counters when due while stalled clients are pending.
    pub(crate) fn tick(&mut self, fraction: f64, servers: &mut [Server]) {
        self.bar
            .set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
        if self.last_sample.elapsed() >= RSS_SAMPLE_EVERY
            && let Some(rss) = server::rss_of(self.pids)
        {
            self.last_sample = Instant::now();
            self.rss_samples
                .push((self.started.elapsed().as_secs_f64(), rss));
        }
        let Some(st) = &mut self.stall else {
            return;
        };
        if st.resolved_after.is_some() || st.last.elapsed() < COUNTERS_EVERY {
            return;
        }
        st.last = Instant::now();
        let Some(c) = server::counters(servers) else {
            return;
        };
        let (evicted0, dropped0) = st.baseline;
        let evicted = c.get("evicted").unwrap_or(0).saturating_sub(evicted0);
        let dropped = c
            .get("frames_dropped")
            .unwrap_or(0)
            .saturating_sub(dropped0);
        if evicted >= st.clients || (st.policy != Policy::Disconnect && dropped > 0) {
            st.resolved_after = Some(self.started.elapsed());
        }
    }

    /// Clears the bar; what the watch saw.
    pub(crate) fn finish(self) -> Watched {
        self.bar.finish_and_clear();
        Watched {
            rss_samples: self.rss_samples,
            resolved_after: self.stall.and_then(|st| st.resolved_after),
        }
    }
}
