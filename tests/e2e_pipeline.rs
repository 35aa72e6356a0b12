//! Edge to core, end to end: an official OpenTelemetry SDK exporter → the collector
//! process → the aggregator process → `/federate` → a real Prometheus.

use edgewatch_testkit::otlp::post_otlp_json;
use edgewatch_testkit::peers::Prometheus;
use edgewatch_testkit::roles::{loadgen_report, Aggregator, Collector};
use edgewatch_testkit::{eventually, free_port, get, now_ms, parse_samples, write, Proc, Sample};
use opentelemetry::metrics::MeterProvider;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::Resource;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// Records a counter, a gauge and a histogram through the Rust OpenTelemetry SDK and
/// flushes them to `endpoint` over gRPC or HTTP/protobuf.
fn sdk_send(service: &str, grpc: bool, endpoint: String) {
    let exporter = if grpc {
        opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
    } else {
        opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/metrics"))
            .build()
    }
    .expect("exporter");
    let provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    let meter = provider.meter("e2e");
    let attrs = [KeyValue::new("model", "housing")];
    let requests = meter
        .u64_counter("e2e.requests")
        .with_description("Requests served.")
        .build();
    requests.add(3, &attrs);
    requests.add(2, &attrs);
    let depth = meter.i64_gauge("e2e.queue.depth").build();
    depth.record(7, &attrs);
    let latency = meter
        .f64_histogram("e2e.latency")
        .with_unit("s")
        .with_boundaries(vec![0.1, 0.5, 1.0])
        .build();
    for v in [0.05, 0.3, 2.0] {
        latency.record(v, &attrs);
    }
    provider.force_flush().expect("flush");
    provider.shutdown().expect("shutdown");
}

async fn send_with_sdk(service: &'static str, grpc: bool, endpoint: String) {
    // The SDK's periodic reader runs on its own thread; the HTTP exporter blocks.
    tokio::task::spawn_blocking(move || sdk_send(service, grpc, endpoint))
        .await
        .expect("sdk thread");
}

fn find<'a>(
    samples: &'a [Sample],
    name: &str,
    job: &str,
    extra: &[(&str, &str)],
) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name && s.label("job") == job && extra.iter().all(|(k, v)| s.label(k) == *v)
    })
}

/// An aggregator and a collector (`collector` on `cluster`/`node`) forwarding to it.
async fn core_and_collector(dir: &Path, cluster: &str, node: &str) -> (Aggregator, Collector) {
    let agg = Aggregator::start(BIN, dir).await;
    let col = Collector::start(BIN, dir, "collector", cluster, node, agg.grpc, "").await;
    (agg, col)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_reach_federate_and_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (agg, col) = core_and_collector(dir.path(), "edge-a", "node-1").await;

    let before = now_ms();
    send_with_sdk("sdk-grpc", true, format!("http://127.0.0.1:{}", col.grpc)).await;
    send_with_sdk("sdk-http", false, format!("http://127.0.0.1:{}", col.http)).await;

    let text = eventually(
        Duration::from_secs(20),
        "both senders' series on /federate",
        || async {
            let t = agg.federate(r#"{__name__=~"e2e_.*"}"#).await;
            let s = parse_samples(&t);
            (find(&s, "e2e_requests_total", "sdk-grpc", &[]).is_some()
                && find(&s, "e2e_requests_total", "sdk-http", &[]).is_some())
            .then_some(t)
        },
    )
    .await;

    for ty in [
        "# TYPE e2e_requests_total counter",
        "# TYPE e2e_queue_depth gauge",
        "# TYPE e2e_latency_seconds histogram",
    ] {
        assert!(text.contains(ty), "missing {ty:?} in\n{text}");
    }
    let samples = parse_samples(&text);
    for job in ["sdk-grpc", "sdk-http"] {
        let c = find(&samples, "e2e_requests_total", job, &[]).expect("counter");
        assert_eq!(c.value, 5.0, "{c:?}");
        assert_eq!(c.label("cluster"), "edge-a");
        assert_eq!(c.label("node"), "node-1");
        assert_eq!(c.label("model"), "housing");
        assert_eq!(c.label("otel_scope_name"), "e2e");
        let ts = c.timestamp.expect("federate keeps the original timestamp");
        assert!(
            ts >= before - 1000 && ts <= now_ms(),
            "timestamp {ts} not the SDK's collection time"
        );

        assert_eq!(
            find(&samples, "e2e_queue_depth", job, &[])
                .expect("gauge")
                .value,
            7.0
        );
        let bucket = |le: &str| {
            find(&samples, "e2e_latency_seconds_bucket", job, &[("le", le)]).map(|s| s.value)
        };
        assert_eq!(bucket("0.1"), Some(1.0), "{text}");
        assert_eq!(bucket("0.5"), Some(2.0));
        assert_eq!(bucket("1"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(
            find(&samples, "e2e_latency_seconds_count", job, &[]).map(|s| s.value),
            Some(3.0)
        );
        let sum = find(&samples, "e2e_latency_seconds_sum", job, &[])
            .expect("sum")
            .value;
        assert!((sum - 2.35).abs() < 1e-9, "sum {sum}");
    }

    // A real Prometheus federating from the aggregator sees the same value.
    let scrape = format!(
        "  - job_name: edgewatch-federate\n    honor_labels: true\n    metrics_path: /federate\n    params:\n      'match[]': ['{{__name__=~\"e2e_.*\"}}']\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        agg.http
    );
    let prom = Prometheus::start(dir.path(), &scrape).await;
    let result = eventually(
        Duration::from_secs(30),
        "Prometheus to have federated the counter",
        || async {
            let r = prom
                .query(r#"e2e_requests_total{cluster="edge-a",job="sdk-grpc"}"#)
                .await;
            (!r.is_empty()).then_some(r)
        },
    )
    .await;
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["metric"]["cluster"], "edge-a");
    assert_eq!(result[0]["metric"]["node"], "node-1");
    assert_eq!(result[0]["value"][1], "5");
    let hist = prom
        .query(
            r#"histogram_quantile(0.5, sum by (le) (e2e_latency_seconds_bucket{job="sdk-http"}))"#,
        )
        .await;
    assert_eq!(hist.len(), 1, "{hist:?}");
    let median: f64 = hist[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    // Of 0.05, 0.3 and 2.0 the median falls in (0.1, 0.5]: linear interpolation gives 0.3.
    assert!((median - 0.3).abs() < 1e-9, "{median}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sent_while_the_aggregator_is_down_arrives_after_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut agg, col) = core_and_collector(dir.path(), "edge-b", "node-7").await;

    agg.proc.stop();
    let now_ns = now_ms() * 1_000_000;
    for i in 0..20 {
        // OTLP/JSON, as curl-based senders use it.
        let body = format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"outage"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"e2e_outage","gauge":{{"dataPoints":[{{"timeUnixNano":"{}","asDouble":{i},"attributes":[{{"key":"i","value":{{"stringValue":"{i}"}}}}]}}]}}}}]}}]}}]}}"#,
            now_ns + i
        );
        let (status, text) = post_otlp_json(col.http, body).await;
        assert_eq!(
            status, 200,
            "the collector accepts while the core is down: {text}"
        );
    }
    // Numbered points, many per series, also while the core is down.
    let endpoint = format!("http://127.0.0.1:{}", col.grpc);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args([
                "loadgen",
                "--endpoint",
                &endpoint,
                "--rate",
                "4000",
                "--batch",
                "20",
                "--series",
                "20",
            ])
            .args(["--duration", "3s", "--sequence-check", "--json", "--quiet"])
            .output()
            .expect("run loadgen")
    })
    .await
    .expect("loadgen thread");
    let report = loadgen_report(&out);
    assert_eq!(
        report["failed_points"], 0,
        "the collector accepts while the core is down: {report}"
    );
    let acked = report["acked_points"].as_f64().expect("acked_points");
    assert!(
        col.metrics().await.get("edgewatch_buffer_entries") >= 1.0,
        "data waits in the buffer"
    );
    eventually(Duration::from_secs(10), "forward retries", || async {
        col.metrics().await.get("edgewatch_forward_retries_total") >= 1.0
    })
    .await;

    agg.restart(dir.path()).await;
    let samples = eventually(
        Duration::from_secs(30),
        "all 20 series after the core returned",
        || async {
            let s = parse_samples(&agg.federate("e2e_outage").await);
            (s.len() == 20).then_some(s)
        },
    )
    .await;
    for s in &samples {
        assert_eq!(s.label("cluster"), "edge-b");
        assert_eq!(s.label("node"), "node-7");
        assert_eq!(s.label("job"), "outage");
        assert_eq!(s.value.to_string(), s.label("i"), "{s:?}");
    }
    eventually(Duration::from_secs(10), "the buffer to drain", || async {
        col.metrics().await.get("edgewatch_buffer_entries") == 0.0
    })
    .await;
    // Batches go out zstd-compressed: loadgen's points take ~46 bytes each as OTLP
    // protobuf, a few once compressed.
    let m = col.metrics().await;
    let sent_bytes = m.get("edgewatch_forward_sent_bytes_total");
    let sent_points = m.get("edgewatch_forward_sent_points_total");
    assert!(
        sent_bytes > 0.0 && sent_bytes / sent_points < 20.0,
        "{sent_bytes} bytes on the wire for {sent_points} points"
    );

    // Every numbered point arrived once, in order per series: the newest value of each
    // series is its last sequence number and the store never saw an older sample
    // after a newer one.
    let last = eventually(Duration::from_secs(10), "all numbered points", || async {
        let ingested = agg.metrics().await.get("edgewatch_ingest_points_total");
        (ingested == acked + 20.0).then_some(parse_samples(
            &agg.federate("edgewatch_loadgen_sequence_total").await,
        ))
    })
    .await;
    let runs = report["sequence"]["acked_through"]
        .as_array()
        .expect("runs");
    assert_eq!(last.len(), 20);
    for s in &last {
        let idx: usize = s.label("series")[1..].parse().expect("index");
        let want = runs
            .iter()
            .find(|r| {
                let a: usize = r["from"].as_str().unwrap_or("s0")[1..]
                    .parse()
                    .unwrap_or(usize::MAX);
                let b: usize = r["to"].as_str().unwrap_or("s0")[1..].parse().unwrap_or(0);
                (a..=b).contains(&idx)
            })
            .and_then(|r| r["seq"].as_f64())
            .expect("series in the report");
        assert_eq!(s.value, want, "{s:?}");
    }
    assert_eq!(
        agg.metrics()
            .await
            .get("edgewatch_store_out_of_order_samples_total"),
        0.0,
        "samples arrived in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_report_themselves_to_the_fleet_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (agg, col) = core_and_collector(dir.path(), "edge-c", "node-3").await;
    // The harness turns self metrics off for exact counting; a second collector keeps them on.
    let yaml = std::fs::read_to_string(&col.config)
        .expect("config")
        .replace("self_metrics_interval: 0", "self_metrics_interval: 1s")
        .replace(
            &format!("127.0.0.1:{}", col.grpc),
            &format!("127.0.0.1:{}", free_port()),
        )
        .replace(
            &format!("127.0.0.1:{}", col.http),
            &format!("127.0.0.1:{}", free_port()),
        )
        .replace(
            &format!("127.0.0.1:{}", col.admin),
            &format!("127.0.0.1:{}", free_port()),
        )
        .replace("collector-buffer", "self-buffer")
        .replace("node: node-3", "node: node-4");
    let cfg = dir.path().join("self.yaml");
    write(&cfg, &yaml);
    let mut reporting = Proc::spawn(
        "self",
        BIN,
        &["collector", "--config", cfg.to_str().expect("utf-8")],
        dir.path(),
    );

    let info = eventually(
        Duration::from_secs(20),
        "the collector's own metrics at the core",
        || async {
            let s = parse_samples(&agg.federate(r#"{job="edgewatch-collector"}"#).await);
            s.iter()
                .find(|s| s.name == "edgewatch_collector_info")
                .cloned()
        },
    )
    .await;
    assert_eq!(info.label("cluster"), "edge-c");
    assert_eq!(info.label("node"), "node-4");
    assert_eq!(info.label("version"), env!("CARGO_PKG_VERSION"));
    assert!(
        !info.label("instance").is_empty() && info.label("instance") == info.label("instance_id")
    );
    let (_, body) = get(&agg.url("/api/v1/fleet")).await.expect("fleet API");
    let fleet: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let nodes = &fleet["data"]["clusters"][0]["nodes"];
    let node = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node"] == "node-4"))
        .expect("node-4 in the fleet");
    assert_eq!(node["up"], true, "{fleet}");
    assert_eq!(node["collector_version"], env!("CARGO_PKG_VERSION"));
    assert!(node["buffer_entries"].is_number(), "{node}");
    // The quiet collector sends nothing of its own.
    assert!(!fleet.to_string().contains("node-3"), "{fleet}");
    reporting.stop();
}
