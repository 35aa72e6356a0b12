//! Rate limiting for logs that can repeat every few seconds (a failing scrape
//! target, a misbehaving exporter): the first occurrence is logged at its level, the
//! rest of each period only at debug, so a broken neighbour cannot flood the node's
//! logs while the failure stays visible.

use std::time::{Duration, Instant};

/// Allows one log line per `every`.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    last: Option<Instant>,
}

impl LogLimit {
    pub const fn new(every: Duration) -> LogLimit {
        LogLimit { every, last: None }
    }

    /// Whether to log now at full level; if so, the next is due one period later.
    pub fn due(&mut self) -> bool {
        self.due_at(Instant::now())
    }

    fn due_at(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_period() {
        let mut limit = LogLimit::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(limit.due_at(t0), "the first is logged");
        assert!(!limit.due_at(t0 + Duration::from_secs(1)));
        assert!(!limit.due_at(t0 + Duration::from_secs(299)));
        assert!(limit.due_at(t0 + Duration::from_secs(300)));
        assert!(!limit.due_at(t0 + Duration::from_secs(301)));
    }
}
