//! A bounded window of recent samples per series, for PromQL range functions.
//!
//! Off by default: a series holds a [`Ring`] only when the window is enabled
//! ([`Store::set_window`]) and the series matches its [`WindowScope`] (the
//! rule engine passes the selectors its rules read), so a store that only
//! serves `/federate` keeps one sample per series. A ring keeps at most
//! `max_samples` samples and none older than `window` before its newest one.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::select::{LabelMatcher, Selector, METRIC_NAME};
use super::symbols::Symbols;
use super::{name_group, read, write, FxBuildHasher, Key, Slot, Store, PER_NAME, SHARDS};

/// Which series keep a window of recent samples.
#[derive(Debug, Clone, Default)]
pub enum WindowScope {
    /// None (the default): only the latest sample is kept.
    #[default]
    None,
    /// Every series.
    All,
    /// Series matching any of these selectors.
    Matching(Vec<Selector>),
}

/// Window settings (see [`Store::set_window`]).
#[derive(Debug, Clone)]
pub struct WindowOptions {
    /// Samples older than this before a series' newest sample are dropped.
    pub window: Duration,
    /// At most this many samples per series.
    pub max_samples: usize,
    pub scope: WindowScope,
}

impl Default for WindowOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            max_samples: 1024,
            scope: WindowScope::None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct WindowState {
    pub(crate) window_ms: i64,
    pub(crate) max_samples: usize,
    pub(crate) scope: WindowScope,
}

impl WindowState {
    pub(crate) fn from_options(o: &WindowOptions) -> Self {
        Self {
            window_ms: o.window.as_millis().min(i64::MAX as u128) as i64,
            max_samples: o.max_samples.max(1),
            scope: o.scope.clone(),
        }
    }
    fn wants(&self, name: &str, labels: &dyn Fn(&str) -> Option<String>) -> bool {
        match &self.scope {
            WindowScope::None => false,
            WindowScope::All => true,
            WindowScope::Matching(sels) => sels.iter().any(|s| {
                s.matchers.iter().all(|m: &LabelMatcher| {
                    if m.name == METRIC_NAME {
                        m.matches(name)
                    } else {
                        m.matches(labels(&m.name).as_deref().unwrap_or(""))
                    }
                })
            }),
        }
    }
    pub(crate) fn wants_pairs(&self, name: &str, pairs: &[(&str, &str)]) -> bool {
        self.wants(name, &|l| {
            pairs
                .iter()
                .find(|(k, _)| *k == l)
                .map(|(_, v)| (*v).to_owned())
        })
    }
    pub(crate) fn wants_key(&self, key: &Key, sym: &Symbols) -> bool {
        self.wants(sym.resolve(key[0]), &|l| {
            key[1..]
                .chunks_exact(2)
                .find(|c| sym.resolve(c[0]) == l)
                .map(|c| sym.resolve(c[1]).to_owned())
        })
    }
}

/// Recent samples of one series, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ring {
    samples: VecDeque<(i64, f64)>,
}

impl Ring {
    pub(crate) fn new(ts: i64, v: f64) -> Box<Self> {
        let mut samples = VecDeque::with_capacity(4);
        samples.push_back((ts, v));
        Box::new(Self { samples })
    }
    /// Appends a sample (a sample at the newest timestamp replaces it) and
    /// trims by age and count.
    pub(crate) fn push(&mut self, ts: i64, v: f64, w: &WindowState) {
        match self.samples.back_mut() {
            Some(last) if last.0 == ts => last.1 = v,
            Some(last) if last.0 > ts => return,
            _ => self.samples.push_back((ts, v)),
        }
        let floor = ts.saturating_sub(w.window_ms);
        while self.samples.len() > w.max_samples
            || self.samples.front().is_some_and(|s| s.0 < floor)
        {
            self.samples.pop_front();
        }
        if self.samples.capacity() > 2 * self.samples.len() + 8 {
            self.samples.shrink_to_fit();
        }
    }
    pub(crate) fn range(&self, start: i64, end: i64, out: &mut Vec<(i64, f64)>) {
        out.extend(
            self.samples
                .iter()
                .filter(|s| s.0 >= start && s.0 <= end)
                .copied(),
        );
    }
    pub(crate) fn last_in(&self, start: i64, end: i64) -> Option<(i64, f64)> {
        self.samples
            .iter()
            .rev()
            .find(|s| s.0 <= end)
            .filter(|s| s.0 >= start)
            .copied()
    }
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.samples.capacity() * 16
    }
}

/// The samples of one series in a time range (see [`Store::samples`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// Metric name.
    pub name: String,
    /// Labels without `__name__`, sorted by name.
    pub labels: Vec<(String, String)>,
    /// `(timestamp ms, value)` in time order.
    pub samples: Vec<(i64, f64)>,
}

impl Store {
    /// Enables (or changes, or with [`WindowScope::None`] disables) the window
    /// of recent samples. Series that newly match start with their latest
    /// sample; series that no longer match lose their window.
    pub fn set_window(&self, opts: WindowOptions) {
        let st = WindowState::from_options(&opts);
        let on = !matches!(st.scope, WindowScope::None);
        {
            let _gc = read(&self.gc);
            for shard in self.shards.iter() {
                let mut map = write(shard);
                let sym = read(&self.symbols);
                for (key, slot) in map.iter_mut() {
                    if on && st.wants_key(key, &sym) {
                        if slot.ring.is_none() {
                            slot.ring = Some(Ring::new(slot.timestamp_ms, slot.value));
                        }
                    } else {
                        slot.ring = None;
                    }
                }
            }
        }
        *write(&self.window) = st;
        self.window_on.store(on, Ordering::Release);
    }

    /// The configured window length in ms (0 when the window is off).
    pub fn window_ms(&self) -> i64 {
        if self.window_on.load(Ordering::Acquire) {
            read(&self.window).window_ms
        } else {
            0
        }
    }

    /// Samples with `start_ms <= ts <= end_ms` of the series matching any of
    /// `selectors` (not stale at `now_ms`). A series without a window
    /// contributes its latest sample if that is in range. Sorted by labels.
    pub fn samples(
        &self,
        selectors: &[Selector],
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> Vec<SeriesSamples> {
        // Only the fixed metric names' shards, unless a selector fixes none.
        let names: Option<Vec<&str>> = selectors.iter().map(Selector::metric_name).collect();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        self.visit(names.as_deref(), now_ms, |v| {
            let key = v.key();
            let hit = selectors.iter().any(|s| {
                s.matchers.iter().all(|m| {
                    let value = if m.name == METRIC_NAME {
                        v.resolve(key[0])
                    } else {
                        key[1..]
                            .chunks_exact(2)
                            .find(|c| v.resolve(c[0]) == m.name)
                            .map(|c| v.resolve(c[1]))
                            .unwrap_or("")
                    };
                    m.matches(value)
                })
            });
            if !hit {
                return;
            }
            buf.clear();
            v.samples(start_ms, end_ms, &mut buf);
            if buf.is_empty() {
                return;
            }
            out.push(SeriesSamples {
                name: v.resolve(key[0]).to_owned(),
                labels: key[1..]
                    .chunks_exact(2)
                    .map(|c| (v.resolve(c[0]).to_owned(), v.resolve(c[1]).to_owned()))
                    .collect(),
                samples: std::mem::take(&mut buf),
            });
        });
        out.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        out
    }
}

/// One series as [`Store::visit`] shows it; valid only inside the callback.
pub struct SeriesView<'a> {
    key: &'a [u32],
    slot: &'a Slot,
    sym: &'a Symbols,
}

impl<'a> SeriesView<'a> {
    /// `[name, k1, v1, k2, v2, …]` as store symbol ids, label pairs sorted by
    /// label name, no empty values. The ids mean the same string for the whole
    /// [`Store::visit`] call, and nothing beyond it.
    pub fn key(&self) -> &'a [u32] {
        self.key
    }

    pub fn resolve(&self, id: u32) -> &'a str {
        self.sym.resolve(id)
    }

    /// Appends the samples in `[start_ms, end_ms]` in time order: the window
    /// for series in its scope, the latest sample for the others.
    pub fn samples(&self, start_ms: i64, end_ms: i64, out: &mut Vec<(i64, f64)>) {
        match &self.slot.ring {
            Some(r) => r.range(start_ms, end_ms, out),
            None => {
                let ts = self.slot.timestamp_ms;
                if ts >= start_ms && ts <= end_ms {
                    out.push((ts, self.slot.value));
                }
            }
        }
    }
}

impl SeriesView<'_> {
    /// The newest sample in `[start_ms, end_ms]`.
    pub fn last_in(&self, start_ms: i64, end_ms: i64) -> Option<(i64, f64)> {
        match &self.slot.ring {
            Some(r) => r.last_in(start_ms, end_ms),
            None => {
                let ts = self.slot.timestamp_ms;
                (ts >= start_ms && ts <= end_ms).then_some((ts, self.slot.value))
            }
        }
    }
}

impl Store {
    /// Calls `f` for every series not stale at `now_ms` whose metric name is
    /// one of `names` (every series with `None`), holding one shard at a time.
    /// This is how the rule evaluator reads each metric once per round.
    pub fn visit(&self, names: Option<&[&str]>, now_ms: i64, mut f: impl FnMut(SeriesView<'_>)) {
        let cutoff = self.staleness_cutoff(now_ms);
        let _gc = read(&self.gc);
        let mut mask = vec![names.is_none(); SHARDS];
        let mut wanted: HashSet<u32, FxBuildHasher> = HashSet::default();
        if let Some(names) = names {
            let sym = read(&self.symbols);
            for id in names.iter().filter_map(|n| sym.get(n)) {
                let first = name_group(id) * PER_NAME;
                mask[first..first + PER_NAME].fill(true);
                wanted.insert(id);
            }
        }
        for (i, shard) in self.shards.iter().enumerate() {
            if !mask[i] {
                continue;
            }
            let map = read(shard);
            if map.is_empty() {
                continue;
            }
            let sym = read(&self.symbols);
            for (key, slot) in map.iter() {
                if slot.updated_ms < cutoff || (names.is_some() && !wanted.contains(&key[0])) {
                    continue;
                }
                f(SeriesView {
                    key,
                    slot,
                    sym: &sym,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MetricType, StoreOptions};

    const T: i64 = 1_700_000_000_000;

    fn store() -> Store {
        Store::new(StoreOptions::default(), &prometheus::Registry::new())
    }

    #[test]
    fn window_keeps_recent_samples_of_matching_series_only() {
        let s = store();
        s.set_window(WindowOptions {
            window: Duration::from_secs(60),
            max_samples: 3,
            scope: WindowScope::Matching(Selector::parse("a").unwrap()),
        });
        let f = s.family("a", MetricType::Gauge, "", "");
        let g = s.family("b", MetricType::Gauge, "", "");
        for i in 0..10 {
            s.write(
                f,
                "a",
                &[("x", "1")],
                i as f64,
                T + i * 15_000,
                T + i * 15_000,
            );
            s.write(
                g,
                "b",
                &[("x", "1")],
                i as f64,
                T + i * 15_000,
                T + i * 15_000,
            );
        }
        let now = T + 9 * 15_000;
        let a = s.samples(&Selector::parse("a").unwrap(), 0, now, now);
        // max_samples 3 (the 60s window would allow 5).
        assert_eq!(
            a[0].samples,
            vec![(T + 105_000, 7.0), (T + 120_000, 8.0), (T + 135_000, 9.0)]
        );
        assert_eq!(a[0].labels, vec![("x".to_string(), "1".to_string())]);
        let b = s.samples(&Selector::parse("b").unwrap(), 0, now, now);
        assert_eq!(b[0].samples, vec![(now, 9.0)], "no window: latest only");
        // Range bounds are inclusive.
        let a = s.samples(
            &Selector::parse("a").unwrap(),
            T + 120_000,
            T + 120_000,
            now,
        );
        assert_eq!(a[0].samples, vec![(T + 120_000, 8.0)]);
        assert!(s.heap_estimate() > 0);
    }

    #[test]
    fn window_trims_by_age_and_is_seeded_when_enabled_later() {
        let s = store();
        let f = s.family("a", MetricType::Gauge, "", "");
        s.write(f, "a", &[], 1.0, T, T);
        s.set_window(WindowOptions {
            window: Duration::from_secs(30),
            max_samples: 100,
            scope: WindowScope::All,
        });
        assert_eq!(s.window_ms(), 30_000);
        for i in 1..=4 {
            s.write(f, "a", &[], 1.0 + i as f64, T + i * 15_000, T + i * 15_000);
        }
        let now = T + 60_000;
        let a = s.samples(&Selector::parse("a").unwrap(), 0, now, now);
        assert_eq!(a[0].samples.len(), 3, "{:?}", a[0].samples); // 30s window: t-30s..t
                                                                 // Out-of-order samples are ignored, an equal timestamp replaces.
        s.write(f, "a", &[], 9.0, T, now);
        s.write(f, "a", &[], 7.0, now, now);
        let a = s.samples(&Selector::parse("a").unwrap(), 0, now, now);
        assert_eq!(a[0].samples.last(), Some(&(now, 7.0)));
        // Disabling drops the rings.
        s.set_window(WindowOptions::default());
        let a = s.samples(&Selector::parse("a").unwrap(), 0, now, now);
        assert_eq!(a[0].samples, vec![(now, 7.0)]);
        assert_eq!(s.window_ms(), 0);
    }

    #[test]
    fn delete_removes_one_series() {
        let s = store();
        let f = s.family("ALERTS", MetricType::Gauge, "", "");
        s.write(f, "ALERTS", &[("alertname", "A")], 1.0, T, T);
        s.write(f, "ALERTS", &[("alertname", "B")], 1.0, T, T);
        assert!(s.delete("ALERTS", &[("alertname", "A")]));
        assert!(!s.delete("ALERTS", &[("alertname", "A")]));
        assert!(!s.delete("ALERTS", &[("alertname", "never")]));
        assert_eq!(s.series_count(), 1);
        let left = s.samples(&Selector::parse("ALERTS").unwrap(), 0, T, T);
        assert_eq!(left.len(), 1);
        s.sweep(T);
    }
}
