//! The writer thread: group commit, space and age limits, segment rolling
//! and deletion. The only code that writes to sled or to the directory.

use super::format::{self, Header};
use super::meta;
use super::metrics::REASON_FULL;
use super::segment::{dir_bytes, SegError, SegHandle};
use super::state::{now_ms, SegMeta, State};
use super::{BufferError, FullPolicy, Seq, Shared};
use bytes::Bytes;
use std::io;
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

/// A group ready to write: its encoded entries, of which the first `accepted`
/// fit under the space limit.
struct Prepared {
    active: Arc<SegHandle>,
    entries: Vec<(Seq, Vec<u8>)>,
    accepted: usize,
}

/// Answers every caller of a group with the error that stopped it.
fn fail_all(group: Vec<Request>, err: BufferError) {
    for r in group {
        let _ = r.resp.send(Err(err.clone()));
    }
}

/// How many of `entries`, in order, fit under `max` on top of `total` bytes.
fn fitting(mut total: u64, max: u64, entries: &[(Seq, Vec<u8>)]) -> usize {
    let mut n = 0;
    for (_, v) in entries {
        if total + entry_cost(v) > max {
            break;
        }
        total += entry_cost(v);
        n += 1;
    }
    n
}

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
            warn!(error = %e, "could not write meta at close");
        }
        st.active = None;
        st.read_cache = None;
        st.sealed.clear();
        st.open.clear();
    }

    /// Counts and logs a failed write, marks the buffer unwritable, and gives the
    /// error every waiter of the group is answered with.
    fn fail(&self, context: &str, e: io::Error) -> BufferError {
        self.shared.metrics.write_errors.inc();
        self.shared.writable.store(false, Ordering::Release);
        error!(error = %e, "{context} failed");
        BufferError::io(context, e)
    }

    /// Reopens the active segment after a failed write and removes anything
    /// past the durable watermark, so failed entries never resurface.
    fn recover(&mut self, st: &mut State) -> io::Result<()> {
        let Some(seg) = st.segs.last() else {
            return Err(io::Error::other("no active segment"));
        };
        let (dir, first) = (seg.dir.clone(), seg.first);
        if let Some(old) = st.active.take() {
            if st.read_cache.as_ref().is_some_and(|h| h.first == first) {
                st.read_cache = None;
            }
            drop(old);
        }
        self.compressor = None;
        let h = SegHandle::open(&dir, first, true, false)?;
        let tail: Vec<_> =
            h.db.range(format::key(st.durable_next)..)
                .keys()
                .filter_map(|k| k.ok())
                .collect();
        for k in tail {
            h.db.remove(k)?;
        }
        h.flush()?;
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
    ) -> io::Result<&mut zstd::bulk::Compressor<'static>> {
        let c = match self.compressor.take() {
            Some((first, c)) if first == h.first => c,
            _ => {
                let dict = match h.dict.get() {
                    Some(d) => d,
                    None => {
                        let d = Arc::new(format::make_dictionary(sample));
                        h.store_dict(d.clone())?;
                        d
                    }
                };
                zstd::bulk::Compressor::with_dictionary(ZSTD_LEVEL, &dict)?
            }
        };
        Ok(&mut self.compressor.insert((h.first, c)).1)
    }

    /// Writes a group of appends with one flush and answers each caller: its
    /// sequence number once durable, `Full` for what does not fit under
    /// `Backpressure`, or the error that stopped the group.
    fn commit(&mut self, mut group: Vec<Request>) {
        let now = now_ms();
        let prepared = match self.prepare(&group, now) {
            Ok(Some(p)) => p,
            // No active segment left to write to: the callers see the buffer closed.
            Ok(None) => return,
            Err(err) => return fail_all(group, err),
        };
        for r in group.split_off(prepared.accepted) {
            let _ = r.resp.send(Err(BufferError::Full {
                retry_after: RETRY_AFTER,
            }));
        }
        if group.is_empty() {
            return;
        }
        let entries = &prepared.entries[..prepared.accepted];
        if let Err(e) = self.write(&prepared.active, entries) {
            self.suspect = true;
            let err = self.fail("writing the buffer", e);
            return fail_all(group, err);
        }
        let first_seq = self.make_durable(&group, entries, now);
        for (i, r) in group.into_iter().enumerate() {
            let _ = r.resp.send(Ok(first_seq + i as u64));
        }
    }

    /// Encodes the group against the active segment and makes room for it under
    /// the full policy (`DropOldest` may roll, then it encodes again against the
    /// new segment's dictionary).
    fn prepare(&mut self, group: &[Request], now: u64) -> Result<Option<Prepared>, BufferError> {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if self.suspect || st.active.is_none() {
            if let Err(e) = self.recover(&mut st) {
                return Err(self.fail("reopening the active segment", e));
            }
        }
        let mut rolled = false;
        loop {
            let Some(active) = st.active.clone() else {
                return Err(self.fail("writing", io::Error::other("no active segment")));
            };
            let (seq, points) = (st.durable_next, st.durable_points);
            // Encode without the lock (only this thread changes the watermark and
            // the segment): readers keep going.
            drop(st);
            let entries = self.encode(&active, group, seq, points, now)?;
            st = shared.lock();
            let accepted = match self.shared.cfg.policy {
                FullPolicy::DropOldest => {
                    self.drop_oldest_for(&mut st, &entries, &mut rolled);
                    let active_first = st.segs.last().map(|s| s.first);
                    if self.compressor.as_ref().map(|c| c.0) != active_first {
                        continue;
                    }
                    entries.len()
                }
                FullPolicy::Backpressure => {
                    fitting(st.total_bytes(), self.shared.cfg.max_bytes, &entries)
                }
            };
            return Ok(st.active.clone().map(|active| Prepared {
                active,
                entries,
                accepted,
            }));
        }
    }

    /// The group's entries, numbered from `seq`, compressed with the segment's
    /// dictionary.
    fn encode(
        &mut self,
        active: &SegHandle,
        group: &[Request],
        mut seq: Seq,
        mut points: u64,
        now: u64,
    ) -> Result<Vec<(Seq, Vec<u8>)>, BufferError> {
        let sample = group.first().map(|r| r.payload.clone()).unwrap_or_default();
        let c = match self.compressor_for(active, &sample) {
            Ok(c) => c,
            Err(e) => return Err(self.fail("preparing compression", e)),
        };
        let mut encoded = Vec::with_capacity(group.len());
        let mut failed = None;
        for r in group {
            let h = Header {
                points: r.points,
                points_before: points,
                appended_at_ms: now,
                raw_len: r.payload.len() as u64,
            };
            match format::encode(&h, &r.payload, c) {
                Ok(v) => encoded.push((seq, v)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            seq += 1;
            points += r.points;
        }
        match failed {
            Some(e) => Err(self.fail("compressing", e)),
            None => Ok(encoded),
        }
    }

    /// `DropOldest`: deletes whole oldest segments (rolling once if only the
    /// active one is left) until `entries` fit under `max_bytes`.
    fn drop_oldest_for(&mut self, st: &mut State, entries: &[(Seq, Vec<u8>)], rolled: &mut bool) {
        let max = self.shared.cfg.max_bytes;
        let needed: u64 = entries.iter().map(|(_, v)| entry_cost(v)).sum();
        let mut deletes = Vec::new();
        let mut dropped = 0u64;
        let shared = self.shared.clone();
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
            } else if !*rolled && st.durable_next > st.segs[0].first {
                if let Err(e) = self.roll(st) {
                    warn!(error = %e, "could not roll to make room");
                    break;
                }
                *rolled = true;
            } else {
                break;
            }
        }
        self.shared.metrics.dropped(REASON_FULL, dropped);
        if !deletes.is_empty() {
            self.delete_segments(st, deletes);
        }
    }

    /// Inserts the entries into the active segment and flushes it.
    fn write(&self, active: &SegHandle, entries: &[(Seq, Vec<u8>)]) -> io::Result<()> {
        if self.shared.faults.fail_writes.load(Ordering::Acquire) {
            return Err(io::Error::other("injected write failure"));
        }
        for (seq, v) in entries {
            active.db.insert(format::key(*seq), v.as_slice())?;
        }
        if self.shared.faults.fail_flush.load(Ordering::Acquire) {
            return Err(io::Error::other("injected flush failure"));
        }
        Ok(active.flush()?)
    }

    /// Moves the durable watermark past the written group, rolls a full segment
    /// and wakes the readers; returns the group's first sequence number.
    fn make_durable(&mut self, group: &[Request], entries: &[(Seq, Vec<u8>)], now: u64) -> Seq {
        self.shared.metrics.flushes.inc();
        self.shared.writable.store(true, Ordering::Release);
        let points: u64 = group.iter().map(|r| r.points).sum();
        let first_seq = entries.first().map(|e| e.0).unwrap_or(0);
        let shared = self.shared.clone();
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
            last.bytes += entries.iter().map(|(_, v)| entry_cost(v)).sum::<u64>();
        }
        let active_bytes = st.segs.last().map(|s| s.bytes).unwrap_or(0);
        if active_bytes >= self.shared.cfg.segment_size {
            if let Err(e) = self.roll(&mut st) {
                warn!(error = %e, "could not roll to a new segment");
            }
        }
        st.update_gauges(&self.shared.metrics);
        let durable = st.durable_next;
        drop(st);
        self.shared.metrics.appended_points.inc_by(points);
        self.shared.durable_tx.send_replace(durable);
        first_seq
    }

    /// Persists the checkpoint, then deletes segment directories.
    fn delete_segments(&mut self, st: &mut State, dirs: Vec<std::path::PathBuf>) {
        let m = st.meta(&self.shared.instance_id);
        if let Err(e) = meta::write(&self.shared.cfg.path, &m) {
            // Without the checkpoint a restart could replay deleted seqs'
            // neighbours, but never reuse numbers (the active segment's name
            // carries the floor). Delete anyway: the disk cap matters more.
            warn!(error = %e, "could not write meta before deleting segments");
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
                    warn!(dir = %d.display(), error = %e, "could not delete segment");
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
                warn!(error = %e, "could not roll after drain");
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
                Err(e) => warn!(error = %e, "could not write meta"),
            }
            self.last_meta = Instant::now();
        }
        st.update_gauges(&self.shared.metrics);
    }
}
