//! Fleet view: clusters and nodes from the collectors' own series
//! (`edgewatch_collector_info`, `edgewatch_buffer_*`, job `edgewatch-collector`)
//! and the model series they forward, read through [`Store::select`].
//! Works with or without a reconciler. Serves `GET /api/v1/fleet`.
//! [`liveness`] keeps each collector's last-seen time past the store's staleness;
//! [`owned`] says which clusters this aggregator owns.

pub mod liveness;
pub mod owned;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::store::{Selector, Store};

pub use liveness::{Liveness, COLLECTOR_INFO, LAST_SEEN};
pub use owned::Owned;

/// Series that carry a `cluster`/`node` pair and say the collector is alive.
pub const LIVENESS_SELECTORS: &[&str] = &[
    COLLECTOR_INFO,
    LAST_SEEN,
    "{job=\"edgewatch-collector\"}",
    "edgewatch_model_info",
    "edgewatch_model_ready",
];

/// When a liveness series says its collector was last seen (ms).
pub fn seen_ms(s: &crate::store::SeriesRef<'_>) -> i64 {
    if s.name() == LAST_SEEN {
        (s.value() * 1000.0) as i64
    } else {
        s.timestamp_ms()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeView {
    pub cluster: String,
    pub node: String,
    /// Newest sample of the node's series (ms).
    pub last_seen_ms: i64,
    pub last_seen_age_seconds: f64,
    pub up: bool,
    pub collector_version: Option<String>,
    pub instance_id: Option<String>,
    pub buffer_entries: Option<f64>,
    pub buffer_bytes: Option<f64>,
    /// Age of the oldest buffered entry (s), from `edgewatch_buffer_oldest_timestamp_seconds`.
    pub buffer_oldest_age_seconds: Option<f64>,
    pub models: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterView {
    pub name: String,
    /// In this aggregator's `fleet.clusters` (always, without a list).
    pub owned: bool,
    /// A collector of it is known here; false for an owned cluster that has
    /// never reported (expected here, not seen yet).
    pub reported: bool,
    /// None when not `reported`.
    pub last_seen_ms: Option<i64>,
    pub last_seen_age_seconds: Option<f64>,
    pub up: bool,
    pub nodes: Vec<NodeView>,
    pub buffer_entries: f64,
    pub buffer_bytes: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetView {
    pub now_ms: i64,
    pub down_after_seconds: f64,
    /// `fleet.clusters`, sorted; empty when `owns_every_cluster`.
    pub owned_clusters: Vec<String>,
    pub owns_every_cluster: bool,
    /// Those reporting here, and the owned ones that have not, by name.
    pub clusters: Vec<ClusterView>,
}

/// The fleet view of one aggregator: its store, `fleet.down_after`, `fleet.clusters`.
#[derive(Clone)]
pub struct Fleet {
    store: Arc<Store>,
    down_after: Duration,
    owned: Arc<Owned>,
}

impl Fleet {
    pub fn new(store: Arc<Store>, down_after: Duration, owned: Owned) -> Self {
        Fleet {
            store,
            down_after,
            owned: Arc::new(owned),
        }
    }

    pub fn view(&self, now_ms: i64) -> FleetView {
        view(&self.store, now_ms, self.down_after, &self.owned)
    }

    /// Registers `edgewatch_fleet_unowned_clusters` and
    /// `edgewatch_fleet_owned_clusters_unreported`.
    pub fn register(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(owned::OwnershipMetrics::new(self.clone())?))
    }

    /// `GET /api/v1/fleet`.
    pub fn router(&self) -> axum::Router {
        use axum::routing::get;
        let fleet = self.clone();
        axum::Router::new().route(
            "/api/v1/fleet",
            get(move || {
                let fleet = fleet.clone();
                async move {
                    let v = fleet.view(crate::now_ms());
                    axum::Json(serde_json::json!({"status": "success", "data": v}))
                }
            }),
        )
    }
}

fn selectors(list: &[&str]) -> Vec<Selector> {
    list.iter()
        .flat_map(|s| Selector::parse(s).expect("valid built-in selector"))
        .collect()
}

/// The fleet as the store has it at `now_ms`, with the ownership of each cluster.
pub fn view(store: &Store, now_ms: i64, down_after: Duration, owned: &Owned) -> FleetView {
    let nodes = nodes(store, now_ms);
    let mut clusters = clusters(nodes, now_ms, down_after.as_millis() as i64);
    for c in clusters.values_mut() {
        c.owned = owned.owns(&c.name);
    }
    for name in owned.listed() {
        clusters
            .entry(name.to_owned())
            .or_insert_with(|| ClusterView {
                name: name.to_owned(),
                owned: true,
                ..Default::default()
            });
    }
    FleetView {
        now_ms,
        down_after_seconds: down_after.as_secs_f64(),
        owned_clusters: owned.listed().map(str::to_owned).collect(),
        owns_every_cluster: owned.owns_every_cluster(),
        clusters: clusters.into_values().collect(),
    }
}

/// Every (cluster, node) with a liveness series, and what its series say.
fn nodes(store: &Store, now_ms: i64) -> BTreeMap<(String, String), NodeView> {
    let sel = store.select(&selectors(LIVENESS_SELECTORS), now_ms);
    let mut nodes: BTreeMap<(String, String), NodeView> = BTreeMap::new();
    for s in sel.iter() {
        let (Some(cluster), Some(node)) = (s.label("cluster"), s.label("node")) else {
            continue;
        };
        let n = nodes
            .entry((cluster.to_owned(), node.to_owned()))
            .or_insert_with(|| NodeView {
                cluster: cluster.to_owned(),
                node: node.to_owned(),
                ..Default::default()
            });
        n.last_seen_ms = n.last_seen_ms.max(seen_ms(&s));
        match s.name() {
            // The last-seen series may lack these labels: never erase them.
            COLLECTOR_INFO | LAST_SEEN => {
                if let Some(v) = s.label("version") {
                    n.collector_version = Some(v.to_owned());
                }
                if let Some(i) = s.label("instance_id") {
                    n.instance_id = Some(i.to_owned());
                }
            }
            "edgewatch_buffer_entries" => {
                *n.buffer_entries.get_or_insert(0.0) += s.value();
            }
            "edgewatch_buffer_bytes" => {
                *n.buffer_bytes.get_or_insert(0.0) += s.value();
            }
            "edgewatch_buffer_oldest_timestamp_seconds" if s.value() > 0.0 => {
                let age = (now_ms as f64 / 1000.0 - s.value()).max(0.0);
                let cur = n.buffer_oldest_age_seconds.get_or_insert(0.0);
                *cur = cur.max(age);
            }
            "edgewatch_model_info" => n.models += 1,
            _ => {}
        }
    }
    nodes
}

/// The nodes grouped by cluster, each node up when seen within `down_ms`.
fn clusters(
    nodes: BTreeMap<(String, String), NodeView>,
    now_ms: i64,
    down_ms: i64,
) -> BTreeMap<String, ClusterView> {
    let mut clusters: BTreeMap<String, ClusterView> = BTreeMap::new();
    for (_, mut n) in nodes {
        n.up = now_ms - n.last_seen_ms <= down_ms;
        n.last_seen_age_seconds = ((now_ms - n.last_seen_ms) as f64 / 1000.0).max(0.0);
        let c = clusters
            .entry(n.cluster.clone())
            .or_insert_with(|| ClusterView {
                name: n.cluster.clone(),
                reported: true,
                ..Default::default()
            });
        c.last_seen_ms = Some(c.last_seen_ms.unwrap_or(i64::MIN).max(n.last_seen_ms));
        c.up |= n.up;
        c.buffer_entries += n.buffer_entries.unwrap_or(0.0);
        c.buffer_bytes += n.buffer_bytes.unwrap_or(0.0);
        c.nodes.push(n);
    }
    for c in clusters.values_mut() {
        c.last_seen_age_seconds = c
            .last_seen_ms
            .map(|t| ((now_ms - t) as f64 / 1000.0).max(0.0));
    }
    clusters
}
