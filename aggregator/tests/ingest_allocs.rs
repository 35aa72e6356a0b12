//! Ingest allocates nothing per data point once its series exist: a request
//! of the same shape arriving again (new values and timestamps) is decoded
//! and converted into the store with a small, constant number of
//! allocations. Its own test binary, so the counting allocator below sees
//! only this test; it counts on the test's thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use edgewatch_aggregator::convert::{Converter, SCRAPE_SCOPE};
use edgewatch_aggregator::store::{Store, StoreOptions};
use edgewatch_testkit::otlp::{kv, s};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, summary_data_point::ValueAtQuantile, AggregationTemporality,
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            COUNT.with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(|n| n.get())
}

/// `n` points of each of 10 metrics: a gauge, a counter, a delta sum, a
/// histogram, a delta histogram and a summary from an SDK, and a gauge, a
/// counter, a histogram and a summary scraped by the collector. Attributes
/// of every scalar type, a key to sanitise and two colliding keys. `step`
/// moves values and timestamps on.
fn request(n: usize, step: u64) -> Vec<u8> {
    let t = 1_700_000_000_000_000_000 + step * 10_000_000_000;
    let attrs = |i: usize| {
        vec![
            kv("model", s(&format!("model-{}", i % 25))),
            kv("version", any_value::Value::IntValue((i / 25) as i64)),
            kv("http.route", s("/v2/models/infer")),
            kv("gpu", any_value::Value::BoolValue(i.is_multiple_of(2))),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv("a.b", s("1")),
            kv("a_b", s("2")),
        ]
    };
    let number = |i: usize| NumberDataPoint {
        attributes: attrs(i),
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble((i as u64 + step) as f64)),
        ..Default::default()
    };
    let hist = |i: usize| HistogramDataPoint {
        attributes: attrs(i),
        time_unix_nano: t,
        count: 15 + step,
        sum: Some(3.5),
        bucket_counts: vec![1, 2, 3, 4, 5 + step, 0],
        explicit_bounds: vec![0.005, 0.01, 0.1, 1.0, 10.0],
        ..Default::default()
    };
    let summary = |i: usize| SummaryDataPoint {
        attributes: attrs(i),
        time_unix_nano: t,
        count: 10 + step,
        sum: 5.5,
        quantile_values: vec![
            ValueAtQuantile {
                quantile: 0.5,
                value: 0.1,
            },
            ValueAtQuantile {
                quantile: 0.99,
                value: 0.7,
            },
        ],
        ..Default::default()
    };
    let metric = |name: &str, unit: &str, data: Data| Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} help"),
        data: Some(data),
        ..Default::default()
    };
    let sum = |temporality: AggregationTemporality, monotonic: bool| {
        Data::Sum(Sum {
            data_points: (0..n).map(number).collect(),
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })
    };
    let histogram = |temporality: AggregationTemporality| {
        Data::Histogram(Histogram {
            data_points: (0..n).map(hist).collect(),
            aggregation_temporality: temporality as i32,
        })
    };
    let gauge = || {
        Data::Gauge(Gauge {
            data_points: (0..n).map(number).collect(),
        })
    };
    let summ = || {
        Data::Summary(Summary {
            data_points: (0..n).map(summary).collect(),
        })
    };
    use AggregationTemporality::{Cumulative, Delta};
    let native = vec![
        metric("queue.depth", "{request}", gauge()),
        metric("requests", "{request}", sum(Cumulative, true)),
        metric("jobs.done", "", sum(Delta, true)),
        metric("inference.duration", "s", histogram(Cumulative)),
        metric("batch.duration", "ms", histogram(Delta)),
        metric("rpc.duration", "s", summ()),
    ];
    let scraped = vec![
        metric("ovms_current_requests", "", gauge()),
        metric("ovms_requests_success", "", sum(Cumulative, true)),
        metric("ovms_request_time_us", "", histogram(Cumulative)),
        metric("ovms_infer_latency", "", summ()),
    ];
    let scope = |name: &str, metrics| ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: name.into(),
            version: "0.1.0".into(),
            ..Default::default()
        }),
        metrics,
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("ovms")),
                    kv("service.namespace", s("models")),
                    kv("service.instance.id", s("ovms-7f9c8d6b5-x2k4q")),
                    kv("k8s.cluster.name", s("edge-a")),
                    kv("k8s.node.name", s("edge-node-1")),
                    kv("k8s.pod.name", s("ovms-7f9c8d6b5-x2k4q")),
                    kv("model.name", s("resnet")),
                    kv("host.arch", s("arm64")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![
                scope("io.opentelemetry.sdk", native),
                scope(SCRAPE_SCOPE, scraped),
            ],
            ..Default::default()
        }],
    };
    prost::Message::encode_to_vec(&req)
}

/// Allocations of the steady-state conversion of a request of `n` points
/// per metric (the second request of that shape; the first created the
/// series).
fn steady_state(n: usize) -> u64 {
    let reg = prometheus::Registry::new();
    let store = Store::new(StoreOptions::default(), &reg);
    let conv = Converter::new(&reg);
    let now = 1_700_000_100_000;
    let first = request(n, 0);
    let second = request(n, 1);
    let ingest = |body: &[u8], now_ms| {
        let req = edgewatch_otlp::view::decode(body).expect("valid request");
        assert!(!req.normalized());
        let out = conv.ingest(req.request(), &store, now_ms);
        assert_eq!(out.accepted_points, 10 * n as u64);
        assert_eq!(out.dropped_points, 0);
    };
    ingest(&first, now);
    let series = store.series_count();
    let count = allocations(|| ingest(&second, now + 10_000));
    assert_eq!(store.series_count(), series, "no new series");
    count
}

#[test]
fn steady_state_ingest_does_not_allocate_per_point() {
    let small = steady_state(100);
    let large = steady_state(1000);
    eprintln!("allocations in steady state: {small} for 1,000 points, {large} for 10,000");
    assert!(small < 64, "{small} allocations for 1,000 points");
    assert!(
        large <= small + 16,
        "{large} allocations for 10,000 points, {small} for 1,000"
    );
}
