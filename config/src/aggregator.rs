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
}

fn default_staleness() -> Dur {
    Dur::secs(300)
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            staleness: default_staleness(),
        }
    }
}
