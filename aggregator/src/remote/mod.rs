//! Prometheus remote write from the aggregator: one writer per `remote_write:`
//! endpoint, each reading the write-ahead log from its own position.
//!
//! A writer's reading loop decodes records, gives each sample its series' labels
//! sorted by name with `__name__`, applies `write_relabel_configs`, encodes it as a
//! `TimeSeries` and hands it to the shard its series hashes to: one series always
//! goes through one shard, which sends its batches one after the other, so each
//! series reaches the endpoint in the order the log holds it (a drained backlog
//! interleaves with live data, and a TSDB wants each series in time order). Each
//! shard's queue holds `capacity` samples; a full queue stops the reader, never
//! memory. The log position is committed only up to the newest record every sample
//! of which (and of all records before it) was acknowledged or dropped and counted.
//!
//! What the TSDB must allow: samples of one series arrive in time order, but
//! older than the newest of other series when a collector drains a backlog, and
//! possibly older than the TSDB's head after a long outage. Prometheus needs
//! `storage.tsdb.out_of_order_time_window` at least as long as the longest outage
//! (its receiver otherwise answers 400 and the batch is dropped and counted);
//! VictoriaMetrics and Mimir (with its out-of-order window) accept them. Delivery is
//! at least once: after a crash, what was sent but not yet committed is sent again.
//!
//! Entry points: [`Metrics::register`] once per registry, then [`live::start`] (or
//! [`RemoteWriter::start`] per endpoint).

mod client;
pub mod live;
mod metrics;
pub mod proto;
mod queue;
mod sharding;

pub use metrics::Metrics;

use crate::store::MetricType;
use crate::wal::{Reader, WalError};
use client::Client;
use edgewatch_config::remote_write::RemoteWriteConfig;
use queue::{
    deliver, spawn_shard, BufferPool, Chunk, Delivery, ShardHandle, Shared, Stats, Watermark,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote_write: tls_config: {0}")]
    Tls(#[from] edgewatch_tls::TlsError),
    #[error("remote_write: headers: {0:?} is not a valid header")]
    Header(String),
    #[error("remote_write: building the HTTP client: {0}")]
    Client(String),
    #[error("remote_write: opening the log reader: {0}")]
    Wal(#[from] WalError),
}

/// Settings not in the configuration (tests shorten them).
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the shard count is re-estimated (Prometheus: 10 s).
    pub shard_update: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shard_update: Duration::from_secs(10),
        }
    }
}

pub struct RemoteWriter;

impl RemoteWriter {
    /// Starts the endpoint's writer. Fails (naming the file) when a `tls_config`
    /// file cannot be read.
    pub fn start(
        cfg: &RemoteWriteConfig,
        reader: Reader,
        metrics: &Metrics,
        stop: CancellationToken,
        options: Options,
    ) -> Result<JoinHandle<()>, RemoteError> {
        let client = Client::new(cfg)?;
        let q = &cfg.queue_config;
        let shared = Arc::new(Shared {
            client,
            metrics: metrics.endpoint(&cfg.url.0),
            watermark: Watermark::new(),
            stats: Stats::default(),
            pool: BufferPool::new(),
            max_samples: q.max_samples_per_send,
            deadline: q.batch_send_deadline.get(),
            min_backoff: q.min_backoff.get(),
            max_backoff: q.max_backoff.get(),
            retry_on_429: q.retry_on_http_429,
            hard_stop: CancellationToken::new(),
        });
        let families = Arc::new(Mutex::new(HashMap::new()));
        if cfg.metadata_config.send {
            tokio::spawn(send_metadata(
                shared.clone(),
                families.clone(),
                cfg.metadata_config.send_interval.get(),
                cfg.metadata_config.max_samples_per_send.max(1),
                stop.clone(),
            ));
        }
        let writer = Writer {
            cfg: cfg.clone(),
            shared,
            shards: Vec::new(),
            tasks: Vec::new(),
            families,
            scratch: Vec::new(),
            options,
        };
        Ok(tokio::spawn(writer.run(reader, stop)))
    }
}

/// Families seen, for the metadata sender: name → (type, help, unit).
type Families = Arc<Mutex<HashMap<String, (MetricType, String, String)>>>;

struct Writer {
    cfg: RemoteWriteConfig,
    shared: Arc<Shared>,
    shards: Vec<ShardHandle>,
    tasks: Vec<JoinHandle<()>>,
    families: Families,
    /// One sample's encoded labels.
    scratch: Vec<u8>,
    options: Options,
}

impl Writer {
    async fn run(mut self, mut reader: Reader, stop: CancellationToken) {
        self.spawn_shards(self.cfg.queue_config.min_shards);
        let mut done = self.shared.watermark.subscribe();
        let mut estimator = sharding::Estimator::new(
            self.cfg.queue_config.min_shards,
            self.cfg.queue_config.max_shards,
            &self.shared.stats,
        );
        let mut tick = tokio::time::interval(self.options.shard_update);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = done.changed() => commit(&reader, &mut done),
                _ = tick.tick() => {
                    let pending = self.shared.metrics.pending.get().max(0) as u64;
                    let want = estimator.desired(&self.shared.stats, last_tick.elapsed(), pending, self.shards.len());
                    last_tick = Instant::now();
                    if want != self.shards.len() && !self.reshard(want, &stop).await {
                        break;
                    }
                }
                next = reader.next(&stop) => {
                    let Some((seq, record)) = next else { break };
                    if !self.dispatch(seq, &record, &stop).await {
                        break;
                    }
                }
            }
        }
        self.shutdown().await;
        commit(&reader, &mut done);
    }

    fn spawn_shards(&mut self, n: usize) {
        for _ in 0..n {
            let (h, t) = spawn_shard(self.shared.clone(), self.cfg.queue_config.capacity);
            self.shards.push(h);
            self.tasks.push(t);
        }
        self.shared.metrics.shards.set(n as i64);
    }

    /// Replaces the shards by `n` new ones once the old ones have sent what they
    /// hold, so no series' samples overtake each other on the way. False when
    /// stopped meanwhile.
    async fn reshard(&mut self, n: usize, stop: &CancellationToken) -> bool {
        tracing::info!(url = %self.cfg.url, from = self.shards.len(), to = n, "remote_write resharding");
        self.shards.clear();
        // Joined by reference: if stopped meanwhile, `shutdown` still bounds them.
        tokio::select! {
            _ = futures::future::join_all(self.tasks.iter_mut()) => {}
            _ = stop.cancelled() => return false,
        }
        self.tasks.clear();
        self.spawn_shards(n);
        true
    }

    /// Encodes a record's samples into per-shard chunks and queues them, waiting
    /// for queue space. False when stopped meanwhile.
    async fn dispatch(
        &mut self,
        seq: u64,
        record: &crate::wal::record::Record,
        stop: &CancellationToken,
    ) -> bool {
        let chunks = self.encode(seq, record);
        let total: usize = chunks.iter().map(|(_, c)| c.samples).sum();
        self.shared.watermark.begin(seq, total as u64);
        for (shard, mut chunk) in chunks {
            let h = &self.shards[shard];
            // A record larger than a queue still goes in whole (it is in memory anyway).
            let want = u32::try_from(chunk.samples)
                .unwrap_or(u32::MAX)
                .min(h.capacity);
            let started = Instant::now();
            let permit = tokio::select! {
                p = h.space.clone().acquire_many_owned(want) => p,
                _ = stop.cancelled() => return false,
            };
            let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared
                .stats
                .blocked_nanos
                .fetch_add(waited, Ordering::Relaxed);
            match permit {
                Ok(p) => p.forget(),
                Err(_) => return false,
            }
            chunk.permits = want;
            let n = chunk.samples as u64;
            self.shared.metrics.pending.add(n as i64);
            if h.tx.send(chunk).await.is_err() {
                self.shared.metrics.pending.sub(n as i64);
                return false;
            }
            self.shared.stats.enqueued.fetch_add(n, Ordering::Relaxed);
        }
        true
    }

    /// The record's samples as chunks, in order, each at most max_samples_per_send.
    fn encode(&mut self, seq: u64, record: &crate::wal::record::Record) -> Vec<(usize, Chunk)> {
        let shards = self.shards.len().max(1);
        let max = self.cfg.queue_config.max_samples_per_send;
        let relabel = &self.cfg.write_relabel_configs;
        let pool = &self.shared.pool;
        let mut open: Vec<Chunk> = (0..shards).map(|_| Chunk::with_buf(pool.take())).collect();
        let mut ready = Vec::new();
        let mut dropped = 0u64;
        let scratch = &mut self.scratch;
        record.for_each(|s| {
            scratch.clear();
            if relabel.is_empty() {
                encode_labels(scratch, s.name, s.labels());
            } else if !relabeled_labels(scratch, s.name, s.labels(), relabel) {
                dropped += 1;
                return;
            }
            let shard = shard_of(scratch, shards);
            let c = &mut open[shard];
            proto::put_series(&mut c.buf, scratch, s.value, s.timestamp_ms);
            c.count(seq, s.timestamp_ms);
            if c.samples >= max {
                ready.push((shard, std::mem::replace(c, Chunk::with_buf(pool.take()))));
            }
        });
        for (shard, c) in open.into_iter().enumerate() {
            if c.samples > 0 {
                ready.push((shard, c));
            } else {
                pool.give(c.buf);
            }
        }
        if dropped > 0 {
            self.shared.metrics.relabel_dropped.inc_by(dropped);
        }
        if self.cfg.metadata_config.send {
            self.note_families(record);
        }
        ready
    }

    fn note_families(&self, record: &crate::wal::record::Record) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for m in record.families() {
            if !f.contains_key(&m.name) {
                f.insert(
                    m.name.clone(),
                    (m.metric_type, m.help.clone(), m.unit.clone()),
                );
            }
        }
    }

    /// Closes the queues and waits for the shards to send what they hold, for at
    /// most `remote_timeout`; then gives up on the rest (it stays in the log).
    async fn shutdown(&mut self) {
        self.shards.clear();
        let tasks = std::mem::take(&mut self.tasks);
        let flush = futures::future::join_all(tasks);
        tokio::pin!(flush);
        if tokio::time::timeout(self.cfg.remote_timeout.get(), &mut flush)
            .await
            .is_err()
        {
            tracing::warn!(url = %self.cfg.url, "remote_write: queued samples not sent at shutdown stay in the log");
            self.shared.hard_stop.cancel();
            flush.await;
        }
    }
}

fn commit(reader: &Reader, done: &mut tokio::sync::watch::Receiver<Option<u64>>) {
    if let Some(seq) = *done.borrow_and_update() {
        reader.commit(seq);
    }
}

/// Labels as `TimeSeries.labels` entries: `__name__` and the sample's labels,
/// sorted by name, empty values dropped (the store drops them too).
fn encode_labels<'a>(
    out: &mut Vec<u8>,
    name: &'a str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) {
    let mut all: smallvec::SmallVec<[(&str, &str); 24]> = smallvec::SmallVec::new();
    all.push(("__name__", name));
    all.extend(labels.filter(|(_, v)| !v.is_empty()));
    // Stable: of a name written twice the first value stays (a receiver refuses
    // the whole batch for a duplicate label name).
    all.sort_by(|a, b| a.0.cmp(b.0));
    all.dedup_by(|b, a| a.0 == b.0);
    for (k, v) in all {
        proto::put_label(out, k, v);
    }
}

/// Like [`encode_labels`], through `write_relabel_configs` first; false when they drop it.
fn relabeled_labels<'a>(
    out: &mut Vec<u8>,
    name: &'a str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    relabel: &[edgewatch_prom::relabel::RelabelConfig],
) -> bool {
    let mut all: Vec<(String, String)> = std::iter::once(("__name__", name))
        .chain(labels.filter(|(_, v)| !v.is_empty()))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|b, a| a.0 == b.0);
    if !edgewatch_prom::relabel::process(&mut all, relabel) {
        return false;
    }
    all.retain(|(_, v)| !v.is_empty());
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|b, a| a.0 == b.0);
    for (k, v) in &all {
        proto::put_label(out, k, v);
    }
    true
}

/// The shard of a series, from its encoded labels. A multiply-rotate hash over
/// 8-byte words (as rustc's FxHash): several times cheaper than SipHash on the
/// ~200 bytes of a series, and nobody outside chooses these bytes to collide.
fn shard_of(encoded_labels: &[u8], shards: usize) -> usize {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = 0u64;
    let mut words = encoded_labels.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(a)).wrapping_mul(K);
    }
    for b in words.remainder() {
        h = (h.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
    }
    // The high bits are the well-mixed ones.
    ((h >> 32) % shards as u64) as usize
}

/// Sends the metadata of every family seen, every `interval`, in requests of at
/// most `max` entries (Prometheus sends it apart from the samples, too).
async fn send_metadata(
    shared: Arc<Shared>,
    families: Families,
    interval: Duration,
    max: usize,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut encoder = snap::raw::Encoder::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let all: Vec<(String, (MetricType, String, String))> = {
            let f = families.lock().unwrap_or_else(|p| p.into_inner());
            f.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for part in all.chunks(max) {
            let mut plain = Vec::new();
            for (name, (t, help, unit)) in part {
                proto::put_metadata(&mut plain, name, *t, help, unit);
            }
            let body = match encoder.compress_vec(&plain) {
                Ok(b) => bytes::Bytes::from(b),
                Err(e) => {
                    tracing::error!(error = %e, "snappy compression of metadata failed");
                    continue;
                }
            };
            let sent = tokio::select! {
                d = deliver(&shared, body, || {}) => d,
                _ = stop.cancelled() => return,
            };
            match sent {
                Delivery::Sent => shared.metrics.metadata.inc_by(part.len() as u64),
                Delivery::Dropped(reason) => {
                    tracing::warn!(url = %shared.client.url(), reason, "remote_write endpoint refused metadata");
                }
                Delivery::Abandoned => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
