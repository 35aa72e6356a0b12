//! Sending one pre-encoded request over OTLP/gRPC or OTLP/HTTP and classifying the outcome.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use crate::args::{grpc_code_name, LoadgenArgs, Protocol};
use crate::codec::RawCodec;

/// The OTLP/gRPC metrics export method.
pub const GRPC_EXPORT_PATH: &str =
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// The OTLP/HTTP metrics path.
pub const HTTP_EXPORT_PATH: &str = "/v1/metrics";

/// Error class of a failed request: a gRPC code name, an HTTP status number, or one of
/// `connect`, `timeout`, `transport`.
pub type ErrorCode = String;

/// Per-worker handle that sends requests.
#[derive(Clone)]
pub enum Sender {
    Grpc {
        client: tonic::client::Grpc<Channel>,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        url: String,
        gzip: bool,
        timeout: Duration,
    },
}

/// Builds `n` senders (one per worker) for the arguments. Within a tokio runtime
/// (a TLS connector watches its files).
pub fn senders(args: &LoadgenArgs, n: usize) -> anyhow::Result<Vec<Sender>> {
    let endpoint = args.endpoint_or_default();
    match args.protocol {
        Protocol::Grpc => {
            let conns = args.connections.unwrap_or(args.concurrency.min(4)).max(1);
            let ep = Endpoint::from_shared(endpoint.clone())
                .map_err(|e| anyhow::anyhow!("invalid endpoint {endpoint:?}: {e}"))?
                .tcp_nodelay(true)
                .connect_timeout(args.timeout.min(Duration::from_secs(5)))
                .http2_adaptive_window(true);
            // Lazy: a refused connection shows up per request as error `connect`.
            let channels: Vec<Channel> = match tls_connector(&endpoint, args)? {
                // tonic's own transport would send an https:// endpoint in plaintext.
                Some(c) => (0..conns)
                    .map(|_| ep.clone().connect_with_connector_lazy(c.clone()))
                    .collect(),
                None => (0..conns).map(|_| ep.connect_lazy()).collect(),
            };
            Ok((0..n)
                .map(|i| {
                    let mut client = tonic::client::Grpc::new(channels[i % conns].clone())
                        .max_decoding_message_size(64 << 20);
                    if args.gzip {
                        client = client.send_compressed(CompressionEncoding::Gzip);
                    }
                    client = client
                        .accept_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Zstd);
                    Sender::Grpc {
                        client,
                        timeout: args.timeout,
                    }
                })
                .collect())
        }
        Protocol::Http => {
            let uri: http::Uri = endpoint
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid endpoint {endpoint:?}: {e}"))?;
            let url = match uri.path_and_query().map(|p| p.as_str()) {
                None | Some("") | Some("/") => {
                    format!("{}{HTTP_EXPORT_PATH}", endpoint.trim_end_matches('/'))
                }
                Some(_) => endpoint.clone(),
            };
            let client = reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(n)
                .connect_timeout(args.timeout.min(Duration::from_secs(5)))
                .build()?;
            Ok((0..n)
                .map(|_| Sender::Http {
                    client: client.clone(),
                    url: url.clone(),
                    gzip: args.gzip,
                    timeout: args.timeout,
                })
                .collect())
        }
    }
}

/// The TLS connector of an `https://` gRPC endpoint (verified against `--ca-file`).
fn tls_connector(
    endpoint: &str,
    args: &LoadgenArgs,
) -> anyhow::Result<Option<edgewatch_tls::client::TlsConnector>> {
    if !endpoint.starts_with("https://") {
        return Ok(None);
    }
    let tls = edgewatch_config::tls::TlsConfig {
        ca_file: args.ca_file.clone(),
        ..Default::default()
    };
    let metrics = edgewatch_tls::TlsMetrics::register(&prometheus::Registry::new())?;
    Ok(Some(edgewatch_tls::client::TlsConnector::new(
        &tls,
        &[b"h2"],
        &metrics,
    )?))
}

/// Points the receiver rejected in an otherwise successful answer (OTLP partial success).
fn rejected_points(body: &[u8]) -> u64 {
    ExportMetricsServiceResponse::decode(body)
        .ok()
        .and_then(|r| r.partial_success)
        .map(|p| p.rejected_data_points.max(0) as u64)
        .unwrap_or(0)
}

fn gzip(body: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    e.write_all(body).expect("writing to a Vec");
    Bytes::from(e.finish().expect("writing to a Vec"))
}

/// Whether an error (or one it wraps) is a failure to establish the connection.
fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        let msg = err.to_string();
        if msg.contains("tcp connect error") || msg.contains("error trying to connect") {
            return true;
        }
        cur = err.source();
    }
    false
}

fn classify_status(s: &tonic::Status) -> ErrorCode {
    use std::error::Error;
    if s.code() == tonic::Code::Unavailable {
        if let Some(src) = s.source() {
            if is_connect_error(src) {
                return "connect".into();
            }
        }
        if s.message().contains("tcp connect error") {
            return "connect".into();
        }
    }
    grpc_code_name(s.code()).into()
}

impl Sender {
    /// Sends one request; `Ok(rejected points)` if acknowledged.
    pub async fn send(&mut self, body: Bytes) -> Result<u64, ErrorCode> {
        match self {
            Sender::Grpc { client, timeout } => {
                let fut = async {
                    client.ready().await.map_err(|e| -> ErrorCode {
                        if is_connect_error(&e) {
                            "connect".into()
                        } else {
                            "transport".into()
                        }
                    })?;
                    let resp = client
                        .unary(
                            tonic::Request::new(body),
                            PathAndQuery::from_static(GRPC_EXPORT_PATH),
                            RawCodec,
                        )
                        .await
                        .map_err(|s| classify_status(&s))?;
                    Ok(rejected_points(resp.get_ref()))
                };
                tokio::time::timeout(*timeout, fut)
                    .await
                    .unwrap_or_else(|_| Err("timeout".into()))
            }
            Sender::Http {
                client,
                url,
                gzip: gz,
                timeout,
            } => {
                let mut req = client
                    .post(url.as_str())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .timeout(*timeout);
                let body = if *gz {
                    req = req.header(http::header::CONTENT_ENCODING, "gzip");
                    gzip(&body)
                } else {
                    body
                };
                let resp = req.body(body).send().await.map_err(|e| -> ErrorCode {
                    if e.is_timeout() {
                        "timeout".into()
                    } else if e.is_connect() || is_connect_error(&e) {
                        "connect".into()
                    } else {
                        "transport".into()
                    }
                })?;
                let status = resp.status();
                // Read the body either way so the connection can be reused.
                let bytes = resp.bytes().await.map_err(|e| -> ErrorCode {
                    if e.is_timeout() {
                        "timeout".into()
                    } else {
                        "transport".into()
                    }
                })?;
                if status.is_success() {
                    Ok(rejected_points(&bytes))
                } else {
                    Err(status.as_u16().to_string())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `https://` endpoint whose CA file cannot be read is an error at start,
    /// never a plaintext connection.
    #[tokio::test]
    async fn an_https_grpc_endpoint_with_an_unreadable_ca_is_refused() {
        let args = LoadgenArgs {
            endpoint: Some("https://core.example:4317".into()),
            protocol: Protocol::Grpc,
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..LoadgenArgs::default()
        };
        let e = senders(&args, 1).err().expect("refused").to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
