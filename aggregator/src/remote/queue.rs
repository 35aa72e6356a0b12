//! Shards: each a bounded queue of encoded samples, batched by size or deadline and
//! sent with retries; and the low watermark of records fully handled.

use super::client::{Attempt, Client};
use super::metrics::Endpoint;
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// Samples of consecutive records, encoded as `WriteRequest.timeseries` entries,
/// on their way to one shard.
#[derive(Default)]
pub(crate) struct Chunk {
    pub buf: Vec<u8>,
    pub samples: usize,
    /// (record seq, samples of it here), seqs ascending.
    pub seqs: SmallVec<[(u64, u32); 4]>,
    pub max_ts: i64,
    /// Queue slots this chunk holds (returned when it is acknowledged or dropped).
    pub permits: u32,
}

impl Chunk {
    pub fn with_buf(buf: Vec<u8>) -> Chunk {
        Chunk {
            buf,
            ..Chunk::default()
        }
    }

    pub fn count(&mut self, seq: u64, timestamp_ms: i64) {
        match self.seqs.last_mut() {
            Some((s, n)) if *s == seq => *n += 1,
            _ => self.seqs.push((seq, 1)),
        }
        if self.samples == 0 || timestamp_ms > self.max_ts {
            self.max_ts = timestamp_ms;
        }
        self.samples += 1;
    }

    /// Appends `c`; the buffer left over goes back to `pool`.
    fn absorb(&mut self, c: Chunk, pool: &BufferPool) {
        if self.buf.is_empty() {
            pool.give(std::mem::replace(&mut self.buf, c.buf));
        } else {
            self.buf.extend_from_slice(&c.buf);
            pool.give(c.buf);
        }
        for (seq, n) in c.seqs {
            match self.seqs.last_mut() {
                Some((s, m)) if *s == seq => *m += n,
                _ => self.seqs.push((seq, n)),
            }
        }
        if self.samples == 0 || c.max_ts > self.max_ts {
            self.max_ts = c.max_ts;
        }
        self.samples += c.samples;
        self.permits += c.permits;
    }
}

/// Encoding buffers handed back once sent, so the reader's chunks reuse warm
/// memory instead of growing fresh vectors (a page fault per page) for every record.
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept at most (each up to a batch, ~0.5 MiB at 2,000 samples).
const POOLED: usize = 16;

impl BufferPool {
    pub fn new() -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
        }
    }

    pub fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    pub fn give(&self, mut b: Vec<u8>) {
        if b.capacity() == 0 {
            return;
        }
        b.clear();
        let mut free = self.lock();
        if free.len() < POOLED {
            free.push(b);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Records read but not yet fully acknowledged or dropped: the reader's position
/// may only move past a record once every sample of it is handled, by any shard.
pub(crate) struct Watermark {
    outstanding: Mutex<BTreeMap<u64, u64>>,
    /// The newest seq such that it and every record before it are handled.
    done: watch::Sender<Option<u64>>,
}

impl Watermark {
    pub fn new() -> Watermark {
        Watermark {
            outstanding: Mutex::new(BTreeMap::new()),
            done: watch::channel(None).0,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.done.subscribe()
    }

    /// Record `seq` was read and `samples` of it are on their way (0: none, e.g.
    /// all relabeled away, so it is handled once the records before it are).
    pub fn begin(&self, seq: u64, samples: u64) {
        let mut o = self.lock();
        o.insert(seq, samples);
        self.advance(&mut o);
    }

    pub fn handled(&self, seqs: &[(u64, u32)]) {
        let mut o = self.lock();
        for (seq, n) in seqs {
            if let Some(left) = o.get_mut(seq) {
                *left = left.saturating_sub(u64::from(*n));
            }
        }
        self.advance(&mut o);
    }

    fn advance(&self, o: &mut BTreeMap<u64, u64>) {
        let mut newest = None;
        while let Some(e) = o.first_entry() {
            if *e.get() != 0 {
                break;
            }
            newest = Some(*e.key());
            e.remove();
        }
        if newest.is_some() {
            self.done.send_replace(newest);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.outstanding.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the shard count is estimated from (see `sharding`).
#[derive(Default)]
pub(crate) struct Stats {
    /// Samples handed to shards.
    pub enqueued: AtomicU64,
    /// Samples acknowledged.
    pub sent: AtomicU64,
    /// Time spent in requests, summed over shards.
    pub send_nanos: AtomicU64,
    /// Requests that failed (any reason).
    pub failures: AtomicU64,
    /// Time the reader waited for queue space.
    pub blocked_nanos: AtomicU64,
}

/// Everything a shard needs, shared by all shards of an endpoint.
pub(crate) struct Shared {
    pub client: Client,
    pub metrics: Endpoint,
    pub watermark: Watermark,
    pub stats: Stats,
    pub pool: BufferPool,
    pub max_samples: usize,
    pub deadline: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_on_429: bool,
    /// Fires when a shutdown's flush time is up: give up on what is unsent (it is
    /// not committed, so it is sent again after the restart).
    pub hard_stop: CancellationToken,
}

/// The reader's end of one shard.
pub(crate) struct ShardHandle {
    pub tx: mpsc::Sender<Chunk>,
    pub space: Arc<Semaphore>,
    pub capacity: u32,
}

pub(crate) fn spawn_shard(
    shared: Arc<Shared>,
    capacity: usize,
) -> (ShardHandle, tokio::task::JoinHandle<()>) {
    // Chunks hold at least one sample each, so the semaphore is what bounds it.
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let space = Arc::new(Semaphore::new(capacity));
    let task = tokio::spawn(run_shard(shared, rx, space.clone()));
    let handle = ShardHandle {
        tx,
        space,
        capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
    };
    (handle, task)
}

/// Collects chunks into batches of at most `max_samples` (or what arrived within
/// the deadline of the batch's first sample) and sends them one at a time, so a
/// series' samples reach the endpoint in the order they were queued.
async fn run_shard(shared: Arc<Shared>, mut rx: mpsc::Receiver<Chunk>, space: Arc<Semaphore>) {
    let mut batch = Chunk::default();
    let mut sender = Sender::default();
    let mut due = tokio::time::Instant::now();
    loop {
        let next = if batch.samples == 0 {
            rx.recv().await
        } else {
            tokio::select! {
                c = rx.recv() => c,
                _ = tokio::time::sleep_until(due) => {
                    sender.send(&shared, &space, std::mem::take(&mut batch)).await;
                    continue;
                }
            }
        };
        let Some(chunk) = next else { break };
        if batch.samples > 0 && batch.samples + chunk.samples > shared.max_samples {
            sender
                .send(&shared, &space, std::mem::take(&mut batch))
                .await;
        }
        if batch.samples == 0 {
            due = tokio::time::Instant::now() + shared.deadline;
        }
        batch.absorb(chunk, &shared.pool);
        if batch.samples >= shared.max_samples {
            sender
                .send(&shared, &space, std::mem::take(&mut batch))
                .await;
        }
    }
    if batch.samples > 0 {
        sender.send(&shared, &space, batch).await;
    }
}

/// A shard's reused buffers.
#[derive(Default)]
struct Sender {
    encoder: Option<snap::raw::Encoder>,
    compressed: Vec<u8>,
}

impl Sender {
    async fn send(&mut self, shared: &Shared, space: &Semaphore, batch: Chunk) {
        let body = self.compress(&batch.buf);
        let n = batch.samples as u64;
        let outcome = deliver(shared, body.clone(), || shared.metrics.retried.inc_by(n)).await;
        match outcome {
            Delivery::Sent => {
                shared.metrics.samples.inc_by(n);
                shared.metrics.sent_bytes.inc_by(body.len() as u64);
                shared.metrics.sent_up_to(batch.max_ts);
                shared.stats.sent.fetch_add(n, Ordering::Relaxed);
                shared.watermark.handled(&batch.seqs);
            }
            Delivery::Dropped(reason) => {
                shared.metrics.failed(&reason, n);
                shared.watermark.handled(&batch.seqs);
            }
            // Not handled: the position stays before these records.
            Delivery::Abandoned => {}
        }
        shared.metrics.pending.sub(n as i64);
        space.add_permits(batch.permits as usize);
        shared.pool.give(batch.buf);
    }

    fn compress(&mut self, plain: &[u8]) -> Bytes {
        let enc = self.encoder.get_or_insert_with(snap::raw::Encoder::new);
        self.compressed
            .resize(snap::raw::max_compress_len(plain.len()), 0);
        match enc.compress(plain, &mut self.compressed) {
            Ok(len) => Bytes::copy_from_slice(&self.compressed[..len]),
            // Only for inputs over snappy's 4 GiB limit, which a batch never is.
            Err(e) => {
                tracing::error!(error = %e, "snappy compression failed");
                Bytes::new()
            }
        }
    }
}

pub(crate) enum Delivery {
    Sent,
    Dropped(String),
    Abandoned,
}

/// Sends `body` until it is acknowledged, refused for good, or the hard stop
/// fires; backs off exponentially from min_backoff to max_backoff between
/// attempts, longer when the endpoint says `Retry-After`.
pub(crate) async fn deliver(shared: &Shared, body: Bytes, on_retry: impl Fn()) -> Delivery {
    let mut backoff = shared.min_backoff;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let started = Instant::now();
        let attempt = tokio::select! {
            a = shared.client.send(body.clone(), shared.retry_on_429) => a,
            _ = shared.hard_stop.cancelled() => return Delivery::Abandoned,
        };
        let took = started.elapsed().as_nanos();
        shared
            .stats
            .send_nanos
            .fetch_add(u64::try_from(took).unwrap_or(u64::MAX), Ordering::Relaxed);
        let wait = match attempt {
            Attempt::Sent => return Delivery::Sent,
            Attempt::Drop(reason) => {
                shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                return Delivery::Dropped(reason);
            }
            Attempt::Retry { after, why } => {
                shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                let wait = after.map_or(backoff, |a| a.max(backoff));
                // Once per batch at warn: an endpoint down for hours would
                // otherwise log every backoff of every shard.
                if attempts == 1 {
                    tracing::warn!(url = %shared.client.url(), error = %why, retry_in = ?wait,
                        "remote_write send failed; retrying until it succeeds");
                } else {
                    tracing::debug!(url = %shared.client.url(), error = %why, attempts, retry_in = ?wait,
                        "remote_write send failed again");
                }
                wait
            }
        };
        on_retry();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.hard_stop.cancelled() => return Delivery::Abandoned,
        }
        backoff = (backoff * 2).min(shared.max_backoff);
    }
}
