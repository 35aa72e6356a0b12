//! Throwaway certificate authorities made in the tests (rcgen): server and client
//! certificates valid, expired, not yet valid or signed by another CA; and a TLS
//! listener for axum.

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// PEM files in a test's directory.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 2000 to 2090.
    Current,
    /// 2000 to 2001.
    Expired,
    /// 2099 to 2100.
    NotYetValid,
}

impl Validity {
    fn apply(self, p: &mut CertificateParams) {
        let (from, to) = match self {
            Validity::Current => (2000, 2090),
            Validity::Expired => (2000, 2001),
            Validity::NotYetValid => (2099, 2100),
        };
        p.not_before = date_time_ymd(from, 1, 1);
        p.not_after = date_time_ymd(to, 1, 1);
    }
}

/// A CA whose certificate is `<dir>/<name>.pem`; it issues certificates into
/// `dir` (`<file>.pem`, `<file>.key`, written over older ones: a rotation).
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Validity::Current.apply(&mut p);
        let cert = p.self_signed(&key).expect("CA certificate");
        let ca = dir.join(format!("{name}.pem"));
        crate::write(&ca, &cert.pem());
        Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(p, key),
            ca,
        }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.ca.clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses); returns the
    /// certificate and key files.
    pub fn server(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names.clone()).expect("server names");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, p, Validity::Current)
    }

    /// A client certificate whose Subject CN is `cn`.
    pub fn client(&self, file: &str, cn: &str, validity: Validity) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, p, validity)
    }

    fn issue(
        &self,
        file: &str,
        mut p: CertificateParams,
        validity: Validity,
    ) -> (PathBuf, PathBuf) {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        validity.apply(&mut p);
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("certificate");
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        // The key first: a reader seeing the new certificate finds its key.
        crate::write(&k, &key.serialize_pem());
        crate::write(&c, &cert.pem());
        (c, k)
    }
}

impl Certs {
    /// A CA, a server certificate valid for the DNS name `server_name` only (not for
    /// 127.0.0.1), and a client certificate (CN `edgewatch-client`), all in `dir`.
    pub fn generate(dir: &Path, server_name: &str) -> Certs {
        let pki = Pki::new(dir, "ca");
        let (server_cert, server_key) = pki.server("server", &[server_name]);
        let (client_cert, client_key) = pki.client("client", "edgewatch-client", Validity::Current);
        Certs {
            ca: pki.ca_file(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    fn server_config(&self, client_auth: bool) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("server certificate")
            .collect::<Result<_, _>>()
            .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("server key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&self.ca).expect("CA") {
                roots.add(c.expect("CA PEM")).expect("CA certificate");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        builder
            .with_single_cert(certs, key)
            .expect("server certificate and key")
    }
}

/// Accepts TCP connections on 127.0.0.1 and hands on those whose TLS handshake
/// succeeded.
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    pub addr: std::net::SocketAddr,
}

impl TlsListener {
    pub async fn bind(certs: &Certs, client_auth: bool) -> TlsListener {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = tcp.local_addr().expect("local address");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config(client_auth)));
        TlsListener {
            tcp,
            acceptor,
            addr,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            // A refused handshake (the test's point, often) is no connection.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
