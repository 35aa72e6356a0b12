//! Writes that also go to the write-ahead log: what a caller writes through one
//! [`Logged`] becomes one log record, so remote_write sends every sample the store
//! was given (also those it ignored as older than the one it holds: a backlog
//! arriving late is history the TSDB still wants).

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
        }
    }

    /// Writes that are not logged (replay of the log itself, tests).
    pub fn unlogged(&self, now_ms: i64) -> Logged<'_> {
        Logged {
            store: self,
            now_ms,
            record: None,
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
        let outcome = self
            .store
            .write(family, name, labels, value, timestamp_ms, self.now_ms);
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
