//! `tls_config` as a rustls client configuration. Built by hand rather than through
//! reqwest's options because reqwest cannot verify the server's certificate against
//! a name other than the URL's host (`server_name`, e.g. a TSDB reached through an
//! IP address or a tunnel).

use super::RemoteError;
use edgewatch_config::remote_write::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The client configuration for `t`; `None` when `t` sets nothing (reqwest's
/// defaults: its built-in roots, the URL's host).
pub(crate) fn client_config(t: &TlsConfig) -> Result<Option<rustls::ClientConfig>, RemoteError> {
    let set = t.ca_file.is_some()
        || t.cert_file.is_some()
        || t.key_file.is_some()
        || t.server_name.is_some()
        || t.insecure_skip_verify;
    if !set {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier(t, &provider)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RemoteError::Client(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let certs = certs(cert)?;
            let k = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem_error(key, e))?;
            builder
                .with_client_auth_cert(certs, k)
                .map_err(|e| RemoteError::TlsPem {
                    path: format!("{} + {}", cert.display(), key.display()),
                    error: e.to_string(),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(RemoteError::TlsPair),
    };
    Ok(Some(config))
}

fn verifier(
    t: &TlsConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, RemoteError> {
    if t.insecure_skip_verify {
        return Ok(Arc::new(Insecure(provider.clone())));
    }
    let mut roots = RootCertStore::empty();
    match &t.ca_file {
        // As Prometheus: a ca_file replaces the system roots.
        Some(ca) => {
            let (added, _) = roots.add_parsable_certificates(certs(ca)?);
            if added == 0 {
                return Err(RemoteError::TlsPem {
                    path: ca.display().to_string(),
                    error: "no usable certificate in it".into(),
                });
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| RemoteError::Client(e.to_string()))?;
    Ok(match &t.server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone()).map_err(|_| RemoteError::TlsPem {
                path: "server_name".into(),
                error: format!("{name:?} is not a DNS name or IP address"),
            })?;
            Arc::new(Named { inner, name })
        }
        None => inner,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, RemoteError> {
    std::fs::read(path).map_err(|source| RemoteError::TlsFile {
        path: path.display().to_string(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RemoteError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(RemoteError::TlsPem {
            path: path.display().to_string(),
            error: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> RemoteError {
    RemoteError::TlsPem {
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

/// Verifies the chain against `name` instead of the URL's host (the name sent as
/// SNI stays the URL's host).
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
