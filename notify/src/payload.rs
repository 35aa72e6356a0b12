//! What a notification is about ([`Data`]: one alert group, for one receiver, at one
//! time) and the small template language of configurable fields. The payloads are
//! built by each integration (`crate::integration`).
//!
//! Templates: `{{ .CommonLabels.x }}`, `{{ .GroupLabels.x }}`,
//! `{{ .CommonAnnotations.x }}`, `{{ $labels.x }}` (= common labels),
//! `{{ index .CommonLabels "x" }}`, `{{ .Status }}`, `{{ .Receiver }}`,
//! `{{ .ExternalURL }}`, `{{ .GroupKey }}`. Anything else expands to "".

use super::model::{common, Labels};
use super::Alert;
use std::time::SystemTime;

/// What a notification is about: one alert group, for one receiver, at one time.
#[derive(Debug, Clone)]
pub struct Data {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: Labels,
    pub external_url: String,
    /// The alerts to notify about, each with its status at `now`.
    pub alerts: Vec<Alert>,
    pub now: SystemTime,
}

impl Data {
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| !a.resolved_at(self.now))
    }
    pub fn resolved(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| a.resolved_at(self.now))
    }
    pub fn status(&self) -> &'static str {
        if self.firing().next().is_some() {
            "firing"
        } else {
            "resolved"
        }
    }
    pub fn common_labels(&self) -> Labels {
        common(self.alerts.iter().map(|a| &a.labels))
    }
    pub fn common_annotations(&self) -> Labels {
        common(self.alerts.iter().map(|a| &a.annotations))
    }

    /// Expands a template (see the module docs).
    pub fn expand(&self, tmpl: &str) -> String {
        let mut out = String::new();
        let mut rest = tmpl;
        while let Some(i) = rest.find("{{") {
            out.push_str(&rest[..i]);
            let Some(end) = rest[i..].find("}}") else {
                out.push_str(&rest[i..]);
                return out;
            };
            let expr = rest[i + 2..i + end]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            out.push_str(&self.eval(expr));
            rest = &rest[i + end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn eval(&self, expr: &str) -> String {
        let (map, key) = if let Some(r) = expr.strip_prefix("index ") {
            let mut parts = r.split_whitespace();
            let m = parts.next().unwrap_or("");
            let k = parts.collect::<Vec<_>>().join(" ");
            (m.to_string(), k.trim_matches('"').to_string())
        } else {
            match expr.rsplit_once('.') {
                Some((m, k)) => (m.to_string(), k.to_string()),
                _ => (expr.to_string(), String::new()),
            }
        };
        let lookup = |l: Labels| l.get(&key).cloned().unwrap_or_default();
        match (map.as_str(), key.as_str()) {
            (".CommonLabels" | "$labels" | ".Labels", _) => lookup(self.common_labels()),
            (".GroupLabels", _) => lookup(self.group_labels.clone()),
            (".CommonAnnotations" | "$annotations" | ".Annotations", _) => {
                lookup(self.common_annotations())
            }
            ("", "Status") => self.status().into(),
            ("", "Receiver") => self.receiver.clone(),
            ("", "ExternalURL") => self.external_url.clone(),
            ("", "GroupKey") => self.group_key.clone(),
            _ => String::new(),
        }
    }

    /// `[FIRING:2] HighLatency (cluster="edge-1")`, Alertmanager's default title.
    pub fn default_title(&self) -> String {
        let firing = self.firing().count();
        let mut s = if firing > 0 {
            format!("[FIRING:{firing}]")
        } else {
            "[RESOLVED]".to_string()
        };
        let mut gl = self.group_labels.clone();
        let name = gl
            .remove("alertname")
            .or_else(|| self.common_labels().get("alertname").cloned());
        if let Some(n) = name {
            s.push(' ');
            s.push_str(&n);
        }
        if !gl.is_empty() {
            let inner: Vec<String> = gl.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            s.push_str(&format!(" ({})", inner.join(" ")));
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::from_ms;

    pub(crate) fn alert(
        labels: &[(&str, &str)],
        ann: &[(&str, &str)],
        start: i64,
        end: Option<i64>,
    ) -> Alert {
        Alert {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts_at: from_ms(start),
            ends_at: end.map(from_ms),
            generator_url: "http://gen/x".into(),
        }
    }

    pub(crate) fn data(alerts: Vec<Alert>, now: i64) -> Data {
        Data {
            receiver: "team".into(),
            group_key: r#"{}:{alertname="Down"}"#.into(),
            group_labels: [("alertname".to_string(), "Down".to_string())].into(),
            external_url: "http://edgewatch:9090".into(),
            alerts,
            now: from_ms(now),
        }
    }

    #[test]
    fn templates() {
        let d = data(
            vec![alert(
                &[
                    ("alertname", "Down"),
                    ("severity", "critical"),
                    ("node", "n1"),
                ],
                &[("summary", "s")],
                0,
                None,
            )],
            10,
        );
        for (t, want) in [
            ("{{ .CommonLabels.severity }}", "critical"),
            ("{{ $labels.node }}!", "n1!"),
            ("{{index .CommonLabels \"node\"}}", "n1"),
            ("{{ .GroupLabels.alertname }}/{{ .Status }}", "Down/firing"),
            ("{{ .CommonAnnotations.summary }} {{ .Receiver }}", "s team"),
            ("{{ .Nope }}x", "x"),
            ("literal", "literal"),
            ("{{ open", "{{ open"),
        ] {
            assert_eq!(d.expand(t), want, "{t}");
        }
    }
}
