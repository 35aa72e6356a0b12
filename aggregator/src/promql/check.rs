//! The load-time check (what is supported) and the walk over an expression's
//! selectors.

use promql_parser::parser::{Expr, VectorSelector};

use crate::store::{Selector, SelectorError};

/// A construct the evaluator does not support, by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("unsupported aggregation \"{0}\"")]
    Aggregation(String),
    #[error("unsupported operator \"{0}\"")]
    Operator(String),
    #[error("unsupported modifier \"{0}\"")]
    Modifier(&'static str),
    #[error("unsupported function \"{0}\"")]
    Function(String),
    #[error("unsupported construct: {0}")]
    Construct(&'static str),
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

pub(super) const RANGE_FUNCS: &[&str] = &[
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
pub(super) const VECTOR_FUNCS: &[&str] = &[
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
pub fn check(expr: &Expr) -> Result<(), Unsupported> {
    match expr {
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            match op.as_str() {
                "sum" | "avg" | "min" | "max" | "count" | "topk" | "bottomk" | "group" => {}
                other => return Err(Unsupported::Aggregation(other.to_string())),
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
                return Err(Unsupported::Operator("atan2".into()));
            }
            if let Some(m) = &b.modifier {
                if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                    return Err(Unsupported::Modifier("fill"));
                }
            }
            check(&b.lhs)?;
            check(&b.rhs)
        }
        Expr::Paren(p) => check(&p.expr),
        Expr::Subquery(_) => Err(Unsupported::Construct("subquery")),
        Expr::NumberLiteral(_) => Ok(()),
        Expr::StringLiteral(_) => Err(Unsupported::Construct("string literal")),
        Expr::VectorSelector(vs) => check_vs(vs),
        Expr::MatrixSelector(ms) => check_vs(&ms.vs),
        Expr::Call(c) => {
            let name = c.func.name;
            if !RANGE_FUNCS.contains(&name) && !VECTOR_FUNCS.contains(&name) {
                return Err(Unsupported::Function(name.to_string()));
            }
            for a in &c.args.args {
                check(a)?;
            }
            Ok(())
        }
        Expr::Extension(_) => Err(Unsupported::Construct("extension")),
    }
}

fn check_vs(vs: &VectorSelector) -> Result<(), Unsupported> {
    if vs.at.is_some() {
        return Err(Unsupported::Modifier("@"));
    }
    Selector::from_promql(vs)?;
    Ok(())
}

/// Calls `f` with every vector selector of `expr` and its range in ms
/// (`None` for an instant selector).
pub(super) fn for_each_selector(expr: &Expr, f: &mut impl FnMut(&VectorSelector, Option<i64>)) {
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
