//! Bounded waits: every wait of a test ends by [`WAIT`], and a condition is polled, never
//! slept on.

use std::time::Duration;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `cond` until it holds (bounded by [`WAIT`]).
pub async fn eventually(cond: impl FnMut() -> bool) {
    until(cond, || "condition".to_owned()).await;
}

/// Polls `cond` until it holds; past [`WAIT`], panics with `what()`.
pub async fn until(mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "not reached in time: {}", what());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
