//! What one simulated edge node sends per scrape interval: one buffer entry (an encoded
//! `ExportMetricsServiceRequest`) shaped like a collector that scraped a model server and
//! its own metrics, stamped with `k8s.cluster.name` / `k8s.node.name`.
//!
//! The entry is encoded once per node with placeholder timestamps and values
//! ([`NodeTemplate::new`]); each round copies it and patches those 8-byte fields in place,
//! so building an entry costs a memcpy and a few hundred stores.
//!
//! Series (Prometheus samples per round, `series` in total):
//! * `edgewatch_collector_info{instance_id,version}` under job `edgewatch-collector`;
//! * the model server (job `kubernetes-pods`): `process_cpu_seconds_total`,
//!   `process_resident_memory_bytes`, then per model (33 series each, as many as fit):
//!   counters `nv_inference_request_success`, `nv_inference_request_failure`,
//!   `nv_inference_count`, `nv_inference_exec_count`, gauge
//!   `nv_inference_pending_request_count`, histograms `nv_inference_request_duration_seconds`
//!   and `nv_inference_queue_duration_seconds` (11 bounds: 12 buckets + sum + count);
//! * the rest GPU gauges (`nv_gpu_utilization`, `nv_gpu_memory_used_bytes`,
//!   `nv_gpu_power_usage` per `gpu_uuid`).
//!
//! Counters grow every round and gauges wobble; histogram points repeat the same counts
//! (the volume, not the distribution, is what is simulated).

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// The scope under which the collector's scrape receiver sends scraped metrics; the
/// aggregator keeps their Prometheus names and labels.
pub const SCRAPE_SCOPE: &str = "edgewatch.scrape";
/// Job of the simulated model servers.
pub const MODEL_JOB: &str = "kubernetes-pods";
/// Job of the collectors' own metrics.
pub const COLLECTOR_JOB: &str = "edgewatch-collector";
/// Fewest series a node can have: the collector's info and the server's two process series.
pub const MIN_SERIES: usize = 3;
/// Series of one model.
pub const MODEL_SERIES: usize = 5 + 2 * HISTOGRAM_SERIES;
const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const HISTOGRAM_SERIES: usize = BOUNDS.len() + 1 + 2;
const GPU_METRICS: [&str; 3] = [
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
];

/// Placeholder of every `time_unix_nano`; a value no real timestamp has.
const TIME_MARK: u64 = 0x7e57_c0de_5eed_0001;
/// Placeholder of value `i`: `VALUE_MARK + i` as f64 bits (a NaN payload no real value has).
const VALUE_MARK: u64 = 0x7ffc_d00d_0000_0000;
const AGGREGATION_CUMULATIVE: i32 = 2;

/// The template could not be laid out (a placeholder was found more or fewer times
/// than written: cannot happen with the constants above, checked anyway).
#[derive(Debug, thiserror::Error)]
#[error("fleet entry template: found {found} placeholders, wrote {wrote}")]
pub struct TemplateError {
    found: usize,
    wrote: usize,
}

/// Who a node is.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub cluster: String,
    pub node: String,
    /// The simulated collector's instance id (`x-edgewatch-collector-id`).
    pub instance_id: String,
    /// Index of the node in the fleet (its pod IP and GPU ids derive from it).
    pub index: usize,
}

/// How a patched value moves from round to round.
#[derive(Debug, Clone, Copy)]
enum Motion {
    /// `base + rate * round`.
    Counter { base: f64, rate: f64 },
    /// `base` plus a deterministic wobble per round.
    Gauge { base: f64, spread: f64 },
}

impl Motion {
    fn at(self, round: u64, salt: u64) -> f64 {
        match self {
            Motion::Counter { base, rate } => base + rate * round as f64,
            Motion::Gauge { base, spread } => {
                let w = (salt
                    .wrapping_mul(7919)
                    .wrapping_add(round.wrapping_mul(104_729))
                    % 1000) as f64
                    / 1000.0;
                base + spread * w
            }
        }
    }
}

/// One node's pre-encoded entry and where to patch it.
pub struct NodeTemplate {
    bytes: Vec<u8>,
    times: Vec<u32>,
    values: Vec<(u32, Motion)>,
    otlp_points: u64,
    samples: u64,
}

impl NodeTemplate {
    /// Lays out `series` series (≥ [`MIN_SERIES`]) for `id`; cumulative series start at
    /// `start_unix_nano`.
    pub fn new(
        id: &NodeIdentity,
        series: usize,
        start_unix_nano: u64,
    ) -> Result<Self, TemplateError> {
        let mut b = Builder {
            motions: Vec::new(),
            start: start_unix_nano,
            otlp_points: 0,
            samples: 0,
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![
                b.model_server(id, series.max(MIN_SERIES) - 1),
                b.collector(id),
            ],
        };
        let bytes = request.encode_to_vec();
        let (times, values) = find_marks(&bytes, &b.motions);
        let wrote = b.otlp_points as usize + b.motions.len();
        if times.len() + values.len() != wrote {
            return Err(TemplateError {
                found: times.len() + values.len(),
                wrote,
            });
        }
        Ok(NodeTemplate {
            bytes,
            times,
            values,
            otlp_points: b.otlp_points,
            samples: b.samples,
        })
    }

    /// Encoded size of one entry.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// OTLP data points per entry (a histogram point is one).
    pub fn otlp_points(&self) -> u64 {
        self.otlp_points
    }

    /// Prometheus samples per entry (a histogram point is buckets + sum + count).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Appends the entry of `round` scraped at `time_unix_nano`.
    pub fn build(&self, round: u64, time_unix_nano: u64, out: &mut BytesMut) {
        let start = out.len();
        out.put_slice(&self.bytes);
        let e = &mut out[start..];
        let t = time_unix_nano.to_le_bytes();
        for &off in &self.times {
            e[off as usize..off as usize + 8].copy_from_slice(&t);
        }
        for (i, &(off, motion)) in self.values.iter().enumerate() {
            let v = motion.at(round, i as u64).to_le_bytes();
            e[off as usize..off as usize + 8].copy_from_slice(&v);
        }
    }
}

/// Offsets of the time placeholders and of each value placeholder (with its motion).
fn find_marks(bytes: &[u8], motions: &[Motion]) -> (Vec<u32>, Vec<(u32, Motion)>) {
    let mut times = Vec::new();
    let mut values = Vec::new();
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let w = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if w == TIME_MARK {
            times.push(i as u32);
            i += 8;
            continue;
        }
        if let Some(m) = w
            .checked_sub(VALUE_MARK)
            .and_then(|k| motions.get(k as usize))
        {
            values.push((i as u32, *m));
            i += 8;
            continue;
        }
        i += 1;
    }
    (times, values)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs.iter().map(|(k, v)| kv(k, v)).collect()
}

/// Builds the request with placeholders and counts what it holds.
struct Builder {
    motions: Vec<Motion>,
    start: u64,
    otlp_points: u64,
    samples: u64,
}

impl Builder {
    fn value(&mut self, m: Motion) -> f64 {
        let mark = f64::from_bits(VALUE_MARK + self.motions.len() as u64);
        self.motions.push(m);
        mark
    }

    fn number(
        &mut self,
        attributes: Vec<KeyValue>,
        m: Motion,
        cumulative: bool,
    ) -> NumberDataPoint {
        self.otlp_points += 1;
        self.samples += 1;
        NumberDataPoint {
            attributes,
            start_time_unix_nano: if cumulative { self.start } else { 0 },
            time_unix_nano: TIME_MARK,
            value: Some(number_data_point::Value::AsDouble(self.value(m))),
            ..Default::default()
        }
    }

    fn counter(&mut self, name: &str, attributes: Vec<KeyValue>, rate: f64) -> Metric {
        let p = self.number(attributes, Motion::Counter { base: 0.0, rate }, true);
        Metric {
            name: name.to_string(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![p],
                aggregation_temporality: AGGREGATION_CUMULATIVE,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    fn gauge(&mut self, name: &str, attributes: Vec<KeyValue>, base: f64, spread: f64) -> Metric {
        let p = self.number(attributes, Motion::Gauge { base, spread }, false);
        Metric {
            name: name.to_string(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![p],
            })),
            ..Default::default()
        }
    }

    fn histogram(&mut self, name: &str, attributes: Vec<KeyValue>) -> Metric {
        self.otlp_points += 1;
        self.samples += HISTOGRAM_SERIES as u64;
        // Per-bucket (non-cumulative) counts of a plausible latency distribution.
        let counts: Vec<u64> = (0..=BOUNDS.len() as u64)
            .map(|i| 40 * (i + 1) * (BOUNDS.len() as u64 + 1 - i))
            .collect();
        let count = counts.iter().sum();
        Metric {
            name: name.to_string(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes,
                    start_time_unix_nano: self.start,
                    time_unix_nano: TIME_MARK,
                    count,
                    sum: Some(count as f64 * 0.21),
                    bucket_counts: counts,
                    explicit_bounds: BOUNDS.to_vec(),
                    ..Default::default()
                }],
                aggregation_temporality: AGGREGATION_CUMULATIVE,
            })),
            ..Default::default()
        }
    }

    /// The model server's resource with `series` series.
    fn model_server(&mut self, id: &NodeIdentity, series: usize) -> ResourceMetrics {
        let n = id.index;
        let pod = format!("model-server-{n:05}");
        let target = [("namespace", "models"), ("pod", pod.as_str())];
        let with = |extra: &[(&str, &str)]| attrs(&[&target[..], extra].concat());
        let mut metrics = vec![
            self.counter("process_cpu_seconds_total", with(&[]), 0.6),
            self.gauge("process_resident_memory_bytes", with(&[]), 2.1e9, 3e8),
        ];
        let mut left = series.saturating_sub(2);
        let mut model = 0;
        while left >= MODEL_SERIES {
            let name = format!("model-{model:02}");
            let m = [("model", name.as_str()), ("version", "1")];
            let failure = [&m[..], &[("reason", "BACKEND")]].concat();
            metrics.extend([
                self.counter("nv_inference_request_success", with(&m), 12.0),
                self.counter("nv_inference_request_failure", with(&failure), 0.05),
                self.counter("nv_inference_count", with(&m), 48.0),
                self.counter("nv_inference_exec_count", with(&m), 12.0),
                self.gauge("nv_inference_pending_request_count", with(&m), 0.0, 8.0),
                self.histogram("nv_inference_request_duration_seconds", with(&m)),
                self.histogram("nv_inference_queue_duration_seconds", with(&m)),
            ]);
            left -= MODEL_SERIES;
            model += 1;
        }
        for j in 0..left {
            let gpu = format!("GPU-{n:05}-{:02}", j / GPU_METRICS.len());
            let g = [("gpu_uuid", gpu.as_str())];
            metrics.push(self.gauge(GPU_METRICS[j % GPU_METRICS.len()], with(&g), 10.0, 80.0));
        }
        let ip = format!(
            "10.{}.{}.{}:8002",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        );
        resource(id, MODEL_JOB, &ip, &[("k8s.pod.name", &pod)], metrics)
    }

    /// The collector's own `edgewatch_collector_info`.
    fn collector(&mut self, id: &NodeIdentity) -> ResourceMetrics {
        let a = attrs(&[
            ("instance_id", &id.instance_id),
            ("version", env!("CARGO_PKG_VERSION")),
        ]);
        let info = self.gauge("edgewatch_collector_info", a, 1.0, 0.0);
        resource(id, COLLECTOR_JOB, &id.instance_id, &[], vec![info])
    }
}

fn resource(
    id: &NodeIdentity,
    job: &str,
    instance: &str,
    extra: &[(&str, &str)],
    metrics: Vec<Metric>,
) -> ResourceMetrics {
    let mut a = attrs(&[
        ("service.name", job),
        ("service.instance.id", instance),
        ("k8s.cluster.name", &id.cluster),
        ("k8s.node.name", &id.node),
    ]);
    a.extend(attrs(extra));
    ResourceMetrics {
        resource: Some(Resource {
            attributes: a,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: SCRAPE_SCOPE.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            }),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;

    fn id() -> NodeIdentity {
        NodeIdentity {
            cluster: "fleet-c00".into(),
            node: "node-00007".into(),
            instance_id: "inst-7".into(),
            index: 7,
        }
    }

    fn decode(t: &NodeTemplate, round: u64, time: u64) -> ExportMetricsServiceRequest {
        let mut out = BytesMut::new();
        t.build(round, time, &mut out);
        ExportMetricsServiceRequest::decode(out.as_ref()).expect("valid protobuf")
    }

    /// (samples, otlp points, every point's time, sum of counter values) of a request.
    fn tally(req: &ExportMetricsServiceRequest) -> (u64, u64, Vec<u64>, f64) {
        let (mut samples, mut points, mut times, mut counters) = (0, 0, Vec::new(), 0.0);
        for m in req
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
        {
            match m.data.as_ref().expect("data") {
                Data::Gauge(g) => {
                    for p in &g.data_points {
                        (samples, points) = (samples + 1, points + 1);
                        times.push(p.time_unix_nano);
                    }
                }
                Data::Sum(s) => {
                    for p in &s.data_points {
                        (samples, points) = (samples + 1, points + 1);
                        times.push(p.time_unix_nano);
                        if let Some(number_data_point::Value::AsDouble(v)) = p.value {
                            counters += v;
                        }
                    }
                }
                Data::Histogram(h) => {
                    for p in &h.data_points {
                        samples += p.bucket_counts.len() as u64 + 2;
                        points += 1;
                        times.push(p.time_unix_nano);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (samples, points, times, counters)
    }

    #[test]
    fn series_count_is_as_configured() {
        for series in [3, 4, 35, 36, 37, 500, 1000] {
            let t = NodeTemplate::new(&id(), series, 1).unwrap();
            assert_eq!(t.samples(), series as u64, "series {series}");
            let (samples, points, _, _) = tally(&decode(&t, 0, 5));
            assert_eq!((samples, points), (t.samples(), t.otlp_points()));
        }
    }

    #[test]
    fn rounds_patch_times_and_counters() {
        let t = NodeTemplate::new(&id(), 500, 1).unwrap();
        let (_, _, times0, c0) = tally(&decode(&t, 0, 1_000));
        let (_, _, times9, c9) = tally(&decode(&t, 9, 2_000));
        assert!(times0.iter().all(|&x| x == 1_000));
        assert!(times9.iter().all(|&x| x == 2_000));
        assert!(c9 > c0, "counters grow: {c0} → {c9}");
    }

    #[test]
    fn resources_carry_cluster_node_and_jobs() {
        let t = NodeTemplate::new(&id(), 100, 1).unwrap();
        let req = decode(&t, 0, 1);
        let jobs: Vec<(String, String, String)> = req
            .resource_metrics
            .iter()
            .map(|rm| {
                let a = &rm.resource.as_ref().unwrap().attributes;
                let get = |k: &str| match &a.iter().find(|kv| kv.key == k).unwrap().value {
                    Some(AnyValue {
                        value: Some(any_value::Value::StringValue(s)),
                    }) => s.clone(),
                    other => panic!("{other:?}"),
                };
                (
                    get("service.name"),
                    get("k8s.cluster.name"),
                    get("k8s.node.name"),
                )
            })
            .collect();
        let want = |job: &str| {
            (
                job.to_string(),
                "fleet-c00".to_string(),
                "node-00007".to_string(),
            )
        };
        assert_eq!(jobs, vec![want(MODEL_JOB), want(COLLECTOR_JOB)]);
        let info = &req.resource_metrics[1].scope_metrics[0].metrics[0];
        assert_eq!(info.name, "edgewatch_collector_info");
    }
}
