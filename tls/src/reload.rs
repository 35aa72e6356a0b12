//! A value built from files and rebuilt when their contents change.
//!
//! Files are polled rather than watched: cert-manager and the kubelet replace a
//! Secret volume's files by swapping a symlink, which inotify reports on the
//! directory, not on the file; reading a few small files every couple of seconds
//! notices every kind of replacement. A rebuild that fails (a half-written or
//! garbage file) keeps the value in use and is counted; the next change is tried
//! again.

use crate::TlsError;
use prometheus::{IntCounterVec, Opts, Registry};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How often watched files are read.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(2);

/// `edgewatch_tls_reloads_total{outcome}`, shared by every TLS configuration of a
/// role, and `edgewatch_tls_handshake_failures_total{listener}`.
#[derive(Clone)]
pub struct TlsMetrics {
    pub(crate) reloads: IntCounterVec,
    pub(crate) handshake_failures: IntCounterVec,
}

impl TlsMetrics {
    pub fn register(registry: &Registry) -> Result<Self, TlsError> {
        let m = TlsMetrics {
            reloads: IntCounterVec::new(
                Opts::new(
                    "edgewatch_tls_reloads_total",
                    "Certificate/key/CA files re-read after they changed, by outcome (a failure keeps the previous ones).",
                ),
                &["outcome"],
            )?,
            handshake_failures: IntCounterVec::new(
                Opts::new(
                    "edgewatch_tls_handshake_failures_total",
                    "Connections to a TLS listener closed because the handshake failed or timed out.",
                ),
                &["listener"],
            )?,
        };
        registry.register(Box::new(m.reloads.clone()))?;
        registry.register(Box::new(m.handshake_failures.clone()))?;
        // Both outcomes exist from the start, so a rate over them is defined.
        for outcome in ["success", "failure"] {
            m.reloads.with_label_values(&[outcome]);
        }
        Ok(m)
    }
}

/// The current value; a background task replaces it when the files change.
pub(crate) struct Reloading<T> {
    current: Arc<RwLock<Arc<T>>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Reloading {
            current: self.current.clone(),
        }
    }
}

type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Builds the value once (an error here is the caller's start-up error) and
    /// starts watching `files`. The watch ends when the last handle is dropped.
    /// Must be called within a tokio runtime.
    pub(crate) fn start(
        what: String,
        files: Vec<PathBuf>,
        build: Build<T>,
        metrics: TlsMetrics,
    ) -> Result<Self, TlsError> {
        let seen = contents(&files);
        let first = build()?;
        let current = Arc::new(RwLock::new(Arc::new(first)));
        let watch = Watch {
            what,
            files,
            build,
            metrics,
            seen,
            current: Arc::downgrade(&current),
        };
        tokio::spawn(watch.run());
        Ok(Reloading { current })
    }

    pub(crate) fn get(&self) -> Arc<T> {
        // A poisoned lock only means a writer panicked after the swap or before it:
        // the value inside is whole either way.
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

struct Watch<T> {
    what: String,
    files: Vec<PathBuf>,
    build: Build<T>,
    metrics: TlsMetrics,
    seen: Vec<Option<Vec<u8>>>,
    current: Weak<RwLock<Arc<T>>>,
}

impl<T> Watch<T> {
    async fn run(mut self) {
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let Some(current) = self.current.upgrade() else {
                return;
            };
            let now = contents(&self.files);
            if now == self.seen {
                continue;
            }
            self.seen = now;
            match (self.build)() {
                Ok(v) => {
                    let v = Arc::new(v);
                    match current.write() {
                        Ok(mut g) => *g = v,
                        Err(p) => *p.into_inner() = v,
                    }
                    self.metrics.reloads.with_label_values(&["success"]).inc();
                    tracing::info!(what = %self.what, "TLS files changed: reloaded");
                }
                Err(e) => {
                    self.metrics.reloads.with_label_values(&["failure"]).inc();
                    tracing::warn!(what = %self.what, error = %e, "TLS files changed but cannot be used; keeping the previous ones");
                }
            }
        }
    }
}

/// The files' contents (`None` for one that cannot be read now). A few small files
/// every couple of seconds: read on the runtime's thread.
fn contents(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(f).ok()).collect()
}
