//! `tls:` blocks: the server side of a listener and the client side of a connection.
//! A listener's files are checked when the configuration is loaded (so `validate`
//! names the file and the key); a client's, like its other secrets, when the role
//! starts (they may be mounted only where it runs). Their contents are read, and
//! re-read on change, by `edgewatch-tls`.

use crate::ConfigPath;
use serde::Deserialize;
use std::path::Path;

/// `tls:` of a listener: its certificate and key, and with `client_ca_file` the CA a
/// client certificate must be signed by (mTLS: a verified client certificate is then
/// required).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawServerTls")]
pub struct ServerTlsConfig {
    pub cert_file: ConfigPath,
    pub key_file: ConfigPath,
    pub client_ca_file: Option<ConfigPath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert_file: ConfigPath,
    key_file: ConfigPath,
    #[serde(default)]
    client_ca_file: Option<ConfigPath>,
}

impl ServerTlsConfig {
    /// Whether `tls` (a listener's optional block) requires a verified client
    /// certificate: then the listener is authenticated.
    pub fn verifies_clients(tls: Option<&ServerTlsConfig>) -> bool {
        tls.is_some_and(|t| t.client_ca_file.is_some())
    }
}

impl TryFrom<RawServerTls> for ServerTlsConfig {
    type Error = String;
    fn try_from(r: RawServerTls) -> Result<Self, String> {
        readable(&r.cert_file, "cert_file")?;
        readable(&r.key_file, "key_file")?;
        if let Some(ca) = &r.client_ca_file {
            readable(ca, "client_ca_file")?;
        }
        Ok(ServerTlsConfig {
            cert_file: r.cert_file,
            key_file: r.key_file,
            client_ca_file: r.client_ca_file,
        })
    }
}

/// `tls_config:` / `tls:` of a client (Prometheus' shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawTls")]
pub struct TlsConfig {
    /// CA certificates the server's certificate must chain to; unset: the public
    /// web roots.
    pub ca_file: Option<ConfigPath>,
    /// Client certificate and key (mTLS); both or neither.
    pub cert_file: Option<ConfigPath>,
    pub key_file: Option<ConfigPath>,
    /// The name the server's certificate is verified against (and sent as SNI where
    /// edgewatch makes the connection) instead of the URL's host.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    ca_file: Option<ConfigPath>,
    #[serde(default)]
    cert_file: Option<ConfigPath>,
    #[serde(default)]
    key_file: Option<ConfigPath>,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

impl TryFrom<RawTls> for TlsConfig {
    type Error = String;
    fn try_from(r: RawTls) -> Result<Self, String> {
        if r.cert_file.is_some() != r.key_file.is_some() {
            return Err("cert_file and key_file go together: set both or neither".into());
        }
        if r.server_name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err("server_name must not be empty".into());
        }
        Ok(TlsConfig {
            ca_file: r.ca_file,
            cert_file: r.cert_file,
            key_file: r.key_file,
            server_name: r.server_name,
            insecure_skip_verify: r.insecure_skip_verify,
        })
    }
}

impl TlsConfig {
    /// Whether anything differs from the defaults (public roots, no client
    /// certificate, the URL's host).
    pub fn is_set(&self) -> bool {
        *self != TlsConfig::default()
    }
}

fn readable(path: &Path, key: &str) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{key} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_located_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cert = dir.join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let yaml = format!(
            "tls:\n  cert_file: {}\n  key_file: {}/nope.key\n",
            cert.display(),
            dir.display()
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct W {
            tls: ServerTlsConfig,
        }
        let e = crate::parse::<W>(&yaml, "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with("c.yaml:1:1: tls: key_file"), "{e}");
        assert!(e.contains("key_file") && e.contains("nope.key"), "{e}");
        let ok = format!(
            "tls: {{cert_file: {c}, key_file: {c}}}\n",
            c = cert.display()
        );
        let w: W = crate::parse(&ok, "c.yaml").unwrap();
        assert_eq!(w.tls.client_ca_file, None);
        let unknown = format!(
            "tls: {{cert_file: {c}, key_file: {c}, ca_file: {c}}}\n",
            c = cert.display()
        );
        let e = crate::parse::<W>(&unknown, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `ca_file`"), "{e}");
    }

    #[test]
    fn client_cert_and_key_go_together() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cert = dir.join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let yaml = format!("cert_file: {}\n", cert.display());
        let e = crate::parse::<TlsConfig>(&yaml, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("set both or neither"), "{e}");
        assert!(!crate::parse::<TlsConfig>("{}", "c.yaml").unwrap().is_set());
    }
}
