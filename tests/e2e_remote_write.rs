//! remote_write end to end: numbered points go SDK-like load → collector → aggregator →
//! a real VictoriaMetrics and a real Prometheus (remote-write receiver, out-of-order
//! window), while the aggregator is SIGKILLed several times and VictoriaMetrics is down
//! for a while. Afterwards every point the collector acknowledged is in both TSDBs,
//! exactly once, with its original timestamp.

use edgewatch_testkit::peers::{Prometheus, VictoriaMetrics};
use edgewatch_testkit::roles::{
    acked_through, loadgen_report, sequence_checked_load, Aggregator, Collector,
};
use edgewatch_testkit::{eventually, free_port, parse_samples};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const METRIC: &str = "edgewatch_loadgen_sequence_total";

fn remote_write(urls: &[String]) -> String {
    let mut out = String::from("remote_write:\n");
    for u in urls {
        out.push_str(&format!(
            "  - url: {u}\n    queue_config:\n      batch_send_deadline: 200ms\n      min_backoff: 50ms\n      max_backoff: 500ms\n"
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_points_reach_both_tsdbs_exactly_once_through_crashes_and_outages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm_dir = dir.path().join("vm");
    std::fs::create_dir_all(&vm_dir).expect("vm dir");
    let vm_port = free_port();
    let mut vm = VictoriaMetrics::start_on(&vm_dir, vm_port).await;
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("prometheus dir");
    let prom = Prometheus::start_with_config(
        &prom_dir,
        "global:\n  scrape_interval: 1m\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\n",
        &[],
    )
    .await;
    let extra = format!(
        "wal:\n  path: {}\n{}",
        dir.path().join("wal").display(),
        remote_write(&[vm.write_url(), prom.url("/api/v1/write")])
    );
    let mut agg = Aggregator::start_configured(BIN, dir.path(), free_port(), &extra).await;
    let col = Collector::start(BIN, dir.path(), "col", "edge-a", "n1", agg.grpc, "").await;

    // One point per series, so a series' samples in a TSDB are exactly that point's copies.
    let (rate, seconds) = (400u64, 16u64);
    let series = rate * seconds + 2_000;
    let load = sequence_checked_load(BIN, col.grpc, 2, rate, series, seconds);
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(
            rand::rng().random_range(1_500..3_500),
        ))
        .await;
        agg.proc.kill();
        agg.restart(dir.path()).await;
        if round == 1 {
            // The TSDB is down while the aggregator keeps acknowledging (stopped, not
            // killed: VictoriaMetrics acknowledges writes before they are on disk).
            vm.proc.stop();
            tokio::time::sleep(Duration::from_secs(3)).await;
            vm = VictoriaMetrics::start_on(&vm_dir, vm_port).await;
        }
    }
    let report = loadgen_report(&load.await.expect("loadgen thread"));
    let acked = acked_series(&report);
    assert!(
        acked.len() as u64 > rate * seconds / 2,
        "most points were acknowledged: {report}"
    );

    eventually(
        Duration::from_secs(60),
        "the collector's buffer to drain",
        || async { col.metrics().await.get("edgewatch_buffer_entries") == 0.0 },
    )
    .await;
    // The aggregator's store holds each point with the timestamp the load generator gave it.
    let at_core: BTreeMap<usize, i64> = parse_samples(&agg.federate(METRIC).await)
        .into_iter()
        .map(|s| {
            (
                index(s.label("series")),
                s.timestamp.expect("federate timestamps"),
            )
        })
        .collect();
    let missing: Vec<_> = acked.iter().filter(|s| !at_core.contains_key(*s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged points not at the core ({} there), first: {:?}",
        missing.len(),
        acked.len(),
        at_core.len(),
        &missing[..missing.len().min(5)]
    );
    eventually(
        Duration::from_secs(60),
        "remote_write to catch up",
        || async {
            let m = agg.metrics().await;
            m.sum("edgewatch_remote_write_pending_samples") == 0.0
                && vm.export(METRIC).await.len() >= acked.len()
        },
    )
    .await;

    let exported = vm.export(METRIC).await;
    let mut in_vm = BTreeMap::new();
    for e in &exported {
        let s = index(e.labels.get("series").map(String::as_str).unwrap_or("s?"));
        assert_eq!(
            e.samples.len(),
            1,
            "{s}: exactly one sample in VictoriaMetrics: {e:?}"
        );
        assert_eq!(
            e.labels.get("cluster").map(String::as_str),
            Some("edge-a"),
            "{e:?}"
        );
        in_vm.insert(s, e.samples[0].0);
    }
    for s in &acked {
        assert_eq!(
            in_vm.get(s),
            at_core.get(s),
            "{s}: in VictoriaMetrics with its original timestamp"
        );
    }
    // Prometheus: as many series as acknowledged points, one sample each.
    let count = |q: String| {
        let prom = &prom;
        async move {
            prom.query(&q)
                .await
                .first()
                .and_then(|r| r["value"][1].as_str().map(str::to_owned))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let window = "[10m]";
    eventually(
        Duration::from_secs(30),
        "Prometheus to hold every point",
        || async {
            count(format!("count(count_over_time({METRIC}{window}))")).await >= acked.len() as f64
        },
    )
    .await;
    let series_in_prom = count(format!("count(count_over_time({METRIC}{window}))")).await;
    let samples_in_prom = count(format!("sum(count_over_time({METRIC}{window}))")).await;
    assert_eq!(
        series_in_prom, samples_in_prom,
        "one sample per series in Prometheus"
    );
    assert!(series_in_prom <= at_core.len() as f64);
    let highest = agg.metrics().await;
    assert!(
        highest
            .all("edgewatch_remote_write_highest_sent_timestamp_seconds")
            .len()
            == 2
    );
    agg.proc.stop();
}

/// Series (`s<index>`) of every point the load generator saw acknowledged (one
/// point per series: sequence number 1).
fn acked_series(report: &serde_json::Value) -> BTreeSet<usize> {
    acked_through(report)
        .into_iter()
        .filter(|(_, seq)| *seq == 1)
        .map(|(i, _)| i)
        .collect()
}

/// The index of a `series="s000042"` label.
fn index(series: &str) -> usize {
    series[1..].parse().expect("series index")
}
