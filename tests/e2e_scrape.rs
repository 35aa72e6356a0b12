//! Scrape, end to end: the collector process scrapes a model-server fixture (OVMS's
//! documented series), the OTLP it makes goes through the buffer and the aggregator to
//! `/federate`, and what comes out is what a real Prometheus scraping the same target
//! stores: same names, labels and values (only `cluster`/`node` are extra).

use edgewatch_testkit::peers::Prometheus;
use edgewatch_testkit::roles::{Aggregator, Collector, CollectorSpec};
use edgewatch_testkit::{eventually, parse_samples};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const OVMS: &str = include_str!("../collector/tests/fixtures/ovms.prom");

/// A minimal HTTP/1.1 server answering every request with the fixture (text 0.0.4).
async fn serve_fixture(body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

const COMPARED_SCRAPE_SERIES: [&str; 3] = [
    "up",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
];

fn wanted(name: &str) -> bool {
    name.starts_with("ovms_") || COMPARED_SCRAPE_SERIES.contains(&name)
}

async fn prometheus_series(p: &Prometheus) -> Series {
    let mut out = Series::new();
    for s in p.query("{job=\"prometheus\"}").await {
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(s["metric"].clone()).expect("labels");
        let name = labels.remove("__name__").unwrap_or_default();
        if !wanted(&name) {
            continue;
        }
        let v: f64 = s["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("value");
        out.insert((name, labels), v);
    }
    out
}

async fn federated_series(a: &Aggregator) -> Series {
    let text = a.federate("{job=\"prometheus\"}").await;
    parse_samples(&text)
        .into_iter()
        .filter(|s| wanted(&s.name))
        .map(|s| {
            let mut labels = s.labels.clone();
            assert_eq!(labels.remove("cluster").as_deref(), Some("edge-a"), "{s:?}");
            assert_eq!(labels.remove("node").as_deref(), Some("node-1"), "{s:?}");
            ((s.name, labels), s.value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_series_match_a_real_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = serve_fixture(OVMS).await;
    let target = format!("127.0.0.1:{port}");
    let aggregator = Aggregator::start(BIN, dir.path()).await;
    let receivers = format!("  prometheus:\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_targets: [http://{target}/metrics]\n");
    let spec = CollectorSpec {
        receivers_extra: &receivers,
        top_extra: "discovery:\n  kubernetes: false\n",
        ..CollectorSpec::new("collector", "edge-a", "node-1", aggregator.grpc)
    };
    let collector = Collector::start_spec(BIN, dir.path(), &spec).await;
    let prometheus = Prometheus::start(
        dir.path(),
        &format!("  - job_name: prometheus\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .await;

    let expected_samples = parse_samples(OVMS).len();
    let prom = eventually(
        Duration::from_secs(60),
        "Prometheus to scrape the fixture",
        || async {
            let s = prometheus_series(&prometheus).await;
            (s.keys().filter(|(n, _)| n.starts_with("ovms_")).count() == expected_samples)
                .then_some(s)
        },
    )
    .await;
    let fed = eventually(
        Duration::from_secs(60),
        "the scraped series at /federate",
        || async {
            let s = federated_series(&aggregator).await;
            (s.keys().filter(|(n, _)| n.starts_with("ovms_")).count() == expected_samples
                && COMPARED_SCRAPE_SERIES
                    .iter()
                    .all(|n| s.keys().any(|(k, _)| k == n)))
            .then_some(s)
        },
    )
    .await;

    let pk: BTreeSet<_> = prom.keys().collect();
    let fk: BTreeSet<_> = fed.keys().collect();
    assert_eq!(fk, pk, "series (names and labels) differ from Prometheus'");
    for (k, v) in &prom {
        assert_eq!(fed[k], *v, "value of {k:?}");
    }
    // The names stay as scraped: no `_total` suffix, no otel_scope labels, no target_info.
    assert!(fed.keys().any(|(n, _)| n == "ovms_requests_success"));
    assert!(fed
        .keys()
        .all(|(_, l)| !l.keys().any(|k| k.starts_with("otel_scope"))));
    let all = aggregator.federate("{job=\"prometheus\"}").await;
    assert!(!all.contains("target_info"));
    let m = collector.metrics().await;
    // A failure reason's series appears with its first failure: none means none failed.
    assert_eq!(m.sum_or_zero("edgewatch_scrape_failures_total"), 0.0);
    assert!(m.get("edgewatch_scrape_samples_total") >= expected_samples as f64);
}
