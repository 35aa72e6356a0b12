//! What one evaluation round reads from the store, read once.
//!
//! A round (every group due at one instant) first works out which metric names
//! its expressions select and how far back they look ([`Reads`]), then copies
//! those series in a single pass over the store ([`Snapshot`]): label sets
//! interned into the round's [`Interner`], samples into one flat array. Each
//! selector then picks its series from the snapshot by name, with matchers
//! memoised per value id, and borrows its samples as slices: a thousand rules
//! reading a hundred metrics scan the store once, not a thousand times.
//!
//! Writes made during the round (recording rules, `ALERTS`) invalidate the
//! written name, which is read again on next use, so a rule still sees what the
//! rules before it in its group recorded (Prometheus' in-group ordering).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use promql_parser::parser::{Expr, Offset, VectorSelector};

use super::labels::{Interner, LabelSet, Sym, NAME};
use crate::store::{FxBuildHasher, MatchOp, Selector, Store, METRIC_NAME};

/// Prometheus' default lookback delta for instant selectors.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

pub(super) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

/// The metric names a set of expressions selects and the sample window they
/// need relative to the evaluation time.
#[derive(Debug, Clone, Default)]
pub struct Reads {
    names: HashSet<String>,
    /// A selector without a fixed metric name: every series is read.
    all: bool,
    /// Samples from `t - back_ms` ... (instant selectors without offset need
    /// only each series' newest sample, which the snapshot keeps apart)
    back_ms: i64,
    /// ... to `t + fwd_ms` (negative offsets look ahead).
    fwd_ms: i64,
}

impl Reads {
    pub fn of(expr: &Expr) -> Self {
        let mut r = Self::default();
        r.add(expr);
        r
    }

    pub fn add(&mut self, expr: &Expr) {
        super::check::for_each_selector(expr, &mut |vs, range| {
            let back = match range {
                Some(r) => r,
                None if vs.offset.is_none() => 0,
                None => LOOKBACK_MS,
            };
            self.selector(vs, back);
        });
    }

    pub fn merge(&mut self, other: &Reads) {
        self.names.extend(other.names.iter().cloned());
        self.all |= other.all;
        self.back_ms = self.back_ms.max(other.back_ms);
        self.fwd_ms = self.fwd_ms.max(other.fwd_ms);
    }

    fn selector(&mut self, vs: &VectorSelector, range_ms: i64) {
        let off = offset_ms(&vs.offset);
        self.back_ms = self.back_ms.max(off + range_ms);
        self.fwd_ms = self.fwd_ms.max(-off);
        match fixed_name(vs) {
            Some(n) => {
                self.names.insert(n.to_string());
            }
            None => self.all = true,
        }
    }
}

fn fixed_name(vs: &VectorSelector) -> Option<&str> {
    if vs.name.is_some() || !vs.matchers.or_matchers.is_empty() {
        // `{a="1" or b="2"}` may select different metrics per alternative.
        return vs.name.as_deref();
    }
    vs.matchers.matchers.iter().find_map(|m| {
        (m.name == METRIC_NAME && matches!(m.op, promql_parser::label::MatchOp::Equal))
            .then_some(m.value.as_str())
    })
}

/// One series of the snapshot.
struct SnapSeries {
    /// Until the scan ends, a placeholder (see [`Snapshot::scan`]).
    labels: LabelSet,
    /// Where the pairs are in the metric's `labels` block.
    label_off: u32,
    label_len: u32,
    /// The newest sample in `[t - lookback, t]` (`i64::MIN` as time if none):
    /// what an instant selector without offset reads.
    last: (i64, f64),
    start: u32,
    len: u32,
}

/// A selected series: labels (with `__name__`), the samples in the asked
/// range, and its newest sample at the round's time (if any).
pub(super) struct Pick<'a> {
    pub(super) labels: &'a LabelSet,
    pub(super) points: &'a [(i64, f64)],
    pub(super) last: Option<(i64, f64)>,
}

/// The series a round reads, copied out of the store (see the module doc).
pub struct Snapshot<'s> {
    store: &'s Store,
    now_ms: i64,
    from_ms: i64,
    to_ms: i64,
    pub(super) interner: Interner,
    /// Every series is loaded (a selector without a fixed name was seen).
    all: bool,
    by_name: HashMap<Sym, Metric, FxBuildHasher>,
    /// Names written during the round: read again on next use.
    dirty: HashSet<Sym, FxBuildHasher>,
}

/// The series of one metric name; their samples kept together so that a
/// selection reads one contiguous block.
#[derive(Default)]
struct Metric {
    series: Vec<SnapSeries>,
    points: Vec<(i64, f64)>,
    /// The label pairs of every series, collected during the scan.
    labels: Vec<Sym>,
    /// The series' label sets point into their block (the scan is over).
    sealed: bool,
}

impl<'s> Snapshot<'s> {
    /// Reads what `reads` names, as of `now_ms`.
    pub fn new(store: &'s Store, now_ms: i64, reads: &Reads) -> Self {
        let mut s = Self {
            store,
            now_ms,
            from_ms: now_ms - reads.back_ms,
            to_ms: now_ms + reads.fwd_ms,
            interner: Interner::new(),
            all: false,
            by_name: HashMap::default(),
            dirty: HashSet::default(),
        };
        if reads.all {
            s.load_all();
        } else {
            let names: Vec<&str> = reads.names.iter().map(String::as_str).collect();
            s.load(&names);
        }
        s
    }

    fn load_all(&mut self) {
        self.by_name.clear();
        self.dirty.clear();
        self.all = true;
        self.scan(None);
    }

    fn load(&mut self, names: &[&str]) {
        for n in names {
            let id = self.interner.intern(n);
            self.by_name.insert(id, Metric::default());
            self.dirty.remove(&id);
        }
        self.scan(Some(names));
    }

    fn scan(&mut self, names: Option<&[&str]>) {
        // Store id → round id; valid for this one visit (see `SeriesView::key`).
        const NONE: u32 = u32::MAX;
        let mut local: Vec<u32> = Vec::new();
        let mut sorted: Vec<(Sym, Sym)> = Vec::with_capacity(16);
        let (from, to) = (self.from_ms, self.to_ms);
        let placeholder = LabelSet::empty();
        let Self {
            store,
            now_ms,
            interner,
            by_name,
            ..
        } = self;
        store.visit(names, *now_ms, |v| {
            let key = v.key();
            let mut id = |g: u32| {
                let g = g as usize;
                if g >= local.len() {
                    local.resize(g + 1, NONE);
                }
                if local[g] == NONE {
                    local[g] = interner.intern(v.resolve(g as u32));
                }
                local[g]
            };
            let name = id(key[0]);
            let metric = by_name.entry(name).or_default();
            let start = metric.points.len();
            v.samples(from, to, &mut metric.points);
            let last = v.last_in(*now_ms - LOOKBACK_MS, *now_ms);
            if metric.points.len() == start && last.is_none() {
                return;
            }
            sorted.clear();
            for c in key[1..].chunks_exact(2) {
                sorted.push((id(c[0]), id(c[1])));
            }
            sorted.sort_unstable_by_key(|p| p.0);
            let label_off = metric.labels.len();
            for &(k, v) in &sorted {
                metric.labels.push(k);
                metric.labels.push(v);
            }
            metric.series.push(SnapSeries {
                labels: placeholder.clone(),
                label_off: label_off as u32,
                label_len: (metric.labels.len() - label_off) as u32,
                last: last.unwrap_or((i64::MIN, 0.0)),
                start: start as u32,
                len: (metric.points.len() - start) as u32,
            });
        });
        // One block per metric for the label sets (see `LabelSet`).
        for (&name, m) in by_name.iter_mut() {
            if m.sealed {
                continue;
            }
            m.sealed = true;
            let block: Arc<[Sym]> = std::mem::take(&mut m.labels).into();
            for s in &mut m.series {
                s.labels = LabelSet::in_block(
                    Some(name),
                    &block,
                    s.label_off as usize,
                    s.label_len as usize,
                );
            }
        }
    }

    /// Marks `name` as written: the next selection of it reads the store again.
    /// (Interned even if new: a selector without a fixed name must see it too.)
    pub fn invalidate(&mut self, name: &str) {
        let id = self.interner.intern(name);
        self.dirty.insert(id);
    }

    fn ensure(&mut self, sel: &Selector) {
        match sel.metric_name() {
            Some(n) => {
                let id = self.interner.get(n);
                let loaded = id.is_some_and(|id| {
                    !self.dirty.contains(&id) && (self.all || self.by_name.contains_key(&id))
                });
                if !loaded {
                    if let Some(id) = id {
                        self.by_name.remove(&id);
                    }
                    self.load(&[n]);
                }
            }
            None => {
                if !self.all || !self.dirty.is_empty() {
                    self.load_all();
                }
            }
        }
    }

    /// The series matching any of `sels` (each once), with their samples in
    /// `range` `[start_ms, end_ms]` (possibly none; none asked with `None`).
    pub(super) fn select(&mut self, sels: &[Selector], range: Option<(i64, i64)>) -> Vec<Pick<'_>> {
        for s in sels {
            self.ensure(s);
        }
        let this = &*self;
        let mut out = Vec::new();
        let mut seen: HashSet<&LabelSet, FxBuildHasher> = HashSet::default();
        for sel in sels {
            let name = sel.metric_name();
            // Candidates found by name need no name matcher.
            let mut ms = Compiled::new(sel, name.is_some(), &this.interner);
            let candidates: Box<dyn Iterator<Item = &Metric>> = match name {
                Some(n) => Box::new(
                    this.interner
                        .get(n)
                        .and_then(|id| this.by_name.get(&id))
                        .into_iter(),
                ),
                None => Box::new(this.by_name.values()),
            };
            let series = candidates.flat_map(|m| m.series.iter().map(move |s| (m, s)));
            for (m, s) in series {
                if !ms.matches(&s.labels, &this.interner) {
                    continue;
                }
                if sels.len() > 1 && !seen.insert(&s.labels) {
                    continue;
                }
                let points = match range {
                    Some((start_ms, end_ms)) => {
                        let all = &m.points[s.start as usize..(s.start + s.len) as usize];
                        let lo = all.partition_point(|p| p.0 < start_ms);
                        let hi = all.partition_point(|p| p.0 <= end_ms);
                        &all[lo..hi.max(lo)]
                    }
                    None => &[],
                };
                out.push(Pick {
                    labels: &s.labels,
                    points,
                    last: (s.last.0 != i64::MIN).then_some(s.last),
                });
            }
        }
        out
    }
}

/// A selector's matchers for one selection, memoised per value id.
struct Compiled<'a> {
    matchers: Vec<(&'a crate::store::LabelMatcher, Option<Sym>, Vec<u8>)>,
}

impl<'a> Compiled<'a> {
    fn new(sel: &'a Selector, skip_name_equal: bool, interner: &Interner) -> Self {
        Self {
            matchers: sel
                .matchers
                .iter()
                .filter(|m| {
                    !(skip_name_equal && m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal(_)))
                })
                .map(|m| {
                    let key = if m.name == METRIC_NAME {
                        Some(NAME)
                    } else {
                        interner.get(&m.name)
                    };
                    (m, key, Vec::new())
                })
                .collect(),
        }
    }

    fn matches(&mut self, l: &LabelSet, interner: &Interner) -> bool {
        self.matchers.iter_mut().all(|(m, key, memo)| {
            let Some(v) = key.and_then(|k| l.get(k)) else {
                return m.matches("");
            };
            let i = v as usize;
            if i >= memo.len() {
                memo.resize(interner.len().max(i + 1), 0);
            }
            if memo[i] == 0 {
                memo[i] = if m.matches(interner.resolve(v)) { 1 } else { 2 };
            }
            memo[i] == 1
        })
    }
}
