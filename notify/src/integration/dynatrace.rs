//! Dynatrace Events API v2: one event per alert group. While the group fires the
//! event is sent without `endTime` and with `timeout` minutes, and re-sent (identical
//! title, entity selector and properties) before the timeout runs out so the problem
//! stays open. When every alert of the group resolved, the same event is sent once
//! more with `endTime` = the latest resolve time (UTC ms): Dynatrace closes the event
//! there.

use super::{json_body, BuildError, FromConfig, Integration};
use crate::deliver::Request;
use crate::model::{labels_string, to_ms};
use crate::payload::Data;
use crate::Alert;
use edgewatch_config::alerting::{DynatraceConfig, Secret};
use serde_json::{Map, Value};
use std::time::Duration;

pub struct Dynatrace {
    cfg: DynatraceConfig,
    token: Secret,
}

impl FromConfig for Dynatrace {
    type Config = DynatraceConfig;
    const NAME: &'static str = "dynatrace";
    fn from_config(cfg: &DynatraceConfig) -> Result<Self, BuildError> {
        let token = cfg.api_token.resolve().map_err(|source| BuildError {
            field: "api_token_file",
            source,
        })?;
        Ok(Dynatrace {
            cfg: cfg.clone(),
            token,
        })
    }
}

impl Integration for Dynatrace {
    fn send_resolved(&self) -> bool {
        self.cfg.send_resolved
    }
    fn request(&self, data: &Data) -> Request {
        Request {
            url: format!("{}/api/v2/events/ingest", self.cfg.url.0),
            headers: vec![("authorization", format!("Api-Token {}", self.token.0))],
            body: json_body(&event(data, &self.cfg)),
        }
    }
    /// Re-sent at 3/4 of the event's timeout (at least every 30 s), before Dynatrace
    /// closes it.
    fn keep_alive(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.cfg.timeout_minutes as u64 * 45).max(Duration::from_secs(30)))
    }
}

pub const MAX_PROPERTIES: usize = 100;

/// The event for the group (see the module docs for the lifecycle).
/// Title and properties depend only on the group, so every re-send is the same event.
pub fn event(d: &Data, o: &DynatraceConfig) -> Value {
    let firing: Vec<&Alert> = d.firing().collect();
    let title = match o.title.as_deref() {
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
    for (k, v) in &o.properties {
        props.insert(k.clone(), d.expand(v).into());
    }
    props.insert("edgewatch.group_key".into(), d.group_key.clone().into());
    props.insert("edgewatch.receiver".into(), d.receiver.clone().into());
    if !d.external_url.is_empty() {
        props.insert("edgewatch.url".into(), d.external_url.clone().into());
    }
    for (k, v) in &d.group_labels {
        if props.len() >= MAX_PROPERTIES {
            break;
        }
        props.entry(k.clone()).or_insert_with(|| v.clone().into());
    }
    let start = d.alerts.iter().map(|a| a.starts_at).min().unwrap_or(d.now);
    let mut ev = Map::new();
    ev.insert("eventType".into(), o.event_type.as_str().into());
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
        .as_deref()
        .map(|s| d.expand(s))
        .filter(|s| !s.is_empty())
    {
        ev.insert("entitySelector".into(), sel.into());
    }
    ev.insert("properties".into(), Value::Object(props));
    Value::Object(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::tests::{alert, data};
    use edgewatch_config::alerting::SecretSource;
    use edgewatch_config::Url;

    #[test]
    fn dynatrace_event() {
        let o = DynatraceConfig {
            send_resolved: true,
            url: Url("http://127.0.0.1:1".into()),
            insecure: true,
            api_token: SecretSource::Value(Secret("t".into())),
            event_type: "CUSTOM_ALERT".into(),
            title: None,
            entity_selector: Some("type(HOST),entityName(\"{{ .CommonLabels.node }}\")".into()),
            timeout_minutes: 15,
            properties: [("team".to_string(), "{{ .CommonLabels.team }}".to_string())].into(),
        };
        let f = event(
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
        let r = event(
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
}
