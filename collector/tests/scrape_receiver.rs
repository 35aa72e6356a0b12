//! The Prometheus scrape receiver against real exposition: recorded OVMS / Triton /
//! MLServer fixtures (written from their documented metric names) served by a local HTTP
//! server, misbehaving targets, and a real Prometheus server's own `/metrics`.

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use edgewatch_collector::buffer::{Buffer, BufferOptions, FullPolicy};
use edgewatch_collector::enrich::Stamp;
use edgewatch_collector::receive::scrape::parse::Exposition;
use edgewatch_collector::receive::scrape::{
    self, convert, fetch, Deadline, Output, ScrapeError, ScrapeMetrics, ScrapeTarget,
    TargetIdentity,
};
use edgewatch_config::collector::ScrapeLimits;
use edgewatch_testkit::peers::Prometheus;
use edgewatch_testkit::{eventually, free_port, Metrics};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, ResourceMetrics};
use prost::Message;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OM: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

/// A local server with fixtures and misbehaving endpoints.
async fn serve() -> SocketAddr {
    let flip = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/ovms", get(|| async { ([(CONTENT_TYPE, TEXT)], fixture("ovms.prom")) }))
        .route("/triton", get(|| async { ([(CONTENT_TYPE, TEXT)], fixture("triton.prom")) }))
        .route("/mlserver", get(|| async { ([(CONTENT_TYPE, TEXT)], fixture("mlserver.prom")) }))
        .route(
            "/om",
            get(|| async {
                let body = "# TYPE req counter\n# HELP req Requests.\nreq_total{code=\"200\"} 5\nreq_created{code=\"200\"} 1700000000.0\n# TYPE lat histogram\nlat_bucket{le=\"0.5\"} 1\nlat_bucket{le=\"+Inf\"} 2\nlat_sum 1.5\nlat_count 2\n# TYPE t gauge\nt 3 1700000000.5\n# EOF\n";
                ([(CONTENT_TYPE, OM)], body)
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                ([(CONTENT_TYPE, TEXT)], "a 1\n")
            }),
        )
        .route("/huge", get(|| async { ([(CONTENT_TYPE, TEXT)], "x 1\n".repeat(400_000)) }))
        .route("/invalid", get(|| async { ([(CONTENT_TYPE, TEXT)], "this is { not an exposition\n") }))
        .route("/dup", get(|| async { ([(CONTENT_TYPE, TEXT)], "a{x=\"1\"} 1\na{x=\"1\"} 2\nb{y=\"1\",y=\"2\"} 3\nc 4\n") }))
        .route("/status", get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
        .route(
            "/flip",
            get(move || {
                let n = flip.fetch_add(1, Ordering::SeqCst);
                async move {
                    let body = if n == 0 { "kept 1\ngoes_away{a=\"b\"} 2\n" } else { "kept 1\n" };
                    ([(CONTENT_TYPE, TEXT)], body)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn target(addr: SocketAddr, path: &str) -> ScrapeTarget {
    ScrapeTarget {
        url: format!("http://{addr}{path}"),
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(250),
        identity: TargetIdentity {
            job: "prometheus".into(),
            instance: addr.to_string(),
            ..Default::default()
        },
        limits: None,
    }
}

fn names(rm: &ResourceMetrics) -> BTreeSet<String> {
    rm.scope_metrics
        .iter()
        .flat_map(|s| s.metrics.iter().map(|m| m.name.clone()))
        .collect()
}

fn kind(rm: &ResourceMetrics, name: &str) -> &'static str {
    let m = rm.scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    match &m.data {
        Some(metric::Data::Gauge(_)) => "gauge",
        Some(metric::Data::Sum(s)) if s.is_monotonic => "counter",
        Some(metric::Data::Histogram(_)) => "histogram",
        Some(metric::Data::Summary(_)) => "summary",
        _ => "other",
    }
}

fn gauge_value(rm: &ResourceMetrics, name: &str) -> Option<f64> {
    rm.scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == name)
        .find_map(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.first().and_then(|p| match p.value {
                Some(number_data_point::Value::AsDouble(v)) => Some(v),
                _ => None,
            }),
            _ => None,
        })
}

/// Fetches and parses `t`, reading at most `limit` bytes; no other limit.
async fn exposition(
    client: &reqwest::Client,
    t: &ScrapeTarget,
    limit: u64,
) -> Result<Exposition, ScrapeError> {
    fetch(client, t, limit, Instant::now() + t.timeout)
        .await?
        .parse(0, &Deadline::none())
}

/// Converts a first scrape of `identity`, without limits.
fn convert_all(
    exp: &Exposition,
    identity: &TargetIdentity,
) -> (ResourceMetrics, convert::Converted) {
    convert::convert(
        exp,
        identity,
        &mut convert::TargetState::default(),
        scrape::now_ms(),
        0.01,
        &ScrapeLimits::default(),
        &Deadline::none(),
    )
    .expect("no limit, no deadline")
}

async fn scrape_once(t: &ScrapeTarget) -> (ResourceMetrics, convert::Converted) {
    let client = reqwest::Client::new();
    let exp = exposition(&client, t, 1 << 20).await.expect("scrape ok");
    convert_all(&exp, &t.identity)
}

#[tokio::test]
async fn model_server_fixtures_convert_by_type() {
    let addr = serve().await;
    let (rm, c) = scrape_once(&target(addr, "/ovms")).await;
    assert_eq!(c.samples, 30);
    assert_eq!(c.untyped_fallbacks, 0);
    assert_eq!(kind(&rm, "ovms_requests_success"), "counter");
    assert_eq!(kind(&rm, "ovms_current_requests"), "gauge");
    assert_eq!(kind(&rm, "ovms_request_time_us"), "histogram");
    assert_eq!(kind(&rm, "ovms_inference_time_us"), "histogram");
    assert_eq!(gauge_value(&rm, "up"), Some(1.0));
    assert_eq!(gauge_value(&rm, "scrape_samples_scraped"), Some(30.0));
    let res = rm.resource.as_ref().unwrap();
    let attr = |k: &str| {
        res.attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| format!("{:?}", kv.value))
    };
    assert!(attr("service.name").unwrap().contains("prometheus"));
    assert!(attr("service.instance.id")
        .unwrap()
        .contains(&addr.to_string()));
    assert_eq!(
        rm.scope_metrics[0].scope.as_ref().unwrap().name,
        "edgewatch.scrape"
    );

    let (rm, c) = scrape_once(&target(addr, "/triton")).await;
    assert_eq!(c.samples, 9);
    for n in [
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
    ] {
        assert_eq!(kind(&rm, n), "counter", "{n}");
    }
    assert_eq!(kind(&rm, "nv_gpu_utilization"), "gauge");

    // MLServer (Python client) writes `le="1.0"`: the aggregator would write `le="1"`
    // back, so those histograms go as gauges named as written (exact series).
    let (rm, c) = scrape_once(&target(addr, "/mlserver")).await;
    assert_eq!(kind(&rm, "model_infer_request_success"), "counter");
    assert_eq!(kind(&rm, "rest_server_requests_total"), "counter");
    assert_eq!(c.untyped_fallbacks, 2);
    assert_eq!(
        kind(&rm, "rest_server_request_duration_seconds_bucket"),
        "gauge"
    );
    assert_eq!(kind(&rm, "parallel_request_queue_count"), "gauge");
}

/// An `https://` target is scraped over TLS (reqwest with rustls): a plaintext
/// server behind it is a failed scrape, never a plaintext one.
#[tokio::test]
async fn https_targets_are_never_scraped_in_plaintext() {
    let addr = serve().await;
    let mut t = target(addr, "/ovms");
    t.url = format!("https://{addr}/ovms");
    t.timeout = Duration::from_secs(2);
    t.interval = Duration::from_secs(2);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = exposition(&client, &t, 1 << 20).await;
    assert!(
        r.is_err(),
        "https:// to a plaintext server: {:?}",
        r.map(|_| ())
    );
}

/// `tls_config` lets the scraper trust a private CA and verify the target under
/// `server_name`; without it the same target's certificate is refused.
#[tokio::test]
async fn https_targets_with_a_private_ca_through_tls_config() {
    let dir = tempfile::tempdir().unwrap();
    let certs = edgewatch_testkit::tls::Certs::generate(dir.path(), "model.edge.test");
    let server = edgewatch_testkit::http::Recorder::start_tls(200, &[], &certs, false).await;
    let mut t = target(server.addr, "/metrics");
    t.url = format!("https://{}/metrics", server.addr);
    let trusting = edgewatch_config::collector::PrometheusReceiverConfig {
        tls_config: edgewatch_config::parse(
            &format!(
                "{{ca_file: {}, server_name: model.edge.test}}",
                certs.ca.display()
            ),
            "test",
        )
        .unwrap(),
        ..Default::default()
    };
    let client = scrape::client(&trusting).unwrap();
    exposition(&client, &t, 1 << 20)
        .await
        .expect("scraped over TLS with the private CA");
    let public_roots = scrape::client(&Default::default()).unwrap();
    assert!(exposition(&public_roots, &t, 1 << 20).await.is_err());
}

#[tokio::test]
async fn openmetrics_is_negotiated_and_parsed() {
    let addr = serve().await;
    let (rm, c) = scrape_once(&target(addr, "/om")).await;
    assert_eq!(c.samples, 7);
    assert_eq!(kind(&rm, "req_total"), "counter");
    assert_eq!(kind(&rm, "req_created"), "gauge");
    assert_eq!(kind(&rm, "lat"), "histogram");
    let t = rm.scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "t")
        .unwrap();
    let Some(metric::Data::Gauge(g)) = &t.data else {
        panic!()
    };
    assert_eq!(g.data_points[0].time_unix_nano, 1_700_000_000_500_000_000);
}

fn open_buffer(dir: &std::path::Path) -> Buffer {
    Buffer::open(
        BufferOptions {
            path: dir.to_path_buf(),
            max_bytes: 64 << 20,
            full_policy: FullPolicy::DropOldest,
            max_age: None,
        },
        &prometheus::Registry::new(),
    )
    .expect("buffer")
}

fn read_all(buffer: &Buffer) -> Vec<ExportMetricsServiceRequest> {
    let from = buffer.first_seq().unwrap_or(0);
    buffer
        .read(from, 100_000, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|e| ExportMetricsServiceRequest::decode(e.payload).expect("OTLP"))
        .collect()
}

/// Whether a point of `name` in `reqs` is a stale marker (flagged NO_RECORDED_VALUE).
fn stale_in(reqs: &[ExportMetricsServiceRequest], name: &str) -> bool {
    reqs.iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == name)
        .any(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => g
                .data_points
                .iter()
                .any(|p| p.flags & 1 == 1 && p.value.is_none()),
            Some(metric::Data::Sum(s)) => s
                .data_points
                .iter()
                .any(|p| p.flags & 1 == 1 && p.value.is_none()),
            Some(metric::Data::Histogram(h)) => h.data_points.iter().any(|p| p.flags & 1 == 1),
            _ => false,
        })
}

/// Bad targets: up=0 or samples dropped, counted, never a crash; a removed target and
/// a disappearing series get stale markers; everything lands stamped in the buffer.
#[tokio::test]
async fn bad_targets_and_staleness_through_the_buffer() {
    let addr = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let buffer = open_buffer(dir.path());
    let reg = prometheus::Registry::new();
    let metrics = ScrapeMetrics::new(&reg).unwrap();
    let output = Output::new(buffer.clone(), Stamp::new("edge-a", "node-1"));
    let cfg = edgewatch_config::collector::PrometheusReceiverConfig {
        body_size_limit: edgewatch_config::collector::PromSize(1 << 20),
        ..Default::default()
    };
    let all: Vec<ScrapeTarget> = [
        "/slow", "/huge", "/invalid", "/dup", "/status", "/flip", "/ovms",
    ]
    .iter()
    .map(|p| target(addr, p))
    .collect();
    let (tx, rx) = tokio::sync::watch::channel(all.clone());
    let shutdown = CancellationToken::new();
    let client = scrape::client(&cfg).unwrap();
    let task = tokio::spawn(scrape::run(
        cfg,
        client,
        output,
        metrics,
        rx,
        shutdown.clone(),
    ));
    eventually(
        Duration::from_secs(15),
        "every kind of failure and drop counted, /flip's vanished series marked stale",
        || async {
            let m = Metrics::from_registry(&reg);
            let failed = |reason: &str| {
                let series = format!(r#"edgewatch_scrape_failures_total{{reason="{reason}"}}"#);
                m.sum_or_zero(&series) >= 1.0
            };
            let dropped = |reason: &str| {
                let series =
                    format!(r#"edgewatch_scrape_dropped_samples_total{{reason="{reason}"}}"#);
                m.sum_or_zero(&series) >= 1.0
            };
            [
                "timeout",
                "body_size_limit",
                "invalid_exposition",
                "http_status",
            ]
            .into_iter()
            .all(failed)
                && dropped("duplicate")
                && dropped("label_clash")
                && stale_in(&read_all(&buffer), "goes_away")
        },
    )
    .await;
    // The OVMS target goes away.
    tx.send(
        all.iter()
            .filter(|t| !t.url.ends_with("/ovms"))
            .cloned()
            .collect(),
    )
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "stale markers of the removed OVMS target",
        || async {
            let reqs = read_all(&buffer);
            ["ovms_requests_success", "ovms_request_time_us", "up"]
                .iter()
                .all(|name| stale_in(&reqs, name))
        },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap();

    let metrics = Metrics::from_registry(&reg);
    for reason in [
        "timeout",
        "body_size_limit",
        "invalid_exposition",
        "http_status",
    ] {
        assert!(
            metrics.get(&format!(
                r#"edgewatch_scrape_failures_total{{reason="{reason}"}}"#
            )) >= 1.0,
            "{reason}"
        );
    }
    assert!(metrics.get(r#"edgewatch_scrape_dropped_samples_total{reason="duplicate"}"#) >= 1.0);
    assert!(metrics.get(r#"edgewatch_scrape_dropped_samples_total{reason="label_clash"}"#) >= 1.0);
    assert!(metrics.get("edgewatch_scrape_stale_markers_total") >= 1.0);

    let reqs = read_all(&buffer);
    let rms: Vec<&ResourceMetrics> = reqs.iter().flat_map(|r| &r.resource_metrics).collect();
    // Stamped like OTLP pushes.
    for rm in &rms {
        let keys: Vec<&str> = rm
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert!(
            keys.contains(&"k8s.cluster.name") && keys.contains(&"k8s.node.name"),
            "{keys:?}"
        );
    }
    let ups: Vec<f64> = rms.iter().filter_map(|rm| gauge_value(rm, "up")).collect();
    assert!(ups.contains(&0.0) && ups.contains(&1.0), "{ups:?}");
    // `goes_away` disappeared from /flip: a NO_RECORDED_VALUE point.
    let stale_of = |name: &str| stale_in(&reqs, name);
    assert!(stale_of("goes_away"), "stale marker for a vanished series");
    assert!(!stale_of("kept"));
    // The removed OVMS target: all its series and its `up` go stale.
    assert!(
        stale_of("ovms_requests_success") && stale_of("ovms_request_time_us") && stale_of("up")
    );
    buffer.close();
}

/// A real Prometheus' own `/metrics` (Go client, histograms, summaries, both formats):
/// parsed without error, and every series name Prometheus stored from scraping itself
/// is among what the receiver produced.
#[tokio::test]
async fn real_prometheus_self_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prometheus = Prometheus::start_on(
        dir.path(),
        port,
        &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let base = prometheus.url("");
    let stored: BTreeSet<String> = eventually(
        Duration::from_secs(20),
        "Prometheus to store over 50 of its own series",
        || async {
            let names: BTreeSet<String> = prometheus
                .query("count by (__name__) ({job=\"self\"})")
                .await
                .iter()
                .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
                .collect();
            (names.len() > 50).then_some(names)
        },
    )
    .await;
    let t = ScrapeTarget {
        url: format!("{base}/metrics"),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        identity: TargetIdentity {
            job: "self".into(),
            instance: format!("127.0.0.1:{port}"),
            ..Default::default()
        },
        limits: None,
    };
    // Negotiated (OpenMetrics if offered) and plain text.
    let exp = exposition(&client, &t, 16 << 20)
        .await
        .expect("scrape prometheus");
    let (rm, c) = convert_all(&exp, &t.identity);
    assert!(c.samples > 100, "{c:?}");
    assert_eq!(c.duplicates + c.label_clashes, 0);
    let text_client = reqwest::Client::builder().build().unwrap();
    let body = text_client
        .get(format!("{base}/metrics"))
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let texp =
        scrape::parse::parse(&body, scrape::parse::Format::Text).expect("text format parses");
    let (trm, tc) = convert_all(&texp, &t.identity);
    assert_eq!(
        tc.untyped_fallbacks, 0,
        "Go client text output converts without fallback"
    );
    assert!(kind(&trm, "go_gc_duration_seconds") == "summary");
    assert!(kind(&trm, "prometheus_http_request_duration_seconds") == "histogram");
    // Series names as Prometheus would store them: from the sample names.
    let sample_names: BTreeSet<String> = texp
        .samples
        .iter()
        .map(|s| s.name.clone())
        .chain(exp.samples.iter().map(|s| s.name.clone()))
        .collect();
    let synthetic = [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ];
    let missing: Vec<&String> = stored
        .iter()
        .filter(|n| !sample_names.contains(*n) && !synthetic.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "stored by Prometheus but not parsed: {missing:?}"
    );
    assert!(!names(&rm).is_empty());
}
