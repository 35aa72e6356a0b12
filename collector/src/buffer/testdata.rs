//! A realistic OTLP metrics payload for the buffer's tests and benchmarks:
//! 100 data points (10 metrics x 10 series) of a model server, as the
//! scrape receiver would produce them. Counters grow, gauges vary randomly
//! (which makes the values close to incompressible: a worst case).
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

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
                kv("instance", &format!("10.0.{}.{}:8080", mi % 3, s)),
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
