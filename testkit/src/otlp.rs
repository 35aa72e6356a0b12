//! OTLP metrics requests for tests: attribute helpers, metric and request builders,
//! the requests the end-to-end tests send, and an HTTP post.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

pub use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyVal;

/// An attribute value: `&str`, `String`, `i64`, `f64`, `bool` or an [`AnyVal`].
pub trait IntoAnyValue {
    fn into_any_value(self) -> AnyVal;
}

impl IntoAnyValue for AnyVal {
    fn into_any_value(self) -> AnyVal {
        self
    }
}
impl IntoAnyValue for &str {
    fn into_any_value(self) -> AnyVal {
        AnyVal::StringValue(self.into())
    }
}
impl IntoAnyValue for String {
    fn into_any_value(self) -> AnyVal {
        AnyVal::StringValue(self)
    }
}
impl IntoAnyValue for &String {
    fn into_any_value(self) -> AnyVal {
        AnyVal::StringValue(self.clone())
    }
}
impl IntoAnyValue for i64 {
    fn into_any_value(self) -> AnyVal {
        AnyVal::IntValue(self)
    }
}
impl IntoAnyValue for f64 {
    fn into_any_value(self) -> AnyVal {
        AnyVal::DoubleValue(self)
    }
}
impl IntoAnyValue for bool {
    fn into_any_value(self) -> AnyVal {
        AnyVal::BoolValue(self)
    }
}

/// One attribute: `kv("model", "resnet")`, `kv("version", 3i64)`, `kv("k", s("v"))`.
pub fn kv(key: &str, value: impl IntoAnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(value.into_any_value()),
        }),
        ..Default::default()
    }
}

/// A string attribute value.
pub fn s(v: &str) -> any_value::Value {
    AnyVal::StringValue(v.into())
}

/// A double data point.
pub fn point(attributes: Vec<KeyValue>, time_unix_nano: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// A gauge metric.
pub fn gauge(name: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge { data_points })),
        ..Default::default()
    }
}

/// A cumulative monotonic sum (a counter).
pub fn counter(name: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// One resource with these attributes and one scope (`None`: no scope) of `metrics`.
pub fn request(
    resource: Vec<KeyValue>,
    scope: Option<&str>,
    metrics: Vec<Metric>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: scope.map(|name| InstrumentationScope {
                    name: name.into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Wraps encoded `Metric`s into a request (one resource, one scope).
pub fn wrap_metrics(metrics: &[u8]) -> Vec<u8> {
    let mut sm = Vec::new();
    prost::encoding::bytes::encode(2, &metrics.to_vec(), &mut sm);
    let mut rm = Vec::new();
    prost::encoding::bytes::encode(2, &sm, &mut rm);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &rm, &mut req);
    req
}

/// Now, in OTLP's nanoseconds.
pub fn now_nanos() -> u64 {
    crate::now_ms() as u64 * 1_000_000
}

/// An encoded request of `points` gauge points of `metric` in series
/// `series=<series_prefix>-<i>`, values random (so a buffer cannot compress them away),
/// timestamped now.
pub fn gauge_request(metric: &str, series_prefix: &str, points: usize) -> Vec<u8> {
    use rand::Rng;
    let now = now_nanos();
    let mut rng = rand::rng();
    let points = (0..points)
        .map(|i| {
            point(
                vec![kv("series", format!("{series_prefix}-{i}"))],
                now,
                rng.random(),
            )
        })
        .collect();
    request(
        vec![kv("service.name", "durability")],
        None,
        vec![gauge(metric, points)],
    )
    .encode_to_vec()
}

/// The InstrumentationScope under which the collector sends scraped series and its own.
pub const SCRAPE_SCOPE: &str = "edgewatch.scrape";

/// One inference pod as a collector reports it (`edgewatch_model_info` /
/// `edgewatch_model_ready`).
#[derive(Debug, Clone)]
pub struct ModelPod {
    pub namespace: String,
    pub pod: String,
    pub deployment: String,
    pub model: String,
    pub version: String,
    pub image: String,
    pub digest: String,
    pub ready: bool,
}

/// An encoded request as a collector on (cluster, node) forwards it: the pods' model
/// gauges under [`SCRAPE_SCOPE`] (names kept exact) and the collector's own
/// `edgewatch_collector_info`, resource attributes `k8s.cluster.name`/`k8s.node.name`,
/// timestamped now.
pub fn model_request(
    cluster: &str,
    node: &str,
    pods: &[ModelPod],
    collector_version: &str,
) -> Vec<u8> {
    let now = now_nanos();
    let pod_attrs = |p: &ModelPod| {
        vec![
            kv("namespace", &p.namespace),
            kv("pod", &p.pod),
            kv("deployment", &p.deployment),
            kv("model", &p.model),
            kv("version", &p.version),
            kv("image", &p.image),
            kv("digest", &p.digest),
        ]
    };
    let info = pods.iter().map(|p| point(pod_attrs(p), now, 1.0)).collect();
    let ready = pods
        .iter()
        .map(|p| point(pod_attrs(p), now, if p.ready { 1.0 } else { 0.0 }))
        .collect();
    let collector = vec![point(
        vec![
            kv("instance_id", format!("{cluster}-{node}")),
            kv("version", collector_version),
        ],
        now,
        1.0,
    )];
    request(
        vec![
            kv("service.name", "edgewatch-collector"),
            kv("k8s.cluster.name", cluster),
            kv("k8s.node.name", node),
        ],
        Some(SCRAPE_SCOPE),
        vec![
            gauge("edgewatch_model_info", info),
            gauge("edgewatch_model_ready", ready),
            gauge("edgewatch_collector_info", collector),
        ],
    )
    .encode_to_vec()
}

/// POSTs a protobuf OTLP body to `127.0.0.1:PORT/v1/metrics`: the HTTP status and the
/// Retry-After header.
pub async fn post_otlp(port: u16, body: Vec<u8>) -> (u16, Option<String>) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST 127.0.0.1:{port}/v1/metrics: {e}"));
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (r.status().as_u16(), retry)
}

/// POSTs an OTLP/JSON body to `127.0.0.1:PORT/v1/metrics`: the HTTP status and the
/// response body.
pub async fn post_otlp_json(port: u16, body: String) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/metrics"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST 127.0.0.1:{port}/v1/metrics: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// POSTs a protobuf `body` to `127.0.0.1:port/v1/metrics` with `Authorization:
/// Bearer <token>` when a token is given; the HTTP status.
pub async fn post_otlp_as(port: u16, body: Vec<u8>, token: Option<&str>) -> u16 {
    let mut r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send()
        .await
        .unwrap_or_else(|e| panic!("POST 127.0.0.1:{port}/v1/metrics: {e}"))
        .status()
        .as_u16()
}

/// One OTLP/gRPC export to `127.0.0.1:port` with `metadata` as request headers
/// (`authorization`, an edgewatch forwarder's batch headers); the status code.
pub async fn export_grpc(
    port: u16,
    req: ExportMetricsServiceRequest,
    metadata: &[(&'static str, String)],
) -> tonic::Code {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    let mut request = tonic::Request::new(req);
    for (k, v) in metadata {
        let v = v.parse().unwrap_or_else(|_| panic!("header value {v:?}"));
        request.metadata_mut().insert(*k, v);
    }
    match client.export(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// A connected OTLP/gRPC client to `127.0.0.1:port`, for many exports.
pub async fn grpc_client(
    port: u16,
) -> opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient<
    tonic::transport::Channel,
>{
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    MetricsServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

/// `points` gauge series `metric{series="<prefix>-<i>"}` from one resource of
/// `cluster` (`k8s.cluster.name`), as an export request.
pub fn cluster_gauges(
    cluster: &str,
    metric: &str,
    series_prefix: &str,
    points: std::ops::Range<usize>,
) -> ExportMetricsServiceRequest {
    let now = now_nanos();
    let points = points
        .map(|i| {
            point(
                vec![kv("series", format!("{series_prefix}-{i}"))],
                now,
                i as f64,
            )
        })
        .collect();
    request(
        vec![kv("service.name", "burst"), kv("k8s.cluster.name", cluster)],
        None,
        vec![gauge(metric, points)],
    )
}

/// Points per request of [`send_series`].
pub const SERIES_CHUNK: usize = 10_000;

/// Sends `total` gauge series `burst_gauge{series="<prefix>-<i>"}` of `cluster` over
/// OTLP/gRPC in requests of [`SERIES_CHUNK`] points; returns the data points the
/// answers rejected (partial success) and their messages.
pub async fn send_series(
    grpc: u16,
    cluster: &str,
    prefix: &str,
    total: usize,
) -> (i64, Vec<String>) {
    let mut client = grpc_client(grpc).await;
    let (mut rejected, mut messages) = (0, Vec::new());
    for start in (0..total).step_by(SERIES_CHUNK) {
        let req = cluster_gauges(
            cluster,
            "burst_gauge",
            prefix,
            start..(start + SERIES_CHUNK).min(total),
        );
        let answer = client
            .export(req)
            .await
            .unwrap_or_else(|s| panic!("export of {cluster} {start}: {s}"))
            .into_inner();
        if let Some(p) = answer.partial_success {
            rejected += p.rejected_data_points;
            if !p.error_message.is_empty() {
                messages.push(p.error_message);
            }
        }
    }
    (rejected, messages)
}

/// The headers of an edgewatch forwarder's batch holding `req` alone as entry
/// `seq` of collector `collector_id`, with every seq below `floor` settled.
pub fn batch_headers(
    collector_id: &str,
    seq: u64,
    floor: u64,
    req: &ExportMetricsServiceRequest,
) -> Vec<(&'static str, String)> {
    vec![
        ("x-edgewatch-collector-id", collector_id.to_string()),
        ("x-edgewatch-first-seq", seq.to_string()),
        ("x-edgewatch-entry-lens", req.encoded_len().to_string()),
        ("x-edgewatch-floor", floor.to_string()),
    ]
}
