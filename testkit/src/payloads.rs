//! OTLP metrics payloads for the buffer's tests and benchmarks (here, not in the
//! collector library, so the production binary does not carry them), 100 data
//! points (10 metrics x 10 series) of a model server each:
//! * [`otlp_100_points`]: gauges with uniformly random values (near
//!   incompressible: the worst case the size targets are measured on);
//! * [`otlp_100_points_typical`]: what model servers actually export
//!   (counters with integer increments, a latency histogram with integer
//!   bucket counts, gauges with few distinct values, timestamps on a 15 s grid).
use crate::otlp::kv;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// Encoded `ExportMetricsServiceRequest` with 100 points; `batch` varies
/// timestamps and values deterministically.
pub fn otlp_100_points(batch: u64) -> Vec<u8> {
    let t0 = 1_760_000_000_000_000_000u64;
    let now = t0 + batch * 15_000_000_000;
    let mut rng_state = batch.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xdead_beef;
    let mut rnd = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        (rng_state >> 11) as f64 / (1u64 << 53) as f64
    };
    let models = [
        "resnet50",
        "bert-base",
        "yolov8n",
        "whisper-small",
        "llama-3-8b",
    ];
    let mut metrics = Vec::new();
    let names: [(&str, bool, bool); 10] = [
        ("model_request_total", true, true),
        ("model_request_errors_total", true, true),
        ("model_request_duration_seconds_sum", true, false),
        ("model_inference_latency_seconds", false, false),
        ("model_queue_depth", false, true),
        ("gpu_utilization_ratio", false, false),
        ("gpu_memory_used_bytes", false, true),
        ("process_resident_memory_bytes", false, true),
        ("model_tokens_generated_total", true, true),
        ("model_batch_size", false, true),
    ];
    for (mi, (name, is_sum, is_int)) in names.iter().enumerate() {
        let mut dps = Vec::new();
        for s in 0..10u64 {
            let model = models[(s % 5) as usize];
            let attrs = vec![
                kv("model", model),
                kv("version", if s < 5 { "v1" } else { "v2" }),
                kv("instance", format!("10.0.{}.{}:8080", mi % 3, s)),
            ];
            let value = if *is_int {
                let base = (mi as u64 + 1) * 1000 * (s + 1);
                let v = if *is_sum {
                    base + batch * (s + 3) * 7 + (rnd() * 10.0) as u64
                } else {
                    (base as f64 * (0.5 + rnd())) as u64
                };
                number_data_point::Value::AsInt(v as i64)
            } else {
                let v = if *is_sum {
                    (batch as f64) * 1.7 + rnd()
                } else if name.contains("ratio") {
                    (rnd() * 100.0).round() / 100.0
                } else {
                    0.01 + rnd() * 0.2
                };
                number_data_point::Value::AsDouble(v)
            };
            dps.push(NumberDataPoint {
                attributes: attrs,
                start_time_unix_nano: if *is_sum { t0 } else { 0 },
                time_unix_nano: now,
                exemplars: vec![],
                flags: 0,
                value: Some(value),
            });
        }
        let data = if *is_sum {
            metric::Data::Sum(Sum {
                data_points: dps,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })
        } else {
            metric::Data::Gauge(Gauge { data_points: dps })
        };
        metrics.push(Metric {
            name: name.to_string(),
            description: String::new(),
            unit: String::new(),
            metadata: vec![],
            data: Some(data),
        });
    }
    request(metrics)
}

fn request(metrics: Vec<Metric>) -> Vec<u8> {
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("k8s.cluster.name", "edge-store-0042"),
                    kv("k8s.node.name", "edge-node-3"),
                    kv("k8s.namespace.name", "models"),
                    kv("k8s.pod.name", "triton-7d9f8b6c5-x2k4p"),
                    kv("service.name", "triton"),
                ],
                dropped_attributes_count: 0,
                entity_refs: vec![],
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "edgewatch/scrape".into(),
                    version: "0.1.0".into(),
                    attributes: vec![],
                    dropped_attributes_count: 0,
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    req.encode_to_vec()
}

/// Deterministic hash of (batch, series, salt) to [0, 1).
fn h01(batch: u64, s: u64, salt: u64) -> f64 {
    let mut x = batch
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(s.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_add(salt.wrapping_mul(0x1656_67B1_9E37_79F9));
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Like [`otlp_100_points`], with the values model servers typically export:
/// cumulative counters growing by integer amounts, a latency histogram (12
/// explicit buckets, integer counts, sum in whole milliseconds), gauges with
/// few distinct values (queue depth 0-4, batch size 1/2/4/8, utilization in
/// percent, memory in 2 MiB pages that rarely change). Counters are a
/// function of `batch`, so consecutive batches are consecutive scrapes.
pub fn otlp_100_points_typical(batch: u64) -> Vec<u8> {
    let t0 = 1_760_000_000_000_000_000u64;
    let now = t0 + batch * 15_000_000_000;
    let models = [
        "resnet50",
        "bert-base",
        "yolov8n",
        "whisper-small",
        "llama-3-8b",
    ];
    let attrs = |mi: usize, s: u64| {
        vec![
            kv("model", models[(s % 5) as usize]),
            kv("version", if s < 5 { "v1" } else { "v2" }),
            kv("instance", format!("10.0.{}.{}:8080", mi % 3, s)),
        ]
    };
    // Monotonic: base + batch * rate + jitter, jitter < rate.
    let counter = |s: u64, salt: u64, rate: u64| {
        (s + 1) * 1000 * salt + batch * rate + (h01(batch, s, salt) * rate as f64) as u64
    };
    let num = |mi: usize, s: u64, sum: bool, v: number_data_point::Value| NumberDataPoint {
        attributes: attrs(mi, s),
        start_time_unix_nano: if sum { t0 } else { 0 },
        time_unix_nano: now,
        exemplars: vec![],
        flags: 0,
        value: Some(v),
    };
    let int = number_data_point::Value::AsInt;
    let dbl = number_data_point::Value::AsDouble;
    let mut metrics = Vec::new();
    let mut push = |name: &str, data: metric::Data| {
        metrics.push(Metric {
            name: name.to_string(),
            description: String::new(),
            unit: String::new(),
            metadata: vec![],
            data: Some(data),
        })
    };
    let sum = |dps: Vec<NumberDataPoint>| {
        metric::Data::Sum(Sum {
            data_points: dps,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })
    };
    let gauge = |dps: Vec<NumberDataPoint>| metric::Data::Gauge(Gauge { data_points: dps });
    let series = |f: &dyn Fn(u64) -> NumberDataPoint| (0..10u64).map(f).collect::<Vec<_>>();

    push(
        "model_request_total",
        sum(series(&|s| num(0, s, true, int(counter(s, 1, 40) as i64)))),
    );
    push(
        "model_request_errors_total",
        sum(series(&|s| {
            num(1, s, true, int((counter(s, 2, 2) / 64) as i64))
        })),
    );
    let bounds = vec![
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    ];
    let hist: Vec<HistogramDataPoint> = (0..10u64)
        .map(|s| {
            let total = counter(s, 3, 40);
            let mut left = total;
            let mut counts = Vec::with_capacity(bounds.len() + 1);
            for b in 0..bounds.len() {
                let c = left * (3 + (b as u64 % 4)) / 16;
                counts.push(c);
                left -= c;
            }
            counts.push(left);
            HistogramDataPoint {
                attributes: attrs(2, s),
                start_time_unix_nano: t0,
                time_unix_nano: now,
                count: total,
                sum: Some((total * 37 + counter(s, 4, 500)) as f64 / 1000.0),
                bucket_counts: counts,
                explicit_bounds: bounds.clone(),
                exemplars: vec![],
                flags: 0,
                min: None,
                max: None,
            }
        })
        .collect();
    push(
        "model_request_duration_seconds",
        metric::Data::Histogram(Histogram {
            data_points: hist,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    );
    push(
        "model_inference_latency_seconds",
        gauge(series(&|s| {
            let ms = 20 + (h01(batch, s, 5) * 8.0) as u64;
            num(3, s, false, dbl(ms as f64 / 1000.0))
        })),
    );
    push(
        "model_queue_depth",
        gauge(series(&|s| {
            num(4, s, false, int((h01(batch, s, 6) * 5.0) as i64))
        })),
    );
    push(
        "gpu_utilization_ratio",
        gauge(series(&|s| {
            let pct = 40 + (h01(batch, s, 7) * 50.0) as u64;
            num(5, s, false, dbl(pct as f64 / 100.0))
        })),
    );
    push(
        "gpu_memory_used_bytes",
        gauge(series(&|s| {
            let pages = 2000 + 100 * s + (batch / 40 + s) % 3;
            num(6, s, false, int((pages << 21) as i64))
        })),
    );
    push(
        "process_resident_memory_bytes",
        gauge(series(&|s| {
            let pages = 300_000 + 1000 * s + (h01(batch / 8, s, 8) * 64.0) as u64;
            num(7, s, false, int((pages * 4096) as i64))
        })),
    );
    push(
        "model_tokens_generated_total",
        sum(series(&|s| {
            num(8, s, true, int(counter(s, 9, 2000) as i64))
        })),
    );
    push(
        "model_batch_size",
        gauge(series(&|s| {
            num(9, s, false, int(1 << (h01(batch, s, 10) * 4.0) as i64))
        })),
    );
    request(metrics)
}
