//! OTLP ingest at the core: split forwarded batches into their entries, drop
//! replays, convert the rest into the store, and answer only once the samples and
//! the collector's new replay window are durable in the write-ahead log (one
//! atomic append), so a crash can neither lose an acknowledged batch nor accept
//! its replay twice.

pub mod bounds;
pub mod dedup;
pub mod expiry;
pub mod identity;

use crate::convert::Converter;
use crate::store::Store;
use crate::wal::{Wal, WalError};
use bytes::Bytes;
use dedup::SeqWindow;
use edgewatch_otlp::view::{self, RequestView};
use edgewatch_otlp::{BatchInfo, ExportContext, ExportError, ExportOutcome, MetricsSink};
use expiry::Stored;
use identity::{Gate, Identity};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a batch waits for the batches its collector sent before it.
const REORDER_WAIT: Duration = Duration::from_secs(1);
/// Batches of collectors this aggregator never saw that may wait for their
/// predecessors at once. A new collector draining a backlog keeps several batches
/// in flight and they must reach the store in order; but anyone can name a new id
/// with a gap, and a waiting batch holds its bytes of the in-flight budget: beyond
/// this many (half the budget), a new collector's batch goes ahead at once.
const NEW_COLLECTOR_WAITS: usize = INFLIGHT_REQUESTS / 2;
/// Requests whose bytes may be held at once, in units of the largest request:
/// beyond it a sender is told to back off (RESOURCE_EXHAUSTED / 429) rather than
/// the core growing without bound while collectors drain their backlogs.
const INFLIGHT_REQUESTS: usize = 8;

/// One collector's replay state. Its lock is held while the collector's entries are
/// converted and until they are durable, so one collector's batches reach the store
/// in sequence order even though the forwarder keeps several in flight (a sample
/// older than the one held would otherwise be ignored by the store, and the log
/// would hold it out of order), and a retry racing its original is seen as a replay.
/// A batch waits for its turn on `next` and for the lock asynchronously, holding no
/// thread and no work slot.
struct CollectorState {
    window: Arc<tokio::sync::Mutex<SeqWindow>>,
    next: tokio::sync::watch::Sender<u64>,
    /// When its window last moved (ms); [`NEVER`] for a collector with no window.
    moved_ms: AtomicI64,
    /// When a batch of it last arrived (ms): idle collectors are evicted.
    used_ms: AtomicI64,
}

/// `moved_ms` of a collector this aggregator never took a batch from.
const NEVER: i64 = i64::MIN;

impl CollectorState {
    /// What is known of its position; `None` for a new collector.
    fn known(&self, next: u64) -> Option<bounds::Known> {
        let moved_ms = self.moved_ms.load(Ordering::Relaxed);
        (moved_ms != NEVER).then_some(bounds::Known { next, moved_ms })
    }
}

/// A converted batch: its answer, and what must be durable before it is given.
struct Converted {
    outcome: ExportOutcome,
    record: Option<Vec<u8>>,
    /// The collector's new replay window, when it changed.
    window: Option<SeqWindow>,
    points: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
pub struct IngestSink {
    inner: Arc<Inner>,
}

struct Inner {
    converter: Converter,
    store: Arc<Store>,
    collectors: Mutex<HashMap<String, Arc<CollectorState>>>,
    wal: Arc<Wal>,
    identity: Gate,
    /// Bytes of requests being ingested (in KiB permits).
    inflight: tokio::sync::Semaphore,
    inflight_kib: u32,
    /// Conversions running at once: about the cores, so a batch that is next in
    /// its collector's order never queues behind hundreds of parked ones.
    work: tokio::sync::Semaphore,
    /// See [`NEW_COLLECTOR_WAITS`].
    new_waits: tokio::sync::Semaphore,
    requests: IntCounterVec,
    points: IntCounter,
    rejected_points: IntCounter,
    duplicate_batches: IntCounter,
    collectors_held: IntGauge,
    collectors_forgotten: IntCounter,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl IngestSink {
    /// `max_request_bytes` sizes the in-flight budget ([`INFLIGHT_REQUESTS`] of them);
    /// `identity` admits requests (see [`identity`]).
    pub fn new(
        store: Arc<Store>,
        wal: Arc<Wal>,
        max_request_bytes: usize,
        identity: Gate,
        registry: &Registry,
    ) -> Result<Self, IngestError> {
        let requests = IntCounterVec::new(
            Opts::new(
                "edgewatch_ingest_requests_total",
                "OTLP export requests by outcome.",
            ),
            &["outcome"],
        )?;
        let points = IntCounter::new(
            "edgewatch_ingest_points_total",
            "Data points ingested into the store.",
        )?;
        let rejected_points = IntCounter::new(
            "edgewatch_ingest_rejected_points_total",
            "Data points rejected as malformed (answered as partial success or INVALID_ARGUMENT).",
        )?;
        let duplicate_batches = IntCounter::new(
            "edgewatch_ingest_duplicate_batches_total",
            "Collector batches dropped because they were already ingested (replays after a crash or retry).",
        )?;
        let collectors_held = IntGauge::new(
            "edgewatch_ingest_collectors",
            "Collectors whose replay state is held in memory (idle ones are evicted).",
        )?;
        let collectors_forgotten = IntCounter::new(
            "edgewatch_ingest_forgotten_collectors_total",
            "Collectors whose persisted replay window was removed after state.collector_expiry without a batch.",
        )?;
        for c in [
            &points,
            &rejected_points,
            &duplicate_batches,
            &collectors_forgotten,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(collectors_held.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        let inflight_kib = (max_request_bytes.div_ceil(1024) * INFLIGHT_REQUESTS).clamp(
            1,
            tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize),
        ) as u32;
        Ok(IngestSink {
            inner: Arc::new(Inner {
                converter: Converter::new(registry),
                store,
                collectors: Mutex::new(HashMap::new()),
                wal,
                identity,
                inflight: tokio::sync::Semaphore::new(inflight_kib as usize),
                inflight_kib,
                work: tokio::sync::Semaphore::new(workers()),
                new_waits: tokio::sync::Semaphore::new(NEW_COLLECTOR_WAITS),
                requests,
                points,
                rejected_points,
                duplicate_batches,
                collectors_held,
                collectors_forgotten,
            }),
        })
    }

    /// A request straight from an SDK (no batch headers): converted into the store;
    /// the caller makes the returned record durable before answering.
    fn ingest(
        &self,
        req: RequestView<'_>,
        who: Option<&Identity>,
    ) -> (Option<Vec<u8>>, ExportOutcome) {
        let out = self.inner.store.ingest_logged(crate::now_ms());
        let converted = self.inner.converter.ingest_as(req, &out, authority(who));
        self.inner.points.inc_by(converted.accepted_points);
        let mut outcome = ExportOutcome::default();
        over_limits(&mut outcome, converted.limited_points, &out.take_limited());
        (out.take_record(), outcome)
    }

    /// Splits a forwarded batch, decodes each entry and converts those `window` has
    /// not seen; the caller makes the result durable before answering.
    fn ingest_batch(
        &self,
        body: &Bytes,
        info: &BatchInfo,
        window: &SeqWindow,
        who: Option<&Identity>,
    ) -> Result<Converted, ExportError> {
        // Checked before the batch waited too; the slicing below relies on it.
        bounds::check_headers(info, body.len())?;
        let mut decoded = Vec::with_capacity(info.entry_lens.len());
        let mut malformed = Vec::new();
        let mut offset = 0;
        let mut errors = Vec::new();
        for (seq, len) in (info.first_seq..).zip(&info.entry_lens) {
            match view::decode(&body[offset..offset + len]) {
                Ok(req) => decoded.push((seq, req)),
                Err(e) => {
                    errors.push(format!("entry seq {seq}: {e}"));
                    malformed.push(seq);
                }
            }
            offset += len;
        }
        let mut next = window.clone();
        next.raise_floor(info.floor);
        // Malformed entries are settled too: re-sending them cannot help.
        for seq in malformed {
            next.claim(seq);
        }
        let fresh: Vec<_> = decoded
            .into_iter()
            .filter(|(seq, _)| next.claim(*seq))
            .collect();
        let out = self.inner.store.ingest_logged(crate::now_ms());
        let (mut points, mut limited) = (0, 0);
        for (_, req) in &fresh {
            let converted = self
                .inner
                .converter
                .ingest_as(req.request(), &out, authority(who));
            points += converted.accepted_points;
            limited += converted.limited_points;
        }
        let duplicates = info.entry_lens.len() - errors.len() - fresh.len();
        self.inner.duplicate_batches.inc_by(duplicates as u64);
        // The points of malformed entries are unknown; report one per entry.
        self.inner.rejected_points.inc_by(errors.len() as u64);
        let mut outcome = ExportOutcome {
            rejected_points: errors.len() as i64,
            message: errors.join("; "),
        };
        over_limits(&mut outcome, limited, &out.take_limited());
        Ok(Converted {
            outcome,
            record: out.take_record(),
            window: (next != *window).then_some(next),
            points,
        })
    }

    fn collector(&self, id: &str) -> Arc<CollectorState> {
        let now = crate::now_ms();
        let mut all = lock(&self.inner.collectors);
        if let Some(c) = all.get(id) {
            c.used_ms.store(now, Ordering::Relaxed);
            return c.clone();
        }
        let (window, moved_ms) = match self.load_window(id) {
            Some(s) => (s.window, s.moved_ms),
            None => (SeqWindow::default(), NEVER),
        };
        let (next, _) = tokio::sync::watch::channel(window.next());
        let c = Arc::new(CollectorState {
            window: Arc::new(tokio::sync::Mutex::new(window)),
            next,
            moved_ms: AtomicI64::new(moved_ms),
            used_ms: AtomicI64::new(now),
        });
        all.insert(id.to_string(), c.clone());
        self.inner.collectors_held.set(all.len() as i64);
        c
    }

    fn load_window(&self, collector_id: &str) -> Option<Stored> {
        match self.inner.wal.window(collector_id) {
            Ok(Some(raw)) => Stored::decode(&raw),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, collector_id, "reading replay state failed; starting empty");
                None
            }
        }
    }

    /// Evicts collectors idle for [`expiry::EVICT_IDLE`] from memory and forgets
    /// persisted windows that did not move for `expiry` (see [`expiry`]). Returns
    /// how many were evicted and forgotten.
    pub fn expire(&self, now_ms: i64, expiry: Duration) -> (usize, usize) {
        let idle_ms = expiry::EVICT_IDLE.as_millis() as i64;
        let evicted = {
            let mut all = lock(&self.inner.collectors);
            let before = all.len();
            // A collector a batch holds is in use, whatever its time says; nobody
            // can take a new hold while the map is locked.
            all.retain(|_, c| {
                Arc::strong_count(c) > 1
                    || now_ms.saturating_sub(c.used_ms.load(Ordering::Relaxed)) <= idle_ms
            });
            self.inner.collectors_held.set(all.len() as i64);
            before - all.len()
        };
        let expiry_ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
        let mut forgotten = 0;
        for (id, raw) in self.inner.wal.windows() {
            let new = match expiry::verdict(&raw, now_ms, expiry_ms) {
                expiry::Verdict::Keep => continue,
                expiry::Verdict::Forget => None,
                expiry::Verdict::Stamp(stamped) => Some(stamped),
            };
            let forgets = new.is_none();
            // Compared with what was read: a batch that moved it meanwhile wins.
            match self.inner.wal.swap_window(&id, &raw, new) {
                Ok(true) if forgets => forgotten += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiring replay windows failed"),
            }
        }
        self.inner.collectors_forgotten.inc_by(forgotten as u64);
        (evicted, forgotten)
    }
}

impl IngestSink {
    /// Waits (up to [`REORDER_WAIT`]) until the batches this collector sent before
    /// this one are in; after that the batch goes ahead out of order (the earlier
    /// one is being retried).
    ///
    /// A batch whose headers do not add up, or that starts far ahead of what is
    /// known of its collector, is refused before it waits (see [`bounds`]). Batches
    /// of new collectors wait only while fewer than [`NEW_COLLECTOR_WAITS`] do.
    async fn wait_for_turn(
        &self,
        info: &BatchInfo,
        body_len: usize,
    ) -> Result<Arc<CollectorState>, ExportError> {
        bounds::check_headers(info, body_len)?;
        let this = self.clone();
        let id = info.collector_id.clone();
        // Loading a collector's window reads sled: off the I/O threads.
        let collector = tokio::task::spawn_blocking(move || this.collector(&id))
            .await
            .map_err(task_failed)?;
        let mut next = collector.next.subscribe();
        let known = collector.known(*next.borrow());
        let _slot = match known {
            Some(known) => {
                bounds::check_ahead(info, Some(known), crate::now_ms())?;
                None
            }
            None => match self.inner.new_waits.try_acquire() {
                Ok(slot) => Some(slot),
                Err(_) => return Ok(collector),
            },
        };
        let (first, floor) = (info.first_seq, info.floor);
        let _ =
            tokio::time::timeout(REORDER_WAIT, next.wait_for(|n| first <= (*n).max(floor))).await;
        Ok(collector)
    }

    /// Converts a forwarded batch and answers once it and its collector's new
    /// window are durable.
    async fn export_batch(
        &self,
        body: Bytes,
        info: BatchInfo,
        held: tokio::sync::SemaphorePermit<'_>,
        who: Option<Identity>,
    ) -> Result<ExportOutcome, ExportError> {
        let collector = self.wait_for_turn(&info, body.len()).await?;
        let window = collector.window.clone().lock_owned().await;
        // Checked again under the lock: the window may have moved while it waited.
        let now = crate::now_ms();
        bounds::check_ahead(&info, collector.known(window.next()), now)?;
        let slot = self.work_slot().await?;
        let this = self.clone();
        // Decoding and conversion are CPU work; keep them off the I/O threads' hot loop.
        let (converted, mut window) = tokio::task::spawn_blocking(move || {
            let c = this
                .ingest_batch(&body, &info, &window, who.as_ref())
                .map(|c| (c, info));
            (c, window)
        })
        .await
        .map_err(task_failed)?;
        drop(slot);
        let (c, info) = converted?;
        // The body is gone; what waits for the log is its record, a few bytes a
        // sample, and it stays in the budget until durable.
        let _record_held = keep_for_record(held, c.record.as_deref());
        if c.record.is_some() || c.window.is_some() {
            // The window moves only once it is durable with the samples.
            let encoded = c
                .window
                .as_ref()
                .map(|w| (info.collector_id.as_str(), expiry::encode(w, now)));
            let durable = self.inner.wal.append_durable_async(c.record, encoded);
            match durable {
                Ok(d) => d.await.map_err(unavailable)?,
                Err(e) => return Err(unavailable(e)),
            };
            if let Some(w) = c.window {
                *window = w;
                collector.moved_ms.store(now, Ordering::Relaxed);
                collector.next.send_replace(window.next());
            }
        }
        self.inner.points.inc_by(c.points);
        Ok(c.outcome)
    }

    /// A request straight from an SDK: converted, then made durable with no thread
    /// waiting (it has no replay window to keep in step).
    async fn export_plain(
        &self,
        body: Bytes,
        held: tokio::sync::SemaphorePermit<'_>,
        who: Option<Identity>,
    ) -> Result<ExportOutcome, ExportError> {
        let slot = self.work_slot().await?;
        let this = self.clone();
        let (record, outcome) = tokio::task::spawn_blocking(move || {
            let req = view::decode(&body)?;
            Ok::<_, ExportError>(this.ingest(req.request(), who.as_ref()))
        })
        .await
        .map_err(task_failed)??;
        drop(slot);
        let _record_held = keep_for_record(held, record.as_deref());
        if let Some(record) = record {
            let durable = self.inner.wal.append_durable_async(Some(record), None);
            durable.map_err(unavailable)?.await.map_err(unavailable)?;
        }
        Ok(outcome)
    }

    async fn work_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ExportError> {
        self.inner
            .work
            .acquire()
            .await
            .map_err(|_| ExportError::Unavailable {
                message: "the aggregator is stopping".into(),
                retry_after: Duration::from_secs(1),
            })
    }
}

/// Gives back the part of a request's budget its body used, keeping what its
/// record (waiting for the log) needs.
fn keep_for_record<'a>(
    mut held: tokio::sync::SemaphorePermit<'a>,
    record: Option<&[u8]>,
) -> Option<tokio::sync::SemaphorePermit<'a>> {
    let kib = record.map_or(0, |r| r.len().div_ceil(1024));
    held.split(kib.min(held.num_permits()))
}

/// Adds the points the limits refused to a partial-success answer, naming each
/// limit and cluster.
fn over_limits(outcome: &mut ExportOutcome, points: u64, drops: &[crate::store::LimitDrop]) {
    if points == 0 && drops.is_empty() {
        return;
    }
    outcome.rejected_points += i64::try_from(points).unwrap_or(i64::MAX);
    let detail = drops
        .iter()
        .map(|d| {
            format!(
                "{} samples of cluster {:?} over limits.{}",
                d.samples,
                d.cluster,
                d.limit.key()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let said = format!("{points} data points not stored at the core: {detail}");
    if outcome.message.is_empty() {
        outcome.message = said;
    } else {
        outcome.message = format!("{}; {said}", outcome.message);
    }
}

fn task_failed(e: tokio::task::JoinError) -> ExportError {
    ExportError::Unavailable {
        message: format!("ingest task failed: {e}"),
        retry_after: Duration::from_secs(1),
    }
}

fn authority(who: Option<&Identity>) -> Option<&dyn crate::convert::Authority> {
    who.map(|w| w as &dyn crate::convert::Authority)
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

/// The log could not take the samples (disk full, I/O error, queue full): the
/// sender keeps them and retries; the store may already show them, and the retry
/// writes the same samples again.
fn unavailable(e: WalError) -> ExportError {
    let message = format!("not durable at the core, retry: {e}");
    match e {
        WalError::Full => ExportError::ResourceExhausted {
            message,
            retry_after: Duration::from_secs(1),
        },
        _ => ExportError::Unavailable {
            message,
            retry_after: Duration::from_secs(1),
        },
    }
}

impl MetricsSink for IngestSink {
    async fn export(&self, body: Bytes, ctx: ExportContext) -> Result<ExportOutcome, ExportError> {
        let (ctx, who) = match self.inner.identity.admit(ctx) {
            Ok(admitted) => admitted,
            Err(e) => {
                self.inner
                    .requests
                    .with_label_values(&["unauthenticated"])
                    .inc();
                return Err(e);
            }
        };
        let kib = (body.len().div_ceil(1024) as u32).clamp(1, self.inner.inflight_kib);
        let Ok(held) = self.inner.inflight.try_acquire_many(kib) else {
            self.inner.requests.with_label_values(&["busy"]).inc();
            return Err(ExportError::ResourceExhausted {
                message: format!(
                    "the aggregator holds {} MiB of requests already; retry later",
                    self.inner.inflight_kib / 1024
                ),
                retry_after: Duration::from_secs(1),
            });
        };
        let result = match ctx.batch {
            Some(info) => self.export_batch(body, info, held, who).await,
            None => self.export_plain(body, held, who).await,
        };
        let outcome = match &result {
            Ok(o) if o.rejected_points > 0 => "partial",
            Ok(_) => "ok",
            Err(_) => "invalid",
        };
        self.inner.requests.with_label_values(&[outcome]).inc();
        result
    }
}

#[cfg(test)]
mod tests;
