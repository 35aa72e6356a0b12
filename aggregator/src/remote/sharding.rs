//! How many shards an endpoint needs, estimated as Prometheus' queue manager does
//! (storage/remote/queue_manager.go `calculateDesiredShards`): the time one sample
//! takes to send, times the rate samples come in plus a share of what is pending.
//!
//! One difference: our reader waits when the shards' queues are full (the log keeps
//! the backlog, so nothing is dropped), which hides the true input rate behind the
//! output rate. The fraction of time the reader spent waiting tells how much faster
//! the input could flow, so the measured input rate is scaled by it.

use super::queue::Stats;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Weight of the newest interval in the moving averages (Prometheus: 0.2 per 10 s).
const EWMA_WEIGHT: f64 = 0.2;
/// No change while the estimate is within ±30 % of the current count.
const TOLERANCE: f64 = 0.3;
/// Share of the pending samples to work off per interval.
const INTEGRAL_GAIN: f64 = 0.1;
/// The reader is never treated as more than 20× faster than measured.
const MIN_FREE_FRACTION: f64 = 0.05;

#[derive(Default)]
struct Ewma {
    value: Option<f64>,
}

impl Ewma {
    fn update(&mut self, x: f64) -> f64 {
        let v = match self.value {
            None => x,
            Some(v) => v + EWMA_WEIGHT * (x - v),
        };
        self.value = Some(v);
        v
    }
}

/// Counters as of the previous tick.
#[derive(Default, Clone, Copy)]
struct Seen {
    enqueued: u64,
    sent: u64,
    send_nanos: u64,
    failures: u64,
    blocked_nanos: u64,
}

impl Seen {
    fn of(s: &Stats) -> Seen {
        Seen {
            enqueued: s.enqueued.load(Ordering::Relaxed),
            sent: s.sent.load(Ordering::Relaxed),
            send_nanos: s.send_nanos.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            blocked_nanos: s.blocked_nanos.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Estimator {
    min: usize,
    max: usize,
    seen: Seen,
    in_rate: Ewma,
    out_rate: Ewma,
    out_seconds: Ewma,
}

impl Estimator {
    pub fn new(min: usize, max: usize, stats: &Stats) -> Estimator {
        Estimator {
            min,
            max,
            seen: Seen::of(stats),
            in_rate: Ewma::default(),
            out_rate: Ewma::default(),
            out_seconds: Ewma::default(),
        }
    }

    /// The shard count to run next, given `interval` since the last call, the
    /// samples pending now and the current count.
    pub fn desired(
        &mut self,
        stats: &Stats,
        interval: Duration,
        pending: u64,
        current: usize,
    ) -> usize {
        let now = Seen::of(stats);
        let prev = std::mem::replace(&mut self.seen, now);
        let secs = interval.as_secs_f64().max(1e-3);
        let blocked = (now.blocked_nanos - prev.blocked_nanos) as f64 / 1e9 / secs;
        let free = (1.0 - blocked).clamp(MIN_FREE_FRACTION, 1.0);
        let in_rate = self
            .in_rate
            .update((now.enqueued - prev.enqueued) as f64 / secs / free);
        let out_rate = self.out_rate.update((now.sent - prev.sent) as f64 / secs);
        let out_seconds = self
            .out_seconds
            .update((now.send_nanos - prev.send_nanos) as f64 / 1e9 / secs);
        // More shards do not help an endpoint that is failing; Prometheus waits too.
        if now.failures > prev.failures || out_rate <= 0.0 {
            return current;
        }
        let time_per_sample = out_seconds / out_rate;
        let want = time_per_sample * (in_rate + INTEGRAL_GAIN / secs * pending as f64);
        let cur = current as f64;
        if want > cur * (1.0 - TOLERANCE) && want < cur * (1.0 + TOLERANCE) {
            return current;
        }
        (want.ceil() as usize).clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(
        e: &mut Estimator,
        s: &Stats,
        enq: u64,
        sent: u64,
        send_s: f64,
        blocked_s: f64,
        cur: usize,
    ) -> usize {
        s.enqueued.fetch_add(enq, Ordering::Relaxed);
        s.sent.fetch_add(sent, Ordering::Relaxed);
        s.send_nanos
            .fetch_add((send_s * 1e9) as u64, Ordering::Relaxed);
        s.blocked_nanos
            .fetch_add((blocked_s * 1e9) as u64, Ordering::Relaxed);
        e.desired(s, Duration::from_secs(1), 0, cur)
    }

    #[test]
    fn a_slow_endpoint_that_holds_back_the_reader_scales_up() {
        let s = Stats::default();
        let mut e = Estimator::new(1, 8, &s);
        // One shard busy all the time, 100 samples/s, the reader blocked 90 %.
        assert_eq!(tick(&mut e, &s, 100, 100, 1.0, 0.9, 1), 8);
    }

    #[test]
    fn a_fast_endpoint_scales_down_and_steady_load_stays() {
        let s = Stats::default();
        let mut e = Estimator::new(1, 8, &s);
        // 1,000 samples/s sent in 0.1 s of request time: one shard is plenty.
        assert_eq!(tick(&mut e, &s, 1000, 1000, 0.1, 0.0, 4), 1);
        let s = Stats::default();
        let mut e = Estimator::new(1, 8, &s);
        // Two shards busy all the time keep up with what comes in: stay.
        assert_eq!(tick(&mut e, &s, 1000, 1000, 2.0, 0.0, 2), 2);
    }

    #[test]
    fn failures_or_no_traffic_keep_the_count() {
        let s = Stats::default();
        let mut e = Estimator::new(1, 8, &s);
        assert_eq!(tick(&mut e, &s, 0, 0, 0.0, 0.0, 3), 3);
        s.failures.fetch_add(1, Ordering::Relaxed);
        assert_eq!(tick(&mut e, &s, 100, 100, 1.0, 0.9, 3), 3);
    }
}
