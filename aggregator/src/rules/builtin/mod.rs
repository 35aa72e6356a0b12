//! The built-in rule groups: Prometheus rule files compiled into the binary
//! and loaded by [`file::parse`] like users' files. An alerting rule in a
//! rule file replaces the built-in one of the same name.
//!
//! - `fleet.yaml` (always): `EdgeCollectorDown` over the last-seen series of
//!   [`crate::fleet::liveness`], and the collectors' buffer alerts.
//! - `deployments.yaml` (when the reconciler runs): alerts over
//!   `edgewatch_deployment_status`.

use edgewatch_config::{AggregatorConfig, ConfigError};

use super::file::{self, GroupSpec};

/// The group of built-in fleet rules.
pub const FLEET_GROUP: &str = "edgewatch-fleet";
/// The `file` of built-in groups in `/api/v1/rules` and in errors.
pub const FILE: &str = "<built-in>";
/// Fleet rules; `${fleet.down_after}` stands for `fleet.down_after` in seconds.
pub const FLEET_YAML: &str = include_str!("fleet.yaml");
/// Deployment status rules.
pub const DEPLOYMENTS_YAML: &str = include_str!("deployments.yaml");

/// The built-in groups for `cfg`, in evaluation order.
pub fn groups(cfg: &AggregatorConfig) -> Result<Vec<GroupSpec>, ConfigError> {
    let down_after = cfg.fleet.down_after.get().as_secs_f64().to_string();
    let fleet = FLEET_YAML.replace("${fleet.down_after}", &down_after);
    let mut groups = file::parse(&fleet, FILE)?.groups;
    if cfg.reconciler.is_some() {
        groups.extend(file::parse(DEPLOYMENTS_YAML, FILE)?.groups);
    }
    Ok(groups)
}
