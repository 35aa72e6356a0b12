//! The drain loop: read the buffer in order, send batches to the aggregator over
//! OTLP/gRPC, delete entries only once the aggregator acknowledged them.
//!
//! Several batches are in flight at once; they complete in any order but are
//! acknowledged to the buffer strictly in order, so a crash re-sends at most the
//! batches that were in flight. Each batch names its entries' sequence numbers
//! (see `edgewatch_otlp::BatchInfo`) so the aggregator drops what it already has.

use crate::bearer::BearerToken;
use crate::buffer::{Buffer, BufferError, Entry, Seq};
use bytes::BytesMut;
use edgewatch_otlp::client::{Frame, FrameEncoder};
use edgewatch_otlp::BatchInfo;
use futures::stream::{FuturesOrdered, StreamExt};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use rand::Rng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone)]
pub struct ForwardOptions {
    pub endpoint: String,
    pub timeout: Duration,
    pub max_batch_bytes: usize,
    pub max_in_flight: usize,
    pub linger: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// TLS settings of an `https://` endpoint (unset: the public web roots).
    pub tls: Option<edgewatch_config::tls::TlsConfig>,
    pub bearer_token_file: Option<std::path::PathBuf>,
}

impl ForwardOptions {
    pub fn from_config(c: &edgewatch_config::collector::ForwardConfig) -> Self {
        ForwardOptions {
            endpoint: c.endpoint.0.clone(),
            timeout: c.timeout.get(),
            max_batch_bytes: c.max_batch_bytes.bytes() as usize,
            max_in_flight: c.max_in_flight.max(1),
            linger: c.linger.get(),
            initial_backoff: c.initial_backoff.get(),
            max_backoff: c.max_backoff.get(),
            tls: c.tls.clone(),
            bearer_token_file: c.bearer_token_file.as_ref().map(|f| f.0.clone()),
        }
    }
}

#[derive(Clone)]
struct Metrics {
    sent_points: IntCounter,
    sent_batches: IntCounter,
    sent_bytes: IntCounter,
    retries: IntCounter,
    rejected_points: IntCounter,
    dropped_points: IntCounterVec,
    split_batches: IntCounter,
    last_success: Gauge,
    in_flight: IntGauge,
    send_seconds: Histogram,
}

impl Metrics {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        let m = Metrics {
            sent_points: IntCounter::new(
                "edgewatch_forward_sent_points_total",
                "Data points the aggregator acknowledged.",
            )?,
            sent_batches: IntCounter::new(
                "edgewatch_forward_sent_batches_total",
                "Batches the aggregator acknowledged.",
            )?,
            sent_bytes: IntCounter::new(
                "edgewatch_forward_sent_bytes_total",
                "Bytes of acknowledged batches as sent (compressed gRPC frames).",
            )?,
            retries: IntCounter::new(
                "edgewatch_forward_retries_total",
                "Export attempts that failed with a retryable error and were retried.",
            )?,
            rejected_points: IntCounter::new(
                "edgewatch_forward_rejected_points_total",
                "Data points the aggregator rejected as invalid; removed from the buffer, not retried.",
            )?,
            dropped_points: IntCounterVec::new(
                Opts::new(
                    "edgewatch_forward_dropped_points_total",
                    "Data points removed from the buffer undelivered by the forwarder, by reason (too_large: an entry the aggregator refuses as too large alone).",
                ),
                &["reason"],
            )?,
            split_batches: IntCounter::new(
                "edgewatch_forward_split_batches_total",
                "Batches the aggregator refused as too large, halved and sent again.",
            )?,
            last_success: Gauge::new(
                "edgewatch_forward_last_success_timestamp_seconds",
                "When the aggregator last acknowledged a batch (Unix seconds).",
            )?,
            in_flight: IntGauge::new("edgewatch_forward_in_flight_batches", "Batches being sent.")?,
            send_seconds: Histogram::with_opts(HistogramOpts::new(
                "edgewatch_forward_send_duration_seconds",
                "Time from the first attempt to the acknowledgement of a batch.",
            ))?,
        };
        r.register(Box::new(m.sent_points.clone()))?;
        r.register(Box::new(m.sent_batches.clone()))?;
        r.register(Box::new(m.sent_bytes.clone()))?;
        r.register(Box::new(m.retries.clone()))?;
        r.register(Box::new(m.rejected_points.clone()))?;
        r.register(Box::new(m.dropped_points.clone()))?;
        m.dropped_points.with_label_values(&["too_large"]);
        r.register(Box::new(m.split_batches.clone()))?;
        r.register(Box::new(m.last_success.clone()))?;
        r.register(Box::new(m.in_flight.clone()))?;
        r.register(Box::new(m.send_seconds.clone()))?;
        Ok(m)
    }
}

pub struct Forwarder {
    buffer: Buffer,
    opts: ForwardOptions,
    channel: Channel,
    /// Shared by the batches in flight; a batch holds it only while it compresses.
    encoder: Arc<Mutex<FrameEncoder>>,
    metrics: Metrics,
    token: Option<Arc<BearerToken>>,
    /// Below the smallest batch the aggregator refused as too large.
    learned_limit: Arc<AtomicUsize>,
}

/// The channel to the endpoint: over TLS for `https://` (never a plaintext
/// fallback), its own connector re-reading the client certificate on change.
fn channel(
    endpoint: Endpoint,
    opts: &ForwardOptions,
    tls_metrics: &edgewatch_tls::TlsMetrics,
) -> Result<Channel, ForwardError> {
    if endpoint.uri().scheme_str() == Some("https") {
        let tls = opts.tls.clone().unwrap_or_default();
        let connector = edgewatch_tls::client::TlsConnector::new(&tls, &[b"h2"], tls_metrics)?;
        return Ok(endpoint.connect_with_connector_lazy(connector));
    }
    if opts.tls.is_some() {
        return Err(ForwardError::TlsOverHttp(opts.endpoint.clone()));
    }
    Ok(endpoint.connect_lazy())
}

/// How a batch ended.
enum Sent {
    /// Acknowledged (possibly with some points rejected): drop through `last`.
    Done { last: Seq },
    /// Shutdown came first: leave it in the buffer.
    Abandoned,
}

/// Largest response we accept from the aggregator.
const MAX_RESPONSE: usize = 1 << 20;
/// Entries per batch at most, whatever their size.
const MAX_BATCH_ENTRIES: usize = 4096;
/// zstd level of forwarded batches. The context is kept for the collector's
/// lifetime, and by zstd's parameter tables for inputs up to 256 KiB level 1 uses
/// hash/chain tables of 2^14/2^13 entries where level 3 uses 2^17/2^16. Measured
/// cost: 2 % more bytes on the wire (a collector taking 10k points/s in batches of
/// 100: 5.62 instead of 5.51 B/point).
const ZSTD_LEVEL: i32 = 1;

impl Forwarder {
    /// Within a tokio runtime (the TLS files are watched).
    pub fn new(
        buffer: Buffer,
        opts: ForwardOptions,
        registry: &Registry,
        tls_metrics: &edgewatch_tls::TlsMetrics,
    ) -> Result<Self, ForwardError> {
        let endpoint = Endpoint::from_shared(opts.endpoint.clone())
            .map_err(|source| ForwardError::Endpoint {
                endpoint: opts.endpoint.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(opts.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = channel(endpoint, &opts, tls_metrics)?;
        let encoder = FrameEncoder::new(ZSTD_LEVEL).map_err(ForwardError::Compressor)?;
        let metrics = Metrics::new(registry)?;
        let token = match &opts.bearer_token_file {
            Some(path) => Some(Arc::new(BearerToken::open(path)?)),
            None => None,
        };
        Ok(Forwarder {
            buffer,
            opts,
            channel,
            encoder: Arc::new(Mutex::new(encoder)),
            metrics,
            token,
            learned_limit: Arc::new(AtomicUsize::new(usize::MAX)),
        })
    }

    /// Drains until `shutdown`; batches still in flight then stay in the buffer and
    /// are re-sent after restart (the aggregator drops the duplicates).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut next: Seq = self.buffer.first_seq().unwrap_or(0);
        let mut in_flight = FuturesOrdered::new();
        loop {
            while in_flight.len() < self.opts.max_in_flight {
                let entries = match self.read(next).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the buffer failed; retrying in 1s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.cancelled() => return,
                        }
                    }
                };
                let Some(last) = entries.last() else { break };
                next = last.seq + 1;
                self.metrics.in_flight.inc();
                in_flight.push_back(self.send(entries, shutdown.clone()));
            }
            if in_flight.is_empty() {
                // Idle: wait for data, then a little longer so that a trickle of small
                // requests goes out as one batch.
                tokio::select! {
                    _ = self.buffer.wait_for_entries(next) => {}
                    _ = shutdown.cancelled() => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.opts.linger) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
            let window_open = in_flight.len() < self.opts.max_in_flight;
            tokio::select! {
                done = in_flight.next() => {
                    self.metrics.in_flight.dec();
                    match done {
                        Some(Sent::Done { last }) => {
                            if let Err(e) = self.buffer.ack(last) {
                                tracing::error!(error = %e, seq = last, "acknowledging delivered entries failed; they may be re-sent");
                            }
                        }
                        Some(Sent::Abandoned) | None => return,
                    }
                }
                _ = self.buffer.wait_for_entries(next), if window_open => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn read(&self, from: Seq) -> Result<Vec<Entry>, BufferError> {
        let buffer = self.buffer.clone();
        let max_bytes = self
            .opts
            .max_batch_bytes
            .min(self.learned_limit.load(Ordering::Relaxed));
        tokio::task::spawn_blocking(move || buffer.read(from, MAX_BATCH_ENTRIES, max_bytes))
            .await
            .map_err(|e| BufferError::io("reading the buffer", std::io::Error::other(e)))?
    }

    /// Sends `entries` in order; a batch the aggregator finds too large is halved
    /// and its halves sent in turn (see [`too_large`]).
    fn send(
        &self,
        entries: Vec<Entry>,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = Sent> {
        let link = Link {
            channel: self.channel.clone(),
            encoder: self.encoder.clone(),
            metrics: self.metrics.clone(),
            opts: self.opts.clone(),
            buffer: self.buffer.clone(),
            token: self.token.clone(),
            learned_limit: self.learned_limit.clone(),
        };
        let last = entries[entries.len() - 1].seq;
        async move {
            let started = std::time::Instant::now();
            let mut pending = vec![entries];
            while let Some(entries) = pending.pop() {
                match link.deliver(entries, &shutdown).await {
                    Answer::Done => {}
                    Answer::Abandoned => return Sent::Abandoned,
                    Answer::TooLarge { entries, bytes } => {
                        link.learn_limit(bytes);
                        if entries.len() == 1 {
                            link.drop_too_large(&entries[0], bytes);
                            continue;
                        }
                        link.metrics.split_batches.inc();
                        let (first, second) = halves(entries);
                        pending.push(second);
                        pending.push(first);
                    }
                }
            }
            link.metrics
                .send_seconds
                .observe(started.elapsed().as_secs_f64());
            Sent::Done { last }
        }
    }
}

/// What one batch's sender needs.
struct Link {
    channel: Channel,
    encoder: Arc<Mutex<FrameEncoder>>,
    metrics: Metrics,
    opts: ForwardOptions,
    buffer: Buffer,
    token: Option<Arc<BearerToken>>,
    learned_limit: Arc<AtomicUsize>,
}

/// How the aggregator answered a batch.
enum Answer {
    /// Acknowledged (possibly with some points rejected), or dropped from the
    /// buffer while waiting.
    Done,
    /// Shutdown came first: leave it in the buffer.
    Abandoned,
    /// Refused as too large (`bytes` uncompressed): retrying it as is cannot help.
    TooLarge { entries: Vec<Entry>, bytes: usize },
}

impl Link {
    /// Sends one batch until the aggregator answers it for good; retries
    /// retryable failures with backoff.
    async fn deliver(&self, entries: Vec<Entry>, shutdown: &CancellationToken) -> Answer {
        let (metrics, opts) = (&self.metrics, &self.opts);
        let mut channel = self.channel.clone();
        let mut backoff = opts.initial_backoff;
        let mut batch = Batch::new(entries, &self.buffer, &self.encoder);
        let last = batch.entries[batch.entries.len() - 1].seq;
        loop {
            // Entries the buffer dropped while this batch waited (cap, max_age) are
            // counted as dropped there; delivering them too would count them twice.
            match self.buffer.first_seq() {
                Some(head) if head <= last => batch.trim_below(head, &self.buffer, &self.encoder),
                _ => return Answer::Done,
            }
            let Some(frame) = batch.frame.clone() else {
                // Over gRPC's 4 GiB frame: cannot be, batches are capped far below.
                tracing::error!(
                    points = batch.points,
                    "batch too large for one gRPC message; dropping it"
                );
                metrics.rejected_points.inc_by(batch.points);
                return Answer::Done;
            };
            let bytes = frame.len() as u64;
            let attempt = export(&mut channel, frame, &batch.info, self.token.as_deref());
            let result = tokio::select! {
                r = attempt => r,
                _ = shutdown.cancelled() => return Answer::Abandoned,
            };
            match result {
                Ok(rejected) => {
                    let rejected = rejected.min(batch.points);
                    metrics.sent_points.inc_by(batch.points - rejected);
                    metrics.rejected_points.inc_by(rejected);
                    metrics.sent_batches.inc();
                    metrics.sent_bytes.inc_by(bytes);
                    metrics.last_success.set(unix_seconds());
                    return Answer::Done;
                }
                Err(status) if too_large(&status) => {
                    tracing::debug!(
                        message = status.message(),
                        bytes = batch.body_len,
                        entries = batch.entries.len(),
                        "the aggregator refused a batch as too large"
                    );
                    return Answer::TooLarge {
                        bytes: batch.body_len,
                        entries: batch.entries,
                    };
                }
                Err(status) if edgewatch_otlp::client::is_retryable(status.code()) => {
                    metrics.retries.inc();
                    let wait = retry_delay(&status).unwrap_or_else(|| jitter(backoff));
                    if status.code() == tonic::Code::Unauthenticated {
                        tracing::warn!(message = status.message(), ?wait, "the aggregator refused the credentials; keeping the batch and retrying");
                    }
                    tracing::debug!(code = ?status.code(), message = status.message(), ?wait, "export failed; retrying");
                    backoff = (backoff * 2).min(opts.max_backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return Answer::Abandoned,
                    }
                }
                Err(status) => {
                    tracing::error!(
                        code = ?status.code(), message = status.message(), points = batch.points,
                        first_seq = batch.info.first_seq, last_seq = last,
                        "aggregator rejected a batch as invalid; dropping it (not retryable)"
                    );
                    metrics.rejected_points.inc_by(batch.points);
                    return Answer::Done;
                }
            }
        }
    }

    /// Later batches stay below a size the aggregator refused (until restart: its
    /// limit is configuration).
    fn learn_limit(&self, refused: usize) {
        let below = refused.saturating_sub(1).max(1);
        let was = self.learned_limit.fetch_min(below, Ordering::Relaxed);
        if below < was && below < self.opts.max_batch_bytes {
            tracing::warn!(
                refused_bytes = refused,
                max_batch_bytes = self.opts.max_batch_bytes,
                "the aggregator refused a batch as too large: forward.max_batch_bytes is over its receivers.otlp.max_request_bytes; sending smaller batches"
            );
        }
    }

    /// One entry the aggregator refuses as too large: it can never be delivered.
    fn drop_too_large(&self, entry: &Entry, bytes: usize) {
        tracing::error!(
            seq = entry.seq,
            points = entry.points,
            bytes,
            "the aggregator refused a single entry as too large; dropping it"
        );
        self.metrics
            .dropped_points
            .with_label_values(&["too_large"])
            .inc_by(entry.points);
    }
}

/// RESOURCE_EXHAUSTED without RetryInfo: the request itself is too large (the
/// aggregator's size checks; its backpressure always carries RetryInfo). The OTel
/// Collector's OTLP exporter draws the same line: it retries RESOURCE_EXHAUSTED
/// only with RetryInfo, as the OTLP specification says ("Failures", "Throttling").
fn too_large(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::ResourceExhausted && retry_delay(s).is_none()
}

/// Splits a batch of two or more entries in two of about equal bytes.
fn halves(mut entries: Vec<Entry>) -> (Vec<Entry>, Vec<Entry>) {
    let total: usize = entries.iter().map(|e| e.payload.len()).sum();
    let mut acc = 0;
    let mut cut = entries
        .iter()
        .position(|e| {
            acc += e.payload.len();
            acc * 2 >= total
        })
        .map_or(1, |i| i + 1);
    cut = cut.clamp(1, entries.len() - 1);
    let second = entries.split_off(cut);
    (entries, second)
}

/// One forwarded request: its entries, their concatenated and compressed body, and
/// its headers. The body is compressed once and re-sent as is on retries.
struct Batch {
    entries: Vec<Entry>,
    frame: Option<Frame>,
    info: BatchInfo,
    points: u64,
    /// Uncompressed: what the aggregator's size limit applies to.
    body_len: usize,
}

impl Batch {
    fn new(entries: Vec<Entry>, buffer: &Buffer, encoder: &Mutex<FrameEncoder>) -> Batch {
        let info = BatchInfo {
            collector_id: buffer.instance_id().to_string(),
            first_seq: entries[0].seq,
            entry_lens: entries.iter().map(|e| e.payload.len()).collect(),
            floor: buffer.first_seq().unwrap_or(0).min(entries[0].seq),
        };
        let frame = concat(&entries, |body| {
            encoder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .frame(body)
        });
        Batch {
            frame,
            points: entries.iter().map(|e| e.points).sum(),
            body_len: info.entry_lens.iter().sum(),
            info,
            entries,
        }
    }

    /// Drops the entries below `head` (no longer in the buffer).
    fn trim_below(&mut self, head: Seq, buffer: &Buffer, encoder: &Mutex<FrameEncoder>) {
        if self.entries[0].seq < head {
            let entries = std::mem::take(&mut self.entries)
                .into_iter()
                .filter(|e| e.seq >= head)
                .collect();
            *self = Batch::new(entries, buffer, encoder);
        }
    }
}

/// Entries are encoded `ExportMetricsServiceRequest`s; their concatenation is the
/// encoding of one request holding all their resource metrics.
fn concat<T>(entries: &[Entry], then: impl FnOnce(&[u8]) -> T) -> T {
    if let [one] = entries {
        return then(&one.payload);
    }
    let mut buf = BytesMut::with_capacity(entries.iter().map(|e| e.payload.len()).sum());
    for e in entries {
        buf.extend_from_slice(&e.payload);
    }
    then(&buf)
}

/// One export call; Ok carries the number of rejected points.
async fn export(
    channel: &mut Channel,
    frame: Frame,
    info: &BatchInfo,
    token: Option<&BearerToken>,
) -> Result<u64, tonic::Status> {
    let mut headers = info.to_headers().to_vec();
    if let Some(t) = token {
        headers.push(("authorization", t.header().to_string()));
    }
    let resp = edgewatch_otlp::client::export(channel, frame, &headers, MAX_RESPONSE).await?;
    Ok(resp
        .partial_success
        .map(|p| p.rejected_data_points.max(0) as u64)
        .unwrap_or(0))
}

fn retry_delay(s: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    s.get_details_retry_info().and_then(|r| r.retry_delay)
}

/// "Full jitter": uniformly in [d/2, d], so reconnecting collectors spread out.
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forward.endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("forward.tls: {0}")]
    Tls(#[from] edgewatch_tls::TlsError),
    #[error("forward.tls is set but forward.endpoint {0:?} is not https://")]
    TlsOverHttp(String),
    #[error("forward.bearer_token_file: {0}")]
    Token(#[from] edgewatch_config::auth::TokenFileError),
    #[error("creating the zstd compressor: {0}")]
    Compressor(std::io::Error),
    #[error("registering forwarder metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn retryable_codes_follow_otlp() {
        for c in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Unauthenticated,
        ] {
            assert!(edgewatch_otlp::client::is_retryable(c), "{c:?}");
        }
        for c in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unimplemented,
        ] {
            assert!(!edgewatch_otlp::client::is_retryable(c), "{c:?}");
        }
    }

    #[tokio::test]
    async fn tls_needs_an_https_endpoint_and_its_files() {
        let opts = |endpoint: &str, tls: Option<&str>| ForwardOptions {
            endpoint: endpoint.into(),
            timeout: Duration::from_secs(1),
            max_batch_bytes: 1 << 20,
            max_in_flight: 1,
            linger: Duration::ZERO,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            tls: tls.map(|t| edgewatch_config::parse(t, "test").unwrap()),
            bearer_token_file: None,
        };
        let metrics = edgewatch_tls::TlsMetrics::register(&Registry::new()).unwrap();
        let try_channel = |o: ForwardOptions| {
            let ep = Endpoint::from_shared(o.endpoint.clone()).unwrap();
            channel(ep, &o, &metrics).map(|_| ())
        };
        let e = try_channel(opts(
            "http://core:4317",
            Some("{insecure_skip_verify: true}"),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not https://"), "{e}");
        let e = try_channel(opts(
            "https://core:4317",
            Some("{ca_file: /nonexistent/ca.pem}"),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        try_channel(opts("https://core:4317", None)).expect("public roots");
        try_channel(opts("http://core:4317", None)).expect("plaintext");
    }

    #[test]
    fn too_large_is_resource_exhausted_without_retry_info() {
        use edgewatch_otlp::ExportError;
        let busy = ExportError::ResourceExhausted {
            message: "the aggregator holds 32 MiB of requests already; retry later".into(),
            retry_after: Duration::from_secs(1),
        };
        assert!(!too_large(&busy.grpc_status()), "backpressure is retried");
        assert!(too_large(
            &ExportError::TooLarge("body".into()).grpc_status()
        ));
        // The server codec's check and tonic's frame check (mapped from OUT_OF_RANGE).
        assert!(too_large(&tonic::Status::resource_exhausted(
            "request of 5000000 bytes exceeds the limit of 4194304 bytes"
        )));
        assert!(!too_large(&tonic::Status::unavailable("down")));
    }

    #[test]
    fn halves_are_of_about_equal_bytes() {
        let entries = |sizes: &[usize]| {
            sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| Entry {
                    seq: i as u64,
                    points: 1,
                    appended_at_ms: 0,
                    payload: bytes::Bytes::from(vec![0u8; n]),
                })
                .collect::<Vec<_>>()
        };
        let seqs = |e: &[Entry]| e.iter().map(|e| e.seq).collect::<Vec<_>>();
        for (sizes, first) in [
            (&[10, 10][..], vec![0]),
            (&[10, 10, 10, 10], vec![0, 1]),
            (&[1, 1, 1, 100], vec![0, 1, 2]),
            (&[100, 1, 1, 1], vec![0]),
        ] {
            let (a, b) = halves(entries(sizes));
            assert_eq!(seqs(&a), first, "{sizes:?}");
            assert_eq!(a.len() + b.len(), sizes.len());
            assert_eq!(b[0].seq, a.len() as u64);
        }
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(200));
            assert!(j >= Duration::from_millis(100) && j <= Duration::from_millis(200));
        }
    }
}
