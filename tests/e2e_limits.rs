//! Limits at the core, on the real aggregator over OTLP/gRPC: a rogue cluster
//! sending new series is held to `limits.max_series_per_cluster` (the rest is
//! dropped, counted and answered as a partial success) while another cluster is
//! untouched; and once a cardinality burst expires, the memory it took goes back.

use edgewatch_testkit::otlp::{cluster_gauges, grpc_client};
use edgewatch_testkit::roles::{Aggregator, AggregatorSpec};
use edgewatch_testkit::{eventually, rss_bytes};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
/// Points per export request.
const CHUNK: usize = 10_000;

/// Sends `total` new series of `cluster` in requests of [`CHUNK`]; returns the
/// data points the answers rejected and their messages.
async fn send_series(grpc: u16, cluster: &str, prefix: &str, total: usize) -> (i64, Vec<String>) {
    let mut client = grpc_client(grpc).await;
    let (mut rejected, mut messages) = (0, Vec::new());
    for start in (0..total).step_by(CHUNK) {
        let req = cluster_gauges(
            cluster,
            "burst_gauge",
            prefix,
            start..(start + CHUNK).min(total),
        );
        let answer = client
            .export(req)
            .await
            .unwrap_or_else(|s| panic!("export of {cluster} {start}: {s}"))
            .into_inner();
        if let Some(p) = answer.partial_success {
            rejected += p.rejected_data_points;
            if !p.error_message.is_empty() {
                messages.push(p.error_message);
            }
        }
    }
    (rejected, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_new_series_from_one_cluster_stop_at_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = AggregatorSpec {
        extra: "limits:\n  max_series_per_cluster: 100000\n",
        ..AggregatorSpec::default()
    };
    let mut agg = Aggregator::start_spec(BIN, dir.path(), &spec).await;
    let held_before = agg.metrics().await.get("edgewatch_store_series");

    let (rejected, messages) = send_series(agg.grpc, "rogue", "s", 1_000_000).await;
    assert_eq!(rejected, 900_000, "every point over the limit is answered");
    assert!(!messages.is_empty());
    assert!(
        messages
            .iter()
            .all(|m| m.contains("max_series_per_cluster") && m.contains("rogue")),
        "{:?}",
        &messages[..1]
    );
    // Another cluster is not held to the rogue one's count.
    let (rejected, _) = send_series(agg.grpc, "good", "g", 10).await;
    assert_eq!(rejected, 0);

    let m = agg.metrics().await;
    assert_eq!(
        m.get(r#"edgewatch_limit_dropped_samples_total{cluster="rogue",limit="max_series_per_cluster"}"#),
        900_000.0
    );
    assert_eq!(
        m.get("edgewatch_store_series") - held_before,
        100_010.0,
        "the limit's worth of the rogue cluster and the good one's"
    );
    let good = agg.federate(r#"burst_gauge{cluster="good"}"#).await;
    assert_eq!(
        good.lines()
            .filter(|l| l.starts_with("burst_gauge{"))
            .count(),
        10
    );
    agg.proc.stop();
}

/// RSS of the aggregator once it is idle: the lowest of a few samples.
async fn settled_rss(pid: u32) -> u64 {
    let mut low = u64::MAX;
    for _ in 0..10 {
        low = low.min(rss_bytes(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    low
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_comes_back_after_a_cardinality_burst_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = AggregatorSpec {
        extra: "store:\n  staleness: 3s\n  window: 3s\n",
        ..AggregatorSpec::default()
    };
    let mut agg = Aggregator::start_spec(BIN, dir.path(), &spec).await;
    let pid = agg.proc.pid();
    let own = agg.metrics().await.get("edgewatch_store_series");
    // Warm up with requests of the same shape and as many samples as the burst, but
    // few series, so the first allocations of every path and the log's bounded page
    // cache are in the baseline; then let those series expire.
    for _ in 0..15 {
        send_series(agg.grpc, "warm", "w", 2 * CHUNK).await;
    }
    let idle = |series: f64| {
        let agg = &agg;
        async move { agg.metrics().await.get("edgewatch_store_series") <= series }
    };
    eventually(Duration::from_secs(60), "the warm-up expires", || idle(own)).await;
    let before = settled_rss(pid).await;

    send_series(agg.grpc, "burst", "b", 300_000).await;
    let peak = rss_bytes(pid);
    eventually(Duration::from_secs(60), "the burst expires", || idle(own)).await;
    // The log keeps records for the store's rebuild (store.window) and trims them
    // every few seconds; the sweep gives the memory back once they are gone.
    let limit = before + before / 10;
    let after = eventually(Duration::from_secs(60), "RSS back within 10 %", || async {
        let now = settled_rss(pid).await;
        (now <= limit).then_some(now)
    })
    .await;
    eprintln!("RSS before {before} B, peak {peak} B, after {after} B");
    assert!(peak > limit, "the burst grew RSS ({peak} B vs {before} B)");
    agg.proc.stop();
}
