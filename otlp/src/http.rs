//! OTLP/HTTP metrics receiver: `POST /v1/metrics` with `application/x-protobuf` or
//! `application/json` bodies, optionally `Content-Encoding: gzip`
//! (opentelemetry-proto specification/protocol/otlp.md, "OTLP/HTTP").

use crate::{
    ExportContext, ExportError, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    MetricsSink,
};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use prost::Message;
use std::io::Read;
use std::net::SocketAddr;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

#[derive(Clone)]
struct Receiver<S> {
    sink: S,
    max_request_bytes: usize,
}

/// The `/v1/metrics` route, to be merged into a server's router.
pub fn router<S: MetricsSink>(sink: S, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v1/metrics", post(export::<S>))
        .with_state(Receiver {
            sink,
            max_request_bytes,
        })
        // The limit is enforced by `read_body` with a 413 naming it; axum's default
        // 2 MB cap would answer first with less to say.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

async fn export<S: MetricsSink>(State(rx): State<Receiver<S>>, req: Request<Body>) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client_cn = req
        .extensions()
        .get::<ConnectInfo<edgewatch_tls::accept::TlsPeer>>()
        .and_then(|c| c.0.client_cn.clone());
    let (parts, body) = req.into_parts();
    let format = match request_format(&parts.headers) {
        Ok(f) => f,
        // The body format is unknown, so the error goes out as text.
        Err(e) => return (e.http_status(), e.to_string()).into_response(),
    };
    let ctx = ExportContext {
        peer,
        client_cn,
        bearer_token: crate::auth::bearer_token_of(&parts.headers),
        ..ExportContext::default()
    };
    match receive(&rx, &parts.headers, body, format, ctx).await {
        Ok(resp) => encode(format, &resp),
        Err(e) => error_response(format, &e),
    }
}

async fn receive<S: MetricsSink>(
    rx: &Receiver<S>,
    headers: &HeaderMap,
    body: Body,
    format: Format,
    ctx: ExportContext,
) -> Result<ExportMetricsServiceResponse, ExportError> {
    let raw = read_body(body, rx.max_request_bytes).await?;
    let raw = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => raw,
        Some(e) if e.is_empty() || e == "identity" => raw,
        Some(e) if e == "gzip" => gunzip(&raw, rx.max_request_bytes)?,
        Some(other) => {
            return Err(ExportError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} (supported: gzip, identity)"
            )))
        }
    };
    let body = match format {
        // The sink decodes (and so validates) protobuf bodies itself.
        Format::Protobuf => raw,
        Format::Json => {
            crate::budget::check_json(&raw)?;
            let de = &mut serde_json::Deserializer::from_slice(&raw);
            let req: ExportMetricsServiceRequest =
                serde_path_to_error::deserialize(de).map_err(|e| {
                    ExportError::InvalidArgument(format!(
                        "malformed OTLP/JSON at {}: {}",
                        e.path(),
                        e.inner()
                    ))
                })?;
            Bytes::from(req.encode_to_vec())
        }
    };
    let outcome = rx.sink.export(body, ctx).await?;
    Ok(outcome.into_response())
}

fn request_format(headers: &HeaderMap) -> Result<Format, ExportError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(ExportError::UnsupportedMediaType(format!(
            "Content-Type {ct:?} (supported: application/x-protobuf, application/json)"
        ))),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ExportError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            // to_bytes reports the limit through the error's source chain.
            let over = std::error::Error::source(&e)
                .map(|s| s.is::<http_body_util::LengthLimitError>())
                .unwrap_or(false);
            if over {
                Err(ExportError::TooLarge(format!(
                    "body exceeds the limit of {limit} bytes"
                )))
            } else {
                Err(ExportError::InvalidArgument(format!(
                    "reading the body failed: {e}"
                )))
            }
        }
    }
}

/// Inflates at most `limit` bytes, so a small gzip bomb cannot exhaust memory.
fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, ExportError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let mut dec = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| ExportError::InvalidArgument(format!("malformed gzip body: {e}")))?;
    if out.len() > limit {
        return Err(ExportError::TooLarge(format!(
            "inflated body exceeds the limit of {limit} bytes"
        )));
    }
    Ok(Bytes::from(out))
}

/// google.rpc.Status, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn error_response(format: Format, e: &ExportError) -> Response {
    let status = RpcStatus {
        code: e.grpc_status().code() as i32,
        message: e.to_string(),
    };
    let mut resp = match format {
        Format::Protobuf => (e.http_status(), status.encode_to_vec()).into_response(),
        Format::Json => (
            e.http_status(),
            serde_json::to_vec(&status).unwrap_or_default(),
        )
            .into_response(),
    };
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if matches!(e, ExportError::Unauthenticated(_)) {
        // RFC 6750 §3: a 401 names the scheme it wants.
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(after) = e.retry_after() {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn encode(format: Format, resp: &ExportMetricsServiceResponse) -> Response {
    let body = match format {
        Format::Protobuf => resp.encode_to_vec(),
        Format::Json => serde_json::to_vec(resp).unwrap_or_else(|_| b"{}".to_vec()),
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}
