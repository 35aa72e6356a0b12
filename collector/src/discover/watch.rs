//! The discovery I/O: a kube watcher + reflector over the pods of one node
//! (`fieldSelector=spec.nodeName=<node>`: the API server filters, so the collector holds
//! only its node's pods), publishing a [`Snapshot`] after every change.

use super::extract::{pod_info, Rules};
use super::Snapshot;
use crate::log_limit::LogLimit;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use prometheus::{IntCounter, Registry};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why no Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: {source}", .path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster config: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error(transparent)]
    Client(#[from] kube::Error),
}

/// A client from a kubeconfig file (`~` expands to `$HOME`), or in-cluster (the pod's
/// service account) when `kubeconfig` is `None`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let path = match path.to_str().and_then(|s| s.strip_prefix("~/")) {
                Some(rest) => std::env::var_os("HOME")
                    .map(|h| Path::new(&h).join(rest))
                    .unwrap_or_else(|| path.to_path_buf()),
                None => path.to_path_buf(),
            };
            let kubeconfig_error = |source| ClientError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(&path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => kube::Config::incluster().map_err(ClientError::InCluster)?,
    };
    Ok(Client::try_from(config)?)
}

/// The field selector of a node's pods.
pub fn node_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Counts restarts of the pod watch after a panic (a pod the extraction could not
/// handle): discovery restarts rather than staying dead with a stale snapshot.
pub fn restarts_counter(registry: &Registry) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(
        "edgewatch_discovery_restarts_total",
        "Times the pod watch failed unexpectedly (a panic) and was restarted.",
    )?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Longest wait before restarting a failed pod watch.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// Watches the pods of `node` until `shutdown`, sending a new [`Snapshot`] whenever the
/// set of pods (as the collector sees them) changed. Errors are retried with backoff
/// (kube's default: exponential, capped) and logged; the last snapshot stays in force.
/// A panic in the watch is logged, counted in `restarts` and the watch restarted
/// (with a doubling delay) from a fresh list. New `rules` (a reload) apply to
/// the pods known at once.
pub async fn run(
    client: Client,
    node: String,
    rules: watch::Receiver<Rules>,
    tx: watch::Sender<Arc<Snapshot>>,
    restarts: IntCounter,
    shutdown: CancellationToken,
) {
    let tx = Arc::new(tx);
    let start = || {
        watch_pods(
            client.clone(),
            node.clone(),
            rules.clone(),
            tx.clone(),
            shutdown.clone(),
        )
    };
    supervised(start, Duration::from_secs(1), &restarts, &shutdown).await;
}

/// Runs the task `start` makes until it returns or `shutdown`; restarts it after a
/// panic, counting in `restarts` and waiting `delay`, doubled at each failure.
async fn supervised<F, Fut>(
    mut start: F,
    mut delay: Duration,
    restarts: &IntCounter,
    shutdown: &CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let Err(e) = tokio::spawn(start()).await else {
            return;
        };
        restarts.inc();
        tracing::error!(error = %e, ?delay, "pod discovery failed; restarting it");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

/// One pod watch, from a fresh list, until `shutdown` or the end of the stream.
async fn watch_pods(
    client: Client,
    node: String,
    mut rules: watch::Receiver<Rules>,
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&node_selector(&node));
    let (reader, writer) = reflector::store::<Pod>();
    let stream = reflector(writer, watcher(api, cfg)).default_backoff();
    futures::pin_mut!(stream);
    let mut error_log = LogLimit::new(Duration::from_secs(60));
    // False once nothing can reload the rules any more.
    let mut reloadable = true;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => Some(ev),
            // Reloaded rules: the same pods, seen anew.
            r = rules.changed(), if reloadable => {
                reloadable = r.is_ok();
                None
            }
        };
        let Some(ev) = ev else {
            let current = rules.borrow_and_update().clone();
            publish(&tx, &reader, &current);
            continue;
        };
        match ev {
            None => return,
            Some(Err(e)) => {
                if error_log.due() {
                    tracing::warn!(error = %e, node = %node, "pod watch failed; retrying");
                } else {
                    tracing::debug!(error = %e, node = %node, "pod watch failed; retrying");
                }
            }
            Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
            Some(Ok(_)) => {
                let current = rules.borrow().clone();
                publish(&tx, &reader, &current);
            }
        }
    }
}

/// Sends the snapshot of the pods in `reader` under `rules`, if it changed.
fn publish(tx: &watch::Sender<Arc<Snapshot>>, reader: &reflector::Store<Pod>, rules: &Rules) {
    let snap = Snapshot::from_pods(reader.state().iter().map(|p| pod_info(p, rules)));
    tx.send_if_modified(|cur| {
        if **cur == snap {
            false
        } else {
            tracing::debug!(
                pods = snap.pods.len(),
                models = snap.models().count(),
                "pods changed"
            );
            *cur = Arc::new(snap);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panicking_watch_is_restarted_and_counted() {
        let calls = Arc::new(AtomicUsize::new(0));
        let restarts = IntCounter::new("r", "r").unwrap();
        let start = || {
            let calls = calls.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a pod the extraction cannot handle");
                }
            }
        };
        let stop = CancellationToken::new();
        supervised(start, Duration::from_millis(1), &restarts, &stop).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(restarts.get(), 2);
    }
}
