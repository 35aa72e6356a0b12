//! Binary operators: arithmetic, comparisons (filtering or `bool`), set
//! operators, and vector matching (`on`, `ignoring`, `group_left`,
//! `group_right`) with Prometheus' errors.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::check::Unsupported;
use super::eval::{syms, Evaluator, ISample, IValue, NameCheck};
use super::labels::{Interner, LabelSet, Sym, NAME};
use super::value::EvalError;
use crate::store::FxBuildHasher;

/// The "one" side of a vector match, by matching signature.
type OneSide = HashMap<Box<[Sym]>, ISample, FxBuildHasher>;

impl Evaluator<'_, '_> {
    pub(super) fn binary(&self, b: &BinaryExpr) -> Result<IValue, EvalError> {
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
            _ => Err(EvalError::Operands { op }),
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
        let right = index_one_side(rhs, m, interner)?;
        let mut sig = Vec::new();
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
            let metric = result_metric(op, &ls.labels, &rs.labels, m, return_bool, interner);
            let seen = matched.entry(sig.as_slice().into()).or_default();
            if m.one_to_one {
                if !seen.is_empty() {
                    return Err(EvalError::ImplicitManyToOne);
                }
                seen.insert(LabelSet::empty());
            } else if !seen.insert(metric.clone()) {
                return Err(EvalError::GroupingNotUnique);
            }
            out.push(ISample {
                labels: metric,
                value,
            });
        }
        Ok(out)
    }
}

/// The "one" side indexed by matching signature; a signature seen twice is
/// Prometheus' many-to-many error.
fn index_one_side(
    one: Vec<ISample>,
    m: &Matching,
    interner: &Interner,
) -> Result<OneSide, EvalError> {
    let mut index = OneSide::default();
    let mut sig = Vec::new();
    for rs in one {
        m.signature(&rs.labels, &mut sig);
        if let Some(dup) = index.get(sig.as_slice()) {
            let side = if m.one_to_many {
                "left hand-side"
            } else {
                "right hand-side"
            };
            return Err(EvalError::ManyToMany {
                group: LabelSet::from_projection(&sig).display(interner),
                side,
                first: dup.labels.display(interner),
                second: rs.labels.display(interner),
            });
        }
        index.insert(sig.as_slice().into(), rs);
    }
    Ok(index)
}

/// Prometheus' `resultMetric`: the labels of the "many" side's element,
/// without the name for arithmetic and `bool`, reduced to the matching labels
/// for one-to-one matches, plus the `group_left`/`group_right` labels of the
/// "one" side.
fn result_metric(
    op: &str,
    many: &LabelSet,
    one: &LabelSet,
    m: &Matching,
    return_bool: bool,
    interner: &Interner,
) -> LabelSet {
    let mut metric: Vec<(Sym, Sym)> = many.iter().collect();
    if should_drop_name(op) || return_bool {
        metric.retain(|p| p.0 != NAME);
    }
    if m.one_to_one {
        metric.retain(|p| m.names.contains(&p.0) == m.on);
    }
    let empty = if m.include.is_empty() {
        None
    } else {
        interner.get("")
    };
    for &ln in &m.include {
        metric.retain(|p| p.0 != ln);
        match one.get(ln) {
            Some(v) if Some(v) != empty => metric.push((ln, v)),
            _ => {}
        }
    }
    LabelSet::from_pairs(metric, interner)
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
        other => return Err(Unsupported::Operator(other.to_string()).into()),
    })
}

/// Go's `math.Mod` (result has the sign of `l`), which is Rust's `%` on f64.
fn go_mod(l: f64, r: f64) -> f64 {
    l % r
}
