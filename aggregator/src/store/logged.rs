//! Writes that also go to the write-ahead log: what a caller writes through one
//! [`Logged`] becomes one log record, so remote_write sends every sample the store
//! was given (also those it ignored as older than the one it holds: a backlog
//! arriving late is history the TSDB still wants).

use super::limits::{cluster_of, Limit};
use super::{FamilyId, FamilyMeta, Store, WriteOutcome, STALE_NAN};
use crate::wal::record::RecordBuilder;
use crate::wal::Wal;
use std::cell::RefCell;
use std::sync::Arc;

/// A batch of store writes recorded for the log. Dropping it appends its record
/// without waiting; ingest instead takes the record ([`Logged::take_record`]) and
/// waits for it to be durable.
pub struct Logged<'a> {
    store: &'a Store,
    now_ms: i64,
    record: Option<RefCell<RecordBuilder>>,
    /// Held to the store's limits (ingest); what they dropped, per cluster.
    limited: Option<RefCell<Vec<LimitDrop>>>,
}

/// Samples of one cluster a limit dropped in one batch of writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitDrop {
    pub cluster: String,
    pub limit: Limit,
    pub samples: u64,
}

impl Store {
    /// Sets the log every [`Store::logged`] batch goes to (once, at start).
    pub fn set_wal(&self, wal: Arc<Wal>) {
        let _ = self.wal.set(wal);
    }

    pub fn wal(&self) -> Option<&Arc<Wal>> {
        self.wal.get()
    }

    /// Writes at `now_ms` (arrival time) that are logged when a log is set.
    pub fn logged(&self, now_ms: i64) -> Logged<'_> {
        Logged {
            store: self,
            now_ms,
            record: self.wal.get().map(|_| RefCell::default()),
            limited: None,
        }
    }

    /// [`Store::logged`] for what senders send: new series are held to the limits.
    pub fn ingest_logged(&self, now_ms: i64) -> Logged<'_> {
        Logged {
            store: self,
            now_ms,
            record: self.wal.get().map(|_| RefCell::default()),
            limited: Some(RefCell::default()),
        }
    }

    /// Writes that are not logged (replay of the log itself, tests).
    pub fn unlogged(&self, now_ms: i64) -> Logged<'_> {
        Logged {
            store: self,
            now_ms,
            record: None,
            limited: None,
        }
    }

    /// The handle of a family registered under `name`.
    pub fn family_id(&self, name: &str) -> Option<FamilyId> {
        super::read(&self.families)
            .by_name
            .get(name)
            .map(|&i| FamilyId(i))
    }

    /// A registered family's metadata.
    pub fn family_meta_of(&self, family: FamilyId) -> FamilyMeta {
        let f = super::read(&self.families);
        f.metas
            .get(family.0 as usize)
            .cloned()
            .unwrap_or_else(|| FamilyMeta {
                name: String::new(),
                metric_type: super::MetricType::Unknown,
                help: String::new(),
                unit: String::new(),
            })
    }
}

impl<'a> Logged<'a> {
    pub fn store(&self) -> &'a Store {
        self.store
    }

    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// [`Store::write`] at this batch's arrival time, and into the record.
    pub fn write(
        &self,
        family: FamilyId,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        timestamp_ms: i64,
    ) -> WriteOutcome {
        let sample = (value, timestamp_ms, self.now_ms);
        let outcome = self
            .store
            .write_as(family, name, labels, sample, self.limited.is_some());
        if let WriteOutcome::Limited(limit) = outcome {
            self.dropped(cluster_of(labels), limit, 1);
            return outcome;
        }
        if let Some(r) = &self.record {
            r.borrow_mut().push(
                family,
                || self.store.family_meta_of(family),
                name,
                labels,
                value,
                timestamp_ms,
            );
        }
        outcome
    }

    /// True when a metric's name or help is over the limits: its `points` are
    /// dropped and counted for `cluster`. Always false for unlimited writes.
    pub fn refuses_metric(&self, cluster: &str, name: &str, help: &str, points: u64) -> bool {
        if self.limited.is_none() {
            return false;
        }
        match self.store.limits().refuses_metric(name, help) {
            Some(limit) => {
                self.dropped(cluster, limit, points);
                true
            }
            None => false,
        }
    }

    fn dropped(&self, cluster: &str, limit: Limit, samples: u64) {
        let Some(l) = &self.limited else { return };
        let mut l = l.borrow_mut();
        match l
            .iter_mut()
            .find(|d| d.limit == limit && d.cluster == cluster)
        {
            Some(d) => d.samples += samples,
            None => l.push(LimitDrop {
                cluster: cluster.to_string(),
                limit,
                samples,
            }),
        }
    }

    /// What the limits dropped so far (now counted in the store's metric); the
    /// batch starts empty again.
    pub fn take_limited(&self) -> Vec<LimitDrop> {
        let Some(l) = &self.limited else {
            return Vec::new();
        };
        let drops = std::mem::take(&mut *l.borrow_mut());
        for d in &drops {
            self.store.count_limited(&d.cluster, d.limit, d.samples);
        }
        drops
    }

    /// [`Store::delete`]; a series that existed gets a stale marker in the record,
    /// as Prometheus writes one when a rule stops producing a series.
    pub fn delete(&self, family: FamilyId, name: &str, labels: &[(&str, &str)]) -> bool {
        let existed = self.store.delete(name, labels);
        if let (true, Some(r)) = (existed, &self.record) {
            r.borrow_mut().push(
                family,
                || self.store.family_meta_of(family),
                name,
                labels,
                STALE_NAN,
                self.now_ms,
            );
        }
        existed
    }

    /// The encoded record of what was written so far (`None` without a log or
    /// when nothing was written); the batch starts empty again.
    pub fn take_record(&self) -> Option<Vec<u8>> {
        let r = self.record.as_ref()?;
        let mut b = r.borrow_mut();
        (!b.is_empty()).then(|| b.finish(self.now_ms))
    }
}

impl Drop for Logged<'_> {
    fn drop(&mut self) {
        // Counted even when nobody asked what was dropped.
        self.take_limited();
        let Some(record) = self.take_record() else {
            return;
        };
        if let Some(wal) = self.store.wal.get() {
            if let Err(e) = wal.append(record) {
                tracing::warn!(error = %e, "logging derived series failed; remote_write misses them");
            }
        }
    }
}
