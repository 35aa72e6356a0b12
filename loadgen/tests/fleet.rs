//! The fleet mode against an OTLP stand-in that records every export with its headers:
//! each simulated collector's batches carry the forwarder's headers with contiguous
//! sequence numbers, every entry holds the configured series, backlogs carry their
//! original (past) timestamps, and retried batches are sent again unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use edgewatch_loadgen::fleet::shape::{COLLECTOR_JOB, MODEL_JOB};
use edgewatch_loadgen::{run_fleet, FleetArgs};
use edgewatch_otlp::{BatchInfo, ExportMetricsServiceRequest};
use edgewatch_testkit::otlp_stand_in::{Answer, Export, OtlpStandIn};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use tonic::Code;

fn args(endpoint: &str) -> FleetArgs {
    FleetArgs {
        collectors: 3,
        clusters: 2,
        series: 40,
        interval: Duration::from_millis(200),
        duration: Duration::from_millis(1000),
        timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(20),
        ..FleetArgs::new(endpoint)
    }
}

fn info(e: &Export) -> BatchInfo {
    let get = |k: &str| {
        e.metadata
            .get(k)
            .map(|v| v.to_str().expect("ascii header").to_string())
    };
    BatchInfo::from_headers(get)
        .expect("headers parse")
        .expect("batch headers present")
}

/// Prometheus samples in a request (a histogram point: buckets + sum + count).
fn samples(req: &ExportMetricsServiceRequest) -> usize {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match m.data.as_ref().expect("data") {
            Data::Gauge(g) => g.data_points.len(),
            Data::Sum(s) => s.data_points.len(),
            Data::Histogram(h) => h
                .data_points
                .iter()
                .map(|p| p.bucket_counts.len() + 2)
                .sum(),
            other => panic!("unexpected {other:?}"),
        })
        .sum()
}

fn resource_attr(req: &ExportMetricsServiceRequest, i: usize, key: &str) -> String {
    let attrs = &req.resource_metrics[i]
        .resource
        .as_ref()
        .expect("resource")
        .attributes;
    match attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
    {
        Some(v) => match &v.value {
            Some(AnyValue::StringValue(s)) => s.clone(),
            other => panic!("{key}: {other:?}"),
        },
        None => panic!("{key} missing"),
    }
}

/// Per collector id: (first seq, entries) of its accepted batches in arrival order.
fn batches_by_collector(exports: &[Export]) -> BTreeMap<String, Vec<(u64, usize)>> {
    let mut out: BTreeMap<String, Vec<(u64, usize)>> = BTreeMap::new();
    for e in exports.iter().filter(|e| matches!(e.answer, Answer::Ok)) {
        let i = info(e);
        assert!(
            i.floor <= i.first_seq,
            "floor {} above first seq {}",
            i.floor,
            i.first_seq
        );
        out.entry(i.collector_id)
            .or_default()
            .push((i.first_seq, i.entry_lens.len()));
    }
    out
}

#[tokio::test]
async fn collectors_send_contiguous_sequences_of_configured_series() {
    let stand_in = OtlpStandIn::start(Answer::Ok, vec![]).await;
    let mut a = args(&stand_in.endpoint());
    // The first cluster (nodes 0 and 1 of 0..3) starts with 2 s = 10 rounds of history.
    a.backlog = Some(Duration::from_secs(2));
    let started_ms = edgewatch_testkit::otlp::now_nanos() / 1_000_000;
    let report = run_fleet(a).await.expect("fleet runs");
    let exports = stand_in.exports();

    assert_eq!(report.lost_entries, 0, "{report:?}");
    assert_eq!(report.acked_entries, report.entries);
    assert_eq!(report.acked_samples, report.entries * 40);
    assert_eq!(report.expected_samples, report.acked_samples);
    assert_eq!(report.backlog_collectors, 2);
    assert_eq!(report.backlog_samples, 2 * 10 * 40);
    assert!(report.backlog_drained_s.is_some());

    let by_collector = batches_by_collector(&exports);
    assert_eq!(by_collector.len(), 3, "three distinct instance ids");
    let mut total = 0;
    for (id, batches) in &by_collector {
        let mut next = 0;
        for &(first, n) in batches {
            assert_eq!(first, next, "collector {id}: batches {batches:?}");
            next += n as u64;
        }
        total += next;
    }
    assert_eq!(total, report.entries);

    let mut clusters = BTreeMap::new();
    let mut oldest_ms = u64::MAX;
    for e in &exports {
        let i = info(e);
        // Entries are concatenated requests: one model server and one collector each.
        let n = i.entry_lens.len();
        assert_eq!(e.request.resource_metrics.len(), 2 * n);
        assert_eq!(samples(&e.request), 40 * n);
        for k in 0..n {
            assert_eq!(resource_attr(&e.request, 2 * k, "service.name"), MODEL_JOB);
            assert_eq!(
                resource_attr(&e.request, 2 * k + 1, "service.name"),
                COLLECTOR_JOB
            );
            assert_eq!(
                resource_attr(&e.request, 2 * k + 1, "service.instance.id"),
                i.collector_id
            );
        }
        let cluster = resource_attr(&e.request, 0, "k8s.cluster.name");
        clusters
            .entry(cluster)
            .or_insert_with(std::collections::BTreeSet::new)
            .insert(i.collector_id);
        let info = &e.request.resource_metrics[1].scope_metrics[0].metrics[0];
        if let Some(Data::Gauge(g)) = &info.data {
            oldest_ms = oldest_ms.min(g.data_points[0].time_unix_nano / 1_000_000);
        }
    }
    let sizes: Vec<usize> = clusters.values().map(|c| c.len()).collect();
    assert_eq!(
        clusters.keys().collect::<Vec<_>>(),
        ["fleet-c000", "fleet-c001"]
    );
    assert_eq!(sizes, [2, 1]);
    // The backlog's first round is 2 s before the start.
    assert!(
        oldest_ms + 1_500 <= started_ms,
        "oldest {oldest_ms}, start {started_ms}"
    );
}

#[tokio::test]
async fn retried_batches_go_again_unchanged() {
    let stand_in = OtlpStandIn::start(
        Answer::Ok,
        vec![Answer::Error(Code::Unavailable, "restarting".into())],
    )
    .await;
    let mut a = args(&stand_in.endpoint());
    a.collectors = 1;
    a.clusters = 1;
    let report = run_fleet(a).await.expect("fleet runs");
    let exports = stand_in.exports();
    assert_eq!(report.lost_entries, 0);
    assert_eq!(report.retries, 1);
    assert_eq!(report.errors.get("UNAVAILABLE"), Some(&1));
    let (failed, retried) = (info(&exports[0]), info(&exports[1]));
    assert_eq!(failed, retried);
    assert_eq!(exports[0].request, exports[1].request);
    assert_eq!(stand_in.accepted_points() as u64, report.acked_points);
}

#[tokio::test]
async fn rejected_batches_are_counted_lost() {
    let stand_in = OtlpStandIn::start(
        Answer::Ok,
        vec![Answer::Error(Code::InvalidArgument, "bad".into())],
    )
    .await;
    let mut a = args(&stand_in.endpoint());
    a.collectors = 1;
    a.clusters = 1;
    let report = run_fleet(a).await.expect("fleet runs");
    assert_eq!(report.lost_entries, 1);
    assert_eq!(report.acked_entries, report.entries - 1);
    assert_eq!(report.errors.get("INVALID_ARGUMENT"), Some(&1));
}

#[tokio::test]
async fn bad_flags_are_refused() {
    let mut a = args("http://127.0.0.1:1");
    a.series = 2;
    let e = run_fleet(a).await.unwrap_err().to_string();
    assert!(e.contains("--series 2"), "{e}");
}
