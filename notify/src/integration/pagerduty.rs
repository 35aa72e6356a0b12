//! PagerDuty Events API v2: one event per alert group (`dedup_key` from the group
//! key, as Alertmanager does), `trigger` while any alert fires, `resolve` once all
//! resolved. At most 120 events a minute per routing key, PagerDuty's documented limit.

use super::{json_body, BuildError, FromConfig, Integration, RateLimit};
use crate::deliver::Request;
use crate::model::{labels_string, rfc3339, truncate};
use crate::payload::Data;
use crate::Alert;
use edgewatch_config::alerting::{PagerDutyConfig, Secret, DEFAULT_PAGERDUTY_URL};
use serde_json::{json, Map, Value};

/// PagerDuty's documented limit per routing key.
pub const EVENTS_PER_MINUTE: usize = 120;

pub struct PagerDuty {
    cfg: PagerDutyConfig,
    key: Secret,
    url: String,
}

impl FromConfig for PagerDuty {
    type Config = PagerDutyConfig;
    const NAME: &'static str = "pagerduty";
    fn from_config(cfg: &PagerDutyConfig) -> Result<Self, BuildError> {
        let key = cfg.routing_key.resolve().map_err(|source| BuildError {
            field: "routing_key_file",
            source,
        })?;
        let url = cfg
            .url
            .as_ref()
            .map(|u| u.0.clone())
            .unwrap_or_else(|| DEFAULT_PAGERDUTY_URL.into());
        Ok(PagerDuty {
            cfg: cfg.clone(),
            key,
            url,
        })
    }
}

impl Integration for PagerDuty {
    fn send_resolved(&self) -> bool {
        self.cfg.send_resolved
    }
    fn request(&self, data: &Data) -> Request {
        Request {
            url: self.url.clone(),
            headers: vec![],
            body: json_body(&event(data, &self.cfg, &self.key.0)),
        }
    }
    fn rate_limit(&self) -> Option<RateLimit<'_>> {
        Some(RateLimit {
            key: &self.key.0,
            per_minute: EVENTS_PER_MINUTE,
        })
    }
}

/// Alertmanager's PagerDuty dedup key: sha256 hex of the group key (64 chars).
pub fn dedup_key(group_key: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(group_key.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub const MAX_SUMMARY: usize = 1024;
pub const MAX_BODY: usize = 512 * 1024;
pub const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

fn details_alert(a: &Alert) -> Value {
    json!({"labels": a.labels, "annotations": a.annotations, "startsAt": rfc3339(a.starts_at),
           "endsAt": a.ends_at.map(rfc3339), "generatorURL": a.generator_url})
}

/// The event for the group. The body stays under 512 KB (alert lists in
/// `custom_details` are cut first).
pub fn event(d: &Data, cfg: &PagerDutyConfig, routing_key: &str) -> Value {
    let client_url = d.expand(&cfg.client_url);
    let mut ev = Map::new();
    ev.insert("routing_key".into(), routing_key.into());
    ev.insert("dedup_key".into(), dedup_key(&d.group_key).into());
    ev.insert("client".into(), d.expand(&cfg.client).into());
    if !client_url.is_empty() {
        ev.insert("client_url".into(), client_url.into());
    }
    let firing: Vec<&Alert> = d.firing().collect();
    if firing.is_empty() {
        ev.insert("event_action".into(), "resolve".into());
        return Value::Object(ev);
    }
    ev.insert("event_action".into(), "trigger".into());
    ev.insert(
        "payload".into(),
        Value::Object(trigger_payload(d, cfg, &firing)),
    );
    let mut v = Value::Object(ev);
    if serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0) > MAX_BODY {
        let cd = &mut v["payload"]["custom_details"];
        cd["firing"] = json!(format!(
            "{} alerts, cut to fit PagerDuty's 512 KB limit",
            firing.len()
        ));
        cd["resolved"] = json!("cut");
    }
    v
}

/// `payload` of a `trigger` event.
fn trigger_payload(d: &Data, cfg: &PagerDutyConfig, firing: &[&Alert]) -> Map<String, Value> {
    let source = cfg
        .source
        .as_deref()
        .map(|s| d.expand(s))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| d.expand(&cfg.client));
    let start = firing.iter().map(|a| a.starts_at).min().unwrap_or(d.now);
    let mut payload = Map::new();
    payload.insert(
        "summary".into(),
        truncate(&summary(d, cfg, firing), MAX_SUMMARY).into(),
    );
    payload.insert(
        "source".into(),
        if source.is_empty() {
            "edgewatch".into()
        } else {
            source.into()
        },
    );
    payload.insert("severity".into(), severity(d, cfg).into());
    payload.insert("timestamp".into(), rfc3339(start).into());
    for (k, v) in [
        ("component", &cfg.component),
        ("group", &cfg.group),
        ("class", &cfg.class),
    ] {
        if let Some(v) = v.as_deref().map(|t| d.expand(t)).filter(|s| !s.is_empty()) {
            payload.insert(k.into(), v.into());
        }
    }
    payload.insert(
        "custom_details".into(),
        Value::Object(custom_details(d, cfg, firing)),
    );
    payload
}

/// The configured description, else the one firing alert's summary, else the title
/// with the common summary or the common labels.
fn summary(d: &Data, cfg: &PagerDutyConfig, firing: &[&Alert]) -> String {
    if let Some(s) = cfg
        .description
        .as_deref()
        .map(|t| d.expand(t))
        .filter(|s| !s.is_empty())
    {
        return s;
    }
    let ca = d.common_annotations();
    match (firing, ca.get("summary")) {
        ([one], _) if one.annotations.contains_key("summary") => one.annotations["summary"].clone(),
        (_, Some(s)) if firing.len() == 1 || d.alerts.len() == firing.len() => {
            format!("{} {s}", d.default_title())
        }
        _ => format!(
            "{} {}",
            d.default_title(),
            labels_string(&d.common_labels())
        ),
    }
}

fn severity(d: &Data, cfg: &PagerDutyConfig) -> String {
    let severity = d.expand(&cfg.severity);
    if SEVERITIES.contains(&severity.as_str()) {
        return severity;
    }
    tracing::warn!(
        severity,
        "PagerDuty severity is not critical|error|warning|info; sending error"
    );
    "error".into()
}

fn custom_details(d: &Data, cfg: &PagerDutyConfig, firing: &[&Alert]) -> Map<String, Value> {
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
    for (k, v) in &cfg.details {
        details.insert(k.clone(), d.expand(v).into());
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::tests::{alert, data};
    use edgewatch_config::alerting::SecretSource;

    #[test]
    fn pagerduty_trigger_and_resolve() {
        let key = "0123456789abcdef0123456789abcdef";
        let o = PagerDutyConfig {
            send_resolved: true,
            routing_key: SecretSource::Value(Secret(key.into())),
            url: None,
            insecure: false,
            severity: "{{ .CommonLabels.severity }}".into(),
            client: "edgewatch".into(),
            client_url: "{{ .ExternalURL }}".into(),
            description: None,
            source: None,
            component: None,
            group: None,
            class: None,
            details: Default::default(),
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
        let t = event(&firing, &o, key);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["dedup_key"].as_str().unwrap().len(), 64);
        assert_eq!(t["payload"]["summary"], "n1 down");
        assert_eq!(t["payload"]["severity"], "warning");
        assert_eq!(t["client_url"], "http://edgewatch:9090");
        let resolved = data(vec![alert(&[("alertname", "Down")], &[], 0, Some(5))], 10);
        let r = event(&resolved, &o, key);
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
        let b = event(&data(many, 10), &o, key);
        assert!(b["payload"]["summary"].as_str().unwrap().len() <= MAX_SUMMARY);
        assert!(serde_json::to_vec(&b).unwrap().len() <= MAX_BODY);
        assert_eq!(b["payload"]["custom_details"]["num_firing"], 2000);
    }
}
