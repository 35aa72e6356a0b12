//! Shared by the `notify_*` tests: local HTTP receivers that validate every request
//! against the published schema of PagerDuty Events v2, Dynatrace Events v2 and the
//! Alertmanager webhook v4 payload, and answer scripted status codes.
#![allow(dead_code)]

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use edgewatch_notify::{Alert, Notifier};
use edgewatch_testkit::http::Recorder;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    PagerDuty,
    Dynatrace,
    Webhook,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub status: u16,
}

/// A receiver on 127.0.0.1 that validates each request against `kind`'s schema (a
/// violation is recorded and answered 400), then answers from `script` (then
/// `default`) with the service's response body.
#[derive(Clone)]
pub struct Mock {
    pub kind: Kind,
    recorder: Recorder,
    violations: Arc<Mutex<Vec<String>>>,
}

pub const DT_TOKEN: &str = "dt0c01.TESTTOKEN.SECRET";

impl Mock {
    pub async fn start(kind: Kind, default: u16, script: &[u16]) -> Mock {
        let violations: Arc<Mutex<Vec<String>>> = Default::default();
        let seen = violations.clone();
        let recorder = Recorder::start_with(default, script, move |i| {
            let parsed: Result<Value, String> =
                serde_json::from_slice(i.body).map_err(|e| format!("not JSON: {e}"));
            let check = parsed.and_then(|v| match kind {
                Kind::PagerDuty => validate_pagerduty(&v, i.body.len()),
                Kind::Dynatrace => validate_dynatrace(&v, i.headers, i.path),
                Kind::Webhook => validate_webhook(&v),
            });
            if let Err(e) = &check {
                seen.lock().unwrap().push(e.clone());
            }
            let status = if check.is_err() { 400 } else { i.scripted };
            answer(kind, status, check.err())
        })
        .await;
        Mock {
            kind,
            recorder,
            violations,
        }
    }

    pub fn url(&self) -> String {
        self.recorder.url()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.recorder
            .requests()
            .into_iter()
            .map(|r| Received {
                body: r.json(),
                path: r.path,
                headers: r.headers,
                status: r.status,
            })
            .collect()
    }
    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }
    pub fn assert_valid(&self) {
        let v = self.violations.lock().unwrap();
        assert!(v.is_empty(), "schema violations: {v:?}");
    }
}

/// The service's answer for `status` (what PagerDuty and Dynatrace send back).
fn answer(kind: Kind, status: u16, violation: Option<String>) -> axum::response::Response {
    let code = StatusCode::from_u16(status).unwrap();
    match (kind, status) {
        (Kind::PagerDuty, 202) => (code, axum::Json(serde_json::json!({"status":"success","message":"Event processed","dedup_key":"x"}))).into_response(),
        (Kind::PagerDuty, 400) => (code, axum::Json(serde_json::json!({"status":"invalid event","message":"Event object is invalid","errors":[violation.unwrap_or_default()]}))).into_response(),
        (Kind::Dynatrace, 201) => (code, axum::Json(serde_json::json!({"reportCount":1,"eventIngestResults":[{"correlationId":"c1","status":"OK"}]}))).into_response(),
        _ => (code, "scripted answer").into_response(),
    }
}

fn is_str(v: &Value) -> bool {
    v.is_string()
}

fn only_keys(
    o: &serde_json::Map<String, Value>,
    allowed: &[&str],
    what: &str,
) -> Result<(), String> {
    for k in o.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("{what}: unknown field {k}"));
        }
    }
    Ok(())
}

fn iso8601(v: &Value, what: &str) -> Result<(), String> {
    let s = v.as_str().ok_or(format!("{what} must be a string"))?;
    chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{what} {s:?} is not ISO 8601: {e}"))?;
    Ok(())
}

/// PagerDuty Events API v2 (api-schema events-v2 `send_event`).
pub fn validate_pagerduty(v: &Value, len: usize) -> Result<(), String> {
    if len > 512 * 1024 {
        return Err("body over 512 KB".into());
    }
    let o = v.as_object().ok_or("event must be an object")?;
    only_keys(
        o,
        &[
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "images",
            "links",
            "client",
            "client_url",
        ],
        "event",
    )?;
    let rk = o
        .get("routing_key")
        .and_then(Value::as_str)
        .ok_or("routing_key required")?;
    if rk.len() != 32 {
        return Err(format!(
            "routing_key must be 32 characters, got {}",
            rk.len()
        ));
    }
    let action = o
        .get("event_action")
        .and_then(Value::as_str)
        .ok_or("event_action required")?;
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        return Err(format!("event_action {action:?} invalid"));
    }
    match o.get("dedup_key") {
        Some(Value::String(d)) if d.len() <= 255 && !d.is_empty() => {}
        None if action == "trigger" => {}
        other => return Err(format!("dedup_key invalid: {other:?}")),
    }
    for k in ["client", "client_url"] {
        if let Some(x) = o.get(k) {
            if !is_str(x) {
                return Err(format!("{k} must be a string"));
            }
        }
    }
    if action == "trigger" {
        let p = o
            .get("payload")
            .and_then(Value::as_object)
            .ok_or("payload required on trigger")?;
        only_keys(
            p,
            &[
                "summary",
                "source",
                "severity",
                "timestamp",
                "component",
                "group",
                "class",
                "custom_details",
            ],
            "payload",
        )?;
        let s = p
            .get("summary")
            .and_then(Value::as_str)
            .ok_or("payload.summary required")?;
        if s.is_empty() || s.len() > 1024 {
            return Err(format!("payload.summary length {}", s.len()));
        }
        if p.get("source")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err("payload.source required".into());
        }
        let sev = p
            .get("severity")
            .and_then(Value::as_str)
            .ok_or("payload.severity required")?;
        if !["critical", "error", "warning", "info"].contains(&sev) {
            return Err(format!("payload.severity {sev:?} invalid"));
        }
        if let Some(t) = p.get("timestamp") {
            iso8601(t, "payload.timestamp")?;
        }
        for k in ["component", "group", "class"] {
            if p.get(k).is_some_and(|x| !x.is_string()) {
                return Err(format!("payload.{k} must be a string"));
            }
        }
        if p.get("custom_details").is_some_and(|x| !x.is_object()) {
            return Err("payload.custom_details must be an object".into());
        }
    }
    Ok(())
}

pub const DT_EVENT_TYPES: &[&str] = &[
    "AVAILABILITY_EVENT",
    "CUSTOM_ALERT",
    "CUSTOM_ANNOTATION",
    "CUSTOM_CONFIGURATION",
    "CUSTOM_DEPLOYMENT",
    "CUSTOM_INFO",
    "ERROR_EVENT",
    "MARKED_FOR_TERMINATION",
    "PERFORMANCE_EVENT",
    "RESOURCE_CONTENTION_EVENT",
];

/// Dynatrace Events API v2 `POST /api/v2/events/ingest` (EventIngest).
pub fn validate_dynatrace(v: &Value, headers: &HeaderMap, path: &str) -> Result<(), String> {
    if path != "/api/v2/events/ingest" {
        return Err(format!("path {path}"));
    }
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if auth != format!("Api-Token {DT_TOKEN}") {
        return Err("missing or wrong Authorization: Api-Token header".into());
    }
    let o = v.as_object().ok_or("event must be an object")?;
    only_keys(
        o,
        &[
            "eventType",
            "title",
            "startTime",
            "endTime",
            "timeout",
            "entitySelector",
            "properties",
        ],
        "event",
    )?;
    let et = o
        .get("eventType")
        .and_then(Value::as_str)
        .ok_or("eventType required")?;
    if !DT_EVENT_TYPES.contains(&et) {
        return Err(format!("eventType {et:?} invalid"));
    }
    if o.get("title")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("title required".into());
    }
    for k in ["startTime", "endTime"] {
        if o.get(k).is_some_and(|x| !x.is_i64()) {
            return Err(format!("{k} must be an integer (UTC ms)"));
        }
    }
    if let Some(t) = o.get("timeout") {
        let t = t.as_i64().ok_or("timeout must be an integer")?;
        if !(1..=360).contains(&t) {
            return Err(format!("timeout {t} out of 1..360"));
        }
    }
    if o.get("entitySelector").is_some_and(|x| !x.is_string()) {
        return Err("entitySelector must be a string".into());
    }
    if let Some(p) = o.get("properties") {
        let p = p.as_object().ok_or("properties must be an object")?;
        if p.len() > 100 {
            return Err("more than 100 properties".into());
        }
        if let Some((k, _)) = p.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!("property {k} is not a string"));
        }
    }
    Ok(())
}

fn string_map(v: Option<&Value>, what: &str) -> Result<(), String> {
    let o = v
        .and_then(Value::as_object)
        .ok_or(format!("{what} must be an object"))?;
    if o.values().all(Value::is_string) {
        Ok(())
    } else {
        Err(format!("{what} values must be strings"))
    }
}

/// Alertmanager webhook payload version 4 (all fields, with their types).
pub fn validate_webhook(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("payload must be an object")?;
    let keys = [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ];
    for k in keys {
        if !o.contains_key(k) {
            return Err(format!("missing {k}"));
        }
    }
    // Alertmanager >= 0.25 may add groupKey-related extras; ours must not.
    only_keys(o, &keys, "payload")?;
    if o["version"] != "4" {
        return Err("version must be \"4\"".into());
    }
    if !o["groupKey"].is_string() || !o["receiver"].is_string() || !o["externalURL"].is_string() {
        return Err("groupKey/receiver/externalURL must be strings".into());
    }
    if !o["truncatedAlerts"].is_u64() {
        return Err("truncatedAlerts must be a non-negative integer".into());
    }
    let status = o["status"].as_str().unwrap_or("");
    if status != "firing" && status != "resolved" {
        return Err(format!("status {status:?}"));
    }
    for k in ["groupLabels", "commonLabels", "commonAnnotations"] {
        string_map(o.get(k), k)?;
    }
    let alerts = o["alerts"].as_array().ok_or("alerts must be an array")?;
    for a in alerts {
        let a = a.as_object().ok_or("alert must be an object")?;
        let ak = [
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        ];
        for k in ak {
            if !a.contains_key(k) {
                return Err(format!("alert missing {k}"));
            }
        }
        only_keys(a, &ak, "alert")?;
        let s = a["status"].as_str().unwrap_or("");
        if s != "firing" && s != "resolved" {
            return Err(format!("alert status {s:?}"));
        }
        string_map(a.get("labels"), "labels")?;
        string_map(a.get("annotations"), "annotations")?;
        iso8601(&a["startsAt"], "startsAt")?;
        iso8601(&a["endsAt"], "endsAt")?;
        let fp = a["fingerprint"].as_str().unwrap_or("");
        if fp.len() != 16 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("fingerprint {fp:?}"));
        }
    }
    Ok(())
}

pub fn alert(labels: &[(&str, &str)], starts_at: SystemTime, ends_at: Option<SystemTime>) -> Alert {
    Alert {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        annotations: [("summary".to_string(), "model server down".to_string())].into(),
        starts_at,
        ends_at,
        generator_url: "http://edgewatch:9090/graph?g0.expr=up".into(),
    }
}

/// A started notifier on a fresh sled dir.
pub struct Running {
    pub notifier: Notifier,
    pub registry: prometheus::Registry,
    pub db: sled::Db,
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn start(yaml: &str, dir: &std::path::Path) -> Running {
    let cfg = edgewatch_config::alerting::AlertingConfig::from_yaml(yaml).unwrap();
    let db = edgewatch_testkit::open_sled(dir);
    let registry = prometheus::Registry::new();
    let notifier = Notifier::new(&cfg, &db, &registry).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(notifier.clone().run(stop.clone()));
    Running {
        notifier,
        registry,
        db,
        stop,
        task,
    }
}

impl Running {
    /// Stops the task and closes the database.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        self.db.flush().unwrap();
        drop(self.notifier);
        drop(self.db);
    }
}
