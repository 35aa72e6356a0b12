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
use std::hash::Hasher;
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

/// A histogram's totals: the delta going in, the cumulative state coming out
/// of [`DeltaState::add_hist`] (the caller keeps one and reuses its buffer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistTotals {
    /// Per-bucket (non-cumulative) counts, `bounds.len() + 1` long, or empty.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// A series identity as a sequence of byte strings: the state is looked up
/// by it without building the key, which is stored only for a new entry.
pub(crate) trait DeltaKey {
    fn parts(&self, f: &mut dyn FnMut(&[u8]));
}

impl DeltaKey for str {
    fn parts(&self, f: &mut dyn FnMut(&[u8])) {
        f(self.as_bytes());
    }
}

/// Name and label pairs, separated by bytes that cannot occur in sanitised
/// names (`\xff` is not valid UTF-8, so a `\u{1}` / `\u{0}` pair is used).
pub(crate) struct SeriesKey<'a> {
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
}

impl DeltaKey for SeriesKey<'_> {
    fn parts(&self, f: &mut dyn FnMut(&[u8])) {
        f(self.name.as_bytes());
        for (k, v) in self.labels {
            f(b"\0");
            f(k.as_bytes());
            f(b"\x01");
            f(v.as_bytes());
        }
    }
}

/// SipHash is fed byte strings as one stream, however they are split.
fn hash_of<K: DeltaKey + ?Sized>(k: &K) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.parts(&mut |p| h.write(p));
    h.finish()
}

fn key_eq<K: DeltaKey + ?Sized>(stored: &[u8], k: &K) -> bool {
    let mut rest = Some(stored);
    k.parts(&mut |p| {
        rest = rest.and_then(|r| r.strip_prefix(p));
    });
    rest.is_some_and(|r| r.is_empty())
}

fn owned<K: DeltaKey + ?Sized>(k: &K) -> Box<[u8]> {
    let mut v = Vec::new();
    k.parts(&mut |p| v.extend_from_slice(p));
    v.into_boxed_slice()
}

/// Entries by the hash of their key; the rare colliding keys share a bucket.
type Shard = HashMap<u64, Vec<(Box<[u8]>, Acc)>>;

pub(crate) struct DeltaState {
    shards: Vec<Mutex<Shard>>,
    staleness_ms: i64,
    last_expire_ms: AtomicI64,
}

impl DeltaState {
    pub(crate) fn new(staleness_ms: i64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            staleness_ms,
            last_expire_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Runs `f` on the entry of `key` (`None` when absent); an entry `f`
    /// returns is stored, replacing the held one.
    fn update<K: DeltaKey + ?Sized, R>(
        &self,
        key: &K,
        f: impl FnOnce(Option<&mut Acc>) -> (R, Option<Acc>),
    ) -> R {
        let h = hash_of(key);
        let mut m = self.shards[(h % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let bucket = m.entry(h).or_default();
        let i = bucket.iter().position(|(k, _)| key_eq(k, key));
        let (r, new) = f(i.map(|i| &mut bucket[i].1));
        match (new, i) {
            (Some(acc), Some(i)) => bucket[i].1 = acc,
            (Some(acc), None) => bucket.push((owned(key), acc)),
            (None, _) => {}
        }
        r
    }

    /// Adds a delta sum; returns the cumulative value, or `None` when the
    /// point is not newer than the last one accumulated.
    pub(crate) fn add_sum<K: DeltaKey + ?Sized>(
        &self,
        key: &K,
        delta: f64,
        time_ns: u64,
        now_ms: i64,
    ) -> Option<f64> {
        self.update(key, |a| match a {
            Some(Acc::Sum {
                value,
                last_ns,
                seen_ms,
            }) => {
                if time_ns <= *last_ns {
                    return (None, None);
                }
                *value += delta;
                *last_ns = time_ns;
                *seen_ms = now_ms;
                (Some(*value), None)
            }
            _ => (
                Some(delta),
                Some(Acc::Sum {
                    value: delta,
                    last_ns: time_ns,
                    seen_ms: now_ms,
                }),
            ),
        })
    }

    /// Adds a delta histogram (per-bucket counts, not cumulative) held in
    /// `totals`, which then holds the cumulative totals; false (and `totals`
    /// unchanged) when the point is not newer than the last one accumulated.
    pub(crate) fn add_hist<K: DeltaKey + ?Sized>(
        &self,
        key: &K,
        bounds: &[f64],
        totals: &mut HistTotals,
        time_ns: u64,
        now_ms: i64,
    ) -> bool {
        self.update(key, |a| {
            if let Some(Acc::Hist {
                bounds: b,
                counts: c,
                sum: s,
                count: n,
                last_ns,
                seen_ms,
            }) = a
            {
                if time_ns <= *last_ns {
                    return (false, None);
                }
                if b.as_slice() == bounds && c.len() == totals.counts.len() {
                    for (acc, d) in c.iter_mut().zip(&totals.counts) {
                        *acc = acc.saturating_add(*d);
                    }
                    *s += totals.sum;
                    *n = n.saturating_add(totals.count);
                    *last_ns = time_ns;
                    *seen_ms = now_ms;
                    totals.counts.clear();
                    totals.counts.extend_from_slice(c);
                    totals.sum = *s;
                    totals.count = *n;
                    return (true, None);
                }
            }
            let acc = Acc::Hist {
                bounds: bounds.to_vec(),
                counts: totals.counts.clone(),
                sum: totals.sum,
                count: totals.count,
                last_ns: time_ns,
                seen_ms: now_ms,
            };
            (true, Some(acc))
        })
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
            m.retain(|_, bucket| {
                let before = bucket.len();
                bucket.retain(|(_, a)| a.seen_ms() >= cutoff);
                removed += before - bucket.len();
                !bucket.is_empty()
            });
        }
        removed
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let m = s.lock().unwrap_or_else(|e| e.into_inner());
                m.values().map(Vec::len).sum::<usize>()
            })
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

    /// `add_hist` as a function of its input totals.
    fn add_hist(
        d: &DeltaState,
        key: &str,
        bounds: &[f64],
        mut t: HistTotals,
        time_ns: u64,
        now_ms: i64,
    ) -> Option<HistTotals> {
        d.add_hist(key, bounds, &mut t, time_ns, now_ms)
            .then_some(t)
    }

    #[test]
    fn hist_accumulates_and_resets_on_new_bounds() {
        let d = DeltaState::new(1000);
        let t = add_hist(&d, "h", &[1.0, 2.0], ht(&[1, 2, 3], 10.0, 6), 1, 0).unwrap();
        assert_eq!(t.counts, vec![1, 2, 3]);
        let t = add_hist(&d, "h", &[1.0, 2.0], ht(&[1, 0, 1], 2.0, 2), 2, 0).unwrap();
        assert_eq!((t.counts, t.sum, t.count), (vec![2, 2, 4], 12.0, 8));
        assert!(add_hist(&d, "h", &[1.0, 2.0], ht(&[1, 0, 1], 2.0, 2), 2, 0).is_none());
        let t = add_hist(
            &d,
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
