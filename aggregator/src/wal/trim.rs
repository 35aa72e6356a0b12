//! Cutting the log: by size and age (what a reader had not sent then is counted
//! as dropped for it), and behind every reader once the store no longer needs it.

use super::{record, Wal, RECORD};
use std::sync::atomic::Ordering;

/// How much of the log is kept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_age_ms: i64,
    /// Records younger than this are kept for the store's rebuild at start
    /// (at least `store.window`), even when every reader has sent them.
    pub keep_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    MaxBytes,
    MaxAge,
    Done,
}

impl Cut {
    fn reason(self) -> &'static str {
        match self {
            Cut::MaxBytes => "max_bytes",
            Cut::MaxAge => "max_age",
            Cut::Done => "done",
        }
    }
}

impl Wal {
    /// Removes records from the oldest while one of the limits asks for it; returns
    /// how many were removed.
    pub fn trim(&self, limits: Limits, now_ms: i64) -> usize {
        let readers = super::lock(&self.readers).clone();
        // Only what a reader's endpoint acknowledged is done: a record read but still
        // in flight would be lost by a crash if it were cut.
        let slowest = readers
            .iter()
            .map(|r| r.committed.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let mut removed = 0;
        for kv in self.tree.scan_prefix([RECORD]) {
            let Ok((k, v)) = kv else { break };
            let seq = super::seq_of(&k);
            let (created, samples) = record::header(&v).unwrap_or((i64::MIN, 0));
            let cut = if self.bytes() > limits.max_bytes {
                Cut::MaxBytes
            } else if created < now_ms.saturating_sub(limits.max_age_ms) {
                Cut::MaxAge
            } else if seq < slowest && created < now_ms.saturating_sub(limits.keep_ms) {
                Cut::Done
            } else {
                break;
            };
            if let Err(e) = self.tree.remove(&k) {
                tracing::warn!(error = %e, "trimming the write-ahead log failed");
                break;
            }
            removed += 1;
            let b = self.bytes.fetch_sub(v.len() as u64, Ordering::Relaxed) - v.len() as u64;
            self.metrics.bytes.set(b as i64);
            if cut == Cut::Done {
                continue;
            }
            // Counted for readers that had not read it: one that had still sends it.
            for r in readers
                .iter()
                .filter(|r| r.read.load(Ordering::Relaxed) <= seq)
            {
                self.metrics
                    .dropped
                    .with_label_values(&[&r.label, cut.reason()])
                    .inc_by(u64::from(samples));
            }
        }
        removed
    }
}
