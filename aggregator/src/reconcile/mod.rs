//! Deployment status reconciler: desired state from a GitOps checkout
//! ([`gitops`]), observed state from the collectors' `edgewatch_model_info` /
//! `edgewatch_model_ready` series and last-seen times (read through
//! [`Store::select`]), reconciled by the pure [`reconcile`] into one
//! [`State`] per (cluster, app).
//!
//! Outputs: `edgewatch_deployment_status{cluster,app,model,desired_digest,
//! observed_digest,state} 1` and
//! `edgewatch_deployment_last_transition_timestamp_seconds{cluster,app}`
//! written into the store (so `/federate` and the rules see them),
//! `GET /api/v1/deployments`, and the alert rules [`RULES_YAML`].
//!
//! With `fleet.clusters` set, only those clusters are reconciled: the others
//! belong to another aggregator (here, their desired apps would all be
//! `Unknown` and alert).

pub mod gitops;
mod state;

pub use state::{
    reconcile, rollouts, AppStatus, Observed, ObservedCluster, ObservedPod, Options, Rollout,
    State, Status, Transition, MAX_TRANSITIONS,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use edgewatch_config::aggregator::ReconcilerConfig;
use edgewatch_config::AggregatorConfig;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::fleet::Owned;
use crate::store::{FamilyId, MetricType, Selector, Store, STALE_NAN};

pub const STATUS_METRIC: &str = "edgewatch_deployment_status";
pub const TRANSITION_METRIC: &str = "edgewatch_deployment_last_transition_timestamp_seconds";

/// Built-in alert rules over `edgewatch_deployment_status` (a Prometheus rule
/// group file); the rules engine loads it when the reconciler runs.
pub use crate::rules::builtin::DEPLOYMENTS_YAML as RULES_YAML;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reconciler: interval must be > 0")]
    ZeroInterval,
    #[error("registering reconciler metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Everything the APIs and the status page read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub gitops_path: String,
    /// Revision of the desired state in force.
    pub revision: String,
    /// The latest read of the checkout failed; `revision` is the last good one.
    pub gitops_stale: bool,
    pub gitops_errors: Vec<String>,
    pub last_reconcile_ms: i64,
    #[serde(skip)]
    pub status: Status,
    #[serde(skip)]
    pub desired: gitops::DesiredState,
}

/// Shared, read-only view of the reconciler's latest result.
pub type Handle = Arc<RwLock<Snapshot>>;

/// Reconciler settings from a reload, taken at the next round.
#[derive(Clone, Default)]
pub struct Settings(Arc<std::sync::Mutex<Option<ReconcilerConfig>>>);

impl Settings {
    /// Checks `rc` as at start and hands it to the next round.
    pub fn set(&self, rc: &ReconcilerConfig) -> Result<(), ReconcileError> {
        if rc.interval.get().is_zero() {
            return Err(ReconcileError::ZeroInterval);
        }
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(rc.clone());
        Ok(())
    }

    fn take(&self) -> Option<ReconcilerConfig> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The reconciler task and its API.
pub struct Reconciler {
    /// Set by reloads.
    settings: Settings,
    store: Arc<Store>,
    source: gitops::Source,
    opts: Options,
    owned: Owned,
    interval: Duration,
    shared: Handle,
    status_family: FamilyId,
    transition_family: FamilyId,
    /// Label sets of status series written last round (retired when they change).
    written: BTreeMap<(String, String), Vec<(String, String)>>,
    runs: prometheus::IntCounter,
    issues_gauge: prometheus::IntGauge,
}

impl Reconciler {
    /// None when `reconciler:` is not configured.
    pub fn new(
        cfg: &AggregatorConfig,
        store: Arc<Store>,
        registry: &prometheus::Registry,
    ) -> Result<Option<Self>, ReconcileError> {
        let Some(rc) = &cfg.reconciler else {
            return Ok(None);
        };
        if rc.interval.get().is_zero() {
            return Err(ReconcileError::ZeroInterval);
        }
        let runs = prometheus::IntCounter::new(
            "edgewatch_reconciler_runs_total",
            "Reconciliation rounds of the deployment status reconciler.",
        )?;
        let issues_gauge = prometheus::IntGauge::new(
            "edgewatch_reconciler_gitops_issues",
            "Problems found in the GitOps repository by the latest read.",
        )?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(issues_gauge.clone()))?;
        let status_family = store.family(
            STATUS_METRIC,
            MetricType::Gauge,
            "Deployment state of an app on a cluster (desired from GitOps vs observed).",
            "",
        );
        let transition_family = store.family(
            TRANSITION_METRIC,
            MetricType::Gauge,
            "When the deployment state of an app on a cluster last changed.",
            "",
        );
        // Held for the reconciler's life, also while no status series exists.
        store.pin_family(status_family);
        store.pin_family(transition_family);
        let shared = Handle::default();
        write_lock(&shared).gitops_path = rc.gitops.path.display().to_string();
        Ok(Some(Reconciler {
            settings: Settings::default(),
            store,
            source: gitops::Source::new(rc.gitops.path.clone(), rc.clusters.clone()),
            opts: Options {
                progress_deadline: rc.progress_deadline.get(),
                down_after: cfg.fleet.down_after.get(),
            },
            owned: Owned::new(&cfg.fleet.clusters),
            interval: rc.interval.get(),
            shared,
            status_family,
            transition_family,
            written: BTreeMap::new(),
            runs,
            issues_gauge,
        }))
    }

    /// Where reloads put new settings.
    pub fn settings(&self) -> Settings {
        self.settings.clone()
    }

    /// Takes reloaded settings: another checkout or cluster list is read afresh
    /// at this round; deadline and interval apply from now.
    fn reconfigure(&mut self, rc: ReconcilerConfig) {
        let root = rc.gitops.path.clone();
        if self.source.root() != root.as_path()
            || self.source.config_clusters() != rc.clusters.as_ref()
        {
            self.source = gitops::Source::new(root, rc.clusters.clone());
            write_lock(&self.shared).gitops_path = rc.gitops.path.display().to_string();
        }
        self.opts.progress_deadline = rc.progress_deadline.get();
        self.interval = rc.interval.get();
        tracing::info!(path = %rc.gitops.path.display(), "reconciler settings reloaded");
    }

    /// The latest result, for the status page.
    pub fn handle(&self) -> Handle {
        self.shared.clone()
    }

    pub fn options(&self) -> Options {
        self.opts
    }

    /// `GET /api/v1/deployments`.
    pub fn router(&self) -> axum::Router {
        deployments_router(self.shared.clone())
    }

    /// Every `interval`: re-read desired state if changed, observe, reconcile,
    /// write series; `first_read` is called once desired state was first read.
    /// Returns when `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken, first_read: impl FnOnce()) {
        let mut first_read = Some(first_read);
        loop {
            let mut me = self;
            me = match tokio::task::spawn_blocking(move || {
                me.step(crate::now_ms());
                me
            })
            .await
            {
                Ok(me) => me,
                Err(e) => {
                    tracing::error!(error = %e, "reconciler round panicked; stopping");
                    return;
                }
            };
            self = me;
            if self.source.desired.is_some() {
                if let Some(f) = first_read.take() {
                    f();
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One round at `now_ms` (public for tests).
    pub fn step(&mut self, now_ms: i64) {
        if let Some(rc) = self.settings.take() {
            self.reconfigure(rc);
        }
        self.source.poll();
        let mut desired = self.source.desired.clone().unwrap_or_default();
        let mut observed = observe(&self.store, now_ms, &self.opts);
        desired.clusters.retain(|c, _| self.owned.owns(c));
        observed.clusters.retain(|c, _| self.owned.owns(c));
        let previous = read_lock(&self.shared).status.clone();
        let status = reconcile(&desired, &observed, &previous, now_ms, &self.opts);
        self.write_series(&status, now_ms);
        self.runs.inc();
        self.issues_gauge.set(self.source.issues.len() as i64);
        let mut s = write_lock(&self.shared);
        s.revision = desired.revision.clone();
        s.gitops_stale = self.source.stale;
        s.gitops_errors = self.source.issues.iter().map(|i| i.to_string()).collect();
        s.last_reconcile_ms = now_ms;
        s.status = status;
        s.desired = desired;
    }

    fn write_series(&mut self, status: &Status, now_ms: i64) {
        let store = self.store.clone();
        let out = store.logged(now_ms);
        let mut next = BTreeMap::new();
        for ((cluster, app), st) in &status.entries {
            let labels = vec![
                ("cluster".to_owned(), cluster.clone()),
                ("app".to_owned(), app.clone()),
                ("model".to_owned(), st.model.clone()),
                ("desired_digest".to_owned(), st.desired_digest.clone()),
                ("observed_digest".to_owned(), st.observed_digest.clone()),
                ("state".to_owned(), st.state.as_str().to_owned()),
            ];
            self.write_status(&out, &labels, 1.0);
            out.write(
                self.transition_family,
                TRANSITION_METRIC,
                &[("cluster", cluster), ("app", app)],
                st.since_ms as f64 / 1000.0,
                now_ms,
            );
            next.insert((cluster.clone(), app.clone()), labels);
        }
        // A label set no longer current gets a staleness marker: it is no
        // longer selected (nor on `/federate`), as in Prometheus.
        for (key, labels) in std::mem::take(&mut self.written) {
            if next.get(&key) == Some(&labels) {
                continue;
            }
            self.write_status(&out, &labels, STALE_NAN);
        }
        self.written = next;
    }

    fn write_status(
        &self,
        out: &crate::store::Logged<'_>,
        labels: &[(String, String)],
        value: f64,
    ) {
        let refs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        out.write(
            self.status_family,
            STATUS_METRIC,
            &refs,
            value,
            out.now_ms(),
        );
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Observed state from the store: per cluster the newest sample of its
/// collectors (and model series), and the pods whose `edgewatch_model_info`
/// is current (no older than `min(down_after, 60s)` behind its node's newest
/// sample; of several digests of one pod the newest wins).
pub fn observe(store: &Store, now_ms: i64, opts: &Options) -> Observed {
    let sels: Vec<Selector> = crate::fleet::LIVENESS_SELECTORS
        .iter()
        .flat_map(|s| Selector::parse(s).expect("valid built-in selector"))
        .collect();
    let sel = store.select(&sels, now_ms);
    let fresh_ms = opts.down_after.min(Duration::from_secs(60)).as_millis() as i64;
    let mut out = Observed::default();
    let mut node_seen: BTreeMap<(String, String), i64> = BTreeMap::new();
    // (cluster, namespace, pod, digest) → ready
    let mut ready: BTreeMap<(String, String, String, String), bool> = BTreeMap::new();
    for s in sel.iter() {
        let Some(cluster) = s.label("cluster") else {
            continue;
        };
        let c = out.clusters.entry(cluster.to_owned()).or_default();
        let seen = crate::fleet::seen_ms(&s);
        c.last_seen_ms = Some(c.last_seen_ms.unwrap_or(i64::MIN).max(seen));
        let node = s.label("node").unwrap_or("");
        let n = node_seen
            .entry((cluster.to_owned(), node.to_owned()))
            .or_insert(i64::MIN);
        *n = (*n).max(seen);
        if s.name() == "edgewatch_model_ready" {
            let l = |k| s.label(k).unwrap_or("").to_owned();
            ready.insert(
                (l("cluster"), l("namespace"), l("pod"), l("digest")),
                s.value() >= 1.0,
            );
        }
    }
    // (cluster, namespace, pod) → (timestamp, pod)
    let mut pods: BTreeMap<(String, String, String), (i64, ObservedPod)> = BTreeMap::new();
    for s in sel.iter().filter(|s| s.name() == "edgewatch_model_info") {
        let l = |k| s.label(k).unwrap_or("").to_owned();
        let (cluster, node) = (l("cluster"), l("node"));
        let newest = node_seen
            .get(&(cluster.clone(), node.clone()))
            .copied()
            .unwrap_or(i64::MIN);
        if s.timestamp_ms() < newest.saturating_sub(fresh_ms) || s.value() < 1.0 {
            continue;
        }
        let pod = ObservedPod {
            node,
            namespace: l("namespace"),
            pod: l("pod"),
            deployment: l("deployment"),
            model: l("model"),
            version: l("version"),
            image: l("image"),
            digest: l("digest"),
            ready: ready
                .get(&(cluster.clone(), l("namespace"), l("pod"), l("digest")))
                .copied()
                .unwrap_or(false),
        };
        let key = (cluster, pod.namespace.clone(), pod.pod.clone());
        match pods.get(&key) {
            Some((t, _)) if *t > s.timestamp_ms() => {}
            _ => {
                pods.insert(key, (s.timestamp_ms(), pod));
            }
        }
    }
    for ((cluster, _, _), (_, pod)) in pods {
        out.clusters.entry(cluster).or_default().pods.push(pod);
    }
    out
}

#[derive(Debug, Clone, Serialize)]
struct DeploymentJson<'a> {
    cluster: &'a str,
    app: &'a str,
    model: &'a str,
    desired_digest: &'a str,
    observed_digest: &'a str,
    state: State,
    since: f64,
    revision: &'a str,
    pods: usize,
    ready: usize,
    on_desired: usize,
    last_seen: Option<f64>,
}

/// The `/api/v1/deployments` body's `data`.
pub fn deployments_json(s: &Snapshot) -> serde_json::Value {
    let deployments: Vec<DeploymentJson<'_>> = s
        .status
        .entries
        .values()
        .map(|e| DeploymentJson {
            cluster: &e.cluster,
            app: &e.app,
            model: &e.model,
            desired_digest: &e.desired_digest,
            observed_digest: &e.observed_digest,
            state: e.state,
            since: e.since_ms as f64 / 1000.0,
            revision: &e.revision,
            pods: e.pods,
            ready: e.ready,
            on_desired: e.on_desired,
            last_seen: e.last_seen_ms.map(|t| t as f64 / 1000.0),
        })
        .collect();
    let clusters: BTreeSet<&str> = s.status.entries.keys().map(|k| k.0.as_str()).collect();
    let apps: BTreeSet<&str> = s.status.entries.keys().map(|k| k.1.as_str()).collect();
    let transitions: Vec<serde_json::Value> = s
        .status
        .transitions
        .iter()
        .rev()
        .take(100)
        .map(|t| {
            serde_json::json!({
                "cluster": t.cluster, "app": t.app, "from": t.from, "to": t.to,
                "at": t.at_ms as f64 / 1000.0, "revision": t.revision,
            })
        })
        .collect();
    serde_json::json!({
        "revision": s.revision,
        "gitops": {
            "path": s.gitops_path,
            "revision": s.revision,
            "stale": s.gitops_stale,
            "errors": s.gitops_errors,
        },
        "last_reconcile": s.last_reconcile_ms as f64 / 1000.0,
        "clusters": clusters,
        "apps": apps,
        "deployments": deployments,
        "rollouts": rollouts(&s.status, &s.revision),
        "transitions": transitions,
    })
}

/// `GET /api/v1/deployments` over a [`Handle`].
pub fn deployments_router(shared: Handle) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route(
        "/api/v1/deployments",
        get(move || {
            let shared = shared.clone();
            async move {
                let data = deployments_json(&read_lock(&shared));
                axum::Json(serde_json::json!({"status": "success", "data": data}))
            }
        }),
    )
}
