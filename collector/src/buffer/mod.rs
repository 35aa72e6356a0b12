//! The durable queue between the receivers and the forwarder.
//!
//! Design notes first, measured numbers at the end of this comment (from
//! `benches/buffer.rs` and the tests in `tests/buffer_queue.rs`).
//!
//! # Contract
//! * [`Buffer::append`] resolves only once the batch is flushed (fsync) to
//!   disk. Appends that arrive together share one flush (group commit): a
//!   dedicated writer thread takes everything queued (the queue is bounded
//!   to 64 MiB of payload by a semaphore), writes it, flushes once, then
//!   answers every caller. sled calls never run on runtime threads.
//! * Sequence numbers increase by one per entry and are never reused, across
//!   drains, deletions and restarts. `(instance_id, seq)` identifies a batch
//!   for the aggregator's replay de-duplication.
//! * [`Buffer::read`] returns only flushed entries, so nothing the forwarder
//!   has sent can disappear in a crash and have its number reused.
//!
//! # On disk (format version 2)
//! ```text
//! <path>/meta.json                    version 2, instance id, resume checkpoint (head), number floors
//! <path>/segments/<first seq>-<points before>/     the active segment (one sled Db)
//! <path>/segments/<first seq>-<points before>.z/   a sealed, compacted segment (one sled Db)
//! <path>.corrupt-<unix secs>[-segment-<name>]      what recovery moved aside
//! ```
//! * Each segment is its own sled `Db` (cache 1 MiB, `flush_every_ms(None)`:
//!   we flush ourselves).
//! * The active segment: key = big-endian seq, value = a small varint header
//!   (points, points appended before this entry, append time, raw length)
//!   followed by the payload compressed with zstd (level 3) against a
//!   raw-content dictionary that is the segment's first payload. It rolls
//!   (is sealed) at `max_bytes/64` clamped to [256 KiB, 2 MiB] on disk, and
//!   also when the queue is fully drained and it holds more than 256 KiB,
//!   so a drain gives the disk back.
//! * Sealed segments are compacted by their own thread (`compact.rs`): the
//!   entries are rewritten into a new sled Db as at most 8 *blocks* (value
//!   = the entries' headers, then one zstd level-12 frame over their
//!   concatenated payloads, ~1 MiB of payload per block, zstd's tables
//!   capped at 2^20 entries so a compaction holds ~10 MiB, not ~50),
//!   fsynced, renamed `<name>.z` into place, and the original deleted.
//!   Compaction starts only once the forwarder has acknowledged nothing for
//!   5 s (the core is unreachable): while it answers, sealed segments are
//!   drained within seconds and compacting them would be wasted work and
//!   memory during the drain. Two measured reasons for compaction:
//!   compressing hundreds of consecutive OTLP batches together beats one
//!   batch against a dictionary, and sled 0.34 writes a Db of at most 8
//!   values exactly once (it appends each insert as a delta and rewrites a
//!   whole leaf after 10 deltas or at 17 items; with one value per entry the
//!   active segment holds ~2x the encoded bytes until its cleaner runs).
//!   Compacted Dbs use 8 KiB sled log segments, so blocks are blob files
//!   and reopening (sled resumes at its next log segment) adds little.
//!   A crash mid-compaction leaves `<name>.compacting` (deleted at open) or
//!   both `<name>` and `<name>.z` (the original is deleted at open).
//!   Appends never wait for compaction.
//! * A directory of another format version (e.g. version 1, before
//!   compaction) is moved aside like a corrupt one, never misread.
//! * Entries are never deleted inside a segment (sled does not give that
//!   space back). Acknowledging moves the `head` watermark; a segment whose
//!   entries are all below `head` is deleted as a directory.
//! * `max_bytes` is measured on disk (sum of file sizes under `segments/`,
//!   including a compacted copy being written). Before each group commit
//!   the writer estimates its size (encoded bytes times sled's space
//!   amplification). `DropOldest` then deletes whole oldest segments
//!   (counting their unacknowledged points exactly from the `points before`
//!   counters: no scan); `Backpressure` refuses what does not fit with
//!   [`BufferError::Full`].
//! * `max_age` moves `head` past entries appended longer ago, checked every
//!   second and at each `read`.
//! * Only the active segment, the one being read, the one being compacted
//!   and up to 4 sealed ones waiting for compaction are open; bookkeeping is
//!   O(segments), never O(entries), and `read` streams with sled iterators
//!   (a compacted block is decompressed once, ~1 MiB, and cached for the
//!   next read).
//! * Recovery: a directory that cannot be opened (bad `meta.json`, sled error
//!   or panic on the active segment) is renamed to `<path>.corrupt-<secs>` and
//!   a fresh buffer started; a sealed segment found corrupt while reading is
//!   renamed aside alone and its points counted as dropped (`corrupt`).
//! * A failed write (disk full, read-only, I/O error) answers
//!   [`BufferError::Io`], marks the buffer unwritable, and the next group
//!   reopens the active segment and trims anything past the durable
//!   watermark before writing again. A failed compaction leaves the sealed
//!   segment as it is and is retried after 30 s.
//!
//! # Measured (2-core VM, ext4, release build unless noted)
//! * Payloads (`edgewatch_testkit::payloads`), 100 points each (10 metrics x 10 series):
//!   `otlp_100_points`, random gauge values (near worst case): protobuf
//!   97.5 B/point; zstd-3 per batch 14.2; zstd-3 with the segment
//!   dictionary 8.9; one zstd-12 frame over 4 MiB of batches 6.7 (zstd-19:
//!   5.8, ~20x slower). `otlp_100_points_typical` (integer counters, a
//!   12-bucket histogram, few-valued gauges): protobuf 118.8; dictionary
//!   13.2; 4 MiB zstd-12 block 7.6.
//! * On disk incl. sled, 4000 x 100 points, 32 MiB cap (test
//!   `disk_per_data_point`, debug build), with 1 MiB blocks and capped
//!   tables: random gauges 7.27 B/point once sealed segments are compacted
//!   (a few seconds; 9-14 right after the appends, when most of it still
//!   waits in uncompacted segments), typical payload 8.8 B/point (17-27
//!   before compaction). With 4 MiB blocks and level 12's own tables:
//!   7.07 / 8.9. Before compaction existed: 22.5 B/point (random gauges).
//! * Append + flush (criterion, `benches/buffer.rs`): see BENCHMARKS.md.
//! * After acknowledging everything: the directory returns to ~200 KB at
//!   most (meta.json plus the active segment) from 5 MB.

mod compact;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod meta;
mod metrics;
mod segment;
mod state;
mod writer;

#[cfg(test)]
mod tests;

pub use edgewatch_config::collector::FullPolicy;

use bytes::Bytes;
use segment::{SegError, SegHandle};
use state::{Ctx, SegMeta, State};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::{error, info, warn};
use writer::{Msg, Request, Writer};

pub type Seq = u64;

pub struct BufferOptions {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub full_policy: FullPolicy,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: Seq,
    pub points: u64,
    pub appended_at_ms: u64,
    /// As given to `append`, uncompressed.
    pub payload: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// On disk.
    pub bytes: u64,
    pub entries: u64,
    pub oldest_appended_at_ms: Option<u64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BufferError {
    /// Backpressure policy and no room: answer RESOURCE_EXHAUSTED / 429 with Retry-After.
    #[error("buffer full, retry after {retry_after:?}")]
    Full { retry_after: Duration },
    /// Write failed (disk full, read-only, I/O error): answer UNAVAILABLE / 503; retryable.
    /// Shared (`Arc`) because one failed group commit answers every waiter with it.
    #[error("buffer i/o error: {context}: {source}")]
    Io {
        /// What the buffer was doing, with the path where one is involved.
        context: String,
        source: Arc<std::io::Error>,
    },
    #[error("buffer closed")]
    Closed,
}

/// A segment that cannot be read: reported with what went wrong; corruption as
/// `InvalidData`.
impl From<SegError> for BufferError {
    fn from(e: SegError) -> BufferError {
        match e {
            SegError::Io { context, source } => BufferError::Io {
                context,
                source: Arc::new(source),
            },
            corrupt => BufferError::io("reading the buffer", corrupt),
        }
    }
}

impl BufferError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        BufferError::Io {
            context: context.into(),
            source: Arc::new(source.into()),
        }
    }
}

/// Switches for tests: make the next writes or flushes fail.
#[derive(Default)]
pub(crate) struct FaultInjector {
    pub fail_writes: AtomicBool,
    pub fail_flush: AtomicBool,
}

pub(crate) struct Config {
    pub path: PathBuf,
    pub segments_dir: PathBuf,
    pub max_bytes: u64,
    pub policy: FullPolicy,
    pub max_age: Option<Duration>,
    pub segment_size: u64,
}

pub(crate) struct Shared {
    pub cfg: Config,
    pub instance_id: String,
    state: Mutex<State>,
    pub metrics: metrics::Metrics,
    pub durable_tx: watch::Sender<u64>,
    pub closed: AtomicBool,
    pub writable: AtomicBool,
    pub wake_pending: AtomicBool,
    pub faults: FaultInjector,
    /// Wakes the compaction thread (a segment was sealed, or closing).
    compact_signal: (Mutex<bool>, Condvar),
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn compact_notify(&self) {
        let (m, c) = &self.compact_signal;
        match m.lock() {
            Ok(mut g) => *g = true,
            Err(p) => *p.into_inner() = true,
        }
        c.notify_all();
    }

    /// Waits for `compact_notify` (or `timeout`).
    pub fn compact_wait(&self, timeout: Duration) {
        let (m, c) = &self.compact_signal;
        let mut g = match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !*g {
            g = match c.wait_timeout(g, timeout) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *g = false;
    }

    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            path: &self.cfg.path,
            metrics: &self.metrics,
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    permits: Arc<Semaphore>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    compactor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Queue memory bound: at most this many 4 KiB units of payload waiting for
/// the writer (64 MiB); further appends wait (asynchronously) for room.
const PERMIT_UNITS: usize = 16 * 1024;

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.compact_notify();
        let compactor = match self.compactor.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(h) = compactor {
            join_within(h, "compaction");
        }
        let handle = match self.writer.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(h) = handle {
            let _ = self.tx.send(Msg::Close);
            join_within(h, "writer");
        }
        self.permits.close();
        self.shared.durable_tx.send_modify(|_| {});
    }
}

/// How long closing waits for each buffer thread.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Joins a buffer thread, waiting at most [`CLOSE_WAIT`]. After a full disk, sled's
/// flush-on-drop can block a thread for good; waiting for it would turn a clean stop
/// into a hang. Leaving it to process exit loses nothing: everything acknowledged was
/// flushed before it was acknowledged, and the on-disk format recovers from an abrupt
/// end as from a crash.
fn join_within(handle: std::thread::JoinHandle<()>, what: &str) {
    let deadline = std::time::Instant::now() + CLOSE_WAIT;
    while !handle.is_finished() {
        if std::time::Instant::now() >= deadline {
            warn!(
                thread = what,
                "buffer thread did not stop within {CLOSE_WAIT:?}; leaving it to process exit"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if handle.join().is_err() {
        error!(thread = what, "buffer thread panicked");
    }
}

#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("path", &self.inner.shared.cfg.path)
            .field("instance_id", &self.inner.shared.instance_id)
            .finish()
    }
}

/// The active segment rolls (is sealed, then compacted) at this size on
/// disk: small, because it holds entries at ~2x their encoded size.
fn segment_size_for(max_bytes: u64) -> u64 {
    (max_bytes / 64).clamp(256 << 10, 2 << 20)
}

/// Opens the directory. `Corrupt` means: move it aside and start fresh.
fn try_open(cfg: &Config) -> Result<(String, State), SegError> {
    std::fs::create_dir_all(&cfg.path)
        .map_err(|e| SegError::io(format!("creating {}", cfg.path.display()), e))?;
    let m = match meta::read(&cfg.path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(SegError::Corrupt(format!("meta.json: {e}")))
        }
        Err(e) => return Err(SegError::io("reading meta.json", e)),
    };
    let mut segs = list_segments(cfg)?;
    let m = checked_meta(cfg, m, segs.is_empty())?;
    let (durable_next, durable_points, active) = open_active(cfg, &mut segs, &m)?;
    let (head, head_points) = resume_head(&segs, &m, durable_next, durable_points);
    let st = State {
        segs,
        active: Some(active),
        open: Vec::new(),
        read_cache: None,
        head,
        head_points_before: head_points,
        head_appended_ms: None,
        head_stale: true,
        durable_next,
        durable_points,
        meta_dirty: true,
        pending_deletes: Vec::new(),
        sealed: Vec::new(),
        compacting_bytes: 0,
        last_ack: None,
    };
    Ok((m.instance_id, st))
}

/// The segments under `segments/`, oldest first, without what a crash during
/// compaction left behind (deleted here).
fn list_segments(cfg: &Config) -> Result<Vec<SegMeta>, SegError> {
    let dir = &cfg.segments_dir;
    let io = |what: &str, e: std::io::Error| SegError::io(format!("{what} {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
    let mut segs: Vec<SegMeta> = Vec::new();
    let mut leftovers = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io("listing", e))? {
        let e = e.map_err(|e| io("listing", e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(format::COMPACTING_SUFFIX) && e.path().is_dir() {
            // A compaction interrupted by a crash: the original is intact.
            leftovers.push(e.path());
            continue;
        }
        match format::parse_segment_name(&name) {
            Some((first, points_before, compacted)) if e.path().is_dir() => segs.push(SegMeta {
                first,
                points_before,
                dir: e.path(),
                bytes: segment::dir_bytes(&e.path()),
                compacted,
            }),
            _ => {
                return Err(SegError::Corrupt(format!(
                    "unexpected entry in segments/: {name}"
                )))
            }
        }
    }
    // Compacted first: a crash after the compacted copy was renamed into
    // place but before the original was deleted leaves both; keep the copy.
    segs.sort_by_key(|s| (s.first, !s.compacted));
    let mut kept: Vec<SegMeta> = Vec::with_capacity(segs.len());
    for s in segs {
        match kept.last() {
            Some(k) if k.first == s.first => leftovers.push(s.dir),
            _ => kept.push(s),
        }
    }
    for d in leftovers {
        std::fs::remove_dir_all(&d).map_err(|e| {
            SegError::io(
                format!("removing the leftover segment copy {}", d.display()),
                e,
            )
        })?;
    }
    kept.sort_by_key(|s| s.first);
    Ok(kept)
}

/// The checkpoint read from `meta.json`, or a new one for an empty directory.
fn checked_meta(
    cfg: &Config,
    m: Option<meta::Meta>,
    no_segments: bool,
) -> Result<meta::Meta, SegError> {
    let m = match m {
        Some(m) => m,
        None if no_segments => {
            let m = meta::Meta {
                version: meta::VERSION,
                instance_id: uuid::Uuid::new_v4().to_string(),
                head: 0,
                head_points_before: 0,
                next_seq_floor: 0,
                next_points_floor: 0,
            };
            meta::write(&cfg.path, &m).map_err(|e| SegError::io("writing meta.json", e))?;
            m
        }
        None => return Err(SegError::Corrupt("segments without meta.json".into())),
    };
    if m.version != meta::VERSION {
        return Err(SegError::Corrupt(format!(
            "meta.json: on-disk format version {} (this edgewatch reads {})",
            m.version,
            meta::VERSION
        )));
    }
    if m.instance_id.is_empty() {
        return Err(SegError::Corrupt("meta.json: unsupported content".into()));
    }
    Ok(m)
}

/// Opens the active segment (the last one, or a new one at the persisted number
/// floor) and returns the next sequence number, the points before it, and the handle.
fn open_active(
    cfg: &Config,
    segs: &mut Vec<SegMeta>,
    m: &meta::Meta,
) -> Result<(Seq, u64, Arc<SegHandle>), SegError> {
    // The active (last) segment: its last entry gives the next number.
    let mut durable_next = m.next_seq_floor;
    let mut durable_points = m.next_points_floor;
    if let Some(last) = segs.last() {
        let h = SegHandle::open(&last.dir, last.first, false, last.compacted)?;
        let (n, p) = match h.last_entry()? {
            Some((seq, hd)) => {
                if seq < last.first {
                    return Err(SegError::Corrupt("entry below its segment".into()));
                }
                (seq + 1, hd.points_before + hd.points)
            }
            None => (last.first, last.points_before),
        };
        if n >= durable_next {
            durable_next = n;
            durable_points = p.max(durable_points);
            if !last.compacted {
                return Ok((durable_next, durable_points, h));
            }
            // Only sealed segments are compacted: start a new active one.
        }
    }
    // No segment, or numbers on disk below the persisted floor: start a
    // new segment at the floor (numbers stay contiguous per segment).
    let dir = cfg
        .segments_dir
        .join(format::segment_name(durable_next, durable_points, false));
    let h = SegHandle::open(&dir, durable_next, true, false)?;
    let _ = meta::sync_dir(&cfg.segments_dir);
    segs.push(SegMeta {
        first: durable_next,
        points_before: durable_points,
        dir: dir.clone(),
        bytes: segment::dir_bytes(&dir),
        compacted: false,
    });
    Ok((durable_next, durable_points, h))
}

/// Where reading resumes: the checkpoint, moved into the segments on disk.
fn resume_head(
    segs: &[SegMeta],
    m: &meta::Meta,
    durable_next: Seq,
    durable_points: u64,
) -> (Seq, u64) {
    let (mut head, mut head_points) = (m.head, m.head_points_before);
    if let Some(s) = segs.first() {
        if s.first > head {
            head = s.first;
            head_points = s.points_before;
        }
    }
    if head >= durable_next {
        head = durable_next;
        head_points = durable_points;
    }
    (head, head_points)
}

/// Opens the directory, moving it aside and starting empty if it is corrupt.
fn open_or_start_fresh(
    cfg: &Config,
    metrics: &metrics::Metrics,
) -> Result<(String, State), BufferError> {
    let why = match try_open(cfg) {
        Ok(v) => return Ok(v),
        Err(SegError::Corrupt(why)) => why,
        Err(io) => return Err(io.into()),
    };
    let aside = state::aside_path(&cfg.path, "");
    std::fs::rename(&cfg.path, &aside).map_err(|e| {
        BufferError::io(
            format!(
                "buffer {} is corrupt ({why}) and could not be moved aside",
                cfg.path.display()
            ),
            e,
        )
    })?;
    error!(
        path = %cfg.path.display(),
        moved_to = %aside.display(),
        reason = %why,
        "corrupt buffer directory moved aside; starting empty"
    );
    metrics.corruptions.inc();
    try_open(cfg).map_err(|e| {
        BufferError::io(
            format!("starting an empty buffer at {}", cfg.path.display()),
            e,
        )
    })
}

impl Buffer {
    pub fn open(
        opts: BufferOptions,
        registry: &prometheus::Registry,
    ) -> Result<Buffer, BufferError> {
        let metrics = metrics::Metrics::new()
            .map_err(|e| BufferError::io("creating metrics", std::io::Error::other(e)))?;
        metrics
            .register(registry)
            .map_err(|e| BufferError::io("registering metrics", std::io::Error::other(e)))?;
        let cfg = Config {
            segments_dir: opts.path.join("segments"),
            path: opts.path,
            max_bytes: opts.max_bytes,
            policy: opts.full_policy,
            max_age: opts.max_age,
            segment_size: segment_size_for(opts.max_bytes),
        };
        let (instance_id, st) = open_or_start_fresh(&cfg, &metrics)?;
        let durable = st.durable_next;
        let shared = Arc::new(Shared {
            cfg,
            instance_id,
            state: Mutex::new(st),
            metrics,
            durable_tx: watch::Sender::new(durable),
            closed: AtomicBool::new(false),
            writable: AtomicBool::new(true),
            wake_pending: AtomicBool::new(false),
            faults: FaultInjector::default(),
            compact_signal: (Mutex::new(false), Condvar::new()),
        });
        {
            let ctx = shared.ctx();
            let mut st = shared.lock();
            st.refresh_head(&ctx);
            st.update_gauges(&shared.metrics);
            info!(
                path = %shared.cfg.path.display(),
                instance_id = %shared.instance_id,
                entries = st.entries(),
                bytes = st.total_bytes(),
                next_seq = st.durable_next,
                "buffer opened"
            );
        }
        let (tx, rx) = mpsc::channel();
        let w = Writer::new(shared.clone(), rx);
        let handle = std::thread::Builder::new()
            .name("edgewatch-buffer-writer".into())
            .spawn(move || w.run())
            .map_err(|e| BufferError::io("spawning the writer thread", e))?;
        let c_shared = shared.clone();
        let compactor = std::thread::Builder::new()
            .name("edgewatch-buffer-compact".into())
            .spawn(move || compact::run(c_shared))
            .map_err(|e| BufferError::io("spawning the compaction thread", e))?;
        Ok(Buffer {
            inner: Arc::new(Inner {
                shared,
                tx,
                permits: Arc::new(Semaphore::new(PERMIT_UNITS)),
                writer: Mutex::new(Some(handle)),
                compactor: Mutex::new(Some(compactor)),
            }),
        })
    }

    pub fn instance_id(&self) -> &str {
        &self.inner.shared.instance_id
    }

    pub fn path(&self) -> &Path {
        &self.inner.shared.cfg.path
    }

    /// Appends one batch; resolves with its sequence number once durable.
    pub async fn append(&self, points: u64, payload: Bytes) -> Result<Seq, BufferError> {
        let inner = &self.inner;
        if inner.shared.closed.load(Ordering::Acquire) {
            return Err(BufferError::Closed);
        }
        let units = (1 + payload.len() / 4096).min(PERMIT_UNITS) as u32;
        let permit = inner
            .permits
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| BufferError::Closed)?;
        let (resp, rx) = oneshot::channel();
        inner
            .tx
            .send(Msg::Append(Request {
                points,
                payload,
                resp,
                _permit: permit,
            }))
            .map_err(|_| BufferError::Closed)?;
        rx.await.map_err(|_| BufferError::Closed)?
    }

    /// Entries with `seq >= from`, in order: at most `max_entries`, and at
    /// most `max_bytes` of payload (but always at least one entry if any, even
    /// one over `max_bytes`).
    /// Blocking (disk reads): call it from `spawn_blocking`.
    pub fn read(
        &self,
        from: Seq,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, BufferError> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(BufferError::Closed);
        }
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        if max_entries == 0 {
            return Ok(out);
        }
        let ctx = shared.ctx();
        if let Some(age) = shared.cfg.max_age {
            let mut st = shared.lock();
            st.expire(&ctx, state::now_ms(), age.as_millis() as u64);
            st.update_gauges(&shared.metrics);
        }
        loop {
            let (h, end, seg_first, is_active) = match self.segment_at(&ctx, &mut next) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) if out.is_empty() => return Err(e.into()),
                Err(_) => break,
            };
            let mut full = false;
            let scanned = h.scan(next, end, true, &mut |seq, hd, payload| {
                let payload = payload.unwrap_or_default();
                // The limit is the forwarder's request size: an entry that would
                // take the batch over it starts the next batch instead.
                if !out.is_empty() && bytes.saturating_add(payload.len()) > max_bytes {
                    full = true;
                    return false;
                }
                bytes += payload.len();
                out.push(Entry {
                    seq,
                    points: hd.points,
                    appended_at_ms: hd.appended_at_ms,
                    payload: Bytes::from(payload),
                });
                next = seq + 1;
                full = out.len() >= max_entries || bytes >= max_bytes;
                !full
            });
            if full {
                return Ok(out);
            }
            let corrupt = match scanned {
                Err(e) => Some(e),
                Ok(()) if next < end => Some(SegError::Corrupt(format!("missing entry {next}"))),
                Ok(()) => None,
            };
            if let Some(why) = corrupt {
                if !out.is_empty() {
                    return Ok(out);
                }
                if is_active {
                    return Err(BufferError::io("reading the active segment", why));
                }
                let mut st = shared.lock();
                if let Some(i) = st.segs.iter().position(|s| s.first == seg_first) {
                    st.quarantine(&ctx, i, &why.to_string());
                    st.update_gauges(&shared.metrics);
                }
                drop(st);
                self.wake();
            }
        }
        Ok(out)
    }

    /// The segment holding `next` (moved up to the head and past empty ends): its
    /// handle, end, first seq and whether it is the active one. `None` once
    /// nothing durable is left to read. Corrupt sealed segments are moved aside.
    #[allow(clippy::type_complexity)]
    fn segment_at(
        &self,
        ctx: &Ctx<'_>,
        next: &mut Seq,
    ) -> Result<Option<(Arc<SegHandle>, Seq, Seq, bool)>, SegError> {
        let shared = &self.inner.shared;
        let mut st = shared.lock();
        loop {
            *next = (*next).max(st.head);
            if *next >= st.durable_next {
                return Ok(None);
            }
            let Some(i) = st.seg_index(*next) else {
                return Ok(None);
            };
            let end = st.seg_end(i).min(st.durable_next);
            if *next >= end {
                *next = end;
                continue;
            }
            match st.handle(i) {
                Ok(h) => return Ok(Some((h, end, st.segs[i].first, st.is_active(i)))),
                Err(SegError::Corrupt(why)) if !st.is_active(i) => {
                    st.quarantine(ctx, i, &why);
                    st.update_gauges(&shared.metrics);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Returns once an entry with `seq >= from` is durable (or at close).
    pub async fn wait_for_entries(&self, from: Seq) {
        let shared = &self.inner.shared;
        let mut rx = shared.durable_tx.subscribe();
        loop {
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            {
                let st = shared.lock();
                if st.durable_next > from.max(st.head) {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Everything with `seq <= through` is delivered: forget it.
    pub fn ack(&self, through: Seq) -> Result<(), BufferError> {
        let shared = &self.inner.shared;
        {
            let mut st = shared.lock();
            let new_head = through.saturating_add(1).min(st.durable_next);
            if new_head > st.head {
                st.set_head(new_head, 0, None);
                st.head_stale = true;
                st.last_ack = Some(std::time::Instant::now());
                st.update_gauges(&shared.metrics);
            }
        }
        self.wake();
        Ok(())
    }

    fn wake(&self) {
        if !self.inner.shared.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.inner.tx.send(Msg::Wake);
        }
    }

    pub fn first_seq(&self) -> Option<Seq> {
        let st = self.inner.shared.lock();
        (st.head < st.durable_next).then_some(st.head)
    }

    pub fn stats(&self) -> Stats {
        let st = self.inner.shared.lock();
        let entries = st.entries();
        Stats {
            bytes: st.total_bytes(),
            entries,
            oldest_appended_at_ms: if entries > 0 {
                st.head_appended_ms
            } else {
                None
            },
        }
    }

    pub fn writable(&self) -> bool {
        self.inner.shared.writable.load(Ordering::Acquire)
    }

    /// Flushes, stops the writer and closes the files. Later calls get `Closed`.
    pub fn close(&self) {
        self.inner.close();
    }

    #[cfg(test)]
    pub(crate) fn faults(&self) -> &FaultInjector {
        &self.inner.shared.faults
    }
}
