//! A PromQL evaluator over the [`Store`] at one instant, following Prometheus
//! 2.x (`promql/engine.go`, `promql/functions.go`) semantics: closed lookback
//! and range windows, `extrapolatedRate`, counter resets, `__name__` dropped
//! by functions and arithmetic, comparison filtering vs `bool`, one-to-one /
//! many-to-one matching with the same errors.
//!
//! [`check`] rejects at load time everything that is not supported, naming the
//! construct, so an unsupported expression never evaluates to a wrong answer.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{
    AggregateExpr, BinModifier, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector,
    VectorMatchCardinality, VectorSelector,
};

use super::labels::{Interner, LabelSet, Sym, NAME};
pub use super::snapshot::LOOKBACK_MS;
use super::snapshot::{offset_ms, Reads, Snapshot};
use crate::store::{FxBuildHasher, Selector, Store};

/// A label set, `__name__` included.
pub type Labels = BTreeMap<String, String>;

const NAME_STR: &str = "__name__";
/// Prometheus' stale marker NaN.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// One series of a range vector.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// The value of an expression.
#[derive(Debug, Clone)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
    String(String),
}

impl Value {
    /// As an instant vector: a scalar becomes one sample without labels (as
    /// Prometheus' rule query function does).
    pub fn into_vector(self) -> Result<Vec<Sample>, EvalError> {
        match self {
            Value::Vector(v) => Ok(v),
            Value::Scalar(s) => Ok(vec![Sample {
                labels: Labels::new(),
                value: s,
            }]),
            _ => Err(EvalError(
                "rule result is not a vector or scalar".to_string(),
            )),
        }
    }
}

/// An evaluation error (Prometheus' wording where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

fn err<T>(s: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(s.into()))
}

// ---------------------------------------------------------------------------
// Load-time check

const RANGE_FUNCS: &[&str] = &[
    "rate",
    "increase",
    "irate",
    "idelta",
    "delta",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "present_over_time",
    "absent_over_time",
    "changes",
    "resets",
];
const VECTOR_FUNCS: &[&str] = &[
    "abs",
    "ceil",
    "floor",
    "exp",
    "ln",
    "log2",
    "log10",
    "sqrt",
    "clamp_min",
    "clamp_max",
    "timestamp",
    "absent",
    "scalar",
    "vector",
    "time",
    "histogram_quantile",
];

/// Checks that every construct of `expr` is supported.
pub fn check(expr: &Expr) -> Result<(), String> {
    match expr {
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            match op.as_str() {
                "sum" | "avg" | "min" | "max" | "count" | "topk" | "bottomk" | "group" => {}
                other => return Err(format!("unsupported aggregation \"{other}\"")),
            }
            check(&a.expr)?;
            if let Some(p) = &a.param {
                check(p)?;
            }
            Ok(())
        }
        Expr::Unary(u) => check(&u.expr),
        Expr::Binary(b) => {
            if b.op.to_string() == "atan2" {
                return Err("unsupported operator \"atan2\"".into());
            }
            if let Some(m) = &b.modifier {
                if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                    return Err("unsupported modifier \"fill\"".into());
                }
            }
            check(&b.lhs)?;
            check(&b.rhs)
        }
        Expr::Paren(p) => check(&p.expr),
        Expr::Subquery(_) => Err("unsupported construct: subquery".into()),
        Expr::NumberLiteral(_) => Ok(()),
        Expr::StringLiteral(_) => Err("unsupported construct: string literal".into()),
        Expr::VectorSelector(vs) => check_vs(vs),
        Expr::MatrixSelector(ms) => check_vs(&ms.vs),
        Expr::Call(c) => {
            let name = c.func.name;
            if !RANGE_FUNCS.contains(&name) && !VECTOR_FUNCS.contains(&name) {
                return Err(format!("unsupported function \"{name}\""));
            }
            for a in &c.args.args {
                check(a)?;
            }
            Ok(())
        }
        Expr::Extension(_) => Err("unsupported construct: extension".into()),
    }
}

fn check_vs(vs: &VectorSelector) -> Result<(), String> {
    if vs.at.is_some() {
        return Err("unsupported modifier \"@\"".into());
    }
    Selector::from_promql(vs).map_err(|e| e.to_string())?;
    Ok(())
}

/// Calls `f` with every vector selector of `expr` and its range in ms
/// (`None` for an instant selector).
pub(crate) fn for_each_selector(expr: &Expr, f: &mut impl FnMut(&VectorSelector, Option<i64>)) {
    match expr {
        Expr::Aggregate(a) => {
            for_each_selector(&a.expr, f);
            if let Some(p) = &a.param {
                for_each_selector(p, f);
            }
        }
        Expr::Unary(u) => for_each_selector(&u.expr, f),
        Expr::Binary(b) => {
            for_each_selector(&b.lhs, f);
            for_each_selector(&b.rhs, f);
        }
        Expr::Paren(p) => for_each_selector(&p.expr, f),
        Expr::Subquery(s) => for_each_selector(&s.expr, f),
        Expr::VectorSelector(vs) => f(vs, None),
        Expr::MatrixSelector(ms) => f(&ms.vs, Some(ms.range.as_millis() as i64)),
        Expr::Call(c) => c.args.args.iter().for_each(|a| for_each_selector(a, f)),
        _ => {}
    }
}

/// The selectors whose series need a window of recent samples (range
/// selectors and selectors with `offset`).
pub fn window_selectors(expr: &Expr, out: &mut Vec<Selector>) {
    for_each_selector(expr, &mut |vs, range| {
        if range.is_some() || vs.offset.is_some() {
            out.extend(Selector::from_promql(vs).unwrap_or_default());
        }
    });
}

// ---------------------------------------------------------------------------
// Evaluation
//
// Inside, samples carry interned [`LabelSet`]s (see `labels.rs` for why);
// strings come back only for the result.

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

/// Evaluates a rule's `expr` at `t_ms` over a round's snapshot: the result as
/// an instant vector (a scalar becomes one sample without labels).
pub(crate) fn eval_rule(
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
        _ => err("rule result is not a vector or scalar"),
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

struct ISample {
    labels: LabelSet,
    value: f64,
}

enum IValue {
    Scalar(f64),
    Vector(Vec<ISample>),
    Matrix(Vec<(LabelSet, Vec<(i64, f64)>)>),
    String(String),
}

struct Evaluator<'a, 's> {
    snap: RefCell<&'a mut Snapshot<'s>>,
    t: i64,
}

fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        e => e,
    }
}

/// Whether every label set seen has the same metric name (or none).
struct NameCheck {
    first: Option<Option<Sym>>,
    uniform: bool,
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
    fn see(&mut self, l: &LabelSet) {
        let n = l.get(NAME);
        match self.first {
            None => self.first = Some(n),
            Some(f) => self.uniform &= f == n,
        }
    }

    fn of(v: &[ISample]) -> bool {
        let mut c = Self::default();
        v.iter().for_each(|s| c.see(&s.labels));
        c.uniform
    }
}

/// A label list (`by`, `on`, `group_left(...)`) as round ids; names no series
/// carries are left out (they match nothing).
fn syms(names: &[String], i: &Interner) -> Vec<Sym> {
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

    fn eval(&self, expr: &Expr) -> Result<IValue, EvalError> {
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
                _ => err("unary minus needs a scalar or an instant vector"),
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
            Expr::Subquery(_) => err("unsupported construct: subquery"),
            Expr::Extension(_) => err("unsupported construct: extension"),
        }
    }

    fn selectors(vs: &VectorSelector) -> Result<Vec<Selector>, EvalError> {
        if vs.at.is_some() {
            return err("unsupported modifier \"@\"");
        }
        Selector::from_promql(vs).map_err(|e| EvalError(e.to_string()))
    }

    /// Instant selector: the newest sample in `[t - offset - 5m, t - offset]`
    /// of every series, with its timestamp.
    fn instant(&self, vs: &VectorSelector) -> Result<Vec<(LabelSet, i64, f64)>, EvalError> {
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
    fn range(
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

    fn scalar_arg(&self, e: &Expr) -> Result<f64, EvalError> {
        match self.eval(e)? {
            IValue::Scalar(s) => Ok(s),
            _ => err("expected a scalar argument"),
        }
    }

    fn vector_arg(&self, e: &Expr) -> Result<Vec<ISample>, EvalError> {
        match self.eval(e)? {
            IValue::Vector(v) => Ok(v),
            _ => err("expected an instant vector argument"),
        }
    }

    fn intern(&self, s: &str) -> Sym {
        self.snap.borrow_mut().interner.intern(s)
    }

    // -- functions ----------------------------------------------------------

    fn call(&self, c: &Call) -> Result<IValue, EvalError> {
        let name = c.func.name;
        let args = &c.args.args;
        if RANGE_FUNCS.contains(&name) {
            let arg = unparen(&args[0]);
            let Expr::MatrixSelector(ms) = arg else {
                return err(format!("{name}: expected a range vector selector"));
            };
            let range_ms = ms.range.as_millis() as i64;
            let end = self.t - offset_ms(&ms.vs.offset);
            let mut out = Vec::new();
            let mut any = false;
            let uniform = self.range(ms, |l, p| {
                any = true;
                if let Some(value) = range_func(name, p, end - range_ms, end, range_ms) {
                    let labels = if name == "last_over_time" {
                        l.clone()
                    } else {
                        l.without_name()
                    };
                    out.push(ISample { labels, value });
                }
            })?;
            if name == "absent_over_time" {
                return Ok(IValue::Vector(if any {
                    vec![]
                } else {
                    vec![ISample {
                        labels: self.absent_labels(&ms.vs),
                        value: 1.0,
                    }]
                }));
            }
            return Ok(IValue::Vector(self.dedup_unless(uniform, out)?));
        }
        match name {
            "time" => Ok(IValue::Scalar(self.t as f64 / 1000.0)),
            "vector" => Ok(IValue::Vector(vec![ISample {
                labels: LabelSet::empty(),
                value: self.scalar_arg(&args[0])?,
            }])),
            "scalar" => {
                let v = self.vector_arg(&args[0])?;
                Ok(IValue::Scalar(if v.len() == 1 {
                    v[0].value
                } else {
                    f64::NAN
                }))
            }
            "absent" => {
                let v = self.vector_arg(&args[0])?;
                if !v.is_empty() {
                    return Ok(IValue::Vector(vec![]));
                }
                let labels = match unparen(&args[0]) {
                    Expr::VectorSelector(vs) => self.absent_labels(vs),
                    _ => LabelSet::empty(),
                };
                Ok(IValue::Vector(vec![ISample { labels, value: 1.0 }]))
            }
            "timestamp" => {
                let uniform;
                let out: Vec<ISample> = if let Expr::VectorSelector(vs) = unparen(&args[0]) {
                    let found = self.instant(vs)?;
                    let mut names = NameCheck::default();
                    found.iter().for_each(|(l, _, _)| names.see(l));
                    uniform = names.uniform;
                    found
                        .into_iter()
                        .map(|(l, ts, _)| ISample {
                            labels: l.without_name(),
                            value: ts as f64 / 1000.0,
                        })
                        .collect()
                } else {
                    let v = self.vector_arg(&args[0])?;
                    uniform = NameCheck::of(&v);
                    v.into_iter()
                        .map(|s| ISample {
                            labels: s.labels.without_name(),
                            value: self.t as f64 / 1000.0,
                        })
                        .collect()
                };
                Ok(IValue::Vector(self.dedup_unless(uniform, out)?))
            }
            "histogram_quantile" => {
                let q = self.scalar_arg(&args[0])?;
                let v = self.vector_arg(&args[1])?;
                let out = {
                    let snap = self.snap.borrow();
                    histogram_quantile(q, v, &snap.interner)
                };
                Ok(IValue::Vector(self.dedup_check(out)?))
            }
            "clamp_min" | "clamp_max" => {
                let v = self.vector_arg(&args[0])?;
                let b = self.scalar_arg(&args[1])?;
                let uniform = NameCheck::of(&v);
                let out = v
                    .into_iter()
                    .map(|s| ISample {
                        labels: s.labels.without_name(),
                        // Go's math.Max/Min propagate NaN.
                        value: if s.value.is_nan() || b.is_nan() {
                            f64::NAN
                        } else if name == "clamp_min" {
                            s.value.max(b)
                        } else {
                            s.value.min(b)
                        },
                    })
                    .collect();
                Ok(IValue::Vector(self.dedup_unless(uniform, out)?))
            }
            "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" => {
                let f: fn(f64) -> f64 = match name {
                    "abs" => f64::abs,
                    "ceil" => f64::ceil,
                    "floor" => f64::floor,
                    "exp" => f64::exp,
                    "ln" => f64::ln,
                    "log2" => f64::log2,
                    "log10" => f64::log10,
                    _ => f64::sqrt,
                };
                let v = self.vector_arg(&args[0])?;
                let uniform = NameCheck::of(&v);
                let out = v
                    .into_iter()
                    .map(|s| ISample {
                        labels: s.labels.without_name(),
                        value: f(s.value),
                    })
                    .collect();
                Ok(IValue::Vector(self.dedup_unless(uniform, out)?))
            }
            other => err(format!("unsupported function \"{other}\"")),
        }
    }

    /// The labels `absent(sel)` reports: the selector's equality matchers on
    /// names that appear once.
    fn absent_labels(&self, vs: &VectorSelector) -> LabelSet {
        let mut m: BTreeMap<&str, &str> = BTreeMap::new();
        let mut empty = Vec::new();
        for ma in &vs.matchers.matchers {
            if ma.name == NAME_STR {
                continue;
            }
            if matches!(ma.op, PMatchOp::Equal) && !m.contains_key(ma.name.as_str()) {
                m.insert(&ma.name, &ma.value);
            } else {
                empty.push(ma.name.as_str());
            }
        }
        for e in empty {
            m.remove(e);
        }
        let pairs = m
            .into_iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect();
        LabelSet::from_pairs(pairs, &self.snap.borrow().interner)
    }

    /// [`Self::dedup_check`] unless the input had one metric name throughout
    /// (its label sets were distinct, and stay so without the name).
    fn dedup_unless(&self, uniform: bool, v: Vec<ISample>) -> Result<Vec<ISample>, EvalError> {
        if uniform {
            Ok(v)
        } else {
            self.dedup_check(v)
        }
    }

    /// Prometheus rejects a result with two elements of one label set.
    fn dedup_check(&self, v: Vec<ISample>) -> Result<Vec<ISample>, EvalError> {
        let mut seen: HashSet<&LabelSet, FxBuildHasher> =
            HashSet::with_capacity_and_hasher(v.len(), FxBuildHasher::default());
        if v.iter().all(|s| seen.insert(&s.labels)) {
            Ok(v)
        } else {
            err("vector cannot contain metrics with the same labelset")
        }
    }

    // -- aggregation --------------------------------------------------------

    fn aggregate(&self, a: &AggregateExpr) -> Result<IValue, EvalError> {
        let op = a.op.to_string();
        let param = match &a.param {
            Some(p) => Some(self.eval(p)?),
            None => None,
        };
        let input = self.vector_arg(&a.expr)?;
        let (by, names) = match &a.modifier {
            None => (true, Vec::new()),
            Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
            Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
        };
        let names = syms(&names, &self.snap.borrow().interner);
        let keep = |k: Sym| {
            if by {
                names.contains(&k)
            } else {
                k != NAME && !names.contains(&k)
            }
        };
        // Groups in first-seen order.
        let mut index: HashMap<Box<[Sym]>, usize, FxBuildHasher> = HashMap::default();
        let mut groups: Vec<(LabelSet, Vec<ISample>)> = Vec::new();
        let mut key = Vec::new();
        for s in input {
            s.labels.project(keep, &mut key);
            let i = match index.get(key.as_slice()) {
                Some(&i) => i,
                None => {
                    groups.push((LabelSet::from_projection(&key), Vec::new()));
                    index.insert(key.as_slice().into(), groups.len() - 1);
                    groups.len() - 1
                }
            };
            groups[i].1.push(s);
        }
        let mut out = Vec::new();
        match op.as_str() {
            "topk" | "bottomk" => {
                let k = match param {
                    Some(IValue::Scalar(k)) => k,
                    _ => return err(format!("{op}: expected a scalar parameter")),
                };
                if k.is_nan() || k < 1.0 {
                    return Ok(IValue::Vector(vec![]));
                }
                let k = k.min(i64::MAX as f64) as usize;
                for (_, mut ss) in groups {
                    // NaN sorts as the smallest value for topk and largest
                    // for bottomk: it is chosen last either way.
                    ss.sort_by(|x, y| match (x.value.is_nan(), y.value.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if op == "topk" => y.value.total_cmp(&x.value),
                        _ => x.value.total_cmp(&y.value),
                    });
                    ss.truncate(k);
                    out.extend(ss);
                }
            }
            _ => {
                for (labels, ss) in groups {
                    let vals = ss.iter().map(|s| s.value);
                    let value = match op.as_str() {
                        "sum" => kahan_sum(vals),
                        "avg" => avg(vals, ss.len() as f64),
                        "count" => ss.len() as f64,
                        "group" => 1.0,
                        "min" => {
                            vals.fold(f64::NAN, |m, v| if m > v || m.is_nan() { v } else { m })
                        }
                        "max" => {
                            vals.fold(f64::NAN, |m, v| if m < v || m.is_nan() { v } else { m })
                        }
                        other => return err(format!("unsupported aggregation \"{other}\"")),
                    };
                    out.push(ISample { labels, value });
                }
            }
        }
        Ok(IValue::Vector(out))
    }

    // -- binary operators ---------------------------------------------------

    fn binary(&self, b: &BinaryExpr) -> Result<IValue, EvalError> {
        let op = b.op.to_string();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs)?;
        let rhs = self.eval(&b.rhs)?;
        match (lhs, rhs) {
            (IValue::Scalar(l), IValue::Scalar(r)) => {
                let (v, keep) = elem_binop(&op, l, r)?;
                if is_comparison(&op) {
                    // The parser only allows scalar comparisons with `bool`.
                    Ok(IValue::Scalar(if keep { 1.0 } else { 0.0 }))
                } else {
                    Ok(IValue::Scalar(v))
                }
            }
            (IValue::Vector(v), IValue::Scalar(s)) => Ok(IValue::Vector(self.vector_scalar(
                &op,
                v,
                s,
                false,
                return_bool,
            )?)),
            (IValue::Scalar(s), IValue::Vector(v)) => Ok(IValue::Vector(self.vector_scalar(
                &op,
                v,
                s,
                true,
                return_bool,
            )?)),
            (IValue::Vector(l), IValue::Vector(r)) => {
                let m = Matching::of(b.modifier.as_ref(), &self.snap.borrow().interner);
                let out = match op.as_str() {
                    "and" | "or" | "unless" => set_op(&op, l, r, &m),
                    _ => self.vector_vector(&op, l, r, &m, return_bool)?,
                };
                Ok(IValue::Vector(self.dedup_check(out)?))
            }
            _ => err(format!(
                "operator \"{op}\" needs scalar or instant vector operands"
            )),
        }
    }

    fn vector_scalar(
        &self,
        op: &str,
        v: Vec<ISample>,
        s: f64,
        swap: bool,
        return_bool: bool,
    ) -> Result<Vec<ISample>, EvalError> {
        let mut out = Vec::with_capacity(v.len());
        let drop = should_drop_name(op) || return_bool;
        let uniform = NameCheck::of(&v);
        for e in v {
            let (l, r) = if swap { (s, e.value) } else { (e.value, s) };
            let (mut value, mut keep) = elem_binop(op, l, r)?;
            if is_comparison(op) && swap {
                value = r;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            if keep {
                let labels = if drop {
                    e.labels.without_name()
                } else {
                    e.labels
                };
                out.push(ISample { labels, value });
            }
        }
        if drop {
            self.dedup_unless(uniform, out)
        } else {
            Ok(out)
        }
    }

    fn vector_vector(
        &self,
        op: &str,
        mut lhs: Vec<ISample>,
        mut rhs: Vec<ISample>,
        m: &Matching,
        return_bool: bool,
    ) -> Result<Vec<ISample>, EvalError> {
        if lhs.is_empty() || rhs.is_empty() {
            return Ok(vec![]);
        }
        if m.one_to_many {
            std::mem::swap(&mut lhs, &mut rhs);
        }
        let snap = self.snap.borrow();
        let interner = &snap.interner;
        let mut right: HashMap<Box<[Sym]>, ISample, FxBuildHasher> = HashMap::default();
        let mut sig = Vec::new();
        for rs in rhs {
            m.signature(&rs.labels, &mut sig);
            if let Some(dup) = right.get(sig.as_slice()) {
                let side = if m.one_to_many {
                    "left hand-side"
                } else {
                    "right hand-side"
                };
                return err(format!(
                    "found duplicate series for the match group {} on the {side} of the operation: \
                     [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    LabelSet::from_projection(&sig).display(interner),
                    dup.labels.display(interner),
                    rs.labels.display(interner),
                ));
            }
            right.insert(sig.as_slice().into(), rs);
        }
        let empty = interner.get("");
        let mut matched: HashMap<Box<[Sym]>, HashSet<LabelSet, FxBuildHasher>, FxBuildHasher> =
            HashMap::default();
        let mut out = Vec::new();
        for ls in lhs {
            m.signature(&ls.labels, &mut sig);
            let Some(rs) = right.get(sig.as_slice()) else {
                continue;
            };
            let (vl, vr) = if m.one_to_many {
                (rs.value, ls.value)
            } else {
                (ls.value, rs.value)
            };
            let (mut value, keep) = elem_binop(op, vl, vr)?;
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            // resultMetric
            let mut metric: Vec<(Sym, Sym)> = ls.labels.iter().collect();
            if should_drop_name(op) || return_bool {
                metric.retain(|p| p.0 != NAME);
            }
            if m.one_to_one {
                metric.retain(|p| m.names.contains(&p.0) == m.on);
            }
            for &ln in &m.include {
                metric.retain(|p| p.0 != ln);
                match rs.labels.get(ln) {
                    Some(v) if Some(v) != empty => metric.push((ln, v)),
                    _ => {}
                }
            }
            let metric = LabelSet::from_pairs(metric, interner);
            let seen = matched.entry(sig.as_slice().into()).or_default();
            if m.one_to_one {
                if !seen.is_empty() {
                    return err("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
                }
                seen.insert(LabelSet::empty());
            } else if !seen.insert(metric.clone()) {
                return err(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                );
            }
            out.push(ISample {
                labels: metric,
                value,
            });
        }
        Ok(out)
    }
}

/// Vector matching of a binary operator, as round ids.
struct Matching {
    on: bool,
    names: Vec<Sym>,
    include: Vec<Sym>,
    one_to_one: bool,
    one_to_many: bool,
}

impl Matching {
    fn of(m: Option<&BinModifier>, interner: &Interner) -> Self {
        let (on, names) = match m.and_then(|m| m.matching.as_ref()) {
            Some(LabelModifier::Include(ls)) => (true, syms(&ls.labels, interner)),
            Some(LabelModifier::Exclude(ls)) => (false, syms(&ls.labels, interner)),
            None => (false, Vec::new()),
        };
        let card = m
            .map(|m| m.card.clone())
            .unwrap_or(VectorMatchCardinality::OneToOne);
        let include = match &card {
            VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => {
                syms(&l.labels, interner)
            }
            _ => Vec::new(),
        };
        Self {
            on,
            names,
            include,
            one_to_one: matches!(card, VectorMatchCardinality::OneToOne),
            one_to_many: matches!(card, VectorMatchCardinality::OneToMany(_)),
        }
    }

    /// The matching signature of a label set, written into `out`.
    fn signature(&self, l: &LabelSet, out: &mut Vec<Sym>) {
        if self.on {
            l.project(|k| self.names.contains(&k), out)
        } else {
            l.project(|k| k != NAME && !self.names.contains(&k), out)
        }
    }
}

fn set_op(op: &str, l: Vec<ISample>, r: Vec<ISample>, m: &Matching) -> Vec<ISample> {
    let mut sig = Vec::new();
    let mut sigs = |v: &[ISample]| -> HashSet<Box<[Sym]>, FxBuildHasher> {
        v.iter()
            .map(|s| {
                m.signature(&s.labels, &mut sig);
                sig.as_slice().into()
            })
            .collect()
    };
    match op {
        "and" => {
            if l.is_empty() || r.is_empty() {
                return vec![];
            }
            let rs = sigs(&r);
            l.into_iter()
                .filter(|s| {
                    m.signature(&s.labels, &mut sig);
                    rs.contains(sig.as_slice())
                })
                .collect()
        }
        "or" => {
            let ls = sigs(&l);
            let mut out = l;
            out.extend(r.into_iter().filter(|s| {
                m.signature(&s.labels, &mut sig);
                !ls.contains(sig.as_slice())
            }));
            out
        }
        _ => {
            let rs = sigs(&r);
            l.into_iter()
                .filter(|s| {
                    m.signature(&s.labels, &mut sig);
                    !rs.contains(sig.as_slice())
                })
                .collect()
        }
    }
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn should_drop_name(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "%" | "^")
}

/// Prometheus' `vectorElemBinop`: the value and whether to keep it.
fn elem_binop(op: &str, l: f64, r: f64) -> Result<(f64, bool), EvalError> {
    Ok(match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "^" => (l.powf(r), true),
        "%" => (go_mod(l, r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        other => return err(format!("unsupported operator \"{other}\"")),
    })
}

/// Go's `math.Mod` (result has the sign of `l`), which is Rust's `%` on f64.
fn go_mod(l: f64, r: f64) -> f64 {
    l % r
}

fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for v in vals {
        let t = sum + v;
        if sum.abs() >= v.abs() {
            c += (sum - t) + v;
        } else {
            c += (v - t) + sum;
        }
        sum = t;
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

fn avg(vals: impl Iterator<Item = f64>, n: f64) -> f64 {
    let s = kahan_sum(vals);
    s / n
}

/// Functions over a range of samples (`points` non-empty, in time order).
fn range_func(name: &str, p: &[(i64, f64)], start: i64, end: i64, range_ms: i64) -> Option<f64> {
    let vals = || p.iter().map(|x| x.1);
    match name {
        "rate" => extrapolated_rate(p, start, end, range_ms, true, true),
        "increase" => extrapolated_rate(p, start, end, range_ms, true, false),
        "delta" => extrapolated_rate(p, start, end, range_ms, false, false),
        "irate" | "idelta" => {
            if p.len() < 2 {
                return None;
            }
            let (last, prev) = (p[p.len() - 1], p[p.len() - 2]);
            let is_rate = name == "irate";
            let mut v = if is_rate && last.1 < prev.1 {
                last.1
            } else {
                last.1 - prev.1
            };
            let dt = last.0 - prev.0;
            if dt == 0 {
                return None;
            }
            if is_rate {
                v /= dt as f64 / 1000.0;
            }
            Some(v)
        }
        "avg_over_time" => Some(avg(vals(), p.len() as f64)),
        "sum_over_time" => Some(kahan_sum(vals())),
        "count_over_time" => Some(p.len() as f64),
        "min_over_time" => {
            Some(vals().fold(f64::NAN, |m, v| if m > v || m.is_nan() { v } else { m }))
        }
        "max_over_time" => {
            Some(vals().fold(f64::NAN, |m, v| if m < v || m.is_nan() { v } else { m }))
        }
        "last_over_time" => Some(p[p.len() - 1].1),
        "present_over_time" => Some(1.0),
        "changes" => Some(
            p.windows(2)
                .filter(|w| w[1].1 != w[0].1 && !(w[1].1.is_nan() && w[0].1.is_nan()))
                .count() as f64,
        ),
        "resets" => Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
        _ => None,
    }
}

/// Prometheus' `extrapolatedRate` (2.x).
fn extrapolated_rate(
    p: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (first, last) = (p[0], p[p.len() - 1]);
    let mut result = last.1 - first.1;
    if is_counter {
        let mut last_value = 0.0;
        for &(_, v) in p {
            if v < last_value {
                result += last_value;
            }
            last_value = v;
        }
    }
    let mut duration_to_start = (first.0 - range_start) as f64 / 1000.0;
    let duration_to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled_interval = (last.0 - first.0) as f64 / 1000.0;
    let avg_between = sampled_interval / (p.len() - 1) as f64;
    if is_counter && result > 0.0 && first.1 >= 0.0 {
        let duration_to_zero = sampled_interval * (first.1 / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    let threshold = avg_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    extrapolate_to += if duration_to_start < threshold {
        duration_to_start
    } else {
        avg_between / 2.0
    };
    extrapolate_to += if duration_to_end < threshold {
        duration_to_end
    } else {
        avg_between / 2.0
    };
    result *= extrapolate_to / sampled_interval;
    if is_rate {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

fn parse_le(s: &str) -> Option<f64> {
    let t = s.trim();
    match t {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

/// Prometheus' `funcHistogramQuantile` over classic buckets.
fn histogram_quantile(q: f64, v: Vec<ISample>, interner: &Interner) -> Vec<ISample> {
    let Some(le) = interner.get("le") else {
        return vec![];
    };
    let mut index: HashMap<Box<[Sym]>, usize, FxBuildHasher> = HashMap::default();
    let mut groups: Vec<(LabelSet, Vec<(f64, f64)>)> = Vec::new();
    let mut key = Vec::new();
    for s in v {
        let Some(bound) = s.labels.get(le).and_then(|x| parse_le(interner.resolve(x))) else {
            continue;
        };
        s.labels.project(|k| k != le, &mut key);
        let i = match index.get(key.as_slice()) {
            Some(&i) => i,
            None => {
                groups.push((LabelSet::from_projection(&key).without_name(), Vec::new()));
                index.insert(key.as_slice().into(), groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[i].1.push((bound, s.value));
    }
    groups
        .into_iter()
        .map(|(labels, b)| ISample {
            labels,
            value: bucket_quantile(q, b),
        })
        .collect()
}

fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // coalesceBuckets
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for x in b {
        match c.last_mut() {
            Some(l) if l.0 == x.0 => l.1 += x.1,
            _ => c.push(x),
        }
    }
    // ensureMonotonic
    let mut max = f64::NEG_INFINITY;
    for x in c.iter_mut() {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
    if c.len() < 2 {
        return f64::NAN;
    }
    let observations = c[c.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let n = c.len() - 1;
    let idx = (0..n).find(|&i| c[i].1 >= rank).unwrap_or(n);
    if idx == n {
        return c[n - 1].0;
    }
    if idx == 0 && c[0].0 <= 0.0 {
        return c[0].0;
    }
    let mut start = 0.0;
    let end = c[idx].0;
    let mut count = c[idx].1;
    if idx > 0 {
        start = c[idx - 1].0;
        count -= c[idx - 1].1;
        rank -= c[idx - 1].1;
    }
    start + (end - start) * (rank / count)
}
