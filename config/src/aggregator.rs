//! `edgewatch aggregator` configuration.

use crate::{Addr, ConfigPath, Dur, OtlpReceiverConfig};
use serde::Deserialize;
use std::num::NonZeroUsize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    #[serde(default)]
    pub receivers: AggregatorReceivers,
    /// Who may send over OTLP, and as which cluster.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    pub http: HttpConfig,
    pub state: StateConfig,
    #[serde(default)]
    pub store: StoreConfig,
    /// Prometheus rule files (globs, relative to the working directory).
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Default evaluation interval of rule groups.
    #[serde(default = "default_evaluation_interval")]
    pub evaluation_interval: Dur,
    /// Built-in fleet rules.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Routing and delivery of alerts, in Alertmanager's configuration shape.
    #[serde(default)]
    pub alerting: Option<crate::alerting::AlertingConfig>,
    /// Deployment status reconciler (desired state from a GitOps checkout).
    #[serde(default)]
    pub reconciler: Option<ReconcilerConfig>,
    /// Prometheus remote write endpoints every stored sample is sent to.
    #[serde(default)]
    pub remote_write: Vec<crate::remote_write::RemoteWriteConfig>,
    /// The write-ahead log: forwarded batches are durable here before they are
    /// acknowledged; remote_write reads it and a restart replays it.
    #[serde(default)]
    pub wal: WalConfig,
    /// Rule evaluation across restarts.
    #[serde(default)]
    pub rules: RulesConfig,
    /// What one cluster may add to the store (cardinality, label sizes).
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `limits:` — bounds on what senders may add to the store. Each is unset (no
/// limit) by default; a sample over one is dropped, counted in
/// `edgewatch_limit_dropped_samples_total{cluster,limit}` (`limit` is the key's
/// name) and reported to the sender as a partial success.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Series held at once whose `cluster` label has one value.
    #[serde(default)]
    pub max_series_per_cluster: Option<NonZeroUsize>,
    /// Series held at once in all.
    #[serde(default)]
    pub max_series: Option<NonZeroUsize>,
    /// Labels of one series (the metric name not counted).
    #[serde(default)]
    pub max_label_names_per_series: Option<NonZeroUsize>,
    /// Bytes of one label value.
    #[serde(default)]
    pub max_label_value_length: Option<NonZeroUsize>,
    /// Bytes of a metric name (as stored: after the OTel → Prometheus conversion).
    #[serde(default)]
    pub max_metric_name_length: Option<NonZeroUsize>,
    /// Bytes of a metric's description (`# HELP`).
    #[serde(default)]
    pub max_help_length: Option<NonZeroUsize>,
}

/// `wal:` — where the log lives and how much of it is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// sled directory; default `<state.path>-wal`.
    #[serde(default)]
    pub path: Option<ConfigPath>,
    /// Oldest records are dropped (and counted per endpoint) above this size.
    #[serde(default = "default_wal_max_bytes")]
    pub max_bytes: Option<crate::ByteSize>,
    /// Records older than this are dropped (and counted per endpoint).
    #[serde(default = "default_wal_max_age")]
    pub max_age: Option<Dur>,
}

fn default_wal_max_bytes() -> Option<crate::ByteSize> {
    Some(crate::ByteSize::gib(1))
}

fn default_wal_max_age() -> Option<Dur> {
    Some(Dur::secs(12 * 3600))
}

impl WalConfig {
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.unwrap_or(crate::ByteSize::gib(1)).bytes()
    }
    pub fn max_age(&self) -> std::time::Duration {
        self.max_age.unwrap_or(Dur::secs(12 * 3600)).get()
    }
}

impl AggregatorConfig {
    /// The log's directory: `wal.path`, or `<state.path>-wal` beside the state.
    pub fn wal_path(&self) -> std::path::PathBuf {
        self.wal.path.clone().unwrap_or_else(|| {
            let mut p = self.state.path.clone().into_os_string();
            p.push("-wal");
            p.into()
        })
    }

    /// How long firing alerts are held after a start: `rules.restore_grace`,
    /// default max(`fleet.down_after`, 2 × `evaluation_interval`).
    pub fn restore_grace(&self) -> std::time::Duration {
        self.rules.restore_grace.map(Dur::get).unwrap_or_else(|| {
            self.fleet
                .down_after
                .get()
                .max(2 * self.evaluation_interval.get())
        })
    }
}

/// `rules:` — rule evaluation across restarts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// After a start, alerts that were firing are held (not resolved) for this
    /// long while their data comes back.
    #[serde(default)]
    pub restore_grace: Option<Dur>,
}

/// Deployment status reconciler: desired state from a GitOps checkout (ai-edge layout),
/// observed state from the collectors' `edgewatch_model_*` series.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerConfig {
    pub gitops: GitopsConfig,
    /// Cluster → app names. Optional when the repository has
    /// `clusters/<cluster>/kustomization.yaml` files listing the apps.
    #[serde(default)]
    pub clusters: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// How long a rollout may take before it is `Degraded` / `OutOfSync`.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Dur,
    /// How often desired state is checked for changes and status reconciled.
    #[serde(default = "default_reconcile_interval")]
    pub interval: Dur,
}

fn default_progress_deadline() -> Dur {
    Dur::secs(600)
}

fn default_reconcile_interval() -> Dur {
    Dur::secs(5)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitopsConfig {
    /// A git checkout of the GitOps repository.
    pub path: ConfigPath,
}

fn default_evaluation_interval() -> Dur {
    Dur::secs(60)
}

/// Built-in fleet rules (`EdgeCollectorDown`, `EdgeBufferBacklog`, `EdgeBufferDropping`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// A collector without data for this long is down (`EdgeCollectorDown`). May exceed
    /// `store.staleness`: the fleet module keeps each collector's last-seen time itself
    /// (`edgewatch_collector_last_seen_timestamp_seconds`) after the store drops the
    /// silent collector's own series.
    #[serde(default = "default_down_after")]
    pub down_after: Dur,
    /// The clusters this aggregator owns when several share the fleet (empty:
    /// every cluster that reports here).
    #[serde(default)]
    pub clusters: Vec<String>,
}

fn default_down_after() -> Dur {
    Dur::secs(120)
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            down_after: default_down_after(),
            clusters: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorReceivers {
    #[serde(default)]
    pub otlp: OtlpReceiverConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `/federate`, `/metrics`, `/healthz`, `/readyz`.
    pub listen: Addr,
    /// TLS on this listener; with `client_ca_file`, mTLS.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTlsConfig>,
    /// User → bcrypt hash: with any, every path but `/healthz` and `/readyz` needs
    /// HTTP basic auth.
    #[serde(default)]
    pub basic_auth_users: crate::auth::BasicAuthUsers,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// sled directory for replay-dedup state.
    pub path: ConfigPath,
    /// A collector whose replay window did not move for this long is forgotten: it
    /// starts as a new collector if it comes back. Keep it longer than any edge
    /// buffer keeps entries (`buffer.max_age`).
    #[serde(default = "default_collector_expiry")]
    pub collector_expiry: Dur,
}

fn default_collector_expiry() -> Dur {
    Dur::secs(30 * 86_400)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A series without a new sample for this long is stale: no longer served.
    #[serde(default = "default_staleness")]
    pub staleness: Dur,
    /// Recent samples kept per series that rules read (range functions, `offset`).
    #[serde(default = "default_window")]
    pub window: Dur,
}

fn default_window() -> Dur {
    Dur::secs(600)
}

fn default_staleness() -> Dur {
    Dur::secs(300)
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            staleness: default_staleness(),
            window: default_window(),
        }
    }
}
