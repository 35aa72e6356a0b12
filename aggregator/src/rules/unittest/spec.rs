//! promtool's unit-test file format
//! (<https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/>),
//! parsed strictly: an unknown field is an error at its `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::fmt;

use edgewatch_config::{ConfigError, Dur};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Relative to the test file; globs.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Defaults to 1m.
    #[serde(default)]
    pub evaluation_interval: Option<Dur>,
    #[serde(default)]
    pub group_eval_order: Vec<String>,
    #[serde(default)]
    pub tests: Vec<TestGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroup {
    /// Step of the input series; defaults to the evaluation interval.
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub input_series: Vec<InputSeries>,
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    pub promql_expr_test: Vec<PromqlTest>,
    /// What `$externalLabels` and `$externalURL` stand for in templates.
    #[serde(default)]
    pub external_labels: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub external_url: Option<Scalar>,
    #[serde(default)]
    pub name: Option<Scalar>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    pub series: Scalar,
    #[serde(default)]
    pub values: Scalar,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTest {
    #[serde(default)]
    pub eval_time: Dur,
    #[serde(default)]
    pub alertname: Scalar,
    #[serde(default)]
    pub exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpAlert {
    #[serde(default)]
    pub exp_labels: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub exp_annotations: BTreeMap<String, Scalar>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromqlTest {
    pub expr: Scalar,
    #[serde(default)]
    pub eval_time: Dur,
    #[serde(default)]
    pub exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpSample {
    #[serde(default)]
    pub labels: Scalar,
    #[serde(default)]
    pub value: f64,
}

/// A string field that, as in promtool (Go's yaml.v2), also takes a number
/// or boolean as its text (`values: 1`, `code: 500`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scalar(pub String);

impl Scalar {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::default())
            }
        }
        // `deserialize_str` hands over a plain scalar's text as written
        // (`0x10` stays `0x10`, where `deserialize_any` would read 16).
        d.deserialize_str(V)
    }
}

/// Parses a test file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<TestFile, ConfigError> {
    // promtool's format: `$` is not ours to expand (expected annotations, series).
    edgewatch_config::parse_verbatim(text, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_text() {
        let text = "tests:\n- input_series:\n  - series: up\n    values: 0x10\n  - series: 1\n    values: 1.50\n";
        let f = parse(text, "t.yml").unwrap();
        let s = &f.tests[0].input_series;
        assert_eq!((s[0].values.as_str(), s[1].series.as_str()), ("0x10", "1"));
        assert_eq!(s[1].values.as_str(), "1.50");
    }

    #[test]
    fn dollars_are_kept() {
        // promtool does not expand the environment: `${HOME}` is text here.
        let text = "tests:\n- alert_rule_test:\n  - alertname: A\n    exp_alerts:\n    - exp_annotations: {s: 'costs $5 ${HOME}'}\n";
        let f = parse(text, "t.yml").unwrap();
        let a = &f.tests[0].alert_rule_test[0].exp_alerts[0];
        assert_eq!(a.exp_annotations["s"].as_str(), "costs $5 ${HOME}");
    }

    #[test]
    fn unknown_field_is_located() {
        let text = "tests:\n  - interval: 1m\n    input_seris: []\n";
        let e = parse(text, "t.yml").unwrap_err().to_string();
        assert!(e.starts_with("t.yml:3:5: "), "{e}");
        assert!(e.contains("unknown field `input_seris`"), "{e}");
    }
}
