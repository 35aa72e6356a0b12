//! Limits at the core, on the real aggregator over OTLP/gRPC: a rogue cluster
//! sending new series is held to `limits.max_series_per_cluster` (the rest is
//! dropped, counted and answered as a partial success) while another cluster is
//! untouched.

use edgewatch_testkit::otlp::send_series;
use edgewatch_testkit::roles::{Aggregator, AggregatorSpec};

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

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
