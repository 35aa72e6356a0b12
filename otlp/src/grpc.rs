//! OTLP/gRPC metrics service over the raw codec (see [`crate::codec`]).

use crate::admission::ReadSlots;
use crate::codec::ServerCodec;
use crate::{BatchInfo, ExportContext, ExportMetricsServiceResponse, MetricsSink};
use bytes::Bytes;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::OwnedSemaphorePermit;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;

/// A tower service answering `MetricsService/Export`; everything else is UNIMPLEMENTED.
pub struct MetricsService<S> {
    sink: S,
    max_request_bytes: usize,
    reads: ReadSlots,
}

impl<S: Clone> Clone for MetricsService<S> {
    fn clone(&self) -> Self {
        MetricsService {
            sink: self.sink.clone(),
            max_request_bytes: self.max_request_bytes,
            reads: self.reads.clone(),
        }
    }
}

impl<S: MetricsSink> MetricsService<S> {
    /// `reads` bounds the requests whose bodies are read and decoded at once, across
    /// every connection of the server (see [`crate::admission`]).
    pub fn new(sink: S, max_request_bytes: usize, reads: ReadSlots) -> Self {
        MetricsService {
            sink,
            max_request_bytes,
            reads,
        }
    }
}

impl<S> NamedService for MetricsService<S> {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

/// The export call; `read_slot` is given back as soon as tonic has decoded the body,
/// from then on the sink's own budget bounds what is held.
struct Export<S> {
    sink: S,
    read_slot: Option<OwnedSemaphorePermit>,
}

impl<S: MetricsSink> tonic::server::UnaryService<Bytes> for Export<S> {
    type Response = ExportMetricsServiceResponse;
    type Future = Pin<
        Box<dyn Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        drop(self.read_slot.take());
        let sink = self.sink.clone();
        Box::pin(async move {
            let (peer, client_cn) = peer_of(&request);
            let md = request.metadata();
            let batch = BatchInfo::from_headers(|k| {
                md.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned)
            })
            .map_err(|e| e.grpc_status())?;
            let ctx = ExportContext {
                peer,
                batch,
                client_cn,
                bearer_token: md
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::auth::bearer_token)
                    .map(str::to_owned),
            };
            let outcome = sink
                .export(request.into_inner(), ctx)
                .await
                .map_err(|e| e.grpc_status())?;
            Ok(tonic::Response::new(outcome.into_response()))
        })
    }
}

/// The peer's address and, over mTLS, the Subject CN of its verified certificate.
fn peer_of<T>(request: &tonic::Request<T>) -> (Option<std::net::SocketAddr>, Option<String>) {
    match request.extensions().get::<edgewatch_tls::accept::TlsPeer>() {
        Some(tls) => (Some(tls.addr), tls.client_cn.clone()),
        None => (request.remote_addr(), None),
    }
}

impl<S, B> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: MetricsSink,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != crate::EXPORT_PATH {
            return Box::pin(async {
                Ok(
                    tonic::Status::unimplemented("only MetricsService/Export is served")
                        .into_http(),
                )
            });
        }
        let sink = self.sink.clone();
        let max = self.max_request_bytes;
        let reads = self.reads.clone();
        Box::pin(async move {
            let Some(read_slot) = reads.acquire().await else {
                let busy = crate::ExportError::ResourceExhausted {
                    message: "the server is reading as many requests as it may; retry later".into(),
                    retry_after: std::time::Duration::from_secs(1),
                };
                return Ok(busy.grpc_status().into_http());
            };
            let mut grpc = tonic::server::Grpc::new(ServerCodec::new(max))
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                // Responses are not compressed, whatever the client accepts: they are
                // a few bytes, and creating a gzip encoder per response was 9.5 % of the
                // collector's CPU samples at 10k points/s.
                // Frames up to twice the limit reach the codec, which checks the
                // decompressed size; larger frames are refused by tonic before being
                // buffered.
                .max_decoding_message_size(max.saturating_mul(2));
            let export = Export {
                sink,
                read_slot: Some(read_slot),
            };
            let mut resp = grpc.unary(export, req).await;
            // tonic answers an over-long frame with OUT_OF_RANGE; OTLP senders expect
            // RESOURCE_EXHAUSTED for an oversized request. Our sinks never answer
            // OUT_OF_RANGE, so the code can only be tonic's length check.
            let out_of_range = http::HeaderValue::from(tonic::Code::OutOfRange as i32);
            if resp.headers().get("grpc-status") == Some(&out_of_range) {
                resp.headers_mut().insert(
                    "grpc-status",
                    http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
                );
            }
            Ok(resp)
        })
    }
}
