//! The counting sink: an OTLP metrics receiver (gRPC and HTTP on one port) that counts
//! requests and data points, checks `edgewatch_loadgen_sequence` sequences per series,
//! and can inject faults. Stats are readable from [`Sink::stats`] and as JSON at
//! `GET /stats`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use serde::Serialize;
use tokio::sync::oneshot;
use tonic::codec::CompressionEncoding;

use crate::args::{FailCode, SinkArgs};
use crate::client::{GRPC_EXPORT_PATH, HTTP_EXPORT_PATH};
use crate::codec::RawCodec;
use crate::report::SeriesRun;
use crate::wire;

const MAX_BODY: usize = 64 << 20;
/// Sequence numbers above this are counted (`untracked`) but not checked.
const MAX_TRACKED_SEQ: u64 = 1 << 24;
const MAX_MISSING_RANGES: usize = 100;

/// Per-series sequence state.
#[derive(Default)]
struct Track {
    bits: Vec<u64>,
    max: u64,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    untracked: u64,
}

impl Track {
    fn record(&mut self, seq: u64) {
        if seq == 0 || seq > MAX_TRACKED_SEQ {
            self.untracked += 1;
            return;
        }
        let i = (seq - 1) as usize;
        let (w, b) = (i / 64, i % 64);
        if self.bits.len() <= w {
            self.bits.resize((w + 1).next_power_of_two(), 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicates += 1;
            return;
        }
        self.bits[w] |= 1 << b;
        self.distinct += 1;
        if seq < self.max {
            self.out_of_order += 1;
        }
        self.max = self.max.max(seq);
    }

    fn has(&self, seq: u64) -> bool {
        let i = (seq - 1) as usize;
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Missing sequence ranges below the highest seen.
    fn missing(&self, limit: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut seq = 1;
        while seq < self.max && out.len() < limit {
            if self.has(seq) {
                seq += 1;
                continue;
            }
            let from = seq;
            while seq < self.max && !self.has(seq) {
                seq += 1;
            }
            out.push((from, seq - 1));
        }
        out
    }
}

/// A range of sequence numbers never received for one series, below its highest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MissingRange {
    pub series: String,
    pub from: u64,
    pub to: u64,
}

/// Sequence check results of one loadgen instance (`service.instance.id`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SeqStats {
    /// Series seen.
    pub series: u64,
    /// Sequence points received (including duplicates).
    pub points: u64,
    /// Sequence numbers missing below each series' highest (loss or still in flight).
    pub gaps: u64,
    /// Points whose sequence number had already been received.
    pub duplicates: u64,
    /// Points that arrived after a higher sequence number of their series.
    pub out_of_order: u64,
    /// Points with a sequence number of 0 or too large to track.
    pub untracked: u64,
    /// The first missing ranges (at most 100).
    pub missing: Vec<MissingRange>,
    /// Highest sequence number per series, run-length encoded over the series seen,
    /// sorted by name (a run covers the seen series from `from` to `to`).
    pub max_seq: Vec<SeriesRun>,
}

/// A snapshot of the sink's counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SinkStats {
    pub uptime_s: f64,
    /// Requests received (all outcomes).
    pub received_requests: u64,
    /// Requests acknowledged and counted.
    pub requests: u64,
    /// Data points in counted requests.
    pub points: u64,
    /// Request bytes (uncompressed) of counted requests.
    pub bytes: u64,
    /// Requests answered with the `--fail-with` error, and their points.
    pub failed_requests: u64,
    pub failed_points: u64,
    /// Requests acknowledged but not counted (`--drop-request`), and their points.
    pub dropped_requests: u64,
    pub dropped_points: u64,
    /// Requests that could not be decoded.
    pub malformed_requests: u64,
    /// Sequence checks per `service.instance.id`.
    pub sequence: BTreeMap<String, SeqStats>,
}

impl SinkStats {
    /// Gaps over all instances.
    pub fn gaps(&self) -> u64 {
        self.sequence.values().map(|s| s.gaps).sum()
    }

    /// Duplicates over all instances.
    pub fn duplicates(&self) -> u64 {
        self.sequence.values().map(|s| s.duplicates).sum()
    }

    /// Out-of-order points over all instances.
    pub fn out_of_order(&self) -> u64 {
        self.sequence.values().map(|s| s.out_of_order).sum()
    }
}

enum Outcome {
    Ok,
    Fail(FailCode),
    Malformed(String),
}

struct Shared {
    fail_with: Option<FailCode>,
    fail_every: u64,
    drop: HashSet<u64>,
    delay: Option<Duration>,
    started: Instant,
    received: AtomicU64,
    requests: AtomicU64,
    points: AtomicU64,
    bytes: AtomicU64,
    failed_requests: AtomicU64,
    failed_points: AtomicU64,
    dropped_requests: AtomicU64,
    dropped_points: AtomicU64,
    malformed: AtomicU64,
    /// instance -> series -> track.
    seq: Mutex<HashMap<String, HashMap<String, Track>>>,
}

impl Shared {
    fn new(args: &SinkArgs) -> Self {
        Shared {
            fail_with: args.fail_with,
            fail_every: args.fail_every.max(1) as u64,
            drop: args.drop_request.iter().copied().collect(),
            delay: args.delay,
            started: Instant::now(),
            received: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            points: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            failed_points: AtomicU64::new(0),
            dropped_requests: AtomicU64::new(0),
            dropped_points: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            seq: Mutex::new(HashMap::new()),
        }
    }

    fn handle(&self, body: &[u8]) -> Outcome {
        let n = self.received.fetch_add(1, Relaxed) + 1;
        let summary = match wire::summarize(body) {
            Ok(s) => s,
            Err(e) => {
                self.malformed.fetch_add(1, Relaxed);
                return Outcome::Malformed(e.to_string());
            }
        };
        if let Some(code) = self.fail_with {
            if n.is_multiple_of(self.fail_every) {
                self.failed_requests.fetch_add(1, Relaxed);
                self.failed_points.fetch_add(summary.points, Relaxed);
                return Outcome::Fail(code);
            }
        }
        if self.drop.contains(&n) {
            self.dropped_requests.fetch_add(1, Relaxed);
            self.dropped_points.fetch_add(summary.points, Relaxed);
            return Outcome::Ok;
        }
        if !summary.seq.is_empty() {
            let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
            for p in &summary.seq {
                let inst = match seq.get_mut(p.instance) {
                    Some(i) => i,
                    None => seq.entry(p.instance.to_string()).or_default(),
                };
                let track = match inst.get_mut(p.series) {
                    Some(t) => t,
                    None => inst.entry(p.series.to_string()).or_default(),
                };
                track.record(p.seq);
            }
        }
        self.requests.fetch_add(1, Relaxed);
        self.points.fetch_add(summary.points, Relaxed);
        self.bytes.fetch_add(body.len() as u64, Relaxed);
        Outcome::Ok
    }

    fn stats(&self) -> SinkStats {
        let seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        let sequence = seq
            .iter()
            .map(|(inst, series)| {
                let mut names: Vec<&String> = series.keys().collect();
                names.sort();
                let mut st = SeqStats {
                    series: names.len() as u64,
                    ..Default::default()
                };
                for name in names {
                    let t = &series[name];
                    st.points += t.distinct + t.duplicates + t.untracked;
                    st.gaps += t.max - t.distinct.min(t.max);
                    st.duplicates += t.duplicates;
                    st.out_of_order += t.out_of_order;
                    st.untracked += t.untracked;
                    let room = MAX_MISSING_RANGES - st.missing.len();
                    if room > 0 && t.distinct < t.max {
                        st.missing
                            .extend(t.missing(room).into_iter().map(|(from, to)| MissingRange {
                                series: name.clone(),
                                from,
                                to,
                            }));
                    }
                    match st.max_seq.last_mut() {
                        Some(r) if r.seq == t.max => r.to = name.clone(),
                        _ => st.max_seq.push(SeriesRun {
                            from: name.clone(),
                            to: name.clone(),
                            seq: t.max,
                        }),
                    }
                }
                (inst.clone(), st)
            })
            .collect();
        SinkStats {
            uptime_s: self.started.elapsed().as_secs_f64(),
            received_requests: self.received.load(Relaxed),
            requests: self.requests.load(Relaxed),
            points: self.points.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            failed_requests: self.failed_requests.load(Relaxed),
            failed_points: self.failed_points.load(Relaxed),
            dropped_requests: self.dropped_requests.load(Relaxed),
            dropped_points: self.dropped_points.load(Relaxed),
            malformed_requests: self.malformed.load(Relaxed),
            sequence,
        }
    }

    /// Highest sequence per series of one instance.
    fn max_seq(&self, instance: &str) -> BTreeMap<String, u64> {
        let seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        seq.get(instance)
            .map(|m| m.iter().map(|(k, t)| (k.clone(), t.max)).collect())
            .unwrap_or_default()
    }
}

/// The gRPC Export method over raw bytes.
struct Export(Arc<Shared>);

impl tonic::server::UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, tonic::Status>> + Send>>;

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let outcome = shared.handle(req.get_ref());
            if let Some(d) = shared.delay {
                tokio::time::sleep(d).await;
            }
            match outcome {
                // An empty ExportMetricsServiceResponse encodes to no bytes.
                Outcome::Ok => Ok(tonic::Response::new(Bytes::new())),
                Outcome::Fail(code) => Err(tonic::Status::new(
                    code.grpc,
                    "edgewatch loadgen sink: injected fault",
                )),
                Outcome::Malformed(msg) => Err(tonic::Status::invalid_argument(msg)),
            }
        })
    }
}

async fn grpc_export(State(shared): State<Arc<Shared>>, req: axum::extract::Request) -> Response {
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(MAX_BODY);
    grpc.unary(Export(shared), req).await.into_response()
}

/// A request body that cannot be decompressed.
#[derive(Debug, thiserror::Error)]
enum DecompressError {
    #[error("bad {encoding} body: {source}")]
    Corrupt {
        encoding: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
}

fn decompress(encoding: &str, body: Bytes) -> Result<Bytes, DecompressError> {
    let mut out = Vec::with_capacity(body.len() * 4);
    let corrupt = |encoding| move |source| DecompressError::Corrupt { encoding, source };
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => return Ok(body),
        "gzip" => flate2::read::GzDecoder::new(&body[..])
            .take(MAX_BODY as u64)
            .read_to_end(&mut out)
            .map_err(corrupt("gzip"))?,
        "deflate" => flate2::read::ZlibDecoder::new(&body[..])
            .take(MAX_BODY as u64)
            .read_to_end(&mut out)
            .map_err(corrupt("deflate"))?,
        "zstd" => zstd::stream::read::Decoder::new(&body[..])
            .map_err(corrupt("zstd"))?
            .take(MAX_BODY as u64)
            .read_to_end(&mut out)
            .map_err(corrupt("zstd"))?,
        other => return Err(DecompressError::Unsupported(other.to_owned())),
    };
    Ok(Bytes::from(out))
}

async fn http_export(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_str = |h| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let json = header_str(header::CONTENT_TYPE).starts_with("application/json");
    let content_type = if json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    let body = match decompress(&header_str(header::CONTENT_ENCODING), body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let body = if json {
        match serde_json::from_slice::<ExportMetricsServiceRequest>(&body) {
            Ok(req) => Bytes::from(req.encode_to_vec()),
            Err(e) => {
                shared.malformed.fetch_add(1, Relaxed);
                return (StatusCode::BAD_REQUEST, format!("bad OTLP JSON: {e}")).into_response();
            }
        }
    } else {
        body
    };
    let outcome = shared.handle(&body);
    if let Some(d) = shared.delay {
        tokio::time::sleep(d).await;
    }
    match outcome {
        Outcome::Ok => {
            let body: &'static [u8] = if json { b"{}" } else { b"" };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Outcome::Fail(code) => {
            let status =
                StatusCode::from_u16(code.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "edgewatch loadgen sink: injected fault").into_response()
        }
        Outcome::Malformed(msg) => (StatusCode::BAD_REQUEST, msg).into_response(),
    }
}

async fn stats_handler(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&shared.stats()).expect("stats serialize"),
    )
        .into_response()
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(GRPC_EXPORT_PATH, post(grpc_export))
        .route(HTTP_EXPORT_PATH, post(http_export))
        .route("/stats", get(stats_handler))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// The sink's server TLS, when `--tls-cert-file` is given.
fn tls_of(
    args: &SinkArgs,
) -> anyhow::Result<Option<(edgewatch_tls::server::ServerTls, edgewatch_tls::TlsMetrics)>> {
    let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
        return Ok(None);
    };
    let cfg = edgewatch_config::tls::ServerTlsConfig {
        cert_file: cert.clone(),
        key_file: key.clone(),
        client_ca_file: args.tls_client_ca_file.clone(),
    };
    let metrics = edgewatch_tls::TlsMetrics::register(&prometheus::Registry::new())?;
    let tls = edgewatch_tls::server::ServerTls::new(&cfg, &metrics)?;
    Ok(Some((tls, metrics)))
}

/// A running counting sink.
pub struct Sink {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Sink {
    /// Binds `args.listen` (port 0 picks a free port) and serves in the background.
    pub async fn start(args: &SinkArgs) -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", args.listen))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(args));
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(shared.clone());
        let stop = async move {
            let _ = rx.await;
        };
        let task = match tls_of(args)? {
            Some((tls, metrics)) => {
                use edgewatch_tls::{accept::TlsListener, server::Protocol};
                let listener = TlsListener::new(listener, tls, Protocol::Any, "sink", &metrics)?;
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                })
            }
            None => {
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                })
            }
        };
        Ok(Sink {
            shared,
            addr,
            stop: Some(tx),
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, usable as `--endpoint` for both protocols.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Current counters.
    pub fn stats(&self) -> SinkStats {
        self.shared.stats()
    }

    /// Highest sequence number received per series of loadgen instance `instance_id`.
    pub fn max_seq(&self, instance_id: &str) -> BTreeMap<String, u64> {
        self.shared.max_seq(instance_id)
    }

    /// Stops serving (open connections finish their requests) and returns the final stats.
    pub async fn stop(mut self) -> SinkStats {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        // Long-lived client connections may keep graceful shutdown waiting: bound it.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        self.shared.stats()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves a counting sink on `listen` until `shutdown` completes.
pub async fn sink(
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<SinkStats> {
    let mut args = SinkArgs::new(listen);
    args.quiet = true;
    serve(args, shutdown).await
}

async fn serve(args: SinkArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<SinkStats> {
    let mut sink = Sink::start(&args).await?;
    if !args.quiet {
        eprintln!(
            "edgewatch loadgen sink: OTLP gRPC + HTTP on {} (stats: GET {}/stats)",
            sink.local_addr(),
            sink.endpoint()
        );
    }
    let shared = sink.shared.clone();
    let quiet = args.quiet;
    let ticker = tokio::spawn(async move {
        if quiet {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = (Instant::now(), 0u64);
        loop {
            tick.tick().await;
            let points = shared.points.load(Relaxed);
            if points == last.1 {
                continue;
            }
            let now = Instant::now();
            let rate = (points - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, points);
            eprintln!(
                "[sink] {rate:>10.0} dp/s  points {points}  requests {}  failed {}  dropped {}",
                shared.requests.load(Relaxed),
                shared.failed_requests.load(Relaxed),
                shared.dropped_requests.load(Relaxed),
            );
        }
    });
    tokio::select! {
        _ = shutdown => {}
        res = &mut sink.task => {
            ticker.abort();
            return Err(anyhow::anyhow!("sink server stopped: {:?}", res));
        }
    }
    ticker.abort();
    Ok(sink.stop().await)
}

/// `edgewatch loadgen sink`: serves until `shutdown`, prints a stats line per second on
/// stderr (unless `--quiet`) and the final stats as JSON on stdout.
pub async fn run_sink(args: SinkArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let stats = serve(args, shutdown).await?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}
