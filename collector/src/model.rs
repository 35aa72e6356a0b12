//! Model metadata series, emitted every `discovery.metadata_interval` and at once on every
//! change of the node's inference pods:
//!
//! ```text
//! edgewatch_model_info{namespace,pod,deployment,model,version,image,digest} 1
//! edgewatch_model_ready{…same} 0|1
//! edgewatch_model_restarts{…same} <container restarts>
//! ```
//!
//! `cluster`/`node` come from the collector's stamp. The series go under the scope
//! `edgewatch.scrape`, so the core stores them under exactly these names. When a pod goes
//! away or its labels change (a rollout: new pod, new digest), the old label set gets a
//! `NO_RECORDED_VALUE` point (stale marker).

use crate::discover::{Snapshot, SnapshotRx};
use crate::enrich::string_kv;
use crate::receive::scrape::convert::{scope, FLAG_NO_RECORDED_VALUE};
use crate::receive::scrape::{now_ms, Output};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const INFO: &str = "edgewatch_model_info";
pub const READY: &str = "edgewatch_model_ready";
pub const RESTARTS: &str = "edgewatch_model_restarts";

/// A label set of the model series (sorted by name).
pub type ModelLabels = Vec<(String, String)>;

/// One inference pod's series values.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSeries {
    pub labels: ModelLabels,
    pub ready: bool,
    pub restarts: i64,
}

/// The model series of a snapshot, sorted by labels.
pub fn series(snapshot: &Snapshot) -> Vec<ModelSeries> {
    let mut out: Vec<ModelSeries> = snapshot
        .models()
        .map(|(p, m)| {
            let mut labels: ModelLabels = [
                ("deployment", m.deployment.as_str()),
                ("digest", m.digest.as_str()),
                ("image", m.image.as_str()),
                ("model", m.model.as_str()),
                ("namespace", p.namespace.as_str()),
                ("pod", p.name.as_str()),
                ("version", m.version.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            labels.sort();
            ModelSeries {
                labels,
                ready: p.ready && !p.terminating,
                restarts: p.restarts,
            }
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

fn point(labels: &ModelLabels, v: Option<f64>, now_ns: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: labels.iter().map(|(k, v)| string_kv(k, v)).collect(),
        time_unix_nano: now_ns,
        value: v.map(number_data_point::Value::AsDouble),
        flags: if v.is_none() {
            FLAG_NO_RECORDED_VALUE
        } else {
            0
        },
        ..Default::default()
    }
}

/// The OTLP of one emission: current series, plus stale markers for label sets in
/// `previous` that are gone. Updates `previous`.
pub fn build(
    snapshot: &Snapshot,
    previous: &mut BTreeSet<ModelLabels>,
    now_ms: i64,
) -> ResourceMetrics {
    let now_ns = (now_ms.max(0) as u64) * 1_000_000;
    let current = series(snapshot);
    let (mut info, mut ready, mut restarts) = (Vec::new(), Vec::new(), Vec::new());
    let now_set: BTreeSet<ModelLabels> = current.iter().map(|s| s.labels.clone()).collect();
    for s in &current {
        info.push(point(&s.labels, Some(1.0), now_ns));
        ready.push(point(
            &s.labels,
            Some(if s.ready { 1.0 } else { 0.0 }),
            now_ns,
        ));
        restarts.push(point(&s.labels, Some(s.restarts as f64), now_ns));
    }
    for gone in previous.difference(&now_set) {
        for v in [&mut info, &mut ready, &mut restarts] {
            v.push(point(gone, None, now_ns));
        }
    }
    *previous = now_set;
    let metric = |name: &str, help: &str, data_points: Vec<NumberDataPoint>| Metric {
        name: name.to_string(),
        description: help.to_string(),
        data: Some(metric::Data::Gauge(Gauge { data_points })),
        ..Default::default()
    };
    let metrics: Vec<Metric> = [
        metric(
            INFO,
            "An inference pod on this node and its model (value 1).",
            info,
        ),
        metric(
            READY,
            "Whether the inference pod is Ready (1) or not (0).",
            ready,
        ),
        metric(
            RESTARTS,
            "Container restarts of the inference pod.",
            restarts,
        ),
    ]
    .into_iter()
    .filter(|m| matches!(&m.data, Some(metric::Data::Gauge(g)) if !g.data_points.is_empty()))
    .collect();
    ResourceMetrics {
        resource: Some(Resource::default()),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Emits on every change of the snapshot and every `interval`, until `shutdown`.
pub async fn run(
    mut rx: SnapshotRx,
    output: Output,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut previous = BTreeSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            changed = rx.changed() => if changed.is_err() { return },
        }
        let snap = rx.borrow_and_update().clone();
        let rm = build(&snap, &mut previous, now_ms());
        if let Err(e) = output.send(vec![rm]).await {
            tracing::debug!(error = %e, "appending model metadata failed");
        }
    }
}
