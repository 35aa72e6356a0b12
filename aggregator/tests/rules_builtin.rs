//! The built-in rule groups (fleet liveness and buffers, deployment status) as
//! `/api/v1/rules` shows them: names, group names, expressions, `for`, labels
//! and annotations are part of the product (dashboards, silences and routes
//! match them), so they are pinned here character for character.

use std::sync::Arc;

use edgewatch_aggregator::rules::RuleEngine;
use edgewatch_aggregator::store::{Store, StoreOptions};
use edgewatch_config::AggregatorConfig;
use prometheus::Registry;
use serde_json::{json, Value};

fn config(dir: &std::path::Path, extra: &str) -> AggregatorConfig {
    let yaml = format!(
        "http: {{listen: \"127.0.0.1:0\"}}\nstate: {{path: \"{state}\"}}\nrule_files: [\"{dir}/*.rules.yml\"]\nevaluation_interval: 20s\n{extra}",
        state = dir.join("state").display(),
        dir = dir.display(),
    );
    edgewatch_config::parse(&yaml, "aggregator.yml").unwrap()
}

fn reconciler(dir: &std::path::Path) -> String {
    format!("reconciler:\n  gitops:\n    path: {}\n", dir.display())
}

/// The built-in groups of `/api/v1/rules`, without evaluation state.
fn builtin_groups(cfg: &AggregatorConfig) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let store = Arc::new(Store::new(StoreOptions::default(), &Registry::new()));
    let engine = RuleEngine::load(cfg, store, &db, &Registry::new()).unwrap();
    let rules = engine.rules_json();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["file"] == "<built-in>")
        .map(|g| {
            let rules: Vec<Value> = g["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    let o = r.as_object_mut().unwrap();
                    for k in [
                        "health",
                        "lastError",
                        "evaluationTime",
                        "lastEvaluation",
                        "alerts",
                        "state",
                    ] {
                        o.remove(k);
                    }
                    r
                })
                .collect();
            json!({"name": g["name"], "file": g["file"], "interval": g["interval"], "rules": rules})
        })
        .collect()
}

fn alert(
    name: &str,
    query: &str,
    duration: f64,
    severity: &str,
    summary: &str,
    description: &str,
) -> Value {
    json!({
        "name": name,
        "query": query,
        "duration": duration,
        "keepFiringFor": 0.0,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
        "type": "alerting",
    })
}

fn collector_down(down_after: &str) -> Value {
    alert(
        "EdgeCollectorDown",
        &format!("time() - edgewatch_collector_last_seen_timestamp_seconds > {down_after}"),
        0.0,
        "critical",
        "Edge collector {{ $labels.node }} in {{ $labels.cluster }} is down",
        "No data from the collector on {{ $labels.node }} (cluster {{ $labels.cluster }}) for {{ $value | humanizeDuration }}.",
    )
}

fn buffer_backlog() -> Value {
    alert(
        "EdgeBufferBacklog",
        "time() - edgewatch_buffer_oldest_timestamp_seconds > 600 and edgewatch_buffer_oldest_timestamp_seconds > 0",
        0.0,
        "warning",
        "Edge collector {{ $labels.node }} is forwarding with a backlog",
        "The oldest buffered point on {{ $labels.node }} (cluster {{ $labels.cluster }}) is {{ $value | humanizeDuration }} old.",
    )
}

fn buffer_dropping() -> Value {
    alert(
        "EdgeBufferDropping",
        "increase(edgewatch_buffer_dropped_points_total[5m]) > 0",
        0.0,
        "warning",
        "Edge collector {{ $labels.node }} is dropping buffered points",
        "{{ $value | humanize }} points dropped on {{ $labels.node }} (cluster {{ $labels.cluster }}) in the last 5m.",
    )
}

fn out_of_sync() -> Value {
    alert(
        "ModelDeploymentOutOfSync",
        "edgewatch_deployment_status{state=\"OutOfSync\"} == 1",
        60.0,
        "warning",
        "{{ $labels.app }} on {{ $labels.cluster }} is out of sync",
        "{{ $labels.app }} ({{ $labels.model }}) on cluster {{ $labels.cluster }} runs {{ $labels.observed_digest }} past its progress deadline; desired {{ $labels.desired_digest }}.",
    )
}

fn degraded() -> Value {
    alert(
        "ModelDeploymentDegraded",
        "edgewatch_deployment_status{state=\"Degraded\"} == 1",
        60.0,
        "critical",
        "{{ $labels.app }} on {{ $labels.cluster }} is degraded",
        "{{ $labels.app }} ({{ $labels.model }}) on cluster {{ $labels.cluster }} runs the desired digest {{ $labels.desired_digest }} but its pods are not ready past the progress deadline.",
    )
}

fn group(name: &str, rules: Vec<Value>) -> Value {
    json!({"name": name, "file": "<built-in>", "interval": 20.0, "rules": rules})
}

#[test]
fn fleet_group_alone_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let got = builtin_groups(&config(dir.path(), ""));
    let want = vec![group(
        "edgewatch-fleet",
        vec![collector_down("120"), buffer_backlog(), buffer_dropping()],
    )];
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());
}

#[test]
fn fleet_and_deployment_groups_with_a_reconciler() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{}fleet: {{down_after: 90500ms}}\n", reconciler(dir.path()));
    let got = builtin_groups(&config(dir.path(), &extra));
    let want = vec![
        group(
            "edgewatch-fleet",
            vec![collector_down("90.5"), buffer_backlog(), buffer_dropping()],
        ),
        group("edgewatch-deployments", vec![out_of_sync(), degraded()]),
    ];
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());
}

#[test]
fn a_file_rule_of_the_same_name_replaces_a_builtin_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.rules.yml"),
        "groups:\n  - name: mine\n    rules:\n      - alert: EdgeCollectorDown\n        expr: up == 0\n      - alert: ModelDeploymentDegraded\n        expr: up == 0\n",
    )
    .unwrap();
    let extra = format!("{}fleet: {{down_after: 5m}}\n", reconciler(dir.path()));
    let got = builtin_groups(&config(dir.path(), &extra));
    let want = vec![
        group("edgewatch-fleet", vec![buffer_backlog(), buffer_dropping()]),
        group("edgewatch-deployments", vec![out_of_sync()]),
    ];
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());
}

#[test]
fn no_fleet_group_when_every_builtin_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.rules.yml"),
        "groups:\n  - name: mine\n    rules:\n      - alert: EdgeCollectorDown\n        expr: up == 0\n      - alert: EdgeBufferBacklog\n        expr: up == 0\n      - alert: EdgeBufferDropping\n        expr: up == 0\n",
    )
    .unwrap();
    let got = builtin_groups(&config(dir.path(), ""));
    assert_eq!(got, Vec::<Value>::new());
}
