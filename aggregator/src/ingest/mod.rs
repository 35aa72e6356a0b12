//! OTLP ingest at the core: split forwarded batches into their entries, drop
//! replays, convert the rest into the store.

pub mod dedup;

use crate::convert::Converter;
use crate::store::Store;
use bytes::Bytes;
use dedup::SeqWindow;
use edgewatch_otlp::view::{self, RequestView};
use edgewatch_otlp::{BatchInfo, ExportContext, ExportError, ExportOutcome, MetricsSink};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a batch waits for the batches its collector sent before it.
const REORDER_WAIT: Duration = Duration::from_secs(1);

/// One collector's replay state. Its lock is held while the collector's entries are
/// converted, so one collector's batches reach the store in sequence order even
/// though the forwarder keeps several in flight (a sample older than the one held
/// would otherwise be ignored by the store).
struct CollectorState {
    window: Mutex<SeqWindow>,
    turn: Condvar,
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
    state: sled::Tree,
    requests: IntCounterVec,
    points: IntCounter,
    rejected_points: IntCounter,
    duplicate_batches: IntCounter,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("opening replay state: {0}")]
    State(#[from] sled::Error),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl IngestSink {
    pub fn new(
        store: Arc<Store>,
        state: &sled::Db,
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
        for c in [&points, &rejected_points, &duplicate_batches] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(requests.clone()))?;
        Ok(IngestSink {
            inner: Arc::new(Inner {
                converter: Converter::new(registry),
                store,
                collectors: Mutex::new(HashMap::new()),
                state: state.open_tree("dedup")?,
                requests,
                points,
                rejected_points,
                duplicate_batches,
            }),
        })
    }

    fn ingest(&self, req: RequestView<'_>) {
        let outcome = self
            .inner
            .converter
            .ingest(req, &self.inner.store, crate::now_ms());
        self.inner.points.inc_by(outcome.accepted_points);
    }

    /// Splits a forwarded batch, decodes each entry and ingests those not seen before.
    fn ingest_batch(&self, body: &Bytes, info: &BatchInfo) -> Result<ExportOutcome, ExportError> {
        let total: usize = info.entry_lens.iter().sum();
        if total != body.len() {
            return Err(ExportError::InvalidArgument(format!(
                "{}: entry lengths add up to {total} bytes but the body has {}",
                edgewatch_otlp::HEADER_ENTRY_LENS,
                body.len()
            )));
        }
        let mut decoded = Vec::with_capacity(info.entry_lens.len());
        let mut offset = 0;
        let mut errors = Vec::new();
        for (i, len) in info.entry_lens.iter().enumerate() {
            let seq = info.first_seq + i as u64;
            match view::decode(&body[offset..offset + len]) {
                Ok(req) => decoded.push((seq, req)),
                Err(e) => errors.push(format!("entry seq {seq}: {e}")),
            }
            offset += len;
        }
        let collector = self.collector(&info.collector_id);
        let mut window = lock(&collector.window);
        window.raise_floor(info.floor);
        let deadline = Instant::now() + REORDER_WAIT;
        while info.first_seq > window.next() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break; // the earlier batch is being retried; go ahead out of order
            }
            window = collector
                .turn
                .wait_timeout(window, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        // Malformed entries are settled too: re-sending them cannot help.
        for i in 0..info.entry_lens.len() as u64 {
            if !decoded.iter().any(|(s, _)| *s == info.first_seq + i) {
                window.claim(info.first_seq + i);
            }
        }
        let fresh: Vec<_> = decoded
            .into_iter()
            .filter(|(seq, _)| window.claim(*seq))
            .collect();
        // sled's background flush persists this within its flush interval; a crash of
        // the aggregator loses its in-memory store too, so a replay accepted after
        // such a crash refills rather than double-counts.
        if let Err(e) = self
            .inner
            .state
            .insert(info.collector_id.as_bytes(), window.encode())
        {
            tracing::warn!(error = %e, "persisting replay state failed");
        }
        let duplicates = info.entry_lens.len() - errors.len() - fresh.len();
        self.inner.duplicate_batches.inc_by(duplicates as u64);
        for (_, req) in &fresh {
            self.ingest(req.request());
        }
        drop(window);
        collector.turn.notify_all();
        if errors.is_empty() {
            return Ok(ExportOutcome::default());
        }
        // The points of malformed entries are unknown; report one per entry.
        self.inner.rejected_points.inc_by(errors.len() as u64);
        Ok(ExportOutcome {
            rejected_points: errors.len() as i64,
            message: errors.join("; "),
        })
    }

    fn collector(&self, id: &str) -> Arc<CollectorState> {
        let mut all = lock(&self.inner.collectors);
        if let Some(c) = all.get(id) {
            return c.clone();
        }
        let c = Arc::new(CollectorState {
            window: Mutex::new(self.load_window(id)),
            turn: Condvar::new(),
        });
        all.insert(id.to_string(), c.clone());
        c
    }

    fn load_window(&self, collector_id: &str) -> SeqWindow {
        match self.inner.state.get(collector_id.as_bytes()) {
            Ok(Some(raw)) => SeqWindow::decode(&raw).unwrap_or_default(),
            Ok(None) => SeqWindow::default(),
            Err(e) => {
                tracing::warn!(error = %e, collector_id, "reading replay state failed; starting empty");
                SeqWindow::default()
            }
        }
    }
}

impl MetricsSink for IngestSink {
    async fn export(&self, body: Bytes, ctx: ExportContext) -> Result<ExportOutcome, ExportError> {
        let this = self.clone();
        // Decoding and conversion are CPU work; keep them off the I/O threads' hot loop.
        let result = tokio::task::spawn_blocking(move || match &ctx.batch {
            Some(info) => this.ingest_batch(&body, info),
            None => {
                let req = view::decode(&body)?;
                this.ingest(req.request());
                Ok(ExportOutcome::default())
            }
        })
        .await
        .map_err(|e| ExportError::Unavailable {
            message: format!("ingest task failed: {e}"),
            retry_after: std::time::Duration::from_secs(1),
        })?;
        let outcome = match &result {
            Ok(o) if o.rejected_points > 0 => "partial",
            Ok(_) => "ok",
            Err(_) => "invalid",
        };
        self.inner.requests.with_label_values(&[outcome]).inc();
        result
    }
}
