//! History at the core: what the aggregator acknowledged survives its SIGKILL (the
//! write-ahead log), and its store is rebuilt from the log at start, so `/federate`
//! continues where it was before any collector reports again.

use edgewatch_testkit::otlp::{gauge_request, post_otlp};
use edgewatch_testkit::parse_samples;
use edgewatch_testkit::roles::Aggregator;
use std::collections::BTreeMap;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// `series` label → (value, timestamp) of every `metric` sample `/federate` serves.
async fn federated(agg: &Aggregator, metric: &str) -> BTreeMap<String, (f64, Option<i64>)> {
    parse_samples(&agg.federate(metric).await)
        .into_iter()
        .filter(|s| s.name == metric)
        .map(|s| (s.label("series").to_string(), (s.value, s.timestamp)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_aggregator_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agg = Aggregator::start(BIN, dir.path()).await;
    for round in 0..5 {
        let (status, _) = post_otlp(
            agg.http_otlp,
            gauge_request("history_gauge", &format!("r{round}"), 400),
        )
        .await;
        assert_eq!(status, 200, "round {round} acknowledged");
    }
    let before = federated(&agg, "history_gauge").await;
    assert_eq!(before.len(), 2_000);

    agg.proc.kill();
    agg.restart(dir.path()).await;

    // Nothing was sent again: the store comes back from the log alone.
    let after = federated(&agg, "history_gauge").await;
    assert_eq!(
        after.len(),
        before.len(),
        "every acknowledged series is back"
    );
    for (series, sample) in &before {
        assert_eq!(
            after.get(series),
            Some(sample),
            "{series} as it was acknowledged"
        );
    }
    let m = agg.metrics().await;
    assert!(m.get("edgewatch_wal_bytes") > 0.0);
    agg.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_log_is_moved_aside_and_the_aggregator_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The default log directory is `<state.path>-wal`.
    let wal = dir.path().join("aggregator-state-wal");
    std::fs::create_dir_all(&wal).expect("wal dir");
    std::fs::write(wal.join("conf"), b"not a sled configuration\n").expect("conf");
    std::fs::write(wal.join("db"), vec![0x5a; 8192]).expect("db");

    let agg = Aggregator::start(BIN, dir.path()).await;
    let m = agg.metrics().await;
    assert_eq!(m.get("edgewatch_wal_corruptions_total"), 1.0);
    let aside = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("aggregator-state-wal.corrupt-")
        })
        .count();
    assert_eq!(aside, 1, "the corrupt log is kept aside for inspection");
    let (status, _) = post_otlp(agg.http_otlp, gauge_request("after_corruption", "a", 3)).await;
    assert_eq!(status, 200, "the new log takes writes");
    let mut agg = agg;
    agg.proc.stop();
}
