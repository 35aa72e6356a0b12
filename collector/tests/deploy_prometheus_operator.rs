//! `deploy/prometheus-operator`: a ServiceMonitor, a PodMonitor, a PrometheusRule and the
//! Grafana dashboards ConfigMap. kubernetes-validate has no schema for the Prometheus
//! Operator's kinds (deploy_hardening.rs only renders them), so they are checked here
//! against the shape of the operator's published CRDs (monitoring.coreos.com/v1: the
//! fields each object may set, those it must), and against what `deploy/` renders: the
//! monitors select the aggregator's Service and the collectors' pods by their labels and
//! name ports they expose. The PrometheusRule is the built-in rules
//! (aggregator/src/rules/builtin/*.yaml) and passes `promtool check rules`; the dashboards
//! ConfigMap holds every dashboard of dashboards/.

use edgewatch_testkit::kustomize::{generated, of_kind, render, repo_root, strs_at};
use edgewatch_testkit::peers::{require, PROMTOOL};
use serde_yaml_ng::Value;
use std::process::Command;

const LAYOUT: &str = "deploy/prometheus-operator";

/// monitoring.coreos.com/v1 field names (prometheus-operator's CRDs, v0.8x).
const MONITOR_SPEC: &[&str] = &[
    "attachMetadata",
    "bodySizeLimit",
    "endpoints",
    "jobLabel",
    "keepDroppedTargets",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "namespaceSelector",
    "podMetricsEndpoints",
    "podTargetLabels",
    "sampleLimit",
    "scrapeClass",
    "scrapeProtocols",
    "selector",
    "selectorMechanism",
    "targetLabels",
    "targetLimit",
];
const ENDPOINT: &[&str] = &[
    "authorization",
    "basicAuth",
    "bearerTokenSecret",
    "enableHttp2",
    "filterRunning",
    "followRedirects",
    "honorLabels",
    "honorTimestamps",
    "interval",
    "metricRelabelings",
    "noProxy",
    "oauth2",
    "params",
    "path",
    "port",
    "portNumber",
    "proxyUrl",
    "relabelings",
    "scheme",
    "scrapeTimeout",
    "targetPort",
    "tlsConfig",
    "trackTimestampsStaleness",
];
const TLS_CONFIG: &[&str] = &[
    "ca",
    "cert",
    "insecureSkipVerify",
    "keySecret",
    "maxVersion",
    "minVersion",
    "serverName",
];
const SECRET_KEY: &[&str] = &["name", "key", "optional"];
const RULE_GROUP: &[&str] = &[
    "name",
    "interval",
    "rules",
    "limit",
    "partial_response_strategy",
    "query_offset",
    "labels",
];
const RULE: &[&str] = &[
    "alert",
    "record",
    "expr",
    "for",
    "keep_firing_for",
    "labels",
    "annotations",
];

/// Every key of the mapping `v` is in `allowed`, every one of `required` is set.
fn shape(what: &str, v: &Value, allowed: &[&str], required: &[&str]) {
    let map = v
        .as_mapping()
        .unwrap_or_else(|| panic!("{what}: not a mapping"));
    for key in map.keys() {
        let key = key.as_str().expect("string keys");
        assert!(allowed.contains(&key), "{what}: unknown field {key}");
    }
    for key in required {
        assert!(!v[*key].is_null(), "{what}: {key} is required");
    }
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "{LAYOUT}: one {kind}");
    assert_eq!(
        found[0]["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1"),
        "{kind}"
    );
    found[0]
}

/// An endpoint (ServiceMonitor or PodMonitor) and its TLS and basic-auth references.
fn endpoint_shape(what: &str, e: &Value) {
    shape(what, e, ENDPOINT, &["port"]);
    assert_eq!(e["scheme"].as_str(), Some("https"), "{what}: TLS listeners");
    shape(
        &format!("{what}.tlsConfig"),
        &e["tlsConfig"],
        TLS_CONFIG,
        &["ca", "serverName"],
    );
    shape(
        &format!("{what}.tlsConfig.ca.secret"),
        &e["tlsConfig"]["ca"]["secret"],
        SECRET_KEY,
        &["name", "key"],
    );
    if !e["basicAuth"].is_null() {
        for part in ["username", "password"] {
            shape(
                &format!("{what}.basicAuth.{part}"),
                &e["basicAuth"][part],
                SECRET_KEY,
                &["name", "key"],
            );
        }
    }
}

/// `selector.matchLabels` are all among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn the_service_monitor_scrapes_the_aggregator_service() {
    let docs = render(LAYOUT);
    let sm = one(&docs, "ServiceMonitor");
    let spec = &sm["spec"];
    shape(
        "ServiceMonitor.spec",
        spec,
        MONITOR_SPEC,
        &["selector", "endpoints"],
    );
    let aggregator = render("deploy/aggregator");
    let service = generated(&aggregator, "Service", "edgewatch-aggregator");
    assert!(
        selects(&spec["selector"], &service["metadata"]["labels"]),
        "selects the Service"
    );
    assert_eq!(
        spec["namespaceSelector"]["matchNames"][0], service["metadata"]["namespace"],
        "in the Service's namespace"
    );
    let ports = strs_at(&service["spec"]["ports"], |p| &p["name"]);
    let endpoints = spec["endpoints"].as_sequence().expect("endpoints");
    let paths = strs_at(&spec["endpoints"], |e| &e["path"]);
    assert_eq!(paths, vec!["/metrics", "/federate"]);
    for e in endpoints {
        endpoint_shape("ServiceMonitor.endpoints[]", e);
        assert!(
            ports.contains(&e["port"].as_str().unwrap()),
            "port {:?}",
            e["port"]
        );
        assert!(
            !e["basicAuth"].is_null(),
            "the aggregator's HTTP API needs basic auth"
        );
    }
    let federate = &endpoints[1];
    assert_eq!(
        federate["honorLabels"].as_bool(),
        Some(true),
        "keeps the edge's labels"
    );
    assert!(
        federate["params"]["match[]"].is_sequence(),
        "/federate needs match[]"
    );
}

#[test]
fn the_pod_monitor_scrapes_every_collector() {
    let docs = render(LAYOUT);
    let pm = one(&docs, "PodMonitor");
    let spec = &pm["spec"];
    shape(
        "PodMonitor.spec",
        spec,
        MONITOR_SPEC,
        &["selector", "podMetricsEndpoints"],
    );
    let collector = render("deploy/collector");
    let ds = generated(&collector, "DaemonSet", "edgewatch-collector");
    let template = &ds["spec"]["template"];
    assert!(
        selects(&spec["selector"], &template["metadata"]["labels"]),
        "selects the pods"
    );
    assert_eq!(
        spec["namespaceSelector"]["matchNames"][0],
        ds["metadata"]["namespace"]
    );
    let ports = strs_at(&template["spec"]["containers"][0]["ports"], |p| &p["name"]);
    for e in spec["podMetricsEndpoints"]
        .as_sequence()
        .expect("podMetricsEndpoints")
    {
        endpoint_shape("PodMonitor.podMetricsEndpoints[]", e);
        assert!(
            ports.contains(&e["port"].as_str().unwrap()),
            "port {:?}",
            e["port"]
        );
    }
}

/// The built-in rule groups as the aggregator loads them with `fleet.down_after: 2m`.
fn builtin_groups() -> Value {
    let dir = repo_root().join("aggregator/src/rules/builtin");
    let mut groups = Vec::new();
    for file in ["fleet.yaml", "deployments.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("built-in rules");
        let doc: Value = serde_yaml_ng::from_str(&text.replace("${fleet.down_after}", "120"))
            .expect("built-in rules YAML");
        groups.extend(doc["groups"].as_sequence().expect("groups").iter().cloned());
    }
    Value::Sequence(groups)
}

#[test]
fn the_prometheus_rule_is_the_builtin_rules_and_promtool_accepts_it() {
    let docs = render(LAYOUT);
    let rule = one(&docs, "PrometheusRule");
    shape(
        "PrometheusRule.spec",
        &rule["spec"],
        &["groups"],
        &["groups"],
    );
    let groups = &rule["spec"]["groups"];
    let expected = builtin_groups();
    assert!(
        *groups == expected,
        "deploy/prometheus-operator/prometheusrule.yaml drifted from the built-in rules; its spec.groups should be:\n{}",
        serde_yaml_ng::to_string(&expected).unwrap()
    );
    for g in groups.as_sequence().unwrap() {
        shape("PrometheusRule group", g, RULE_GROUP, &["name"]);
        for r in g["rules"].as_sequence().expect("rules") {
            shape("PrometheusRule rule", r, RULE, &["expr"]);
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yaml");
    let mut doc = serde_yaml_ng::Mapping::new();
    doc.insert("groups".into(), groups.clone());
    edgewatch_testkit::write(&file, &serde_yaml_ng::to_string(&doc).unwrap());
    let out = Command::new(require(PROMTOOL, "prometheus"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dashboards_config_map_holds_every_dashboard_for_the_sidecar() {
    let docs = render(LAYOUT);
    let cm = generated(&docs, "ConfigMap", "edgewatch-dashboards");
    assert_eq!(
        cm["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1"),
        "Grafana's sidecar label"
    );
    let data = cm["data"].as_mapping().expect("data");
    let mut on_disk: Vec<String> = std::fs::read_dir(repo_root().join("dashboards"))
        .expect("dashboards/")
        .map(|e| e.expect("entry").file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut keys: Vec<String> = data
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, on_disk, "every dashboard of dashboards/");
    for (name, text) in data {
        let dashboard: serde_json::Value = serde_json::from_str(text.as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert!(dashboard["uid"].is_string(), "{name:?}: uid");
    }
}
