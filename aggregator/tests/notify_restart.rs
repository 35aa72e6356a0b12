//! The notification log survives a restart: a still-firing group is not paged again
//! before repeat_interval, and a resolve that was pending is still delivered.

mod notify_support;

use edgewatch_testkit::eventually;
use notify_support::*;
use std::time::{Duration, SystemTime};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn config(url: &str) -> String {
    format!(
        r#"
route:
  receiver: pd
  group_by: [alertname]
  group_wait: 50ms
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: pd
    pagerduty_configs: [{{routing_key: {KEY}, url: {url}/v2/enqueue}}]
"#
    )
}

#[tokio::test]
async fn restart_neither_repages_nor_loses_the_resolve() {
    let pd = Mock::start(Kind::PagerDuty, 202, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let firing = alert(&[("alertname", "ModelDown"), ("node", "n1")], t0, None);

    // 1st life: paged once
    let r = start(&config(&pd.url()), dir.path());
    r.notifier.send(vec![firing.clone()]);
    eventually(Duration::from_secs(3), "one PagerDuty delivery", || async {
        pd.delivered().len() == 1
    })
    .await;
    r.shutdown().await;

    // 2nd life: the rules keep sending the firing alert; no second trigger
    let r = start(&config(&pd.url()), dir.path());
    for _ in 0..20 {
        r.notifier.send(vec![firing.clone()]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pd.delivered().len(),
        1,
        "re-paged after restart: {:?}",
        pd.requests()
    );
    // the alert resolves; we stop before the group's next flush (group_interval 5 s)
    let resolved = alert(
        &[("alertname", "ModelDown"), ("node", "n1")],
        t0,
        Some(SystemTime::now()),
    );
    r.notifier.send(vec![resolved]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.shutdown().await;
    assert_eq!(pd.delivered().len(), 1);

    // 3rd life: nobody sends anything; the pending resolve is delivered from state
    let r = start(&config(&pd.url()), dir.path());
    eventually(
        Duration::from_secs(3),
        "the pending resolve delivered from state",
        || async { pd.delivered().len() == 2 },
    )
    .await;
    let d = pd.delivered();
    assert_eq!(d[0].body["event_action"], "trigger");
    assert_eq!(d[1].body["event_action"], "resolve");
    assert_eq!(d[0].body["dedup_key"], d[1].body["dedup_key"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pd.delivered().len(), 2);
    pd.assert_valid();
    r.shutdown().await;

    // 4th life: nothing left to do
    let r = start(&config(&pd.url()), dir.path());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pd.delivered().len(), 2);
    r.shutdown().await;
}
