//! The Prometheus scrape receiver: scrapes targets (static ones from the config, pods
//! from `crate::discover`) at their interval, converts each scrape to OTLP under the scope
//! `edgewatch.scrape` ([`convert`]) and appends it, stamped with cluster/node, to the same
//! durable buffer as OTLP pushes ([`Output`]).
//!
//! A bad target never stops the collector: a timeout, a non-200 answer, a body over
//! `body_size_limit` or an unparsable exposition is a failed scrape (`up` 0, stale
//! markers for its series, `edgewatch_scrape_failures_total{reason}`), logged at most
//! once per [`LOG_EVERY`] per target (then at debug); duplicate series and label clashes
//! drop the sample (`edgewatch_scrape_dropped_samples_total{reason}`).

pub mod convert;
pub mod parse;

use crate::buffer::{Buffer, BufferError};
use crate::enrich::Stamp;
use crate::log_limit::LogLimit;
use bytes::Bytes;
pub use convert::{TargetIdentity, SCRAPE_SCOPE};
use edgewatch_config::collector::PrometheusReceiverConfig;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use prost::Message;
use std::collections::HashMap;
use std::time::{Duration, Instant};
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

impl Output {
    pub fn new(buffer: Buffer, stamp: Stamp) -> Self {
        Output { buffer, stamp }
    }

    /// Stamps and appends; returns once durable.
    pub async fn send(&self, resource_metrics: Vec<ResourceMetrics>) -> Result<u64, BufferError> {
        let mut req = ExportMetricsServiceRequest { resource_metrics };
        let points = edgewatch_otlp::count_points(&req);
        if points == 0 {
            return Ok(0);
        }
        self.stamp
            .apply(req.resource_metrics.iter_mut().map(|rm| &mut rm.resource));
        self.buffer
            .append(points, Bytes::from(req.encode_to_vec()))
            .await?;
        Ok(points)
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
}

impl ScrapeMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = ScrapeMetrics {
            targets: IntGauge::new("edgewatch_scrape_targets", "Scrape targets currently scraped.")?,
            scrapes: IntCounterVec::new(Opts::new("edgewatch_scrape_scrapes_total", "Scrapes by outcome (ok, failed)."), &["outcome"])?,
            failures: IntCounterVec::new(
                Opts::new(
                    "edgewatch_scrape_failures_total",
                    "Failed scrapes by reason (timeout, connect, http_status, body_too_large, invalid_exposition).",
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
        };
        registry.register(Box::new(m.targets.clone()))?;
        registry.register(Box::new(m.scrapes.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.dropped_samples.clone()))?;
        registry.register(Box::new(m.samples.clone()))?;
        registry.register(Box::new(m.stale_markers.clone()))?;
        registry.register(Box::new(m.untyped_fallbacks.clone()))?;
        registry.register(Box::new(m.buffer_errors.clone()))?;
        Ok(m)
    }
}

/// Why a scrape failed (the `reason` label).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Without the URL: the log line names the target.
    #[error("connecting: {0}")]
    Connect(#[source] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("invalid exposition: not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
    #[error("invalid exposition: {0}")]
    Invalid(#[source] parse::ParseError),
}

impl ScrapeError {
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Status(_) => "http_status",
            ScrapeError::TooLarge(_) => "body_too_large",
            ScrapeError::NotUtf8(_) | ScrapeError::Invalid(_) => "invalid_exposition",
        }
    }
}

pub use edgewatch_prom::time::now_ms;

/// Fetches and parses one target's exposition.
pub async fn fetch(
    client: &reqwest::Client,
    target: &ScrapeTarget,
    max_body: u64,
) -> Result<parse::Exposition, ScrapeError> {
    let timeout = target.timeout.min(target.interval);
    let work = async {
        let mut resp = client
            .get(&target.url)
            .header(http::header::ACCEPT, ACCEPT)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", timeout.as_secs_f64()),
            )
            .send()
            .await
            .map_err(|e| ScrapeError::Connect(e.without_url()))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(ScrapeError::Status(resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > max_body) {
            return Err(ScrapeError::TooLarge(max_body));
        }
        let format = parse::Format::from_content_type(
            resp.headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ScrapeError::Connect(e.without_url()))?
        {
            if (body.len() + chunk.len()) as u64 > max_body {
                return Err(ScrapeError::TooLarge(max_body));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(ScrapeError::NotUtf8)?;
        parse::parse(&text, format).map_err(ScrapeError::Invalid)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ScrapeError::Timeout(timeout)),
    }
}

/// The loop of one target; on cancellation (the target went away) it emits stale markers
/// for all its series and its `up`.
pub async fn run_target(
    target: ScrapeTarget,
    client: reqwest::Client,
    output: Output,
    metrics: ScrapeMetrics,
    max_body: u64,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut state = convert::TargetState::default();
    let mut warn_limit = LogLimit::new(LOG_EVERY);
    let mut ticker = tokio::time::interval(target.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let start_ms = now_ms();
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            _ = shutdown.cancelled() => return,
            r = fetch(&client, &target, max_body) => r,
        };
        let dur = started.elapsed().as_secs_f64();
        let rm = match result {
            Ok(exp) => {
                let (rm, c) = convert::convert(&exp, &target.identity, &mut state, start_ms, dur);
                metrics.scrapes.with_label_values(&["ok"]).inc();
                metrics.samples.inc_by(c.samples - c.duplicates);
                metrics.stale_markers.inc_by(c.stale);
                metrics.untyped_fallbacks.inc_by(c.untyped_fallbacks);
                if c.duplicates > 0 {
                    metrics
                        .dropped_samples
                        .with_label_values(&["duplicate"])
                        .inc_by(c.duplicates);
                }
                if c.label_clashes > 0 {
                    metrics
                        .dropped_samples
                        .with_label_values(&["label_clash"])
                        .inc_by(c.label_clashes);
                }
                if c.duplicates + c.label_clashes > 0 && warn_limit.due() {
                    tracing::warn!(target = %target.url, duplicates = c.duplicates, label_clashes = c.label_clashes, "samples dropped");
                }
                rm
            }
            Err(e) => {
                metrics.scrapes.with_label_values(&["failed"]).inc();
                metrics.failures.with_label_values(&[e.reason()]).inc();
                if warn_limit.due() {
                    tracing::warn!(target = %target.url, error = %e, "scrape failed (logged once per 5m per target)");
                } else {
                    tracing::debug!(target = %target.url, error = %e, "scrape failed");
                }
                let (rm, stale) =
                    convert::failed(&target.identity, &mut state, start_ms, dur, true);
                metrics.stale_markers.inc_by(stale);
                rm
            }
        };
        if let Err(e) = output.send(vec![rm]).await {
            metrics.buffer_errors.inc();
            tracing::debug!(target = %target.url, error = %e, "buffer append failed");
        }
    }
    // The target went away (not a shutdown): mark everything it had stale.
    let (rm, stale) = convert::failed(&target.identity, &mut state, now_ms(), 0.0, false);
    metrics.stale_markers.inc_by(stale);
    let _ = output.send(vec![rm]).await;
}

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
    let max_body = cfg.body_size_limit.bytes();
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
                .entry(format!("{}|{}", t.identity.job, t.url))
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
            let handle = tokio::spawn(run_target(
                t.clone(),
                client.clone(),
                output.clone(),
                metrics.clone(),
                max_body,
                stop.clone(),
                shutdown.clone(),
            ));
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
