//! TLS of every edgewatch listener and client, with rustls (ring).
//!
//! * [`server::ServerTls`]: a listener's configuration from its `tls:` block; the
//!   certificate, key and client CA are re-read when their files change.
//! * [`accept::TlsListener`]: the accept loop of a TLS listener (handshakes run
//!   beside it, with a deadline), for tonic and axum.
//! * [`serve::serve_http`]: an axum router over plain TCP or TLS, with header,
//!   request and response timeouts and bounds on requests and connections.
//! * [`client`]: a `ClientConfig` from a client `tls:` block, and a reloading
//!   connector for tonic channels.
//! * [`identity::subject_cn`]: the Subject CN of a verified client certificate.

pub mod accept;
pub mod client;
pub mod identity;
mod pem;
mod reload;
pub mod serve;
pub mod server;

pub use reload::TlsMetrics;

/// A TLS file or configuration that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {error}")]
    Pem { path: String, error: String },
    #[error("{0}")]
    Config(String),
    #[error("registering TLS metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The one crypto provider of edgewatch's TLS.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
