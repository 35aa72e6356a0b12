//! Delta → cumulative accumulation (OTel spec: "Delta sums and histograms ...
//! MAY be converted to cumulative by accumulating"; Prometheus must never see
//! raw deltas as counters).
//!
//! State is keyed by the *series identity after translation*: the Prometheus
//! metric name (the base name for histograms) plus the final sorted label set
//! (resource-derived `job`/`instance`/`cluster`/`node`, scope labels, point
//! attributes). Two OTLP streams that translate to the same series therefore
//! share one accumulator, exactly like they share one store series.
//!
//! Rules:
//! - the first delta point of a series starts the cumulative value at itself;
//! - a point whose end time is not after the last accumulated one is dropped
//!   (replay or reordering would double count; ingest dedups replays first);
//! - a histogram whose bucket bounds change restarts from that point (the
//!   series shows a counter reset, which `rate()` handles);
//! - an entry not updated for the staleness period is forgotten
//!   ([`DeltaState::expire`], run from `Converter::ingest` at most once a
//!   minute), so the state is bounded by the series seen in that window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

const SHARDS: usize = 16;

#[derive(Debug)]
enum Acc {
    Sum {
        value: f64,
        last_ns: u64,
        seen_ms: i64,
    },
    Hist {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        sum: f64,
        count: u64,
        last_ns: u64,
        seen_ms: i64,
    },
}

impl Acc {
    fn seen_ms(&self) -> i64 {
        match self {
            Acc::Sum { seen_ms, .. } | Acc::Hist { seen_ms, .. } => *seen_ms,
        }
    }
}

/// The cumulative histogram state after adding a delta point.
#[derive(Debug, Clone, PartialEq)]
pub struct HistTotals {
    /// Per-bucket (non-cumulative) counts, `bounds.len() + 1` long, or empty.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

pub(crate) struct DeltaState {
    shards: Vec<Mutex<HashMap<String, Acc>>>,
    staleness_ms: i64,
    last_expire_ms: AtomicI64,
}

fn shard(key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let h =
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key);
    (h as usize) % SHARDS
}

impl DeltaState {
    pub(crate) fn new(staleness_ms: i64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            staleness_ms,
            last_expire_ms: AtomicI64::new(i64::MIN),
        }
    }

    fn lock(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, Acc>> {
        self.shards[shard(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a delta sum; returns the cumulative value, or `None` when the
    /// point is not newer than the last one accumulated.
    pub(crate) fn add_sum(&self, key: &str, delta: f64, time_ns: u64, now_ms: i64) -> Option<f64> {
        let mut m = self.lock(key);
        match m.get_mut(key) {
            Some(Acc::Sum {
                value,
                last_ns,
                seen_ms,
            }) => {
                if time_ns <= *last_ns {
                    return None;
                }
                *value += delta;
                *last_ns = time_ns;
                *seen_ms = now_ms;
                Some(*value)
            }
            _ => {
                m.insert(
                    key.to_owned(),
                    Acc::Sum {
                        value: delta,
                        last_ns: time_ns,
                        seen_ms: now_ms,
                    },
                );
                Some(delta)
            }
        }
    }

    /// Adds a delta histogram (per-bucket counts, not cumulative).
    pub(crate) fn add_hist(
        &self,
        key: &str,
        bounds: &[f64],
        delta: HistTotals,
        time_ns: u64,
        now_ms: i64,
    ) -> Option<HistTotals> {
        let mut m = self.lock(key);
        if let Some(Acc::Hist {
            bounds: b,
            counts: c,
            sum: s,
            count: n,
            last_ns,
            seen_ms,
        }) = m.get_mut(key)
        {
            if time_ns <= *last_ns {
                return None;
            }
            if b.as_slice() == bounds && c.len() == delta.counts.len() {
                for (acc, d) in c.iter_mut().zip(&delta.counts) {
                    *acc = acc.saturating_add(*d);
                }
                *s += delta.sum;
                *n = n.saturating_add(delta.count);
                *last_ns = time_ns;
                *seen_ms = now_ms;
                return Some(HistTotals {
                    counts: c.clone(),
                    sum: *s,
                    count: *n,
                });
            }
        }
        m.insert(
            key.to_owned(),
            Acc::Hist {
                bounds: bounds.to_vec(),
                counts: delta.counts.clone(),
                sum: delta.sum,
                count: delta.count,
                last_ns: time_ns,
                seen_ms: now_ms,
            },
        );
        Some(delta)
    }

    /// Forgets series not updated for the staleness period; runs at most once
    /// a minute (cheap to call on every request). Returns entries removed.
    pub(crate) fn maybe_expire(&self, now_ms: i64) -> usize {
        let last = self.last_expire_ms.load(Ordering::Relaxed);
        if last != i64::MIN && now_ms.saturating_sub(last) < 60_000 {
            return 0;
        }
        if self
            .last_expire_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return 0;
        }
        self.expire(now_ms)
    }

    pub(crate) fn expire(&self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.staleness_ms);
        let mut removed = 0;
        for s in &self.shards {
            let mut m = s.lock().unwrap_or_else(|e| e.into_inner());
            let before = m.len();
            m.retain(|_, a| a.seen_ms() >= cutoff);
            removed += before - m.len();
        }
        removed
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_accumulates_and_drops_old_points() {
        let d = DeltaState::new(1000);
        assert_eq!(d.add_sum("a", 2.0, 10, 0), Some(2.0));
        assert_eq!(d.add_sum("a", 3.0, 20, 0), Some(5.0));
        assert_eq!(d.add_sum("a", 3.0, 20, 0), None, "same end time: replay");
        assert_eq!(d.add_sum("a", 1.0, 15, 0), None, "older");
        assert_eq!(d.add_sum("b", 1.0, 5, 0), Some(1.0), "independent series");
        assert_eq!(d.add_sum("a", 0.5, 30, 0), Some(5.5));
    }

    fn ht(counts: &[u64], sum: f64, count: u64) -> HistTotals {
        HistTotals {
            counts: counts.to_vec(),
            sum,
            count,
        }
    }

    #[test]
    fn hist_accumulates_and_resets_on_new_bounds() {
        let d = DeltaState::new(1000);
        let t = d
            .add_hist("h", &[1.0, 2.0], ht(&[1, 2, 3], 10.0, 6), 1, 0)
            .unwrap();
        assert_eq!(t.counts, vec![1, 2, 3]);
        let t = d
            .add_hist("h", &[1.0, 2.0], ht(&[1, 0, 1], 2.0, 2), 2, 0)
            .unwrap();
        assert_eq!((t.counts, t.sum, t.count), (vec![2, 2, 4], 12.0, 8));
        assert!(d
            .add_hist("h", &[1.0, 2.0], ht(&[1, 0, 1], 2.0, 2), 2, 0)
            .is_none());
        let t = d
            .add_hist(
                "h",
                &[5.0],
                HistTotals {
                    counts: vec![1, 1],
                    sum: 3.0,
                    count: 2,
                },
                3,
                0,
            )
            .unwrap();
        assert_eq!(
            (t.counts, t.sum, t.count),
            (vec![1, 1], 3.0, 2),
            "bounds changed: restart"
        );
    }

    #[test]
    fn expiry_bounds_state() {
        let d = DeltaState::new(1000);
        d.add_sum("a", 1.0, 1, 0);
        d.add_sum("b", 1.0, 1, 900);
        assert_eq!(d.expire(1500), 1);
        assert_eq!(d.len(), 1);
        // maybe_expire runs at most once a minute
        assert_eq!(d.maybe_expire(10_000), 1);
        d.add_sum("c", 1.0, 1, 10_000);
        assert_eq!(d.maybe_expire(20_000), 0);
        assert_eq!(d.maybe_expire(70_000), 1);
    }
}
