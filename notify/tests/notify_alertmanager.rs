//! Pushing to a real Alertmanager (Debian `prometheus-alertmanager`), which groups and
//! delivers to a test webhook: firing, then resolved. Skipped (with a message) when
//! the binary is missing and can't be installed; `scripts/test` installs it.

mod notify_support;

use notify_support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

const AM: &str = "/usr/bin/prometheus-alertmanager";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn real_alertmanager_receives_pushes_and_delivers() {
    assert!(
        std::path::Path::new(AM).exists(),
        "{AM} is missing: scripts/test installs the Debian package prometheus-alertmanager"
    );
    let hook = Mock::start(Kind::Webhook, 200, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route: {{receiver: hook, group_by: [alertname], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}}\n\
             receivers: [{{name: hook, webhook_configs: [{{url: '{}/am-hook', send_resolved: true}}]}}]\n",
            hook.url()
        ),
    )
    .unwrap();
    let port = free_port();
    let storage = dir.path().join("am-data");
    let child = Command::new(AM)
        .arg(format!("--config.file={}", am_config.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _am = Kill(child);
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{port}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "alertmanager did not start");

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
    assert!(
        eventually(Duration::from_secs(15), || hook
            .delivered()
            .iter()
            .any(|x| x.body["status"] == "firing"))
        .await,
        "no firing notification from Alertmanager"
    );
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
    // periodic re-sends while firing (no duplicate notifications downstream)
    for _ in 0..5 {
        r.notifier.send(vec![firing.clone()]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let resolved = alert(
        &[("alertname", "ModelDown"), ("cluster", "edge-a")],
        t0,
        Some(SystemTime::now()),
    );
    r.notifier.send(vec![resolved]);
    assert!(
        eventually(Duration::from_secs(15), || hook
            .delivered()
            .iter()
            .any(|x| x.body["status"] == "resolved"))
        .await,
        "no resolved notification from Alertmanager"
    );
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
        counter(
            &r.registry,
            "edgewatch_notifications_total",
            &[("integration", "alertmanager")]
        ) >= 2.0
    );
    r.shutdown().await;
}
