//! Alertmanager's webhook receiver: the payload version "4", POSTed as it is.

use super::{json_body, FromConfig, Integration};
use crate::deliver::Request;
use crate::model::{fingerprint_hex, rfc3339, ZERO_TIME};
use crate::payload::Data;
use crate::Alert;
use edgewatch_config::alerting::WebhookConfig;
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct Webhook {
    cfg: WebhookConfig,
}

impl FromConfig for Webhook {
    type Config = WebhookConfig;
    const NAME: &'static str = "webhook";
    fn from_config(cfg: &WebhookConfig) -> Result<Self, super::BuildError> {
        Ok(Webhook { cfg: cfg.clone() })
    }
}

impl Integration for Webhook {
    fn send_resolved(&self) -> bool {
        self.cfg.send_resolved
    }
    fn request(&self, data: &Data) -> Request {
        Request {
            url: self.cfg.url.0.clone(),
            headers: vec![],
            body: json_body(&payload(data, self.cfg.max_alerts)),
        }
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
pub fn payload(d: &Data, max_alerts: usize) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::tests::{alert, data};

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
        let v = payload(&d, 1);
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["commonLabels"], json!({"alertname": "Down"}));
        assert_eq!(v["commonAnnotations"], json!({"summary": "x"}));
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(v["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
        let all = payload(&d, 0);
        assert_eq!(all["alerts"][1]["status"], "resolved");
        assert_eq!(all["alerts"][1]["endsAt"], "1970-01-01T00:00:05Z");
    }
}
