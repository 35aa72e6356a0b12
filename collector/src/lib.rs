//! edgewatch collector: receive OTLP → stamp cluster/node → buffer durably in sled →
//! forward in order to the aggregator. One instance per edge node (a DaemonSet).

pub mod admin;
pub mod bearer;
pub mod buffer;
pub mod discover;
pub mod enrich;
pub mod forward;
pub mod log_limit;
pub mod model;
pub mod receive;
mod reload;
pub mod selfmon;

use buffer::{Buffer, BufferOptions};
use edgewatch_config::tls::ServerTlsConfig;
use edgewatch_config::CollectorConfig;
use edgewatch_otlp::admission::AdmissionMetrics;
use edgewatch_otlp::ready::Readiness;
use edgewatch_otlp::server::OtlpListeners;
use edgewatch_tls::serve::{serve_http_with, HttpLimits, HttpMetrics, ListenerMetrics};
use edgewatch_tls::server::ServerTls;
use edgewatch_tls::TlsMetrics;
use prometheus::Registry;
use std::net::SocketAddr;
use std::path::Path;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("buffer at {path}: {source}")]
    Buffer {
        path: String,
        source: buffer::BufferError,
    },
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("TLS: {0}")]
    Tls(#[from] edgewatch_tls::TlsError),
    #[error(transparent)]
    ScrapeClient(#[from] receive::scrape::ClientError),
    #[error("kubernetes discovery: {0}")]
    Discovery(#[from] discover::watch::ClientError),
}

/// A started collector: where it listens, and its task.
pub struct Collector {
    pub otlp_grpc: Option<SocketAddr>,
    pub otlp_http: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub instance_id: String,
    pub node: String,
    task: JoinHandle<Result<(), CollectorError>>,
}

impl Collector {
    /// Waits until the collector stopped (after `shutdown` was cancelled).
    pub async fn wait(self) -> Result<(), CollectorError> {
        self.task
            .await
            .map_err(|e| CollectorError::Io(std::io::Error::other(e)))?
    }
}

/// `/readyz` waits for this.
const RECEIVING: &str = "the receivers";

/// As [`start`], with `cfg` read from `path`, which SIGHUP and `POST /-/reload`
/// on the admin port read again (see the README's "Reload").
pub async fn start_reloadable(
    cfg: &CollectorConfig,
    path: &Path,
    shutdown: CancellationToken,
) -> Result<Collector, CollectorError> {
    start_with(cfg, Some(path), shutdown).await
}

/// Opens the buffer, binds every listener, and starts the receivers, the forwarder
/// and the admin server. Returns once all listen.
pub async fn start(
    cfg: &CollectorConfig,
    shutdown: CancellationToken,
) -> Result<Collector, CollectorError> {
    start_with(cfg, None, shutdown).await
}

async fn start_with(
    cfg: &CollectorConfig,
    config_path: Option<&Path>,
    shutdown: CancellationToken,
) -> Result<Collector, CollectorError> {
    let registry = Registry::new();
    let readiness = Readiness::new(&[RECEIVING], &shutdown);
    let buffer = open_buffer(cfg, &registry).await?;
    let node = enrich::node_name(cfg.node.as_ref().map(|n| n.0.as_str()));
    let stamp = enrich::Stamp::new(&cfg.cluster.0, &node);
    let mut sink = receive::otlp::BufferSink::new(
        buffer.clone(),
        stamp.clone(),
        cfg.forward.max_batch_bytes.bytes() as usize,
        &registry,
    )?;
    let (sink_models, statics, side_tasks) =
        start_discovery_and_scrape(cfg, &node, &buffer, &stamp, &registry, &shutdown).await?;
    if let Some(rx) = sink_models {
        sink = sink.with_models(rx);
    }
    let tls_metrics = TlsMetrics::register(&registry)?;
    let http_metrics = HttpMetrics::register(&registry)?;
    let otlp = &cfg.receivers.otlp;
    let mut listeners = OtlpListeners::bind(otlp.grpc.map(|a| a.0), otlp.http.map(|a| a.0))
        .await?
        .with_admission_metrics(AdmissionMetrics::new(&registry)?);
    if let Some(t) = &otlp.tls {
        listeners = listeners.with_tls(ServerTls::new(t, &tls_metrics)?, tls_metrics.clone());
    }
    let (admin_listener, admin_tls) = bind_admin(cfg, &tls_metrics).await?;
    // The only credential the collector's listeners know is a client certificate.
    listeners.warn_if_open(ServerTlsConfig::verifies_clients(
        cfg.receivers.otlp.tls.as_ref(),
    ));
    edgewatch_otlp::auth::warn_if_open(
        "admin HTTP",
        admin_listener.local_addr()?,
        ServerTlsConfig::verifies_clients(cfg.admin.tls.as_ref()),
    );
    if cfg.forward.bearer_token_file.is_some() && cfg.forward.endpoint.0.starts_with("http://") {
        tracing::warn!(endpoint = %cfg.forward.endpoint, "forward.bearer_token_file with a plaintext endpoint: the token can be read on the way");
    }
    let forwarder = forward::Forwarder::new(
        buffer.clone(),
        forward::ForwardOptions::from_config(&cfg.forward),
        &registry,
        &tls_metrics,
    )?;

    register_info(&registry, &buffer)?;
    let mut side_tasks = side_tasks;
    let admin_app = admin::router(registry.clone(), buffer.clone(), readiness.clone());
    let (admin_app, reloads) =
        with_reloads(admin_app, cfg, config_path, statics, &registry, &shutdown)?;
    side_tasks.extend(reloads);
    if !cfg.admin.self_metrics_interval.get().is_zero() {
        side_tasks.push(tokio::spawn(selfmon::run(
            registry.clone(),
            receive::scrape::Output::new(buffer.clone(), stamp.clone()),
            buffer.instance_id().to_string(),
            cfg.admin.self_metrics_interval.get(),
            shutdown.clone(),
        )));
    }

    let out = Collector {
        otlp_grpc: listeners.grpc_addr(),
        otlp_http: listeners.http_addr(),
        admin: admin_listener.local_addr()?,
        instance_id: buffer.instance_id().to_string(),
        node,
        task: tokio::spawn(run(
            buffer,
            sink,
            listeners,
            otlp.max_request_bytes.bytes() as usize,
            forwarder,
            (admin_listener, admin_tls, http_metrics.listener("admin")),
            admin_app,
            readiness,
            shutdown,
            side_tasks,
        )),
    };
    tracing::info!(
        otlp_grpc = ?out.otlp_grpc, otlp_http = ?out.otlp_http, admin = %out.admin,
        instance_id = %out.instance_id, node = %out.node, "collector started"
    );
    Ok(out)
}

/// The admin listener and its TLS.
async fn bind_admin(
    cfg: &CollectorConfig,
    tls_metrics: &TlsMetrics,
) -> Result<(tokio::net::TcpListener, Option<AdminTls>), CollectorError> {
    let listener = edgewatch_otlp::server::bind(cfg.admin.listen.0, "admin HTTP").await?;
    let tls = match &cfg.admin.tls {
        Some(t) => Some((
            ServerTls::new(t, tls_metrics)?,
            "admin",
            tls_metrics.clone(),
        )),
        None => None,
    };
    Ok((listener, tls))
}

/// The reload metrics, and with a config file the reload task and `POST /-/reload`
/// on the admin router.
fn with_reloads(
    admin_app: axum::Router,
    cfg: &CollectorConfig,
    config_path: Option<&Path>,
    statics: StaticsTx,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> Result<(axum::Router, Option<JoinHandle<()>>), CollectorError> {
    let metrics = edgewatch_otlp::reload::ReloadMetrics::register(registry)?;
    let Some(path) = config_path else {
        return Ok((admin_app, None));
    };
    let mut reloads = reload::Reloads::new(path, cfg, statics);
    let (handle, task) =
        edgewatch_otlp::reload::spawn(move || reloads.apply(), metrics, shutdown.clone());
    Ok((admin_app.merge(handle.router()), Some(task)))
}

/// Opens (recovers) the durable buffer off the runtime threads: sled's recovery
/// reads from disk.
async fn open_buffer(cfg: &CollectorConfig, registry: &Registry) -> Result<Buffer, CollectorError> {
    let opts = BufferOptions {
        path: cfg.buffer.path.clone(),
        max_bytes: cfg.buffer.max_bytes.bytes(),
        full_policy: cfg.buffer.full_policy,
        max_age: cfg.buffer.max_age.map(|d| d.get()),
    };
    let reg = registry.clone();
    tokio::task::spawn_blocking(move || Buffer::open(opts, &reg))
        .await
        .map_err(|e| CollectorError::Io(std::io::Error::other(e)))?
        .map_err(|source| CollectorError::Buffer {
            path: cfg.buffer.path.display().to_string(),
            source,
        })
}

/// `edgewatch_collector_info`: which collector (instance id, version) this is.
fn register_info(registry: &Registry, buffer: &Buffer) -> Result<(), prometheus::Error> {
    let collector_info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "edgewatch_collector_info",
            "Identity of this collector (value 1).",
        ),
        // cluster and node travel as resource attributes, like on every series.
        &["instance_id", "version"],
    )?;
    collector_info
        .with_label_values(&[buffer.instance_id(), env!("CARGO_PKG_VERSION")])
        .set(1);
    registry.register(Box::new(collector_info))
}

/// The admin listener's TLS, its name in logs and metrics, the role's TLS metrics.
type AdminTls = (ServerTls, &'static str, TlsMetrics);

#[allow(clippy::too_many_arguments)]
async fn run(
    buffer: Buffer,
    sink: receive::otlp::BufferSink,
    listeners: OtlpListeners,
    max_request_bytes: usize,
    forwarder: forward::Forwarder,
    (admin_listener, admin_tls, admin_metrics): (
        tokio::net::TcpListener,
        Option<AdminTls>,
        ListenerMetrics,
    ),
    admin_app: axum::Router,
    readiness: Readiness,
    shutdown: CancellationToken,
    side_tasks: Vec<JoinHandle<()>>,
) -> Result<(), CollectorError> {
    let forward_task = tokio::spawn(forwarder.run(shutdown.clone()));
    // The admin listener outlives the drain: `/readyz` says 503 meanwhile.
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(serve_http_with(
        admin_listener,
        admin_tls,
        admin_app,
        HttpLimits::ADMIN,
        Some(admin_metrics),
        admin_stop.clone().cancelled_owned(),
    ));
    readiness.met(RECEIVING);
    let served = listeners
        .serve(sink, max_request_bytes, shutdown.clone())
        .await;
    for t in side_tasks {
        let _ = t.await;
    }
    // Receivers are done: nothing new can be acknowledged. Let the writer finish.
    let _ = forward_task.await;
    admin_stop.cancel();
    let _ = admin_task.await;
    let b = buffer.clone();
    let _ = tokio::task::spawn_blocking(move || b.close()).await;
    tracing::info!("collector stopped");
    served.map_err(CollectorError::Io)
}

/// What a reload replaces in the scrape receiver; None without one.
type StaticsTx = Option<Scrape>;

struct Scrape {
    statics: tokio::sync::watch::Sender<Vec<receive::scrape::ScrapeTarget>>,
    /// With pod discovery: which pods are model servers, how they are scraped.
    rules: Option<tokio::sync::watch::Sender<discover::Rules>>,
}

/// Pod discovery's rules from the configuration.
fn discovery_rules(cfg: &CollectorConfig) -> discover::Rules {
    let prom = &cfg.receivers.prometheus;
    discover::Rules {
        model_labels: cfg.discovery.model_labels.clone(),
        hinted_labels: cfg.discovery.hinted_labels.clone(),
        hint: cfg.discovery.modelserver_hint.clone(),
        job: prom.pod_job.clone(),
        interval: prom.scrape_interval.get(),
        timeout: prom.scrape_timeout.get(),
    }
}

/// Starts pod discovery (`discovery.kubernetes`), the model metadata emitter and the
/// Prometheus scrape receiver (static targets and discovered pods), as configured.
/// Returns the snapshot handle for the OTLP sink's model enrichment, the static
/// targets' sender and the tasks.
async fn start_discovery_and_scrape(
    cfg: &CollectorConfig,
    node: &str,
    buffer: &Buffer,
    stamp: &enrich::Stamp,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> Result<(Option<discover::SnapshotRx>, StaticsTx, Vec<JoinHandle<()>>), CollectorError> {
    let mut tasks = Vec::new();
    let output = receive::scrape::Output::new(buffer.clone(), stamp.clone());
    let prom = &cfg.receivers.prometheus;
    let (rules_tx, rules) = tokio::sync::watch::channel(discovery_rules(cfg));
    let snapshots = if cfg.discovery.kubernetes {
        let rx =
            start_discovery(cfg, node, &rules, &output, registry, shutdown, &mut tasks).await?;
        Some(rx)
    } else {
        None
    };
    let statics = receive::scrape::static_targets(prom);
    let mut statics_tx = None;
    if !statics.is_empty() || snapshots.is_some() {
        let metrics = receive::scrape::ScrapeMetrics::new(registry)?;
        let (ttx, trx) = tokio::sync::watch::channel(statics.clone());
        let (stx, srx) = tokio::sync::watch::channel(statics);
        statics_tx = Some(Scrape {
            statics: stx,
            rules: snapshots.is_some().then_some(rules_tx),
        });
        tasks.push(tokio::spawn(publish_targets(
            srx,
            snapshots.clone().map(|rx| (rx, rules)),
            ttx,
            shutdown.clone(),
        )));
        let client = receive::scrape::client(prom)?;
        tasks.push(tokio::spawn(receive::scrape::run(
            prom.clone(),
            client,
            output,
            metrics,
            trx,
            shutdown.clone(),
        )));
    }
    Ok((snapshots, statics_tx, tasks))
}

/// Starts the node's pod watcher and the model metadata emitter; returns the
/// watcher's snapshots.
async fn start_discovery(
    cfg: &CollectorConfig,
    node: &str,
    rules: &tokio::sync::watch::Receiver<discover::Rules>,
    output: &receive::scrape::Output,
    registry: &Registry,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<discover::SnapshotRx, CollectorError> {
    let client = discover::watch::client(cfg.discovery.kubeconfig.as_deref()).await?;
    let (tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(discover::Snapshot::default()));
    tasks.push(tokio::spawn(discover::watch::run(
        client,
        node.to_string(),
        rules.clone(),
        tx,
        discover::watch::restarts_counter(registry)?,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(model::run(
        rx.clone(),
        output.clone(),
        cfg.discovery.metadata_interval.get(),
        shutdown.clone(),
    )));
    Ok(rx)
}

/// Keeps the scrape receiver's target set at the static targets plus the pods
/// discovered now (under the discovery rules), as last reloaded.
async fn publish_targets(
    mut statics: tokio::sync::watch::Receiver<Vec<receive::scrape::ScrapeTarget>>,
    mut pods: Option<(
        discover::SnapshotRx,
        tokio::sync::watch::Receiver<discover::Rules>,
    )>,
    ttx: tokio::sync::watch::Sender<Vec<receive::scrape::ScrapeTarget>>,
    stop: CancellationToken,
) {
    // False once nothing can reload them any more (a start without a file).
    let (mut statics_reloadable, mut rules_reloadable) = (true, true);
    loop {
        let mut all = statics.borrow_and_update().clone();
        if let Some((rx, rules)) = &mut pods {
            let rules = rules.borrow_and_update().clone();
            all.extend(rx.borrow_and_update().scrape_targets(&rules));
        }
        ttx.send_if_modified(|cur| {
            let changed = *cur != all;
            *cur = all;
            changed
        });
        let (pods_changed, rules_changed) = match &mut pods {
            Some((rx, rules)) => (Some(rx), Some(rules)),
            None => (None, None),
        };
        let pods_changed = async {
            match pods_changed {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let rules_changed = async {
            match rules_changed {
                Some(rules) if rules_reloadable => rules.changed().await.is_ok(),
                _ => std::future::pending().await,
            }
        };
        let statics_changed = async {
            if statics_reloadable {
                statics.changed().await.is_ok()
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            ok = statics_changed => statics_reloadable = ok,
            ok = pods_changed => if !ok { return },
            ok = rules_changed => rules_reloadable = ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use discover::extract::{PodEndpoint, PodInfo};
    use std::time::Duration;
    use tokio::sync::watch;

    async fn wait(
        targets: &mut watch::Receiver<Vec<receive::scrape::ScrapeTarget>>,
        what: &str,
        f: fn(&[receive::scrape::ScrapeTarget]) -> bool,
    ) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !f(&targets.borrow_and_update()) {
                targets.changed().await.expect("publisher alive");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    /// Reloaded static targets and discovery rules reach the scrape receiver's
    /// target set; the pods' targets follow the new rules.
    #[tokio::test]
    async fn published_targets_follow_reloads() {
        let pod = PodInfo {
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "model-0".into(),
            ip: Some("10.0.0.7".into()),
            ready: true,
            endpoints: vec![PodEndpoint {
                scheme: "http".into(),
                port: 8002,
                path: "/metrics".into(),
            }],
            ..PodInfo::default()
        };
        let (_snap_tx, snapshots) =
            watch::channel(std::sync::Arc::new(discover::Snapshot::from_pods([pod])));
        let (rules_tx, rules) = watch::channel(discover::Rules::default());
        let (statics_tx, statics) = watch::channel(Vec::new());
        let (ttx, mut targets) = watch::channel(Vec::new());
        let stop = CancellationToken::new();
        tokio::spawn(publish_targets(
            statics,
            Some((snapshots, rules)),
            ttx,
            stop.clone(),
        ));
        wait(&mut targets, "the pod's target", |t| {
            t.len() == 1 && t[0].url == "http://10.0.0.7:8002/metrics"
        })
        .await;
        rules_tx.send_replace(discover::Rules {
            job: "reloaded".into(),
            ..discover::Rules::default()
        });
        wait(&mut targets, "the new pod job", |t| {
            t.len() == 1 && t[0].identity.job == "reloaded"
        })
        .await;
        let cfg: edgewatch_config::collector::PrometheusReceiverConfig =
            edgewatch_config::parse("static_targets: ['http://127.0.0.1:9/metrics']\n", "t.yaml")
                .unwrap();
        statics_tx.send_replace(receive::scrape::static_targets(&cfg));
        wait(&mut targets, "the static target too", |t| t.len() == 2).await;
        stop.cancel();
    }
}
