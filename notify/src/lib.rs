//! Notifications: what happens after an alert exists. Routing, grouping, inhibition,
//! silences and delivery to PagerDuty (Events v2), Dynatrace (Events v2), webhooks
//! (Alertmanager's payload v4) and real Alertmanagers (`/api/v2/alerts`), configured in
//! Alertmanager's own shape (`edgewatch_config::alerting`).
//!
//! ```text
//! rules ── Notifier::send(alerts) ──► Dispatcher (route → groups, timers)      [pure]
//!                     │                     │ due groups (run task)
//!                     │                     ▼
//!                     │            mute (silences, inhibition)                     [pure]
//!                     │                     ▼
//!                     │            per integration: needs_update(notification log) [pure]
//!                     │                     ▼
//!                     │            Integration::request (integration/*.rs)         [pure]
//!                     │                     ▼
//!                     │            deliver (rate limit, timeout, retries, metrics)
//!                     └─► integration/alertmanager.rs: ungrouped pushes, re-sent periodically
//! ```
//!
//! Flush of a due group: `flush` → `FlushGroup::new` (mute) → per integration
//! `notify_integration` (notification log, `needs_update`) → `deliver`
//! (`Integration::request`, `Deliverer::rate_limit`, `Deliverer::post` with the
//! integration's `classify`) → `Inner::nflog_put`.
//!
//! State in sled (survives restarts): the notification log per (group, receiver,
//! integration) — what was last notified firing/resolved, and when — the alerts, and
//! the silences. After a restart a still-firing group is not notified again before
//! `repeat_interval`, and a resolve that was pending is still delivered.
//!
//! Muting applies to firing alerts only: a resolve for an incident that was notified
//! is delivered even if a silence was added meanwhile, so nothing stays open.

mod api;
mod deliver;
mod dispatch;
mod inhibit;
mod integration;
mod model;
mod payload;
mod route;
mod silence;

pub use integration::{BuildError, IntegrationError};

use deliver::{Deliverer, Failure};
use dispatch::{needs_update, Dispatcher, Entry, FlushJob};
use edgewatch_config::alerting::{AlertingConfig, ReceiverConfig};
use inhibit::InhibitRule;
use integration::alertmanager::{push_loop, AmTarget};
use integration::{Configured, Integrations};
use model::{from_ms, to_ms};
use serde::{Deserialize, Serialize};
use silence::Silence;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// An alert from the rules engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: SystemTime,
    /// `Some(t)`: resolved at `t`.
    pub ends_at: Option<SystemTime>,
    pub generator_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("alerting: receiver {receiver}: {source}")]
    Receiver {
        receiver: String,
        source: IntegrationError,
    },
    #[error("alerting state: {0}")]
    State(#[from] sled::Error),
    #[error("registering alerting metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The notification pipeline. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

struct Inner {
    /// Replaced whole by a reload.
    routing: RwLock<Arc<Routing>>,
    dispatcher: Mutex<Dispatcher>,
    silences: RwLock<BTreeMap<String, Silence>>,
    am_targets: Vec<AmTarget>,
    resend_delay: Duration,
    eval_interval_ms: AtomicU64,
    deliverer: Deliverer,
    nflog: sled::Tree,
    alerts_tree: sled::Tree,
    silences_tree: sled::Tree,
    db: sled::Db,
    wake: tokio::sync::Notify,
    clock: RwLock<Clock>,
}

/// What a reload replaces (the route tree and resolve timeout live in the dispatcher).
struct Routing {
    external_url: String,
    receivers: HashMap<String, Receiver>,
    inhibit: Vec<InhibitRule>,
    /// `delivery` and `resend_delay`, as configured: they need a restart.
    fixed: String,
}

struct Receiver {
    integrations: Integrations,
    /// Indices into `am_targets`.
    am: Vec<usize>,
}

const NFLOG_RETENTION: Duration = Duration::from_secs(5 * 24 * 3600);

#[derive(Serialize, Deserialize)]
struct StoredAlertJson {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at_ms: i64,
    ends_at_ms: Option<i64>,
    generator_url: String,
}

impl Notifier {
    /// Builds the pipeline: resolves secrets (files), restores silences, alerts and
    /// the notification log from `state`, registers metrics in `registry`.
    pub fn new(
        cfg: &AlertingConfig,
        state: &sled::Db,
        registry: &prometheus::Registry,
    ) -> Result<Self, NotifyError> {
        let (receivers, am_targets) = build_receivers(&cfg.receivers)?;
        let metrics = deliver::Metrics::new(registry)?;
        let tree = route::RouteTree::new(&cfg.route);
        let mut dispatcher = Dispatcher::new(tree, cfg.resolve_timeout.get());
        let nflog = state.open_tree("notify_nflog")?;
        let alerts_tree = state.open_tree("notify_alerts")?;
        let silences_tree = state.open_tree("notify_silences")?;
        let now = SystemTime::now();
        let silences = restore_silences(&silences_tree, now)?;
        let restored = restore_alerts(&alerts_tree)?;
        if !restored.is_empty() {
            tracing::info!(
                alerts = restored.len(),
                silences = silences.len(),
                "alerting state restored"
            );
        }
        dispatcher.ingest(restored, now);
        Ok(Notifier {
            inner: Arc::new(Inner {
                routing: RwLock::new(Arc::new(Routing::new(cfg, receivers))),
                dispatcher: Mutex::new(dispatcher),
                silences: RwLock::new(silences),
                am_targets,
                resend_delay: cfg.resend_delay.get(),
                eval_interval_ms: AtomicU64::new(cfg.eval_interval.get().as_millis() as u64),
                deliverer: Deliverer::new(cfg.delivery.clone(), metrics),
                nflog,
                alerts_tree,
                silences_tree,
                db: state.clone(),
                wake: tokio::sync::Notify::new(),
                clock: RwLock::new(Arc::new(SystemTime::now)),
            }),
        })
    }

    /// The rules' evaluation interval (Alertmanager pushes: `endsAt = now + 4*max(it,1m)`).
    pub fn set_eval_interval(&self, d: Duration) {
        self.inner
            .eval_interval_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Replaces the wall clock (tests).
    pub fn set_clock(&self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) {
        *self.inner.clock.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(clock);
    }

    /// Takes the alerts of one evaluation round: every active alert and the
    /// just-resolved ones (Prometheus' `sendAlerts`). Never blocks on delivery.
    pub fn send(&self, alerts: Vec<Alert>) {
        let inner = &self.inner;
        let now = inner.now();
        let mut pushes: Vec<(usize, Alert)> = Vec::new();
        let changed = {
            let mut d = inner.lock_dispatcher();
            let changed = d.ingest(alerts.clone(), now);
            if !inner.am_targets.is_empty() {
                let routing = inner.routing();
                for a in &alerts {
                    if inner.muted(&d, a, now) {
                        continue;
                    }
                    let mut seen = BTreeSet::new();
                    for node in d.tree.matches(&a.labels) {
                        for &t in routing
                            .receivers
                            .get(&node.receiver)
                            .map(|r| r.am.as_slice())
                            .unwrap_or(&[])
                        {
                            if seen.insert(t) {
                                pushes.push((t, a.clone()));
                            }
                        }
                    }
                }
            }
            changed
        };
        inner.persist_alerts(&changed, &[]);
        for (t, a) in pushes {
            inner.enqueue_push(t, a, now);
        }
        inner.wake.notify_one();
    }

    /// The dispatcher task: group timers, flushes, deliveries, Alertmanager pushes,
    /// expiry of stale alerts and silences. Returns after `shutdown` (in-flight
    /// deliveries are cancelled; what was not delivered is retried after a restart).
    pub async fn run(self, shutdown: CancellationToken) {
        let inner = self.inner;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..inner.am_targets.len() {
            tasks.spawn(push_loop(inner.clone(), t, shutdown.clone()));
        }
        let mut last_gc = inner.now();
        let mut gc_at_start = true;
        loop {
            let now = inner.now();
            let (changed, forgotten) = inner.lock_dispatcher().expire(now);
            inner.persist_alerts(&changed, &forgotten);
            if gc_at_start
                || now.duration_since(last_gc).unwrap_or_default() >= Duration::from_secs(600)
            {
                inner.gc(now);
                last_gc = now;
                gc_at_start = false;
            }
            let jobs = inner.lock_dispatcher().due(now);
            for job in jobs {
                tasks.spawn(flush(inner.clone(), job, shutdown.clone()));
            }
            while let Some(r) = tasks.try_join_next() {
                if let Err(e) = r {
                    tracing::error!(error = %e, "notification task failed");
                }
            }
            let next = inner.lock_dispatcher().next_due();
            let wait = next
                .map(|n| n.duration_since(inner.now()).unwrap_or_default())
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = inner.wake.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        while tasks.join_next().await.is_some() {}
        if let Err(e) = inner.db.flush_async().await {
            tracing::warn!(error = %e, "flushing alerting state failed");
        }
    }

    /// `POST/GET /api/v1/silences`, `GET/DELETE /api/v1/silence/{id}`,
    /// `GET /api/v1/alerts/groups`.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }
}

/// An alerting configuration built and checked by [`Notifier::prepare`], not yet
/// applied.
pub struct PreparedAlerting {
    routing: Routing,
    am_targets: Vec<AmTarget>,
    tree: route::RouteTree,
    resolve_timeout: Duration,
}

impl Notifier {
    /// Builds what a reload would apply (receivers, their secrets, routes,
    /// inhibitions); nothing changes until [`Notifier::apply`].
    pub fn prepare(cfg: &AlertingConfig) -> Result<PreparedAlerting, NotifyError> {
        let (receivers, am_targets) = build_receivers(&cfg.receivers)?;
        Ok(PreparedAlerting {
            routing: Routing::new(cfg, receivers),
            am_targets,
            tree: route::RouteTree::new(&cfg.route),
            resolve_timeout: cfg.resolve_timeout.get(),
        })
    }

    /// Applies a prepared configuration, as Alertmanager reloads: silences, known
    /// alerts and the notification log stay; groups are rebuilt on the new routes
    /// (what was notified is not notified again). Returns the changed settings
    /// that need a restart (they keep their old values): the Alertmanager push
    /// targets, `delivery`, `resend_delay`.
    pub fn apply(&self, next: PreparedAlerting) -> Vec<&'static str> {
        let inner = &self.inner;
        let mut routing = next.routing;
        let old = inner.routing();
        let mut restart = Vec::new();
        let same_targets = next.am_targets.len() == inner.am_targets.len()
            && next
                .am_targets
                .iter()
                .zip(&inner.am_targets)
                .all(|(a, b)| a.receiver == b.receiver && a.url == b.url);
        if !same_targets {
            restart.push("alerting.receivers[].alertmanager_configs");
            // Push loops run per target since the start: keep them as they were.
            for (name, r) in &mut routing.receivers {
                r.am = old
                    .receivers
                    .get(name)
                    .map(|o| o.am.clone())
                    .unwrap_or_default();
            }
        }
        if routing.fixed != old.fixed {
            restart.push("alerting.delivery/resend_delay");
            routing.fixed = old.fixed.clone();
        }
        let now = inner.now();
        {
            let mut d = inner.lock_dispatcher();
            let mut fresh = Dispatcher::new(next.tree, next.resolve_timeout);
            let known: Vec<_> = d.alerts.values().cloned().collect();
            fresh.ingest(known.iter().map(|s| s.alert.clone()).collect(), now);
            // The rules' last refresh still counts for resolve_timeout.
            for s in known {
                if let Some(k) = fresh.alerts.get_mut(&s.alert.fingerprint()) {
                    k.updated_at = s.updated_at;
                }
            }
            *d = fresh;
        }
        *inner.routing.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routing);
        inner.wake.notify_one();
        restart
    }
}

impl Routing {
    fn new(cfg: &AlertingConfig, receivers: HashMap<String, Receiver>) -> Self {
        Routing {
            external_url: cfg.external_url.clone(),
            receivers,
            inhibit: cfg.inhibit_rules.iter().map(InhibitRule::from).collect(),
            // The config types have no PartialEq; Debug shows every field.
            fixed: format!("{:?} {:?}", cfg.delivery, cfg.resend_delay),
        }
    }
}

/// Every receiver's grouped integrations, and one push target per Alertmanager.
fn build_receivers(
    cfgs: &[ReceiverConfig],
) -> Result<(HashMap<String, Receiver>, Vec<AmTarget>), NotifyError> {
    let mut receivers = HashMap::new();
    let mut am_targets = Vec::new();
    for r in cfgs {
        let integrations = integration::build(r).map_err(|source| NotifyError::Receiver {
            receiver: r.name.clone(),
            source,
        })?;
        let mut am = Vec::new();
        for a in &r.alertmanager_configs {
            am.push(am_targets.len());
            am_targets.push(AmTarget::new(&r.name, &a.url.0));
        }
        receivers.insert(r.name.clone(), Receiver { integrations, am });
    }
    Ok((receivers, am_targets))
}

fn restore_silences(
    tree: &sled::Tree,
    now: SystemTime,
) -> Result<BTreeMap<String, Silence>, NotifyError> {
    let mut silences = BTreeMap::new();
    for kv in tree.iter() {
        let (_, v) = kv?;
        let restored = serde_json::from_slice::<silence::SilenceJson>(&v)
            .map_err(silence::SilenceError::from)
            .and_then(|j| Silence::from_json(&j, now));
        match restored {
            Ok(s) => {
                silences.insert(s.id.clone(), s);
            }
            Err(e) => tracing::warn!(error = %e, "dropping an unreadable stored silence"),
        }
    }
    Ok(silences)
}

fn restore_alerts(tree: &sled::Tree) -> Result<Vec<Alert>, NotifyError> {
    let mut restored = Vec::new();
    for kv in tree.iter() {
        let (_, v) = kv?;
        if let Ok(j) = serde_json::from_slice::<StoredAlertJson>(&v) {
            restored.push(Alert {
                labels: j.labels,
                annotations: j.annotations,
                starts_at: from_ms(j.starts_at_ms),
                ends_at: j.ends_at_ms.map(from_ms),
                generator_url: j.generator_url,
            });
        }
    }
    Ok(restored)
}

impl Inner {
    fn now(&self) -> SystemTime {
        (self.clock.read().unwrap_or_else(|e| e.into_inner()))()
    }

    fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_dispatcher(&self) -> std::sync::MutexGuard<'_, Dispatcher> {
        self.dispatcher.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Silenced or inhibited at `now` (firing alerts only).
    fn muted(&self, d: &Dispatcher, a: &Alert, now: SystemTime) -> bool {
        if a.resolved_at(now) {
            return false;
        }
        let silenced = self
            .silences
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|s| s.mutes(&a.labels, now));
        let routing = self.routing();
        silenced
            || (!routing.inhibit.is_empty()
                && inhibit::is_inhibited(
                    &routing.inhibit,
                    a.fingerprint(),
                    &a.labels,
                    d.alerts
                        .iter()
                        .filter(|(_, s)| !s.alert.resolved_at(now))
                        .map(|(fp, s)| (*fp, &s.alert.labels)),
                ))
    }

    fn persist_alerts(&self, changed: &[Alert], forgotten: &[u64]) {
        for a in changed {
            let j = StoredAlertJson {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at_ms: to_ms(a.starts_at),
                ends_at_ms: a.ends_at.map(to_ms),
                generator_url: a.generator_url.clone(),
            };
            if let Ok(v) = serde_json::to_vec(&j) {
                if let Err(e) = self.alerts_tree.insert(a.fingerprint().to_be_bytes(), v) {
                    tracing::warn!(error = %e, "persisting an alert failed");
                }
            }
        }
        for fp in forgotten {
            let _ = self.alerts_tree.remove(fp.to_be_bytes());
        }
    }

    fn nflog_key(group_key: &str, receiver: &str, integration: &str) -> Vec<u8> {
        format!("{receiver}\u{1f}{integration}\u{1f}{group_key}").into_bytes()
    }

    fn nflog_get(&self, key: &[u8]) -> Option<Entry> {
        self.nflog
            .get(key)
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
    }

    async fn nflog_put(&self, key: &[u8], e: &Entry) {
        if let Ok(v) = serde_json::to_vec(e) {
            if let Err(err) = self.nflog.insert(key, v) {
                tracing::warn!(error = %err, "writing the notification log failed");
            }
            // before anything else happens: a crash now must not page twice
            if let Err(err) = self.nflog.flush_async().await {
                tracing::warn!(error = %err, "flushing the notification log failed");
            }
        }
    }

    fn gc(&self, now: SystemTime) {
        let cutoff = to_ms(now) - NFLOG_RETENTION.as_millis() as i64;
        for (k, v) in self.nflog.iter().flatten() {
            if serde_json::from_slice::<Entry>(&v)
                .map(|e| e.ts_ms < cutoff)
                .unwrap_or(true)
            {
                let _ = self.nflog.remove(k);
            }
        }
        let mut sil = self.silences.write().unwrap_or_else(|e| e.into_inner());
        let old: Vec<String> = sil
            .values()
            .filter(|s| s.ends_at + silence::RETENTION <= now)
            .map(|s| s.id.clone())
            .collect();
        for id in old {
            sil.remove(&id);
            let _ = self.silences_tree.remove(id.as_bytes());
        }
        for t in &self.am_targets {
            t.last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, (at, _)| *at + Duration::from_secs(3600) > now);
        }
    }

    pub(crate) fn save_silence(&self, s: &Silence) {
        let now = self.now();
        if let Ok(v) = serde_json::to_vec(&s.to_json(now)) {
            if let Err(e) = self.silences_tree.insert(s.id.as_bytes(), v) {
                tracing::warn!(error = %e, "persisting a silence failed");
            }
        }
        self.wake.notify_one();
    }
}

/// One group flush: mute, decide per integration, build, deliver, log.
async fn flush(inner: Arc<Inner>, job: FlushJob, shutdown: CancellationToken) {
    let group = FlushGroup::new(&inner, &job);
    let routing = inner.routing();
    let Some(receiver) = routing.receivers.get(&job.receiver) else {
        inner.lock_dispatcher().complete(&job, true, None);
        return;
    };
    let sends = receiver
        .integrations
        .iter()
        .map(|c| notify_integration(&inner, &job, &group, c, &shutdown));
    let outcomes = futures::future::join_all(sends).await;
    let delivered = outcomes.iter().all(|o| o.delivered);
    let refresh = outcomes.iter().filter_map(|o| o.refresh_at).min();
    inner.lock_dispatcher().complete(&job, delivered, refresh);
    inner.wake.notify_one();
}

/// A group's alerts at a flush, muted ones left out.
struct FlushGroup {
    alerts: Vec<Alert>,
    firing: BTreeSet<u64>,
    resolved: BTreeSet<u64>,
}

impl FlushGroup {
    fn new(inner: &Inner, job: &FlushJob) -> Self {
        let alerts: Vec<Alert> = {
            let d = inner.lock_dispatcher();
            job.alerts
                .iter()
                .filter(|a| !inner.muted(&d, a, job.now))
                .cloned()
                .collect()
        };
        let (resolved, firing): (Vec<&Alert>, Vec<&Alert>) =
            alerts.iter().partition(|a| a.resolved_at(job.now));
        FlushGroup {
            firing: firing.into_iter().map(Alert::fingerprint).collect(),
            resolved: resolved.into_iter().map(Alert::fingerprint).collect(),
            alerts,
        }
    }

    /// What an integration is told about: resolved alerts only if it wants them.
    fn to_send(&self, send_resolved: bool, now: SystemTime) -> Vec<Alert> {
        self.alerts
            .iter()
            .filter(|a| send_resolved || !a.resolved_at(now))
            .cloned()
            .collect()
    }
}

/// How one integration's part of a flush went.
struct Outcome {
    /// Nothing to send, or sent and logged.
    delivered: bool,
    /// When the group must flush again although nothing changed (keep-alive).
    refresh_at: Option<SystemTime>,
}

/// One integration's part of a flush: compare with the notification log, send if
/// needed, log what was sent.
async fn notify_integration(
    inner: &Inner,
    job: &FlushJob,
    group: &FlushGroup,
    configured: &Configured,
    shutdown: &CancellationToken,
) -> Outcome {
    let integ = configured.integration.as_ref();
    let key = Inner::nflog_key(&job.group_key, &job.receiver, &configured.id);
    let entry = inner.nflog_get(&key);
    let keep_alive = integ.keep_alive();
    let repeat = keep_alive.map_or(job.repeat_interval, |k| job.repeat_interval.min(k));
    let refresh = |e: &Entry| {
        (keep_alive.is_some() && !e.firing.is_empty()).then(|| from_ms(e.ts_ms) + repeat)
    };
    if group.alerts.is_empty()
        || !needs_update(
            entry.as_ref(),
            &group.firing,
            &group.resolved,
            integ.send_resolved(),
            repeat,
            job.now,
        )
    {
        return Outcome {
            delivered: true,
            refresh_at: entry.as_ref().and_then(refresh),
        };
    }
    let to_send = group.to_send(integ.send_resolved(), job.now);
    if !to_send.is_empty()
        && deliver(inner, job, configured, to_send, shutdown)
            .await
            .is_err()
    {
        return Outcome {
            delivered: false,
            refresh_at: None,
        };
    }
    let new_entry = Entry {
        firing: group.firing.clone(),
        resolved: group.resolved.clone(),
        ts_ms: to_ms(job.now),
    };
    inner.nflog_put(&key, &new_entry).await;
    Outcome {
        delivered: true,
        refresh_at: refresh(&new_entry),
    }
}

/// Builds the integration's request for `alerts` and delivers it (rate limit, retries).
async fn deliver(
    inner: &Inner,
    job: &FlushJob,
    configured: &Configured,
    alerts: Vec<Alert>,
    shutdown: &CancellationToken,
) -> Result<(), Failure> {
    let integ = configured.integration.as_ref();
    let data = payload::Data {
        receiver: job.receiver.clone(),
        group_key: job.group_key.clone(),
        group_labels: job.group_labels.clone(),
        external_url: inner.routing().external_url.clone(),
        alerts,
        now: job.now,
    };
    let req = integ.request(&data);
    if let Some(limit) = integ.rate_limit() {
        inner
            .deliverer
            .rate_limit(limit.key, limit.per_minute, shutdown)
            .await;
    }
    inner
        .deliverer
        .post(
            &job.receiver,
            configured.name,
            &|status| integ.classify(status),
            req,
            shutdown,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notification log is keyed by integration id and lives in named sled trees:
    /// renaming either would re-page every open incident after an upgrade.
    #[test]
    fn integration_ids_and_state_layout_are_stable() {
        let cfg = AlertingConfig::from_yaml(
            r#"
route: { receiver: team }
receivers:
  - name: team
    pagerduty_configs:
      - routing_key: 0123456789abcdef0123456789abcdef
      - routing_key: fedcba9876543210fedcba9876543210
    dynatrace_configs:
      - { url: "http://127.0.0.1:1", insecure: true, api_token: t }
    webhook_configs:
      - url: http://127.0.0.1:1/a
      - url: http://127.0.0.1:1/b
    alertmanager_configs:
      - url: http://127.0.0.1:1
"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let n = Notifier::new(&cfg, &db, &prometheus::Registry::new()).unwrap();
        let routing = n.inner.routing();
        let ids: Vec<&str> = routing.receivers["team"]
            .integrations
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "pagerduty/0",
                "pagerduty/1",
                "dynatrace/0",
                "webhook/0",
                "webhook/1"
            ]
        );
        assert_eq!(
            Inner::nflog_key("{}:{alertname=\"X\"}", "team", "pagerduty/1"),
            b"team\x1fpagerduty/1\x1f{}:{alertname=\"X\"}".to_vec()
        );
        let trees: Vec<Vec<u8>> = db.tree_names().iter().map(|t| t.to_vec()).collect();
        for t in ["notify_nflog", "notify_alerts", "notify_silences"] {
            assert!(trees.contains(&t.as_bytes().to_vec()), "{t}");
        }
    }

    /// A reload replaces receivers, routes and inhibitions; known alerts are
    /// routed again, silences stay; a changed Alertmanager target is named.
    #[tokio::test]
    async fn apply_swaps_routing_and_keeps_alerts_and_silences() {
        let cfg = |receiver: &str, extra: &str| {
            AlertingConfig::from_yaml(&format!(
                "route: {{receiver: {receiver}, group_wait: 1h}}\nreceivers:\n  - name: {receiver}\n    webhook_configs: [{{url: 'http://127.0.0.1:1/{receiver}'}}]\n{extra}"
            ))
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let n = Notifier::new(&cfg("team", ""), &db, &prometheus::Registry::new()).unwrap();
        let now = SystemTime::now();
        n.send(vec![Alert {
            labels: [("alertname".to_string(), "Hot".to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at: now,
            ends_at: None,
            generator_url: String::new(),
        }]);
        let silence = Silence::from_json(
            &serde_json::from_value(serde_json::json!({
                "id": "s1",
                "matchers": [{"name": "alertname", "value": "Cold", "isRegex": false, "isEqual": true}],
                "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2100-01-01T00:00:00Z",
                "createdBy": "t", "comment": "c"
            }))
            .unwrap(),
            now,
        )
        .unwrap();
        n.inner
            .silences
            .write()
            .unwrap()
            .insert(silence.id.clone(), silence);

        let next = cfg(
            "oncall",
            "inhibit_rules: [{source_matchers: ['severity=page'], target_matchers: ['severity=info']}]\n",
        );
        assert!(n.apply(Notifier::prepare(&next).unwrap()).is_empty());
        let routing = n.inner.routing();
        assert_eq!(routing.receivers.keys().collect::<Vec<_>>(), ["oncall"]);
        assert_eq!(routing.inhibit.len(), 1);
        let d = n.inner.lock_dispatcher();
        assert_eq!(d.alerts.len(), 1, "the known alert stays");
        let groups: Vec<_> = d.groups.values().collect();
        assert_eq!(groups.len(), 1);
        assert_eq!(d.tree.matches(&groups[0].labels)[0].receiver, "oncall");
        drop(d);
        assert_eq!(n.inner.silences.read().unwrap().len(), 1);

        let pushed = cfg(
            "oncall",
            "    alertmanager_configs: [{url: 'http://127.0.0.1:2'}]\n",
        );
        assert_eq!(
            n.apply(Notifier::prepare(&pushed).unwrap()),
            ["alerting.receivers[].alertmanager_configs"]
        );
    }
}
