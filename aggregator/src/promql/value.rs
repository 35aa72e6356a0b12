//! What an evaluation returns: values with string labels, and its errors.

use std::collections::BTreeMap;

use super::check::Unsupported;
use crate::store::SelectorError;

/// A label set, `__name__` included.
pub type Labels = BTreeMap<String, String>;

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

/// An evaluation error (Prometheus' wording where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("rule result is not a vector or scalar")]
    NotVectorOrScalar,
    #[error("unary minus needs a scalar or an instant vector")]
    UnaryOperand,
    #[error("expected a scalar argument")]
    ExpectedScalar,
    #[error("expected an instant vector argument")]
    ExpectedVector,
    #[error("{function}: expected a range vector selector")]
    ExpectedRange { function: &'static str },
    #[error("{op}: expected a scalar parameter")]
    ExpectedParameter { op: String },
    #[error("operator \"{op}\" needs scalar or instant vector operands")]
    Operands { op: String },
    #[error("vector cannot contain metrics with the same labelset")]
    DuplicateLabelset,
    #[error(
        "found duplicate series for the match group {group} on the {side} of the operation: \
         [{first}, {second}];many-to-many matching not allowed: matching labels must be unique on one side"
    )]
    ManyToMany {
        group: String,
        side: &'static str,
        first: String,
        second: String,
    },
    #[error("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")]
    ImplicitManyToOne,
    #[error("multiple matches for labels: grouping labels must ensure unique matches")]
    GroupingNotUnique,
}
