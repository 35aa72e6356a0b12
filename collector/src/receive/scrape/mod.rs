//! The Prometheus scrape receiver: scrapes targets (static ones from the config, pods
//! from `crate::discover`) at their interval, converts each scrape to OTLP under the scope
//! `edgewatch.scrape` ([`convert`]) and appends it, stamped with cluster/node, to the same
//! durable buffer as OTLP pushes ([`Output`]).
//!
//! The HTTP exchange runs on the runtime ([`body`]); decoding, parsing and conversion run
//! on a bounded set of blocking threads ([`pool`]), under the scrape's deadline
//! ([`deadline`]): the runtime's one worker keeps receiving, forwarding and answering
//! `/healthz` whatever a target sends.
//!
//! A bad target never stops the collector: a timeout, a non-200 answer, a body over
//! `body_size_limit`, an unparsable exposition, or a scrape over Prometheus' limits
//! (`sample_limit`, the label limits: [`limits`]) is a failed scrape (`up` 0, none of its
//! samples kept, stale markers for its series, `edgewatch_scrape_failures_total{reason}`),
//! logged at most once per [`LOG_EVERY`] per target (then at debug); duplicate series and
//! label clashes drop the sample (`edgewatch_scrape_dropped_samples_total{reason}`).

pub mod body;
pub mod convert;
pub mod deadline;
pub mod limits;
pub mod parse;
pub mod pool;
mod target;

use crate::buffer::{Buffer, BufferError};
use crate::enrich::Stamp;
use crate::log_limit::LogLimit;
pub use body::{fetch, Body};
use bytes::Bytes;
pub use convert::{TargetIdentity, SCRAPE_SCOPE};
pub use deadline::Deadline;
use edgewatch_config::collector::{PrometheusReceiverConfig, ScrapeLimits};
use limits::LimitError;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use pool::Pool;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use prost::Message;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A failing target is logged at warn level at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(300);

/// What Prometheus 2.x/3.x sends: OpenMetrics preferred, the text format accepted.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// One scrape target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// `http://host:port/path`.
    pub url: String,
    pub interval: Duration,
    /// Capped at `interval`.
    pub timeout: Duration,
    pub identity: TargetIdentity,
    /// A static target's own limits; None: the receiver's.
    pub limits: Option<ScrapeLimits>,
}

/// `host:port` of a URL (Prometheus' `instance` of a static target).
pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    auth.rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(auth)
        .to_string()
}

/// The key of a target in the running set: one loop per URL and job.
fn target_key(job: &str, url: &str) -> String {
    format!("{job}|{url}")
}

/// The static targets of the config.
pub fn static_targets(cfg: &PrometheusReceiverConfig) -> Vec<ScrapeTarget> {
    cfg.static_targets
        .iter()
        .map(|t| {
            let s = t.spec();
            let interval = s
                .interval
                .map(|d| d.get())
                .unwrap_or(cfg.scrape_interval.get());
            let timeout = s
                .timeout
                .map(|d| d.get())
                .unwrap_or(cfg.scrape_timeout.get())
                .min(interval);
            ScrapeTarget {
                identity: TargetIdentity {
                    job: s.job.clone().unwrap_or_else(|| cfg.job.clone()),
                    instance: authority(&s.url.0),
                    ..Default::default()
                },
                limits: Some(cfg.target_limits(&s)),
                url: s.url.0,
                interval,
                timeout,
            }
        })
        .collect()
}

/// Where converted data goes: stamped with cluster/node, appended durably.
#[derive(Clone)]
pub struct Output {
    buffer: Buffer,
    stamp: Stamp,
}

/// Stamped OTLP, encoded, ready to append.
pub struct Encoded {
    points: u64,
    bytes: Bytes,
}

impl Output {
    pub fn new(buffer: Buffer, stamp: Stamp) -> Self {
        Output { buffer, stamp }
    }

    /// Stamps and encodes; `None` when there is no point. CPU work proportional to
    /// the data: scrapes do it off the runtime thread.
    pub fn encode(&self, resource_metrics: Vec<ResourceMetrics>) -> Option<Encoded> {
        let mut req = ExportMetricsServiceRequest { resource_metrics };
        let points = edgewatch_otlp::count_points(&req);
        if points == 0 {
            return None;
        }
        self.stamp
            .apply(req.resource_metrics.iter_mut().map(|rm| &mut rm.resource));
        Some(Encoded {
            points,
            bytes: Bytes::from(req.encode_to_vec()),
        })
    }

    /// Appends; returns the points once durable.
    pub async fn append(&self, encoded: Encoded) -> Result<u64, BufferError> {
        self.buffer.append(encoded.points, encoded.bytes).await?;
        Ok(encoded.points)
    }

    /// Stamps and appends; returns once durable.
    pub async fn send(&self, resource_metrics: Vec<ResourceMetrics>) -> Result<u64, BufferError> {
        match self.encode(resource_metrics) {
            Some(encoded) => self.append(encoded).await,
            None => Ok(0),
        }
    }
}

/// The receiver's own metrics (`edgewatch_scrape_*`).
#[derive(Clone)]
pub struct ScrapeMetrics {
    pub targets: IntGauge,
    pub scrapes: IntCounterVec,
    pub failures: IntCounterVec,
    pub dropped_samples: IntCounterVec,
    pub samples: IntCounter,
    pub stale_markers: IntCounter,
    pub untyped_fallbacks: IntCounter,
    pub buffer_errors: IntCounter,
    pub jobs_running: IntGauge,
    pub jobs_waiting: IntGauge,
    pub jobs_expired: IntCounter,
}

impl ScrapeMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = ScrapeMetrics {
            targets: IntGauge::new("edgewatch_scrape_targets", "Scrape targets currently scraped.")?,
            scrapes: IntCounterVec::new(Opts::new("edgewatch_scrape_scrapes_total", "Scrapes by outcome (ok, failed)."), &["outcome"])?,
            failures: IntCounterVec::new(
                Opts::new(
                    "edgewatch_scrape_failures_total",
                    "Failed scrapes by reason (timeout, connect, http_status, body_size_limit, invalid_exposition, sample_limit, label_limit).",
                ),
                &["reason"],
            )?,
            dropped_samples: IntCounterVec::new(
                Opts::new("edgewatch_scrape_dropped_samples_total", "Scraped samples dropped, by reason (duplicate, label_clash)."),
                &["reason"],
            )?,
            samples: IntCounter::new("edgewatch_scrape_samples_total", "Samples scraped and converted.")?,
            stale_markers: IntCounter::new("edgewatch_scrape_stale_markers_total", "Stale markers emitted for series that disappeared.")?,
            untyped_fallbacks: IntCounter::new(
                "edgewatch_scrape_untyped_fallbacks_total",
                "Histograms/summaries sent as gauges because OTLP could not carry them exactly.",
            )?,
            buffer_errors: IntCounter::new("edgewatch_scrape_buffer_errors_total", "Scrapes that could not be written to the buffer.")?,
            jobs_running: IntGauge::new(
                "edgewatch_scrape_processing_running",
                "Scrapes being decoded, parsed and converted on a blocking thread.",
            )?,
            jobs_waiting: IntGauge::new(
                "edgewatch_scrape_processing_waiting",
                "Scrapes fetched and waiting for a processing slot.",
            )?,
            jobs_expired: IntCounter::new(
                "edgewatch_scrape_processing_expired_total",
                "Scrapes whose decoding, parsing or conversion the scrape's deadline stopped.",
            )?,
        };
        registry.register(Box::new(m.targets.clone()))?;
        registry.register(Box::new(m.scrapes.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.dropped_samples.clone()))?;
        registry.register(Box::new(m.samples.clone()))?;
        registry.register(Box::new(m.stale_markers.clone()))?;
        registry.register(Box::new(m.untyped_fallbacks.clone()))?;
        registry.register(Box::new(m.buffer_errors.clone()))?;
        registry.register(Box::new(m.jobs_running.clone()))?;
        registry.register(Box::new(m.jobs_waiting.clone()))?;
        registry.register(Box::new(m.jobs_expired.clone()))?;
        Ok(m)
    }
}

/// Why a scrape failed (the `reason` label).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("the scrape timeout passed while processing the body")]
    Deadline,
    /// Without the URL: the log line names the target.
    #[error("connecting: {0}")]
    Connect(#[source] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body larger than body_size_limit ({0} bytes)")]
    TooLarge(u64),
    #[error("invalid gzip body: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("invalid exposition: not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
    #[error("invalid exposition: {0}")]
    Invalid(#[source] parse::ParseError),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

impl ScrapeError {
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Timeout(_) | ScrapeError::Deadline => "timeout",
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Status(_) => "http_status",
            ScrapeError::TooLarge(_) => "body_size_limit",
            ScrapeError::Gzip(_) | ScrapeError::NotUtf8(_) | ScrapeError::Invalid(_) => {
                "invalid_exposition"
            }
            ScrapeError::Limit(e) => e.reason(),
        }
    }
}

impl From<convert::ConvertError> for ScrapeError {
    fn from(e: convert::ConvertError) -> Self {
        match e {
            convert::ConvertError::Limit(e) => ScrapeError::Limit(e),
            convert::ConvertError::Expired(_) => ScrapeError::Deadline,
        }
    }
}

pub use edgewatch_prom::time::now_ms;

/// The scrape client: `https://` targets are TLS (with `tls_config`, or the public
/// web roots), never plaintext. A TLS file that cannot be read is a start-up error.
pub fn client(cfg: &PrometheusReceiverConfig) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder().no_proxy();
    let builder = if cfg.tls_config.is_set() {
        builder.use_preconfigured_tls(edgewatch_tls::client::client_config(&cfg.tls_config)?)
    } else {
        builder
    };
    Ok(builder.build()?)
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("receivers.prometheus.tls_config: {0}")]
    Tls(#[from] edgewatch_tls::TlsError),
    #[error("building the scrape client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Runs the targets in `targets` (the wanted set; it may change), until `shutdown`.
pub async fn run(
    cfg: PrometheusReceiverConfig,
    client: reqwest::Client,
    output: Output,
    metrics: ScrapeMetrics,
    mut targets: watch::Receiver<Vec<ScrapeTarget>>,
    shutdown: CancellationToken,
) {
    let global = cfg.limits();
    let pool = Pool::new(
        pool::SLOTS,
        metrics.jobs_running.clone(),
        metrics.jobs_waiting.clone(),
    );
    let mut running: HashMap<
        String,
        (ScrapeTarget, CancellationToken, tokio::task::JoinHandle<()>),
    > = HashMap::new();
    loop {
        let wanted: Vec<ScrapeTarget> = targets.borrow_and_update().clone();
        let mut wanted_map: HashMap<String, ScrapeTarget> = HashMap::new();
        for t in wanted {
            // One loop per URL+job; the first definition wins.
            wanted_map
                .entry(target_key(&t.identity.job, &t.url))
                .or_insert(t);
        }
        let keys: Vec<String> = running.keys().cloned().collect();
        for k in keys {
            let keep = wanted_map
                .get(&k)
                .is_some_and(|w| running.get(&k).is_some_and(|(t, _, _)| t == w));
            if !keep {
                if let Some((_, stop, _handle)) = running.remove(&k) {
                    stop.cancel(); // the loop marks its series stale and ends
                }
            }
        }
        for (k, t) in wanted_map {
            if running.contains_key(&k) {
                continue;
            }
            let stop = CancellationToken::new();
            tracing::info!(target = %t.url, job = %t.identity.job, instance = %t.identity.instance, "scrape target added");
            let handle = tokio::spawn(
                target::TargetLoop {
                    target: t.clone(),
                    client: client.clone(),
                    output: output.clone(),
                    metrics: metrics.clone(),
                    pool: pool.clone(),
                    limits: t.limits.unwrap_or(global),
                    stop: stop.clone(),
                    shutdown: shutdown.clone(),
                    warn_limit: LogLimit::new(LOG_EVERY),
                }
                .run(),
            );
            running.insert(k, (t, stop, handle));
        }
        metrics.targets.set(running.len() as i64);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = targets.changed() => if changed.is_err() {
                // The sender is gone: keep the current set until shutdown.
                shutdown.cancelled().await;
                break;
            }
        }
    }
    for (_, (_, _, handle)) in running {
        let _ = handle.await;
    }
}
