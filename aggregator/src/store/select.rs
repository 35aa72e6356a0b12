//! Selecting series from the store: label matchers (PromQL semantics) and the
//! [`Selection`] a reader gets back — an owned, sorted snapshot that needs no
//! store lock once built.

use promql_parser::parser::{Expr, VectorSelector};

use super::symbols::{SymbolId, Symbols};
use super::{read, FamilyMeta, Store};

pub use edgewatch_prom::{MatchOp, METRIC_NAME};

/// One label matcher (PromQL semantics, regexes fully anchored); a label that
/// a series lacks has the value `""`.
pub type LabelMatcher = edgewatch_prom::Matcher;

/// Why a selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("invalid selector {selector:?}: {reason}")]
    Parse { selector: String, reason: String },
}

/// A conjunction of matchers (one PromQL instant vector selector).
#[derive(Debug, Clone)]
pub struct Selector {
    pub matchers: Vec<LabelMatcher>,
}

impl Selector {
    /// Builds a selector; like Prometheus, a selector whose every matcher
    /// matches the empty string (it would select every series) is rejected.
    pub fn new(matchers: Vec<LabelMatcher>) -> Result<Self, SelectorError> {
        if matchers.iter().all(|m| m.matches("")) {
            return Err(SelectorError::Parse {
                selector: format!("{matchers:?}"),
                reason: "vector selector must contain at least one non-empty matcher".into(),
            });
        }
        Ok(Self { matchers })
    }

    /// The metric name this selector fixes with `__name__="…"`, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.matchers.iter().find_map(|m| match &m.op {
            MatchOp::Equal(v) if m.name == METRIC_NAME => Some(v.as_str()),
            _ => None,
        })
    }

    /// Parses a PromQL instant vector selector (`up`, `{job=~".+"}`,
    /// `{__name__=~"ovms_.*",cluster="edge-a"}`, also the `or` form
    /// `{a="1" or b="2"}` which yields one selector per alternative).
    pub fn parse(input: &str) -> Result<Vec<Selector>, SelectorError> {
        let err = |reason: String| SelectorError::Parse {
            selector: input.to_owned(),
            reason,
        };
        let expr = crate::promql::parse_expr(input).map_err(err)?;
        let vs = match expr {
            Expr::VectorSelector(vs) => vs,
            other => {
                return Err(err(format!(
                    "not an instant vector selector (got {})",
                    expr_kind(&other)
                )))
            }
        };
        if vs.offset.is_some() || vs.at.is_some() {
            return Err(err("offset and @ modifiers are not allowed".into()));
        }
        Self::from_promql(&vs).map_err(|SelectorError::Parse { reason, .. }| err(reason))
    }

    /// Converts a parsed PromQL vector selector.
    pub fn from_promql(vs: &VectorSelector) -> Result<Vec<Selector>, SelectorError> {
        let convert = |m: &promql_parser::label::Matcher| -> Result<LabelMatcher, SelectorError> {
            use promql_parser::label::MatchOp as P;
            Ok(match &m.op {
                P::Equal => LabelMatcher::equal(&m.name, &m.value),
                P::NotEqual => LabelMatcher::not_equal(&m.name, &m.value),
                // promql-parser anchors (and Go-compat escapes) the pattern.
                P::Re(r) => LabelMatcher {
                    name: m.name.clone(),
                    op: MatchOp::Regex(r.clone()),
                },
                P::NotRe(r) => LabelMatcher {
                    name: m.name.clone(),
                    op: MatchOp::NotRegex(r.clone()),
                },
            })
        };
        let name = vs
            .name
            .as_ref()
            .map(|n| LabelMatcher::equal(METRIC_NAME, n));
        let mut groups: Vec<Vec<&promql_parser::label::Matcher>> = Vec::new();
        if vs.matchers.or_matchers.is_empty() {
            groups.push(vs.matchers.matchers.iter().collect());
        } else {
            for g in &vs.matchers.or_matchers {
                groups.push(g.iter().chain(vs.matchers.matchers.iter()).collect());
            }
        }
        groups
            .into_iter()
            .map(|g| {
                let mut ms: Vec<LabelMatcher> = name.iter().cloned().collect();
                for m in g {
                    ms.push(convert(m)?);
                }
                Selector::new(ms)
            })
            .collect()
    }
}

fn expr_kind(e: &Expr) -> &'static str {
    match e {
        Expr::Aggregate(_) => "aggregation",
        Expr::Unary(_) => "unary expression",
        Expr::Binary(_) => "binary expression",
        Expr::Paren(_) => "parenthesised expression",
        Expr::Subquery(_) => "subquery",
        Expr::NumberLiteral(_) => "number",
        Expr::StringLiteral(_) => "string",
        Expr::VectorSelector(_) => "vector selector",
        Expr::MatrixSelector(_) => "range vector selector",
        Expr::Call(_) => "function call",
        _ => "expression",
    }
}

// ---------------------------------------------------------------------------

/// A compiled matcher for one scan: memoises per symbol id.
struct Compiled<'a> {
    m: &'a LabelMatcher,
    is_name: bool,
    /// Matches for a series that lacks the label (value "").
    absent: bool,
    /// 0 unknown, 1 match, 2 no match; indexed by value symbol id.
    memo: Vec<u8>,
}

impl Compiled<'_> {
    #[inline]
    fn eval(&mut self, id: SymbolId, sym: &Symbols) -> bool {
        let i = id as usize;
        if i >= self.memo.len() {
            self.memo.resize(sym.capacity().max(i + 1), 0);
        }
        match self.memo[i] {
            1 => true,
            2 => false,
            _ => {
                let r = self.m.matches(sym.resolve(id));
                self.memo[i] = if r { 1 } else { 2 };
                r
            }
        }
    }
}

/// One selected series: its family, sample, and where its symbol ids are.
#[derive(Debug, Clone, Copy)]
struct Rec {
    family: u32,
    /// Offset into `Selection::ids`: `[name, k1, v1, k2, v2, ...]` (local ids).
    start: u32,
    len: u32,
    value: f64,
    timestamp_ms: i64,
}

const NONE: u32 = u32::MAX;
/// Sort-key words kept inline (see `Selection::sort`).
const PREFIX: usize = 7;

/// An owned, sorted snapshot of selected series: families by name; within a
/// family series by label set (ignoring `le`/`quantile`), then `_bucket`
/// (or quantile) lines by numeric bound, `_sum`, `_count` — the order the
/// Prometheus text encoders write. Needs no store lock once built.
///
/// Everything is held in a few flat arrays laid out in output order (local
/// string ids into a private arena), so iterating it is sequential memory
/// access: rendering a million series is bound by formatting, not cache misses.
pub struct Selection {
    arena: String,
    /// Local id → (start, len) in `arena`.
    spans: Vec<(u32, u32)>,
    families: Vec<FamilyMeta>,
    recs: Vec<Rec>,
    ids: Vec<u32>,
}

/// One selected series.
#[derive(Clone, Copy)]
pub struct SeriesRef<'a> {
    sel: &'a Selection,
    r: &'a Rec,
}

impl<'a> SeriesRef<'a> {
    fn ids(&self) -> &'a [u32] {
        &self.sel.ids[self.r.start as usize..(self.r.start + self.r.len) as usize]
    }
    pub fn name(&self) -> &'a str {
        self.sel.s(self.ids()[0])
    }
    /// Label pairs sorted by name, without `__name__`, no empty values.
    pub fn labels(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let sel = self.sel;
        self.ids()[1..]
            .chunks_exact(2)
            .map(move |c| (sel.s(c[0]), sel.s(c[1])))
    }
    pub fn label(&self, name: &str) -> Option<&'a str> {
        self.labels().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
    pub fn value(&self) -> f64 {
        self.r.value
    }
    pub fn timestamp_ms(&self) -> i64 {
        self.r.timestamp_ms
    }
    pub fn family(&self) -> &'a FamilyMeta {
        &self.sel.families[self.r.family as usize]
    }
    /// Index of this series' family (equal for series of one family).
    pub fn family_index(&self) -> u32 {
        self.r.family
    }
}

impl Selection {
    #[inline]
    fn s(&self, local: u32) -> &str {
        let (start, len) = self.spans[local as usize];
        &self.arena[start as usize..(start + len) as usize]
    }
    pub fn len(&self) -> usize {
        self.recs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = SeriesRef<'_>> + '_ {
        self.recs.iter().map(move |r| SeriesRef { sel: self, r })
    }
    /// Total bytes of label names/values and names (sizing output buffers).
    pub fn string_bytes(&self) -> usize {
        self.arena.len()
    }
}

impl Store {
    /// Series that are not stale at `now_ms` and match any of `selectors`
    /// (union, each series once), sorted for exposition.
    pub fn select(&self, selectors: &[Selector], now_ms: i64) -> Selection {
        let cutoff = self.staleness_cutoff(now_ms);
        let mut sel = Selection {
            arena: String::new(),
            spans: Vec::new(),
            families: Vec::new(),
            recs: Vec::with_capacity(self.series_count()),
            ids: Vec::new(),
        };
        let mut compiled: Vec<Vec<Compiled<'_>>> = selectors
            .iter()
            .map(|s| {
                s.matchers
                    .iter()
                    .map(|m| Compiled {
                        m,
                        is_name: m.name == METRIC_NAME,
                        absent: m.matches(""),
                        memo: Vec::new(),
                    })
                    .collect()
            })
            .collect();
        // Global symbol id → local id (NONE until first used).
        let mut g2l: Vec<u32> = Vec::new();
        {
            // Ids stay valid (not freed/reused) while `gc` is held shared.
            let _gc = read(&self.gc);
            let mask = self.shard_mask(selectors);
            let mut name_ids: Vec<Vec<Option<SymbolId>>> = Vec::new();
            for (i, shard) in self.shards.iter().enumerate() {
                if !mask[i] {
                    continue;
                }
                let map = read(shard);
                if map.is_empty() {
                    continue;
                }
                let name_fams = read(&self.name_families);
                let sym = read(&self.symbols);
                if g2l.len() < sym.capacity() {
                    g2l.resize(sym.capacity(), NONE);
                }
                name_ids.clear();
                for c in &compiled {
                    name_ids.push(c.iter().map(|m| sym.get(&m.m.name)).collect());
                }
                for (key, slot) in map.iter() {
                    if slot.updated_ms < cutoff || super::is_stale_marker(slot.value) {
                        continue;
                    }
                    let hit = compiled.iter_mut().zip(&name_ids).any(|(ms, ids)| {
                        ms.iter_mut().zip(ids).all(|(m, lid)| {
                            let v = if m.is_name {
                                Some(key[0])
                            } else {
                                lid.and_then(|l| {
                                    key[1..].chunks_exact(2).find(|c| c[0] == l).map(|c| c[1])
                                })
                            };
                            match v {
                                Some(v) => m.eval(v, &sym),
                                None => m.absent,
                            }
                        })
                    });
                    if !hit {
                        continue;
                    }
                    let start = sel.ids.len();
                    for &id in key.iter() {
                        let slot = &mut g2l[id as usize];
                        if *slot == NONE {
                            let s = sym.resolve(id);
                            *slot = sel.spans.len() as u32;
                            sel.spans.push((sel.arena.len() as u32, s.len() as u32));
                            sel.arena.push_str(s);
                        }
                        sel.ids.push(*slot);
                    }
                    sel.recs.push(Rec {
                        family: name_fams.get(&key[0]).copied().unwrap_or(0),
                        start: start as u32,
                        len: key.len() as u32,
                        value: slot.value,
                        timestamp_ms: slot.timestamp_ms,
                    });
                }
            }
            sel.families = read(&self.families).metas.clone();
        }
        sel.cover_families();
        let local = |name: &str| {
            sel.spans
                .iter()
                .position(|&(s, l)| &sel.arena[s as usize..(s + l) as usize] == name)
                .map(|p| p as u32)
                .unwrap_or(NONE)
        };
        let (le, quantile) = (local("le"), local("quantile"));
        sel.sort(le, quantile);
        sel
    }
}

impl Selection {
    /// A series written with a family the sweep freed meanwhile (see
    /// `reclaim.rs`) gets an empty one rather than an index past the table.
    fn cover_families(&mut self) {
        let n = self.families.len() as u32;
        if self.recs.iter().all(|r| r.family < n) {
            return;
        }
        self.families.push(super::reclaim::tombstone());
        for r in self.recs.iter_mut().filter(|r| r.family >= n) {
            r.family = n;
        }
    }

    fn sort(&mut self, le: u32, quantile: u32) {
        // Rank of every local string, so comparisons are integer compares.
        let mut by_str: Vec<u32> = (0..self.spans.len() as u32).collect();
        {
            let arena = self.arena.as_bytes();
            let spans = &self.spans;
            let st = |i: u32| {
                let (s, l) = spans[i as usize];
                &arena[s as usize..(s + l) as usize]
            };
            by_str.sort_unstable_by(|&a, &b| st(a).cmp(st(b)));
        }
        // Shifted by one so that 0 sorts below every label (end of labels).
        let mut rank = vec![0u32; self.spans.len()];
        for (r, &i) in by_str.iter().enumerate() {
            rank[i as usize] = r as u32 + 1;
        }
        drop(by_str);
        let mut fam_order: Vec<u32> = (0..self.families.len() as u32).collect();
        fam_order.sort_by(|&a, &b| {
            self.families[a as usize]
                .name
                .cmp(&self.families[b as usize].name)
        });
        let mut fam_rank = vec![0u32; self.families.len()];
        for (r, &i) in fam_order.iter().enumerate() {
            fam_rank[i as usize] = r as u32;
        }

        // One flat sort key per series, compared as `[u32]` slices:
        // [family rank, (label name rank, value rank)* without le/quantile,
        //  0 (end of labels: a label set that is a prefix sorts first),
        //  suffix order, bound (2 words, total order), name rank,
        //  le/quantile value rank]. The first PREFIX words are kept inline
        // (every key has at least that many), the rest in `flat`.
        let n = self.recs.len();
        let mut flat: Vec<u32> = Vec::with_capacity(n * 8);
        let mut keys: Vec<([u32; PREFIX], u32, u32, u32)> = Vec::with_capacity(n);
        let mut key: Vec<u32> = Vec::with_capacity(32);
        for (i, r) in self.recs.iter().enumerate() {
            let ids = &self.ids[r.start as usize..(r.start + r.len) as usize];
            key.clear();
            key.push(fam_rank[r.family as usize]);
            let mut bound = 0.0;
            let mut bound_rank = 0;
            for c in ids[1..].chunks_exact(2) {
                if c[0] == le || c[0] == quantile {
                    bound = parse_bound(self.s(c[1]));
                    bound_rank = rank[c[1] as usize];
                } else {
                    key.push(rank[c[0] as usize]);
                    key.push(rank[c[1] as usize]);
                }
            }
            key.push(0);
            let fam = &self.families[r.family as usize].name;
            key.push(match self.s(ids[0]).strip_prefix(fam.as_str()) {
                Some("") | Some("_bucket") => 0,
                Some("_sum") => 1,
                Some("_count") => 2,
                _ => 3,
            });
            let bits = bound_bits(bound);
            key.push((bits >> 32) as u32);
            key.push(bits as u32);
            key.push(rank[ids[0] as usize]);
            key.push(bound_rank);
            let mut prefix = [0u32; PREFIX];
            prefix.copy_from_slice(&key[..PREFIX]);
            let start = flat.len();
            flat.extend_from_slice(&key[PREFIX..]);
            keys.push((prefix, start as u32, (flat.len() - start) as u32, i as u32));
        }
        let rest = |k: &([u32; PREFIX], u32, u32, u32)| &flat[k.1 as usize..(k.1 + k.2) as usize];
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| rest(a).cmp(rest(b))));
        drop(flat);

        // Gather into output order (independent loads: memory-parallel).
        let mut recs = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(self.ids.len());
        for k in &keys {
            let r = self.recs[k.3 as usize];
            let start = ids.len() as u32;
            ids.extend_from_slice(&self.ids[r.start as usize..(r.start + r.len) as usize]);
            recs.push(Rec { start, ..r });
        }
        self.recs = recs;
        self.ids = ids;
    }
}

/// Maps an f64 to a u64 whose unsigned order is `f64::total_cmp`'s order.
fn bound_bits(f: f64) -> u64 {
    let b = f.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn parse_bound(s: &str) -> f64 {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => f64::INFINITY,
        "-Inf" | "-inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
pub(crate) fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Store>();
    f::<Selection>();
}
