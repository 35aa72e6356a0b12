//! Node-local pod discovery: which pods on this node serve models, their metadata and
//! their scrape targets.
//!
//! - `extract.rs`: pure, `Pod` → [`PodInfo`] (model metadata, endpoints) and scrape targets.
//! - `watch.rs`: the I/O, a kube watcher + reflector on `spec.nodeName=<node>` that
//!   publishes a [`Snapshot`] on every change.
//!
//! Consumers: the scrape receiver (targets), `crate::model` (`edgewatch_model_*`
//! series) and the OTLP sink (`model.name`/`model.version` on pushes from model pods,
//! [`enrich_models`]).

pub mod extract;
pub mod watch;

pub use extract::{ModelMeta, PodInfo, Rules};

use crate::enrich::string_kv;
use crate::receive::scrape::ScrapeTarget;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub const MODEL_NAME_ATTR: &str = "model.name";
pub const MODEL_VERSION_ATTR: &str = "model.version";

/// The pods of this node, by uid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub pods: BTreeMap<String, PodInfo>,
}

impl Snapshot {
    pub fn from_pods(pods: impl IntoIterator<Item = PodInfo>) -> Self {
        Snapshot {
            pods: pods.into_iter().map(|p| (p.uid.clone(), p)).collect(),
        }
    }

    pub fn models(&self) -> impl Iterator<Item = (&PodInfo, &ModelMeta)> {
        self.pods
            .values()
            .filter_map(|p| p.model.as_ref().map(|m| (p, m)))
    }

    /// Every pod's scrape targets.
    pub fn scrape_targets(&self, rules: &Rules) -> Vec<ScrapeTarget> {
        self.pods
            .values()
            .flat_map(|p| extract::scrape_targets(p, rules))
            .collect()
    }

    /// The model of the pod a resource describes: by `k8s.pod.uid`, then
    /// `k8s.namespace.name` + `k8s.pod.name`, `k8s.pod.name` alone when unique,
    /// `k8s.pod.ip`, and last the connection's peer address.
    pub fn model_for(&self, attrs: &[KeyValue], peer: Option<SocketAddr>) -> Option<&ModelMeta> {
        let get = |k: &str| {
            attrs
                .iter()
                .rev()
                .find(|kv| kv.key == k)
                .and_then(|kv| string_value(&kv.value))
                .filter(|s| !s.is_empty())
        };
        if let Some(uid) = get("k8s.pod.uid") {
            if let Some(p) = self.pods.get(uid) {
                return p.model.as_ref();
            }
        }
        if let Some(name) = get("k8s.pod.name") {
            let ns = get("k8s.namespace.name");
            let mut it = self
                .pods
                .values()
                .filter(|p| p.name == name && ns.is_none_or(|n| p.namespace == n));
            if let (Some(p), None) = (it.next(), it.next()) {
                return p.model.as_ref();
            }
        }
        let by_ip = |ip: &str| {
            let mut it = self
                .pods
                .values()
                .filter(|p| p.ip.as_deref() == Some(ip) && !p.terminating);
            match (it.next(), it.next()) {
                (Some(p), None) => p.model.as_ref(),
                _ => None,
            }
        };
        if let Some(ip) = get("k8s.pod.ip") {
            if let Some(m) = by_ip(ip) {
                return Some(m);
            }
        }
        peer.and_then(|a| by_ip(&a.ip().to_string()))
    }
}

fn string_value(v: &Option<AnyValue>) -> Option<&str> {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Adds `model.name` / `model.version` to each resource that comes from a model pod and
/// does not carry them already. Returns how many resources were enriched.
pub fn enrich_models<'a>(
    snapshot: &Snapshot,
    resources: impl IntoIterator<Item = &'a mut Option<Resource>>,
    peer: Option<SocketAddr>,
) -> usize {
    let mut n = 0;
    for resource in resources {
        let resource = resource.get_or_insert_with(Default::default);
        let has = |k: &str| {
            resource
                .attributes
                .iter()
                .any(|kv| kv.key == k && string_value(&kv.value).is_some_and(|s| !s.is_empty()))
        };
        if has(MODEL_NAME_ATTR) {
            continue;
        }
        let Some(m) = snapshot.model_for(&resource.attributes, peer).cloned() else {
            continue;
        };
        let had_version = has(MODEL_VERSION_ATTR);
        resource.attributes.retain(|kv| kv.key != MODEL_NAME_ATTR);
        resource
            .attributes
            .push(string_kv(MODEL_NAME_ATTR, &m.model));
        if !had_version && !m.version.is_empty() {
            resource
                .attributes
                .retain(|kv| kv.key != MODEL_VERSION_ATTR);
            resource
                .attributes
                .push(string_kv(MODEL_VERSION_ATTR, &m.version));
        }
        n += 1;
    }
    n
}

/// A read handle on the latest snapshot (cheap to clone).
pub type SnapshotRx = tokio::sync::watch::Receiver<Arc<Snapshot>>;
