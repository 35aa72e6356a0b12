//! PromQL over the [`Store`] at one instant, following Prometheus 2.x
//! (`promql/engine.go`, `promql/functions.go`): closed lookback and range
//! windows, `extrapolatedRate`, counter resets, `__name__` dropped by functions
//! and arithmetic, comparison filtering vs `bool`, one-to-one / many-to-one
//! matching with the same errors.
//!
//! The interface:
//! - [`Query::parse`] parses an expression and [`check`]s it: everything not
//!   supported is rejected there, by name, so an unsupported expression never
//!   evaluates to a wrong answer;
//! - [`Snapshot`] copies, in one pass over the store, every series a set of
//!   expressions reads ([`Reads`]); many expressions evaluated at one instant
//!   (a rule round) share it;
//! - [`eval_vector`] evaluates an expression over a snapshot, [`eval`] and
//!   [`instant_query`] over the store directly (one snapshot per call).
//!
//! This is a module of the aggregator rather than a crate of its own because
//! the snapshot reads the store's internals through `Store::visit` (interned
//! label ids, sample windows) in one pass, which is what keeps rule rounds fast.
//!
//! Inside, samples carry round-local interned label sets (`labels.rs`);
//! strings come back only for results.
//!
//! Files: `check.rs` (load-time check, selector walk), `eval.rs` (the evaluator
//! and selectors), `functions.rs`, `histogram.rs`, `aggregation.rs`,
//! `binary.rs` (operators and vector matching), `value.rs` (results, errors).

mod aggregation;
mod binary;
mod check;
mod eval;
mod functions;
mod histogram;
mod labels;
mod snapshot;
mod value;

use std::sync::Arc;

use promql_parser::parser::Expr;

pub use check::{check, window_selectors, Unsupported};
pub use eval::{eval, eval_vector};
pub use snapshot::{Reads, Snapshot, LOOKBACK_MS};
pub use value::{EvalError, Labels, Sample, Series, Value};

use crate::store::Store;

/// Why an expression could not be parsed or is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The PromQL parser's message.
    #[error("{0}")]
    Syntax(String),
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

/// Why an [`instant_query`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// A parsed and [`check`]ed expression.
#[derive(Debug, Clone)]
pub struct Query {
    expr: Arc<Expr>,
}

impl Query {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let expr = parse_expr(text).map_err(ParseError::Syntax)?;
        check(&expr)?;
        Ok(Self {
            expr: Arc::new(expr),
        })
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

/// `promql_parser::parser::parse`, with its panics turned into errors: version
/// 0.11.1 panics on a duration out of `Duration`'s range (`up[1e300]`,
/// `x offset 1e300`: `Duration::from_secs_f64`), and every PromQL text here
/// (`match[]`, queries, rule files) comes from outside.
pub fn parse_expr(text: &str) -> Result<Expr, String> {
    std::panic::catch_unwind(|| promql_parser::parser::parse(text))
        .unwrap_or_else(|_| Err("duration out of range".to_string()))
}

/// Parses, checks and evaluates `text` over `store` at `t_ms`.
pub fn instant_query(store: &Store, text: &str, t_ms: i64) -> Result<Value, QueryError> {
    let q = Query::parse(text)?;
    Ok(eval(q.expr(), store, t_ms)?)
}
