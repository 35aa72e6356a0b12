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
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorReceivers {
    #[serde(default)]
    pub otlp: OtlpReceiverConfig,
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
    /// Export calls in flight at once while draining.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// First retry delay; doubles up to `max_backoff`, with jitter.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Dur,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
}

fn default_forward_timeout() -> Dur {
    Dur::secs(10)
}
fn default_batch_bytes() -> ByteSize {
    ByteSize::mib(2)
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
    pub listen: Addr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Addr(std::net::SocketAddr::from(([0, 0, 0, 0], 9464))),
        }
    }
}
