//! Hot reload of the `edgewatch aggregator` and `collector` processes (SIGHUP and
//! `POST /-/reload`) and their readiness: a valid change applies (a new rule, a
//! new route, a new scrape target), an invalid one is refused with the running configuration still serving and
//! `edgewatch_config_last_reload_successful 0`, and state survives (a firing
//! alert keeps its activeAt, the store keeps its series).

use edgewatch_testkit::exposer::{Exposer, Page};
use edgewatch_testkit::http::{Recorder, Webhook};
use edgewatch_testkit::otlp::{gauge_request, post_otlp};
use edgewatch_testkit::roles::{Aggregator, AggregatorSpec, Collector, CollectorSpec};
use edgewatch_testkit::{eventually, get, write};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const OK: &str = "edgewatch_config_last_reload_successful";
const OK_AT: &str = "edgewatch_config_last_reload_success_timestamp_seconds";

/// (state, activeAt) of `alertname` on `/api/v1/alerts`.
async fn alert(agg: &Aggregator, alertname: &str) -> Option<(String, String)> {
    let (status, body) = get(&agg.url("/api/v1/alerts")).await?;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("alerts JSON");
    v["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == alertname)
        .map(|a| {
            (
                a["state"].as_str().unwrap_or_default().to_string(),
                a["activeAt"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// An OTLP/HTTP connection to `port` whose second export's body never
/// completes; the connection is served (an empty export answered) first.
async fn in_flight_export(port: u16) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = "POST /v1/metrics HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n";
    slow.write_all(format!("{head}content-length: 0\r\n\r\n").as_bytes())
        .await
        .expect("empty export");
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let mut buf = [0u8; 1024];
        let n = slow.read(&mut buf).await.expect("answer");
        assert!(n > 0, "connection closed");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    slow.write_all(format!("{head}content-length: 100\r\n\r\n\x0a").as_bytes())
        .await
        .expect("partial request");
    slow
}

/// Names of the rules on `/api/v1/rules`.
async fn rule_names(agg: &Aggregator) -> Vec<String> {
    let (status, body) = get(&agg.url("/api/v1/rules")).await.expect("/api/v1/rules");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("rules JSON");
    let mut out = Vec::new();
    for g in v["data"]["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            out.push(r["name"].as_str().expect("name").to_string());
        }
    }
    out
}

fn rules_yaml(alerts: &[&str]) -> String {
    let mut s = "groups:\n  - name: reload\n    rules:\n".to_string();
    for a in alerts {
        s.push_str(&format!("      - alert: {a}\n        expr: vector(1)\n"));
    }
    s
}

/// The aggregator's config: `rules` evaluated fast, alerts routed to `hook`.
fn config(agg: &Aggregator, rules: &Path, hook: &str) -> String {
    let text = std::fs::read_to_string(&agg.config).expect("config");
    let base = text.split("rule_files:").next().expect("base");
    format!("{base}{}", extra(rules, hook))
}

fn extra(rules: &Path, hook: &str) -> String {
    format!(
        "rule_files: [{}]\nevaluation_interval: 200ms\nalerting:\n  route:\n    receiver: hook\n    group_by: [alertname]\n    group_wait: 100ms\n    group_interval: 300ms\n    repeat_interval: 1h\n  receivers:\n    - name: hook\n      webhook_configs: [{{url: '{hook}'}}]\n",
        rules.display()
    )
}

async fn reloaded_ok(agg: &Aggregator) {
    let (status, body) = agg.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(agg.metrics().await.get(OK), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_routes_reload_live_keeping_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (Webhook::start().await, Webhook::start().await);
    let rules = dir.path().join("rules.yaml");
    write(&rules, &rules_yaml(&["Steady"]));
    let agg = Aggregator::start_with_extra(BIN, dir.path(), &extra(&rules, &first.url())).await;
    let m = agg.metrics().await;
    assert_eq!(m.get(OK), 1.0);
    assert!(m.get(OK_AT) > 0.0, "the start counts as a successful load");
    let (status, _) = post_otlp(agg.http_otlp, gauge_request("e2e_reload_temp", "n", 1)).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(20), "Steady notified", || async {
        first.count("Steady", "firing") == 1
    })
    .await;
    let (state, active_at) = alert(&agg, "Steady").await.expect("Steady on the API");
    assert_eq!(state, "firing");
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "Nothing", "isRegex": false, "isEqual": true}],
        "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2100-01-01T00:00:00Z",
        "createdBy": "e2e", "comment": "kept across reloads"
    });
    let r = reqwest::Client::new()
        .post(agg.url("/api/v1/silences"))
        .json(&silence)
        .send()
        .await
        .expect("POST a silence");
    assert_eq!(r.status(), 200);
    let silence_id = r.json::<serde_json::Value>().await.expect("silence JSON")["silenceID"]
        .as_str()
        .expect("silenceID")
        .to_string();

    // The listener's guard holds for reloads too: a form post is refused.
    let r = reqwest::Client::new()
        .post(agg.url("/-/reload"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 415);

    // A new rule and a new route, by POST: applied when the answer comes.
    write(&rules, &rules_yaml(&["Steady", "Added"]));
    write(&agg.config, &config(&agg, &rules, &second.url()));
    reloaded_ok(&agg).await;
    assert!(rule_names(&agg).await.contains(&"Added".to_string()));
    eventually(
        Duration::from_secs(20),
        "Added notified through the new route",
        || async { second.count("Added", "firing") == 1 },
    )
    .await;
    assert_eq!(first.count("Added", "firing"), 0, "the old route is gone");
    assert_eq!(
        alert(&agg, "Steady").await,
        Some(("firing".into(), active_at.clone())),
        "a kept rule keeps its alert"
    );

    // A broken rule file: refused, file and line named, the old rules serve on.
    write(
        &rules,
        "groups:\n  - name: reload\n    rules:\n      - alert: Broken\n        expr: sum(\n",
    );
    let (status, body) = agg.reload().await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("rules.yaml:5:"), "{body}");
    assert_eq!(agg.metrics().await.get(OK), 0.0);
    let names = rule_names(&agg).await;
    assert!(names.contains(&"Added".to_string()) && !names.contains(&"Broken".to_string()));

    // A broken configuration file, by SIGHUP: the same, in the log.
    write(&rules, &rules_yaml(&["Steady", "Added", "ByHangup"]));
    let good = std::fs::read_to_string(&agg.config).expect("config");
    write(&agg.config, &format!("{good}no_such_setting: 1\n"));
    agg.proc.signal(libc::SIGHUP);
    eventually(Duration::from_secs(20), "the refusal logged", || async {
        agg.proc.log_text().contains("aggregator.yaml:")
            && agg.proc.log_text().contains("no_such_setting")
    })
    .await;
    assert_eq!(agg.metrics().await.get(OK), 0.0);
    assert!(!rule_names(&agg).await.contains(&"ByHangup".to_string()));

    // Fixed, and a listen address changed: reloaded by SIGHUP, the address
    // named as needing a restart.
    let other = edgewatch_testkit::free_port();
    let moved = good.replacen(
        &format!("grpc: 127.0.0.1:{}", agg.grpc),
        &format!("grpc: 127.0.0.1:{other}"),
        1,
    );
    write(&agg.config, &moved);
    agg.proc.signal(libc::SIGHUP);
    eventually(Duration::from_secs(20), "reloaded by SIGHUP", || async {
        agg.metrics().await.get(OK) == 1.0
    })
    .await;
    assert!(rule_names(&agg).await.contains(&"ByHangup".to_string()));
    assert!(
        agg.proc
            .log_text()
            .contains("needs a restart: receivers.otlp.grpc"),
        "{}",
        agg.proc.log_text()
    );

    // State kept through it all: the alert, the silence, the store's series.
    let (_, silences) = get(&agg.url("/api/v1/silences")).await.expect("silences");
    assert!(silences.contains(&silence_id), "{silences}");
    assert_eq!(
        alert(&agg, "Steady").await,
        Some(("firing".into(), active_at))
    );
    assert!(agg
        .federate("e2e_reload_temp")
        .await
        .contains("e2e_reload_temp"));
    // The receiver kept its name: its notification log says Steady was told.
    assert_eq!(
        (
            first.count("Steady", "firing"),
            second.count("Steady", "firing")
        ),
        (1, 0),
        "Steady notified once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_the_first_gitops_read_and_not_while_draining() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("gitops");
    let spec = AggregatorSpec {
        extra: &format!(
            "reconciler:\n  gitops:\n    path: {}\n  interval: 200ms\n",
            repo.display()
        ),
        unready: true,
        ..AggregatorSpec::default()
    };
    let mut agg = Aggregator::start_spec(BIN, dir.path(), &spec).await;
    let readyz = agg.url("/readyz");
    // Up (it answers) but the checkout is not there yet, as before git-sync's clone.
    eventually(
        Duration::from_secs(20),
        "not ready: no GitOps read",
        || async {
            get(&readyz).await.is_some_and(|(status, body)| {
                status == 503 && body.contains("the first GitOps read")
            })
        },
    )
    .await;
    std::fs::create_dir(&repo).expect("the checkout");
    edgewatch_testkit::git::git(&repo, &["init", "-q"]);
    edgewatch_testkit::git::put(&repo, "README.md", "apps come later\n");
    edgewatch_testkit::git::commit(&repo, "first");
    eventually(
        Duration::from_secs(20),
        "ready after the first read",
        || async { get(&readyz).await == Some((200, "ready\n".into())) },
    )
    .await;

    // The GitOps settings reload live: another checkout is read at the next round.
    let other = dir.path().join("gitops-2");
    std::fs::create_dir(&other).expect("the other checkout");
    edgewatch_testkit::git::git(&other, &["init", "-q"]);
    edgewatch_testkit::git::put(&other, "README.md", "elsewhere\n");
    edgewatch_testkit::git::commit(&other, "first");
    let text = std::fs::read_to_string(&agg.config).expect("config");
    write(
        &agg.config,
        &text.replace(
            &format!("path: {}\n", repo.display()),
            &format!("path: {}\n", other.display()),
        ),
    );
    let (status, body) = agg.reload().await;
    assert_eq!(status, 200, "{body}");
    let deployments = agg.url("/api/v1/deployments");
    let want = other.display().to_string();
    eventually(
        Duration::from_secs(20),
        "the other checkout read",
        || async {
            get(&deployments).await.is_some_and(|(_, body)| {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                v["data"]["gitops"]["path"] == want.as_str()
            })
        },
    )
    .await;

    // A request in flight holds the drain (its body never completes): /readyz
    // says 503 from SIGTERM on, while the listener still answers.
    let slow = in_flight_export(agg.http_otlp).await;
    agg.proc.signal(libc::SIGTERM);
    eventually(Duration::from_secs(20), "503 while draining", || async {
        get(&readyz)
            .await
            .is_some_and(|(status, body)| status == 503 && body.contains("shutting down"))
    })
    .await;
    drop(slow);
    agg.proc.wait_exit(Duration::from_secs(60));
}

/// `static_targets: [...]` of the collector's scrape receiver, every 200 ms.
fn scrape_receiver(targets: &[String]) -> String {
    format!(
        "  prometheus:\n    scrape_interval: 200ms\n    scrape_timeout: 150ms\n    static_targets: [{}]\n",
        targets.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_scrape_targets_reload_and_readiness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exposer = Exposer::start(vec![
        ("/a", Page::text("reload_a_value 1\n")),
        ("/b", Page::text("reload_b_value 2\n")),
    ])
    .await;
    let (a, b) = (exposer.url("/a"), exposer.url("/b"));
    let agg = Aggregator::start(BIN, dir.path()).await;
    let only_a = scrape_receiver(std::slice::from_ref(&a));
    let spec = CollectorSpec {
        receivers_extra: &only_a,
        ..CollectorSpec::new("edge", "edge-1", "node-1", agg.grpc)
    };
    let col = Collector::start_spec(BIN, dir.path(), &spec).await;
    let m = col.metrics().await;
    assert_eq!((m.get(OK), m.get(OK_AT) > 0.0), (1.0, true));
    eventually(Duration::from_secs(20), "a scraped", || async {
        exposer.hits("/a") > 0
    })
    .await;
    let original = std::fs::read_to_string(&col.config).expect("config");

    // A new target, by POST: scraped, and its data forwarded to the core.
    write(
        &col.config,
        &original.replace(&only_a, &scrape_receiver(&[a.clone(), b.clone()])),
    );
    let (status, body) = col.reload().await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(30), "b forwarded", || async {
        agg.federate("reload_b_value")
            .await
            .contains("reload_b_value")
    })
    .await;
    assert!(agg
        .federate("reload_a_value")
        .await
        .contains("reload_a_value"));

    // An invalid value: refused, named with its line, b still scraped.
    let good = std::fs::read_to_string(&col.config).expect("config");
    write(
        &col.config,
        &good.replace("scrape_interval: 200ms", "scrape_interval: often"),
    );
    let (status, body) = col.reload().await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("edge.yaml:"), "{body}");
    assert_eq!(col.metrics().await.get(OK), 0.0);
    let hits = exposer.hits("/b");
    eventually(Duration::from_secs(20), "b scraped on", || async {
        exposer.hits("/b") > hits + 2
    })
    .await;

    // Back to a alone by SIGHUP, with a buffer path changed: b no longer
    // scraped, the path named as needing a restart.
    let moved = original.replace(
        &format!("{}", col.buffer_dir().display()),
        &format!("{}-new", col.buffer_dir().display()),
    );
    write(&col.config, &moved);
    col.proc.signal(libc::SIGHUP);
    eventually(Duration::from_secs(20), "reloaded by SIGHUP", || async {
        col.metrics().await.get(OK) == 1.0
    })
    .await;
    assert!(
        col.proc.log_text().contains("needs a restart: buffer"),
        "{}",
        col.proc.log_text()
    );
    // The scrape receiver takes the new set a moment after the answer.
    eventually(
        Duration::from_secs(60),
        "b no longer scraped while a is",
        || async {
            let (b_hits, a_hits) = (exposer.hits("/b"), exposer.hits("/a"));
            eventually(Duration::from_secs(20), "a scraped on", || async {
                exposer.hits("/a") > a_hits + 3
            })
            .await;
            exposer.hits("/b") == b_hits
        },
    )
    .await;

    // SIGTERM while an export is in flight: 503 while the receivers drain.
    let mut col = col;
    let readyz = col.url("/readyz");
    let _slow = in_flight_export(col.http).await;
    col.proc.signal(libc::SIGTERM);
    eventually(Duration::from_secs(20), "503 while draining", || async {
        get(&readyz)
            .await
            .is_some_and(|(status, body)| status == 503 && body.contains("shutting down"))
    })
    .await;
    drop(_slow);
    col.proc.wait_exit(Duration::from_secs(60));
}

fn remote_write(url: &str, extra: &str) -> String {
    format!("remote_write:\n  - url: {url}\n    queue_config: {{batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 500ms}}\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_endpoints_reload_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (
        Recorder::start(200, &[]).await,
        Recorder::start(200, &[]).await,
    );
    let url = |r: &Recorder| format!("http://{}/api/v1/write", r.addr);
    let agg = Aggregator::start_with_extra(BIN, dir.path(), &remote_write(&url(&first), "")).await;
    let push = || async {
        let (status, _) = post_otlp(agg.http_otlp, gauge_request("e2e_reload_rw", "n", 1)).await;
        assert_eq!(status, 200);
    };
    eventually(
        Duration::from_secs(20),
        "the first endpoint written",
        || async {
            push().await;
            !first.requests().is_empty()
        },
    )
    .await;
    let original = std::fs::read_to_string(&agg.config).expect("config");

    // An endpoint whose TLS file is missing: refused, the first one writes on.
    write(
        &agg.config,
        &original.replace(
            &remote_write(&url(&first), ""),
            &remote_write(
                &url(&second),
                &format!(
                    "    tls_config: {{ca_file: {}}}\n",
                    dir.path().join("missing-ca.crt").display()
                ),
            ),
        ),
    );
    let (status, body) = agg.reload().await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("missing-ca.crt"), "{body}");
    assert_eq!(agg.metrics().await.get(OK), 0.0);

    // Moved to the second endpoint: the first one stops, the second starts.
    write(
        &agg.config,
        &original.replace(
            &remote_write(&url(&first), ""),
            &remote_write(&url(&second), ""),
        ),
    );
    let (status, body) = agg.reload().await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(20),
        "the second endpoint written",
        || async {
            push().await;
            !second.requests().is_empty()
        },
    )
    .await;
    let (before, written) = (first.requests().len(), second.requests().len());
    eventually(
        Duration::from_secs(20),
        "the second endpoint written on",
        || async {
            push().await;
            second.requests().len() > written + 1
        },
    )
    .await;
    assert_eq!(
        first.requests().len(),
        before,
        "the first endpoint was stopped"
    );
    assert!(agg
        .proc
        .log_text()
        .contains("remote_write endpoint stopped by a reload"));
}
