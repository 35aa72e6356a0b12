//! Pushing to a real Alertmanager (Debian `prometheus-alertmanager`), which groups and
//! delivers to a test webhook: firing, then resolved. A missing binary fails the test
//! (`scripts/test` installs it).

mod notify_support;

use edgewatch_testkit::peers::Alertmanager;
use edgewatch_testkit::{always_for, eventually, Metrics};
use notify_support::*;
use std::time::{Duration, SystemTime};

#[tokio::test]
async fn real_alertmanager_receives_pushes_and_delivers() {
    let hook = Mock::start(Kind::Webhook, 200, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(
        dir.path(),
        &format!(
            "route: {{receiver: hook, group_by: [alertname], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}}\n\
             receivers: [{{name: hook, webhook_configs: [{{url: '{}/am-hook', send_resolved: true}}]}}]\n",
            hook.url()
        ),
    )
    .await;
    let port = am.port;
    let client = reqwest::Client::new();

    let yaml = format!(
        r#"
route: {{receiver: am, group_by: [alertname]}}
receivers: [{{name: am, alertmanager_configs: [{{url: 'http://127.0.0.1:{port}/'}}]}}]
resend_delay: 200ms
eval_interval: 15s
"#
    );
    let state = dir.path().join("state");
    let r = start(&yaml, &state);
    let t0 = SystemTime::now();
    let firing = alert(
        &[("alertname", "ModelDown"), ("cluster", "edge-a")],
        t0,
        None,
    );
    r.notifier.send(vec![firing.clone()]);
    eventually(
        Duration::from_secs(15),
        "a firing notification from Alertmanager",
        || async {
            hook.delivered()
                .iter()
                .any(|x| x.body["status"] == "firing")
        },
    )
    .await;
    // Alertmanager holds it with endsAt = now + 4m
    let alerts: serde_json::Value = client
        .get(format!("http://127.0.0.1:{port}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alerts[0]["labels"]["alertname"], "ModelDown");
    assert_eq!(alerts[0]["status"]["state"], "active");
    let ends = chrono::DateTime::parse_from_rfc3339(alerts[0]["endsAt"].as_str().unwrap()).unwrap();
    let left = ends.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!(
        (200..=241).contains(&left),
        "endsAt = now + 4*max(eval_interval,1m): {left}s"
    );
    // periodic re-sends while firing (no duplicate notifications downstream); the rules
    // send every round, here every poll
    let pushes = || {
        Metrics::from_registry(&r.registry)
            .sum(r#"edgewatch_notifications_total{integration="alertmanager"}"#)
    };
    let first_pushes = pushes();
    eventually(
        Duration::from_secs(5),
        "a re-send pushed to Alertmanager (resend_delay 200ms)",
        || async {
            r.notifier.send(vec![firing.clone()]);
            pushes() > first_pushes
        },
    )
    .await;
    // Longer than Alertmanager's group_interval (1s): a duplicate would come at its flush.
    always_for(
        Duration::from_millis(1500),
        "one firing notification from Alertmanager while the alert is re-sent",
        || async {
            r.notifier.send(vec![firing.clone()]);
            hook.delivered()
                .iter()
                .filter(|x| x.body["status"] == "firing")
                .count()
                == 1
        },
    )
    .await;
    let resolved = alert(
        &[("alertname", "ModelDown"), ("cluster", "edge-a")],
        t0,
        Some(SystemTime::now()),
    );
    r.notifier.send(vec![resolved]);
    eventually(
        Duration::from_secs(15),
        "a resolved notification from Alertmanager",
        || async {
            hook.delivered()
                .iter()
                .any(|x| x.body["status"] == "resolved")
        },
    )
    .await;
    let d = hook.delivered();
    assert_eq!(
        d.iter().filter(|x| x.body["status"] == "firing").count(),
        1,
        "{d:?}"
    );
    let last = d.iter().find(|x| x.body["status"] == "resolved").unwrap();
    assert_eq!(last.body["alerts"][0]["labels"]["cluster"], "edge-a");
    assert_eq!(last.body["alerts"][0]["generatorURL"], firing.generator_url);
    // the real Alertmanager's webhook payload passes our v4 validator too
    hook.assert_valid();
    assert!(
        Metrics::from_registry(&r.registry)
            .sum(r#"edgewatch_notifications_total{integration="alertmanager"}"#)
            >= 2.0
    );
    r.shutdown().await;
}
