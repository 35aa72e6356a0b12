//! A simulated model-server pod: OpenVINO Model Server metrics (cumulative request
//! counters, a latency histogram, `name`/`version` labels) and the pod's model
//! metadata (`edgewatch_model_info`/`edgewatch_model_ready`, as the collector's pod
//! discovery reports it on a real cluster), pushed over OTLP/gRPC to its node's
//! collector.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// What the pod runs right now; the rollout simulation changes it.
#[derive(Debug, Clone)]
pub struct PodState {
    pub namespace: String,
    pub pod: String,
    pub model: String,
    pub version: String,
    pub digest: String,
    pub ready: bool,
}

pub type SharedPod = Arc<Mutex<PodState>>;

/// Pushes the pod's metrics every `every` until shutdown.
pub async fn run(endpoint: String, pod: SharedPod, every: Duration, shutdown: CancellationToken) {
    let mut traffic = Traffic::new();
    let mut client: Option<MetricsServiceClient<tonic::transport::Channel>> = None;
    loop {
        traffic.serve_some();
        let state = pod
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let mut req = traffic.request(&state);
        req.resource_metrics[0].scope_metrics.push(metadata(&state));
        if client.is_none() {
            client = MetricsServiceClient::connect(endpoint.clone()).await.ok();
        }
        if let Some(c) = client.as_mut() {
            if let Err(e) = c.export(req).await {
                tracing::debug!(target: "edgewatch::demo", error = %e, pod = %state.pod, "model server export failed");
                client = None;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The simulated requests a pod has served so far, as OVMS counts them.
struct Traffic {
    /// Upper bounds (µs) of the latency histogram's buckets.
    bounds: Vec<f64>,
    success: u64,
    fail: u64,
    buckets: Vec<u64>,
    sum: f64,
    start: u64,
}

impl Traffic {
    fn new() -> Self {
        let bounds: Vec<f64> = vec![1000.0, 5000.0, 10000.0, 50000.0, 100000.0, 500000.0];
        Traffic {
            buckets: vec![0u64; bounds.len() + 1],
            bounds,
            success: 0,
            fail: 0,
            sum: 0.0,
            start: now_nanos(),
        }
    }

    /// Serves 20 to 120 requests, one in five intervals with a failure.
    fn serve_some(&mut self) {
        let mut rng = rand::rng();
        let n = rng.random_range(20..120u64);
        self.success += n;
        self.fail += u64::from(rng.random_bool(0.2));
        for _ in 0..n {
            let latency: f64 = rng.random_range(800.0..60000.0);
            self.sum += latency;
            let i = self
                .bounds
                .iter()
                .position(|b| latency <= *b)
                .unwrap_or(self.bounds.len());
            self.buckets[i] += 1;
        }
    }

    /// The OVMS metrics of the pod as one export request.
    fn request(&self, pod: &PodState) -> ExportMetricsServiceRequest {
        let now = now_nanos();
        let attrs = vec![kv("name", &pod.model), kv("version", &pod.version)];
        let metrics = vec![
            self.counter(
                "ovms_requests_success",
                "Number of successful requests to a model or a DAG.",
                self.success,
                &attrs,
                now,
            ),
            self.counter(
                "ovms_requests_fail",
                "Number of failed requests to a model or a DAG.",
                self.fail,
                &attrs,
                now,
            ),
            self.latency(&attrs, now),
            current_requests(&attrs, now),
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "ovms"),
                        kv("service.instance.id", &pod.pod),
                        kv("k8s.pod.name", &pod.pod),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "ovms".into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn counter(&self, name: &str, help: &str, v: u64, attrs: &[KeyValue], now: u64) -> Metric {
        Metric {
            name: name.into(),
            description: help.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: attrs.to_vec(),
                    start_time_unix_nano: self.start,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(v as i64)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    fn latency(&self, attrs: &[KeyValue], now: u64) -> Metric {
        Metric {
            name: "ovms_request_time_us".into(),
            description: "Processing time of requests to a model or a DAG.".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attrs.to_vec(),
                    start_time_unix_nano: self.start,
                    time_unix_nano: now,
                    count: self.buckets.iter().sum(),
                    sum: Some(self.sum),
                    bucket_counts: self.buckets.clone(),
                    explicit_bounds: self.bounds.clone(),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        }
    }
}

/// A random number of requests in process right now.
fn current_requests(attrs: &[KeyValue], now: u64) -> Metric {
    Metric {
        name: "ovms_current_requests".into(),
        description: "Number of inference requests currently in process.".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: attrs.to_vec(),
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(
                    rand::rng().random_range(0..8),
                )),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

/// `edgewatch_model_info` and `edgewatch_model_ready` under the scrape scope, so the
/// names reach the core exactly as the collector's discovery emits them.
fn metadata(p: &PodState) -> ScopeMetrics {
    let attrs = vec![
        kv("namespace", &p.namespace),
        kv("pod", &p.pod),
        kv("deployment", &format!("{}-model-1", p.model)),
        kv("model", &p.model),
        kv("version", &p.version),
        kv("image", &format!("quay.io/rhoai-edge/{}", p.model)),
        kv("digest", &p.digest),
    ];
    let now = now_nanos();
    let gauge = |name: &str, v: f64| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: attrs.clone(),
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(v)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: "edgewatch.scrape".into(),
            ..Default::default()
        }),
        metrics: vec![
            gauge("edgewatch_model_info", 1.0),
            gauge("edgewatch_model_ready", if p.ready { 1.0 } else { 0.0 }),
        ],
        ..Default::default()
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
