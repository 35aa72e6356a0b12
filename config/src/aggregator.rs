//! `edgewatch aggregator` configuration.

use crate::{Addr, ConfigPath, Dur, OtlpReceiverConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    #[serde(default)]
    pub receivers: AggregatorReceivers,
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
}

fn default_down_after() -> Dur {
    Dur::secs(120)
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            down_after: default_down_after(),
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// sled directory for replay-dedup state.
    pub path: ConfigPath,
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
