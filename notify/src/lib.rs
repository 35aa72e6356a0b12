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
//!                     │            payload (webhook v4 / PagerDuty / Dynatrace)    [pure]
//!                     │                     ▼
//!                     │            deliver (timeout, backoff on 429/5xx, metrics)
//!                     └─► alertmanager_configs: ungrouped pushes, re-sent periodically
//! ```
//!
//! State in sled (survives restarts): the notification log per (group, receiver,
//! integration) — what was last notified firing/resolved, and when — the alerts, and
//! the silences. After a restart a still-firing group is not notified again before
//! `repeat_interval`, and a resolve that was pending is still delivered.
//!
//! Muting applies to firing alerts only: a resolve for an incident that was notified
//! is delivered even if a silence was added meanwhile, so nothing stays open.

pub mod api;
pub mod deliver;
pub mod dispatch;
pub mod inhibit;
pub mod model;
pub mod payload;
pub mod route;
pub mod silence;

use deliver::{Deliverer, Failure, Request};
use dispatch::{needs_update, Dispatcher, Entry, FlushJob};
use edgewatch_config::alerting::{
    AlertingConfig, DynatraceConfig, PagerDutyConfig, Secret, WebhookConfig,
};
use inhibit::InhibitRule;
use model::{from_ms, to_ms};
use serde::{Deserialize, Serialize};
use silence::Silence;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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
    #[error("alerting: receiver {receiver}: {message}")]
    Receiver { receiver: String, message: String },
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
    external_url: String,
    receivers: HashMap<String, Receiver>,
    inhibit: Vec<InhibitRule>,
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

struct Receiver {
    integrations: Vec<(String, Integration)>,
    /// Indices into `am_targets`.
    am: Vec<usize>,
}

enum Integration {
    PagerDuty {
        cfg: PagerDutyConfig,
        key: Secret,
        url: String,
    },
    Dynatrace {
        cfg: DynatraceConfig,
        token: Secret,
    },
    Webhook(WebhookConfig),
}

impl Integration {
    fn send_resolved(&self) -> bool {
        match self {
            Integration::PagerDuty { cfg, .. } => cfg.send_resolved,
            Integration::Dynatrace { cfg, .. } => cfg.send_resolved,
            Integration::Webhook(w) => w.send_resolved,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Integration::PagerDuty { .. } => "pagerduty",
            Integration::Dynatrace { .. } => "dynatrace",
            Integration::Webhook(_) => "webhook",
        }
    }
    /// Dynatrace closes an event after `timeout`: re-send a firing one at 3/4 of it.
    fn repeat(&self, route_repeat: Duration) -> Duration {
        match self {
            Integration::Dynatrace { cfg, .. } => route_repeat.min(
                Duration::from_secs(cfg.timeout_minutes as u64 * 45).max(Duration::from_secs(30)),
            ),
            _ => route_repeat,
        }
    }
}

struct AmTarget {
    receiver: String,
    url: String,
    queue: Mutex<VecDeque<Alert>>,
    /// fingerprint → (last pushed, was resolved)
    last: Mutex<HashMap<u64, (SystemTime, bool)>>,
    notify: tokio::sync::Notify,
}

/// Alerts waiting for one Alertmanager beyond this are dropped, oldest first.
const AM_QUEUE_CAP: usize = 10_000;
const AM_BATCH: usize = 256;
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
        let mut receivers = HashMap::new();
        let mut am_targets = Vec::new();
        for r in &cfg.receivers {
            let err = |message: String| NotifyError::Receiver {
                receiver: r.name.clone(),
                message,
            };
            let mut integrations = Vec::new();
            for (i, p) in r.pagerduty_configs.iter().enumerate() {
                let key = p
                    .routing_key
                    .resolve()
                    .map_err(|e| err(format!("pagerduty_configs[{i}].routing_key_file: {e}")))?;
                let url =
                    p.url.as_ref().map(|u| u.0.clone()).unwrap_or_else(|| {
                        edgewatch_config::alerting::DEFAULT_PAGERDUTY_URL.into()
                    });
                integrations.push((
                    format!("pagerduty/{i}"),
                    Integration::PagerDuty {
                        cfg: p.clone(),
                        key,
                        url,
                    },
                ));
            }
            for (i, d) in r.dynatrace_configs.iter().enumerate() {
                let token = d
                    .api_token
                    .resolve()
                    .map_err(|e| err(format!("dynatrace_configs[{i}].api_token_file: {e}")))?;
                integrations.push((
                    format!("dynatrace/{i}"),
                    Integration::Dynatrace {
                        cfg: d.clone(),
                        token,
                    },
                ));
            }
            for (i, w) in r.webhook_configs.iter().enumerate() {
                integrations.push((format!("webhook/{i}"), Integration::Webhook(w.clone())));
            }
            let mut am = Vec::new();
            for a in &r.alertmanager_configs {
                am.push(am_targets.len());
                am_targets.push(AmTarget {
                    receiver: r.name.clone(),
                    url: format!("{}/api/v2/alerts", a.url.0.trim_end_matches('/')),
                    queue: Mutex::new(VecDeque::new()),
                    last: Mutex::new(HashMap::new()),
                    notify: tokio::sync::Notify::new(),
                });
            }
            receivers.insert(r.name.clone(), Receiver { integrations, am });
        }
        let metrics = deliver::Metrics::new(registry)?;
        let tree = route::RouteTree::new(&cfg.route);
        let mut dispatcher = Dispatcher::new(tree, cfg.resolve_timeout.get());
        let nflog = state.open_tree("notify_nflog")?;
        let alerts_tree = state.open_tree("notify_alerts")?;
        let silences_tree = state.open_tree("notify_silences")?;
        let now = SystemTime::now();
        let mut silences = BTreeMap::new();
        for kv in silences_tree.iter() {
            let (_, v) = kv?;
            match serde_json::from_slice::<silence::SilenceJson>(&v)
                .map_err(|e| e.to_string())
                .and_then(|j| Silence::from_json(&j, now))
            {
                Ok(s) => {
                    silences.insert(s.id.clone(), s);
                }
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable stored silence"),
            }
        }
        let mut restored = Vec::new();
        for kv in alerts_tree.iter() {
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
                external_url: cfg.external_url.clone(),
                receivers,
                inhibit: cfg.inhibit_rules.iter().map(InhibitRule::from).collect(),
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
                for a in &alerts {
                    if inner.muted(&d, a, now) {
                        continue;
                    }
                    let mut seen = BTreeSet::new();
                    for node in d.tree.matches(&a.labels) {
                        for &t in inner
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

impl Inner {
    fn now(&self) -> SystemTime {
        (self.clock.read().unwrap_or_else(|e| e.into_inner()))()
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
        silenced
            || (!self.inhibit.is_empty()
                && inhibit::is_inhibited(
                    &self.inhibit,
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

    fn enqueue_push(&self, t: usize, a: Alert, now: SystemTime) {
        let target = &self.am_targets[t];
        let resolved = a.resolved_at(now);
        {
            let mut last = target.last.lock().unwrap_or_else(|e| e.into_inner());
            let fp = a.fingerprint();
            if let Some((at, was_resolved)) = last.get(&fp) {
                if *was_resolved == resolved && *at + self.resend_delay > now {
                    return;
                }
            }
            last.insert(fp, (now, resolved));
        }
        let mut q = target.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= AM_QUEUE_CAP {
            q.pop_front();
            self.deliverer
                .metrics
                .failed
                .with_label_values(&[&target.receiver, "queue_full"])
                .inc();
        }
        q.push_back(a);
        target.notify.notify_one();
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

async fn push_loop(inner: Arc<Inner>, t: usize, shutdown: CancellationToken) {
    let target = &inner.am_targets[t];
    loop {
        let batch: Vec<Alert> = {
            let mut q = target.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = q.len().min(AM_BATCH);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            tokio::select! {
                _ = target.notify.notified() => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        let now = inner.now();
        let eval = Duration::from_millis(inner.eval_interval_ms.load(Ordering::Relaxed));
        let body = payload::alertmanager_push(&batch, now, eval);
        let req = Request {
            url: target.url.clone(),
            headers: vec![],
            body: serde_json::to_vec(&body).unwrap_or_default(),
        };
        if let Err(f) = inner
            .deliverer
            .post(&target.receiver, "alertmanager", req, &shutdown)
            .await
        {
            tracing::warn!(
                receiver = target.receiver,
                alerts = batch.len(),
                reason = f.reason(),
                "alerts not pushed to Alertmanager"
            );
            // let the next round re-push them
            let mut last = target.last.lock().unwrap_or_else(|e| e.into_inner());
            for a in &batch {
                last.remove(&a.fingerprint());
            }
            if f == Failure::Shutdown {
                return;
            }
        }
    }
}

/// One group flush: mute, decide per integration, build, deliver, log.
async fn flush(inner: Arc<Inner>, job: FlushJob, shutdown: CancellationToken) {
    let alerts: Vec<Alert> = {
        let d = inner.lock_dispatcher();
        job.alerts
            .iter()
            .filter(|a| !inner.muted(&d, a, job.now))
            .cloned()
            .collect()
    };
    let Some(receiver) = inner.receivers.get(&job.receiver) else {
        inner.lock_dispatcher().complete(&job, true, None);
        return;
    };
    let firing: BTreeSet<u64> = alerts
        .iter()
        .filter(|a| !a.resolved_at(job.now))
        .map(Alert::fingerprint)
        .collect();
    let resolved: BTreeSet<u64> = alerts
        .iter()
        .filter(|a| a.resolved_at(job.now))
        .map(Alert::fingerprint)
        .collect();
    let sends = receiver.integrations.iter().map(|(id, integ)| {
        let (inner, job, alerts, firing, resolved, shutdown) =
            (&inner, &job, &alerts, &firing, &resolved, &shutdown);
        async move {
            let key = Inner::nflog_key(&job.group_key, &job.receiver, id);
            let entry = inner.nflog_get(&key);
            let repeat = integ.repeat(job.repeat_interval);
            let refresh = |e: &Entry| match integ {
                Integration::Dynatrace { .. } if !e.firing.is_empty() => {
                    Some(from_ms(e.ts_ms) + repeat)
                }
                _ => None,
            };
            if alerts.is_empty()
                || !needs_update(
                    entry.as_ref(),
                    firing,
                    resolved,
                    integ.send_resolved(),
                    repeat,
                    job.now,
                )
            {
                return (true, entry.as_ref().and_then(refresh));
            }
            let to_send: Vec<Alert> = if integ.send_resolved() {
                alerts.clone()
            } else {
                alerts
                    .iter()
                    .filter(|a| !a.resolved_at(job.now))
                    .cloned()
                    .collect()
            };
            let new_entry = Entry {
                firing: firing.clone(),
                resolved: resolved.clone(),
                ts_ms: to_ms(job.now),
            };
            if !to_send.is_empty() {
                let data = payload::Data {
                    receiver: job.receiver.clone(),
                    group_key: job.group_key.clone(),
                    group_labels: job.group_labels.clone(),
                    external_url: inner.external_url.clone(),
                    alerts: to_send,
                    now: job.now,
                };
                let req = build_request(integ, &data);
                if let Integration::PagerDuty { key, .. } = integ {
                    inner
                        .deliverer
                        .rate_limit(&key.0, deliver::PD_EVENTS_PER_MINUTE, shutdown)
                        .await;
                }
                if inner
                    .deliverer
                    .post(&job.receiver, integ.name(), req, shutdown)
                    .await
                    .is_err()
                {
                    return (false, None);
                }
            }
            inner.nflog_put(&key, &new_entry).await;
            (true, refresh(&new_entry))
        }
    });
    let results = futures::future::join_all(sends).await;
    let delivered = results.iter().all(|(ok, _)| *ok);
    let refresh = results.iter().filter_map(|(_, r)| *r).min();
    inner.lock_dispatcher().complete(&job, delivered, refresh);
    inner.wake.notify_one();
}

fn build_request(integ: &Integration, data: &payload::Data) -> Request {
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap_or_default();
    match integ {
        Integration::Webhook(w) => Request {
            url: w.url.0.clone(),
            headers: vec![],
            body: json(payload::webhook(data, w.max_alerts)),
        },
        Integration::PagerDuty { cfg, key, url } => {
            let o = payload::PagerDutyOptions {
                routing_key: &key.0,
                severity: &cfg.severity,
                client: &cfg.client,
                client_url: &cfg.client_url,
                description: cfg.description.as_deref(),
                source: cfg.source.as_deref(),
                component: cfg.component.as_deref(),
                group: cfg.group.as_deref(),
                class: cfg.class.as_deref(),
                details: &cfg.details,
            };
            Request {
                url: url.clone(),
                headers: vec![],
                body: json(payload::pagerduty(data, &o)),
            }
        }
        Integration::Dynatrace { cfg, token } => {
            let o = payload::DynatraceOptions {
                event_type: &cfg.event_type,
                title: cfg.title.as_deref(),
                entity_selector: cfg.entity_selector.as_deref(),
                timeout_minutes: cfg.timeout_minutes,
                properties: &cfg.properties,
            };
            Request {
                url: format!("{}/api/v2/events/ingest", cfg.url.0),
                headers: vec![("authorization", format!("Api-Token {}", token.0))],
                body: json(payload::dynatrace(data, &o)),
            }
        }
    }
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
      - { url: "http://127.0.0.1:1", api_token: t }
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
        let ids: Vec<String> = n.inner.receivers["team"]
            .integrations
            .iter()
            .map(|(id, _)| id.clone())
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
}
