//! Limits at the core (`limits:` in the aggregator's configuration): what senders
//! may add to the store. They are checked where a series is created, never on a
//! sample of a series the store already holds, so the hot path of ingest pays
//! nothing for them; the metric name and help length are checked once per metric
//! of a request, before its family is registered.
//!
//! A sample over a limit is not stored and not logged (so remote_write never sees
//! it), and is counted in `edgewatch_limit_dropped_samples_total{cluster,limit}`,
//! where `limit` is the configuration key (`max_series_per_cluster`, ...) and
//! `cluster` the series' `cluster` label (empty when it has none). Only ingest
//! is limited: the core's own series (rules, alerts, reconciler status) are not.
//!
//! Series are counted per value of the `cluster` label (the cluster the sender's
//! credentials prove, see `ingest::identity`), including series the core itself
//! writes with that label.

use super::symbols::{SymbolId, Symbols};
use super::{lock, Store};
use std::collections::HashMap;

/// The label series are counted by for `max_series_per_cluster`.
pub const CLUSTER_LABEL: &str = "cluster";

/// Which limit refused a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    SeriesPerCluster,
    Series,
    LabelNamesPerSeries,
    LabelValueLength,
    MetricNameLength,
    HelpLength,
}

impl Limit {
    /// The configuration key, also the `limit` label.
    pub fn key(self) -> &'static str {
        match self {
            Limit::SeriesPerCluster => "max_series_per_cluster",
            Limit::Series => "max_series",
            Limit::LabelNamesPerSeries => "max_label_names_per_series",
            Limit::LabelValueLength => "max_label_value_length",
            Limit::MetricNameLength => "max_metric_name_length",
            Limit::HelpLength => "max_help_length",
        }
    }
}

/// The limits in force; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_series_per_cluster: Option<usize>,
    pub max_series: Option<usize>,
    pub max_label_names_per_series: Option<usize>,
    pub max_label_value_length: Option<usize>,
    pub max_metric_name_length: Option<usize>,
    pub max_help_length: Option<usize>,
}

impl Limits {
    pub fn from_config(c: &edgewatch_config::aggregator::LimitsConfig) -> Self {
        let get = |v: Option<std::num::NonZeroUsize>| v.map(|v| v.get());
        Limits {
            max_series_per_cluster: get(c.max_series_per_cluster),
            max_series: get(c.max_series),
            max_label_names_per_series: get(c.max_label_names_per_series),
            max_label_value_length: get(c.max_label_value_length),
            max_metric_name_length: get(c.max_metric_name_length),
            max_help_length: get(c.max_help_length),
        }
    }

    /// The limits a metric's name and help are held to.
    pub fn refuses_metric(&self, name: &str, help: &str) -> Option<Limit> {
        if over(self.max_metric_name_length, name.len()) {
            return Some(Limit::MetricNameLength);
        }
        if over(self.max_help_length, help.len()) {
            return Some(Limit::HelpLength);
        }
        None
    }

    /// The limits of one series' own shape.
    fn refuses_shape(&self, name: &str, labels: &[(&str, &str)]) -> Option<Limit> {
        if over(self.max_metric_name_length, name.len()) {
            return Some(Limit::MetricNameLength);
        }
        if over(self.max_label_names_per_series, labels.len()) {
            return Some(Limit::LabelNamesPerSeries);
        }
        if let Some(max) = self.max_label_value_length {
            if labels.iter().any(|(_, v)| v.len() > max) {
                return Some(Limit::LabelValueLength);
            }
        }
        None
    }
}

fn over(max: Option<usize>, n: usize) -> bool {
    max.is_some_and(|m| n > m)
}

/// The `cluster` label's value of a label set (empty when absent).
pub fn cluster_of<'a>(labels: &[(&str, &'a str)]) -> &'a str {
    labels
        .iter()
        .rev()
        .find(|(k, _)| *k == CLUSTER_LABEL)
        .map_or("", |(_, v)| v)
}

/// Series held per `cluster` value; kept only when `max_series_per_cluster` is set.
#[derive(Default)]
pub(super) struct ClusterSeries {
    counts: HashMap<Box<str>, usize>,
}

impl ClusterSeries {
    /// Series held for `cluster`.
    fn held(&self, cluster: &str) -> usize {
        self.counts.get(cluster).copied().unwrap_or(0)
    }

    fn add(&mut self, cluster: &str) {
        match self.counts.get_mut(cluster) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(cluster.into(), 1);
            }
        }
    }

    /// A series with key `key` was removed.
    pub(super) fn remove(
        &mut self,
        sym: &Symbols,
        cluster_name: Option<SymbolId>,
        key: &[SymbolId],
    ) {
        let value = cluster_name
            .and_then(|c| key[1..].chunks_exact(2).find(|p| p[0] == c))
            .map_or("", |p| sym.resolve(p[1]));
        if let Some(n) = self.counts.get_mut(value) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.counts.remove(value);
                if self.counts.capacity() > 64 && self.counts.len() < self.counts.capacity() / 4 {
                    self.counts.shrink_to_fit();
                }
            }
        }
    }
}

impl Store {
    /// Sets the limits ingest is held to (once, at start).
    pub fn set_limits(&self, limits: Limits) {
        let _ = self.limits.set(limits);
    }

    pub fn limits(&self) -> Limits {
        self.limits.get().copied().unwrap_or_default()
    }

    /// Whether a new series may be created: with `enforce`, checked against the
    /// limits; with `insert`, it is counted for its cluster (the caller holds its
    /// shard's lock and inserts it).
    pub(super) fn admit(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        enforce: bool,
        insert: bool,
    ) -> Result<(), Limit> {
        let Some(l) = self.limits.get().filter(|_| enforce || insert) else {
            return Ok(());
        };
        if enforce {
            if let Some(refused) = l.refuses_shape(name, labels) {
                return Err(refused);
            }
            if over(l.max_series, self.series_count() + 1) {
                return Err(Limit::Series);
            }
        }
        if let Some(max) = l.max_series_per_cluster {
            let cluster = cluster_of(labels);
            let mut counts = lock(&self.clusters);
            if enforce && counts.held(cluster) >= max {
                return Err(Limit::SeriesPerCluster);
            }
            if insert {
                counts.add(cluster);
            }
        }
        Ok(())
    }

    /// Counts samples dropped by a limit.
    pub(super) fn count_limited(&self, cluster: &str, limit: Limit, n: u64) {
        self.limited
            .with_label_values(&[cluster, limit.key()])
            .inc_by(n);
    }
}
