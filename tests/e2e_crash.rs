//! Crash safety: the load generator sends numbered points to a collector that is
//! SIGKILLed and restarted at random moments, 20 times; afterwards the aggregator
//! holds every point the collector acknowledged, each exactly once.

use edgewatch_testkit::roles::{
    acked_through, loadgen_report, sequence_checked_load, Aggregator, Collector,
};
use edgewatch_testkit::{eventually, parse_samples, wait_ready, Proc};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start(BIN, dir.path()).await;
    let mut col = Collector::start(BIN, dir.path(), "col", "edge-a", "n1", agg.grpc, "").await;

    // One point per series (more series than points), so the store's latest sample of
    // each series *is* that point, and the set of series is the set of points.
    let (rate, seconds) = (1000, 25);
    let series = rate * seconds + 5000;
    let loadgen = sequence_checked_load(BIN, col.grpc, 4, rate, series, seconds);

    eventually(Duration::from_secs(10), "the load to arrive", || async {
        col.metrics().await.get("edgewatch_received_points_total") > 0.0
    })
    .await;
    for _ in 0..20 {
        // The kill lands at a random moment of the load: that is the test.
        let moment = rand::rng().random_range(300..900);
        tokio::time::sleep(Duration::from_millis(moment)).await;
        col.proc.kill();
        col.respawn(dir.path()).await;
    }

    let report = loadgen_report(&loadgen.await.expect("loadgen thread"));
    let acked_points = report["acked_points"].as_u64().expect("acked_points");
    let sent_points = report["sent_points"].as_u64().expect("sent_points");
    assert!(
        acked_points > rate * seconds / 2,
        "most points were acknowledged: {report}"
    );
    assert!(
        report["failed_points"].as_u64().unwrap_or(0) > 0,
        "the kills made some requests fail: {report}"
    );

    let mut acked = BTreeSet::new();
    for run in report["sequence"]["acked_through"]
        .as_array()
        .expect("acked_through runs")
    {
        if run["seq"].as_u64() != Some(1) {
            assert_eq!(run["seq"].as_u64(), Some(0), "one point per series: {run}");
            continue;
        }
        let from: usize = run["from"].as_str().expect("from")[1..]
            .parse()
            .expect("index");
        let to: usize = run["to"].as_str().expect("to")[1..].parse().expect("index");
        acked.extend(from..=to);
    }
    assert_eq!(acked.len() as u64, acked_points);

    eventually(
        Duration::from_secs(60),
        "the collector's buffer to drain",
        || async { col.metrics().await.get("edgewatch_buffer_entries") == 0.0 },
    )
    .await;
    let at_core: BTreeSet<usize> =
        parse_samples(&agg.federate("edgewatch_loadgen_sequence_total").await)
            .iter()
            .map(|s| {
                assert_eq!(s.value, 1.0, "{s:?}");
                s.label("series")[1..].parse().expect("series index")
            })
            .collect();
    let missing: Vec<_> = acked.difference(&at_core).take(10).collect();
    assert!(
        missing.is_empty(),
        "acknowledged points missing at the core (first 10): {missing:?}"
    );
    assert!(at_core.len() as u64 <= sent_points);

    // Exactly once: the core ingested as many points as it holds distinct points.
    let ingested = agg.metrics().await.get("edgewatch_ingest_points_total");
    assert_eq!(
        ingested,
        at_core.len() as f64,
        "a replayed batch was ingested twice"
    );
    let replays = agg
        .metrics()
        .await
        .get("edgewatch_ingest_duplicate_batches_total");
    eprintln!(
        "crash test: sent {sent_points}, acked {acked_points}, at core {}, replays dropped {replays}",
        at_core.len()
    );
    // A collector killed between the aggregator's answer and its own acknowledgement
    // re-sends those batches: the exact count above holds because they were dropped.
    assert!(
        replays > 0.0,
        "20 kills mid-stream made the collector replay batches the core already had"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_aggregator_loses_and_double_counts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agg = Aggregator::start(BIN, dir.path()).await;
    let col = Collector::start(BIN, dir.path(), "col", "edge-a", "n1", agg.grpc, "").await;

    // Few series, many points each: every series' value is its sequence number, so
    // its latest value at the core says whether its last point arrived. One request at
    // a time keeps the buffer in the order the points were numbered.
    let (rate, seconds, series) = (500, 12, 50);
    let started = std::time::Instant::now();
    let loadgen = sequence_checked_load(BIN, col.grpc, 1, rate, series, seconds);

    eventually(
        Duration::from_secs(10),
        "the first points at the core",
        || async { agg.metrics().await.get("edgewatch_ingest_points_total") > 0.0 },
    )
    .await;
    let config = agg.config.clone();
    // The last restart must leave the load running for a while: the restarted core
    // starts empty, and every series needs a point after it.
    let mut kills = 0;
    while kills < 4 && started.elapsed() < Duration::from_secs(seconds - 4) {
        kills += 1;
        // Kills at random moments of the load, outages of random length: that is the test.
        let up = rand::rng().random_range(600..1400);
        tokio::time::sleep(Duration::from_millis(up)).await;
        agg.proc.kill();
        let down = rand::rng().random_range(0..500);
        tokio::time::sleep(Duration::from_millis(down)).await;
        agg.proc = Proc::spawn(
            "aggregator",
            BIN,
            &["aggregator", "--config", config.to_str().expect("utf-8")],
            dir.path(),
        );
        wait_ready(&agg.url("/readyz")).await;
    }
    assert!(kills >= 2, "only {kills} kills during the load");

    let report = loadgen_report(&loadgen.await.expect("loadgen thread"));
    let acked_points = report["acked_points"].as_u64().expect("acked_points");
    assert_eq!(
        report["failed_points"].as_u64(),
        Some(0),
        "the collector accepts while the core is down: {report}"
    );
    assert_eq!(report["sent_points"].as_u64(), Some(acked_points));
    let acked = acked_through(&report);
    assert_eq!(acked.len() as u64, series, "{report}");

    eventually(
        Duration::from_secs(60),
        "the collector's buffer to drain",
        || async { col.metrics().await.get("edgewatch_buffer_entries") == 0.0 },
    )
    .await;
    // Each point forwarded and acknowledged exactly once, none dropped or rejected.
    assert_eq!(
        col.metrics().await.get("edgewatch_received_points_total"),
        acked_points as f64
    );
    assert_eq!(
        col.metrics()
            .await
            .get("edgewatch_forward_sent_points_total"),
        acked_points as f64,
        "every point forwarded once"
    );
    assert_eq!(
        col.metrics()
            .await
            .get("edgewatch_forward_rejected_points_total"),
        0.0
    );
    assert_eq!(
        col.metrics()
            .await
            .sum_or_zero("edgewatch_buffer_dropped_points_total"),
        0.0
    );

    // The restarted core holds every series at its last acknowledged value, and no
    // replayed batch went into its store a second time (it would arrive older than
    // what the store has).
    let at_core: BTreeMap<usize, u64> =
        parse_samples(&agg.federate("edgewatch_loadgen_sequence_total").await)
            .iter()
            .map(|s| {
                (
                    s.label("series")[1..].parse().expect("series index"),
                    s.value as u64,
                )
            })
            .collect();
    assert_eq!(at_core, acked, "latest value per series at the core");
    assert_eq!(
        agg.metrics()
            .await
            .get("edgewatch_store_out_of_order_samples_total"),
        0.0
    );
    eprintln!(
        "aggregator crash test: acked {acked_points}, replays dropped by the last aggregator {}",
        agg.metrics()
            .await
            .get("edgewatch_ingest_duplicate_batches_total")
    );
}
