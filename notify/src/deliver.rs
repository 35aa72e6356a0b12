//! Delivery: one HTTP POST per notification, with a timeout per attempt, exponential
//! backoff (with jitter) on network errors and on the answers the integration
//! classifies as retryable (429 and 5xx for all of today's) until
//! `max_retry_duration`, never a retry on the others (the body is logged, the
//! notification counted failed `bad_request`). A `Retry-After` in seconds on a
//! retryable answer is honoured (capped at `max_backoff`). Secrets travel in
//! headers/bodies only, never in logs.

use crate::integration::Verdict;
use edgewatch_config::alerting::DeliveryConfig;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Metrics {
    pub total: IntCounterVec,
    pub failed: IntCounterVec,
    pub latency: HistogramVec,
    pub retries: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            total: IntCounterVec::new(
                Opts::new("edgewatch_notifications_total", "Notifications attempted, by receiver and integration."),
                &["receiver", "integration"],
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "edgewatch_notifications_failed_total",
                    "Notifications given up on (bad_request: a 4xx answer, never retried; retries_exhausted; shutdown; config).",
                ),
                &["receiver", "reason"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new("edgewatch_notification_latency_seconds", "Time to deliver a notification, retries included.")
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
                &["integration"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("edgewatch_notification_retries_total", "Retried notification requests (429, 5xx, network)."),
                &["integration"],
            )?,
        };
        registry.register(Box::new(m.total.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        Ok(m)
    }
}

/// One request to make. `headers` may carry secrets (never logged).
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    BadRequest,
    RetriesExhausted,
    Shutdown,
}

impl Failure {
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::BadRequest => "bad_request",
            Failure::RetriesExhausted => "retries_exhausted",
            Failure::Shutdown => "shutdown",
        }
    }
}

pub struct Deliverer {
    client: reqwest::Client,
    opts: DeliveryConfig,
    pub metrics: Metrics,
    /// Send times per rate-limit key in the last minute.
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Deliverer {
    pub fn new(opts: DeliveryConfig, metrics: Metrics) -> Self {
        let client = reqwest::Client::builder()
            .timeout(opts.timeout.get())
            .user_agent(concat!("edgewatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Deliverer {
            client,
            opts,
            metrics,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until another event may be sent with this key (sliding one-minute window).
    pub async fn rate_limit(&self, key: &str, per_minute: usize, shutdown: &CancellationToken) {
        loop {
            let wait = {
                let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
                let q = w.entry(key.to_string()).or_default();
                let now = Instant::now();
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
                {
                    q.pop_front();
                }
                if q.len() < per_minute {
                    q.push_back(now);
                    return;
                }
                Duration::from_secs(60) - now.duration_since(q[0])
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// POSTs until delivered, rejected, out of retry time or shut down; `classify`
    /// tells what an answer's status means.
    pub async fn post(
        &self,
        receiver: &str,
        integration: &str,
        classify: &(dyn Fn(u16) -> Verdict + Sync),
        req: Request,
        shutdown: &CancellationToken,
    ) -> Result<(), Failure> {
        self.metrics
            .total
            .with_label_values(&[receiver, integration])
            .inc();
        let started = Instant::now();
        let mut backoff = self
            .opts
            .initial_backoff
            .get()
            .max(Duration::from_millis(1));
        let max_backoff = self.opts.max_backoff.get().max(backoff);
        let fail = |f: Failure| {
            self.metrics
                .failed
                .with_label_values(&[receiver, f.reason()])
                .inc();
            Err(f)
        };
        loop {
            let attempt = tokio::select! {
                a = self.attempt(receiver, integration, classify, &req) => a,
                _ = shutdown.cancelled() => return fail(Failure::Shutdown),
            };
            let wait = match attempt {
                Attempt::Delivered => {
                    self.metrics
                        .latency
                        .with_label_values(&[integration])
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Attempt::Rejected => return fail(Failure::BadRequest),
                Attempt::Retry {
                    retry_after: Some(ra),
                } => ra.min(max_backoff),
                Attempt::Retry { retry_after: None } => backoff,
            };
            if started.elapsed() + wait > self.opts.max_retry_duration.get() {
                tracing::error!(
                    receiver,
                    integration,
                    "notification not delivered, giving up"
                );
                return fail(Failure::RetriesExhausted);
            }
            self.metrics.retries.with_label_values(&[integration]).inc();
            tokio::select! {
                _ = tokio::time::sleep(wait + jitter(started, wait)) => {}
                _ = shutdown.cancelled() => return fail(Failure::Shutdown),
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    /// One request and what its answer means (logged here, without secrets).
    async fn attempt(
        &self,
        receiver: &str,
        integration: &str,
        classify: &(dyn Fn(u16) -> Verdict + Sync),
        req: &Request,
    ) -> Attempt {
        let mut rb = self
            .client
            .post(&req.url)
            .header("content-type", "application/json")
            .body(req.body.clone());
        for (k, v) in &req.headers {
            rb = rb.header(*k, v);
        }
        let resp = match rb.send().await {
            Ok(resp) => resp,
            Err(e) => {
                // without the URL: a webhook URL may carry a token
                tracing::warn!(receiver, integration, error = %e.without_url(), "notification failed, will retry");
                return Attempt::Retry { retry_after: None };
            }
        };
        let status = resp.status();
        let verdict = classify(status.as_u16());
        if verdict == Verdict::Delivered {
            tracing::debug!(receiver, integration, %status, "notification delivered");
            return Attempt::Delivered;
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        let body = super::model::truncate(&body, 1024);
        if verdict == Verdict::Retry {
            tracing::warn!(receiver, integration, %status, body, "notification failed, will retry");
            Attempt::Retry { retry_after }
        } else {
            tracing::error!(receiver, integration, %status, body, "notification rejected, not retrying");
            Attempt::Rejected
        }
    }
}

enum Attempt {
    Delivered,
    Rejected,
    /// `retry_after`: the answer's `Retry-After` in seconds.
    Retry {
        retry_after: Option<Duration>,
    },
}

/// Up to 10% of `wait` (at most 100 ms), so that receivers that failed together do
/// not retry in lockstep.
fn jitter(started: Instant, wait: Duration) -> Duration {
    Duration::from_millis(
        (started.elapsed().subsec_nanos() % 100) as u64 * wait.as_millis().min(1000) as u64 / 1000,
    )
}
