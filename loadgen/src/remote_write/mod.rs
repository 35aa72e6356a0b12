//! The remote write counting sink: an HTTP server taking Prometheus remote write 1.0
//! (`POST /api/v1/write`, snappy block format, protobuf `prometheus.WriteRequest`) that
//! counts samples, series, metadata entries, duplicates (a series' timestamp seen
//! twice) and out-of-order samples, and keeps the highest timestamp. It can answer a
//! fraction of requests with an error (5xx or 429) to exercise a sender's retries.
//! Stats: [`RemoteWriteSink::stats`] and `GET /stats` (JSON).

mod count;
pub mod proto;

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::args::parse_duration;
pub use count::{Seen, Timestamps};

/// The remote write path Prometheus-compatible receivers serve.
pub const WRITE_PATH: &str = "/api/v1/write";
const MAX_BODY: usize = 64 << 20;

/// Flags of `edgewatch loadgen remote-write-sink`.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteWriteSinkArgs {
    /// Address to serve `POST /api/v1/write` and `GET /stats` on.
    #[arg(long, default_value = "127.0.0.1:9201")]
    pub listen: SocketAddr,
    /// Answer this fraction of requests (0..1, spread evenly) with `--fail-status`.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub fail_fraction: f64,
    /// The injected answer: a 5xx or 429.
    #[arg(long, default_value_t = 503, value_parser = parse_fail_status)]
    pub fail_status: u16,
    /// `Retry-After` (whole seconds) on injected failures.
    #[arg(long, value_parser = parse_duration)]
    pub retry_after: Option<Duration>,
    /// No per-second stats line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl RemoteWriteSinkArgs {
    /// A sink on `listen` that accepts everything.
    pub fn new(listen: SocketAddr) -> Self {
        RemoteWriteSinkArgs {
            listen,
            fail_fraction: 0.0,
            fail_status: 503,
            retry_after: None,
            quiet: true,
        }
    }
}

/// A flag of the remote write sink that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkArgError {
    #[error("{0:?} is not a fraction between 0 and 1")]
    Fraction(String),
    #[error("{0:?}: the injected status must be 429 or 5xx")]
    Status(String),
}

fn parse_fraction(s: &str) -> Result<f64, SinkArgError> {
    match f64::from_str(s.trim()) {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(SinkArgError::Fraction(s.to_string())),
    }
}

fn parse_fail_status(s: &str) -> Result<u16, SinkArgError> {
    match u16::from_str(s.trim()) {
        Ok(c) if c == 429 || (500..=599).contains(&c) => Ok(c),
        _ => Err(SinkArgError::Status(s.to_string())),
    }
}

/// A snapshot of the sink's counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RemoteWriteStats {
    pub uptime_s: f64,
    /// Requests received (all outcomes), accepted, answered with the injected error,
    /// and refused as undecodable (bad snappy, bad protobuf, wrong encoding).
    pub received_requests: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub malformed_requests: u64,
    /// Counted in accepted requests only.
    pub samples: u64,
    /// Samples of failed requests (the sender must send them again).
    pub failed_samples: u64,
    /// Time series entries (one series may be in many requests) and distinct series.
    pub series_entries: u64,
    pub series: u64,
    pub metadata: u64,
    pub histograms: u64,
    pub exemplars: u64,
    /// Series entries without any label.
    pub unlabelled_series: u64,
    /// Samples whose series already had a sample at that timestamp.
    pub duplicates: u64,
    /// Samples older than the newest earlier sample of their series.
    pub out_of_order: u64,
    /// Highest and lowest sample timestamp (ms), `null` before the first sample.
    pub highest_timestamp_ms: Option<i64>,
    pub lowest_timestamp_ms: Option<i64>,
    /// Body bytes as received (snappy) and after decompression.
    pub compressed_bytes: u64,
    pub bytes: u64,
}

struct Shared {
    args: RemoteWriteSinkArgs,
    started: Instant,
    received: AtomicU64,
    failed_requests: AtomicU64,
    failed_samples: AtomicU64,
    malformed: AtomicU64,
    totals: Mutex<Totals>,
}

#[derive(Default)]
struct Totals {
    requests: u64,
    counts: count::RequestCounts,
    book: count::SeriesBook,
    compressed_bytes: u64,
    bytes: u64,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("Content-Encoding {0:?}: remote write bodies are snappy (block format)")]
    Encoding(String),
    #[error("bad snappy body: {0}")]
    Snappy(#[from] snap::Error),
    #[error("bad WriteRequest: {0}")]
    Protobuf(#[from] crate::wire::WireError),
}

impl Shared {
    /// Whether request `n` (1-based) gets the injected error: `fail_fraction` of them,
    /// evenly spread.
    fn fails(&self, n: u64) -> bool {
        let f = self.args.fail_fraction;
        f > 0.0 && (n as f64 * f).floor() > ((n - 1) as f64 * f).floor()
    }

    fn handle(&self, headers: &HeaderMap, body: &[u8]) -> Result<bool, Refusal> {
        let n = self.received.fetch_add(1, Relaxed) + 1;
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !encoding.eq_ignore_ascii_case("snappy") {
            return Err(Refusal::Encoding(encoding.to_string()));
        }
        let raw = snap::raw::Decoder::new().decompress_vec(body)?;
        let walk = count::walk(&raw)?;
        if self.fails(n) {
            self.failed_requests.fetch_add(1, Relaxed);
            self.failed_samples.fetch_add(walk.counts.samples, Relaxed);
            return Ok(false);
        }
        let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        t.requests += 1;
        t.compressed_bytes += body.len() as u64;
        t.bytes += raw.len() as u64;
        let c = &walk.counts;
        let sum = &mut t.counts;
        sum.series += c.series;
        sum.samples += c.samples;
        sum.histograms += c.histograms;
        sum.exemplars += c.exemplars;
        sum.metadata += c.metadata;
        sum.unlabelled += c.unlabelled;
        t.book.record(&walk);
        Ok(true)
    }

    fn stats(&self) -> RemoteWriteStats {
        let t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        RemoteWriteStats {
            uptime_s: self.started.elapsed().as_secs_f64(),
            received_requests: self.received.load(Relaxed),
            requests: t.requests,
            failed_requests: self.failed_requests.load(Relaxed),
            malformed_requests: self.malformed.load(Relaxed),
            samples: t.counts.samples,
            failed_samples: self.failed_samples.load(Relaxed),
            series_entries: t.counts.series,
            series: t.book.len() as u64,
            metadata: t.counts.metadata,
            histograms: t.counts.histograms,
            exemplars: t.counts.exemplars,
            unlabelled_series: t.counts.unlabelled,
            duplicates: t.book.duplicates,
            out_of_order: t.book.out_of_order,
            highest_timestamp_ms: t.book.highest_ms,
            lowest_timestamp_ms: t.book.lowest_ms,
            compressed_bytes: t.compressed_bytes,
            bytes: t.bytes,
        }
    }
}

async fn write(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    // Decompression and the walk are CPU work: off the I/O threads.
    let s = shared.clone();
    let outcome = tokio::task::spawn_blocking(move || s.handle(&headers, &body)).await;
    match outcome {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => {
            let status = StatusCode::from_u16(shared.args.fail_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut r = (status, "edgewatch remote write sink: injected fault").into_response();
            if let Some(after) = shared.args.retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, after.as_secs().into());
            }
            r
        }
        Ok(Err(e)) => {
            shared.malformed.fetch_add(1, Relaxed);
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&shared.stats()).expect("stats serialize"),
    )
        .into_response()
}

/// A running remote write sink.
pub struct RemoteWriteSink {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RemoteWriteSink {
    /// Binds `args.listen` (port 0 picks one) and serves in the background.
    pub async fn start(args: RemoteWriteSinkArgs) -> std::io::Result<RemoteWriteSink> {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            args,
            started: Instant::now(),
            received: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            failed_samples: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            totals: Mutex::new(Totals::default()),
        });
        let app = Router::new()
            .route(WRITE_PATH, post(write))
            .route("/stats", get(stats))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(RemoteWriteSink {
            shared,
            addr,
            stop: Some(tx),
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to configure as a remote write endpoint.
    pub fn url(&self) -> String {
        format!("http://{}{WRITE_PATH}", self.addr)
    }

    pub fn stats(&self) -> RemoteWriteStats {
        self.shared.stats()
    }

    /// Stops serving and returns the final stats.
    pub async fn stop(mut self) -> RemoteWriteStats {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        self.shared.stats()
    }
}

impl Drop for RemoteWriteSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `edgewatch loadgen remote-write-sink`: serves until `shutdown`, a stats line per
/// second on stderr (unless `--quiet`), the final stats as JSON on stdout.
pub async fn run_remote_write_sink(
    args: RemoteWriteSinkArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let quiet = args.quiet;
    let listen = args.listen;
    let sink = RemoteWriteSink::start(args)
        .await
        .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
    if !quiet {
        eprintln!(
            "edgewatch loadgen remote-write-sink: {} (stats: GET http://{}/stats)",
            sink.url(),
            sink.local_addr()
        );
    }
    let shared = sink.shared.clone();
    let ticker = tokio::spawn(async move {
        if quiet {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = (Instant::now(), 0u64);
        loop {
            tick.tick().await;
            let s = shared.stats();
            if s.samples == last.1 {
                continue;
            }
            let now = Instant::now();
            let rate = (s.samples - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, s.samples);
            eprintln!(
                "[rw-sink] {rate:>10.0} samples/s  samples {}  series {}  dup {}  ooo {}  failed req {}",
                s.samples, s.series, s.duplicates, s.out_of_order, s.failed_requests
            );
        }
    });
    shutdown.await;
    ticker.abort();
    let stats = sink.stop().await;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::proto::{encode_body, series, MetricMetadata, WriteRequest};
    use super::*;

    async fn post(client: &reqwest::Client, url: &str, req: &WriteRequest) -> u16 {
        client
            .post(url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(encode_body(req).unwrap())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn request(t0: i64, n: usize) -> WriteRequest {
        WriteRequest {
            timeseries: (0..n)
                .map(|i| {
                    let s = i.to_string();
                    series(
                        &[("__name__", "m"), ("i", &s)],
                        &[(1.0, t0), (2.0, t0 + 15_000)],
                    )
                })
                .collect(),
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "m".into(),
                help: "a counter".into(),
                unit: String::new(),
            }],
        }
    }

    #[tokio::test]
    async fn counts_samples_duplicates_and_reordering() {
        let sink = RemoteWriteSink::start(RemoteWriteSinkArgs::new("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let c = reqwest::Client::new();
        assert_eq!(post(&c, &sink.url(), &request(1_000_000, 10)).await, 204);
        assert_eq!(post(&c, &sink.url(), &request(1_030_000, 10)).await, 204);
        // The first request again (a retry): 20 duplicates.
        assert_eq!(post(&c, &sink.url(), &request(1_000_000, 10)).await, 204);
        // Older than everything, not seen before: out of order.
        assert_eq!(post(&c, &sink.url(), &request(500_000, 2)).await, 204);
        let bad = c.post(sink.url()).body("not snappy").send().await.unwrap();
        assert_eq!(bad.status().as_u16(), 400);
        let s = sink.stop().await;
        assert_eq!(
            (
                s.requests,
                s.samples,
                s.series,
                s.series_entries,
                s.metadata
            ),
            (4, 64, 10, 32, 4)
        );
        assert_eq!((s.duplicates, s.out_of_order), (20, 4));
        assert_eq!(
            (s.highest_timestamp_ms, s.lowest_timestamp_ms),
            (Some(1_045_000), Some(500_000))
        );
        assert_eq!((s.received_requests, s.malformed_requests), (5, 1));
    }

    #[tokio::test]
    async fn fails_the_configured_fraction() {
        let mut args = RemoteWriteSinkArgs::new("127.0.0.1:0".parse().unwrap());
        args.fail_fraction = 0.25;
        args.fail_status = 429;
        args.retry_after = Some(Duration::from_secs(2));
        let sink = RemoteWriteSink::start(args).await.unwrap();
        let c = reqwest::Client::new();
        let mut statuses = Vec::new();
        for k in 0..8 {
            statuses.push(post(&c, &sink.url(), &request(k * 60_000, 3)).await);
        }
        assert_eq!(statuses, [204, 204, 204, 429, 204, 204, 204, 429]);
        let s = sink.stats();
        assert_eq!(
            (s.failed_requests, s.failed_samples, s.samples),
            (2, 12, 36)
        );
        let r = c
            .post(sink.url())
            .header("Content-Encoding", "snappy")
            .body(encode_body(&request(0, 1)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }

    #[test]
    fn flags_parse() {
        assert_eq!(parse_fraction("0.1"), Ok(0.1));
        assert!(parse_fraction("1.5").is_err());
        assert_eq!(parse_fail_status("429"), Ok(429));
        assert!(parse_fail_status("404").is_err());
    }
}
