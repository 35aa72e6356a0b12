//! Binding and running the OTLP servers of one role.

use crate::admission::{self, AdmissionMetrics, ReadSlots};
use crate::MetricsSink;
use edgewatch_tls::accept::{serve_http, Preface, TlsListener, PREFACE_TIMEOUT};
use edgewatch_tls::server::{Protocol, ServerTls};
use edgewatch_tls::TlsMetrics;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// A request (read, ingest, answer) that takes longer than this is cancelled with
/// DEADLINE_EXCEEDED: a sender trickling its body cannot hold a read slot for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings on idle connections; a peer that does not answer within
/// [`KEEPALIVE_TIMEOUT`] is dropped with its connection slot.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Listeners bound at start, so "address in use" is reported before the role says it
/// is up.
pub struct OtlpListeners {
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    tls: Option<(ServerTls, TlsMetrics)>,
    admission: Option<AdmissionMetrics>,
}

impl OtlpListeners {
    pub async fn bind(grpc: Option<SocketAddr>, http: Option<SocketAddr>) -> io::Result<Self> {
        let grpc = match grpc {
            Some(a) => Some(bind(a, "OTLP/gRPC").await?),
            None => None,
        };
        let http = match http {
            Some(a) => Some(bind(a, "OTLP/HTTP").await?),
            None => None,
        };
        Ok(OtlpListeners {
            grpc,
            http,
            tls: None,
            admission: None,
        })
    }

    /// Both listeners speak TLS (mTLS when `tls` has a client CA).
    pub fn with_tls(mut self, tls: ServerTls, metrics: TlsMetrics) -> Self {
        self.tls = Some((tls, metrics));
        self
    }

    /// Where the gRPC server counts what its admission refuses.
    pub fn with_admission_metrics(mut self, metrics: AdmissionMetrics) -> Self {
        self.admission = Some(metrics);
        self
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Warns at start for each listener bound beyond loopback without credentials.
    pub fn warn_if_open(&self, authenticated: bool) {
        if let Some(a) = self.grpc_addr() {
            crate::auth::warn_if_open("OTLP gRPC", a, authenticated);
        }
        if let Some(a) = self.http_addr() {
            crate::auth::warn_if_open("OTLP HTTP", a, authenticated);
        }
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` is cancelled; in-flight requests are completed.
    pub async fn serve<S: MetricsSink>(
        self,
        sink: S,
        max_request_bytes: usize,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        let tls = self.tls;
        let grpc = match self.grpc {
            Some(l) => {
                let metrics = self
                    .admission
                    .clone()
                    .unwrap_or_else(AdmissionMetrics::unregistered);
                let reads = ReadSlots::new(admission::read_slots(), metrics.clone());
                let svc = crate::grpc::MetricsService::new(sink.clone(), max_request_bytes, reads);
                let stop = shutdown.clone().cancelled_owned();
                let server = tonic::transport::Server::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .initial_connection_window_size(admission::CONNECTION_WINDOW)
                    .initial_stream_window_size(admission::STREAM_WINDOW)
                    .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                    .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                    .add_service(svc);
                Some(match &tls {
                    None => {
                        let incoming = admission::plaintext(l, metrics);
                        tokio::spawn(async move {
                            server
                                .serve_with_incoming_shutdown(incoming, stop)
                                .await
                                .map_err(io::Error::other)
                        })
                    }
                    Some((t, m)) => {
                        // The handshake has its own deadline; then the HTTP/2 preface
                        // must follow within one too (tonic waits for it forever).
                        let incoming =
                            TlsListener::new(l, t.clone(), Protocol::Grpc, "otlp_grpc", m)?
                                .map(|c| c.map(|c| Preface::new(c, PREFACE_TIMEOUT)));
                        tokio::spawn(async move {
                            server
                                .serve_with_incoming_shutdown(incoming, stop)
                                .await
                                .map_err(io::Error::other)
                        })
                    }
                })
            }
            None => None,
        };
        let http = self.http.map(|l| {
            let app = crate::http::router(sink, max_request_bytes);
            let stop = shutdown.clone();
            let tls = tls.map(|(t, m)| (t, "otlp_http", m));
            tokio::spawn(serve_http(l, tls, app, stop.cancelled_owned()))
        });
        for task in [grpc, http].into_iter().flatten() {
            task.await.map_err(io::Error::other)??;
        }
        Ok(())
    }
}

pub async fn bind(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}")))
}

/// A registry in the Prometheus text format: the `/metrics` endpoint of both roles.
pub fn metrics_response(registry: &prometheus::Registry) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use prometheus::Encoder;
    let enc = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    match enc.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, enc.format_type().to_string())],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
