//! Hostile input at the edge, against the real binary: OTLP bodies made of tiny
//! elements are refused without being decoded into memory many times their size,
//! and no request or batch size stops a collector from forwarding.

use edgewatch_testkit::otlp::{gauge_request, post_otlp, post_otlp_json};
use edgewatch_testkit::roles::{Aggregator, AggregatorSpec, Collector, CollectorSpec};
use edgewatch_testkit::{eventually, free_port, Metrics};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// The collector's default `max_request_bytes`.
const BODY: usize = 4 << 20;

/// A collector whose forwarder has nowhere to send (nothing is accepted anyway).
async fn collector(dir: &std::path::Path, name: &str) -> Collector {
    let spec = CollectorSpec::new(name, "c1", "n1", free_port());
    Collector::start_spec(BIN, dir, &spec).await
}

/// How much a fresh collector's peak RSS grows while it answers `send`, and
/// the answer (HTTP status, body).
async fn growth<F, Fut>(dir: &std::path::Path, name: &str, send: F) -> (u64, (u16, String))
where
    F: FnOnce(u16) -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let c = collector(dir, name).await;
    let before = c.proc.peak_rss_bytes();
    let answer = send(c.http).await;
    let grown = c.proc.peak_rss_bytes().saturating_sub(before);
    eprintln!(
        "{name}: VmHWM {:.1} MiB before, grew by {:.1} MiB; answer {answer:?}",
        mib(before),
        mib(grown),
    );
    (grown, answer)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// 4 MiB of empty `ResourceMetrics` (2 bytes each), as protobuf and as OTLP/JSON
/// (3 bytes each), are refused as invalid naming the field, and the collector's
/// peak RSS grows by less than 16 times the body: the body is held a few times
/// (the HTTP read, a copy for the sink; the decoders' element caps bound any
/// decode to 8 times the body), never as 2 million decoded messages of ~100 bytes.
#[tokio::test]
async fn an_empty_resources_bomb_stays_under_a_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 16 * BODY as u64;
    let protobuf = [0x0a_u8, 0x00].repeat(BODY / 2);
    let (grown, (status, body)) = growth(dir.path(), "protobuf", |port| async move {
        let (status, _) = post_otlp(port, protobuf).await;
        (status, String::new())
    })
    .await;
    assert!(
        grown < cap,
        "protobuf bomb: peak RSS grew by {:.1} MiB",
        mib(grown)
    );
    assert_eq!(status, 400, "protobuf bomb: {body}");

    let mut json = String::with_capacity(BODY);
    json.push_str("{\"resourceMetrics\":[{}");
    while json.len() < BODY - 8 {
        json.push_str(",{}");
    }
    json.push_str("]}");
    let (grown, (status, body)) =
        growth(dir.path(), "json", |port| post_otlp_json(port, json)).await;
    assert!(
        grown < cap,
        "JSON bomb: peak RSS grew by {:.1} MiB",
        mib(grown)
    );
    assert_eq!(status, 400, "JSON bomb: {body}");
    assert!(body.contains("in resourceMetrics"), "{body}");
}

// ---------------------------------------------------------------------------------
// Batches and the aggregator's request limit.

/// The aggregator's `receivers.otlp.max_request_bytes` in these tests.
const CORE_LIMIT: &str = "128KiB";

async fn core(dir: &std::path::Path) -> Aggregator {
    let spec = AggregatorSpec {
        otlp_extra: &format!("    max_request_bytes: {CORE_LIMIT}\n"),
        ..AggregatorSpec::default()
    };
    Aggregator::start_spec(BIN, dir, &spec).await
}

/// A collector forwarding to `core` with `forward_extra` in its `forward:` block.
async fn edge(dir: &std::path::Path, core: &Aggregator, forward_extra: &str) -> Collector {
    let spec = CollectorSpec {
        forward_extra,
        ..CollectorSpec::new("edge", "c1", "n1", core.grpc)
    };
    Collector::start_spec(BIN, dir, &spec).await
}

/// One resource, one scope, `points` gauge points (about 50 bytes each).
fn points_request(metric: &str, points: usize) -> Vec<u8> {
    gauge_request(metric, metric, points)
}

/// Waits until the collector's buffer is empty: everything was settled.
async fn drained(c: &Collector, what: &str) -> Metrics {
    eventually(Duration::from_secs(30), what, || async {
        let m = c.metrics().await;
        (m.get("edgewatch_buffer_entries") == 0.0).then_some(m)
    })
    .await
}

/// Entries of ~50 KiB and a 128 KiB limit on both sides: the buffer's batches used
/// to take one entry past the limit (three entries, ~150 KiB), which the core
/// refused as too large, and the forwarder retried that batch forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let core = core(dir.path()).await;
    let c = edge(
        dir.path(),
        &core,
        &format!("  max_batch_bytes: {CORE_LIMIT}\n  linger: 1s\n"),
    )
    .await;
    let body = points_request("fill", 1000);
    assert!((40 << 10..64 << 10).contains(&body.len()), "{}", body.len());
    for _ in 0..5 {
        assert_eq!(post_otlp(c.http, body.clone()).await.0, 200);
    }
    let m = drained(&c, "the five requests delivered").await;
    assert_eq!(m.get("edgewatch_forward_sent_points_total"), 5000.0);
    assert_eq!(m.get("edgewatch_forward_split_batches_total"), 0.0);
}

/// A collector whose batches are larger than the core takes: a batch refused as
/// too large is halved until it fits (never retried as is), a single entry the core
/// refuses alone is dropped and counted, and what comes after it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_answers_halve_the_batch_and_drop_a_single_entry() {
    let dir = tempfile::tempdir().unwrap();
    let core = core(dir.path()).await;
    let c = edge(dir.path(), &core, "  max_batch_bytes: 1MiB\n  linger: 1s\n").await;
    let small = points_request("small", 1000);
    for _ in 0..5 {
        assert_eq!(post_otlp(c.http, small.clone()).await.0, 200);
    }
    assert_eq!(post_otlp(c.http, points_request("huge", 4000)).await.0, 200);
    for _ in 0..2 {
        assert_eq!(post_otlp(c.http, small.clone()).await.0, 200);
    }
    let m = drained(&c, "every entry settled").await;
    assert_eq!(m.get("edgewatch_forward_sent_points_total"), 7000.0);
    assert_eq!(
        m.get("edgewatch_forward_dropped_points_total{reason=\"too_large\"}"),
        4000.0
    );
    assert!(m.get("edgewatch_forward_split_batches_total") >= 1.0);
    assert!(
        c.proc
            .log_text()
            .contains("refused a single entry as too large"),
        "the drop is logged"
    );
}

/// A request larger than the collector's batch limit is cut into entries at its
/// resources (each then fits a batch the core takes); a request whose single scope
/// is over the limit is refused as too large (HTTP 413), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_are_split_at_resources_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let core = core(dir.path()).await;
    let c = edge(dir.path(), &core, "  max_batch_bytes: 64KiB\n").await;
    let mut req = ExportMetricsServiceRequest::default();
    for r in 0..6 {
        let one = ExportMetricsServiceRequest::decode(&points_request(&format!("r{r}"), 800)[..])
            .unwrap();
        req.resource_metrics.extend(one.resource_metrics);
    }
    let body = req.encode_to_vec();
    assert!(
        body.len() > 128 << 10,
        "over the core's limit: {}",
        body.len()
    );
    assert_eq!(post_otlp(c.http, body).await.0, 200);
    let m = drained(&c, "the split request delivered").await;
    assert_eq!(m.get("edgewatch_forward_sent_points_total"), 4800.0);
    assert!(m.get("edgewatch_forward_sent_batches_total") >= 3.0);

    let (status, _) = post_otlp(c.http, points_request("one_scope", 2000)).await;
    assert_eq!(status, 413, "a scope over the limit cannot be cut");
    let m = c.metrics().await;
    assert_eq!(
        m.get("edgewatch_refused_points_total{reason=\"too_large\"}"),
        2000.0
    );
    assert_eq!(
        m.get("edgewatch_received_requests_total{outcome=\"too_large\"}"),
        1.0
    );
}
