//! The aggregator's write-ahead log: every sample written to the store, durable
//! before the collector that sent it is acknowledged.
//!
//! One sled database (`wal.path`) holds, in one tree:
//! - `r` + seq (u64, big endian): a [`record`] — the samples of one ingest or rule round;
//! - `d` + collector id: that collector's replay window (`ingest/dedup.rs`);
//! - `c` + reader name: the next seq that reader (a remote_write endpoint) sends.
//!
//! A forwarded batch's record and its collector's new replay window go into one
//! atomic sled batch, fsynced before the answer, so after a crash a batch is either
//! in the log and known as a replay, or in neither and accepted again. Appends from
//! all connections meet in one writer thread (group commit, as the collector's buffer
//! does): one fsync covers every batch that arrived while the previous one ran.
//!
//! Each reader keeps its own cursor, so a slow endpoint holds back nobody but
//! itself; only the caps (`wal.max_bytes`, `wal.max_age`) cut the log under it,
//! and what it loses then is counted per reader. On start the store is rebuilt from
//! the recent records ([`Wal::replay`]), as Prometheus replays its WAL into the head.

pub mod record;
mod trim;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use record::{Record, RecordError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

pub use trim::Limits;

const RECORD: u8 = b'r';
const WINDOW: u8 = b'd';
const CURSOR: u8 = b'c';
/// Appends waiting for the writer at most; a full queue is backpressure.
const QUEUE: usize = 4096;
/// Appends merged into one sled batch at most.
const GROUP: usize = 512;
/// How long a group commit waits for more appends after the first, once appends
/// come concurrently. Every commit costs a sled flush, an fsync and a wake-up round
/// of the writer and its waiters; on one core under a hundred senders, 10 ms gave
/// 1.09 M points/s against 0.94 M at 0.5 ms (BENCHMARKS.md, S4), and it is far below
/// any sender's timeout.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("write-ahead log: {0}")]
    Write(#[from] sled::Error),
    #[error("write-ahead log writer stopped")]
    Stopped,
    #[error("write-ahead log queue is full")]
    Full,
    #[error("moving the corrupt write-ahead log aside: {0}")]
    MoveAside(std::io::Error),
    #[error("starting the write-ahead log writer: {0}")]
    Thread(std::io::Error),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What one append asks the writer to make durable.
struct Append {
    record: Option<Vec<u8>>,
    window: Option<(Vec<u8>, Vec<u8>)>,
    done: Option<Done>,
}

/// Who waits for an append: a blocking thread or a task.
enum Done {
    Thread(mpsc::SyncSender<Result<u64, WalError>>),
    Task(tokio::sync::oneshot::Sender<Result<u64, WalError>>),
}

impl Done {
    fn send(self, answer: Result<u64, WalError>) {
        match self {
            Done::Thread(tx) => drop(tx.send(answer)),
            Done::Task(tx) => drop(tx.send(answer)),
        }
    }
}

pub struct Wal {
    db: sled::Db,
    tree: sled::Tree,
    tx: Mutex<Option<mpsc::SyncSender<Append>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// One past the newest durable record; readers wait on its changes.
    end: tokio::sync::watch::Sender<u64>,
    bytes: AtomicU64,
    readers: Mutex<Vec<Arc<ReaderState>>>,
    metrics: Metrics,
}

#[derive(Clone)]
struct Metrics {
    bytes: IntGauge,
    records: IntCounter,
    fsyncs: IntCounter,
    failures: IntCounter,
    dropped: IntCounterVec,
    corrupt: IntCounter,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            bytes: IntGauge::new("edgewatch_wal_bytes", "Bytes of records in the write-ahead log.")?,
            records: IntCounter::new(
                "edgewatch_wal_records_total",
                "Records appended to the write-ahead log.",
            )?,
            fsyncs: IntCounter::new(
                "edgewatch_wal_fsyncs_total",
                "Group commits of the write-ahead log (one fsync each).",
            )?,
            failures: IntCounter::new(
                "edgewatch_wal_write_failures_total",
                "Group commits that failed (disk full, I/O error); their senders were told to retry.",
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "edgewatch_wal_dropped_samples_total",
                    "Samples cut from the write-ahead log before a remote_write endpoint sent them, by reason (max_bytes, max_age, corrupt).",
                ),
                &["url", "reason"],
            )?,
            corrupt: IntCounter::new(
                "edgewatch_wal_corruptions_total",
                "Corrupt write-ahead logs moved aside at start, and corrupt records skipped.",
            )?,
        };
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.fsyncs.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.corrupt.clone()))?;
        Ok(m)
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [RECORD; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(k: &[u8]) -> u64 {
    be_u64(k.get(1..).unwrap_or_default())
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if b.len() == 8 {
        a.copy_from_slice(b);
    }
    u64::from_be_bytes(a)
}

impl Wal {
    /// Opens (or creates) the log. A log sled cannot open is moved aside as
    /// `<path>.corrupt-<unix seconds>` and counted, and an empty one is started.
    pub fn open(path: &Path, registry: &Registry) -> Result<Arc<Wal>, WalError> {
        let metrics = Metrics::new(registry)?;
        let db = match open_db(path) {
            Ok(db) => db,
            Err(e @ (sled::Error::Corruption { .. } | sled::Error::Unsupported(_))) => {
                let aside = moved_aside(path);
                tracing::error!(error = %e, path = %path.display(), aside = %aside.display(),
                    "write-ahead log is corrupt; moved aside, starting an empty one");
                std::fs::rename(path, &aside).map_err(WalError::MoveAside)?;
                metrics.corrupt.inc();
                open_db(path).map_err(|source| open_error(path, source))?
            }
            Err(source) => return Err(open_error(path, source)),
        };
        let tree = db
            .open_tree("wal")
            .map_err(|source| open_error(path, source))?;
        let (next, bytes) = scan(&tree)?;
        metrics.bytes.set(bytes as i64);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (end, _) = tokio::sync::watch::channel(next);
        let wal = Arc::new(Wal {
            db,
            tree,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            end,
            bytes: AtomicU64::new(bytes),
            readers: Mutex::new(Vec::new()),
            metrics,
        });
        let w = wal.clone();
        let handle = std::thread::Builder::new()
            .name("edgewatch-wal".into())
            .spawn(move || w.write_loop(rx, next))
            .map_err(WalError::Thread)?;
        *lock(&wal.writer) = Some(handle);
        Ok(wal)
    }

    /// Appends a record together with a collector's new replay window, and
    /// returns once both are durable. Blocking: call from a blocking thread.
    pub fn append_durable(
        &self,
        record: Option<Vec<u8>>,
        window: Option<(&str, Vec<u8>)>,
    ) -> Result<u64, WalError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Append {
            record,
            window: window.map(|(id, w)| (key(WINDOW, id.as_bytes()), w)),
            done: Some(Done::Thread(done)),
        })?;
        wait.recv().map_err(|_| WalError::Stopped)?
    }

    /// [`Wal::append_durable`] for a task: the returned future resolves once the
    /// record (and the window, if any) is durable; no thread waits meanwhile.
    pub fn append_durable_async(
        &self,
        record: Option<Vec<u8>>,
        window: Option<(&str, Vec<u8>)>,
    ) -> Result<impl std::future::Future<Output = Result<u64, WalError>>, WalError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Append {
            record,
            window: window.map(|(id, w)| (key(WINDOW, id.as_bytes()), w)),
            done: Some(Done::Task(done)),
        })?;
        Ok(async move { wait.await.map_err(|_| WalError::Stopped)? })
    }

    /// Appends a record without waiting for it to be durable (rule rounds, status
    /// series: re-derived after a crash anyway, but sent to remote_write).
    pub fn append(&self, record: Vec<u8>) -> Result<(), WalError> {
        self.send(Append {
            record: Some(record),
            window: None,
            done: None,
        })
    }

    fn send(&self, a: Append) -> Result<(), WalError> {
        let tx = lock(&self.tx).clone().ok_or(WalError::Stopped)?;
        tx.try_send(a).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => WalError::Full,
            mpsc::TrySendError::Disconnected(_) => WalError::Stopped,
        })
    }

    /// A collector's persisted replay window.
    pub fn window(&self, collector_id: &str) -> Result<Option<sled::IVec>, WalError> {
        Ok(self.tree.get(key(WINDOW, collector_id.as_bytes()))?)
    }

    /// Every persisted replay window: collector id and value.
    pub fn windows(&self) -> Vec<(Vec<u8>, sled::IVec)> {
        self.tree
            .scan_prefix([WINDOW])
            .filter_map(Result::ok)
            .map(|(k, v)| (k[1..].to_vec(), v))
            .collect()
    }

    /// Replaces a collector's persisted window by `new` (removes it with `None`)
    /// if it still holds `seen`; false when a batch moved it meanwhile.
    pub fn swap_window(
        &self,
        collector_id: &[u8],
        seen: &[u8],
        new: Option<Vec<u8>>,
    ) -> Result<bool, WalError> {
        let swapped = self
            .tree
            .compare_and_swap(key(WINDOW, collector_id), Some(seen), new)?;
        Ok(swapped.is_ok())
    }

    /// Copies replay windows kept by an older version in `state`'s `dedup` tree,
    /// once, then drops that tree.
    pub fn migrate_windows(&self, state: &sled::Db) -> Result<usize, WalError> {
        if !state.tree_names().iter().any(|n| n.as_ref() == b"dedup") {
            return Ok(0);
        }
        let old = state.open_tree("dedup")?;
        let mut n = 0;
        for kv in old.iter() {
            let (k, v) = kv?;
            let k = key(WINDOW, &k);
            if self.tree.get(&k)?.is_none() {
                self.tree.insert(k, v)?;
                n += 1;
            }
        }
        self.tree.flush()?;
        state.drop_tree("dedup")?;
        Ok(n)
    }

    /// Rebuilds the store from records created at or after `since_ms`: each sample
    /// is written with its original timestamp and its record's arrival time.
    pub fn replay(&self, since_ms: i64, mut each: impl FnMut(&Record)) -> usize {
        let mut samples = 0;
        for (seq, raw) in self.records_from(self.first_seq()) {
            match record::header(&raw) {
                Ok((created, _)) if created < since_ms => continue,
                _ => {}
            }
            match Record::decode(&raw) {
                Ok(r) => {
                    samples += r.len();
                    each(&r);
                }
                Err(e) => self.skip_corrupt(seq, &e),
            }
        }
        samples
    }

    fn skip_corrupt(&self, seq: u64, e: &RecordError) {
        tracing::error!(seq, error = %e, "write-ahead log record is corrupt; skipped");
        self.metrics.corrupt.inc();
    }

    fn first_seq(&self) -> u64 {
        self.tree
            .scan_prefix([RECORD])
            .keys()
            .next()
            .and_then(Result::ok)
            .map(|k| seq_of(&k))
            .unwrap_or_else(|| *self.end.borrow())
    }

    fn records_from(&self, seq: u64) -> impl Iterator<Item = (u64, sled::IVec)> + '_ {
        self.tree
            .range(record_key(seq)..record_key(u64::MAX))
            .filter_map(|kv| match kv {
                Ok((k, v)) => Some((seq_of(&k), v)),
                Err(e) => {
                    tracing::error!(error = %e, "reading the write-ahead log");
                    None
                }
            })
    }

    /// A reader (one per remote_write endpoint) from its persisted position; a new
    /// reader starts at the end of the log. `label` names it in metrics (the URL).
    pub fn reader(self: &Arc<Self>, name: &str, label: &str) -> Result<Reader, WalError> {
        let ckey = key(CURSOR, name.as_bytes());
        let end = *self.end.borrow();
        let next = match self.tree.get(&ckey)? {
            Some(v) if v.len() == 8 => be_u64(&v),
            _ => {
                self.tree.insert(&ckey, &end.to_be_bytes())?;
                end
            }
        };
        let state = Arc::new(ReaderState {
            name: name.to_string(),
            label: label.to_string(),
            read: AtomicU64::new(next),
            committed: AtomicU64::new(next),
        });
        lock(&self.readers).push(state.clone());
        Ok(Reader {
            wal: self.clone(),
            state,
            next,
            end: self.end.subscribe(),
        })
    }

    /// Forgets cursors of readers not in `names` (endpoints removed from the
    /// configuration), so they no longer hold the log.
    pub fn retain_readers(&self, names: &[String]) -> Result<(), WalError> {
        for k in self.tree.scan_prefix([CURSOR]).keys() {
            let k = k?;
            if !names.iter().any(|n| n.as_bytes() == &k[1..]) {
                self.tree.remove(k)?;
            }
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Stops the writer after it has written what was queued, and flushes.
    pub fn close(&self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        for r in lock(&self.readers).iter() {
            let c = r.committed.load(Ordering::Relaxed);
            let _ = self
                .tree
                .insert(key(CURSOR, r.name.as_bytes()), &c.to_be_bytes());
        }
        if let Err(e) = self.db.flush() {
            tracing::warn!(error = %e, "flushing the write-ahead log at shutdown failed");
        }
    }

    fn write_loop(&self, rx: mpsc::Receiver<Append>, mut next: u64) {
        // A lone sender (the last commit had one append) is not kept waiting.
        let mut shared = false;
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            // Appends that arrive within LINGER join this commit: fewer, larger fsyncs.
            let linger = if shared {
                LINGER
            } else {
                std::time::Duration::ZERO
            };
            let until = std::time::Instant::now() + linger;
            while group.len() < GROUP {
                let left = until.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(a) => group.push(a),
                    Err(_) => break,
                }
            }
            shared = group.len() > 1;
            let mut batch = sled::Batch::default();
            let mut seqs = Vec::with_capacity(group.len());
            let mut added = 0u64;
            let mut records = 0;
            for a in &group {
                seqs.push(next);
                if let Some(r) = &a.record {
                    batch.insert(&record_key(next)[..], &r[..]);
                    added += r.len() as u64;
                    next += 1;
                    records += 1;
                }
                if let Some((k, v)) = &a.window {
                    batch.insert(&k[..], &v[..]);
                }
            }
            let wants_sync = group.iter().any(|a| a.done.is_some());
            let result = self.tree.apply_batch(batch).and_then(|_| {
                if wants_sync {
                    self.metrics.fsyncs.inc();
                    self.db.flush().map(|_| ())
                } else {
                    Ok(())
                }
            });
            match &result {
                Ok(()) => {
                    let b = self.bytes.fetch_add(added, Ordering::Relaxed) + added;
                    self.metrics.bytes.set(b as i64);
                    self.metrics.records.inc_by(records);
                    self.end.send_replace(next);
                }
                Err(e) => {
                    self.metrics.failures.inc();
                    tracing::warn!(error = %e, "write-ahead log commit failed; senders retry");
                }
            }
            for (a, seq) in group.into_iter().zip(seqs) {
                if let Some(done) = a.done {
                    let answer = match &result {
                        Ok(()) => Ok(seq),
                        Err(e) => Err(WalError::Write(e.clone())),
                    };
                    done.send(answer);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_db(path: &Path) -> Result<sled::Db, sled::Error> {
    sled::Config::new()
        .path(path)
        .cache_capacity(8 << 20)
        .flush_every_ms(Some(500))
        .open()
}

fn open_error(path: &Path, source: sled::Error) -> WalError {
    WalError::Open {
        path: path.display().to_string(),
        source,
    }
}

fn moved_aside(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".corrupt-{secs}"));
    p.into()
}

/// The next seq to write and the bytes the records take.
fn scan(tree: &sled::Tree) -> Result<(u64, u64), WalError> {
    let mut bytes = 0u64;
    for v in tree.scan_prefix([RECORD]).values() {
        bytes += v?.len() as u64;
    }
    let next = tree
        .scan_prefix([RECORD])
        .keys()
        .next_back()
        .transpose()?
        .map(|k| seq_of(&k) + 1)
        .unwrap_or(0);
    Ok((next, bytes))
}

struct ReaderState {
    name: String,
    label: String,
    /// Next seq the reader will read (what was read may still be in flight).
    read: AtomicU64,
    /// Every record below this one was sent (or dropped and counted).
    committed: AtomicU64,
}

/// One endpoint's position in the log.
pub struct Reader {
    wal: Arc<Wal>,
    state: Arc<ReaderState>,
    next: u64,
    end: tokio::sync::watch::Receiver<u64>,
}

impl Reader {
    /// The next record, waiting for one to be written; `None` once `stop` fires.
    /// Records cut by the caps before they were read are skipped (they were
    /// counted when cut).
    pub async fn next(
        &mut self,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<(u64, Record)> {
        loop {
            let found = self.wal.records_from(self.next).next();
            if let Some((seq, raw)) = found {
                self.next = seq + 1;
                self.state.read.store(self.next, Ordering::Relaxed);
                match Record::decode(&raw) {
                    Ok(r) => return Some((seq, r)),
                    Err(e) => {
                        self.wal.skip_corrupt(seq, &e);
                        continue;
                    }
                }
            }
            let end = *self.end.borrow_and_update();
            if end > self.next {
                continue;
            }
            tokio::select! {
                changed = self.end.changed() => if changed.is_err() { return None },
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Every record up to and including `seq` was sent (or dropped and counted):
    /// the position is persisted with sled's periodic flush.
    pub fn commit(&self, seq: u64) {
        let next = seq + 1;
        if self.state.committed.fetch_max(next, Ordering::Relaxed) >= next {
            return;
        }
        let k = key(CURSOR, self.state.name.as_bytes());
        if let Err(e) = self.wal.tree.insert(k, &next.to_be_bytes()) {
            tracing::warn!(error = %e, reader = %self.state.name, "persisting the remote_write position failed");
        }
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }
}

#[cfg(test)]
mod tests;
