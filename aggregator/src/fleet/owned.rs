//! Which clusters this aggregator owns (`fleet.clusters`) when several
//! aggregators share one fleet. A cluster that reports here without being
//! owned is still ingested and stored (its collectors are misrouted, or in the
//! middle of moving); the fleet view marks it and
//! `edgewatch_fleet_unowned_clusters` counts it, so a misrouted collector shows.

use std::collections::BTreeSet;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;

use super::Fleet;

/// `fleet.clusters`: the clusters this aggregator owns; empty = every cluster
/// that reports here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    listed: BTreeSet<String>,
}

impl Owned {
    pub fn new(clusters: &[String]) -> Self {
        Owned {
            listed: clusters.iter().cloned().collect(),
        }
    }

    /// No list: every cluster that reports here is owned.
    pub fn every() -> Self {
        Owned::default()
    }

    pub fn owns(&self, cluster: &str) -> bool {
        self.listed.is_empty() || self.listed.contains(cluster)
    }

    pub fn owns_every_cluster(&self) -> bool {
        self.listed.is_empty()
    }

    /// The listed clusters, sorted (empty when every cluster is owned).
    pub fn listed(&self) -> impl Iterator<Item = &str> {
        self.listed.iter().map(String::as_str)
    }
}

/// Ownership gauges, computed from the fleet view when `/metrics` is scraped
/// (no task of their own; nothing to compute without a list).
pub(super) struct OwnershipMetrics {
    fleet: Fleet,
    unowned: IntGauge,
    unreported: IntGauge,
}

impl OwnershipMetrics {
    pub(super) fn new(fleet: Fleet) -> Result<Self, prometheus::Error> {
        Ok(OwnershipMetrics {
            fleet,
            unowned: IntGauge::new(
                "edgewatch_fleet_unowned_clusters",
                "Clusters reporting to this aggregator that are not in its fleet.clusters (their points are still stored).",
            )?,
            unreported: IntGauge::new(
                "edgewatch_fleet_owned_clusters_unreported",
                "Clusters in this aggregator's fleet.clusters of which no collector is known here.",
            )?,
        })
    }
}

impl Collector for OwnershipMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.unowned.desc();
        d.extend(self.unreported.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if !self.fleet.owned.owns_every_cluster() {
            let v = self.fleet.view(crate::now_ms());
            let count = |f: fn(&super::ClusterView) -> bool| {
                v.clusters.iter().filter(|c| f(c)).count() as i64
            };
            self.unowned.set(count(|c| !c.owned));
            self.unreported.set(count(|c| !c.reported));
        }
        let mut out = self.unowned.collect();
        out.extend(self.unreported.collect());
        out
    }
}
