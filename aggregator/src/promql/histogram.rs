//! `histogram_quantile` over classic (`le`) buckets.

use std::collections::HashMap;

use super::eval::ISample;
use super::labels::{Interner, LabelSet, Sym};
use crate::store::FxBuildHasher;

fn parse_le(s: &str) -> Option<f64> {
    let t = s.trim();
    match t {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

/// Prometheus' `funcHistogramQuantile` over classic buckets.
pub(super) fn histogram_quantile(q: f64, v: Vec<ISample>, interner: &Interner) -> Vec<ISample> {
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
