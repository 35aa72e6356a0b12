//! `bench --tls`: a CA made for the run, the servers' certificate (localhost,
//! 127.0.0.1) and a client certificate, so the OTLP links of S1 and S2 run over TLS
//! (mTLS from the forwarder) and can be compared with the plaintext numbers.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::path::{Path, PathBuf};

/// PEM files in the run's directory.
pub struct BenchTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl BenchTls {
    pub fn generate(dir: &Path) -> anyhow::Result<BenchTls> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "edgewatch-bench-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut client = CertificateParams::default();
        client.distinguished_name.push(DnType::CommonName, "bench");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let files = BenchTls {
            ca: dir.join("tls-ca.pem"),
            cert: dir.join("tls-server.pem"),
            key: dir.join("tls-server.key"),
            client_cert: dir.join("tls-client.pem"),
            client_key: dir.join("tls-client.key"),
        };
        std::fs::write(&files.ca, ca_cert.pem())?;
        for (params, cert, key) in [
            (server, &files.cert, &files.key),
            (client, &files.client_cert, &files.client_key),
        ] {
            let k = KeyPair::generate()?;
            std::fs::write(cert, params.signed_by(&k, &issuer)?.pem())?;
            std::fs::write(key, k.serialize_pem())?;
        }
        Ok(files)
    }

    /// A server `tls:` flow mapping; `mtls` asks for client certificates.
    pub fn server_yaml(&self, mtls: bool) -> String {
        let ca = if mtls {
            format!(", client_ca_file: {}", self.ca.display())
        } else {
            String::new()
        };
        format!(
            "{{cert_file: {}, key_file: {}{ca}}}",
            self.cert.display(),
            self.key.display()
        )
    }

    /// The forwarder's `tls:` flow mapping (mTLS).
    pub fn forward_yaml(&self) -> String {
        format!(
            "{{ca_file: {}, cert_file: {}, key_file: {}}}",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }
}
