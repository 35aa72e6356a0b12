//! The OTLP servers' protocol behaviour: formats, limits and status mapping, over
//! real sockets, with a sink that decodes like the collector's and the aggregator's.

use bytes::Bytes;
use edgewatch_otlp::client::FrameEncoder;
use edgewatch_otlp::server::OtlpListeners;
use edgewatch_otlp::{
    ExportContext, ExportError, ExportMetricsServiceRequest, ExportOutcome, MetricsSink,
};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use prost::Message;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Recorder {
    got: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    refuse: Arc<Mutex<Option<ExportError>>>,
}

impl MetricsSink for Recorder {
    async fn export(&self, body: Bytes, _ctx: ExportContext) -> Result<ExportOutcome, ExportError> {
        let req = edgewatch_otlp::decode_request(&body)?;
        if let Some(e) = self.refuse.lock().unwrap().clone() {
            return Err(e);
        }
        self.got.lock().unwrap().push(req);
        Ok(ExportOutcome::default())
    }
}

const LIMIT: usize = 64 * 1024;

async fn serve() -> (Recorder, SocketAddr, SocketAddr, CancellationToken) {
    let l = OtlpListeners::bind(
        Some("127.0.0.1:0".parse().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap();
    let (g, h) = (l.grpc_addr().unwrap(), l.http_addr().unwrap());
    let sink = Recorder::default();
    let stop = CancellationToken::new();
    tokio::spawn(l.serve(sink.clone(), LIMIT, stop.clone()));
    (sink, g, h, stop)
}

fn request(points: usize) -> ExportMetricsServiceRequest {
    let data_points = (0..points)
        .map(|i| NumberDataPoint {
            time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            value: Some(number_data_point::Value::AsDouble(i as f64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(
    addr: SocketAddr,
    ct: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Option<String>, String, Vec<u8>) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/metrics"))
        .header("content-type", ct);
    if let Some(e) = encoding {
        r = r.header("content-encoding", e);
    }
    let resp = r.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, retry, ct, resp.bytes().await.unwrap().to_vec())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn http_accepts_protobuf_json_and_gzip() {
    let (sink, _, http, _stop) = serve().await;
    let req = request(3);
    let (s, _, ct, _) = post(http, "application/x-protobuf", None, req.encode_to_vec()).await;
    assert_eq!((s, ct.as_str()), (200, "application/x-protobuf"));
    let (s, _, _, _) = post(
        http,
        "application/x-protobuf",
        Some("gzip"),
        gzip(&req.encode_to_vec()),
    )
    .await;
    assert_eq!(s, 200);
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"j","gauge":{"dataPoints":[{"timeUnixNano":"1700000000000000000","asInt":"42"}]}}]}]}]}"#;
    let (s, _, ct, body) = post(http, "application/json; charset=utf-8", None, json.into()).await;
    assert_eq!(
        (s, ct.as_str()),
        (200, "application/json"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], req);
    let p = &got[2].resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::Gauge(g)) = &p.data else {
        panic!("gauge")
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsInt(42))
    );
    assert_eq!(g.data_points[0].time_unix_nano, 1_700_000_000_000_000_000);
}

#[tokio::test]
async fn http_rejects_bad_input_with_the_right_status() {
    let (sink, _, http, _stop) = serve().await;
    let (s, _, _, body) = post(http, "application/x-protobuf", None, vec![0xff, 0xff, 0xff]).await;
    assert_eq!(s, 400);
    let status = String::from_utf8_lossy(&body);
    assert!(
        status.contains("malformed ExportMetricsServiceRequest"),
        "{status}"
    );
    let (s, _, _, body) = post(
        http,
        "application/json",
        None,
        br#"{"resourceMetrics": 5}"#.to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("resourceMetrics"),
        "names the field"
    );
    let (s, _, _, _) = post(http, "text/plain", None, request(1).encode_to_vec()).await;
    assert_eq!(s, 415);
    let (s, _, _, _) = post(
        http,
        "application/x-protobuf",
        Some("br"),
        request(1).encode_to_vec(),
    )
    .await;
    assert_eq!(s, 415);
    let big = request(LIMIT / 10).encode_to_vec();
    assert!(big.len() > LIMIT);
    let (s, _, _, _) = post(http, "application/x-protobuf", None, big.clone()).await;
    assert_eq!(s, 413);
    let bomb = gzip(&big);
    assert!(bomb.len() < LIMIT, "compressed it fits");
    let (s, _, _, body) = post(http, "application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
    assert!(
        sink.got.lock().unwrap().is_empty(),
        "nothing from a rejected request is kept"
    );

    *sink.refuse.lock().unwrap() = Some(ExportError::ResourceExhausted {
        message: "full".into(),
        retry_after: Duration::from_secs(3),
    });
    let (s, retry, _, _) = post(
        http,
        "application/x-protobuf",
        None,
        request(1).encode_to_vec(),
    )
    .await;
    assert_eq!((s, retry.as_deref()), (429, Some("3")));
}

/// Through the forwarder's client: zstd-compressed frames, decompressed by tonic's
/// server, and the status (with its retry info) as the forwarder sees it.
async fn grpc_export(addr: SocketAddr, body: Vec<u8>) -> Result<(), tonic::Status> {
    let mut channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let frame = FrameEncoder::new(3).unwrap().frame(&body).unwrap();
    edgewatch_otlp::client::export(&mut channel, frame, &[], 1 << 20)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn grpc_status_codes() {
    let (sink, grpc, _, _stop) = serve().await;
    grpc_export(grpc, request(2).encode_to_vec())
        .await
        .expect("valid request accepted");
    assert_eq!(sink.got.lock().unwrap().len(), 1);
    let e = grpc_export(grpc, vec![0xff, 0x01]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = grpc_export(grpc, request(LIMIT / 10).encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    *sink.refuse.lock().unwrap() = Some(ExportError::Unavailable {
        message: "disk".into(),
        retry_after: Duration::from_secs(2),
    });
    let e = grpc_export(grpc, request(1).encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    use tonic_types::StatusExt;
    assert_eq!(
        e.get_details_retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_secs(2))
    );
    assert_eq!(sink.got.lock().unwrap().len(), 1);
}
