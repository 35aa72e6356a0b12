//! Decoding and conversion of one encoded 1,000-point OTLP request into the
//! store, as ingest does it (steady state: the series already exist, as after
//! the first export of a collector).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch_aggregator::convert::Converter;
use edgewatch_aggregator::store::{Store, StoreOptions};
use edgewatch_testkit::otlp::kv;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// 1,000 data points: 4 gauges, 4 counters, 2 histograms (5 buckets) × 100
/// points each (100 model/version combinations) across 10 pods.
fn request() -> ExportMetricsServiceRequest {
    let t = 1_700_000_000_000_000_000u64;
    let attrs = |i: usize| {
        vec![
            kv("model", format!("model-{}", i % 25)),
            kv("version", format!("v{}", i / 25)),
            kv("http.route", "/v2/models/infer"),
        ]
    };
    let np = |i: usize| NumberDataPoint {
        attributes: attrs(i),
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(i as f64)),
        ..Default::default()
    };
    let mut metrics = Vec::new();
    for m in 0..4 {
        metrics.push(Metric {
            name: format!("model.queue.depth.{m}"),
            unit: "{request}".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: (0..100).map(np).collect(),
            })),
            ..Default::default()
        });
        metrics.push(Metric {
            name: format!("model.requests.{m}"),
            unit: "{request}".into(),
            data: Some(Data::Sum(Sum {
                data_points: (0..100).map(np).collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    for m in 0..2 {
        metrics.push(Metric {
            name: format!("model.inference.duration.{m}"),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: (0..100)
                    .map(|i| HistogramDataPoint {
                        attributes: attrs(i),
                        time_unix_nano: t,
                        count: 15,
                        sum: Some(3.5),
                        bucket_counts: vec![1, 2, 3, 4, 5, 0],
                        explicit_bounds: vec![0.005, 0.01, 0.1, 1.0, 10.0],
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "ovms"),
                    kv("service.namespace", "models"),
                    kv("service.instance.id", "ovms-7f9c8d6b5-x2k4q"),
                    kv("k8s.cluster.name", "edge-a"),
                    kv("k8s.node.name", "edge-node-1"),
                    kv("k8s.pod.name", "ovms-7f9c8d6b5-x2k4q"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "edgewatch.collector".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn bench(c: &mut Criterion) {
    let reg = prometheus::Registry::new();
    let store = Store::new(StoreOptions::default(), &reg);
    let conv = Converter::new(&reg);
    let body = prost::Message::encode_to_vec(&request());
    let ingest = |now_ms| {
        let req = edgewatch_otlp::view::decode(&body).expect("valid request");
        conv.ingest(req.request(), &store, now_ms)
    };
    assert_eq!(ingest(1).accepted_points, 1000);
    let mut g = c.benchmark_group("convert");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("ingest_1000_points", |b| b.iter(|| ingest(2)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
