//! `remote_write:` of the aggregator, in Prometheus' configuration shape
//! (prometheus/config/config.go `RemoteWriteConfig`), so a block copied from a
//! Prometheus configuration works unchanged.

use crate::{ConfigPath, Dur, Url};
use edgewatch_prom::relabel::RelabelConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

pub use crate::tls::TlsConfig;

/// One remote write endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRemoteWrite")]
pub struct RemoteWriteConfig {
    pub url: Url,
    /// Names the endpoint in logs; metrics are labelled by `url` as in Prometheus.
    pub name: String,
    pub remote_timeout: Dur,
    pub headers: BTreeMap<String, String>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub tls_config: TlsConfig,
    pub write_relabel_configs: Vec<RelabelConfig>,
    pub queue_config: QueueConfig,
    pub metadata_config: MetadataConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteWrite {
    url: Url,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "default_remote_timeout")]
    remote_timeout: Dur,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
    #[serde(default)]
    authorization: Option<Authorization>,
    #[serde(default)]
    tls_config: TlsConfig,
    #[serde(default)]
    write_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    queue_config: QueueConfig,
    #[serde(default)]
    metadata_config: MetadataConfig,
}

/// Headers the protocol sets itself (Prometheus refuses them too).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "retry-after",
    "x-prometheus-remote-write-version",
];

impl TryFrom<RawRemoteWrite> for RemoteWriteConfig {
    type Error = String;
    fn try_from(r: RawRemoteWrite) -> Result<Self, String> {
        for h in r.headers.keys() {
            if RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "headers: {h:?} is set by the protocol and cannot be configured"
                ));
            }
        }
        if r.basic_auth.is_some() && r.authorization.is_some() {
            return Err("at most one of basic_auth and authorization may be configured".into());
        }
        let q = &r.queue_config;
        if q.min_shards == 0 || q.max_shards < q.min_shards {
            return Err(format!(
                "queue_config: need 1 <= min_shards ({}) <= max_shards ({})",
                q.min_shards, q.max_shards
            ));
        }
        if q.max_samples_per_send == 0 || q.capacity < q.max_samples_per_send {
            return Err(format!(
                "queue_config: need 1 <= max_samples_per_send ({}) <= capacity ({})",
                q.max_samples_per_send, q.capacity
            ));
        }
        if q.min_backoff.get() > q.max_backoff.get() {
            return Err("queue_config: min_backoff is longer than max_backoff".into());
        }
        if r.remote_timeout.get().is_zero() {
            return Err("remote_timeout must be positive".into());
        }
        Ok(RemoteWriteConfig {
            name: r.name.unwrap_or_else(|| r.url.0.clone()),
            url: r.url,
            remote_timeout: r.remote_timeout,
            headers: r.headers,
            basic_auth: r.basic_auth,
            authorization: r.authorization,
            tls_config: r.tls_config,
            write_relabel_configs: r.write_relabel_configs,
            queue_config: r.queue_config,
            metadata_config: r.metadata_config,
        })
    }
}

fn default_remote_timeout() -> Dur {
    Dur::secs(30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawBasicAuth")]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<ConfigPath>,
}

impl TryFrom<RawBasicAuth> for BasicAuth {
    type Error = String;
    fn try_from(r: RawBasicAuth) -> Result<Self, String> {
        Ok(BasicAuth {
            username: r.username,
            password: Secret::one_of(r.password, r.password_file, "password")?,
        })
    }
}

/// `authorization:` — a header `Authorization: <type> <credentials>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawAuthorization")]
pub struct Authorization {
    pub kind: String,
    pub credentials: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    credentials: Option<String>,
    #[serde(default)]
    credentials_file: Option<ConfigPath>,
}

impl TryFrom<RawAuthorization> for Authorization {
    type Error = String;
    fn try_from(r: RawAuthorization) -> Result<Self, String> {
        let kind = r.kind.unwrap_or_else(|| "Bearer".into());
        if kind.eq_ignore_ascii_case("basic") {
            return Err("authorization: type Basic is configured with basic_auth".into());
        }
        Ok(Authorization {
            kind,
            credentials: Secret::one_of(r.credentials, r.credentials_file, "credentials")?,
        })
    }
}

/// A secret given inline or as a file read at each use (so a rotated
/// Secret volume is picked up). Never printed: `Debug` hides it.
#[derive(Clone)]
pub enum Secret {
    Inline(String),
    File(ConfigPath),
}

impl Secret {
    fn one_of(
        inline: Option<String>,
        file: Option<ConfigPath>,
        what: &str,
    ) -> Result<Self, String> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(format!("at most one of {what} and {what}_file may be set")),
            (Some(s), None) => Ok(Secret::Inline(s)),
            (None, Some(f)) => Ok(Secret::File(f)),
            (None, None) => Ok(Secret::Inline(String::new())),
        }
    }

    /// The secret's value; a file's content without its trailing newline.
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => {
                let s = std::fs::read_to_string(p)?;
                Ok(s.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("<secret>"),
            Secret::File(p) => write!(f, "<secret in {}>", p.display()),
        }
    }
}

/// `queue_config:` — Prometheus' names and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Samples buffered per shard.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    #[serde(default = "default_min_shards")]
    pub min_shards: usize,
    #[serde(default = "default_max_shards")]
    pub max_shards: usize,
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: usize,
    #[serde(default = "default_batch_send_deadline")]
    pub batch_send_deadline: Dur,
    #[serde(default = "default_min_backoff")]
    pub min_backoff: Dur,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
    #[serde(default = "default_true")]
    pub retry_on_http_429: bool,
}

fn default_capacity() -> usize {
    10_000
}
fn default_min_shards() -> usize {
    1
}
fn default_max_shards() -> usize {
    50
}
fn default_max_samples_per_send() -> usize {
    2_000
}
fn default_batch_send_deadline() -> Dur {
    Dur::secs(5)
}
fn default_min_backoff() -> Dur {
    Dur(std::time::Duration::from_millis(30))
}
fn default_max_backoff() -> Dur {
    Dur::secs(5)
}
fn default_true() -> bool {
    true
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: default_capacity(),
            min_shards: default_min_shards(),
            max_shards: default_max_shards(),
            max_samples_per_send: default_max_samples_per_send(),
            batch_send_deadline: default_batch_send_deadline(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            retry_on_http_429: true,
        }
    }
}

/// `metadata_config:` — whether TYPE/HELP/unit go out as remote-write metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    #[serde(default = "default_true")]
    pub send: bool,
    #[serde(default = "default_metadata_interval")]
    pub send_interval: Dur,
    #[serde(default = "default_metadata_max")]
    pub max_samples_per_send: usize,
}

fn default_metadata_interval() -> Dur {
    Dur::secs(60)
}
fn default_metadata_max() -> usize {
    500
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            send: true,
            send_interval: default_metadata_interval(),
            max_samples_per_send: default_metadata_max(),
        }
    }
}
