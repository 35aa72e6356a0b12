//! Aggregation operators (`sum`, `avg`, `min`, `max`, `count`, `group`,
//! `topk`, `bottomk`) with `by` / `without` grouping.

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::check::Unsupported;
use super::eval::{syms, Evaluator, ISample, IValue};
use super::labels::{LabelSet, Sym, NAME};
use super::value::EvalError;
use crate::store::FxBuildHasher;

impl Evaluator<'_, '_> {
    pub(super) fn aggregate(&self, a: &AggregateExpr) -> Result<IValue, EvalError> {
        let op = a.op.to_string();
        let param = match &a.param {
            Some(p) => Some(self.eval(p)?),
            None => None,
        };
        let input = self.vector_arg(&a.expr)?;
        let groups = self.group(a.modifier.as_ref(), input);
        let out = match op.as_str() {
            "topk" | "bottomk" => {
                let k = match param {
                    Some(IValue::Scalar(k)) => k,
                    _ => return Err(EvalError::ExpectedParameter { op }),
                };
                top(op == "topk", k, groups)
            }
            _ => {
                let mut out = Vec::with_capacity(groups.len());
                for (labels, ss) in groups {
                    let value = reduce(&op, &ss)?;
                    out.push(ISample { labels, value });
                }
                out
            }
        };
        Ok(IValue::Vector(out))
    }

    /// The input split by the grouping labels, groups in first-seen order,
    /// each with its output label set.
    fn group(
        &self,
        modifier: Option<&LabelModifier>,
        input: Vec<ISample>,
    ) -> Vec<(LabelSet, Vec<ISample>)> {
        let (by, names) = match modifier {
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
        groups
    }
}

/// `topk` / `bottomk`: the `k` largest / smallest elements of every group,
/// with their own labels.
fn top(largest: bool, k: f64, groups: Vec<(LabelSet, Vec<ISample>)>) -> Vec<ISample> {
    if k.is_nan() || k < 1.0 {
        return vec![];
    }
    let k = k.min(i64::MAX as f64) as usize;
    let mut out = Vec::new();
    for (_, mut ss) in groups {
        // NaN sorts as the smallest value for topk and largest
        // for bottomk: it is chosen last either way.
        ss.sort_by(|x, y| match (x.value.is_nan(), y.value.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ if largest => y.value.total_cmp(&x.value),
            _ => x.value.total_cmp(&y.value),
        });
        ss.truncate(k);
        out.extend(ss);
    }
    out
}

/// The value of one group under `op`.
fn reduce(op: &str, ss: &[ISample]) -> Result<f64, EvalError> {
    let vals = ss.iter().map(|s| s.value);
    Ok(match op {
        "sum" => kahan_sum(vals),
        "avg" => avg(vals, ss.len() as f64),
        "count" => ss.len() as f64,
        "group" => 1.0,
        "min" => go_min(vals),
        "max" => go_max(vals),
        other => return Err(Unsupported::Aggregation(other.to_string()).into()),
    })
}

/// The smallest value, NaN only if every value is NaN (Prometheus' `min`).
pub(super) fn go_min(vals: impl Iterator<Item = f64>) -> f64 {
    vals.fold(f64::NAN, |m, v| if m > v || m.is_nan() { v } else { m })
}

/// The largest value, NaN only if every value is NaN (Prometheus' `max`).
pub(super) fn go_max(vals: impl Iterator<Item = f64>) -> f64 {
    vals.fold(f64::NAN, |m, v| if m < v || m.is_nan() { v } else { m })
}

pub(super) fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
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

pub(super) fn avg(vals: impl Iterator<Item = f64>, n: f64) -> f64 {
    let s = kahan_sum(vals);
    s / n
}
