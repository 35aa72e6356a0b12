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

/// TEMPORARY STUB (remote_write branch, so the remote write sender compiles before
/// the relabel branch is merged): keeps every label set unchanged. The real
/// implementation from the relabel branch replaces this function.
pub fn process(_labels: &mut Vec<(String, String)>, _configs: &[RelabelConfig]) -> bool {
    true
}
