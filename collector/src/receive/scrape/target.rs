//! The loop of one scrape target: fetch on the runtime, process on the [`Pool`] under
//! the scrape's deadline, count and append on the runtime.

use super::body::{fetch, Body};
use super::convert;
use super::pool::{Closed, Pool};
use super::{
    now_ms, Deadline, Encoded, Output, ScrapeError, ScrapeMetrics, ScrapeTarget, TargetIdentity,
};
use crate::log_limit::LogLimit;
use edgewatch_config::collector::ScrapeLimits;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One scrape's work on the [`Pool`]: parse and convert the body (or note why there is
/// none), encode what goes to the buffer, and move the target's state on.
struct Job {
    identity: TargetIdentity,
    limits: ScrapeLimits,
    deadline: Deadline,
    started: Instant,
    start_ms: i64,
    output: Output,
}

/// What a [`Job`] hands back.
struct Processed {
    state: convert::TargetState,
    outcome: Result<convert::Converted, ScrapeError>,
    /// Stale markers in `encoded`.
    stale: u64,
    encoded: Option<Encoded>,
}

impl Job {
    fn run(self, fetched: Result<Body, ScrapeError>, mut state: convert::TargetState) -> Processed {
        let converted = fetched.and_then(|body| {
            let exp = body.parse(self.limits.sample_limit, &self.deadline)?;
            let dur = self.started.elapsed().as_secs_f64();
            let (id, limits, deadline) = (&self.identity, &self.limits, &self.deadline);
            Ok(convert::convert(
                &exp,
                id,
                &mut state,
                self.start_ms,
                dur,
                limits,
                deadline,
            )?)
        });
        let (rm, outcome, stale) = match converted {
            Ok((rm, c)) => {
                let stale = c.stale;
                (rm, Ok(c), stale)
            }
            Err(e) => {
                let dur = self.started.elapsed().as_secs_f64();
                let (rm, stale) =
                    convert::failed(&self.identity, &mut state, self.start_ms, dur, true);
                (rm, Err(e), stale)
            }
        };
        Processed {
            state,
            outcome,
            stale,
            encoded: self.output.encode(vec![rm]),
        }
    }
}

/// What the loop does after a scrape.
enum Next {
    Continue(convert::TargetState),
    /// The target went away.
    Stop(convert::TargetState),
    Shutdown,
}

/// The loop of one target and what it needs.
pub(super) struct TargetLoop {
    pub target: ScrapeTarget,
    pub client: reqwest::Client,
    pub output: Output,
    pub metrics: ScrapeMetrics,
    pub pool: Pool,
    pub limits: ScrapeLimits,
    pub stop: CancellationToken,
    pub shutdown: CancellationToken,
    pub warn_limit: LogLimit,
}

impl TargetLoop {
    /// Scrapes until `stop` (then emits stale markers for all the target's series and
    /// its `up`) or `shutdown`.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.target.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut state = convert::TargetState::default();
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.scrape(state).await {
                Next::Continue(s) => state = s,
                Next::Stop(s) => {
                    state = s;
                    break;
                }
                Next::Shutdown => return,
            }
        }
        self.gone(state).await;
    }
}

impl TargetLoop {
    /// One scrape: fetch here, process on the pool, record and append here.
    async fn scrape(&mut self, state: convert::TargetState) -> Next {
        let started = Instant::now();
        let start_ms = now_ms();
        let timeout = self.target.timeout.min(self.target.interval);
        let deadline = Deadline::at(started + timeout);
        let fetched = tokio::select! {
            _ = self.stop.cancelled() => return Next::Stop(state),
            _ = self.shutdown.cancelled() => return Next::Shutdown,
            r = fetch(&self.client, &self.target, self.limits.body_size_limit, started + timeout) => r,
        };
        // A job that gets its slot after the deadline fails at its first check: the
        // scrape times out, and the failure's stale markers are still made there.
        let slot = tokio::select! {
            _ = self.stop.cancelled() => return Next::Stop(state),
            _ = self.shutdown.cancelled() => return Next::Shutdown,
            s = self.pool.slot() => match s {
                Ok(s) => s,
                Err(Closed) => return Next::Shutdown,
            },
        };
        let job = Job {
            identity: self.target.identity.clone(),
            limits: self.limits,
            deadline: deadline.clone(),
            started,
            start_ms,
            output: self.output.clone(),
        };
        let mut handle = slot.spawn(move || job.run(fetched, state));
        // The job stops at its next look at the deadline once cancelled; the loop waits
        // for it to get the target's state back.
        let joined = tokio::select! {
            r = &mut handle => r,
            _ = self.stop.cancelled() => {
                deadline.cancel();
                handle.await
            }
            _ = self.shutdown.cancelled() => {
                deadline.cancel();
                return Next::Shutdown;
            }
        };
        let state = match joined {
            Ok(processed) => self.record(processed).await,
            Err(e) => {
                // A bug, not the target's fault; its series lose their stale markers.
                tracing::error!(target = %self.target.url, error = %e, "scrape processing failed");
                self.metrics.scrapes.with_label_values(&["failed"]).inc();
                self.metrics
                    .failures
                    .with_label_values(&["invalid_exposition"])
                    .inc();
                convert::TargetState::default()
            }
        };
        if self.stop.is_cancelled() {
            Next::Stop(state)
        } else {
            Next::Continue(state)
        }
    }

    /// Counts the scrape's outcome, appends its OTLP; returns the target's state.
    async fn record(&mut self, p: Processed) -> convert::TargetState {
        match &p.outcome {
            Ok(c) => self.count_ok(c),
            Err(e) => self.count_failure(e),
        }
        self.metrics.stale_markers.inc_by(p.stale);
        if let Some(encoded) = p.encoded {
            if let Err(e) = self.output.append(encoded).await {
                self.metrics.buffer_errors.inc();
                tracing::debug!(target = %self.target.url, error = %e, "buffer append failed");
            }
        }
        p.state
    }

    fn count_ok(&mut self, c: &convert::Converted) {
        let m = &self.metrics;
        m.scrapes.with_label_values(&["ok"]).inc();
        m.samples.inc_by(c.samples - c.duplicates);
        m.untyped_fallbacks.inc_by(c.untyped_fallbacks);
        if c.duplicates > 0 {
            m.dropped_samples
                .with_label_values(&["duplicate"])
                .inc_by(c.duplicates);
        }
        if c.label_clashes > 0 {
            m.dropped_samples
                .with_label_values(&["label_clash"])
                .inc_by(c.label_clashes);
        }
        if c.duplicates + c.label_clashes > 0 && self.warn_limit.due() {
            tracing::warn!(target = %self.target.url, duplicates = c.duplicates, label_clashes = c.label_clashes, "samples dropped");
        }
    }

    fn count_failure(&mut self, e: &ScrapeError) {
        if matches!(e, ScrapeError::Deadline) {
            self.metrics.jobs_expired.inc();
        }
        self.metrics.scrapes.with_label_values(&["failed"]).inc();
        self.metrics.failures.with_label_values(&[e.reason()]).inc();
        if self.warn_limit.due() {
            tracing::warn!(target = %self.target.url, error = %e, "scrape failed (logged once per 5m per target)");
        } else {
            tracing::debug!(target = %self.target.url, error = %e, "scrape failed");
        }
    }

    /// The target went away (not a shutdown): marks everything it had stale.
    async fn gone(&self, mut state: convert::TargetState) {
        let slot = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            s = self.pool.slot() => match s {
                Ok(s) => s,
                Err(Closed) => return,
            },
        };
        let identity = self.target.identity.clone();
        let output = self.output.clone();
        let job = slot.spawn(move || {
            let (rm, stale) = convert::failed(&identity, &mut state, now_ms(), 0.0, false);
            (stale, output.encode(vec![rm]))
        });
        if let Ok((stale, encoded)) = job.await {
            self.metrics.stale_markers.inc_by(stale);
            if let Some(encoded) = encoded {
                let _ = self.output.append(encoded).await;
            }
        }
    }
}
