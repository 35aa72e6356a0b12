//! `GET /api/v1/alerts` and `GET /api/v1/rules` in Prometheus' JSON shapes.

use std::collections::BTreeMap;

use axum::routing::get;
use axum::Json;
use edgewatch_prom::float::format_e;
use edgewatch_prom::time::{rfc3339, ZERO_TIME};
use serde_json::{json, Value};

use super::alerting::{ms_to_time, ActiveAlert, AlertState};
use super::file::RuleKind;
use super::{lock, Group, Rule, RuleEngine, RuleRuntime};

fn alert_json(a: &ActiveAlert) -> Value {
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339(ms_to_time(a.active_at)),
        "value": format_e(a.value),
    });
    if let Some(k) = a.keep_firing_since {
        v["keepFiringSince"] = json!(rfc3339(ms_to_time(k)));
    }
    v
}

impl RuleEngine {
    /// Active (pending or firing) alerts, as `/api/v1/alerts` data.
    pub fn alerts_json(&self) -> Value {
        let mut alerts = Vec::new();
        for g in self.groups().iter() {
            for r in &g.rules {
                let rt = lock(&r.state);
                for a in rt.alerts.active.values() {
                    if a.state != AlertState::Inactive {
                        alerts.push(alert_json(a));
                    }
                }
            }
        }
        json!({ "alerts": alerts })
    }

    /// Groups and rules with state and health, as `/api/v1/rules` data.
    pub fn rules_json(&self) -> Value {
        let groups: Vec<Value> = self.groups().iter().map(group_json).collect();
        json!({ "groups": groups })
    }
}

fn group_json(g: &Group) -> Value {
    let rules: Vec<Value> = g.rules.iter().map(rule_json).collect();
    let st = lock(&g.status);
    json!({
        "name": g.name,
        "file": g.file,
        "rules": rules,
        "interval": g.interval.as_secs_f64(),
        "limit": 0,
        "evaluationTime": st.health.eval_seconds,
        "lastEvaluation": st.health.last_eval.map(rfc3339).unwrap_or_else(|| ZERO_TIME.to_string()),
    })
}

fn rule_json(r: &Rule) -> Value {
    let rt = lock(&r.state);
    let last_eval = rt
        .health
        .last_eval
        .map(rfc3339)
        .unwrap_or_else(|| ZERO_TIME.to_string());
    let labels: BTreeMap<&str, &str> = r
        .spec
        .labels
        .iter()
        .map(|(k, t)| (k.as_str(), t.raw()))
        .collect();
    let mut v = match &r.spec.kind {
        RuleKind::Alert {
            name,
            for_,
            keep_firing_for,
            annotations,
        } => {
            let anns: BTreeMap<&str, &str> = annotations
                .iter()
                .map(|(k, t)| (k.as_str(), t.raw()))
                .collect();
            let alerts: Vec<Value> = rt
                .alerts
                .active
                .values()
                .filter(|a| a.state != AlertState::Inactive)
                .map(alert_json)
                .collect();
            json!({
                "state": rule_state(&rt).as_str(),
                "name": name,
                "query": r.spec.expr.text,
                "duration": for_.get().as_secs_f64(),
                "keepFiringFor": keep_firing_for.get().as_secs_f64(),
                "labels": labels,
                "annotations": anns,
                "alerts": alerts,
                "type": "alerting",
            })
        }
        RuleKind::Record { name } => json!({
            "name": name,
            "query": r.spec.expr.text,
            "labels": labels,
            "type": "recording",
        }),
    };
    v["health"] = json!(rt.health.health);
    v["lastError"] = json!(rt.health.last_error);
    v["evaluationTime"] = json!(rt.health.eval_seconds);
    v["lastEvaluation"] = json!(last_eval);
    v
}

/// An alerting rule's state: the most advanced of its alerts'.
fn rule_state(rt: &RuleRuntime) -> AlertState {
    rt.alerts
        .active
        .values()
        .map(|a| a.state)
        .fold(AlertState::Inactive, |m, s| match (m, s) {
            (AlertState::Firing, _) | (_, AlertState::Firing) => AlertState::Firing,
            (AlertState::Pending, _) | (_, AlertState::Pending) => AlertState::Pending,
            _ => AlertState::Inactive,
        })
}

pub(super) fn router(engine: RuleEngine) -> axum::Router {
    let e2 = engine.clone();
    axum::Router::new()
        .route(
            "/api/v1/alerts",
            get(move || {
                let e = engine.clone();
                async move { Json(json!({"status": "success", "data": e.alerts_json()})) }
            }),
        )
        .route(
            "/api/v1/rules",
            get(move || {
                let e = e2.clone();
                async move { Json(json!({"status": "success", "data": e.rules_json()})) }
            }),
        )
}
