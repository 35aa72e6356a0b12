//! A listener's rustls configuration, from its `tls:` block, re-read on change.

use crate::reload::Reloading;
use crate::{pem, provider, TlsError, TlsMetrics};
use edgewatch_config::tls::ServerTlsConfig;
use std::sync::Arc;

/// What the listener speaks over TLS (its ALPN protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only (gRPC clients require `h2` to be negotiated).
    Grpc,
    /// An axum server: HTTP/1.1.
    Http1,
    /// Both, h2 preferred (the load generator's sink: gRPC from forwarders, stats
    /// over HTTP/1.1).
    Any,
}

/// The TLS side of the listeners of one `tls:` block. Each handshake uses the
/// configuration current at that moment; connections already established keep
/// theirs.
#[derive(Clone)]
pub struct ServerTls {
    configs: Reloading<Configs>,
}

/// One configuration per ALPN set, built from the same files.
struct Configs {
    grpc: Arc<rustls::ServerConfig>,
    http1: Arc<rustls::ServerConfig>,
    any: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Reads the files once (an error is a start-up error naming the file) and
    /// watches them. Must be called within a tokio runtime.
    pub fn new(cfg: &ServerTlsConfig, metrics: &TlsMetrics) -> Result<ServerTls, TlsError> {
        let mut files = vec![cfg.cert_file.clone(), cfg.key_file.clone()];
        files.extend(cfg.client_ca_file.clone());
        let what = cfg.cert_file.display().to_string();
        let c = cfg.clone();
        let configs = Reloading::start(
            what,
            files,
            Box::new(move || {
                Ok(Configs {
                    grpc: Arc::new(server_config(&c, Protocol::Grpc)?),
                    http1: Arc::new(server_config(&c, Protocol::Http1)?),
                    any: Arc::new(server_config(&c, Protocol::Any)?),
                })
            }),
            metrics.clone(),
        )?;
        Ok(ServerTls { configs })
    }

    pub fn acceptor(&self, protocol: Protocol) -> tokio_rustls::TlsAcceptor {
        let c = self.configs.get();
        tokio_rustls::TlsAcceptor::from(match protocol {
            Protocol::Grpc => c.grpc.clone(),
            Protocol::Http1 => c.http1.clone(),
            Protocol::Any => c.any.clone(),
        })
    }
}

/// The configuration the files say now.
pub fn server_config(
    cfg: &ServerTlsConfig,
    protocol: Protocol,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let certs = pem::certs(&cfg.cert_file)?;
    let key = pem::key(&cfg.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &cfg.client_ca_file {
        Some(ca) => {
            // Expired, not yet valid, wrongly signed or absent client certificates
            // are refused in the handshake.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(pem::roots(ca)?),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Pem {
                path: ca.display().to_string(),
                error: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pem {
            path: format!("{} + {}", cfg.cert_file.display(), cfg.key_file.display()),
            error: e.to_string(),
        })?;
    config.alpn_protocols = match protocol {
        Protocol::Grpc => vec![b"h2".to_vec()],
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Any => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(config)
}
