//! Function calls: functions over ranges (`rate`, `*_over_time`, …) and over
//! instant vectors (`abs`, `clamp_*`, `timestamp`, `absent`, …).

use std::collections::BTreeMap;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Call, Expr, MatrixSelector, VectorSelector};

use super::aggregation::{avg, go_max, go_min, kahan_sum};
use super::check::{Unsupported, RANGE_FUNCS};
use super::eval::{unparen, Evaluator, ISample, IValue, NameCheck, NAME_STR};
use super::histogram::histogram_quantile;
use super::labels::LabelSet;
use super::snapshot::offset_ms;
use super::value::EvalError;

impl Evaluator<'_, '_> {
    pub(super) fn call(&self, c: &Call) -> Result<IValue, EvalError> {
        let name = c.func.name;
        let args = &c.args.args;
        if RANGE_FUNCS.contains(&name) {
            let Expr::MatrixSelector(ms) = unparen(&args[0]) else {
                return Err(EvalError::ExpectedRange { function: name });
            };
            return self.range_call(name, ms);
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
            "absent" => self.absent(&args[0]),
            "timestamp" => self.timestamp(&args[0]),
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
                let min = name == "clamp_min";
                self.map_values(v, |x| {
                    // Go's math.Max/Min propagate NaN.
                    if x.is_nan() || b.is_nan() {
                        f64::NAN
                    } else if min {
                        x.max(b)
                    } else {
                        x.min(b)
                    }
                })
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
                self.map_values(self.vector_arg(&args[0])?, f)
            }
            other => Err(Unsupported::Function(other.to_string()).into()),
        }
    }

    /// A function over the samples of each series of a range selector.
    fn range_call(&self, name: &'static str, ms: &MatrixSelector) -> Result<IValue, EvalError> {
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
        Ok(IValue::Vector(self.dedup_unless(uniform, out)?))
    }

    /// `f` applied to every value; the metric name dropped.
    fn map_values(&self, v: Vec<ISample>, f: impl Fn(f64) -> f64) -> Result<IValue, EvalError> {
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

    fn absent(&self, arg: &Expr) -> Result<IValue, EvalError> {
        let v = self.vector_arg(arg)?;
        if !v.is_empty() {
            return Ok(IValue::Vector(vec![]));
        }
        let labels = match unparen(arg) {
            Expr::VectorSelector(vs) => self.absent_labels(vs),
            _ => LabelSet::empty(),
        };
        Ok(IValue::Vector(vec![ISample { labels, value: 1.0 }]))
    }

    /// `timestamp(sel)` reports the samples' times, `timestamp(expr)` the
    /// evaluation time.
    fn timestamp(&self, arg: &Expr) -> Result<IValue, EvalError> {
        let uniform;
        let out: Vec<ISample> = if let Expr::VectorSelector(vs) = unparen(arg) {
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
            let v = self.vector_arg(arg)?;
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
        "min_over_time" => Some(go_min(vals())),
        "max_over_time" => Some(go_max(vals())),
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
