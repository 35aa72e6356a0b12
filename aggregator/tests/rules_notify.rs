//! Rules → notifier → webhook: a firing alert is delivered once, its resolve follows.

#[path = "notify_support/mod.rs"]
mod notify_support;

use std::sync::Arc;
use std::time::Duration;

use edgewatch_aggregator::rules::RuleEngine;
use edgewatch_aggregator::store::{MetricType, Store, StoreOptions};
use edgewatch_testkit::eventually;
use notify_support::*;
use prometheus::Registry;

#[tokio::test]
async fn rule_alerts_reach_a_webhook() {
    let hook = Mock::start(Kind::Webhook, 200, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.rules.yml"),
        "groups:\n  - name: g\n    interval: 100ms\n    rules:\n      - alert: Hot\n        expr: temp > 30\n        labels: {severity: page}\n        annotations: {summary: \"{{ $labels.node }} at {{ $value }}\"}\n",
    )
    .unwrap();
    let yaml = format!(
        "http: {{listen: \"127.0.0.1:0\"}}\nstate: {{path: \"{}\"}}\nrule_files: [\"{}/*.rules.yml\"]\n",
        dir.path().join("rules-state").display(),
        dir.path().display()
    );
    let cfg: edgewatch_config::AggregatorConfig =
        edgewatch_config::parse(&yaml, "agg.yml").unwrap();
    let notify_dir = dir.path().join("notify");
    let running = start(
        &format!(
            "route: {{receiver: hook, group_by: [alertname], group_wait: 50ms, group_interval: 200ms, repeat_interval: 1h}}\n\
             receivers: [{{name: hook, webhook_configs: [{{url: '{}/hook', send_resolved: true}}]}}]\n",
            hook.url()
        ),
        &notify_dir,
    );
    let store = Arc::new(Store::new(StoreOptions::default(), &Registry::new()));
    let db = sled::open(dir.path().join("rules-state")).unwrap();
    let engine = RuleEngine::load(&cfg, store.clone(), &db, &Registry::new()).unwrap();
    let fam = store.family("temp", MetricType::Gauge, "", "");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let t = now();
    store.write(fam, "temp", &[("node", "n1")], 42.0, t, t);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(engine.run(Some(running.notifier.clone()), stop.clone()));

    eventually(Duration::from_secs(5), "a webhook notification", || async {
        !hook.delivered().is_empty()
    })
    .await;
    let first = &hook.delivered()[0].body;
    assert_eq!(first["status"], "firing");
    assert_eq!(first["alerts"][0]["labels"]["alertname"], "Hot");
    assert_eq!(first["alerts"][0]["labels"]["severity"], "page");
    assert_eq!(first["alerts"][0]["annotations"]["summary"], "n1 at 42");

    let t = now();
    store.write(fam, "temp", &[("node", "n1")], 10.0, t, t);
    eventually(
        Duration::from_secs(5),
        "a resolved notification",
        || async {
            hook.delivered()
                .iter()
                .any(|r| r.body["status"] == "resolved")
        },
    )
    .await;
    let firing = hook
        .delivered()
        .iter()
        .filter(|r| r.body["status"] == "firing")
        .count();
    assert_eq!(firing, 1, "paged more than once: {:?}", hook.requests());
    hook.assert_valid();
    stop.cancel();
    task.await.unwrap();
    running.shutdown().await;
}
