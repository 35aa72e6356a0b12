//! An OTLP/gRPC metrics receiver with scripted answers, standing in for the aggregator
//! (or any OTLP backend) where a test needs to choose what the sender is told:
//! rejections, retryable errors, partial success.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};

/// What the stand-in answers one export.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Success; the points are counted as accepted.
    Ok,
    /// Success with `rejected` points reported in a partial-success response.
    Partial { rejected: i64, message: String },
    /// A gRPC error status (e.g. `Code::InvalidArgument` for a rejection,
    /// `Code::Unavailable` for a retryable failure).
    Error(Code, String),
}

/// One export the stand-in received, with the answer it gave.
#[derive(Clone, Debug)]
pub struct Export {
    pub metadata: http::HeaderMap,
    pub request: ExportMetricsServiceRequest,
    pub answer: Answer,
}

impl Export {
    /// Data points in the request.
    pub fn points(&self) -> usize {
        count_points(&self.request)
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    default: Option<Answer>,
    received: Vec<Export>,
}

/// The receiver, on a free 127.0.0.1 port; stopped when the runtime ends.
#[derive(Clone)]
pub struct OtlpStandIn {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

struct Service(Arc<Mutex<State>>);

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let metadata = request.metadata().clone().into_headers();
        let request = request.into_inner();
        let answer = {
            let mut s = self.0.lock().expect("stand-in lock");
            let answer = s
                .script
                .pop_front()
                .or_else(|| s.default.clone())
                .unwrap_or(Answer::Ok);
            s.received.push(Export {
                metadata,
                request,
                answer: answer.clone(),
            });
            answer
        };
        match answer {
            Answer::Ok => Ok(Response::new(ExportMetricsServiceResponse::default())),
            Answer::Partial { rejected, message } => {
                Ok(Response::new(ExportMetricsServiceResponse {
                    partial_success: Some(ExportMetricsPartialSuccess {
                        rejected_data_points: rejected,
                        error_message: message,
                    }),
                }))
            }
            Answer::Error(code, message) => Err(Status::new(code, message)),
        }
    }
}

impl OtlpStandIn {
    /// Answers `script` in order, then `default`; accepts gzip and zstd requests.
    pub async fn start(default: Answer, script: Vec<Answer>) -> OtlpStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            default: Some(default),
            received: Vec::new(),
        }));
        let service = MetricsServiceServer::new(Service(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(64 << 20);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        OtlpStandIn { addr, state }
    }

    /// `http://127.0.0.1:PORT`, for a `forward.endpoint` or an SDK exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues `answer` before whatever is left of the script's default.
    pub fn then(&self, answer: Answer) {
        self.state
            .lock()
            .expect("stand-in lock")
            .script
            .push_back(answer);
    }

    /// Every export so far.
    pub fn exports(&self) -> Vec<Export> {
        self.state.lock().expect("stand-in lock").received.clone()
    }

    /// Data points in exports answered [`Answer::Ok`].
    pub fn accepted_points(&self) -> usize {
        self.exports()
            .iter()
            .filter(|e| matches!(e.answer, Answer::Ok))
            .map(Export::points)
            .sum()
    }
}

/// Data points of every kind in `request`.
pub fn count_points(request: &ExportMetricsServiceRequest) -> usize {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{gauge, kv, point, request};
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;

    #[tokio::test]
    async fn answers_the_script_then_the_default_and_records_exports() {
        let stand_in = OtlpStandIn::start(
            Answer::Ok,
            vec![Answer::Error(Code::InvalidArgument, "bad".into())],
        )
        .await;
        let mut client = MetricsServiceClient::connect(stand_in.endpoint())
            .await
            .expect("connect");
        let req = request(
            vec![kv("service.name", "t")],
            None,
            vec![gauge(
                "g",
                vec![point(vec![], 1, 1.0), point(vec![], 2, 2.0)],
            )],
        );
        let err = client
            .export(req.clone())
            .await
            .expect_err("scripted error");
        assert_eq!(err.code(), Code::InvalidArgument);
        client.export(req).await.expect("default answer");
        let exports = stand_in.exports();
        assert_eq!(exports.len(), 2);
        assert_eq!(stand_in.accepted_points(), 2);
    }
}
