//! The queue's bookkeeping, shared by the writer thread and the callers of
//! `read`/`ack`/`stats` under one mutex. Everything here is O(segments),
//! never O(entries): per-entry facts live only on disk.

use super::format::Header;
use super::meta::Meta;
use super::metrics::{Metrics, REASON_CORRUPT, REASON_MAX_AGE};
use super::segment::{dir_bytes, SegError, SegHandle};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use tracing::error;

pub(crate) struct SegMeta {
    pub first: u64,
    pub points_before: u64,
    pub dir: PathBuf,
    pub bytes: u64,
    /// Sealed and rewritten as blocks (`.z`): never changes again.
    pub compacted: bool,
}

pub(crate) struct State {
    /// Sorted by `first`; the last one is the active (written) segment.
    /// Sequence numbers are contiguous: segment i holds `[first_i, first_{i+1})`.
    pub segs: Vec<SegMeta>,
    pub active: Option<Arc<SegHandle>>,
    /// Segments opened for reading, shared with in-flight `read` calls.
    pub open: Vec<(u64, Weak<SegHandle>)>,
    /// Keeps the most recently read segment open between `read` calls.
    pub read_cache: Option<Arc<SegHandle>>,
    /// First seq not yet acknowledged or dropped.
    pub head: u64,
    pub head_points_before: u64,
    pub head_appended_ms: Option<u64>,
    /// `head_points_before`/`head_appended_ms` must be re-read from disk.
    pub head_stale: bool,
    /// Every seq below this is flushed to disk; `read` never goes past it.
    pub durable_next: u64,
    pub durable_points: u64,
    pub meta_dirty: bool,
    pub pending_deletes: Vec<PathBuf>,
    /// Segments sealed and not yet compacted, kept open for the compactor
    /// (reopening a sled Db makes its file grow by a log segment); at most
    /// `MAX_SEALED_OPEN`.
    pub sealed: Vec<Arc<SegHandle>>,
    /// Bytes of a compacted copy being written (counted against `max_bytes`).
    pub compacting_bytes: u64,
    /// When the forwarder last acknowledged something (see `compact.rs`).
    pub last_ack: Option<std::time::Instant>,
}

pub(crate) const MAX_SEALED_OPEN: usize = 4;

pub(crate) struct Ctx<'a> {
    pub path: &'a Path,
    pub metrics: &'a Metrics,
}

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `<path>.corrupt-<unix seconds>[<suffix>]`, made unique if taken.
pub(crate) fn aside_path(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "buffer".into());
    let ts = unix_secs();
    let mut n = 0;
    loop {
        let extra = if n == 0 {
            String::new()
        } else {
            format!(".{n}")
        };
        let p = path.with_file_name(format!("{name}.corrupt-{ts}{suffix}{extra}"));
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

impl State {
    pub fn total_bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.bytes).sum::<u64>() + self.compacting_bytes
    }

    pub fn entries(&self) -> u64 {
        self.durable_next.saturating_sub(self.head)
    }

    /// Index of the segment holding `seq` (the last with `first <= seq`).
    pub fn seg_index(&self, seq: u64) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.first <= seq);
        i.checked_sub(1)
    }

    /// Exclusive end seq of segment `i` (durable entries only).
    pub fn seg_end(&self, i: usize) -> u64 {
        match self.segs.get(i + 1) {
            Some(n) => n.first,
            None => self.durable_next,
        }
    }

    /// Points appended before `seg_end(i)`.
    pub fn seg_end_points(&self, i: usize) -> u64 {
        match self.segs.get(i + 1) {
            Some(n) => n.points_before,
            None => self.durable_points,
        }
    }

    pub fn is_active(&self, i: usize) -> bool {
        i + 1 == self.segs.len()
    }

    /// An open handle on segment `i`, opening it if needed.
    pub fn handle(&mut self, i: usize) -> Result<Arc<SegHandle>, SegError> {
        if self.is_active(i) {
            return self.active.clone().ok_or_else(|| {
                SegError::io(
                    "reading the active segment",
                    std::io::Error::other("it is being recovered"),
                )
            });
        }
        // Only one non-active segment stays open for readers: the cached one.
        let h = self.open_segment(i, true)?;
        self.read_cache = Some(h.clone());
        Ok(h)
    }

    /// A handle on sealed segment `i` shared with readers (opened if needed)
    /// without displacing the readers' cached one.
    pub fn shared_handle(&mut self, i: usize) -> Result<Arc<SegHandle>, SegError> {
        self.open_segment(i, false)
    }

    /// The handle of segment `i` a reader still holds, else a new one;
    /// `release_cached` drops the readers' cached handle before opening.
    fn open_segment(&mut self, i: usize, release_cached: bool) -> Result<Arc<SegHandle>, SegError> {
        let Some(seg) = self.segs.get(i) else {
            return Err(SegError::io(
                format!("opening segment {i}"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        };
        self.open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(h) = self
            .open
            .iter()
            .find(|(f, _)| *f == seg.first)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(h);
        }
        if release_cached {
            self.read_cache = None;
        }
        let h = SegHandle::open(&seg.dir, seg.first, false, seg.compacted)?;
        self.open.push((seg.first, Arc::downgrade(&h)));
        Ok(h)
    }

    /// Drops the cached handles of segment `first` (its files changed).
    pub fn forget_handle(&mut self, first: u64) {
        self.sealed.retain(|h| h.first != first);
        self.open.retain(|(f, _)| *f != first);
        if self.read_cache.as_ref().is_some_and(|h| h.first == first) {
            self.read_cache = None;
        }
    }

    pub fn set_head(&mut self, head: u64, points_before: u64, appended_ms: Option<u64>) {
        if head < self.head {
            return;
        }
        self.head = head;
        self.head_points_before = points_before;
        self.head_appended_ms = appended_ms;
        self.head_stale = appended_ms.is_none() && head < self.durable_next;
        self.meta_dirty = true;
    }

    /// Re-reads the head entry's counters after the head moved.
    /// Returns false if it could not (I/O trouble); state stays consistent.
    pub fn refresh_head(&mut self, ctx: &Ctx<'_>) -> bool {
        for _ in 0..1000 {
            if !self.head_stale {
                return true;
            }
            if self.head >= self.durable_next {
                self.head = self.durable_next;
                self.head_points_before = self.durable_points;
                self.head_appended_ms = None;
                self.head_stale = false;
                return true;
            }
            let Some(i) = self.seg_index(self.head) else {
                // Below the first segment (its predecessors are gone).
                let (f, p) = (self.segs[0].first, self.segs[0].points_before);
                self.head = f;
                self.head_points_before = p;
                continue;
            };
            let h = match self.handle(i) {
                Ok(h) => h,
                Err(SegError::Corrupt(why)) if !self.is_active(i) => {
                    self.quarantine(ctx, i, &why);
                    continue;
                }
                Err(_) => return false,
            };
            match h.header_at(self.head) {
                Ok(Some(hd)) => {
                    self.head_points_before = hd.points_before;
                    self.head_appended_ms = Some(hd.appended_at_ms);
                    self.head_stale = false;
                    return true;
                }
                Ok(None) if !self.is_active(i) => self.quarantine(ctx, i, "missing entry"),
                Err(SegError::Corrupt(why)) if !self.is_active(i) => self.quarantine(ctx, i, &why),
                _ => return false,
            }
        }
        false
    }

    /// Moves a corrupt sealed segment aside and skips the head past it.
    pub fn quarantine(&mut self, ctx: &Ctx<'_>, i: usize, why: &str) {
        if self.is_active(i) || i >= self.segs.len() {
            return;
        }
        let end = self.seg_end(i);
        let end_points = self.seg_end_points(i);
        let seg = self.segs.remove(i);
        self.forget_handle(seg.first);
        let lost = if self.head < end {
            let from = if self.head <= seg.first {
                seg.points_before
            } else {
                self.head_points_before
            };
            end_points.saturating_sub(from)
        } else {
            0
        };
        let name = seg
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let aside = aside_path(ctx.path, &format!("-segment-{name}"));
        match std::fs::rename(&seg.dir, &aside) {
            Ok(()) => error!(
                segment = %seg.dir.display(),
                moved_to = %aside.display(),
                reason = why,
                lost_points = lost,
                "corrupt segment moved aside"
            ),
            Err(e) => {
                error!(
                    segment = %seg.dir.display(),
                    reason = why,
                    error = %e,
                    "corrupt segment could not be moved aside; deleting it"
                );
                self.pending_deletes.push(seg.dir.clone());
            }
        }
        ctx.metrics.corruptions.inc();
        ctx.metrics.dropped(REASON_CORRUPT, lost);
        if self.head < end {
            self.set_head(end, end_points, None);
            self.head_stale = true;
        }
    }

    /// Drops entries appended before `now_ms - max_age_ms`.
    pub fn expire(&mut self, ctx: &Ctx<'_>, now_ms: u64, max_age_ms: u64) {
        let cutoff = now_ms.saturating_sub(max_age_ms);
        if !self.refresh_head(ctx) {
            return;
        }
        match self.head_appended_ms {
            Some(ts) if ts < cutoff => {}
            _ => return,
        }
        let mut dropped = 0u64;
        'segments: while self.head < self.durable_next {
            let Some(i) = self.seg_index(self.head) else {
                break;
            };
            let end = self.seg_end(i);
            if self.head >= end {
                let p = self.seg_end_points(i);
                self.set_head(end, p, None);
                continue;
            }
            let h = match self.handle(i) {
                Ok(h) => h,
                Err(SegError::Corrupt(why)) if !self.is_active(i) => {
                    self.quarantine(ctx, i, &why);
                    continue;
                }
                Err(_) => break,
            };
            let mut found: Option<(u64, Header)> = None;
            let scanned = h.scan(self.head, end, false, &mut |seq, hd, _| {
                if hd.appended_at_ms >= cutoff {
                    found = Some((seq, *hd));
                    return false;
                }
                true
            });
            if let Some((seq, hd)) = found {
                dropped += hd.points_before.saturating_sub(self.head_points_before);
                self.set_head(seq, hd.points_before, Some(hd.appended_at_ms));
                break 'segments;
            }
            if scanned.is_err() {
                break 'segments;
            }
            let p = self.seg_end_points(i);
            dropped += p.saturating_sub(self.head_points_before);
            self.set_head(end, p, None);
        }
        ctx.metrics.dropped(REASON_MAX_AGE, dropped);
    }

    pub fn meta(&self, instance_id: &str) -> Meta {
        Meta {
            version: super::meta::VERSION,
            instance_id: instance_id.to_string(),
            head: self.head,
            head_points_before: self.head_points_before,
            next_seq_floor: self.durable_next,
            next_points_floor: self.durable_points,
        }
    }

    pub fn update_gauges(&self, m: &Metrics) {
        m.bytes.set(self.total_bytes() as i64);
        m.entries.set(self.entries() as i64);
        let oldest = if self.entries() > 0 {
            self.head_appended_ms
                .map(|t| t as f64 / 1000.0)
                .unwrap_or(0.0)
        } else {
            0.0
        };
        m.oldest_timestamp_seconds.set(oldest);
    }

    /// Re-reads segment sizes from disk: every segment if `all`, else the active
    /// one, the only one written to. (A backlog can hold thousands of sealed
    /// segments; walking all of them every second would cost more than the writes.)
    pub fn remeasure(&mut self, all: bool) {
        let n = self.segs.len();
        let from = if all { 0 } else { n.saturating_sub(1) };
        for s in &mut self.segs[from..] {
            s.bytes = dir_bytes(&s.dir);
        }
    }
}
