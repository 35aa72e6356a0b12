//! The OTLP metrics receiving edge shared by the collector and the aggregator.
//!
//! Both roles accept the same protocol (OTLP/gRPC and OTLP/HTTP with protobuf or JSON
//! bodies, gzip), so the servers live here once. A server hands each request to a
//! [`MetricsSink`] as protobuf bytes: the collector stamps and buffers them, the
//! aggregator de-duplicates replays and converts them. Errors are mapped to protocol
//! status once, here ([`ExportError`]).

pub mod admission;
pub mod auth;
mod budget;
pub mod client;
pub mod codec;
pub mod grpc;
pub mod http;
pub mod ready;
pub mod reload;
pub mod server;
pub mod shallow;
pub mod view;

use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};

/// gRPC method path of the OTLP metrics export.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Request metadata set by an edgewatch collector's forwarder so the aggregator can
/// drop replays: the buffer's stable instance id, the sequence number of the first
/// entry in the request, and the encoded length of each entry (entries are
/// concatenated protobuf messages, which protobuf defines as their merge).
pub const HEADER_COLLECTOR_ID: &str = "x-edgewatch-collector-id";
pub const HEADER_FIRST_SEQ: &str = "x-edgewatch-first-seq";
pub const HEADER_ENTRY_LENS: &str = "x-edgewatch-entry-lens";
/// Every sequence number below this one was delivered or dropped by the collector:
/// lets the aggregator forget about gaps left by dropped entries.
pub const HEADER_FLOOR: &str = "x-edgewatch-floor";

/// What a forwarded edgewatch batch says about itself (see the header constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    pub collector_id: String,
    pub first_seq: u64,
    pub entry_lens: Vec<usize>,
    pub floor: u64,
}

impl BatchInfo {
    /// Parses the headers; `Ok(None)` when the request carries none of them.
    pub fn from_headers(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ExportError> {
        let id = get(HEADER_COLLECTOR_ID);
        let first = get(HEADER_FIRST_SEQ);
        let lens = get(HEADER_ENTRY_LENS);
        let floor = get(HEADER_FLOOR);
        let (id, first, lens, floor) = match (id, first, lens, floor) {
            (None, None, None, None) => return Ok(None),
            (Some(i), Some(f), Some(l), Some(fl)) => (i, f, l, fl),
            _ => {
                return Err(ExportError::InvalidArgument(format!(
                    "{HEADER_COLLECTOR_ID}, {HEADER_FIRST_SEQ}, {HEADER_ENTRY_LENS} and {HEADER_FLOOR} must be sent together"
                )))
            }
        };
        let floor = floor.parse().map_err(|_| {
            ExportError::InvalidArgument(format!("{HEADER_FLOOR}: {floor:?} is not a number"))
        })?;
        let first_seq = first.parse().map_err(|_| {
            ExportError::InvalidArgument(format!("{HEADER_FIRST_SEQ}: {first:?} is not a number"))
        })?;
        let entry_lens = lens
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ExportError::InvalidArgument(format!(
                    "{HEADER_ENTRY_LENS}: {lens:?} is not a list of lengths"
                ))
            })?;
        if id.is_empty() || entry_lens.is_empty() {
            return Err(ExportError::InvalidArgument(format!(
                "{HEADER_COLLECTOR_ID} and {HEADER_ENTRY_LENS} must not be empty"
            )));
        }
        Ok(Some(BatchInfo {
            collector_id: id,
            first_seq,
            entry_lens,
            floor,
        }))
    }

    /// The header values, in the order of the constants.
    pub fn to_headers(&self) -> [(&'static str, String); 4] {
        let lens = self
            .entry_lens
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(",");
        [
            (HEADER_COLLECTOR_ID, self.collector_id.clone()),
            (HEADER_FIRST_SEQ, self.first_seq.to_string()),
            (HEADER_ENTRY_LENS, lens),
            (HEADER_FLOOR, self.floor.to_string()),
        ]
    }
}

/// Where a request came from, and what it proves about its sender. `Debug` never
/// shows the bearer token.
#[derive(Clone, Default)]
pub struct ExportContext {
    pub peer: Option<SocketAddr>,
    pub batch: Option<BatchInfo>,
    /// Subject CN of the client certificate the TLS listener verified (mTLS only).
    pub client_cn: Option<String>,
    /// The token of an `Authorization: Bearer <token>` header, as sent.
    pub bearer_token: Option<String>,
}

impl std::fmt::Debug for ExportContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportContext")
            .field("peer", &self.peer)
            .field("batch", &self.batch)
            .field("client_cn", &self.client_cn)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<secret>"),
            )
            .finish()
    }
}

/// A partial success: some data points were rejected, the rest accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    pub rejected_points: i64,
    pub message: String,
}

impl ExportOutcome {
    /// The OTLP response: empty on full success, `partial_success` otherwise.
    pub fn into_response(self) -> ExportMetricsServiceResponse {
        let partial = self.rejected_points > 0 || !self.message.is_empty();
        ExportMetricsServiceResponse {
            partial_success: partial.then_some(ExportMetricsPartialSuccess {
                rejected_data_points: self.rejected_points,
                error_message: self.message,
            }),
        }
    }
}

/// Why a request was not accepted. Mapped to gRPC and HTTP status in one place.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ExportError {
    /// Not retryable: gRPC INVALID_ARGUMENT, HTTP 400.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// Body over the limit: gRPC RESOURCE_EXHAUSTED, HTTP 413. Not retryable.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// HTTP 415.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Backpressure: gRPC RESOURCE_EXHAUSTED with RetryInfo, HTTP 429 with Retry-After.
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: Duration,
    },
    /// Missing or wrong credentials: gRPC UNAUTHENTICATED, HTTP 401. Not retryable.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Temporary failure (write error, shutting down): gRPC UNAVAILABLE, HTTP 503.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
}

impl ExportError {
    pub fn grpc_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        match self {
            ExportError::InvalidArgument(_) => tonic::Status::invalid_argument(self.to_string()),
            ExportError::TooLarge(_) => tonic::Status::resource_exhausted(self.to_string()),
            ExportError::UnsupportedMediaType(_) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            ExportError::Unauthenticated(_) => tonic::Status::unauthenticated(self.to_string()),
            // RetryInfo is what OTLP exporters read to pace their retries
            // (opentelemetry-proto specification/protocol/otlp.md, "Throttling").
            ExportError::ResourceExhausted { retry_after, .. } => {
                tonic::Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    self.to_string(),
                    ErrorDetails::with_retry_info(Some(*retry_after)),
                )
            }
            ExportError::Unavailable { retry_after, .. } => tonic::Status::with_error_details(
                tonic::Code::Unavailable,
                self.to_string(),
                ErrorDetails::with_retry_info(Some(*retry_after)),
            ),
        }
    }

    pub fn http_status(&self) -> ::http::StatusCode {
        use ::http::StatusCode;
        match self {
            ExportError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ExportError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ExportError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ExportError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ExportError::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            ExportError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExportError::ResourceExhausted { retry_after, .. }
            | ExportError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Receives each accepted OTLP metrics request as protobuf-encoded
/// `ExportMetricsServiceRequest` bytes (JSON requests are re-encoded first).
/// Returning Ok acknowledges the request to the sender.
pub trait MetricsSink: Clone + Send + Sync + 'static {
    fn export(
        &self,
        body: Bytes,
        ctx: ExportContext,
    ) -> impl Future<Output = Result<ExportOutcome, ExportError>> + Send;
}

/// Decodes protobuf bytes, naming the decode error for the sender.
pub fn decode_request(body: &[u8]) -> Result<ExportMetricsServiceRequest, ExportError> {
    use prost::Message;
    ExportMetricsServiceRequest::decode(body).map_err(|e| {
        ExportError::InvalidArgument(format!("malformed ExportMetricsServiceRequest: {e}"))
    })
}

/// Counts the data points in a request (histogram and summary points count as one).
pub fn count_points(req: &ExportMetricsServiceRequest) -> u64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let mut n = 0u64;
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                n += match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                } as u64;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_info_round_trips_through_headers() {
        let b = BatchInfo {
            collector_id: "abc".into(),
            first_seq: 42,
            entry_lens: vec![10, 20, 3],
            floor: 40,
        };
        let h = b.to_headers();
        let got =
            BatchInfo::from_headers(|k| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
                .unwrap()
                .unwrap();
        assert_eq!(got, b);
        assert_eq!(BatchInfo::from_headers(|_| None).unwrap(), None);
        let partial = BatchInfo::from_headers(|k| (k == HEADER_FIRST_SEQ).then(|| "1".to_string()));
        assert!(matches!(partial, Err(ExportError::InvalidArgument(_))));
        let bad = BatchInfo::from_headers(|k| {
            Some(if k == HEADER_FIRST_SEQ {
                "x".into()
            } else {
                "1".into()
            })
        });
        assert!(matches!(bad, Err(ExportError::InvalidArgument(m)) if m.contains("first-seq")));
    }

    #[test]
    fn the_bearer_token_is_not_printed() {
        let ctx = ExportContext {
            bearer_token: Some("tok-secret".into()),
            client_cn: Some("edge-a".into()),
            ..ExportContext::default()
        };
        let shown = format!("{ctx:?}");
        assert!(
            !shown.contains("tok-secret") && shown.contains("<secret>") && shown.contains("edge-a"),
            "{shown}"
        );
    }

    #[test]
    fn status_mapping() {
        let e = ExportError::ResourceExhausted {
            message: "full".into(),
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(e.http_status(), 429);
        assert_eq!(e.grpc_status().code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            ExportError::InvalidArgument("x".into())
                .grpc_status()
                .code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(ExportError::TooLarge("x".into()).http_status(), 413);
    }
}
