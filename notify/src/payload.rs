//! Payload builders (pure): Alertmanager webhook v4, PagerDuty Events v2, Dynatrace
//! Events v2, Alertmanager `/api/v2/alerts`; and the small template language of
//! configurable fields.
//!
//! Templates: `{{ .CommonLabels.x }}`, `{{ .GroupLabels.x }}`,
//! `{{ .CommonAnnotations.x }}`, `{{ $labels.x }}` (= common labels),
//! `{{ index .CommonLabels "x" }}`, `{{ .Status }}`, `{{ .Receiver }}`,
//! `{{ .ExternalURL }}`, `{{ .GroupKey }}`. Anything else expands to "".
//!
//! Dynatrace: one event per alert group. While the group fires the event is sent
//! without `endTime` and with `timeout` minutes, and re-sent (identical title,
//! entity selector and properties) before the timeout runs out so the problem stays
//! open. When every alert of the group resolved, the same event is sent once more with
//! `endTime` = the latest resolve time (UTC ms): Dynatrace closes the event there.

use super::model::{
    common, fingerprint_hex, labels_string, rfc3339, to_ms, truncate, Labels, ZERO_TIME,
};
use super::Alert;
use serde_json::{json, Map, Value};
use std::time::{Duration, SystemTime};

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

fn alert_json(a: &Alert, now: SystemTime) -> Value {
    let resolved = a.resolved_at(now);
    json!({
        "status": if resolved { "resolved" } else { "firing" },
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.starts_at),
        "endsAt": match a.ends_at { Some(e) if resolved => rfc3339(e), _ => ZERO_TIME.to_string() },
        "generatorURL": a.generator_url,
        "fingerprint": fingerprint_hex(a.fingerprint()),
    })
}

/// Alertmanager's webhook payload, version "4". `max_alerts` 0 = all.
pub fn webhook(d: &Data, max_alerts: usize) -> Value {
    let total = d.alerts.len();
    let keep = if max_alerts == 0 {
        total
    } else {
        max_alerts.min(total)
    };
    json!({
        "version": "4",
        "groupKey": d.group_key,
        "truncatedAlerts": total - keep,
        "status": d.status(),
        "receiver": d.receiver,
        "groupLabels": d.group_labels,
        "commonLabels": d.common_labels(),
        "commonAnnotations": d.common_annotations(),
        "externalURL": d.external_url,
        "alerts": d.alerts.iter().take(keep).map(|a| alert_json(a, d.now)).collect::<Vec<_>>(),
    })
}

/// Alertmanager's PagerDuty dedup key: sha256 hex of the group key (64 chars).
pub fn dedup_key(group_key: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(group_key.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub const PD_MAX_SUMMARY: usize = 1024;
pub const PD_MAX_BODY: usize = 512 * 1024;
pub const PD_SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

/// The PagerDuty fields a receiver configures (templates already chosen).
pub struct PagerDutyOptions<'a> {
    pub routing_key: &'a str,
    pub severity: &'a str,
    pub client: &'a str,
    pub client_url: &'a str,
    pub description: Option<&'a str>,
    pub source: Option<&'a str>,
    pub component: Option<&'a str>,
    pub group: Option<&'a str>,
    pub class: Option<&'a str>,
    pub details: &'a std::collections::BTreeMap<String, String>,
}

fn details_alert(a: &Alert) -> Value {
    json!({"labels": a.labels, "annotations": a.annotations, "startsAt": rfc3339(a.starts_at),
           "endsAt": a.ends_at.map(rfc3339), "generatorURL": a.generator_url})
}

/// A PagerDuty Events v2 event: `trigger` while any alert of the group fires,
/// `resolve` once all resolved; one `dedup_key` per group. The body stays under
/// 512 KB (alert lists in `custom_details` are cut first).
pub fn pagerduty(d: &Data, o: &PagerDutyOptions) -> Value {
    let dedup = dedup_key(&d.group_key);
    let client_url = d.expand(o.client_url);
    let mut ev = Map::new();
    ev.insert("routing_key".into(), o.routing_key.into());
    ev.insert("dedup_key".into(), dedup.into());
    ev.insert("client".into(), d.expand(o.client).into());
    if !client_url.is_empty() {
        ev.insert("client_url".into(), client_url.into());
    }
    let firing: Vec<&Alert> = d.firing().collect();
    if firing.is_empty() {
        ev.insert("event_action".into(), "resolve".into());
        return Value::Object(ev);
    }
    ev.insert("event_action".into(), "trigger".into());
    let ca = d.common_annotations();
    let summary = match o.description.map(|t| d.expand(t)).filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => match (firing.as_slice(), ca.get("summary")) {
            ([one], _) if one.annotations.contains_key("summary") => {
                one.annotations["summary"].clone()
            }
            (_, Some(s)) if firing.len() == 1 || d.alerts.len() == firing.len() => {
                format!("{} {s}", d.default_title())
            }
            _ => format!(
                "{} {}",
                d.default_title(),
                labels_string(&d.common_labels())
            ),
        },
    };
    let mut severity = d.expand(o.severity);
    if !PD_SEVERITIES.contains(&severity.as_str()) {
        tracing::warn!(
            severity,
            "PagerDuty severity is not critical|error|warning|info; sending error"
        );
        severity = "error".into();
    }
    let source = o
        .source
        .map(|s| d.expand(s))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| d.expand(o.client));
    let mut details = Map::new();
    details.insert("num_firing".into(), firing.len().into());
    details.insert("num_resolved".into(), d.resolved().count().into());
    details.insert(
        "firing".into(),
        firing
            .iter()
            .map(|a| details_alert(a))
            .collect::<Vec<_>>()
            .into(),
    );
    details.insert(
        "resolved".into(),
        d.resolved().map(details_alert).collect::<Vec<_>>().into(),
    );
    for (k, v) in o.details {
        details.insert(k.clone(), d.expand(v).into());
    }
    let start = firing.iter().map(|a| a.starts_at).min().unwrap_or(d.now);
    let mut payload = Map::new();
    payload.insert("summary".into(), truncate(&summary, PD_MAX_SUMMARY).into());
    payload.insert(
        "source".into(),
        if source.is_empty() {
            "edgewatch".into()
        } else {
            source.into()
        },
    );
    payload.insert("severity".into(), severity.into());
    payload.insert("timestamp".into(), rfc3339(start).into());
    for (k, v) in [
        ("component", o.component),
        ("group", o.group),
        ("class", o.class),
    ] {
        if let Some(v) = v.map(|t| d.expand(t)).filter(|s| !s.is_empty()) {
            payload.insert(k.into(), v.into());
        }
    }
    payload.insert("custom_details".into(), Value::Object(details));
    ev.insert("payload".into(), Value::Object(payload));
    let mut v = Value::Object(ev);
    if serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0) > PD_MAX_BODY {
        let cd = &mut v["payload"]["custom_details"];
        cd["firing"] = json!(format!(
            "{} alerts, cut to fit PagerDuty's 512 KB limit",
            firing.len()
        ));
        cd["resolved"] = json!("cut");
    }
    v
}

pub struct DynatraceOptions<'a> {
    pub event_type: &'a str,
    pub title: Option<&'a str>,
    pub entity_selector: Option<&'a str>,
    pub timeout_minutes: u32,
    pub properties: &'a std::collections::BTreeMap<String, String>,
}

pub const DT_MAX_PROPERTIES: usize = 100;

/// A Dynatrace Events v2 event for the group (see the module docs for the lifecycle).
/// Title and properties depend only on the group, so every re-send is the same event.
pub fn dynatrace(d: &Data, o: &DynatraceOptions) -> Value {
    let firing: Vec<&Alert> = d.firing().collect();
    let title = match o.title {
        Some(t) => d.expand(t),
        None => {
            let mut gl = d.group_labels.clone();
            let name = gl
                .remove("alertname")
                .or_else(|| d.common_labels().get("alertname").cloned())
                .unwrap_or_else(|| "alert".into());
            if gl.is_empty() {
                name
            } else {
                format!("{name} {}", labels_string(&gl))
            }
        }
    };
    let mut props = Map::new();
    for (k, v) in o.properties {
        props.insert(k.clone(), d.expand(v).into());
    }
    props.insert("edgewatch.group_key".into(), d.group_key.clone().into());
    props.insert("edgewatch.receiver".into(), d.receiver.clone().into());
    if !d.external_url.is_empty() {
        props.insert("edgewatch.url".into(), d.external_url.clone().into());
    }
    for (k, v) in &d.group_labels {
        if props.len() >= DT_MAX_PROPERTIES {
            break;
        }
        props.entry(k.clone()).or_insert_with(|| v.clone().into());
    }
    let start = d.alerts.iter().map(|a| a.starts_at).min().unwrap_or(d.now);
    let mut ev = Map::new();
    ev.insert("eventType".into(), o.event_type.into());
    ev.insert("title".into(), title.into());
    ev.insert("startTime".into(), to_ms(start).into());
    if firing.is_empty() {
        let end = d
            .alerts
            .iter()
            .filter_map(|a| a.ends_at)
            .max()
            .unwrap_or(d.now);
        ev.insert("endTime".into(), to_ms(end).into());
    }
    ev.insert("timeout".into(), o.timeout_minutes.into());
    if let Some(sel) = o
        .entity_selector
        .map(|s| d.expand(s))
        .filter(|s| !s.is_empty())
    {
        ev.insert("entitySelector".into(), sel.into());
    }
    ev.insert("properties".into(), Value::Object(props));
    Value::Object(ev)
}

/// Alertmanager `/api/v2/alerts` body for these alerts, Prometheus' way: a firing alert
/// carries `endsAt = now + 4 * max(eval_interval, 1m)`, a resolved one its resolve time.
pub fn alertmanager_push(alerts: &[Alert], now: SystemTime, eval_interval: Duration) -> Value {
    let horizon = 4 * eval_interval.max(Duration::from_secs(60));
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                let ends = match a.ends_at {
                    Some(e) if a.resolved_at(now) => e,
                    _ => now + horizon,
                };
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339(ends),
                    "generatorURL": a.generator_url,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_ms;

    fn alert(labels: &[(&str, &str)], ann: &[(&str, &str)], start: i64, end: Option<i64>) -> Alert {
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

    fn data(alerts: Vec<Alert>, now: i64) -> Data {
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

    #[test]
    fn webhook_v4_shape() {
        let d = data(
            vec![
                alert(
                    &[("alertname", "Down"), ("node", "n1")],
                    &[("summary", "x")],
                    1_000,
                    None,
                ),
                alert(
                    &[("alertname", "Down"), ("node", "n2")],
                    &[("summary", "x")],
                    1_000,
                    Some(5_000),
                ),
            ],
            10_000,
        );
        let v = webhook(&d, 1);
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["commonLabels"], json!({"alertname": "Down"}));
        assert_eq!(v["commonAnnotations"], json!({"summary": "x"}));
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(v["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
        let all = webhook(&d, 0);
        assert_eq!(all["alerts"][1]["status"], "resolved");
        assert_eq!(all["alerts"][1]["endsAt"], "1970-01-01T00:00:05Z");
    }

    #[test]
    fn pagerduty_trigger_and_resolve() {
        let details = Default::default();
        let o = PagerDutyOptions {
            routing_key: "0123456789abcdef0123456789abcdef",
            severity: "{{ .CommonLabels.severity }}",
            client: "edgewatch",
            client_url: "{{ .ExternalURL }}",
            description: None,
            source: None,
            component: None,
            group: None,
            class: None,
            details: &details,
        };
        let firing = data(
            vec![alert(
                &[("alertname", "Down"), ("severity", "warning")],
                &[("summary", "n1 down")],
                0,
                None,
            )],
            10,
        );
        let t = pagerduty(&firing, &o);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["dedup_key"].as_str().unwrap().len(), 64);
        assert_eq!(t["payload"]["summary"], "n1 down");
        assert_eq!(t["payload"]["severity"], "warning");
        assert_eq!(t["client_url"], "http://edgewatch:9090");
        let resolved = data(vec![alert(&[("alertname", "Down")], &[], 0, Some(5))], 10);
        let r = pagerduty(&resolved, &o);
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(r["dedup_key"], t["dedup_key"]);
        assert!(r.get("payload").is_none());
        // long summaries are cut; big bodies too
        let long = "x".repeat(5000);
        let many: Vec<Alert> = (0..2000)
            .map(|i| {
                alert(
                    &[("alertname", "Down"), ("i", &i.to_string())],
                    &[("summary", &long), ("big", &long)],
                    0,
                    None,
                )
            })
            .collect();
        let b = pagerduty(&data(many, 10), &o);
        assert!(b["payload"]["summary"].as_str().unwrap().len() <= PD_MAX_SUMMARY);
        assert!(serde_json::to_vec(&b).unwrap().len() <= PD_MAX_BODY);
        assert_eq!(b["payload"]["custom_details"]["num_firing"], 2000);
    }

    #[test]
    fn dynatrace_event() {
        let props = [("team".to_string(), "{{ .CommonLabels.team }}".to_string())].into();
        let o = DynatraceOptions {
            event_type: "CUSTOM_ALERT",
            title: None,
            entity_selector: Some("type(HOST),entityName(\"{{ .CommonLabels.node }}\")"),
            timeout_minutes: 15,
            properties: &props,
        };
        let f = dynatrace(
            &data(
                vec![alert(
                    &[("alertname", "Down"), ("node", "n1"), ("team", "ml")],
                    &[],
                    1_000,
                    None,
                )],
                10_000,
            ),
            &o,
        );
        assert_eq!(f["title"], "Down");
        assert_eq!(f["startTime"], 1_000);
        assert!(f.get("endTime").is_none());
        assert_eq!(f["entitySelector"], "type(HOST),entityName(\"n1\")");
        assert_eq!(f["properties"]["team"], "ml");
        let r = dynatrace(
            &data(
                vec![alert(
                    &[("alertname", "Down"), ("node", "n1"), ("team", "ml")],
                    &[],
                    1_000,
                    Some(7_000),
                )],
                10_000,
            ),
            &o,
        );
        assert_eq!(r["endTime"], 7_000);
        assert_eq!(r["title"], f["title"]);
        assert_eq!(r["properties"], f["properties"]);
    }

    #[test]
    fn alertmanager_push_body() {
        let now = from_ms(1_000_000);
        let v = alertmanager_push(
            &[
                alert(&[("alertname", "A")], &[], 0, None),
                alert(&[("alertname", "B")], &[], 0, Some(900_000)),
            ],
            now,
            Duration::from_secs(15),
        );
        assert_eq!(v[0]["endsAt"], rfc3339(now + Duration::from_secs(240)));
        assert_eq!(v[1]["endsAt"], rfc3339(from_ms(900_000)));
        assert_eq!(v[0]["generatorURL"], "http://gen/x");
    }
}
