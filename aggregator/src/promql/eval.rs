//! The evaluator: one walk over the expression at one instant, reading the
//! series from a [`Snapshot`]; instant and range selectors; the checks on
//! results that Prometheus makes (duplicate label sets).
//!
//! Inside, samples carry interned [`LabelSet`]s (see `labels.rs` for why);
//! strings come back only for the result.

use std::cell::RefCell;
use std::collections::HashSet;

use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};

use super::check::Unsupported;
use super::labels::{Interner, LabelSet, Sym, NAME};
use super::snapshot::{offset_ms, Reads, Snapshot, LOOKBACK_MS};
use super::value::{EvalError, Labels, Sample, Series, Value};
use crate::store::{FxBuildHasher, Selector, Store};

pub(super) const NAME_STR: &str = "__name__";
/// Prometheus' stale marker NaN.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Evaluates `expr` over `store` at `t_ms`.
pub fn eval(expr: &Expr, store: &Store, t_ms: i64) -> Result<Value, EvalError> {
    let mut snap = Snapshot::new(store, t_ms, &Reads::of(expr));
    let v = Evaluator::new(&mut snap, t_ms).eval(expr)?;
    let i = &snap.interner;
    Ok(match v {
        IValue::Scalar(s) => Value::Scalar(s),
        IValue::String(s) => Value::String(s),
        IValue::Vector(v) => Value::Vector(export(v, i)),
        IValue::Matrix(m) => Value::Matrix(
            m.into_iter()
                .map(|(l, points)| Series {
                    labels: l.to_map(i),
                    points,
                })
                .collect(),
        ),
    })
}

/// Evaluates `expr` at `t_ms` over a snapshot (taken at `t_ms` for at least
/// what `expr` reads): the result as an instant vector, a scalar becoming one
/// sample without labels (as Prometheus' rule query function does).
pub fn eval_vector(
    expr: &Expr,
    snap: &mut Snapshot<'_>,
    t_ms: i64,
) -> Result<Vec<Sample>, EvalError> {
    let v = Evaluator::new(snap, t_ms).eval(expr)?;
    match v {
        IValue::Vector(v) => Ok(export(v, &snap.interner)),
        IValue::Scalar(s) => Ok(vec![Sample {
            labels: Labels::new(),
            value: s,
        }]),
        _ => Err(EvalError::NotVectorOrScalar),
    }
}

fn export(v: Vec<ISample>, i: &Interner) -> Vec<Sample> {
    let mut out: Vec<Sample> = v
        .into_iter()
        .map(|s| Sample {
            labels: s.labels.to_map(i),
            value: s.value,
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

pub(super) struct ISample {
    pub(super) labels: LabelSet,
    pub(super) value: f64,
}

pub(super) enum IValue {
    Scalar(f64),
    Vector(Vec<ISample>),
    Matrix(Vec<(LabelSet, Vec<(i64, f64)>)>),
    String(String),
}

pub(super) struct Evaluator<'a, 's> {
    pub(super) snap: RefCell<&'a mut Snapshot<'s>>,
    pub(super) t: i64,
}

pub(super) fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

pub(super) fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        e => e,
    }
}

/// Whether every label set seen has the same metric name (or none).
pub(super) struct NameCheck {
    first: Option<Option<Sym>>,
    pub(super) uniform: bool,
}

impl Default for NameCheck {
    fn default() -> Self {
        Self {
            first: None,
            uniform: true,
        }
    }
}

impl NameCheck {
    pub(super) fn see(&mut self, l: &LabelSet) {
        let n = l.get(NAME);
        match self.first {
            None => self.first = Some(n),
            Some(f) => self.uniform &= f == n,
        }
    }

    pub(super) fn of(v: &[ISample]) -> bool {
        let mut c = Self::default();
        v.iter().for_each(|s| c.see(&s.labels));
        c.uniform
    }
}

/// A label list (`by`, `on`, `group_left(...)`) as round ids; names no series
/// carries are left out (they match nothing).
pub(super) fn syms(names: &[String], i: &Interner) -> Vec<Sym> {
    names
        .iter()
        .filter_map(|n| if n == NAME_STR { Some(NAME) } else { i.get(n) })
        .collect()
}

impl<'a, 's> Evaluator<'a, 's> {
    fn new(snap: &'a mut Snapshot<'s>, t: i64) -> Self {
        Self {
            snap: RefCell::new(snap),
            t,
        }
    }

    pub(super) fn eval(&self, expr: &Expr) -> Result<IValue, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(IValue::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(IValue::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                IValue::Scalar(s) => Ok(IValue::Scalar(-s)),
                IValue::Vector(v) => Ok(IValue::Vector(
                    v.into_iter()
                        .map(|s| ISample {
                            labels: s.labels.without_name(),
                            value: -s.value,
                        })
                        .collect(),
                )),
                _ => Err(EvalError::UnaryOperand),
            },
            Expr::VectorSelector(vs) => Ok(IValue::Vector(
                self.instant(vs)?
                    .into_iter()
                    .map(|(labels, _, value)| ISample { labels, value })
                    .collect(),
            )),
            Expr::MatrixSelector(ms) => {
                let mut out = Vec::new();
                self.range(ms, |l, p| out.push((l.clone(), p.to_vec())))?;
                Ok(IValue::Matrix(out))
            }
            Expr::Aggregate(a) => self.aggregate(a),
            Expr::Binary(b) => self.binary(b),
            Expr::Call(c) => self.call(c),
            Expr::Subquery(_) => Err(Unsupported::Construct("subquery").into()),
            Expr::Extension(_) => Err(Unsupported::Construct("extension").into()),
        }
    }

    fn selectors(vs: &VectorSelector) -> Result<Vec<Selector>, EvalError> {
        if vs.at.is_some() {
            return Err(Unsupported::Modifier("@").into());
        }
        Ok(Selector::from_promql(vs)?)
    }

    /// Instant selector: the newest sample in `[t - offset - 5m, t - offset]`
    /// of every series, with its timestamp.
    pub(super) fn instant(
        &self,
        vs: &VectorSelector,
    ) -> Result<Vec<(LabelSet, i64, f64)>, EvalError> {
        let sels = Self::selectors(vs)?;
        let off = offset_ms(&vs.offset);
        let end = self.t - off;
        let mut snap = self.snap.borrow_mut();
        Ok(snap
            .select(&sels, (off != 0).then_some((end - LOOKBACK_MS, end)))
            .into_iter()
            .filter_map(|p| {
                let (ts, v) = if off == 0 { p.last? } else { *p.points.last()? };
                (!is_stale(v)).then(|| (p.labels.clone(), ts, v))
            })
            .collect())
    }

    /// Range selector: calls `f` with every series that has samples in
    /// `[t - offset - range, t - offset]` (stale markers left out). Returns
    /// whether every such series had the same metric name (then dropping the
    /// name cannot make two label sets equal).
    pub(super) fn range(
        &self,
        ms: &MatrixSelector,
        mut f: impl FnMut(&LabelSet, &[(i64, f64)]),
    ) -> Result<bool, EvalError> {
        let sels = Self::selectors(&ms.vs)?;
        let end = self.t - offset_ms(&ms.vs.offset);
        let start = end - ms.range.as_millis() as i64;
        let mut snap = self.snap.borrow_mut();
        let mut fresh = Vec::new();
        let mut names = NameCheck::default();
        for p in snap.select(&sels, Some((start, end))) {
            let points = if p.points.iter().any(|x| is_stale(x.1)) {
                fresh.clear();
                fresh.extend(p.points.iter().filter(|x| !is_stale(x.1)));
                &fresh[..]
            } else {
                p.points
            };
            if !points.is_empty() {
                names.see(p.labels);
                f(p.labels, points);
            }
        }
        Ok(names.uniform)
    }

    pub(super) fn scalar_arg(&self, e: &Expr) -> Result<f64, EvalError> {
        match self.eval(e)? {
            IValue::Scalar(s) => Ok(s),
            _ => Err(EvalError::ExpectedScalar),
        }
    }

    pub(super) fn vector_arg(&self, e: &Expr) -> Result<Vec<ISample>, EvalError> {
        match self.eval(e)? {
            IValue::Vector(v) => Ok(v),
            _ => Err(EvalError::ExpectedVector),
        }
    }

    pub(super) fn intern(&self, s: &str) -> Sym {
        self.snap.borrow_mut().interner.intern(s)
    }

    /// [`Self::dedup_check`] unless the input had one metric name throughout
    /// (its label sets were distinct, and stay so without the name).
    pub(super) fn dedup_unless(
        &self,
        uniform: bool,
        v: Vec<ISample>,
    ) -> Result<Vec<ISample>, EvalError> {
        if uniform {
            Ok(v)
        } else {
            self.dedup_check(v)
        }
    }

    /// Prometheus rejects a result with two elements of one label set.
    pub(super) fn dedup_check(&self, v: Vec<ISample>) -> Result<Vec<ISample>, EvalError> {
        let mut seen: HashSet<&LabelSet, FxBuildHasher> =
            HashSet::with_capacity_and_hasher(v.len(), FxBuildHasher::default());
        if v.iter().all(|s| seen.insert(&s.labels)) {
            Ok(v)
        } else {
            Err(EvalError::DuplicateLabelset)
        }
    }
}
