//! Bounded waits: every wait of a test ends by [`WAIT`], and a condition is polled, never
//! slept on.

use std::time::Duration;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a wait sleeps between two polls of its condition.
const POLL: Duration = Duration::from_millis(5);

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
    until_async(async || cond(), what).await;
}

/// Polls `cond`, a condition that must await (a scrape, a probe), until it holds; past
/// [`WAIT`], panics with `what()`, even inside a poll of `cond` that does not return.
pub async fn until_async(mut cond: impl AsyncFnMut() -> bool, what: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let holds = tokio::time::timeout_at(deadline, cond()).await;
        let holds = holds.unwrap_or_else(|_| panic!("not reached in time: {}", what()));
        if holds {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached in time: {}",
            what()
        );
        tokio::time::sleep(POLL).await;
    }
}
