//! The deadline of one scrape, checked from inside the parsing and conversion loops:
//! work on a blocking thread cannot be cancelled from outside, so it looks at the
//! clock itself and stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How many steps (lines, samples) pass between two looks at the clock: a clock read
/// costs about as much as parsing a short line.
const CHECK_EVERY: u32 = 64;

/// When a scrape's work must stop: at its deadline, or earlier once [`Deadline::cancel`]
/// is called (the target went away, the collector stops). Clones share cancellation.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: Option<Instant>,
    cancelled: Arc<AtomicBool>,
}

/// The deadline passed (or the work was cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the scrape's deadline passed")]
pub struct Expired;

impl Deadline {
    pub fn at(at: Instant) -> Self {
        Deadline {
            at: Some(at),
            cancelled: Arc::default(),
        }
    }

    /// No deadline; only [`Deadline::cancel`] stops the work.
    pub fn none() -> Self {
        Deadline {
            at: None,
            cancelled: Arc::default(),
        }
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn check(&self) -> Result<(), Expired> {
        let late = self.at.is_some_and(|at| Instant::now() >= at);
        if late || self.cancelled.load(Ordering::Relaxed) {
            Err(Expired)
        } else {
            Ok(())
        }
    }

    /// A checker for a loop: [`Ticker::tick`] once per step.
    pub fn ticker(&self) -> Ticker<'_> {
        Ticker {
            deadline: self,
            steps: 0,
        }
    }
}

/// Looks at a [`Deadline`] every [`CHECK_EVERY`] steps of a loop (and at the first).
pub struct Ticker<'a> {
    deadline: &'a Deadline,
    steps: u32,
}

impl Ticker<'_> {
    pub fn tick(&mut self) -> Result<(), Expired> {
        let due = self.steps.is_multiple_of(CHECK_EVERY);
        self.steps = self.steps.wrapping_add(1);
        if due {
            self.deadline.check()
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expires_at_its_instant_or_when_cancelled() {
        let d = Deadline::at(Instant::now() + Duration::from_secs(60));
        assert_eq!(d.check(), Ok(()));
        d.clone().cancel();
        assert_eq!(d.check(), Err(Expired));
        assert_eq!(Deadline::at(Instant::now()).check(), Err(Expired));
        assert_eq!(Deadline::none().check(), Ok(()));
    }

    #[test]
    fn a_ticker_looks_at_the_first_step_and_every_64th() {
        let d = Deadline::none();
        let mut t = d.ticker();
        assert_eq!(t.tick(), Ok(()));
        d.cancel();
        for _ in 1..CHECK_EVERY {
            assert_eq!(t.tick(), Ok(()));
        }
        assert_eq!(t.tick(), Err(Expired));
    }
}
