//! Prometheus relabeling (`relabel_configs`, `write_relabel_configs`,
//! `metric_relabel_configs`): configuration and application.

use serde::Deserialize;

/// One relabel step, in Prometheus' configuration shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default)]
    pub separator: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub modulus: Option<u64>,
    #[serde(default)]
    pub target_label: Option<String>,
    #[serde(default)]
    pub replacement: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
}
