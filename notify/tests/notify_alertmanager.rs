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

/// Alerts (as pushed, 2xx) that `am` received: (alertname, resolved).
fn pushed(am: &edgewatch_testkit::http::Recorder) -> std::collections::BTreeSet<(String, bool)> {
    am.delivered()
        .iter()
        .inspect(|r| assert_eq!(r.path, "/api/v2/alerts"))
        .flat_map(|r| r.json().as_array().cloned().unwrap_or_default())
        .map(|a| {
            let ends = chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str().unwrap()).unwrap();
            (
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                ends < chrono::Utc::now(),
            )
        })
        .collect()
}

/// An Alertmanager cluster is listed as several `alertmanager_configs`: every alert
/// goes to each of them (they de-duplicate among themselves), and one that fails for
/// a while neither loses alerts nor holds back the other.
#[tokio::test]
async fn every_alert_is_pushed_to_each_alertmanager_of_a_cluster() {
    use edgewatch_testkit::http::Recorder;
    let am0 = Recorder::start(200, &[]).await;
    let am1 = Recorder::start(200, &[503, 503, 503]).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
route: {{receiver: am, group_by: [alertname]}}
receivers: [{{name: am, alertmanager_configs: [{{url: '{}'}}, {{url: '{}/'}}]}}]
resend_delay: 100ms
eval_interval: 15s
"#,
        am0.url(),
        am1.url()
    );
    let r = start(&yaml, &dir.path().join("state"));
    let t0 = SystemTime::now();
    let firing = |name| alert(&[("alertname", name), ("cluster", "edge-a")], t0, None);
    let both_firing: std::collections::BTreeSet<_> =
        [("A".to_owned(), false), ("B".to_owned(), false)].into();
    eventually(
        Duration::from_secs(15),
        "both alerts firing at both Alertmanagers",
        || async {
            // The rules send every active alert each round.
            r.notifier.send(vec![firing("A"), firing("B")]);
            pushed(&am0).is_superset(&both_firing) && pushed(&am1).is_superset(&both_firing)
        },
    )
    .await;
    assert!(
        am1.requests().iter().filter(|x| x.status == 503).count() == 3,
        "the second Alertmanager failed first"
    );
    let resolved = alert(
        &[("alertname", "A"), ("cluster", "edge-a")],
        t0,
        Some(SystemTime::now()),
    );
    eventually(
        Duration::from_secs(15),
        "the resolve at both Alertmanagers",
        || async {
            r.notifier.send(vec![resolved.clone(), firing("B")]);
            let done = ("A".to_owned(), true);
            pushed(&am0).contains(&done) && pushed(&am1).contains(&done)
        },
    )
    .await;
    r.shutdown().await;
}
