//! edgewatch aggregator: ingest OTLP from every collector → convert to Prometheus
//! series → store the latest samples → expose `/federate` and the core's own
//! `/metrics`.

pub mod convert;
pub mod expose;
pub mod heap;
pub mod ingest;
mod reload;
pub mod remote;
pub mod store;
pub mod wal;

use edgewatch_config::tls::ServerTlsConfig;
use edgewatch_config::AggregatorConfig;
use edgewatch_otlp::admission::AdmissionMetrics;
use edgewatch_otlp::ready::Readiness;
use edgewatch_otlp::server::OtlpListeners;
use edgewatch_tls::server::ServerTls;
use prometheus::Registry;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("state at {path}: {source}")]
    State { path: String, source: sled::Error },
    #[error(transparent)]
    Ingest(#[from] ingest::IngestError),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error(transparent)]
    Remote(#[from] remote::RemoteError),
    #[error(transparent)]
    Notify(#[from] edgewatch_notify::NotifyError),
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error(transparent)]
    Reconcile(#[from] reconcile::ReconcileError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("TLS: {0}")]
    Tls(#[from] edgewatch_tls::TlsError),
}

/// A started aggregator: where it listens, and its task.
pub struct Aggregator {
    pub otlp_grpc: Option<SocketAddr>,
    pub otlp_http: Option<SocketAddr>,
    pub http: SocketAddr,
    pub store: Arc<store::Store>,
    task: JoinHandle<Result<(), AggregatorError>>,
}

impl Aggregator {
    pub async fn wait(self) -> Result<(), AggregatorError> {
        self.task
            .await
            .map_err(|e| AggregatorError::Io(std::io::Error::other(e)))?
    }
}

/// Starts with `cfg`, read from `path`, which SIGHUP and `POST /-/reload` read
/// again (see the README's "Reload").
pub async fn start_reloadable(
    cfg: &AggregatorConfig,
    path: &Path,
    shutdown: CancellationToken,
) -> Result<Aggregator, AggregatorError> {
    start_with(cfg, Some(path), shutdown).await
}

/// Starts with `cfg`, which cannot be reloaded.
pub async fn start(
    cfg: &AggregatorConfig,
    shutdown: CancellationToken,
) -> Result<Aggregator, AggregatorError> {
    start_with(cfg, None, shutdown).await
}

async fn start_with(
    cfg: &AggregatorConfig,
    config_path: Option<&Path>,
    shutdown: CancellationToken,
) -> Result<Aggregator, AggregatorError> {
    heap::limit_malloc_arenas();
    let registry = Registry::new();
    let readiness = Readiness::new(&[STATE_LOADED, LISTENING], &shutdown);
    let state = open_state(cfg).await?;
    let (store, wal) = open_store(cfg, &state, &registry).await?;
    let otlp = &cfg.receivers.otlp;
    let policy = ingest::identity::Policy::new(
        &cfg.auth,
        ServerTlsConfig::verifies_clients(cfg.receivers.otlp.tls.as_ref()),
    );
    let otlp_authenticated = !policy.is_open();
    let gate = ingest::identity::Gate::new(policy, &registry)?;
    let auth_failures = gate.failures();
    let sink = ingest::IngestSink::new(
        store.clone(),
        wal.clone(),
        otlp.max_request_bytes.bytes() as usize,
        gate,
        &registry,
    )?;
    let tls_metrics = edgewatch_tls::TlsMetrics::register(&registry)?;
    let http_metrics = edgewatch_tls::serve::HttpMetrics::register(&registry)?;
    let mut listeners = OtlpListeners::bind(otlp.grpc.map(|a| a.0), otlp.http.map(|a| a.0))
        .await?
        .with_admission_metrics(AdmissionMetrics::new(&registry)?);
    if let Some(t) = &otlp.tls {
        listeners = listeners.with_tls(ServerTls::new(t, &tls_metrics)?, tls_metrics.clone());
    }
    let http_listener = edgewatch_otlp::server::bind(cfg.http.listen.0, "HTTP").await?;
    let http_tls = match &cfg.http.tls {
        Some(t) => Some((
            ServerTls::new(t, &tls_metrics)?,
            "http",
            tls_metrics.clone(),
        )),
        None => None,
    };
    listeners.warn_if_open(otlp_authenticated);
    edgewatch_otlp::auth::warn_if_open(
        "HTTP",
        http_listener.local_addr()?,
        !cfg.http.basic_auth_users.is_empty()
            || ServerTlsConfig::verifies_clients(cfg.http.tls.as_ref()),
    );
    // Readers first: a new endpoint starts at the log's end, before anything new.
    let remote_metrics = remote::Metrics::register(&registry)?;
    let (endpoints, writers) =
        remote::live::start(&cfg.remote_write, &wal, &remote_metrics, shutdown.clone())?;
    let live = Live {
        config_path,
        endpoints,
        registry: &registry,
        readiness: &readiness,
        shutdown: &shutdown,
    };
    let (app, mut background) = services(cfg, &store, &state, live)?;
    let app = web::security::protect(app, &cfg.http.basic_auth_users, auth_failures);
    background.push(writers);
    background.push(tokio::spawn(trim_wal(
        wal.clone(),
        wal_limits(cfg),
        shutdown.clone(),
    )));
    background.push(tokio::spawn(heap::run(registry.clone(), shutdown.clone())));
    background.push(tokio::spawn(expire_collectors(
        sink.clone(),
        cfg.state.collector_expiry.get(),
        shutdown.clone(),
    )));
    let out = Aggregator {
        otlp_grpc: listeners.grpc_addr(),
        otlp_http: listeners.http_addr(),
        http: http_listener.local_addr()?,
        store,
        task: tokio::spawn(run(
            listeners,
            sink,
            otlp.max_request_bytes.bytes() as usize,
            (http_listener, http_tls, http_metrics.listener("http")),
            app,
            background,
            (state, wal),
            readiness,
            shutdown,
        )),
    };
    tracing::info!(otlp_grpc = ?out.otlp_grpc, otlp_http = ?out.otlp_http, http = %out.http, "aggregator started");
    Ok(out)
}

/// The store (empty until the log's replay) and the write-ahead log behind it.
async fn open_store(
    cfg: &AggregatorConfig,
    state: &sled::Db,
    registry: &Registry,
) -> Result<(Arc<store::Store>, Arc<wal::Wal>), AggregatorError> {
    let staleness = cfg.store.staleness.get();
    let store = Arc::new(store::Store::new(
        store::StoreOptions { staleness },
        registry,
    ));
    let wal = open_wal(cfg, state, registry).await?;
    store.set_wal(wal.clone());
    store.set_limits(store::Limits::from_config(&cfg.limits));
    Ok((store, wal))
}

/// Opens the sled state (blocking I/O, off the runtime's threads).
async fn open_state(cfg: &AggregatorConfig) -> Result<sled::Db, AggregatorError> {
    let state_path = cfg.state.path.clone();
    tokio::task::spawn_blocking(move || {
        sled::Config::new()
            .path(&state_path)
            .cache_capacity(16 << 20)
            .flush_every_ms(Some(200))
            .open()
    })
    .await
    .map_err(|e| AggregatorError::Io(std::io::Error::other(e)))?
    .map_err(|source| AggregatorError::State {
        path: cfg.state.path.display().to_string(),
        source,
    })
}

/// Opens the write-ahead log (moving a corrupt one aside) and takes over the
/// replay windows an older version kept in the state database.
async fn open_wal(
    cfg: &AggregatorConfig,
    state: &sled::Db,
    registry: &Registry,
) -> Result<Arc<wal::Wal>, AggregatorError> {
    let path = cfg.wal_path();
    let registry = registry.clone();
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let wal = wal::Wal::open(&path, &registry)?;
        let moved = wal.migrate_windows(&state)?;
        if moved > 0 {
            tracing::info!(
                collectors = moved,
                "replay windows moved into the write-ahead log"
            );
        }
        Ok::<_, AggregatorError>(wal)
    })
    .await
    .map_err(|e| AggregatorError::Io(std::io::Error::other(e)))?
}

/// The log keeps what the store needs to be rebuilt: at least `store.window`
/// and the staleness period.
fn replay_horizon(cfg: &AggregatorConfig) -> Duration {
    cfg.store.window.get().max(cfg.store.staleness.get())
}

fn wal_limits(cfg: &AggregatorConfig) -> wal::Limits {
    let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
    wal::Limits {
        max_bytes: cfg.wal.max_bytes(),
        max_age_ms: ms(cfg.wal.max_age()),
        keep_ms: ms(replay_horizon(cfg)),
    }
}

/// Rebuilds the store from the log's recent records (blocking).
fn replay_wal(store: &store::Store, wal: &wal::Wal, horizon: Duration) {
    let started = std::time::Instant::now();
    let since = now_ms().saturating_sub(horizon.as_millis().min(i64::MAX as u128) as i64);
    let samples = wal.replay(since, |r| {
        let families: Vec<_> = r
            .families()
            .iter()
            .map(|f| store.family(&f.name, f.metric_type, &f.help, &f.unit))
            .collect();
        r.for_each(|s| {
            let labels: smallvec::SmallVec<[(&str, &str); 24]> = s.labels().collect();
            store.write(
                families[s.family_index],
                s.name,
                &labels,
                s.value,
                s.timestamp_ms,
                r.created_ms(),
            );
        });
    });
    tracing::info!(samples, series = store.series_count(), took = ?started.elapsed(),
        "store rebuilt from the write-ahead log");
}

/// Cuts the log by its caps, and behind every reader once the store no longer needs it.
async fn trim_wal(wal: Arc<wal::Wal>, limits: wal::Limits, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.cancelled() => return,
        }
        let w = wal.clone();
        let _ = tokio::task::spawn_blocking(move || w.trim(limits, now_ms())).await;
    }
}

/// Evicts idle collectors' replay state from memory and forgets long-silent ones.
async fn expire_collectors(sink: ingest::IngestSink, expiry: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.cancelled() => return,
        }
        let s = sink.clone();
        let _ = tokio::task::spawn_blocking(move || s.expire(now_ms(), expiry)).await;
    }
}

/// `/readyz` waits for these (and for the first GitOps read when configured).
const STATE_LOADED: &str = "the write-ahead log's replay";
const LISTENING: &str = "the listeners";
const GITOPS_READ: &str = "the first GitOps read";

/// What the services need besides the configuration and the state.
struct Live<'a> {
    /// The file a reload reads; None: no reloads.
    config_path: Option<&'a Path>,
    /// Where a reload puts the remote_write endpoints.
    endpoints: remote::live::Endpoints,
    registry: &'a Registry,
    readiness: &'a Readiness,
    shutdown: &'a CancellationToken,
}

/// Everything served over HTTP, and the background tasks behind it: the
/// store's sweep, the notifier, the rule engine, the reconciler, the reloads.
fn services(
    cfg: &AggregatorConfig,
    store: &Arc<store::Store>,
    state: &sled::Db,
    live: Live<'_>,
) -> Result<(axum::Router, Vec<JoinHandle<()>>), AggregatorError> {
    let (registry, shutdown) = (live.registry, live.shutdown);
    let notifier = notifier(cfg, state, registry)?;
    let mut background = vec![tokio::spawn(sweep(
        store.clone(),
        cfg.store.staleness.get(),
        shutdown.clone(),
    ))];
    let mut app = expose::router(store.clone())
        .merge(web_router(registry.clone()))
        .merge(live.readiness.router());
    if let Some(n) = &notifier {
        background.push(tokio::spawn(n.clone().run(shutdown.clone())));
        app = app.merge(n.router());
    }
    // Loaded before ingest starts: it tells the store which series keep a window.
    let rules = rules::RuleEngine::load(cfg, store.clone(), state, registry)?;
    // Before any rule round: an alert must not see an empty store after a restart.
    if let Some(wal) = store.wal() {
        replay_wal(store, wal, replay_horizon(cfg));
    }
    live.readiness.met(STATE_LOADED);
    app = app.merge(rules.router());
    let reconciler = reconcile::Reconciler::new(cfg, store.clone(), registry)?;
    let reload_metrics = edgewatch_otlp::reload::ReloadMetrics::register(registry)?;
    if let Some(path) = live.config_path {
        let mut reloads = reload::Reloads::new(
            path,
            cfg,
            store.clone(),
            rules.clone(),
            notifier.clone(),
            reconciler.as_ref().map(|r| r.settings()),
            live.endpoints.clone(),
        );
        let (handle, task) = edgewatch_otlp::reload::spawn(
            move || reloads.apply(),
            reload_metrics,
            shutdown.clone(),
        );
        app = app.merge(handle.router());
        background.push(task);
    }
    background.push(tokio::spawn(rules.run(notifier, shutdown.clone())));
    let fleet = fleet::Fleet::new(
        store.clone(),
        cfg.fleet.down_after.get(),
        fleet::Owned::new(&cfg.fleet.clusters),
    );
    fleet.register(registry)?;
    app = app
        .merge(fleet.router())
        .merge(web::router(fleet, reconciler.as_ref().map(|r| r.handle())));
    if let Some(r) = reconciler {
        app = app.merge(r.router());
        live.readiness.wait_for(GITOPS_READ);
        let ready = live.readiness.clone();
        background.push(tokio::spawn(
            r.run(shutdown.clone(), move || ready.met(GITOPS_READ)),
        ));
    }
    Ok((app, background))
}

/// The notifier, when `alerting:` is configured.
fn notifier(
    cfg: &AggregatorConfig,
    state: &sled::Db,
    registry: &Registry,
) -> Result<Option<edgewatch_notify::Notifier>, AggregatorError> {
    let Some(alerting) = &cfg.alerting else {
        return Ok(None);
    };
    let n = edgewatch_notify::Notifier::new(alerting, state, registry)?;
    n.set_eval_interval(cfg.evaluation_interval.get());
    Ok(Some(n))
}

/// The HTTP listener's TLS, its name in logs and metrics, the role's TLS metrics.
type HttpTls = (ServerTls, &'static str, edgewatch_tls::TlsMetrics);

#[allow(clippy::too_many_arguments)]
async fn run(
    listeners: OtlpListeners,
    sink: ingest::IngestSink,
    max_request_bytes: usize,
    (http_listener, http_tls, http_metrics): (
        tokio::net::TcpListener,
        Option<HttpTls>,
        edgewatch_tls::serve::ListenerMetrics,
    ),
    app: axum::Router,
    background: Vec<JoinHandle<()>>,
    (state, wal): (sled::Db, Arc<wal::Wal>),
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(), AggregatorError> {
    // The HTTP listener outlives the drain: `/readyz` says 503 meanwhile.
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(edgewatch_tls::serve::serve_http_with(
        http_listener,
        http_tls,
        app,
        edgewatch_tls::serve::HttpLimits::DEFAULT,
        Some(http_metrics),
        http_stop.clone().cancelled_owned(),
    ));
    readiness.met(LISTENING);
    let served = listeners.serve(sink, max_request_bytes, shutdown).await;
    for task in background {
        let _ = task.await;
    }
    http_stop.cancel();
    let _ = http.await;
    let _ = tokio::task::spawn_blocking(move || wal.close()).await;
    if let Err(e) = tokio::task::spawn_blocking(move || state.flush()).await {
        tracing::warn!(error = %e, "flushing state at shutdown failed");
    }
    tracing::info!("aggregator stopped");
    served.map_err(AggregatorError::Io)
}

/// Removes stale series periodically.
async fn sweep(store: Arc<store::Store>, staleness: Duration, stop: CancellationToken) {
    let every = (staleness / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.sweep(now_ms())).await;
    }
}

fn web_router(registry: Registry) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let r = registry.clone();
                async move { edgewatch_otlp::server::metrics_response(&r) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

pub(crate) use edgewatch_prom::time::now_ms;
pub mod fleet;
pub mod promql;
pub mod reconcile;
pub mod rules;
pub mod web;
