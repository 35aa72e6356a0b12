//! Restart without flapping: alerts firing when the aggregator is stopped
//! (SIGTERM) or killed (SIGKILL) reach no receiver again after the start, not
//! as a resolve and not as a second trigger, while their data has not come
//! back; an alert whose data stays away resolves once `rules.restore_grace`
//! has passed.

use edgewatch_testkit::http::Webhook;
use edgewatch_testkit::otlp::{gauge_request, post_otlp};
use edgewatch_testkit::roles::Aggregator;
use edgewatch_testkit::{always_for, eventually, get, write};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// Long enough for the watch after each start (several group_wait and
/// group_interval periods) to end well inside it on a loaded machine.
const GRACE: Duration = Duration::from_secs(10);
/// How long each start is watched for a notification that must not come.
const WATCH: Duration = Duration::from_secs(4);
const HELD: &str = r#"edgewatch_rule_alerts_held{group="restart"}"#;

/// `state` of `alertname` on `/api/v1/alerts` (empty if absent).
async fn api_state(agg: &Aggregator, alertname: &str) -> String {
    let (status, body) = get(&agg.url("/api/v1/alerts"))
        .await
        .expect("/api/v1/alerts");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("alerts JSON");
    v["data"]["alerts"]
        .as_array()
        .expect("data.alerts")
        .iter()
        .find(|a| a["labels"]["alertname"] == alertname)
        .map(|a| a["state"].as_str().expect("state").to_string())
        .unwrap_or_default()
}

/// The log holds the data of a collector that stays silent across a restart
/// unless it was lost (a corrupt log is moved aside at start): moving it aside
/// here makes the data missing after the start, as it is without a log.
fn lose_log(dir: &Path, n: usize) {
    let wal = dir.join("wal");
    if wal.exists() {
        std::fs::rename(&wal, dir.join(format!("wal.aside-{n}"))).expect("moving the log aside");
    }
}

/// Both alerts notified firing once and never resolved; PushedUp firing on the
/// API and counted as held.
async fn no_second_notification(hook: &Webhook, agg: &Aggregator, what: &str) {
    always_for(WATCH, what, || async {
        hook.count("AlwaysUp", "firing") == 1
            && hook.count("PushedUp", "firing") == 1
            && hook.count("AlwaysUp", "resolved") == 0
            && hook.count("PushedUp", "resolved") == 0
            && api_state(agg, "PushedUp").await == "firing"
    })
    .await;
    assert_eq!(agg.metrics().await.get(HELD), 1.0, "{what}: PushedUp held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_alerts_survive_sigterm_and_sigkill_without_renotifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = Webhook::start().await;
    let rules = dir.path().join("rules.yaml");
    write(
        &rules,
        "groups:\n  - name: restart\n    rules:\n      - alert: AlwaysUp\n        expr: vector(1)\n      - alert: PushedUp\n        expr: e2e_restart_temp >= 0\n",
    );
    let extra = format!(
        "rule_files: [{}]\nevaluation_interval: 200ms\nrules: {{restore_grace: {}s}}\nwal: {{path: {}}}\nalerting:\n  route:\n    receiver: hook\n    group_by: [alertname]\n    group_wait: 200ms\n    group_interval: 500ms\n    repeat_interval: 1h\n  receivers:\n    - name: hook\n      webhook_configs: [{{url: '{}', send_resolved: true}}]\n",
        rules.display(),
        GRACE.as_secs(),
        dir.path().join("wal").display(),
        hook.url()
    );
    let mut agg = Aggregator::start_with_extra(BIN, dir.path(), &extra).await;
    // One point, never resent: PushedUp depends on it, AlwaysUp does not.
    let (status, _) = post_otlp(agg.http_otlp, gauge_request("e2e_restart_temp", "n", 1)).await;
    assert_eq!(status, 200);
    // Counted as delivered by the aggregator too: its notification log is
    // written next, and a stop waits for that (a kill in between may page
    // twice: delivery is at least once).
    eventually(
        Duration::from_secs(20),
        "both alerts notified firing",
        || async {
            hook.count("AlwaysUp", "firing") == 1
                && hook.count("PushedUp", "firing") == 1
                && agg
                    .metrics()
                    .await
                    .get_or_zero("edgewatch_notification_latency_seconds_count")
                    == 2.0
        },
    )
    .await;

    // SIGTERM (asserted clean) and a start without the data.
    agg.proc.stop();
    lose_log(dir.path(), 1);
    agg.restart(dir.path()).await;
    no_second_notification(&hook, &agg, "no resolve, no second trigger after SIGTERM").await;
    assert!(
        agg.federate(r#"ALERTS{alertname="PushedUp",alertstate="firing"}"#)
            .await
            .contains("PushedUp"),
        "the held alert is firing in ALERTS"
    );

    // SIGKILL while held, and a start without the data: a new grace.
    agg.proc.kill();
    lose_log(dir.path(), 2);
    agg.restart(dir.path()).await;
    no_second_notification(&hook, &agg, "no resolve, no second trigger after SIGKILL").await;

    // The grace ends without the data: PushedUp resolves, once; AlwaysUp fires on.
    eventually(
        GRACE + Duration::from_secs(10),
        "PushedUp resolved after the restore grace",
        || async { hook.count("PushedUp", "resolved") == 1 },
    )
    .await;
    always_for(
        Duration::from_secs(2),
        "one resolve, no other notification",
        || async {
            hook.count("PushedUp", "resolved") == 1
                && hook.count("PushedUp", "firing") == 1
                && hook.count("AlwaysUp", "firing") == 1
                && hook.count("AlwaysUp", "resolved") == 0
        },
    )
    .await;
    assert_eq!(api_state(&agg, "AlwaysUp").await, "firing");
    assert_eq!(api_state(&agg, "PushedUp").await, "");
    assert_eq!(agg.metrics().await.get(HELD), 0.0);
    agg.proc.stop();
}
