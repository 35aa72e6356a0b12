//! Prometheus rule files: `groups[].{name, interval, rules[]}`, each rule an
//! `alert` (with `for`, `keep_firing_for`, `labels`, `annotations`) or a
//! `record`. Expressions and templates are parsed while deserialising, so
//! every error — YAML, unknown field, bad PromQL, unsupported function, bad
//! template — comes out of [`edgewatch_config::parse`] as `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use edgewatch_config::Dur;
use edgewatch_prom::{valid_label_name, valid_metric_name};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::Expr;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::template::Template;
use crate::promql;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    /// Defaults to the aggregator's `evaluation_interval`.
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRule")]
pub struct RuleSpec {
    pub kind: RuleKind,
    pub expr: PromExpr,
    pub labels: BTreeMap<String, Template>,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    Alert {
        name: String,
        for_: Dur,
        keep_firing_for: Dur,
        annotations: BTreeMap<String, Template>,
    },
    Record {
        name: String,
    },
}

impl RuleSpec {
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Alert { name, .. } | RuleKind::Record { name } => name,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: PromExpr,
    #[serde(default, rename = "for")]
    for_: Option<Dur>,
    #[serde(default)]
    keep_firing_for: Option<Dur>,
    #[serde(default)]
    labels: BTreeMap<String, Template>,
    #[serde(default)]
    annotations: BTreeMap<String, Template>,
}

/// Why a rule's shape is invalid (its expression and templates fail with
/// their own errors). The messages end up in `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSpecError {
    #[error("invalid label name {0:?}")]
    LabelName(String),
    #[error("invalid annotation name {0:?}")]
    AnnotationName(String),
    #[error("only one of 'record' and 'alert' may be set")]
    BothKinds,
    #[error("one of 'record' or 'alert' must be set")]
    NoKind,
    #[error("alert name must not be empty")]
    EmptyAlertName,
    #[error("invalid recording rule name {0:?}")]
    RecordName(String),
    #[error("invalid field 'for' or 'keep_firing_for' in recording rule")]
    RecordFor,
    #[error("invalid field 'annotations' in recording rule")]
    RecordAnnotations,
    #[error("recording rule labels cannot be templated")]
    RecordTemplatedLabels,
}

impl TryFrom<RawRule> for RuleSpec {
    type Error = RuleSpecError;
    fn try_from(r: RawRule) -> Result<Self, RuleSpecError> {
        for k in r.labels.keys() {
            if !valid_label_name(k) || k == "__name__" {
                return Err(RuleSpecError::LabelName(k.clone()));
            }
        }
        for k in r.annotations.keys() {
            if !valid_label_name(k) {
                return Err(RuleSpecError::AnnotationName(k.clone()));
            }
        }
        let kind = match (r.alert, r.record) {
            (Some(_), Some(_)) => return Err(RuleSpecError::BothKinds),
            (None, None) => return Err(RuleSpecError::NoKind),
            (Some(name), None) => {
                if name.trim().is_empty() {
                    return Err(RuleSpecError::EmptyAlertName);
                }
                RuleKind::Alert {
                    name,
                    for_: r.for_.unwrap_or_default(),
                    keep_firing_for: r.keep_firing_for.unwrap_or_default(),
                    annotations: r.annotations,
                }
            }
            (None, Some(name)) => {
                if !valid_metric_name(&name) {
                    return Err(RuleSpecError::RecordName(name));
                }
                if r.for_.is_some() || r.keep_firing_for.is_some() {
                    return Err(RuleSpecError::RecordFor);
                }
                if !r.annotations.is_empty() {
                    return Err(RuleSpecError::RecordAnnotations);
                }
                if r.labels.values().any(|t| t.raw().contains("{{")) {
                    return Err(RuleSpecError::RecordTemplatedLabels);
                }
                RuleKind::Record { name }
            }
        };
        Ok(RuleSpec {
            kind,
            expr: r.expr,
            labels: r.labels,
        })
    }
}

/// Why a rule's expression is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExprError {
    /// `promql_parser` reports its errors as text, not as a type.
    #[error("invalid PromQL {text:?}: {message}")]
    Parse { text: String, message: String },
    #[error("{source} in {text:?}")]
    Unsupported {
        text: String,
        #[source]
        source: promql::Unsupported,
    },
    #[error("invalid PromQL {text:?}: a rule needs an instant vector or scalar, got {value_type}")]
    ValueType { text: String, value_type: ValueType },
}

/// A parsed and checked PromQL expression.
#[derive(Clone)]
pub struct PromExpr {
    pub text: String,
    pub expr: Arc<Expr>,
}

impl fmt::Debug for PromExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PromExpr({:?})", self.text)
    }
}

impl PromExpr {
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        let expr = crate::promql::parse_expr(text).map_err(|e| ExprError::Parse {
            text: text.to_string(),
            message: e.trim().to_string(),
        })?;
        promql::check(&expr).map_err(|source| ExprError::Unsupported {
            text: text.to_string(),
            source,
        })?;
        match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => {}
            value_type => {
                return Err(ExprError::ValueType {
                    text: text.to_string(),
                    value_type,
                })
            }
        }
        Ok(Self {
            text: text.to_string(),
            expr: Arc::new(expr),
        })
    }
}

impl<'de> Deserialize<'de> for PromExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a PromQL expression")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        let s = d.deserialize_any(V)?;
        PromExpr::parse(&s).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(de::Error::custom)
    }
}

/// Parses a rule file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<RuleFile, edgewatch_config::ConfigError> {
    let f: RuleFile = edgewatch_config::parse_verbatim(text, origin).map_err(|e| match e {
        // Errors of a value's own validation (expr, templates, durations) carry
        // their path: place them at the value.
        edgewatch_config::ConfigError::Invalid {
            path,
            line,
            column,
            message,
        } => {
            let (line, column) = message
                .split_once(": ")
                .filter(|(p, _)| p.starts_with("groups["))
                .and_then(|(p, _)| locate_path(text, p))
                .unwrap_or((line, column));
            edgewatch_config::ConfigError::Invalid {
                path,
                line,
                column,
                message,
            }
        }
        other => other,
    })?;
    let mut seen = std::collections::HashSet::new();
    for g in &f.groups {
        if !seen.insert(g.name.as_str()) {
            let (line, column) = text
                .lines()
                .enumerate()
                .filter(|(_, l)| {
                    let t = l.trim_start().trim_start_matches("- ").trim_start();
                    t.strip_prefix("name:")
                        .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == g.name)
                })
                .nth(1)
                .map(|(n, l)| (n + 1, l.find("name").unwrap_or(0) + 1))
                .unwrap_or((1, 1));
            return Err(edgewatch_config::ConfigError::Invalid {
                path: origin.to_string(),
                line,
                column,
                message: format!("groupname: {:?} is repeated in the same file", g.name),
            });
        }
    }
    Ok(f)
}

fn meaningful(l: &str) -> bool {
    let t = l.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// Column of a line's content after any leading `- ` sequence markers.
fn content_col(l: &str) -> usize {
    let mut rest = l.trim_start();
    while let Some(r) = rest.strip_prefix("- ") {
        rest = r.trim_start();
    }
    l.len() - rest.len()
}

/// Finds the 0-based (line, column) of the value at `groups[1].rules[0].expr`
/// (block-style YAML, by indentation). For a block scalar (`|`, `>`), the
/// first line of its content.
fn locate_path(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut start, mut end) = (0usize, lines.len());
    let mut found = None;
    for seg in path.split('.') {
        let (key, idx) = match seg.find('[') {
            Some(i) => (
                &seg[..i],
                seg[i + 1..].trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (seg, None),
        };
        let level = (start..end)
            .find(|&n| meaningful(lines[n]))
            .map(|n| content_col(lines[n]))?;
        let n = (start..end).find(|&n| {
            let l = lines[n];
            meaningful(l)
                && content_col(l) == level
                && l[level..].starts_with(key)
                && l[level + key.len()..].starts_with(':')
        })?;
        let l = lines[n];
        let after = &l[level + key.len() + 1..];
        let value = after.trim_start();
        let block_end = (n + 1..lines.len())
            .find(|&m| {
                let x = lines[m];
                meaningful(x)
                    && (indent(x) < level
                        || (indent(x) == level && !x.trim_start().starts_with('-')))
            })
            .unwrap_or(lines.len())
            .min(end);
        found = if value.is_empty() || value.starts_with('|') || value.starts_with('>') {
            match (n + 1..block_end).find(|&m| meaningful(lines[m])) {
                Some(m) if !value.is_empty() => Some((m + 1, indent(lines[m]) + 1)),
                _ => Some((n + 1, level + 1)),
            }
        } else {
            Some((n + 1, l.len() - value.len() + 1))
        };
        start = n + 1;
        end = block_end;
        if let Some(i) = idx {
            let items: Vec<usize> = {
                let first = (start..end).find(|&m| {
                    let t = lines[m].trim_start();
                    t.starts_with("- ") || t == "-"
                })?;
                let dash = indent(lines[first]);
                (first..end)
                    .filter(|&m| {
                        let t = lines[m].trim_start();
                        indent(lines[m]) == dash && (t.starts_with("- ") || t == "-")
                    })
                    .collect()
            };
            let m = *items.get(i)?;
            let item_end = items.get(i + 1).copied().unwrap_or(end);
            found = Some((m + 1, content_col(lines[m]) + 1));
            start = m;
            end = item_end;
        }
    }
    found
}
