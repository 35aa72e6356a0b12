//! Hot reload, the same for both roles (Prometheus' conventions): SIGHUP and
//! `POST /-/reload` feed one task that re-reads the configuration; an answer
//! comes once the reload was applied (200) or refused (500 with the reason). A
//! refused configuration changes nothing: the running one keeps serving.
//!
//! `edgewatch_config_last_reload_successful` (1/0) and
//! `edgewatch_config_last_reload_success_timestamp_seconds` tell how the last
//! attempt went; the timestamp starts at the role's start, as in Prometheus.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus::{Gauge, IntGauge, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Reload requests waiting while one is applied; more are refused (busy).
const QUEUE: usize = 4;

/// Why a reload request got no reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration was refused; the old one keeps running.
    #[error("{0}")]
    Refused(String),
    #[error("too many reloads queued")]
    Busy,
    #[error("shutting down")]
    Stopped,
}

/// The reload metrics of one role.
#[derive(Clone)]
pub struct ReloadMetrics {
    successful: IntGauge,
    success_timestamp: Gauge,
}

impl ReloadMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let successful = IntGauge::new(
            "edgewatch_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful.",
        )?;
        let success_timestamp = Gauge::new(
            "edgewatch_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload (or of the start).",
        )?;
        registry.register(Box::new(successful.clone()))?;
        registry.register(Box::new(success_timestamp.clone()))?;
        let m = ReloadMetrics {
            successful,
            success_timestamp,
        };
        m.record(true);
        Ok(m)
    }

    fn record(&self, ok: bool) {
        self.successful.set(ok as i64);
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.success_timestamp.set(now.as_secs_f64());
        }
    }
}

type Reply = oneshot::Sender<Result<(), String>>;

/// Asks the role's reload task for a reload. Cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Reply>,
}

impl ReloadHandle {
    /// Reloads and waits for the outcome.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(reply).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ReloadError::Busy,
            mpsc::error::TrySendError::Closed(_) => ReloadError::Stopped,
        })?;
        answer
            .await
            .map_err(|_| ReloadError::Stopped)?
            .map_err(ReloadError::Refused)
    }

    /// `POST /-/reload`.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/-/reload", axum::routing::post(post_reload))
            .with_state(self.clone())
    }
}

async fn post_reload(State(h): State<ReloadHandle>) -> Response {
    match h.reload().await {
        Ok(()) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Err(ReloadError::Refused(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Starts the reload task: `apply` runs (on the blocking pool, one at a time) at
/// each SIGHUP and each [`ReloadHandle::reload`], until `shutdown`. It returns
/// the reason a configuration was refused, and must leave the running one as it
/// was then.
pub fn spawn<F>(
    apply: F,
    metrics: ReloadMetrics,
    shutdown: CancellationToken,
) -> (ReloadHandle, JoinHandle<()>)
where
    F: FnMut() -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(apply, rx, metrics, shutdown));
    (ReloadHandle { tx }, task)
}

async fn run<F>(
    mut apply: F,
    mut rx: mpsc::Receiver<Reply>,
    metrics: ReloadMetrics,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Result<(), String> + Send + 'static,
{
    let mut hangup = Hangup::new();
    loop {
        let (reply, trigger) = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => (Some(r), "POST /-/reload"),
                None => return,
            },
            _ = hangup.recv() => (None, "SIGHUP"),
            _ = shutdown.cancelled() => return,
        };
        let outcome = tokio::task::spawn_blocking(move || {
            let r = apply();
            (apply, r)
        })
        .await;
        let result = match outcome {
            Ok((a, r)) => {
                apply = a;
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload panicked; reloads stop");
                metrics.record(false);
                return;
            }
        };
        metrics.record(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(trigger, "configuration reloaded"),
            Err(e) => {
                tracing::error!(trigger, error = %e, "configuration reload refused; the running configuration stays")
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

/// SIGHUP, where there is one.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "SIGHUP cannot trigger reloads"))
                .ok();
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn answers_with_the_outcome_and_sets_the_metrics() {
        let registry = Registry::new();
        let metrics = ReloadMetrics::register(&registry).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let stop = CancellationToken::new();
        let (h, task) = spawn(
            move || match c.fetch_add(1, Ordering::SeqCst) {
                0 => Ok(()),
                _ => Err("x.yaml:3:1: bad".to_string()),
            },
            metrics.clone(),
            stop.clone(),
        );
        h.reload().await.unwrap();
        assert_eq!(metrics.successful.get(), 1);
        let ts = metrics.success_timestamp.get();
        assert!(ts > 0.0);
        match h.reload().await {
            Err(ReloadError::Refused(e)) => assert_eq!(e, "x.yaml:3:1: bad"),
            other => panic!("{other:?}"),
        }
        assert_eq!(metrics.successful.get(), 0);
        assert_eq!(metrics.success_timestamp.get(), ts);
        stop.cancel();
        task.await.unwrap();
        assert!(matches!(h.reload().await, Err(ReloadError::Stopped)));
    }
}
