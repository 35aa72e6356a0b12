//! Alerting end to end: the shipped aggregator with a rule file and an `alerting:`
//! section, fed over OTLP, delivering to a webhook receiver on 127.0.0.1.

use edgewatch_testkit::http::Webhook;
use edgewatch_testkit::otlp::post_otlp_json;
use edgewatch_testkit::roles::Aggregator;
use edgewatch_testkit::{eventually, get, now_ms, parse_samples, write};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// One OTLP/JSON gauge point `metric{node="n1"} value`, timestamped now.
async fn push_gauge(agg: &Aggregator, metric: &str, value: f64) {
    let body = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"e2e-alerting"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"{metric}","gauge":{{"dataPoints":[{{"timeUnixNano":"{}","asDouble":{value},"attributes":[{{"key":"node","value":{{"stringValue":"n1"}}}}]}}]}}}}]}}]}}]}}"#,
        now_ms() * 1_000_000
    );
    let (status, text) = post_otlp_json(agg.http_otlp, body).await;
    assert_eq!(status, 200, "{text}");
}

/// The states (`pending`/`firing`) of `alertname` on `/api/v1/alerts`.
async fn api_states(agg: &Aggregator, alertname: &str) -> BTreeSet<String> {
    let (status, body) = get(&agg.url("/api/v1/alerts"))
        .await
        .expect("/api/v1/alerts");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("alerts JSON");
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["alerts"]
        .as_array()
        .expect("data.alerts")
        .iter()
        .filter(|a| a["labels"]["alertname"] == alertname)
        .map(|a| a["state"].as_str().expect("state").to_string())
        .collect()
}

/// The `alertstate`s of `ALERTS{alertname}` on `/federate`.
async fn federated_states(agg: &Aggregator, alertname: &str) -> BTreeSet<String> {
    parse_samples(
        &agg.federate(&format!(r#"ALERTS{{alertname="{alertname}"}}"#))
            .await,
    )
    .iter()
    .map(|s| {
        assert_eq!(s.name, "ALERTS");
        assert_eq!(s.value, 1.0, "{s:?}");
        s.label("alertstate").to_string()
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_files_fire_notify_resolve_and_obey_silences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = Webhook::start().await;
    let rules = dir.path().join("rules.yaml");
    write(
        &rules,
        "groups:\n  - name: e2e\n    interval: 200ms\n    rules:\n      - alert: E2EHot\n        expr: e2e_temp > 30\n        for: 2s\n        labels: {severity: page}\n        annotations: {summary: \"{{ $labels.node }} at {{ $value }}\"}\n      - alert: E2EMuted\n        expr: e2e_muted > 0\n        labels: {severity: page}\n",
    );
    let extra = format!(
        "rule_files: [{}]\nevaluation_interval: 200ms\nalerting:\n  external_url: http://edgewatch.example:9090\n  route:\n    receiver: hook\n    group_by: [alertname]\n    group_wait: 200ms\n    group_interval: 500ms\n    repeat_interval: 1h\n  receivers:\n    - name: hook\n      webhook_configs: [{{url: '{}', send_resolved: true}}]\n",
        rules.display(),
        hook.url()
    );
    let agg = Aggregator::start_with_extra(BIN, dir.path(), &extra).await;
    let client = reqwest::Client::new();

    // A silence for E2EMuted, created before the alert exists.
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "E2EMuted", "isRegex": false}],
        "startsAt": "2020-01-01T00:00:00Z",
        "endsAt": "2100-01-01T00:00:00Z",
        "createdBy": "e2e",
        "comment": "muted by the test"
    });
    let r = client
        .post(agg.url("/api/v1/silences"))
        .json(&silence)
        .send()
        .await
        .expect("post a silence");
    assert_eq!(r.status(), 200);
    let created: serde_json::Value = r.json().await.expect("silence JSON");
    let silence_id = created["silenceID"]
        .as_str()
        .expect("silenceID")
        .to_string();

    push_gauge(&agg, "e2e_temp", 42.0).await;
    push_gauge(&agg, "e2e_muted", 1.0).await;

    // pending (the `for` runs) → firing, on the API and as ALERTS on /federate.
    let seen: Mutex<(Vec<String>, BTreeSet<String>)> = Mutex::default();
    eventually(
        Duration::from_secs(20),
        "E2EHot firing on /api/v1/alerts and /federate",
        || async {
            let api = api_states(&agg, "E2EHot").await;
            let federated = federated_states(&agg, "E2EHot").await;
            let mut seen = seen.lock().expect("seen lock");
            let (api_seen, federate_seen) = &mut *seen;
            for s in api {
                if api_seen.last() != Some(&s) {
                    api_seen.push(s);
                }
            }
            federate_seen.extend(federated);
            api_seen.last().map(String::as_str) == Some("firing")
                && federate_seen.contains("firing")
        },
    )
    .await;
    let (api_seen, federate_seen) = seen.into_inner().expect("seen lock");
    assert_eq!(api_seen, ["pending", "firing"], "states on /api/v1/alerts");
    assert!(
        federate_seen.contains("pending"),
        "ALERTS alertstate=pending on /federate: {federate_seen:?}"
    );
    assert_eq!(
        federated_states(&agg, "E2EHot").await,
        BTreeSet::from(["firing".to_string()])
    );
    assert!(
        api_states(&agg, "E2EMuted").await.contains("firing"),
        "the silenced alert still fires"
    );

    // The firing notification, as Alertmanager's webhook v4 payload.
    let firing = eventually(
        Duration::from_secs(10),
        "the firing notification",
        || async { hook.find("E2EHot", "firing") },
    )
    .await;
    assert_eq!(firing["version"], "4", "{firing}");
    assert_eq!(firing["receiver"], "hook", "{firing}");
    assert_eq!(
        firing["externalURL"], "http://edgewatch.example:9090",
        "{firing}"
    );
    assert!(firing["groupKey"].is_string(), "{firing}");
    assert_eq!(firing["commonLabels"]["severity"], "page", "{firing}");
    assert_eq!(firing["truncatedAlerts"], 0, "{firing}");
    let alerts = firing["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{firing}");
    let a = &alerts[0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["alertname"], "E2EHot");
    assert_eq!(a["labels"]["node"], "n1");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["annotations"]["summary"], "n1 at 42");
    assert!(
        a["startsAt"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{a}"
    );
    assert!(a["fingerprint"].is_string(), "{a}");

    // The condition clears: one resolve.
    push_gauge(&agg, "e2e_temp", 10.0).await;
    let resolved = eventually(
        Duration::from_secs(10),
        "the resolve notification",
        || async { hook.find("E2EHot", "resolved") },
    )
    .await;
    assert_eq!(resolved["alerts"][0]["status"], "resolved", "{resolved}");
    assert!(
        resolved["alerts"][0]["endsAt"]
            .as_str()
            .is_some_and(|s| !s.starts_with("0001")),
        "{resolved}"
    );
    eventually(
        Duration::from_secs(10),
        "E2EHot gone from /api/v1/alerts",
        || async { api_states(&agg, "E2EHot").await.is_empty() },
    )
    .await;

    // E2EMuted has been firing since before E2EHot's `for` elapsed, many group_waits
    // ago: only the silence kept it from the receiver.
    assert_eq!(
        hook.count("E2EMuted", "firing"),
        0,
        "silenced: {:?}",
        hook.bodies()
    );
    let r = client
        .delete(agg.url(&format!("/api/v1/silence/{silence_id}")))
        // State-changing requests say JSON, which a cross-site form cannot.
        .header("content-type", "application/json")
        .send()
        .await
        .expect("delete the silence");
    assert_eq!(r.status(), 200);
    eventually(
        Duration::from_secs(10),
        "E2EMuted delivered once its silence expired",
        || async { hook.count("E2EMuted", "firing") > 0 },
    )
    .await;

    // Several group_intervals after the resolve: still one firing and one resolve.
    assert_eq!(
        hook.count("E2EHot", "firing"),
        1,
        "firing notified exactly once: {:?}",
        hook.bodies()
    );
    assert_eq!(
        hook.count("E2EHot", "resolved"),
        1,
        "resolve notified exactly once: {:?}",
        hook.bodies()
    );
    eventually(
        Duration::from_secs(5),
        "edgewatch_notifications_total to count what the receiver got",
        || async {
            let delivered = agg
                .metrics()
                .await
                .sum(r#"edgewatch_notifications_total{receiver="hook"}"#);
            delivered == hook.bodies().len() as f64
        },
    )
    .await;
}
