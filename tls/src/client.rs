//! Client side: a rustls `ClientConfig` from a `tls:` block (Prometheus'
//! `tls_config` semantics), and a connector for tonic channels that re-reads the
//! client certificate and key when they change.
//!
//! Built by hand rather than through reqwest's or tonic's options because neither
//! can verify the server's certificate against a name other than the URL's host
//! (`server_name`, e.g. a core reached through an IP address or a tunnel).

use crate::reload::Reloading;
use crate::{pem, provider, TlsError, TlsMetrics};
use edgewatch_config::tls::TlsConfig;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// The client configuration `t` describes. Without `ca_file`, the server must
/// chain to the public web roots.
pub fn client_config(t: &TlsConfig) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = verifier(t, &provider)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(pem::certs(cert)?, pem::key(key)?)
            .map_err(|e| TlsError::Pem {
                path: format!("{} + {}", cert.display(), key.display()),
                error: e.to_string(),
            }),
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(TlsError::Config(
            "cert_file and key_file go together: set both or neither".into(),
        )),
    }
}

/// `server_name` as a rustls name.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        TlsError::Config(format!(
            "server_name {name:?} is not a DNS name or IP address"
        ))
    })
}

fn verifier(
    t: &TlsConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    if t.insecure_skip_verify {
        return Ok(Arc::new(Insecure(provider.clone())));
    }
    let roots = match &t.ca_file {
        // As Prometheus: a ca_file replaces the system roots.
        Some(ca) => pem::roots(ca)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(match &t.server_name {
        Some(name) => Arc::new(Named {
            inner,
            name: server_name(name)?,
        }),
        None => inner,
    })
}

/// Connects to an `https://` URI's host and port over TLS with the configuration
/// current at that moment: a rotated client certificate is used by the next
/// connection, established ones keep theirs. The SNI sent is `server_name` when
/// set, else the URI's host. For tonic's `Endpoint::connect_with_connector*`.
#[derive(Clone)]
pub struct TlsConnector {
    config: Reloading<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl TlsConnector {
    /// Reads the files once (an error is a start-up error naming the file) and
    /// watches them. `alpn`: the protocols offered (`h2` for gRPC). Within a tokio
    /// runtime.
    pub fn new(t: &TlsConfig, alpn: &[&[u8]], metrics: &TlsMetrics) -> Result<Self, TlsError> {
        let files = [&t.ca_file, &t.cert_file, &t.key_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let server_name = t.server_name.as_deref().map(server_name).transpose()?;
        let c = t.clone();
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = Reloading::start(
            "client TLS".to_string(),
            files,
            Box::new(move || {
                let mut config = client_config(&c)?;
                config.alpn_protocols = alpn.clone();
                Ok(config)
            }),
            metrics.clone(),
        )?;
        Ok(TlsConnector {
            config,
            server_name,
        })
    }
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.get();
        let fixed_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host"))
            })?;
            // `[::1]` in a URI is `::1` on the wire and in a certificate.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = match fixed_name {
                Some(n) => n,
                None => ServerName::try_from(host.clone()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{host:?} is not a DNS name or IP address"),
                    )
                })?,
            };
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Verifies the chain against `name` instead of the name the connection was made
/// for (reqwest sends the URL's host as SNI and verifies against it).
#[derive(Debug)]
struct Named {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for Named {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _url_host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate is accepted; the handshake signatures
/// are still checked, so the session is at least with the certificate's key holder.
#[derive(Debug)]
struct Insecure(Arc<CryptoProvider>);

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
