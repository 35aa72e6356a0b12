//! The buffer's own Prometheus metrics. The names are a contract (dashboards,
//! alerts): do not rename.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub(crate) const REASON_FULL: &str = "full";
pub(crate) const REASON_MAX_AGE: &str = "max_age";
pub(crate) const REASON_CORRUPT: &str = "corrupt";

#[derive(Clone)]
pub(crate) struct Metrics {
    pub bytes: IntGauge,
    pub entries: IntGauge,
    pub oldest_timestamp_seconds: Gauge,
    pub dropped_points: IntCounterVec,
    pub corruptions: IntCounter,
    pub appended_points: IntCounter,
    pub flushes: IntCounter,
    pub write_errors: IntCounter,
}

fn boxed(m: &Metrics) -> Vec<Box<dyn prometheus::core::Collector>> {
    vec![
        Box::new(m.bytes.clone()),
        Box::new(m.entries.clone()),
        Box::new(m.oldest_timestamp_seconds.clone()),
        Box::new(m.dropped_points.clone()),
        Box::new(m.corruptions.clone()),
        Box::new(m.appended_points.clone()),
        Box::new(m.flushes.clone()),
        Box::new(m.write_errors.clone()),
    ]
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let dropped_points = IntCounterVec::new(
            Opts::new(
                "edgewatch_buffer_dropped_points_total",
                "Data points dropped from the buffer without being forwarded, by reason (full, max_age, corrupt).",
            ),
            &["reason"],
        )?;
        // Pre-create the series so that they read 0 rather than being absent.
        for r in [REASON_FULL, REASON_MAX_AGE, REASON_CORRUPT] {
            dropped_points.with_label_values(&[r]);
        }
        Ok(Metrics {
            bytes: IntGauge::new(
                "edgewatch_buffer_bytes",
                "Bytes the buffer occupies on disk.",
            )?,
            entries: IntGauge::new(
                "edgewatch_buffer_entries",
                "Batches held in the buffer, not yet acknowledged by the core.",
            )?,
            oldest_timestamp_seconds: Gauge::new(
                "edgewatch_buffer_oldest_timestamp_seconds",
                "Append time (unix seconds) of the oldest batch held; 0 when empty.",
            )?,
            dropped_points,
            corruptions: IntCounter::new(
                "edgewatch_buffer_corruptions_total",
                "Times a corrupt buffer directory or segment was moved aside.",
            )?,
            appended_points: IntCounter::new(
                "edgewatch_buffer_appended_points_total",
                "Data points durably appended to the buffer.",
            )?,
            flushes: IntCounter::new(
                "edgewatch_buffer_flushes_total",
                "Group-commit flushes (fsync) of the buffer.",
            )?,
            write_errors: IntCounter::new(
                "edgewatch_buffer_write_errors_total",
                "Failed buffer writes or flushes (disk full, read-only, I/O error).",
            )?,
        })
    }

    /// Registers in `registry`. A buffer reopened in the same process
    /// replaces the series of the previous instance.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        for c in boxed(self) {
            match registry.register(c) {
                Ok(()) => {}
                Err(prometheus::Error::AlreadyReg) => {
                    // Same descriptors registered by an earlier instance:
                    // swap in ours.
                    let again = boxed(self);
                    for c2 in again {
                        let _ = registry.unregister(c2);
                    }
                    for c2 in boxed(self) {
                        registry.register(c2)?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn dropped(&self, reason: &str, points: u64) {
        if points > 0 {
            self.dropped_points
                .with_label_values(&[reason])
                .inc_by(points);
        }
    }
}
