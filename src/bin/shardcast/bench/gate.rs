//! What a CI gates on: whether a run (or any run of a sweep) lost frames, had connections
//! closed by the server, or went past `--max-p99`; and the exit status that says so.
//!
//! # Exit status
//!
//! - 0: every run completed, nothing was lost, no measured connection was closed, and every p99
//!   is within `--max-p99`.
//! - 1: a check above failed (the report is printed first, then each failure
//!   on standard error), or the run itself failed (a server that did not start, a connection
//!   refused).
//! - 2 ([`EXIT_USAGE`]): the flags were refused before anything started, by clap or by
//!   [`super::Args::check`].
//!
//! Stalled clients (`--stall`) are not measured: the server evicting them, or dropping their
//! frames, is what the policy asks for, not a failure. Their connections are neither read nor
//! counted in `closed`, and their frames are not counted in `lost`.

use super::report::{Report, Row};
use super::value::{Pick, Value};
use std::time::Duration;

/// The exit status of flags refused before anything started (clap's own for its errors).
pub(crate) const EXIT_USAGE: i32 = 2;

/// What a run must stay within besides losing nothing.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    /// The highest p99 latency accepted (`--max-p99`).
    pub(crate) max_p99: Option<Duration>,
}

/// What one setup measured, as far as the checks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Frames lost, over every run.
    pub(crate) lost: u64,
    /// Measured connections (clients, publishers) the server closed, over every run.
    pub(crate) closed: u64,
    /// The p99 latency in µs (the median of the runs' when repeated).
    pub(crate) p99_us: u64,
}

impl Outcome {
    /// The outcome of one run.
    pub(crate) fn of(report: &Report) -> Outcome {
        Outcome {
            lost: report.lost,
            closed: report.closed,
            p99_us: report.percentile(0.99),
        }
    }

    /// The outcome of repeated runs of one setup: everything lost or closed in any of them,
    /// and the median p99 (the figure a sweep reports).
    pub(crate) fn of_runs(runs: &[Report]) -> Outcome {
        let p99s: Vec<Value> = runs
            .iter()
            .map(|r| Value::Int(r.percentile(0.99)))
            .collect();
        let p99s: Vec<&Value> = p99s.iter().collect();
        Outcome {
            lost: runs.iter().map(|r| r.lost).sum(),
            closed: runs.iter().map(|r| r.closed).sum(),
            p99_us: Value::pick(&p99s, Pick::Median)
                .as_f64()
                .map_or(0, |v| v as u64),
        }
    }

    /// What is wrong with it, one message each, naming the figure and the limit.
    pub(crate) fn failures(self, limits: Limits) -> Vec<String> {
        let mut failures = Vec::new();
        if self.lost > 0 {
            failures.push(format!(
                "{} frames lost (a gap, duplicate or reordering, or a delivery that never came)",
                self.lost
            ));
        }
        if self.closed > 0 {
            failures.push(format!(
                "the server closed {} connections of measured clients or publishers",
                self.closed
            ));
        }
        let p99 = Duration::from_micros(self.p99_us);
        if let Some(max) = limits.max_p99.filter(|&max| p99 > max) {
            failures.push(format!("p99 latency {p99:?} is over --max-p99 {max:?}"));
        }
        failures
    }
}

/// What is wrong with a single run, each message naming its server.
pub(crate) fn run_failures(report: &Report, limits: Limits) -> Vec<String> {
    Outcome::of(report)
        .failures(limits)
        .into_iter()
        .map(|f| format!("{}: {f}", report.server))
        .collect()
}

/// What is wrong with any row of a sweep, each message naming the server and the row.
pub(crate) fn sweep_failures(rows: &[Row], limits: Limits) -> Vec<String> {
    let mut failures = Vec::new();
    for row in rows {
        for runs in &row.runs {
            let Some(first) = runs.first() else { continue };
            let outcome = Outcome::of_runs(runs);
            failures.extend(outcome.failures(limits).into_iter().map(|f| {
                format!(
                    "{} at {} clients, window {}, {} B: {f}",
                    first.server, row.shape.clients, row.shape.window, row.shape.payload
                )
            }));
        }
    }
    failures
}

/// `Ok` if nothing failed; else the error main prints (one line per failure) before it exits
/// with status 1.
pub(crate) fn verdict(failures: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    match failures.as_slice() {
        [] => Ok(()),
        [one] => Err(format!("bench failed: {one}").into()),
        many => Err(format!("bench failed:\n  {}", many.join("\n  ")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: Outcome = Outcome {
        lost: 0,
        closed: 0,
        p99_us: 800,
    };

    fn limit(us: u64) -> Limits {
        Limits {
            max_p99: Some(Duration::from_micros(us)),
        }
    }

    #[test]
    fn a_run_that_lost_nothing_within_its_limit_passes() {
        assert!(CLEAN.failures(Limits::default()).is_empty());
        assert!(CLEAN.failures(limit(800)).is_empty());
        assert!(verdict(Vec::new()).is_ok());
    }

    #[test]
    fn a_lost_frame_fails_the_run() {
        let lost = Outcome { lost: 1, ..CLEAN };
        let failures = lost.failures(Limits::default());
        assert_eq!(failures.len(), 1);
        assert!(failures[0].starts_with("1 frames lost"), "{failures:?}");
        let err = verdict(failures).expect_err("lost frames fail");
        assert!(err.to_string().starts_with("bench failed: 1 frames lost"));
    }

    #[test]
    fn a_connection_the_server_closed_fails_the_run() {
        let closed = Outcome { closed: 2, ..CLEAN };
        assert_eq!(
            closed.failures(Limits::default()),
            ["the server closed 2 connections of measured clients or publishers"]
        );
    }

    #[test]
    fn a_p99_over_the_limit_fails_naming_both() {
        assert_eq!(
            CLEAN.failures(limit(799)),
            ["p99 latency 800µs is over --max-p99 799µs"]
        );
    }

    #[test]
    fn every_failure_is_reported_one_per_line() {
        let all = Outcome {
            lost: 3,
            closed: 1,
            p99_us: 5_000,
        };
        let err = verdict(all.failures(limit(1)).into_iter().collect()).expect_err("fails");
        assert_eq!(err.to_string().lines().count(), 4, "{err}");
    }

    #[test]
    fn a_sweep_fails_on_any_run_that_lost_frames_and_on_a_median_p99_over_the_limit() {
        let shape = super::super::plan::Shape {
            clients: 100,
            window: 16,
            payload: 32,
        };
        let row = |embedded_lost: u64| Row {
            shape,
            runs: vec![
                vec![
                    Report::sample("embedded", 1000, 100, 0),
                    Report::sample("embedded", 1000, 900, embedded_lost),
                    Report::sample("embedded", 1000, 200, 0),
                ],
                vec![Report::sample("naive", 1000, 300, 0)],
            ],
        };
        assert!(sweep_failures(&[row(0)], Limits::default()).is_empty());
        assert_eq!(
            sweep_failures(&[row(0), row(4)], Limits::default()),
            [
                "embedded at 100 clients, window 16, 32 B: 4 frames lost (a gap, duplicate or \
              reordering, or a delivery that never came)"
            ]
        );
        // The median p99 of the embedded runs is 200 µs; the naive one's 300 µs.
        assert_eq!(sweep_failures(&[row(0)], limit(300)), Vec::<String>::new());
        assert_eq!(
            sweep_failures(&[row(0)], limit(250)),
            ["naive at 100 clients, window 16, 32 B: p99 latency 300µs is over --max-p99 250µs"]
        );
        assert_eq!(sweep_failures(&[row(0)], limit(150)).len(), 2);
    }

    #[test]
    fn a_single_run_is_checked_by_its_own_figures() {
        let report = Report::sample("embedded", 1000, 900, 1);
        assert_eq!(
            run_failures(&report, limit(899)),
            [
                "embedded: 1 frames lost (a gap, duplicate or reordering, or a delivery that \
                 never came)",
                "embedded: p99 latency 900µs is over --max-p99 899µs"
            ]
        );
    }
}
