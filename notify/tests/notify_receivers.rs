//! Receivers against local HTTP servers that validate every request against the
//! published schema: PagerDuty Events v2, Dynatrace Events v2, Alertmanager webhook v4.

mod notify_support;

use edgewatch_testkit::{always_for, eventually, Metrics};
use notify_support::*;
use std::time::{Duration, SystemTime};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn pd_config(url: &str, extra: &str) -> String {
    format!(
        r#"
external_url: http://edgewatch.test:9090
route:
  receiver: pd
  group_by: [alertname, cluster]
  group_wait: 50ms
  group_interval: 200ms
  repeat_interval: 1h
receivers:
  - name: pd
    pagerduty_configs:
      - routing_key: {KEY}
        url: {url}/v2/enqueue
        insecure: true
        severity: '{{{{ .CommonLabels.severity }}}}'
delivery:
  initial_backoff: 50ms
  max_backoff: 200ms
  max_retry_duration: 5s
{extra}"#
    )
}

#[tokio::test]
async fn pagerduty_one_incident_one_trigger_one_resolve() {
    let pd = Mock::start(Kind::PagerDuty, 202, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let r = start(&pd_config(&pd.url(), ""), dir.path());
    let t0 = SystemTime::now();
    let labels = |node| {
        vec![
            ("alertname", "ModelDown"),
            ("cluster", "edge-a"),
            ("severity", "critical"),
            ("node", node),
        ]
    };
    // A second alert joins the group during its first group_wait: sent before the
    // dispatcher task can run (the test runtime has one thread), so in the first flush.
    r.notifier.send(vec![alert(&labels("n1"), t0, None)]);
    let firing = vec![
        alert(&labels("n1"), t0, None),
        alert(&labels("n2"), t0, None),
    ];
    r.notifier.send(firing.clone());
    // The rules send every round; here each poll is a round.
    eventually(Duration::from_secs(3), "the PagerDuty trigger", || async {
        r.notifier.send(firing.clone());
        !pd.delivered().is_empty()
    })
    .await;
    // Several group_intervals (200 ms): the unchanged group's flushes send nothing.
    always_for(
        Duration::from_millis(800),
        "one trigger while the rules re-send the incident",
        || async {
            r.notifier.send(firing.clone());
            pd.delivered().len() == 1
        },
    )
    .await;
    let d = pd.delivered();
    assert_eq!(d.len(), 1, "one trigger for the incident: {d:?}");
    let trig = &d[0].body;
    assert_eq!(trig["event_action"], "trigger");
    assert_eq!(trig["payload"]["severity"], "critical");
    assert_eq!(trig["payload"]["custom_details"]["num_firing"], 2);
    assert_eq!(trig["client_url"], "http://edgewatch.test:9090");
    // resolved, and re-sent resolved for a few rounds as Prometheus does
    let t1 = SystemTime::now();
    let resolved = vec![
        alert(&labels("n1"), t0, Some(t1)),
        alert(&labels("n2"), t0, Some(t1)),
    ];
    eventually(
        Duration::from_secs(3),
        "two PagerDuty deliveries",
        || async {
            r.notifier.send(resolved.clone());
            pd.delivered().len() >= 2
        },
    )
    .await;
    always_for(
        Duration::from_millis(800),
        "no event after the resolve while the rules re-send it",
        || async {
            r.notifier.send(resolved.clone());
            pd.delivered().len() == 2
        },
    )
    .await;
    let d = pd.delivered();
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[1].body["event_action"], "resolve");
    assert_eq!(d[1].body["dedup_key"], trig["dedup_key"]);
    assert_eq!(d[1].body["routing_key"], KEY);
    pd.assert_valid();
    assert_eq!(
        Metrics::from_registry(&r.registry)
            .sum(r#"edgewatch_notifications_total{receiver="pd",integration="pagerduty"}"#),
        2.0
    );
    r.shutdown().await;
}

#[tokio::test]
async fn pagerduty_400_is_not_retried() {
    let pd = Mock::start(Kind::PagerDuty, 202, &[400]).await;
    let dir = tempfile::tempdir().unwrap();
    // One flush only: the next group_interval would rightly try the group again.
    let config = pd_config(&pd.url(), "").replace("group_interval: 200ms", "group_interval: 1h");
    let r = start(&config, dir.path());
    r.notifier.send(vec![alert(
        &[("alertname", "A"), ("severity", "warning")],
        SystemTime::now(),
        None,
    )]);
    eventually(
        Duration::from_secs(3),
        "one bad_request failure",
        || async {
            Metrics::from_registry(&r.registry).sum_or_zero(
                r#"edgewatch_notifications_failed_total{receiver="pd",reason="bad_request"}"#,
            ) == 1.0
        },
    )
    .await;
    // Longer than the delivery backoff (50-200ms): a retry would have come by then.
    always_for(
        Duration::from_millis(600),
        "one request: a 400 is never retried within the flush",
        || async { pd.requests().len() == 1 },
    )
    .await;
    r.shutdown().await;
}

#[tokio::test]
async fn pagerduty_429_and_500_are_retried_then_delivered_once() {
    let pd = Mock::start(Kind::PagerDuty, 202, &[429, 500, 503]).await;
    let dir = tempfile::tempdir().unwrap();
    let r = start(&pd_config(&pd.url(), ""), dir.path());
    let a = alert(
        &[("alertname", "A"), ("severity", "info")],
        SystemTime::now(),
        None,
    );
    // The rules re-send the alert every round (here: every poll) while delivery retries.
    eventually(Duration::from_secs(5), "a PagerDuty delivery", || async {
        r.notifier.send(vec![a.clone()]);
        !pd.delivered().is_empty()
    })
    .await;
    // Several group_intervals (200 ms): a delivered, unchanged group is not sent again.
    always_for(
        Duration::from_millis(800),
        "no request after the delivery",
        || async {
            r.notifier.send(vec![a.clone()]);
            pd.requests().len() == 4
        },
    )
    .await;
    let reqs = pd.requests();
    let codes: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(codes, vec![429, 500, 503, 202]);
    assert!(
        reqs.windows(2).all(|w| w[0].body == w[1].body),
        "the same event is retried"
    );
    pd.assert_valid();
    assert_eq!(
        // A failure series appears with its first failure: none means none failed.
        Metrics::from_registry(&r.registry).sum_or_zero("edgewatch_notifications_failed_total"),
        0.0
    );
    assert_eq!(
        Metrics::from_registry(&r.registry)
            .sum(r#"edgewatch_notification_retries_total{integration="pagerduty"}"#),
        3.0
    );
    r.shutdown().await;
}

#[tokio::test]
async fn pagerduty_retries_exhausted_is_counted() {
    let pd = Mock::start(Kind::PagerDuty, 500, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        pd_config(&pd.url(), "").replace("max_retry_duration: 5s", "max_retry_duration: 300ms");
    let r = start(&yaml, dir.path());
    r.notifier.send(vec![alert(
        &[("alertname", "A"), ("severity", "info")],
        SystemTime::now(),
        None,
    )]);
    eventually(
        Duration::from_secs(3),
        "retries to be exhausted",
        || async {
            Metrics::from_registry(&r.registry)
                .sum_or_zero(r#"edgewatch_notifications_failed_total{reason="retries_exhausted"}"#)
                >= 1.0
        },
    )
    .await;
    assert!(pd.requests().len() >= 2);
    r.shutdown().await;
}

#[tokio::test]
async fn dynatrace_event_refreshed_before_timeout_and_closed_with_end_time() {
    let dt = Mock::start(Kind::Dynatrace, 201, &[500]).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
route:
  receiver: dt
  group_by: [alertname]
  group_wait: 50ms
  group_interval: 1h
  repeat_interval: 4h
receivers:
  - name: dt
    dynatrace_configs:
      - url: {}/
        insecure: true
        api_token: {DT_TOKEN}
        timeout: 2m
        entity_selector: 'type(HOST),entityName("{{{{ .CommonLabels.node }}}}")'
        properties: {{team: '{{{{ .CommonLabels.team }}}}'}}
delivery: {{initial_backoff: 50ms}}
"#,
        dt.url()
    );
    let r = start(&yaml, dir.path());
    // a controllable clock: the keep-alive comes from the Dynatrace timeout, not from real minutes
    let offset = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let o = offset.clone();
    r.notifier.set_clock(move || {
        SystemTime::now() + Duration::from_secs(o.load(std::sync::atomic::Ordering::Relaxed))
    });
    let t0 = SystemTime::now();
    let labels = [("alertname", "GpuHot"), ("node", "n7"), ("team", "ml")];
    r.notifier.send(vec![alert(&labels, t0, None)]);
    eventually(Duration::from_secs(3), "one Dynatrace delivery", || async {
        dt.delivered().len() == 1
    })
    .await;
    let first = dt.delivered()[0].body.clone();
    assert_eq!(first["eventType"], "CUSTOM_ALERT");
    assert_eq!(first["timeout"], 2);
    assert_eq!(first["entitySelector"], "type(HOST),entityName(\"n7\")");
    assert_eq!(first["properties"]["team"], "ml");
    assert!(first.get("endTime").is_none());
    // 91 s later (timeout 2m → re-sent after 90 s), still firing: re-sent, same event
    offset.store(91, std::sync::atomic::Ordering::Relaxed);
    r.notifier.send(vec![alert(&labels, t0, None)]);
    eventually(Duration::from_secs(3), "the Dynatrace re-send", || async {
        dt.delivered().len() == 2
    })
    .await;
    let second = dt.delivered()[1].body.clone();
    assert_eq!(second, first);
    // resolved: the same event with endTime
    let end = SystemTime::now() + Duration::from_secs(95);
    offset.store(100, std::sync::atomic::Ordering::Relaxed);
    r.notifier.send(vec![alert(&labels, t0, Some(end))]);
    // group_interval is 1h: a resolve waits for the next flush, like Alertmanager; the
    // next flush is the keep-alive one, 90 s after the last send
    offset.store(200, std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(3), "the Dynatrace resolve", || async {
        dt.delivered().len() == 3
    })
    .await;
    let last = dt.delivered()[2].body.clone();
    let end_ms = end
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(last["endTime"].as_i64(), Some(end_ms));
    assert_eq!(last["title"], first["title"]);
    assert_eq!(last["properties"], first["properties"]);
    dt.assert_valid();
    r.shutdown().await;
}

#[tokio::test]
async fn webhook_v4_payload_truncation_and_send_resolved() {
    let hook = Mock::start(Kind::Webhook, 200, &[]).await;
    let quiet = Mock::start(Kind::Webhook, 200, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
external_url: http://edgewatch.test:9090
route:
  receiver: hook
  group_by: ['...']
  group_wait: 50ms
  group_interval: 150ms
  routes:
    - matchers: ['team="ml"']
      group_by: [team]
      receiver: hook
      continue: true
    - matchers: ['team="ml"']
      group_by: [team]
      receiver: quiet
receivers:
  - name: hook
    webhook_configs: [{{url: {}/hook, max_alerts: 2}}]
  - name: quiet
    webhook_configs: [{{url: {}/quiet, send_resolved: false}}]
"#,
        hook.url(),
        quiet.url()
    );
    let r = start(&yaml, dir.path());
    let t0 = SystemTime::now();
    let alerts: Vec<_> = (0..3)
        .map(|i| {
            alert(
                &[
                    ("alertname", "Slow"),
                    ("team", "ml"),
                    ("pod", &format!("p{i}")),
                ],
                t0,
                None,
            )
        })
        .collect();
    r.notifier.send(alerts.clone());
    eventually(
        Duration::from_secs(3),
        "one delivery to each webhook",
        || async { hook.delivered().len() == 1 && quiet.delivered().len() == 1 },
    )
    .await;
    let p = &hook.delivered()[0].body;
    assert_eq!(p["version"], "4");
    assert_eq!(p["status"], "firing");
    assert_eq!(p["receiver"], "hook");
    assert_eq!(p["groupKey"], r#"{}/{team="ml"}:{team="ml"}"#);
    assert_eq!(p["groupLabels"], serde_json::json!({"team": "ml"}));
    assert_eq!(
        p["commonLabels"],
        serde_json::json!({"alertname": "Slow", "team": "ml"})
    );
    assert_eq!(p["truncatedAlerts"], 1);
    assert_eq!(p["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(p["externalURL"], "http://edgewatch.test:9090");
    // all resolved: hook gets "resolved", quiet (send_resolved: false) nothing
    let t1 = SystemTime::now();
    let resolved: Vec<_> = alerts
        .iter()
        .cloned()
        .map(|mut a| {
            a.ends_at = Some(t1);
            a
        })
        .collect();
    r.notifier.send(resolved);
    eventually(
        Duration::from_secs(3),
        "the second webhook delivery",
        || async { hook.delivered().len() == 2 },
    )
    .await;
    // Several group_intervals (150 ms): the resolved group is gone, and `quiet` does
    // not send resolved notifications.
    always_for(
        Duration::from_millis(600),
        "no delivery after the resolve, none to quiet",
        || async { hook.delivered().len() == 2 && quiet.delivered().len() == 1 },
    )
    .await;
    assert_eq!(hook.delivered()[1].body["status"], "resolved");
    hook.assert_valid();
    quiet.assert_valid();
    r.shutdown().await;
}

#[tokio::test]
async fn silences_via_api_mute_and_unmute() {
    use tower::ServiceExt;
    let hook = Mock::start(Kind::Webhook, 200, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
route: {{receiver: hook, group_by: [alertname], group_wait: 50ms, group_interval: 150ms}}
receivers: [{{name: hook, webhook_configs: [{{url: {}/hook}}]}}]
inhibit_rules:
  - source_matchers: ['alertname="NodeDown"']
    target_matchers: ['alertname="ModelDown"']
    equal: [node]
"#,
        hook.url()
    );
    let r = start(&yaml, dir.path());
    let app = r.notifier.router();
    let now = chrono::Utc::now();
    let body = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "Model.*", "isRegex": true}],
        "startsAt": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "ops", "comment": "rollout"
    });
    let req = axum::http::Request::post("/api/v1/silences")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    let id = v["silenceID"].as_str().unwrap().to_string();
    // invalid silence → 400
    let bad = axum::http::Request::post("/api/v1/silences")
        .body(axum::body::Body::from("{\"matchers\":[]}"))
        .unwrap();
    assert_eq!(app.clone().oneshot(bad).await.unwrap().status(), 400);

    let t0 = SystemTime::now();
    let model = alert(&[("alertname", "ModelDown"), ("node", "n1")], t0, None);
    // Past group_wait and a few group_intervals (50 + 150 ms), the rules re-sending
    // the alert every round (here: every poll).
    always_for(
        Duration::from_millis(600),
        "silenced: no request",
        || async {
            r.notifier.send(vec![model.clone()]);
            hook.requests().is_empty()
        },
    )
    .await;
    let list = app
        .clone()
        .oneshot(
            axum::http::Request::get("/api/v1/silences")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(list.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v[0]["status"]["state"], "active");
    // expire it → notified
    let del = axum::http::Request::delete(format!("/api/v1/silence/{id}"))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.clone().oneshot(del).await.unwrap().status(), 200);
    r.notifier.send(vec![model.clone()]);
    eventually(Duration::from_secs(3), "one webhook delivery", || async {
        hook.delivered().len() == 1
    })
    .await;
    // inhibition: NodeDown on the same node inhibits a new ModelDown on n1, not one on n2
    let node = alert(&[("alertname", "NodeDown"), ("node", "n1")], t0, None);
    let m2 = alert(&[("alertname", "ModelDown"), ("node", "n2")], t0, None);
    let m3 = alert(
        &[("alertname", "ModelDown"), ("node", "n1"), ("pod", "x")],
        t0,
        None,
    );
    let all = vec![model.clone(), node, m2, m3];
    // m2 and m3 join the notified ModelDown group: both decided at its next flush.
    eventually(Duration::from_secs(3), "m2 notified", || async {
        r.notifier.send(all.clone());
        notified(&hook, |a| a["labels"]["node"] == "n2")
    })
    .await;
    // Over a few more group_intervals (150 ms) too.
    always_for(
        Duration::from_millis(600),
        "m3 inhibited by NodeDown{node=n1}",
        || async {
            r.notifier.send(all.clone());
            !notified(&hook, |a| a["labels"]["pod"] == "x")
        },
    )
    .await;
    let groups = app
        .oneshot(
            axum::http::Request::get("/api/v1/alerts/groups")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(groups.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(v.to_string().contains("suppressed"));
    hook.assert_valid();
    r.shutdown().await;
}

/// Whether an alert matching `pred` was in any delivered notification.
fn notified(hook: &Mock, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
    hook.delivered()
        .iter()
        .flat_map(|r| r.body["alerts"].as_array().unwrap().clone())
        .any(|a| pred(&a))
}
