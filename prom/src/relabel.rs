//! Prometheus relabeling (`relabel_configs`, `write_relabel_configs`,
//! `metric_relabel_configs`): configuration and application, with the semantics
//! of Prometheus 3 (prometheus/model/relabel) and legacy (ASCII) label names.
//!
//! A [`RelabelConfig`] is validated when it is deserialised, so a bad rule fails
//! at config load with the field and value named; [`process`] applies rules to
//! one label set and allocates nothing unless a rule changes a label.

use std::cell::RefCell;
use std::fmt;
use std::sync::OnceLock;

use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Deserializer};

use crate::name::valid_label_name;

mod apply;
mod expand;
mod pattern;

use pattern::Pattern;

pub use apply::process;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    const ALL: [Action; 11] = [
        Action::Replace,
        Action::Keep,
        Action::Drop,
        Action::KeepEqual,
        Action::DropEqual,
        Action::HashMod,
        Action::LabelMap,
        Action::LabelDrop,
        Action::LabelKeep,
        Action::Lowercase,
        Action::Uppercase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }

    /// Case-insensitive, as Prometheus reads it.
    fn parse(s: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a relabel rule was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RelabelConfigError {
    #[error("action: cannot be empty")]
    EmptyAction,
    #[error("action: unknown relabel action {0:?} (one of replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase)")]
    UnknownAction(String),
    #[error("regex: invalid regex {pattern:?}: {reason}")]
    Regex { pattern: String, reason: String },
    #[error("source_labels: {0:?} is not a valid label name")]
    SourceLabel(String),
    #[error("modulus: the hashmod action requires a non-zero modulus")]
    ZeroModulus,
    #[error("target_label: the {0} action requires a target_label")]
    MissingTarget(Action),
    #[error("target_label: {value:?} is not a valid label name for the {action} action")]
    InvalidTarget { action: Action, value: String },
    #[error("replacement: cannot be set for the {action} action (got {value:?})")]
    ReplacementSet { action: Action, value: String },
    #[error(
        "replacement: {value:?} is not a valid label name or template for the labelmap action"
    )]
    InvalidLabelMapReplacement { value: String },
    #[error("{field}: the {action} action takes only {allowed}")]
    ExtraField {
        action: Action,
        field: &'static str,
        allowed: &'static str,
    },
}

/// One validated relabel rule. Deserialises from Prometheus' configuration shape
/// (`source_labels`, `separator`, `regex`, `modulus`, `target_label`,
/// `replacement`, `action`) with Prometheus' defaults; an explicit `null`
/// means the empty value, as in Prometheus.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRelabelConfig")]
pub struct RelabelConfig {
    source_labels: Vec<String>,
    separator: String,
    rule: Rule,
}

#[derive(Debug, Clone)]
enum Rule {
    Replace {
        regex: Pattern,
        target: Template,
        replacement: Template,
    },
    Keep(Pattern),
    Drop(Pattern),
    KeepEqual(String),
    DropEqual(String),
    HashMod {
        modulus: u64,
        target: String,
    },
    LabelMap {
        regex: Pattern,
        replacement: Template,
    },
    LabelDrop(Pattern),
    LabelKeep(Pattern),
    Lowercase(String),
    Uppercase(String),
}

/// A replacement or target template; `has_vars` when it contains `$` and so
/// needs the regex's capture groups.
#[derive(Debug, Clone)]
struct Template {
    text: String,
    has_vars: bool,
}

impl Template {
    fn new(text: String) -> Self {
        let has_vars = text.contains('$');
        Template { text, has_vars }
    }
}

impl RelabelConfig {
    pub fn action(&self) -> Action {
        match &self.rule {
            Rule::Replace { .. } => Action::Replace,
            Rule::Keep(_) => Action::Keep,
            Rule::Drop(_) => Action::Drop,
            Rule::KeepEqual(_) => Action::KeepEqual,
            Rule::DropEqual(_) => Action::DropEqual,
            Rule::HashMod { .. } => Action::HashMod,
            Rule::LabelMap { .. } => Action::LabelMap,
            Rule::LabelDrop(_) => Action::LabelDrop,
            Rule::LabelKeep(_) => Action::LabelKeep,
            Rule::Lowercase(_) => Action::Lowercase,
            Rule::Uppercase(_) => Action::Uppercase,
        }
    }
}

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

/// The configuration as written. The outer `Option` of a field is "absent"
/// (Prometheus' default applies), the inner one an explicit `null` (the empty
/// value, as Go's YAML decoder gives).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabelConfig {
    #[serde(default)]
    source_labels: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    separator: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    regex: Option<Option<String>>,
    #[serde(default)]
    modulus: Option<u64>,
    #[serde(default)]
    target_label: Option<String>,
    #[serde(default, deserialize_with = "present")]
    replacement: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    action: Option<Option<String>>,
}

/// A field that is present, possibly `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The fields after Prometheus' defaults, as `Validate` sees them.
struct Fields {
    action: Action,
    source_labels: Option<Vec<String>>,
    separator: String,
    /// `None`: not configured, the default `(.*)`.
    regex: Option<String>,
    modulus: u64,
    target: String,
    replacement: String,
}

impl TryFrom<RawRelabelConfig> for RelabelConfig {
    type Error = RelabelConfigError;

    fn try_from(raw: RawRelabelConfig) -> Result<Self, RelabelConfigError> {
        let action = match raw.action {
            None => Action::Replace,
            Some(None) => return Err(RelabelConfigError::EmptyAction),
            Some(Some(s)) => Action::parse(&s).ok_or(RelabelConfigError::UnknownAction(s))?,
        };
        let f = Fields {
            action,
            source_labels: raw.source_labels,
            separator: or_default(raw.separator, DEFAULT_SEPARATOR),
            regex: raw.regex.map(Option::unwrap_or_default),
            modulus: raw.modulus.unwrap_or(0),
            target: raw.target_label.unwrap_or_default(),
            replacement: or_default(raw.replacement, DEFAULT_REPLACEMENT),
        };
        f.validate()?;
        f.build()
    }
}

fn or_default(field: Option<Option<String>>, default: &str) -> String {
    match field {
        None => default.to_owned(),
        Some(v) => v.unwrap_or_default(),
    }
}

impl Fields {
    /// Prometheus' `Config.Validate`, in its order, with legacy label names.
    fn validate(&self) -> Result<(), RelabelConfigError> {
        use Action::*;
        let a = self.action;
        if let Some(bad) = self
            .source_labels
            .iter()
            .flatten()
            .find(|n| !valid_label_name(n))
        {
            return Err(RelabelConfigError::SourceLabel(bad.clone()));
        }
        if a == HashMod && self.modulus == 0 {
            return Err(RelabelConfigError::ZeroModulus);
        }
        let needs_target = matches!(
            a,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if needs_target && self.target.is_empty() {
            return Err(RelabelConfigError::MissingTarget(a));
        }
        let target_ok = match a {
            Replace if self.target.contains('$') => valid_template_name(&self.target),
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual => {
                valid_label_name(&self.target)
            }
            _ => true,
        };
        if !target_ok {
            return Err(RelabelConfigError::InvalidTarget {
                action: a,
                value: self.target.clone(),
            });
        }
        if matches!(a, Lowercase | Uppercase | KeepEqual | DropEqual)
            && self.replacement != DEFAULT_REPLACEMENT
        {
            return Err(RelabelConfigError::ReplacementSet {
                action: a,
                value: self.replacement.clone(),
            });
        }
        if a == LabelMap && !valid_template_name(&self.replacement) {
            return Err(RelabelConfigError::InvalidLabelMapReplacement {
                value: self.replacement.clone(),
            });
        }
        self.only_allowed_fields()
    }

    /// keepequal/dropequal take only source_labels and target_label;
    /// labeldrop/labelkeep only regex. As in Prometheus, any `regex:` at all
    /// counts as set for keepequal/dropequal, even `(.*)`.
    fn only_allowed_fields(&self) -> Result<(), RelabelConfigError> {
        let (allowed, set) = match self.action {
            Action::KeepEqual | Action::DropEqual => (
                "source_labels and target_label",
                [
                    ("regex", self.regex.is_some()),
                    ("modulus", self.modulus != 0),
                    ("separator", self.separator != DEFAULT_SEPARATOR),
                ],
            ),
            Action::LabelDrop | Action::LabelKeep => (
                "regex",
                [
                    ("source_labels", self.source_labels.is_some()),
                    ("target_label", !self.target.is_empty()),
                    ("modulus", self.modulus != 0),
                ],
            ),
            _ => return Ok(()),
        };
        let separator_set = ("separator", self.separator != DEFAULT_SEPARATOR);
        let replacement_set = ("replacement", self.replacement != DEFAULT_REPLACEMENT);
        let extra = set
            .into_iter()
            .chain([separator_set, replacement_set])
            .find(|(_, is_set)| *is_set);
        match extra {
            Some((field, _)) => Err(RelabelConfigError::ExtraField {
                action: self.action,
                field,
                allowed,
            }),
            None => Ok(()),
        }
    }

    fn build(self) -> Result<RelabelConfig, RelabelConfigError> {
        let regex = Pattern::new(self.regex.as_deref().unwrap_or(DEFAULT_REGEX))?;
        let rule = match self.action {
            Action::Replace => Rule::Replace {
                regex,
                target: Template::new(self.target),
                replacement: Template::new(self.replacement),
            },
            Action::Keep => Rule::Keep(regex),
            Action::Drop => Rule::Drop(regex),
            Action::KeepEqual => Rule::KeepEqual(self.target),
            Action::DropEqual => Rule::DropEqual(self.target),
            Action::HashMod => Rule::HashMod {
                modulus: self.modulus,
                target: self.target,
            },
            Action::LabelMap => Rule::LabelMap {
                regex,
                replacement: Template::new(self.replacement),
            },
            Action::LabelDrop => Rule::LabelDrop(regex),
            Action::LabelKeep => Rule::LabelKeep(regex),
            Action::Lowercase => Rule::Lowercase(self.target),
            Action::Uppercase => Rule::Uppercase(self.target),
        };
        Ok(RelabelConfig {
            source_labels: self.source_labels.unwrap_or_default(),
            separator: self.separator,
            rule,
        })
    }
}

/// A label name that may contain `$1`, `${1}`, `$name` references
/// (Prometheus' `relabelTargetLegacy`).
fn valid_template_name(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{[0-9A-Za-z_]+\}|[0-9A-Za-z_]+))+[0-9A-Za-z_]*)+$")
            .expect("constant regex")
    })
    .is_match(s)
}

/// Reused buffers of one thread, so that applying rules allocates only when a
/// label changes.
#[derive(Default)]
struct Scratch {
    /// The joined source label values.
    value: String,
    /// An expanded target label name.
    target: String,
    /// An expanded replacement, case mapping or hash.
    out: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Prometheus' hashmod: the last 8 bytes of the MD5 of `value`, big-endian.
fn hash_mod(value: &str, modulus: u64) -> u64 {
    let sum = Md5::digest(value.as_bytes());
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&sum[8..]);
    u64::from_be_bytes(tail) % modulus
}

#[cfg(test)]
mod tests;
