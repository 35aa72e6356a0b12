//! The OTLP/gRPC export call of a body that is compressed once, by the caller.
//!
//! Written by hand because tonic (0.14) has no way to send a message that is already
//! compressed: its client compresses each message itself, with a new zstd context per
//! message (`codec::compression::compress`), and again on every retry. Setting up
//! those contexts (`ZSTD_CCtx_init` and its page faults) was ~5 % of the collector's
//! CPU samples at 10k points/s, where it sends ~5 batches a second. Here a batch is framed and
//! compressed once ([`FrameEncoder`], one reused context) and the finished gRPC frame
//! goes through tonic's [`Channel`], which still does the connection, HTTP/2 and the
//! timeout.

use crate::{ExportMetricsServiceResponse, EXPORT_PATH};
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

/// A length-prefixed gRPC message, its payload zstd-compressed unless compression
/// failed.
#[derive(Clone, Debug)]
pub struct Frame {
    bytes: Bytes,
    compressed: bool,
}

impl Frame {
    /// Bytes on the wire, prefix included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn new(compressed: bool, payload: &[u8]) -> Option<Frame> {
        let len = u32::try_from(payload.len()).ok()?;
        let mut out = BytesMut::with_capacity(5 + payload.len());
        out.put_u8(compressed as u8);
        out.put_u32(len);
        out.extend_from_slice(payload);
        Some(Frame {
            bytes: out.freeze(),
            compressed,
        })
    }
}

/// Compresses request bodies into [`Frame`]s with one zstd context, kept between calls.
pub struct FrameEncoder {
    zstd: zstd::bulk::Compressor<'static>,
}

impl FrameEncoder {
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(FrameEncoder {
            zstd: zstd::bulk::Compressor::new(level)?,
        })
    }

    /// The body compressed; should zstd fail (it needs only memory), the body as it
    /// is, which every gRPC server accepts. `None` for a body over gRPC's 4 GiB.
    pub fn frame(&mut self, body: &[u8]) -> Option<Frame> {
        // The bulk API writes the content size into the frame header, so zstd sizes
        // its window to the body rather than to the level's default (the receiver
        // allocates that window for each message it decompresses).
        match self.zstd.compress(body) {
            Ok(c) => Frame::new(true, &c),
            Err(e) => {
                tracing::warn!(error = %e, "zstd failed; sending the batch uncompressed");
                Frame::new(false, body)
            }
        }
    }
}

/// Sends one export over `channel`; `metadata` becomes request headers.
/// Status handling follows tonic's client: a `grpc-status` in the response headers
/// (trailers-only) or trailers wins; without one, the HTTP status is mapped as
/// gRPC's "HTTP to gRPC Status Code Mapping" says.
pub async fn export(
    channel: &mut Channel,
    frame: Frame,
    metadata: &[(&'static str, String)],
    max_response: usize,
) -> Result<ExportMetricsServiceResponse, Status> {
    let compressed = frame.compressed;
    let mut req = http::Request::new(tonic::body::Body::new(http_body_util::Full::new(
        frame.bytes,
    )));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static(EXPORT_PATH);
    *req.version_mut() = http::Version::HTTP_2;
    let headers = req.headers_mut();
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if compressed {
        headers.insert("grpc-encoding", HeaderValue::from_static("zstd"));
    }
    for (k, v) in metadata {
        let v = HeaderValue::from_str(v)
            .map_err(|_| Status::internal(format!("bad header value for {k}: {v:?}")))?;
        let k = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| Status::internal(format!("bad header name {k:?}")))?;
        headers.insert(k, v);
    }
    let svc = channel
        .ready()
        .await
        .map_err(|e| Status::unavailable(format!("connecting: {e}")))?;
    let resp = svc
        .call(req)
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    let (parts, body) = resp.into_parts();
    if let Some(s) = status_of(&parts.headers) {
        return Err(if s.code() == Code::Ok {
            Status::internal("trailers-only response without a message")
        } else {
            s
        });
    }
    if parts.status != http::StatusCode::OK {
        return Err(status_of_http(parts.status));
    }
    let collected = http_body_util::Limited::new(body, max_response.saturating_add(5))
        .collect()
        .await
        .map_err(|e| match e.downcast::<Status>() {
            Ok(s) => *s,
            Err(e) => Status::from_error(e),
        })?;
    match collected.trailers().and_then(status_of) {
        Some(s) if s.code() == Code::Ok => {}
        Some(s) => return Err(s),
        None => return Err(Status::internal("response without grpc-status")),
    }
    decode_response(&collected.to_bytes())
}

/// The status a `grpc-status` header carries. tonic's parser panics on a
/// `grpc-status-details-bin` that is not base64, so such details are dropped first:
/// a peer's bad header must not bring the collector down.
fn status_of(headers: &HeaderMap) -> Option<Status> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const DETAILS: &str = "grpc-status-details-bin";
    // tonic's own decoding: standard alphabet, padding optional.
    const TONIC_BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    match headers.get(DETAILS) {
        Some(d) if TONIC_BASE64.decode(d.as_bytes()).is_err() => {
            let mut headers = headers.clone();
            headers.remove(DETAILS);
            Status::from_header_map(&headers)
        }
        _ => Status::from_header_map(headers),
    }
}

fn status_of_http(s: http::StatusCode) -> Status {
    let code = match s.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {s} without grpc-status"))
}

fn decode_response(data: &[u8]) -> Result<ExportMetricsServiceResponse, Status> {
    let Some((head, msg)) = data.split_at_checked(5) else {
        return Err(Status::internal("response without a message"));
    };
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if head[0] != 0 {
        // No grpc-accept-encoding was sent, so the server may not compress.
        return Err(Status::internal(
            "compressed response to a request that accepts none",
        ));
    }
    if msg.len() != len {
        return Err(Status::internal(format!(
            "response frame says {len} bytes, body has {}",
            msg.len()
        )));
    }
    ExportMetricsServiceResponse::decode(msg)
        .map_err(|e| Status::internal(format!("malformed export response: {e}")))
}

/// Whether a failed export is retried (the forwarder's classes, and the fleet
/// simulation's): retryable per the OTLP spec (specification/protocol/otlp.md,
/// "Failures"), plus RESOURCE_EXHAUSTED, which an aggregator under backpressure answers, and
/// UNKNOWN/INTERNAL, which tonic reports for transport failures (stream resets):
/// the aggregator answers bad data with INVALID_ARGUMENT, and dropping acknowledged
/// data on a transport hiccup would be worse than retrying it. UNAUTHENTICATED too,
/// unlike the spec: the data is good and the credentials get fixed (a rotated token
/// file is read again), so the buffer keeps it meanwhile, within its caps.
pub fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unauthenticated
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::OutOfRange
            | Code::DataLoss
            | Code::Unknown
            | Code::Internal
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decompress_to_the_body() {
        let mut enc = FrameEncoder::new(3).unwrap();
        for body in [&b""[..], b"abc", &vec![7u8; 100_000]] {
            let f = enc.frame(body).unwrap();
            assert!(f.compressed);
            let b = &f.bytes;
            assert_eq!(b[0], 1);
            let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            assert_eq!(len, f.len() - 5);
            assert_eq!(zstd::decode_all(&b[5..]).unwrap(), body);
        }
    }

    #[test]
    fn response_frames_are_checked() {
        let ok = ExportMetricsServiceResponse::default().encode_to_vec();
        let mut framed = vec![0, 0, 0, 0, ok.len() as u8];
        framed.extend_from_slice(&ok);
        assert!(decode_response(&framed).is_ok());
        assert_eq!(decode_response(&[]).unwrap_err().code(), Code::Internal);
        assert_eq!(
            decode_response(&[1, 0, 0, 0, 0]).unwrap_err().code(),
            Code::Internal
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 9]).unwrap_err().code(),
            Code::Internal
        );
    }

    #[test]
    fn bad_status_details_do_not_panic() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert("grpc-message", HeaderValue::from_static("down"));
        h.insert(
            "grpc-status-details-bin",
            HeaderValue::from_static("!!not base64!!"),
        );
        let s = status_of(&h).unwrap();
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "down"));
    }

    #[test]
    fn http_errors_map_as_grpc_specifies() {
        assert_eq!(
            status_of_http(http::StatusCode::SERVICE_UNAVAILABLE).code(),
            Code::Unavailable
        );
        assert_eq!(
            status_of_http(http::StatusCode::NOT_FOUND).code(),
            Code::Unimplemented
        );
        assert_eq!(
            status_of_http(http::StatusCode::IM_A_TEAPOT).code(),
            Code::Unknown
        );
    }
}
