//! The collector's forwarder against a scripted OTLP/gRPC stand-in for the aggregator:
//! rejected batches are dropped and counted, retryable failures are retried until
//! accepted, partial successes are counted. Also: `loadgen --gzip` really compresses.

use axum::response::IntoResponse;
use edgewatch_testkit::eventually;
use edgewatch_testkit::http::Recorder;
use edgewatch_testkit::otlp::{gauge_request, post_otlp};
use edgewatch_testkit::otlp_stand_in::count_points;
use edgewatch_testkit::roles::{loadgen_report, Collector};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// What the stand-in answers to one export.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Accept,
    Refuse(Code),
    /// Success with `rejected_data_points` set.
    Partial(i64),
}

/// One export the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    points: u64,
    first_seq: Option<u64>,
    /// `grpc-encoding` as sent.
    encoding: Option<String>,
    answer: Answer,
}

/// An OTLP/gRPC metrics receiver that answers the scripted answers in order, then
/// accepts everything.
#[derive(Clone, Default)]
struct StandIn {
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    async fn start() -> (StandIn, u16) {
        let s = StandIn::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let port = listener.local_addr().expect("stand-in address").port();
        let svc = MetricsServiceServer::new(s.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(64 << 20);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (s, port)
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().expect("script lock").extend(answers);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }
}

#[tonic::async_trait]
impl MetricsService for StandIn {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let header = |k: &str| {
            req.metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let first_seq = header(edgewatch_otlp::HEADER_FIRST_SEQ)
            .map(|v| v.parse().expect("the first-sequence header is a number"));
        let encoding = header("grpc-encoding");
        let answer = self
            .script
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or(Answer::Accept);
        self.seen.lock().expect("seen lock").push(Seen {
            points: count_points(req.get_ref()) as u64,
            first_seq,
            encoding,
            answer: answer.clone(),
        });
        match answer {
            Answer::Accept => Ok(tonic::Response::new(ExportMetricsServiceResponse::default())),
            Answer::Refuse(code) => Err(tonic::Status::new(code, "scripted refusal")),
            Answer::Partial(rejected) => Ok(tonic::Response::new(ExportMetricsServiceResponse {
                partial_success: Some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: "scripted partial success".into(),
                }),
            })),
        }
    }
}

/// Posts `n` points to the collector and waits until its buffer is empty again (the
/// forwarder settled the batch one way or the other).
async fn post_and_settle(col: &Collector, metric: &str, n: usize) {
    let (status, _) = post_otlp(col.http, gauge_request(metric, metric, n)).await;
    assert_eq!(status, 200, "the collector accepts {metric}");
    eventually(
        Duration::from_secs(20),
        &format!("{metric} settled by the forwarder"),
        || async { col.metrics().await.get("edgewatch_buffer_entries") == 0.0 },
    )
    .await;
}

/// Asserts the forwarder's (rejected points, sent points, retries) counters.
async fn assert_forward_totals(col: &Collector, expected: (f64, f64, f64), why: &str) {
    let m = col.metrics().await;
    let totals = (
        m.get("edgewatch_forward_rejected_points_total"),
        m.get("edgewatch_forward_sent_points_total"),
        m.get("edgewatch_forward_retries_total"),
    );
    assert_eq!(totals, expected, "(rejected, sent, retries): {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_batches_are_dropped_retryable_ones_retried_partial_success_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (stand_in, port) = StandIn::start().await;
    let col = Collector::start(BIN, dir.path(), "col", "edge-a", "n1", port, "").await;

    // INVALID_ARGUMENT: not retried, dropped and counted.
    stand_in.script([Answer::Refuse(Code::InvalidArgument)]);
    post_and_settle(&col, "fwd_invalid", 5).await;
    let seen = stand_in.seen();
    assert_eq!(seen.len(), 1, "one attempt, no retry: {seen:?}");
    assert_eq!(seen[0].points, 5);
    assert_eq!(seen[0].answer, Answer::Refuse(Code::InvalidArgument));
    assert_forward_totals(&col, (5.0, 0.0, 0.0), "the rejected batch only").await;

    // UNAVAILABLE: the same batch again until accepted; the forwarder moved on past
    // the rejected one.
    stand_in.script([
        Answer::Refuse(Code::Unavailable),
        Answer::Refuse(Code::Unavailable),
    ]);
    post_and_settle(&col, "fwd_unavailable", 7).await;
    let seen = stand_in.seen();
    assert_eq!(seen.len(), 4, "two refusals, then accepted: {seen:?}");
    let attempts = &seen[1..];
    assert_eq!(
        attempts.iter().map(|s| &s.answer).collect::<Vec<_>>(),
        [
            &Answer::Refuse(Code::Unavailable),
            &Answer::Refuse(Code::Unavailable),
            &Answer::Accept
        ]
    );
    assert!(attempts.iter().all(|s| s.points == 7), "{attempts:?}");
    let first_seq = attempts[0].first_seq.expect("the batch's first sequence");
    assert!(
        attempts.iter().all(|s| s.first_seq == Some(first_seq)),
        "the retries re-send the same batch: {attempts:?}"
    );
    assert!(
        first_seq > seen[0].first_seq.expect("first sequence"),
        "the rejected batch is not sent again: {seen:?}"
    );
    assert_forward_totals(
        &col,
        (5.0, 7.0, 2.0),
        "nothing of the retried batch is lost",
    )
    .await;

    // A partial success: the rejected points are counted, the rest sent.
    stand_in.script([Answer::Partial(3)]);
    post_and_settle(&col, "fwd_partial", 10).await;
    let seen = stand_in.seen();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen[4].answer, Answer::Partial(3));
    assert_eq!(seen[4].points, 10);
    assert!(
        seen.iter().all(|s| s.encoding.as_deref() == Some("zstd")),
        "batches travel zstd-compressed: {seen:?}"
    );
    assert_forward_totals(&col, (8.0, 14.0, 2.0), "3 of the 10 points rejected").await;
    assert_eq!(
        col.metrics()
            .await
            .sum_or_zero("edgewatch_buffer_dropped_points_total"),
        0.0
    );
}

/// Runs the load generator for half a second against `endpoint`; its JSON report.
async fn loadgen(endpoint: String, protocol: &'static str, gzip: bool) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["loadgen", "--endpoint", &endpoint, "--protocol", protocol])
            .args(["--rate", "200", "--batch", "50", "--series", "50"])
            .args(["--duration", "500ms", "--json", "--quiet"]);
        if gzip {
            cmd.arg("--gzip");
        }
        cmd.output().expect("run loadgen")
    })
    .await
    .expect("loadgen thread");
    let report = loadgen_report(&out);
    assert!(report["acked_points"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(report["failed_points"].as_u64(), Some(0), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_gzip_compresses_on_the_wire() {
    // gRPC: the stand-in sees `grpc-encoding: gzip` only with --gzip.
    let (stand_in, port) = StandIn::start().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    loadgen(endpoint.clone(), "grpc", false).await;
    let plain = stand_in.seen();
    assert!(!plain.is_empty());
    assert!(plain.iter().all(|s| s.encoding.is_none()), "{:?}", plain[0]);
    loadgen(endpoint, "grpc", true).await;
    let gzipped = &stand_in.seen()[plain.len()..];
    assert!(!gzipped.is_empty());
    assert!(
        gzipped
            .iter()
            .all(|s| s.encoding.as_deref() == Some("gzip")),
        "{:?}",
        gzipped[0]
    );

    // HTTP: Content-Encoding gzip, and a gzip body smaller than what it inflates to.
    let http = Recorder::start_with(200, &[], |_| {
        (
            [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response()
    })
    .await;
    let port = http.addr.port();
    // (Content-Encoding, bytes on the wire, bytes inflated): a gzip member starts with
    // 1f 8b and ends with the inflated size (mod 2^32, little-endian).
    let requests = || -> Vec<(Option<String>, usize, usize)> {
        http.requests()
            .iter()
            .map(|r| {
                let encoding = r
                    .headers
                    .get(axum::http::header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let inflated = match &r.body[..] {
                    [0x1f, 0x8b, .., a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]) as usize,
                    _ => r.body.len(),
                };
                (encoding, r.body.len(), inflated)
            })
            .collect()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    loadgen(endpoint.clone(), "http", false).await;
    let n_plain = requests().len();
    assert!(n_plain > 0);
    loadgen(endpoint, "http", true).await;
    let all = requests();
    assert!(
        all[..n_plain].iter().all(|(e, _, _)| e.is_none()),
        "{all:?}"
    );
    let gzipped = &all[n_plain..];
    assert!(!gzipped.is_empty());
    for (encoding, wire, inflated) in gzipped {
        assert_eq!(encoding.as_deref(), Some("gzip"), "{gzipped:?}");
        assert!(
            wire < inflated,
            "gzip on the wire: {wire} < {inflated} bytes"
        );
    }
}
