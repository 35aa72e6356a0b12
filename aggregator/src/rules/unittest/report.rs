//! promtool's wording of test failures (`cmd/promtool/unittest.go`), so
//! that a CI log reads the same with either tool: Go's `labels.String`,
//! `strconv.Quote`, `FormatFloat(v, 'E', -1, 64)`, `model.Duration` and
//! `time.Duration` notations.

use std::collections::BTreeMap;
use std::fmt::Write;

use edgewatch_prom::float::format_e;

/// An alert as a test compares it: labels (with `alertname`) and annotations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertView {
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

impl AlertView {
    pub fn new(labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> Self {
        let pairs = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        Self {
            labels: pairs(labels),
            annotations: pairs(annotations),
        }
    }
}

/// A sample as a test compares it; labels in name order.
#[derive(Debug, Clone)]
pub struct SampleView {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Go's `strconv.Quote` for the characters label values carry.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `labels.Labels.String()`: `{a="1", b="2"}`.
pub fn labels_string(labels: &[(String, String)]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// Prometheus' `model.Duration.String()`: `0s`, `90s` → `1m30s`, `1d`, `2w`.
pub fn model_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut ms = ms;
    let mut out = String::new();
    const DAY: i64 = 86_400_000;
    for (unit, mult, exact) in [
        ("y", 365 * DAY, true),
        ("w", 7 * DAY, true),
        ("d", DAY, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ] {
        if exact && ms % mult != 0 {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            let _ = write!(out, "{v}{unit}");
            ms -= v * mult;
        }
    }
    out
}

/// Go's `time.Duration.String()` for a non-negative number of ms: `0s`,
/// `500ms`, `1m0s`, `1h0m0.5s`.
pub fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let (s, frac) = (ms / 1000 % 60, ms % 1000);
    let mut secs = s.to_string();
    if frac != 0 {
        let f = format!("{frac:03}");
        let _ = write!(secs, ".{}", f.trim_end_matches('0'));
    }
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// Go's `FormatFloat(v, 'E', -1, 64)`.
pub fn float_upper_e(v: f64) -> String {
    format_e(v).replace('e', "E")
}

/// promtool's `indentLines`: every line but the first gets `indent`.
fn indent_lines(lines: &str, indent: &str) -> String {
    lines
        .split('\n')
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l.to_string()
            } else {
                format!("{indent}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn alert_string(a: &AlertView) -> String {
    format!(
        "Labels:{}\nAnnotations:{}",
        labels_string(&a.labels),
        labels_string(&a.annotations)
    )
}

/// promtool's `labelsAndAnnotations.String()`.
fn alerts_string(alerts: &[AlertView]) -> String {
    if alerts.is_empty() {
        return "[]".to_string();
    }
    let mut s = String::from("[\n");
    for (i, a) in alerts.iter().enumerate() {
        if i > 0 {
            s.push_str(",\n");
        }
        let _ = write!(
            s,
            "{i}:{}",
            indent_lines(&format!("\n{}", alert_string(a)), "  ")
        );
    }
    s.push_str("\n]");
    s
}

/// An alert test's failure.
pub fn alert_failure(
    group_name: Option<&str>,
    alertname: &str,
    eval_ms: i64,
    exp: &[AlertView],
    got: &[AlertView],
) -> String {
    let name = match group_name {
        Some(n) if !n.is_empty() => format!("    name: {n},\n"),
        _ => String::new(),
    };
    let pad = "            ";
    format!(
        "{name}    alertname: {alertname}, time: {}, \n        exp:{}, \n        got:{}",
        model_duration(eval_ms),
        indent_lines(&alerts_string(exp), pad),
        indent_lines(&alerts_string(got), pad)
    )
}

fn samples_string(samples: &[SampleView]) -> String {
    if samples.is_empty() {
        return "nil".to_string();
    }
    samples
        .iter()
        .map(|s| format!("{} {}", labels_string(&s.labels), float_upper_e(s.value)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A PromQL test's failure.
pub fn promql_failure(expr: &str, eval_ms: i64, exp: &[SampleView], got: &[SampleView]) -> String {
    format!(
        "    expr: {}, time: {},\n        exp: {}\n        got: {}",
        go_quote(expr),
        model_duration(eval_ms),
        samples_string(exp),
        samples_string(got)
    )
}

/// A PromQL test that could not run.
pub fn promql_error(expr: &str, eval_ms: i64, err: &str) -> String {
    format!(
        "    expr: {}, time: {}, err: {err}",
        go_quote(expr),
        model_duration(eval_ms)
    )
}

/// A rule that failed to evaluate (which ends its test group).
pub fn rule_error(rule: &str, t_ms: i64, err: &str) -> String {
    format!("    rule: {rule}, time: {}, err: {err}", go_duration(t_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_writes_them() {
        for (ms, model, go) in [
            (0, "0s", "0s"),
            (500, "500ms", "500ms"),
            (1_500, "1s500ms", "1.5s"),
            (60_000, "1m", "1m0s"),
            (70_000, "1m10s", "1m10s"),
            (179_999, "2m59s999ms", "2m59.999s"),
            (3_600_000, "1h", "1h0m0s"),
            (86_400_000, "1d", "24h0m0s"),
            (14 * 86_400_000, "2w", "336h0m0s"),
            (8 * 86_400_000, "8d", "192h0m0s"),
        ] {
            assert_eq!(model_duration(ms), model, "{ms}");
            assert_eq!(go_duration(ms), go, "{ms}");
        }
    }

    #[test]
    fn values_and_labels_as_go_writes_them() {
        assert_eq!(float_upper_e(1.0), "1E+00");
        assert_eq!(float_upper_e(120.0), "1.2E+02");
        assert_eq!(float_upper_e(0.05), "5E-02");
        assert_eq!(float_upper_e(f64::NAN), "NaN");
        assert_eq!(float_upper_e(f64::INFINITY), "+Inf");
        let l = vec![
            ("__name__".to_string(), "up".to_string()),
            ("a".to_string(), "x\"y\n".to_string()),
        ];
        assert_eq!(labels_string(&l), r#"{__name__="up", a="x\"y\n"}"#);
        assert_eq!(labels_string(&[]), "{}");
    }

    #[test]
    fn alert_failure_reads_like_promtool() {
        let exp = vec![AlertView {
            labels: vec![("alertname".into(), "A".into())],
            annotations: vec![],
        }];
        let want = "    name: g,\n    alertname: A, time: 5m, \n        exp:[\n            0:\n              Labels:{alertname=\"A\"}\n              Annotations:{}\n            ], \n        got:[]";
        assert_eq!(alert_failure(Some("g"), "A", 300_000, &exp, &[]), want);
    }
}
