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
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// Watches the pods of `node` until `shutdown`, sending a new [`Snapshot`] whenever the
/// set of pods (as the collector sees them) changed. Errors are retried with backoff
/// (kube's default: exponential, capped) and logged; the last snapshot stays in force.
pub async fn run(
    client: Client,
    node: String,
    rules: Rules,
    tx: watch::Sender<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&node_selector(&node));
    let (reader, writer) = reflector::store::<Pod>();
    let stream = reflector(writer, watcher(api, cfg)).default_backoff();
    futures::pin_mut!(stream);
    let mut error_log = LogLimit::new(std::time::Duration::from_secs(60));
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => ev,
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
                let snap = Snapshot::from_pods(reader.state().iter().map(|p| pod_info(p, &rules)));
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
        }
    }
}
