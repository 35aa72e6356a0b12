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
    /// Default deadline of one scrape (capped at the target's interval): fetching,
    /// parsing and converting together.
    #[serde(default = "default_scrape_timeout")]
    pub scrape_timeout: Dur,
    /// `job` label of static targets (Prometheus' `job_name`).
    #[serde(default = "default_scrape_job")]
    pub job: String,
    /// `job` label of targets discovered from pods.
    #[serde(default = "default_pod_job")]
    pub pod_job: String,
    /// Largest accepted response body, after gzip decoding; a bigger one fails the
    /// scrape (`up` 0). `0`: no limit.
    #[serde(default = "default_body_size_limit")]
    pub body_size_limit: PromSize,
    /// Prometheus' `sample_limit`: a scrape with more samples fails. `0`: no limit.
    #[serde(default)]
    pub sample_limit: u64,
    /// Prometheus' `label_limit`: a sample with more labels (counting `__name__`,
    /// `job`, `instance` and the target's labels) fails the scrape. `0`: no limit.
    #[serde(default)]
    pub label_limit: u64,
    /// Prometheus' `label_name_length_limit` (bytes). `0`: no limit.
    #[serde(default)]
    pub label_name_length_limit: u64,
    /// Prometheus' `label_value_length_limit` (bytes). `0`: no limit.
    #[serde(default)]
    pub label_value_length_limit: u64,
    /// URLs (`http://host:port/path`) or `{url, interval, timeout, job, <limits>}`
    /// mappings.
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
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            static_targets: Vec::new(),
            tls_config: Default::default(),
        }
    }
}

impl PrometheusReceiverConfig {
    /// The limits of every target without its own.
    pub fn limits(&self) -> ScrapeLimits {
        ScrapeLimits {
            sample_limit: self.sample_limit,
            label_limit: self.label_limit,
            label_name_length_limit: self.label_name_length_limit,
            label_value_length_limit: self.label_value_length_limit,
            body_size_limit: self.body_size_limit.bytes(),
        }
    }

    /// The limits of a static target: its own where set, the global ones otherwise.
    pub fn target_limits(&self, spec: &StaticTargetSpec) -> ScrapeLimits {
        let global = self.limits();
        ScrapeLimits {
            sample_limit: spec.sample_limit.unwrap_or(global.sample_limit),
            label_limit: spec.label_limit.unwrap_or(global.label_limit),
            label_name_length_limit: spec
                .label_name_length_limit
                .unwrap_or(global.label_name_length_limit),
            label_value_length_limit: spec
                .label_value_length_limit
                .unwrap_or(global.label_value_length_limit),
            body_size_limit: spec
                .body_size_limit
                .map_or(global.body_size_limit, PromSize::bytes),
        }
    }
}

/// Prometheus' per-scrape limits, resolved for one target; `0` is no limit, as in
/// Prometheus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeLimits {
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    /// Bytes, after gzip decoding.
    pub body_size_limit: u64,
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
fn default_body_size_limit() -> PromSize {
    PromSize(16 << 20)
}

/// A size written as Prometheus' `<size>` (`body_size_limit: 10MB`): a number and a
/// unit, `B`, `KB`/`MB`/`GB`/`TB`/`PB`/`EB` or `KiB`…`EiB`, every one a power of 1024
/// as in Prometheus (which refuses `kB`; so does this). Pieces may be chained
/// (`1MB512KB`). A bare number is bytes (Prometheus accepts only `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromSize(pub u64);

impl PromSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Why a Prometheus size does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size {input:?}: {why} (write e.g. 10MB; B, KB, MB, GB, TB, PB, EB are powers of 1024)"
)]
pub struct PromSizeError {
    pub input: String,
    pub why: &'static str,
}

impl std::str::FromStr for PromSize {
    type Err = PromSizeError;
    fn from_str(s: &str) -> Result<Self, PromSizeError> {
        let input = s.trim();
        let bad = |why| PromSizeError {
            input: input.to_owned(),
            why,
        };
        if let Ok(n) = input.parse::<u64>() {
            return Ok(PromSize(n));
        }
        if input.is_empty() {
            return Err(bad("expected a number"));
        }
        let mut rest = input;
        let mut total = 0f64;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (num, tail) = rest.split_at(num_len);
            let value: f64 = num.parse().map_err(|_| bad("expected a number"))?;
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let power = match unit {
                "B" => 0,
                "KB" | "KiB" => 1,
                "MB" | "MiB" => 2,
                "GB" | "GiB" => 3,
                "TB" | "TiB" => 4,
                "PB" | "PiB" => 5,
                "EB" | "EiB" => 6,
                "" => return Err(bad("missing unit")),
                _ => return Err(bad("unknown unit")),
            };
            total += value * 1024f64.powi(power);
            rest = tail;
        }
        if !total.is_finite() || total >= u64::MAX as f64 {
            return Err(bad("too large"));
        }
        Ok(PromSize(total as u64))
    }
}

impl std::fmt::Display for PromSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", ByteSize(self.0))
    }
}

impl<'de> Deserialize<'de> for PromSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(PromSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// One static scrape target: a URL, or a URL with its own interval, timeout, job and
/// limits.
#[derive(Debug, Clone)]
pub enum StaticTarget {
    Url(Url),
    Full(StaticTargetSpec),
}

/// Written by hand rather than `untagged`: a mistake inside a mapping (an unknown key,
/// a bad limit) is reported as itself, with its location, not as "did not match any
/// variant".
impl<'de> Deserialize<'de> for StaticTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StaticTarget;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL or a mapping with `url`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StaticTarget, E> {
                Url::deserialize(serde::de::value::StrDeserializer::<E>::new(v))
                    .map(StaticTarget::Url)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<StaticTarget, A::Error> {
                StaticTargetSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(StaticTarget::Full)
            }
        }
        d.deserialize_any(V)
    }
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
    /// The global limits of `receivers.prometheus`, overridden for this target (`0`:
    /// no limit for this target).
    #[serde(default)]
    pub sample_limit: Option<u64>,
    #[serde(default)]
    pub label_limit: Option<u64>,
    #[serde(default)]
    pub label_name_length_limit: Option<u64>,
    #[serde(default)]
    pub label_value_length_limit: Option<u64>,
    #[serde(default)]
    pub body_size_limit: Option<PromSize>,
}

impl StaticTarget {
    pub fn spec(&self) -> StaticTargetSpec {
        match self {
            StaticTarget::Url(u) => StaticTargetSpec {
                url: u.clone(),
                interval: None,
                timeout: None,
                job: None,
                sample_limit: None,
                label_limit: None,
                label_name_length_limit: None,
                label_value_length_limit: None,
                body_size_limit: None,
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
