//! The notification log survives a restart: a still-firing group is not paged again
//! before repeat_interval, and a resolve that was pending is still delivered.

mod notify_support;

use edgewatch_testkit::{always_for, eventually};
use notify_support::*;
use std::time::{Duration, SystemTime};

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// A group flushes `group_wait` after it is (re)created, then only after the hour-long
/// group_interval: within a test, every flush is the first one of a life.
fn config(url: &str) -> String {
    format!(
        r#"
route:
  receiver: pd
  group_by: [alertname]
  group_wait: 50ms
  group_interval: 1h
  repeat_interval: 1h
receivers:
  - name: pd
    pagerduty_configs: [{{routing_key: {KEY}, url: {url}/v2/enqueue, insecure: true}}]
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

    // 2nd life: the rules keep sending the firing alert (here: every poll); the
    // restored group's flush (group_wait 50 ms) sends no second trigger
    let r = start(&config(&pd.url()), dir.path());
    always_for(
        Duration::from_millis(1000),
        "no re-page after restart",
        || async {
            r.notifier.send(vec![firing.clone()]);
            pd.delivered().len() == 1
        },
    )
    .await;
    // the alert resolves; we stop before the group's next flush (group_interval 1 h)
    let resolved = alert(
        &[("alertname", "ModelDown"), ("node", "n1")],
        t0,
        Some(SystemTime::now()),
    );
    r.notifier.send(vec![resolved]);
    always_for(
        Duration::from_millis(300),
        "the resolve waits for the group's next flush",
        || async { pd.delivered().len() == 1 },
    )
    .await;
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
    always_for(
        Duration::from_millis(500),
        "the resolve delivered once",
        || async { pd.delivered().len() == 2 },
    )
    .await;
    pd.assert_valid();
    r.shutdown().await;

    // 4th life: nothing left to do (a restored group would flush after group_wait, 50 ms)
    let r = start(&config(&pd.url()), dir.path());
    always_for(
        Duration::from_millis(500),
        "nothing sent in the 4th life",
        || async { pd.delivered().len() == 2 },
    )
    .await;
    r.shutdown().await;
}
