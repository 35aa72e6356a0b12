//! Fleet view: clusters and nodes from the collectors' own series
//! (`edgewatch_collector_info`, `edgewatch_buffer_*`, job `edgewatch-collector`)
//! and the model series they forward, read through [`Store::select`].
//! Works with or without a reconciler. Serves `GET /api/v1/fleet`.
//! [`liveness`] keeps each collector's last-seen time past the store's staleness.

pub mod liveness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::store::{Selector, Store};

pub use liveness::{Liveness, COLLECTOR_INFO, LAST_SEEN};

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
    pub last_seen_ms: i64,
    pub last_seen_age_seconds: f64,
    pub up: bool,
    pub nodes: Vec<NodeView>,
    pub buffer_entries: f64,
    pub buffer_bytes: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetView {
    pub now_ms: i64,
    pub down_after_seconds: f64,
    pub clusters: Vec<ClusterView>,
}

fn selectors(list: &[&str]) -> Vec<Selector> {
    list.iter()
        .flat_map(|s| Selector::parse(s).expect("valid built-in selector"))
        .collect()
}

/// The fleet as the store has it at `now_ms`.
pub fn view(store: &Store, now_ms: i64, down_after: Duration) -> FleetView {
    let sel = store.select(&selectors(LIVENESS_SELECTORS), now_ms);
    let down_ms = down_after.as_millis() as i64;
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
    let mut clusters: BTreeMap<String, ClusterView> = BTreeMap::new();
    for (_, mut n) in nodes {
        n.up = now_ms - n.last_seen_ms <= down_ms;
        n.last_seen_age_seconds = ((now_ms - n.last_seen_ms) as f64 / 1000.0).max(0.0);
        let c = clusters
            .entry(n.cluster.clone())
            .or_insert_with(|| ClusterView {
                name: n.cluster.clone(),
                ..Default::default()
            });
        c.last_seen_ms = c.last_seen_ms.max(n.last_seen_ms);
        c.up |= n.up;
        c.buffer_entries += n.buffer_entries.unwrap_or(0.0);
        c.buffer_bytes += n.buffer_bytes.unwrap_or(0.0);
        c.nodes.push(n);
    }
    for c in clusters.values_mut() {
        c.last_seen_age_seconds = ((now_ms - c.last_seen_ms) as f64 / 1000.0).max(0.0);
    }
    FleetView {
        now_ms,
        down_after_seconds: down_after.as_secs_f64(),
        clusters: clusters.into_values().collect(),
    }
}

/// `GET /api/v1/fleet`.
pub fn router(store: Arc<Store>, down_after: Duration) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route(
        "/api/v1/fleet",
        get(move || {
            let store = store.clone();
            async move {
                let v = view(&store, crate::now_ms(), down_after);
                axum::Json(serde_json::json!({"status": "success", "data": v}))
            }
        }),
    )
}
