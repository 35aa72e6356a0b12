//! Waiting on conditions instead of sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(50);

/// What a polled condition returns: `bool`, or `Option<T>` to hand a value back.
pub trait Outcome {
    type Value;
    fn into_value(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn into_value(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_value(self) -> Option<T> {
        self
    }
}

/// Polls `check` until it is true (or `Some`) and returns its value; panics naming
/// `what` once `timeout` has passed.
pub async fn eventually<O, F, Fut>(timeout: Duration, what: &str, mut check: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await.into_value() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for tests without a runtime: the thread sleeps between polls.
pub fn eventually_blocking<O: Outcome>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> O,
) -> O::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().into_value() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Checks `holds` repeatedly for `period`; panics naming `what` the first time it
/// does not hold. For "X does not happen": there is no event to wait for, so the
/// test watches for a while.
pub async fn always_for<F, Fut>(period: Duration, what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + period;
    loop {
        assert!(holds().await, "{what} stopped holding");
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`always_for`] for tests without a runtime.
pub fn always_for_blocking(period: Duration, what: &str, mut holds: impl FnMut() -> bool) {
    let end = Instant::now() + period;
    loop {
        assert!(holds(), "{what} stopped holding");
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(POLL);
    }
}
