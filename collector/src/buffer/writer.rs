//! The writer thread: group commit, space and age limits, segment rolling
//! and deletion. The only code that writes to sled or to the directory.

use super::format::{self, Header};
use super::meta;
use super::metrics::REASON_FULL;
use super::segment::{dir_bytes, SegError, SegHandle};
use super::state::{now_ms, SegMeta, State};
use super::{BufferError, FullPolicy, Seq, Shared};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::{error, warn};

/// Bytes on disk per byte of encoded entry written: sled 0.34 rewrites leaf
/// nodes on consolidation and keeps superseded versions until its segment
/// cleaner runs; measured 1.8-2.0 for this workload.
const SPACE_AMPLIFICATION: u64 = 2;
const PER_ENTRY_OVERHEAD: u64 = 48;
const MAX_GROUP_REQUESTS: usize = 4096;
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;
const TICK: Duration = Duration::from_millis(250);
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);
const META_EVERY: Duration = Duration::from_secs(1);
const ZSTD_LEVEL: i32 = 3;
/// A drained queue whose active segment holds more than this starts a new
/// (empty) segment so that the old one can be deleted: the disk goes back
/// to ~0 after a drain. Costs one segment creation per 256 KiB written when
/// the forwarder keeps up.
const DRAINED_ROLL_BYTES: u64 = 256 * 1024;
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Estimated disk bytes of one encoded entry.
fn entry_cost(encoded: &[u8]) -> u64 {
    (encoded.len() as u64 + PER_ENTRY_OVERHEAD) * SPACE_AMPLIFICATION
}

pub(crate) struct Request {
    pub points: u64,
    pub payload: Bytes,
    pub resp: oneshot::Sender<Result<Seq, BufferError>>,
    pub _permit: OwnedSemaphorePermit,
}

pub(crate) enum Msg {
    Append(Request),
    Wake,
    Close,
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<Msg>,
    /// Compressor for the active segment, tagged with its first seq.
    compressor: Option<(u64, zstd::bulk::Compressor<'static>)>,
    /// A write failed: reopen the active segment and trim its tail first.
    suspect: bool,
    last_housekeeping: Instant,
    housekeeping_runs: u64,
    last_meta: Instant,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, rx: mpsc::Receiver<Msg>) -> Writer {
        Writer {
            shared,
            rx,
            compressor: None,
            suspect: false,
            last_housekeeping: Instant::now(),
            housekeeping_runs: 0,
            last_meta: Instant::now(),
        }
    }

    pub fn run(mut self) {
        let mut closing = false;
        while !closing {
            let first = match self.rx.recv_timeout(TICK) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut group: Vec<Request> = Vec::new();
            let mut group_bytes = 0usize;
            let mut next = first;
            while let Some(m) = next.take() {
                match m {
                    Msg::Append(r) => {
                        group_bytes += r.payload.len();
                        group.push(r);
                    }
                    Msg::Wake => self.shared.wake_pending.store(false, Ordering::Release),
                    Msg::Close => closing = true,
                }
                if closing || group.len() >= MAX_GROUP_REQUESTS || group_bytes >= MAX_GROUP_BYTES {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            if !group.is_empty() {
                self.commit(group);
            }
            self.housekeeping(closing);
        }
        // Anything still queued was sent after close: refuse it.
        while let Ok(m) = self.rx.try_recv() {
            if let Msg::Append(r) = m {
                let _ = r.resp.send(Err(BufferError::Closed));
            }
        }
        let mut st = self.shared.lock();
        if let Some(a) = &st.active {
            let _ = a.flush();
        }
        let m = st.meta(&self.shared.instance_id);
        if let Err(e) = meta::write(&self.shared.cfg.path, &m) {
            warn!(error = %e, "edgewatch buffer: could not write meta at close");
        }
        st.active = None;
        st.read_cache = None;
        st.sealed.clear();
        st.open.clear();
    }

    fn ctx_err(&self, what: &str, e: impl std::fmt::Display) -> BufferError {
        self.shared.metrics.write_errors.inc();
        self.shared.writable.store(false, Ordering::Release);
        error!(error = %e, "edgewatch buffer: {what} failed");
        BufferError::Io(format!("{what}: {e}"))
    }

    /// Reopens the active segment after a failed write and removes anything
    /// past the durable watermark, so failed entries never resurface.
    fn recover(&mut self, st: &mut State) -> Result<(), String> {
        let Some(seg) = st.segs.last() else {
            return Err("no active segment".into());
        };
        let (dir, first) = (seg.dir.clone(), seg.first);
        if let Some(old) = st.active.take() {
            if st.read_cache.as_ref().is_some_and(|h| h.first == first) {
                st.read_cache = None;
            }
            drop(old);
        }
        self.compressor = None;
        let h = SegHandle::open(&dir, first, true, false).map_err(|e| e.to_string())?;
        let tail: Vec<_> =
            h.db.range(format::key(st.durable_next)..)
                .keys()
                .filter_map(|k| k.ok())
                .collect();
        for k in tail {
            h.db.remove(k).map_err(|e| e.to_string())?;
        }
        h.flush().map_err(|e| e.to_string())?;
        st.active = Some(h);
        self.suspect = false;
        Ok(())
    }

    /// Starts a new active segment at the durable watermark.
    fn roll(&mut self, st: &mut State) -> Result<(), SegError> {
        let first = st.durable_next;
        if st.segs.last().is_some_and(|s| s.first == first) {
            return Ok(()); // already empty
        }
        let dir = self.shared.cfg.segments_dir.join(format::segment_name(
            first,
            st.durable_points,
            false,
        ));
        let h = SegHandle::open(&dir, first, true, false)?;
        let _ = meta::sync_dir(&self.shared.cfg.segments_dir);
        if let Some(old) = st.active.take() {
            let _ = old.flush();
            // Kept open for the compactor (and readers).
            st.open.push((old.first, Arc::downgrade(&old)));
            if st.sealed.len() >= super::state::MAX_SEALED_OPEN {
                st.sealed.remove(0);
            }
            st.sealed.push(old);
        }
        if let Some(last) = st.segs.last_mut() {
            // Sealed: its final size.
            last.bytes = dir_bytes(&last.dir);
        }
        st.segs.push(SegMeta {
            first,
            points_before: st.durable_points,
            dir: dir.clone(),
            bytes: dir_bytes(&dir),
            compacted: false,
        });
        st.active = Some(h);
        st.meta_dirty = true;
        self.compressor = None;
        self.shared.compact_notify();
        Ok(())
    }

    fn compressor_for(
        &mut self,
        h: &SegHandle,
        sample: &[u8],
    ) -> Result<&mut zstd::bulk::Compressor<'static>, String> {
        if self.compressor.as_ref().map(|c| c.0) != Some(h.first) {
            let dict = match h.dict.get() {
                Some(d) => d,
                None => {
                    let d = Arc::new(format::make_dictionary(sample));
                    h.store_dict(d.clone()).map_err(|e| e.to_string())?;
                    d
                }
            };
            let c = zstd::bulk::Compressor::with_dictionary(ZSTD_LEVEL, &dict)
                .map_err(|e| e.to_string())?;
            self.compressor = Some((h.first, c));
        }
        match self.compressor.as_mut() {
            Some((_, c)) => Ok(c),
            None => Err("no compressor".into()),
        }
    }

    fn commit(&mut self, group: Vec<Request>) {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if self.suspect || st.active.is_none() {
            if let Err(e) = self.recover(&mut st) {
                let err = self.ctx_err("reopening the active segment", e);
                drop(st);
                for r in group {
                    let _ = r.resp.send(Err(err.clone()));
                }
                return;
            }
        }
        let now = now_ms();
        let mut rolled = false;
        let (encoded, accepted) = loop {
            let Some(active) = st.active.clone() else {
                let err = self.ctx_err("writing", "no active segment");
                drop(st);
                for r in group {
                    let _ = r.resp.send(Err(err.clone()));
                }
                return;
            };
            // Encode against the active segment's dictionary, without the
            // lock (only this thread changes the watermark and the segment).
            let mut encoded: Vec<(Seq, Vec<u8>)> = Vec::with_capacity(group.len());
            let mut seq = st.durable_next;
            let mut points = st.durable_points;
            drop(st);
            let sample = group.first().map(|r| r.payload.clone()).unwrap_or_default();
            let c = match self.compressor_for(&active, &sample) {
                Ok(c) => c,
                Err(e) => {
                    let err = self.ctx_err("preparing compression", e);
                    for r in group {
                        let _ = r.resp.send(Err(err.clone()));
                    }
                    return;
                }
            };
            let mut enc_err = None;
            for r in &group {
                let h = Header {
                    points: r.points,
                    points_before: points,
                    appended_at_ms: now,
                    raw_len: r.payload.len() as u64,
                };
                match format::encode(&h, &r.payload, c) {
                    Ok(v) => encoded.push((seq, v)),
                    Err(e) => {
                        enc_err = Some(e);
                        break;
                    }
                }
                seq += 1;
                points += r.points;
            }
            if let Some(e) = enc_err {
                let err = self.ctx_err("compressing", e);
                for r in group {
                    let _ = r.resp.send(Err(err.clone()));
                }
                return;
            }
            st = shared.lock();
            // Space.
            let max = self.shared.cfg.max_bytes;
            match self.shared.cfg.policy {
                FullPolicy::DropOldest => {
                    let needed: u64 = encoded.iter().map(|(_, v)| entry_cost(v)).sum();
                    let mut deletes = Vec::new();
                    let mut dropped = 0u64;
                    let ctx = shared.ctx();
                    st.refresh_head(&ctx);
                    while st.total_bytes() + needed > max {
                        if st.segs.len() > 1 {
                            let end = st.seg_end(0);
                            let end_points = st.seg_end_points(0);
                            if st.head < end {
                                let from = st.head_points_before.max(st.segs[0].points_before);
                                dropped += end_points.saturating_sub(from);
                                st.set_head(end, end_points, None);
                            }
                            let seg = st.segs.remove(0);
                            st.forget_handle(seg.first);
                            deletes.push(seg.dir);
                        } else if !rolled && st.durable_next > st.segs[0].first {
                            if let Err(e) = self.roll(&mut st) {
                                warn!(error = %e, "edgewatch buffer: could not roll to make room");
                                break;
                            }
                            rolled = true;
                        } else {
                            break;
                        }
                    }
                    self.shared.metrics.dropped(REASON_FULL, dropped);
                    if !deletes.is_empty() {
                        self.delete_segments(&mut st, deletes);
                    }
                    let active_first = st.segs.last().map(|s| s.first);
                    if self.compressor.as_ref().map(|c| c.0) != active_first {
                        // Rolled: re-encode with the new segment's dictionary.
                        continue;
                    }
                    let n = encoded.len();
                    break (encoded, n);
                }
                FullPolicy::Backpressure => {
                    let mut total = st.total_bytes();
                    let mut n = 0;
                    for (_, v) in &encoded {
                        if total + entry_cost(v) > max {
                            break;
                        }
                        total += entry_cost(v);
                        n += 1;
                    }
                    break (encoded, n);
                }
            }
        };
        let active = match st.active.clone() {
            Some(a) => a,
            None => return,
        };
        // Release the lock for the slow part: readers keep going.
        drop(st);

        let mut group = group;
        let rejected: Vec<Request> = group.split_off(accepted);
        for r in rejected {
            let _ = r.resp.send(Err(BufferError::Full {
                retry_after: RETRY_AFTER,
            }));
        }
        if group.is_empty() {
            return;
        }
        let write = (|| -> Result<(), String> {
            if self.shared.faults.fail_writes.load(Ordering::Acquire) {
                return Err("injected write failure".into());
            }
            for (seq, v) in encoded.iter().take(accepted) {
                active
                    .db
                    .insert(format::key(*seq), v.as_slice())
                    .map_err(|e| e.to_string())?;
            }
            if self.shared.faults.fail_flush.load(Ordering::Acquire) {
                return Err("injected flush failure".into());
            }
            active.flush().map_err(|e| e.to_string())
        })();
        if let Err(e) = write {
            self.suspect = true;
            let err = self.ctx_err("writing the buffer", e);
            for r in group {
                let _ = r.resp.send(Err(err.clone()));
            }
            return;
        }
        self.shared.metrics.flushes.inc();
        self.shared.writable.store(true, Ordering::Release);
        let points: u64 = group.iter().map(|r| r.points).sum();
        let first_seq = encoded.first().map(|e| e.0).unwrap_or(0);
        let mut st = shared.lock();
        if st.head == first_seq {
            // Was empty: the new head is the first entry of this group.
            st.head_appended_ms = Some(now);
            st.head_points_before = st.durable_points;
            st.head_stale = false;
        }
        st.durable_next = first_seq + group.len() as u64;
        st.durable_points += points;
        if let Some(last) = st.segs.last_mut() {
            // Estimated as the space check does; housekeeping re-reads it from disk
            // every second (walking the directory on every commit cost more CPU
            // than the commit's compression).
            last.bytes += encoded
                .iter()
                .take(accepted)
                .map(|(_, v)| entry_cost(v))
                .sum::<u64>();
        }
        let active_bytes = st.segs.last().map(|s| s.bytes).unwrap_or(0);
        if active_bytes >= self.shared.cfg.segment_size {
            if let Err(e) = self.roll(&mut st) {
                warn!(error = %e, "edgewatch buffer: could not roll to a new segment");
            }
        }
        st.update_gauges(&self.shared.metrics);
        let durable = st.durable_next;
        drop(st);
        self.shared.metrics.appended_points.inc_by(points);
        self.shared.durable_tx.send_replace(durable);
        for (i, r) in group.into_iter().enumerate() {
            let _ = r.resp.send(Ok(first_seq + i as u64));
        }
    }

    /// Persists the checkpoint, then deletes segment directories.
    fn delete_segments(&mut self, st: &mut State, dirs: Vec<std::path::PathBuf>) {
        let m = st.meta(&self.shared.instance_id);
        if let Err(e) = meta::write(&self.shared.cfg.path, &m) {
            // Without the checkpoint a restart could replay deleted seqs'
            // neighbours, but never reuse numbers (the active segment's name
            // carries the floor). Delete anyway: the disk cap matters more.
            warn!(error = %e, "edgewatch buffer: could not write meta before deleting segments");
        } else {
            st.meta_dirty = false;
            self.last_meta = Instant::now();
        }
        st.pending_deletes.extend(dirs);
        let mut failed = Vec::new();
        for d in st.pending_deletes.drain(..) {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(dir = %d.display(), error = %e, "edgewatch buffer: could not delete segment");
                    failed.push(d);
                }
            }
        }
        st.pending_deletes = failed;
        let _ = meta::sync_dir(&self.shared.cfg.segments_dir);
    }

    fn housekeeping(&mut self, force: bool) {
        let shared = self.shared.clone();
        let ctx = shared.ctx();
        let mut st = shared.lock();
        st.refresh_head(&ctx);
        if force || self.last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
            self.last_housekeeping = Instant::now();
            if let Some(age) = self.shared.cfg.max_age {
                st.expire(&ctx, now_ms(), age.as_millis() as u64);
            }
            self.housekeeping_runs += 1;
            st.remeasure(self.housekeeping_runs.is_multiple_of(16));
        }
        // Drained: give the active segment's space back too.
        let drained = st.head >= st.durable_next;
        let active_big = st.segs.last().is_some_and(|s| s.bytes > DRAINED_ROLL_BYTES);
        if drained && active_big && !self.suspect && st.active.is_some() {
            if let Err(e) = self.roll(&mut st) {
                warn!(error = %e, "edgewatch buffer: could not roll after drain");
            }
        }
        let mut deletes = Vec::new();
        while st.segs.len() > 1 && st.segs[1].first <= st.head {
            let seg = st.segs.remove(0);
            st.forget_handle(seg.first);
            deletes.push(seg.dir);
        }
        if !deletes.is_empty() || !st.pending_deletes.is_empty() {
            self.delete_segments(&mut st, deletes);
        } else if st.meta_dirty && (force || self.last_meta.elapsed() >= META_EVERY) {
            let m = st.meta(&self.shared.instance_id);
            match meta::write(&self.shared.cfg.path, &m) {
                Ok(()) => st.meta_dirty = false,
                Err(e) => warn!(error = %e, "edgewatch buffer: could not write meta"),
            }
            self.last_meta = Instant::now();
        }
        st.update_gauges(&self.shared.metrics);
    }
}
