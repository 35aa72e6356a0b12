//! Memory at the core after a cardinality burst: once the burst's series expire,
//! the aggregator's RSS (from `/proc`) comes back within 10 % of what it was
//! before. Alone in its test binary: RSS of a process sharing the host's cores with
//! another test's load is not what this measures.

use edgewatch_testkit::otlp::{send_series, SERIES_CHUNK as CHUNK};
use edgewatch_testkit::roles::{Aggregator, AggregatorSpec};
use edgewatch_testkit::{eventually, rss_bytes};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

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
    // Warm up as an aggregator that has seen traffic: requests of the same shape and
    // twice as many samples as the burst, then a third of its cardinality, so the first
    // allocations of every path and the bounded caches (the log's and the state's sled
    // page caches fill with the bytes written, not the series) are at working size in
    // the baseline; then let those series expire.
    for _ in 0..30 {
        send_series(agg.grpc, "warm", "w", 2 * CHUNK).await;
    }
    send_series(agg.grpc, "warm", "v", 100_000).await;
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
    let what = format!("RSS back within 10 % of {before} B (peak {peak} B)");
    let after = eventually(Duration::from_secs(60), &what, || async {
        let now = settled_rss(pid).await;
        (now <= limit).then_some(now)
    })
    .await;
    eprintln!("RSS before {before} B, peak {peak} B, after {after} B");
    assert!(peak > limit, "the burst grew RSS ({peak} B vs {before} B)");
    agg.proc.stop();
}
