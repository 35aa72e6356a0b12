//! Identity and authentication between edge and core, with the real binaries: bearer
//! tokens decide the cluster a collector writes as, whatever it claims; requests
//! without valid credentials store nothing; one cluster cannot disturb another's
//! replay state; the HTTP API's basic auth, JSON-only state changes and the status
//! page's Content-Security-Policy (in headless Chromium).

use edgewatch_testkit::otlp::{
    batch_headers, export_grpc, gauge, kv, now_nanos, point, post_otlp_as, request,
};
use edgewatch_testkit::peers::{Chromium, Prometheus};
use edgewatch_testkit::roles::{Aggregator, Collector, CollectorSpec};
use edgewatch_testkit::{eventually, write, Metrics};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// Writes `token` (with the trailing newline editors leave) to `dir/name`.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    write(&path, &format!("{token}\n"));
    path
}

/// `auth.clusters` for edge-a (`tok-a`) and edge-b (`tok-b`).
fn two_clusters(dir: &Path) -> String {
    format!(
        "auth:\n  clusters:\n    - {{cluster: edge-a, token_file: {}}}\n    - {{cluster: edge-b, token_file: {}}}\n",
        token_file(dir, "edge-a.token", "tok-a").display(),
        token_file(dir, "edge-b.token", "tok-b").display()
    )
}

/// One gauge point of `metric`, from a resource that says `k8s.cluster.name=claimed`.
fn claiming(claimed: &str, metric: &str) -> ExportMetricsServiceRequest {
    request(
        vec![
            kv("service.name", "e2e-auth"),
            kv("k8s.cluster.name", claimed),
        ],
        None,
        vec![gauge(metric, vec![point(vec![], now_nanos(), 1.0)])],
    )
}

/// The `cluster` labels of `metric` on `/federate`.
async fn clusters_of(agg: &Aggregator, metric: &str) -> Vec<String> {
    let text = agg.federate(metric).await;
    let mut out: Vec<String> = edgewatch_testkit::parse_samples(&text)
        .iter()
        .map(|s| s.label("cluster").to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_collectors_token_decides_its_cluster_and_a_rotated_token_is_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start_with_extra(BIN, dir.path(), &two_clusters(dir.path())).await;
    let token = token_file(dir.path(), "collector.token", "tok-a");
    let forward = format!("  bearer_token_file: {}\n", token.display());
    // The collector stamps its own cluster, edge-b: its token says edge-a.
    let spec = CollectorSpec {
        forward_extra: &forward,
        ..CollectorSpec::new("col", "edge-b", "node-1", agg.grpc)
    };
    let mut col = Collector::start_spec(BIN, dir.path(), &spec).await;
    for metric in ["auth_first", "auth_second"] {
        let req = request(
            vec![kv("service.name", "e2e-auth")],
            None,
            vec![gauge(metric, vec![point(vec![], now_nanos(), 1.0)])],
        );
        assert_eq!(post_otlp_as(col.http, req.encode_to_vec(), None).await, 200);
        eventually(Duration::from_secs(15), metric, || async {
            clusters_of(&agg, metric).await == ["edge-a"]
        })
        .await;
    }
    let m = agg.metrics().await;
    assert_eq!(
        m.get(r#"edgewatch_identity_overrides_total{cluster="edge-a"}"#),
        2.0
    );
    let log = agg.proc.log_text();
    assert_eq!(
        log.matches("claimed another cluster").count(),
        1,
        "logged once per (cluster, claim):\n{log}"
    );
    // Rotated in place, as kubelet does: the next export carries the new token.
    let next = dir.path().join("collector.token.new");
    write(&next, "tok-b\n");
    std::fs::rename(&next, &token).expect("rotate the token");
    let req = claiming("edge-a", "auth_rotated");
    assert_eq!(post_otlp_as(col.http, req.encode_to_vec(), None).await, 200);
    eventually(
        Duration::from_secs(15),
        "the rotated token's cluster",
        || async { clusters_of(&agg, "auth_rotated").await == ["edge-b"] },
    )
    .await;
    let failures = agg.metrics().await;
    assert_eq!(failures.sum("edgewatch_auth_failures_total"), 0.0);
    col.proc.stop();
}

#[tokio::test]
async fn without_valid_credentials_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start_with_extra(BIN, dir.path(), &two_clusters(dir.path())).await;
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    for (i, (metadata, reason)) in [
        (vec![], "missing"),
        (bearer("tok-x"), "invalid_token"),
        (
            vec![("authorization", "Basic dG9rLWE=".to_string())],
            "missing",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let req = claiming("edge-a", "refused_grpc");
        let mut md = batch_headers(&format!("col-{i}"), 0, 0, &req);
        md.extend(metadata);
        assert_eq!(
            export_grpc(agg.grpc, req, &md).await,
            Code::Unauthenticated,
            "{reason}"
        );
    }
    for token in [None, Some("tok-x")] {
        let body = claiming("edge-a", "refused_http").encode_to_vec();
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/v1/metrics", agg.http_otlp))
            .header("content-type", "application/x-protobuf");
        let r = match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        };
        let r = r.body(body).send().await.expect("POST /v1/metrics");
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    let m = agg.metrics().await;
    assert_eq!(
        m.get(r#"edgewatch_auth_failures_total{reason="missing"}"#),
        3.0
    );
    assert_eq!(
        m.get(r#"edgewatch_auth_failures_total{reason="invalid_token"}"#),
        2.0
    );
    assert_eq!(m.get("edgewatch_ingest_points_total"), 0.0);
    // The refused batch is taken once credentials come with it: nothing was recorded.
    let req = claiming("edge-a", "refused_grpc");
    let mut md = batch_headers("col-0", 0, 0, &req);
    md.extend(bearer("tok-a"));
    assert_eq!(export_grpc(agg.grpc, req, &md).await, Code::Ok);
    assert_eq!(clusters_of(&agg, "refused_grpc").await, ["edge-a"]);
    assert_eq!(
        clusters_of(&agg, "refused_http").await,
        Vec::<String>::new()
    );
    let body = claiming("edge-a", "refused_http").encode_to_vec();
    assert_eq!(post_otlp_as(agg.http_otlp, body, Some("tok-b")).await, 200);
    assert_eq!(clusters_of(&agg, "refused_http").await, ["edge-b"]);
}

/// A token for edge-a sending with edge-b's collector id and a floor far ahead:
/// edge-b's collector keeps delivering, nothing of it is taken for a replay.
#[tokio::test]
async fn one_cluster_cannot_poison_another_collectors_replay_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start_with_extra(BIN, dir.path(), &two_clusters(dir.path())).await;
    let token = token_file(dir.path(), "b.token", "tok-b");
    let forward = format!("  bearer_token_file: {}\n", token.display());
    let spec = CollectorSpec {
        forward_extra: &forward,
        ..CollectorSpec::new("col-b", "edge-b", "node-1", agg.grpc)
    };
    let col = Collector::start_spec(BIN, dir.path(), &spec).await;
    let info = col.metrics().await;
    let id = info.all("edgewatch_collector_info")[0]
        .label("instance_id")
        .to_string();
    let send = |metric: &'static str| {
        let body = claiming("edge-b", metric).encode_to_vec();
        async move { assert_eq!(post_otlp_as(col.http, body, None).await, 200) }
    };
    send("before_forgery").await;
    eventually(Duration::from_secs(15), "edge-b's first batch", || async {
        clusters_of(&agg, "before_forgery").await == ["edge-b"]
    })
    .await;
    let forged = claiming("edge-b", "forged");
    let mut md = batch_headers(&id, 1_000_000, 1_000_000, &forged);
    md.push(("authorization", "Bearer tok-a".into()));
    assert_eq!(export_grpc(agg.grpc, forged, &md).await, Code::Ok);
    send("after_forgery").await;
    eventually(
        Duration::from_secs(15),
        "edge-b's batch after the forgery",
        || async { clusters_of(&agg, "after_forgery").await == ["edge-b"] },
    )
    .await;
    assert_eq!(clusters_of(&agg, "forged").await, ["edge-a"]);
    let m = agg.metrics().await;
    assert_eq!(m.get("edgewatch_ingest_duplicate_batches_total"), 0.0);
}

/// `http.basic_auth_users` with one user, `prometheus` / `s3cret`.
fn users() -> String {
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    format!("  basic_auth_users:\n    prometheus: \"{hash}\"\n")
}

const ALERTING: &str = "alerting:\n  route: {receiver: nobody}\n  receivers: [{name: nobody}]\n";

#[tokio::test]
async fn the_http_api_needs_basic_auth_but_the_probes_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start_with_http(BIN, dir.path(), &users(), ALERTING).await;
    let client = reqwest::Client::new();
    let get = |path: &str, auth: Option<(&str, &str)>| {
        let mut r = client.get(agg.url(path));
        if let Some((u, p)) = auth {
            r = r.basic_auth(u, Some(p));
        }
        async move { r.send().await.expect("GET").status().as_u16() }
    };
    let good = Some(("prometheus", "s3cret"));
    for path in [
        "/federate?match[]=up",
        "/metrics",
        "/",
        "/api/v1/silences",
        "/api/v1/alerts",
    ] {
        assert_eq!(get(path, None).await, 401, "{path}");
        assert_eq!(
            get(path, Some(("prometheus", "wrong"))).await,
            401,
            "{path}"
        );
        assert_eq!(get(path, good).await, 200, "{path}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(path, None).await, 200, "{path}");
    }
    let r = client.get(agg.url("/")).send().await.expect("GET /");
    let challenge = r.headers()["www-authenticate"].to_str().unwrap_or("");
    assert!(challenge.starts_with("Basic "), "{challenge}");
    // A silence as a cross-site form would post it: refused, nothing created.
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": ".+", "isRegex": true, "isEqual": true}],
        "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2100-01-01T00:00:00Z",
        "createdBy": "e2e", "comment": "x"
    });
    let post = |ct: &'static str| {
        client
            .post(agg.url("/api/v1/silences"))
            .basic_auth("prometheus", Some("s3cret"))
            .header("content-type", ct)
            .body(silence.to_string())
            .send()
    };
    assert_eq!(post("text/plain").await.expect("POST").status(), 415);
    let list = client
        .get(agg.url("/api/v1/silences"))
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .expect("silences");
    assert_eq!(list.text().await.expect("list"), "[]");
    assert_eq!(post("application/json").await.expect("POST").status(), 200);
    let scrape = client
        .get(agg.url("/metrics"))
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .expect("metrics");
    let m = Metrics::parse(&scrape.text().await.expect("metrics text"));
    assert_eq!(
        m.get(r#"edgewatch_auth_failures_total{reason="basic_auth_missing"}"#),
        6.0
    );
    assert_eq!(
        m.get(r#"edgewatch_auth_failures_total{reason="basic_auth_invalid"}"#),
        5.0
    );
    // Reloads are behind the same guard.
    let reload = |auth: bool| {
        let mut r = client
            .post(agg.url("/-/reload"))
            .header("content-type", "application/json");
        if auth {
            r = r.basic_auth("prometheus", Some("s3cret"));
        }
        async move { r.send().await.expect("POST /-/reload").status().as_u16() }
    };
    assert_eq!(reload(false).await, 401);
    assert_eq!(reload(true).await, 200);
    // A real Prometheus federating with its scrape config's basic_auth.
    let scrape = format!(
        "  - job_name: edgewatch\n    metrics_path: /federate\n    params: {{'match[]': [up]}}\n    basic_auth: {{username: prometheus, password: s3cret}}\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
        agg.http
    );
    let prom = Prometheus::start(dir.path(), &scrape).await;
    eventually(
        Duration::from_secs(20),
        "Prometheus scraping with basic auth",
        || async {
            let up = prom.query(r#"up{job="edgewatch"}"#).await;
            up.first().and_then(|s| s["value"][1].as_str()) == Some("1")
        },
    )
    .await;
}

/// The page, its style sheet and script load under the Content-Security-Policy
/// without a single console message (a violation would be one), and the script runs.
#[tokio::test]
async fn the_status_page_complies_with_its_content_security_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start_with_extra(BIN, dir.path(), ALERTING).await;
    let r = reqwest::get(agg.url("/")).await.expect("GET /");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap_or("");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let page = Chromium::new(dir.path())
        .load(&agg.url("/"), Duration::from_secs(5))
        .await;
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    let updates = page
        .dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(updates >= 1, "the script redrew the page:\n{}", page.dom);
}
