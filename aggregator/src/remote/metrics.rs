//! The remote write metrics (names are an interface: checks outside the repo read them).

use prometheus::{
    Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::{Arc, Mutex};

/// Registered once per registry; every endpoint takes its `url` children.
#[derive(Clone)]
pub struct Metrics {
    samples: IntCounterVec,
    failed: IntCounterVec,
    retried: IntCounterVec,
    pending: IntGaugeVec,
    highest_sent: GaugeVec,
    shards: IntGaugeVec,
    metadata: IntCounterVec,
    relabel_dropped: IntCounterVec,
    sent_bytes: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn gauge(name: &str, help: &str) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), &["url"])
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let m = Metrics {
            samples: counter(
                "edgewatch_remote_write_samples_total",
                "Samples sent to a remote_write endpoint and acknowledged by it.",
                &["url"],
            )?,
            failed: counter(
                "edgewatch_remote_write_failed_samples_total",
                "Samples a remote_write endpoint refused and that are not retried, by reason (http_<status>).",
                &["url", "reason"],
            )?,
            retried: counter(
                "edgewatch_remote_write_retried_samples_total",
                "Samples sent again after a retryable failure (5xx, 429, connection error).",
                &["url"],
            )?,
            pending: gauge(
                "edgewatch_remote_write_pending_samples",
                "Samples read from the write-ahead log and not yet acknowledged or dropped.",
            )?,
            highest_sent: GaugeVec::new(
                Opts::new(
                    "edgewatch_remote_write_highest_sent_timestamp_seconds",
                    "Newest sample timestamp a remote_write endpoint acknowledged.",
                ),
                &["url"],
            )?,
            shards: gauge(
                "edgewatch_remote_write_shards",
                "Parallel senders of a remote_write endpoint.",
            )?,
            metadata: counter(
                "edgewatch_remote_write_metadata_total",
                "Metric metadata entries (TYPE/HELP/unit) a remote_write endpoint acknowledged.",
                &["url"],
            )?,
            relabel_dropped: counter(
                "edgewatch_remote_write_relabel_dropped_samples_total",
                "Samples write_relabel_configs dropped (by configuration, not a failure).",
                &["url"],
            )?,
            sent_bytes: counter(
                "edgewatch_remote_write_sent_bytes_total",
                "Compressed request bytes a remote_write endpoint acknowledged.",
                &["url"],
            )?,
        };
        registry.register(Box::new(m.samples.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.retried.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.highest_sent.clone()))?;
        registry.register(Box::new(m.shards.clone()))?;
        registry.register(Box::new(m.metadata.clone()))?;
        registry.register(Box::new(m.relabel_dropped.clone()))?;
        registry.register(Box::new(m.sent_bytes.clone()))?;
        Ok(m)
    }

    pub(crate) fn endpoint(&self, url: &str) -> Endpoint {
        Endpoint {
            url: url.to_string(),
            failed: self.failed.clone(),
            samples: self.samples.with_label_values(&[url]),
            retried: self.retried.with_label_values(&[url]),
            pending: self.pending.with_label_values(&[url]),
            highest_sent: self.highest_sent.with_label_values(&[url]),
            shards: self.shards.with_label_values(&[url]),
            metadata: self.metadata.with_label_values(&[url]),
            relabel_dropped: self.relabel_dropped.with_label_values(&[url]),
            sent_bytes: self.sent_bytes.with_label_values(&[url]),
            highest_lock: Arc::default(),
        }
    }
}

/// One endpoint's children.
#[derive(Clone)]
pub(crate) struct Endpoint {
    url: String,
    failed: IntCounterVec,
    pub samples: IntCounter,
    pub retried: IntCounter,
    pub pending: IntGauge,
    pub highest_sent: Gauge,
    pub shards: IntGauge,
    pub metadata: IntCounter,
    pub relabel_dropped: IntCounter,
    pub sent_bytes: IntCounter,
    highest_lock: Arc<Mutex<()>>,
}

impl Endpoint {
    pub fn failed(&self, reason: &str, n: u64) {
        self.failed
            .with_label_values(&[&self.url, reason])
            .inc_by(n);
    }

    /// Raises the highest acknowledged timestamp (shards finish out of order, so
    /// compare and set under a lock).
    pub fn sent_up_to(&self, timestamp_ms: i64) {
        let s = timestamp_ms as f64 / 1000.0;
        let _one_at_a_time = self.highest_lock.lock().unwrap_or_else(|p| p.into_inner());
        if s > self.highest_sent.get() {
            self.highest_sent.set(s);
        }
    }
}
