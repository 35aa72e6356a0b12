//! `edgewatch collector` configuration.

use crate::{Addr, ByteSize, ConfigPath, Dur, Name, OtlpReceiverConfig, Url};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Value of the `k8s.cluster.name` resource attribute (`cluster` label at the core).
    pub cluster: Name,
    /// Value of `k8s.node.name`; defaults to `$NODE_NAME`, then the hostname.
    #[serde(default)]
    pub node: Option<Name>,
    #[serde(default)]
    pub receivers: CollectorReceivers,
    pub buffer: BufferConfig,
    pub forward: ForwardConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Kubernetes pod discovery (inference pods on this node, scrape targets).
    #[serde(default)]
    pub discovery: DiscoveryConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorReceivers {
    #[serde(default)]
    pub otlp: OtlpReceiverConfig,
    /// The Prometheus scrape receiver. It scrapes `static_targets` and, with
    /// `discovery.kubernetes: true`, the discovered pods; with neither it is idle.
    #[serde(default)]
    pub prometheus: PrometheusReceiverConfig,
}

/// `receivers.prometheus`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusReceiverConfig {
    /// Default interval between two scrapes of a target.
    #[serde(default = "default_scrape_interval")]
    pub scrape_interval: Dur,
    /// Default deadline of one scrape (capped at the target's interval).
    #[serde(default = "default_scrape_timeout")]
    pub scrape_timeout: Dur,
    /// `job` label of static targets (Prometheus' `job_name`).
    #[serde(default = "default_scrape_job")]
    pub job: String,
    /// `job` label of targets discovered from pods.
    #[serde(default = "default_pod_job")]
    pub pod_job: String,
    /// Largest accepted response body; a bigger one fails the scrape (`up` 0).
    #[serde(default = "default_body_size_limit")]
    pub body_size_limit: ByteSize,
    /// URLs (`http://host:port/path`) or `{url, interval, timeout, job}` mappings.
    #[serde(default)]
    pub static_targets: Vec<StaticTarget>,
    /// TLS towards `https://` targets (Prometheus' `tls_config`: a private CA, a
    /// client certificate, `server_name`); unset: the public web roots.
    #[serde(default)]
    pub tls_config: crate::tls::TlsConfig,
}

impl Default for PrometheusReceiverConfig {
    fn default() -> Self {
        PrometheusReceiverConfig {
            scrape_interval: default_scrape_interval(),
            scrape_timeout: default_scrape_timeout(),
            job: default_scrape_job(),
            pod_job: default_pod_job(),
            body_size_limit: default_body_size_limit(),
            static_targets: Vec::new(),
            tls_config: Default::default(),
        }
    }
}

fn default_scrape_interval() -> Dur {
    Dur::secs(15)
}
fn default_scrape_timeout() -> Dur {
    Dur::secs(10)
}
fn default_scrape_job() -> String {
    "prometheus".to_string()
}
fn default_pod_job() -> String {
    "kubernetes-pods".to_string()
}
fn default_body_size_limit() -> ByteSize {
    ByteSize::mib(16)
}

/// One static scrape target: a URL, or a URL with its own interval/timeout/job.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StaticTarget {
    Url(Url),
    Full(StaticTargetSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticTargetSpec {
    pub url: Url,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub job: Option<String>,
}

impl StaticTarget {
    pub fn spec(&self) -> StaticTargetSpec {
        match self {
            StaticTarget::Url(u) => StaticTargetSpec {
                url: u.clone(),
                interval: None,
                timeout: None,
                job: None,
            },
            StaticTarget::Full(s) => s.clone(),
        }
    }
}

/// `discovery`: which pods on this node are inference pods, and how to reach the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Watch the pods of this node through the Kubernetes API. Default `false`, so that
    /// a collector without a cluster (demo, tests) works; the DaemonSet sets `true`.
    #[serde(default)]
    pub kubernetes: bool,
    /// A kubeconfig file (`~` expands to `$HOME`); unset: in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<ConfigPath>,
    /// Pod label keys whose value names the model; the first present one wins.
    #[serde(default = "default_model_labels")]
    pub model_labels: Vec<String>,
    /// Generic keys in `model_labels` (such as `app.kubernetes.io/name`, which names any
    /// app) that mark an inference pod only with a hint: the pod's
    /// `app.kubernetes.io/component` label equals `modelserver_hint`, or one of its
    /// containers runs a known model server image (Triton, OVMS, MLServer, KServe).
    #[serde(default = "default_hinted_labels")]
    pub hinted_labels: Vec<String>,
    /// See `hinted_labels`.
    #[serde(default = "default_modelserver_hint")]
    pub modelserver_hint: String,
    /// How often `edgewatch_model_*` are emitted (also at once on every change).
    #[serde(default = "default_metadata_interval")]
    pub metadata_interval: Dur,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            kubernetes: false,
            kubeconfig: None,
            model_labels: default_model_labels(),
            hinted_labels: default_hinted_labels(),
            modelserver_hint: default_modelserver_hint(),
            metadata_interval: default_metadata_interval(),
        }
    }
}

fn default_model_labels() -> Vec<String> {
    vec![
        "model-name".to_string(),
        "serving.kserve.io/inferenceservice".to_string(),
        "app.kubernetes.io/name".to_string(),
    ]
}
fn default_hinted_labels() -> Vec<String> {
    vec!["app.kubernetes.io/name".to_string()]
}
fn default_modelserver_hint() -> String {
    "modelserver".to_string()
}
fn default_metadata_interval() -> Dur {
    Dur::secs(30)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Delete the oldest batches to make room; count the dropped data points.
    #[default]
    DropOldest,
    /// Refuse new data with RESOURCE_EXHAUSTED / HTTP 429 until there is room.
    Backpressure,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    pub path: ConfigPath,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default)]
    pub full_policy: FullPolicy,
    /// Batches older than this are dropped (reason `max_age`); unset keeps them.
    #[serde(default)]
    pub max_age: Option<Dur>,
}

fn default_max_bytes() -> ByteSize {
    ByteSize::gib(1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// The aggregator's OTLP/gRPC endpoint.
    pub endpoint: Url,
    /// Deadline of one export call.
    #[serde(default = "default_forward_timeout")]
    pub timeout: Dur,
    /// Upper bound of one forwarded request, before compression.
    #[serde(default = "default_batch_bytes")]
    pub max_batch_bytes: ByteSize,
    /// How long the forwarder waits for more data before sending a batch that is not
    /// full (like the OTel Collector batch processor's `timeout`); backlogs are sent
    /// without waiting.
    #[serde(default = "default_linger")]
    pub linger: Dur,
    /// Export calls in flight at once while draining.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// First retry delay; doubles up to `max_backoff`, with jitter.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Dur,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
    /// TLS towards an `https://` endpoint: CA, client certificate (mTLS), server name.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Sent as `Authorization: Bearer <token>` on every export; re-read when the
    /// file changes (a projected token is rotated in place).
    #[serde(default)]
    pub bearer_token_file: Option<crate::auth::TokenFile>,
}

fn default_forward_timeout() -> Dur {
    Dur::secs(10)
}
fn default_batch_bytes() -> ByteSize {
    ByteSize::mib(2)
}
fn default_linger() -> Dur {
    Dur::millis(200)
}
fn default_in_flight() -> usize {
    4
}
fn default_initial_backoff() -> Dur {
    Dur::millis(100)
}
fn default_max_backoff() -> Dur {
    Dur::secs(30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_admin_listen")]
    pub listen: Addr,
    /// How often the collector sends its own metrics to the core (through the
    /// buffer, as job `edgewatch-collector`); `0` disables.
    #[serde(default = "default_self_metrics_interval")]
    pub self_metrics_interval: Dur,
    /// TLS on the admin listener.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTlsConfig>,
}

fn default_admin_listen() -> Addr {
    Addr(std::net::SocketAddr::from(([0, 0, 0, 0], 9464)))
}

fn default_self_metrics_interval() -> Dur {
    Dur::secs(15)
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            self_metrics_interval: default_self_metrics_interval(),
            tls: None,
        }
    }
}
