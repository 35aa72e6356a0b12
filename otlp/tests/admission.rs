//! Admission at the OTLP/gRPC server: what tonic may read at once, and connections
//! that never become HTTP/2, over real sockets.

use bytes::Bytes;
use edgewatch_otlp::admission::{AdmissionMetrics, ReadSlots, PREFACE_TIMEOUT};
use edgewatch_otlp::client::FrameEncoder;
use edgewatch_otlp::grpc::MetricsService;
use edgewatch_otlp::server::OtlpListeners;
use edgewatch_otlp::{ExportContext, ExportError, ExportOutcome, MetricsSink};
use edgewatch_testkit::eventually;
use edgewatch_testkit::Metrics;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl MetricsSink for Counter {
    async fn export(
        &self,
        _body: Bytes,
        _ctx: ExportContext,
    ) -> Result<ExportOutcome, ExportError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(ExportOutcome::default())
    }
}

const LIMIT: usize = 64 * 1024;
const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

async fn export(addr: SocketAddr) -> Result<(), tonic::Status> {
    let mut channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let frame = FrameEncoder::new(3).unwrap().frame(b"").unwrap();
    edgewatch_otlp::client::export(&mut channel, frame, &[], 1 << 20)
        .await
        .map(|_| ())
}

fn refused(registry: &prometheus::Registry, reason: &str) -> f64 {
    Metrics::from_registry(registry).get(&format!(
        "edgewatch_otlp_grpc_refused_total{{reason=\"{reason}\"}}"
    ))
}

/// A request whose body trickles in holds its read slot; with every slot taken the
/// next request is refused RESOURCE_EXHAUSTED (with a retry delay) instead of being
/// read, and once the slow one goes away requests are read again.
#[tokio::test]
async fn a_request_waits_for_a_read_slot_and_is_refused_busy_after_the_wait() {
    let registry = prometheus::Registry::new();
    let metrics = AdmissionMetrics::new(&registry).unwrap();
    let sink = Counter::default();
    let svc = MetricsService::new(sink.clone(), LIMIT, ReadSlots::new(1, metrics));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    export(addr)
        .await
        .expect("a request is read while a slot is free");

    // A gRPC frame announcing 1,000 bytes, of which 3 are sent, and no more.
    let (mut h2, conn) = h2::client::handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{addr}{EXPORT}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (slow_answer, mut slow_body) = h2.send_request(req, false).unwrap();
    slow_body
        .send_data(Bytes::from_static(&[0, 0, 0, 3, 232, 1, 2, 3]), false)
        .unwrap();

    let e = eventually(
        Duration::from_secs(10),
        "a refusal while the slot is held",
        || async { export(addr).await.err() },
    )
    .await;
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    use tonic_types::StatusExt;
    assert_eq!(
        e.get_details_retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_secs(1))
    );
    assert!(refused(&registry, "busy") >= 1.0);
    assert_eq!(
        sink.0.load(Ordering::SeqCst),
        1,
        "the refused one reached no sink"
    );

    drop((slow_answer, slow_body, h2));
    eventually(Duration::from_secs(10), "a request read again", || async {
        export(addr).await.is_ok()
    })
    .await;
    assert_eq!(sink.0.load(Ordering::SeqCst), 2);
}

/// Connections that are not HTTP/2 are closed at once, connections that stall in the
/// preface after the deadline; neither reaches the server, and a client that speaks
/// properly is served meanwhile.
#[tokio::test]
async fn connections_without_the_http2_preface_are_closed() {
    let registry = prometheus::Registry::new();
    let l = OtlpListeners::bind(Some("127.0.0.1:0".parse().unwrap()), None)
        .await
        .unwrap()
        .with_admission_metrics(AdmissionMetrics::new(&registry).unwrap());
    let addr = l.grpc_addr().unwrap();
    let sink = Counter::default();
    let stop = CancellationToken::new();
    tokio::spawn(l.serve(sink.clone(), LIMIT, stop.clone()));

    let mut http1 = TcpStream::connect(addr).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        stalled.push(c);
    }
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), http1.read(&mut buf))
        .await
        .expect("an HTTP/1 connection is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");

    export(addr)
        .await
        .expect("served beside 200 stalled connections");
    assert_eq!(sink.0.load(Ordering::SeqCst), 1);

    for c in &mut stalled {
        let n = tokio::time::timeout(PREFACE_TIMEOUT * 3, c.read(&mut buf))
            .await
            .expect("a stalled connection is closed after the preface deadline")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert_eq!(refused(&registry, "preface"), 201.0);
    stop.cancel();
}
