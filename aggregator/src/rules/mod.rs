//! Alerting and recording rules over the store, as Prometheus evaluates them.
//!
//! ```text
//! rule_files (globs) ─► file::parse (YAML + PromQL + templates, FILE:LINE:COL)
//!                              │
//!   builtin/*.yaml ────────────┤ (fleet and deployment alerts, same parser;
//!                              │  a file rule of the same name replaces one)
//!                              ▼
//! groups sharing an interval, every interval:
//!        promql::Snapshot::new(store, now, reads)                 [one pass over the store]
//!        promql::eval_vector(expr, snapshot, now), rule by rule   [PromQL on interned labels]
//!        alerting::step(state, result, now) → (state, alerts)    [pure state machine]
//!        ALERTS / ALERTS_FOR_STATE / recorded series → store     [visible on /federate]
//!        state → sled tree `rules`          [restart keeps for-timers, holds firing alerts]
//!        Notifier::send(alerts)                                  [active + resolved (15m)]
//! ```
//!
//! Range functions need recent samples: at load the engine enables the store's
//! window (`store.window`) for exactly the series its range/`offset` selectors
//! read. Evaluation follows Prometheus 2.x (closed lookback/range windows).
//!
//! After a start, alerts restored as firing are held (not resolved) until their
//! data returns or `rules.restore_grace` has passed since the first evaluation:
//! what a collector has not resent yet is not a resolve (see
//! [`alerting::hold_restored`]).
//!
//! [`unittest`] runs promtool's rule unit tests (`edgewatch test rules`) on
//! this engine, over a store it fills as synthetic time goes on.
//!
//! `EdgeCollectorDown` must outlive the store's staleness: it reads the
//! last-seen series of [`crate::fleet::liveness`], which the engine has
//! written just before each round that evaluates the fleet group.

pub mod alerting;
mod api;
pub mod builtin;
pub mod file;
mod reload;
pub mod template;
pub mod unittest;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use edgewatch_config::{AggregatorConfig, ConfigError};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::fleet::Liveness;
use crate::promql::{self, Labels, Reads, Snapshot};
use crate::store::{FamilyId, MetricType, Selector, Store, WindowOptions, WindowScope};
use alerting::{AlertRule, RuleState, StepOptions};
use edgewatch_notify::{self as notify, Notifier};
use file::{RuleKind, RuleSpec};

/// Why rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A rule file error, `FILE:LINE:COL: message`.
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error("rule_files: {0}")]
    Glob(String),
    #[error("rule state: {0}")]
    State(#[from] sled::Error),
    #[error("registering rule metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

pub use builtin::FLEET_GROUP;

/// A loaded rule group (before state).
struct GroupDef {
    name: String,
    file: String,
    interval: Duration,
    rules: Vec<RuleSpec>,
}

fn expand_globs(cfg: &AggregatorConfig) -> Result<Vec<PathBuf>, RulesError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for pat in &cfg.rule_files {
        let paths = glob::glob(pat)
            .map_err(|e| RulesError::Glob(format!("invalid pattern {pat:?}: {e}")))?;
        let mut n = 0;
        for p in paths {
            let p = p.map_err(|e| RulesError::Glob(format!("{pat:?}: {e}")))?;
            if !out.contains(&p) {
                out.push(p);
            }
            n += 1;
        }
        if n == 0 {
            if !pat.contains(['*', '?', '[']) {
                return Err(RulesError::Glob(format!("{pat}: no such file")));
            }
            tracing::warn!(pattern = %pat, "rule_files pattern matches no file");
        }
    }
    Ok(out)
}

fn load_groups(cfg: &AggregatorConfig) -> Result<Vec<GroupDef>, RulesError> {
    let mut groups = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for path in expand_globs(cfg)? {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        let f = file::parse(&text, &origin)?;
        for g in f.groups {
            if let Some(other) = names.insert(g.name.clone(), origin.clone()) {
                if other != origin {
                    return Err(RulesError::Glob(format!(
                        "{origin}: group {:?} is also defined in {other}",
                        g.name
                    )));
                }
            }
            groups.push(GroupDef {
                name: g.name,
                file: origin.clone(),
                interval: g
                    .interval
                    .map(|d| d.get())
                    .filter(|d| !d.is_zero())
                    .unwrap_or(cfg.evaluation_interval.get()),
                rules: g.rules,
            });
        }
    }
    let overridden: HashSet<String> = groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .filter(|r| matches!(r.kind, RuleKind::Alert { .. }))
        .map(|r| r.name().to_string())
        .collect();
    for g in builtin::groups(cfg)? {
        let rules: Vec<RuleSpec> = g
            .rules
            .into_iter()
            .filter(|r| !overridden.contains(r.name()))
            .collect();
        if !rules.is_empty() {
            groups.push(GroupDef {
                name: g.name,
                file: builtin::FILE.to_string(),
                interval: cfg.evaluation_interval.get(),
                rules,
            });
        }
    }
    Ok(groups)
}

/// Checks every rule file (`edgewatch validate aggregator`).
pub fn validate_rule_files(cfg: &AggregatorConfig) -> Result<(), RulesError> {
    load_groups(cfg).map(|_| ())
}

// ---------------------------------------------------------------------------

struct Metrics {
    evaluations: prometheus::IntCounterVec,
    failures: prometheus::IntCounterVec,
    last_duration: prometheus::GaugeVec,
    held: prometheus::IntGaugeVec,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let evaluations = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "edgewatch_rule_evaluations_total",
                "Rule evaluations, by rule group.",
            ),
            &["group"],
        )?;
        let failures = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "edgewatch_rule_evaluation_failures_total",
                "Rule evaluations that failed, by rule group.",
            ),
            &["group"],
        )?;
        let last_duration = prometheus::GaugeVec::new(
            prometheus::Opts::new(
                "edgewatch_rule_group_last_duration_seconds",
                "Duration of the last evaluation of a rule group.",
            ),
            &["group"],
        )?;
        let held = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "edgewatch_rule_alerts_held",
                "Alerts held firing after a start (rules.restore_grace) while their data is missing, by rule group.",
            ),
            &["group"],
        )?;
        registry.register(Box::new(evaluations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(last_duration.clone()))?;
        registry.register(Box::new(held.clone()))?;
        Ok(Self {
            evaluations,
            failures,
            last_duration,
            held,
        })
    }

    /// A group's series exist from its load on.
    fn export_zeros(&self, group: &str) {
        self.evaluations.with_label_values(&[group]);
        self.failures.with_label_values(&[group]);
        self.held.with_label_values(&[group]);
    }

    /// A group a reload removed leaves no series behind.
    fn forget(&self, group: &str) {
        let _ = self.evaluations.remove_label_values(&[group]);
        let _ = self.failures.remove_label_values(&[group]);
        let _ = self.held.remove_label_values(&[group]);
        let _ = self.last_duration.remove_label_values(&[group]);
    }
}

#[derive(Debug, Clone, Default)]
struct Health {
    health: &'static str,
    last_error: String,
    last_eval: Option<SystemTime>,
    eval_seconds: f64,
}

struct Rule {
    spec: RuleSpec,
    /// sled key of an alerting rule's state.
    key: Vec<u8>,
    alert: Option<AlertRule>,
    /// Shared with the same rule of the groups a reload replaced.
    state: Arc<Mutex<RuleRuntime>>,
}

#[derive(Default)]
struct RuleRuntime {
    alerts: RuleState,
    health: Health,
    persisted: Vec<u8>,
}

struct Group {
    name: String,
    file: String,
    interval: Duration,
    rules: Vec<Rule>,
    /// What the group's expressions read (one store pass per round).
    reads: Reads,
    /// Shared with the group of the same name a reload replaced.
    status: Arc<Mutex<GroupStatus>>,
}

#[derive(Default)]
struct GroupStatus {
    health: Health,
    /// Series this group wrote last time (ALERTS*, recorded), to delete
    /// the ones that disappear.
    written: HashSet<(String, Vec<(String, String)>)>,
}

struct Inner {
    store: Arc<Store>,
    tree: sled::Tree,
    /// Replaced whole by a reload; evaluation rounds hold the generation they
    /// started with.
    groups: RwLock<Arc<[Group]>>,
    /// Bumped by every reload: the evaluation loop restarts on the new groups.
    generation: tokio::sync::watch::Sender<u64>,
    metrics: Metrics,
    restore_grace: Duration,
    /// The first evaluation's time plus `restore_grace` (ms): until then
    /// alerts restored as firing are held.
    hold_until: OnceLock<i64>,
    /// Writes the series the fleet group reads; None without a fleet group.
    liveness: Option<Liveness>,
}

/// The rule engine. Cheap to clone.
#[derive(Clone)]
pub struct RuleEngine {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RuleEngine {
    /// Loads and validates every rule file, restores rule state from the
    /// `rules` tree of `state`, enables the store's sample window for the
    /// series the rules read, and registers the engine's metrics.
    pub fn load(
        cfg: &AggregatorConfig,
        store: Arc<Store>,
        state: &sled::Db,
        registry: &Registry,
    ) -> Result<Self, RulesError> {
        let defs = load_groups(cfg)?;
        let tree = state.open_tree("rules")?;
        let metrics = Metrics::new(registry)?;
        let mut window = Vec::new();
        let mut held = 0;
        let groups = defs
            .into_iter()
            .map(|d| load_group(d, Some((&tree, &mut held)), &mut window))
            .collect::<Result<Vec<_>, _>>()?;
        let restore_grace = cfg.restore_grace();
        if held > 0 {
            tracing::info!(alerts = held, grace = ?restore_grace, "holding alerts that were firing before the start");
        }
        for g in &groups {
            metrics.export_zeros(&g.name);
        }
        let liveness = enable_window(cfg, &store, state, &groups, window)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                tree,
                groups: RwLock::new(groups.into()),
                generation: tokio::sync::watch::Sender::new(0),
                metrics,
                restore_grace,
                hold_until: OnceLock::new(),
                liveness,
            }),
        })
    }

    /// Names of the loaded groups, in evaluation order.
    pub fn group_names(&self) -> Vec<String> {
        self.groups().iter().map(|g| g.name.clone()).collect()
    }

    /// Evaluates every group once at `now_ms` and returns the alerts to send
    /// (tests and tools; [`RuleEngine::run`] evaluates groups on their
    /// intervals).
    pub fn evaluate_all(&self, now_ms: i64) -> Vec<notify::Alert> {
        let groups = self.groups();
        let all: Vec<usize> = (0..groups.len()).collect();
        self.evaluate_in(&groups, &all, now_ms)
    }

    /// Evaluates the groups `idx` at `now_ms`, in order, over one snapshot of
    /// the series they read (see `promql::Snapshot`); returns the alerts to send.
    pub fn evaluate_groups(&self, idx: &[usize], now_ms: i64) -> Vec<notify::Alert> {
        self.evaluate_in(&self.groups(), idx, now_ms)
    }

    /// The current generation of groups.
    fn groups(&self) -> Arc<[Group]> {
        self.inner
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Evaluates `groups[idx]`: see [`RuleEngine::evaluate_groups`].
    fn evaluate_in(&self, groups: &[Group], idx: &[usize], now_ms: i64) -> Vec<notify::Alert> {
        if let Some(liveness) = &self.inner.liveness {
            if idx.iter().any(|&i| groups[i].name == FLEET_GROUP) {
                liveness.track(now_ms);
            }
        }
        let mut reads = Reads::default();
        for &i in idx {
            reads.merge(&groups[i].reads);
        }
        let mut snap = Snapshot::new(&self.inner.store, now_ms, &reads);
        let opts = self.step_options(now_ms);
        let mut out = Vec::new();
        for &i in idx {
            out.extend(self.evaluate_group(&groups[i], now_ms, opts, &mut snap));
        }
        out
    }

    /// The state machine's options; the restore grace runs from the first
    /// evaluation (the engine's clock, not the load time: tests drive it).
    fn step_options(&self, now_ms: i64) -> StepOptions {
        let grace = self.inner.restore_grace.as_millis() as i64;
        StepOptions {
            hold_until_ms: *self.inner.hold_until.get_or_init(|| now_ms + grace),
            ..StepOptions::default()
        }
    }

    /// Evaluates group `g` at `now_ms`: every rule in order (a recording rule's
    /// output is visible to the rules after it), writes `ALERTS*` and recorded
    /// series, persists alert state; returns the alerts to send.
    fn evaluate_group(
        &self,
        g: &Group,
        now_ms: i64,
        opts: StepOptions,
        snap: &mut Snapshot<'_>,
    ) -> Vec<notify::Alert> {
        let inner = &self.inner;
        let started = Instant::now();
        let mut writes = Writes::new(&inner.store, now_ms);
        let mut to_send = Vec::new();
        let mut group_err = None;
        let mut held = 0;
        for rule in &g.rules {
            let t0 = Instant::now();
            inner
                .metrics
                .evaluations
                .with_label_values(&[&g.name])
                .inc();
            let result = promql::eval_vector(&rule.spec.expr.expr, snap, now_ms);
            let mut rt = lock(&rule.state);
            let outcome = match (&rule.alert, result) {
                (_, Err(e)) => Err(RuleError::from(e)),
                (Some(ar), Ok(samples)) => {
                    match alerting::step(ar, rt.alerts.clone(), &samples, now_ms, opts) {
                        Ok((st, sends)) => {
                            rt.alerts = st;
                            to_send.extend(sends);
                            Ok(())
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                (None, Ok(samples)) => record(rule, samples, snap, &mut writes),
            };
            if rule.alert.is_some() {
                // The rule's (possibly unchanged) state.
                write_alert_series(&rt.alerts, snap, &mut writes);
                self.persist_alerts(rule, &mut rt);
                held += rt.alerts.active.values().filter(|a| a.held).count();
            }
            rt.health.last_eval = Some(SystemTime::now());
            rt.health.eval_seconds = t0.elapsed().as_secs_f64();
            if let Err(e) = outcome {
                inner.metrics.failures.with_label_values(&[&g.name]).inc();
                tracing::warn!(group = %g.name, rule = %rule.spec.name(), error = %e, "rule evaluation failed");
                let e = e.to_string();
                group_err.get_or_insert_with(|| e.clone());
                rt.health.health = "err";
                rt.health.last_error = e;
            } else {
                rt.health.health = "ok";
                rt.health.last_error.clear();
            }
        }
        inner
            .metrics
            .held
            .with_label_values(&[&g.name])
            .set(held as i64);
        self.finish_group(g, writes.written, group_err, started.elapsed());
        to_send
    }

    /// Writes a rule's alert state to sled if it changed (an empty state is
    /// removed), so a restart keeps `for` timers.
    fn persist_alerts(&self, rule: &Rule, rt: &mut RuleRuntime) {
        let Ok(bytes) = serde_json::to_vec(&rt.alerts) else {
            return;
        };
        if bytes == rt.persisted {
            return;
        }
        let tree = &self.inner.tree;
        let res = if rt.alerts.active.is_empty() {
            tree.remove(&rule.key).map(|_| ())
        } else {
            tree.insert(&rule.key, bytes.clone()).map(|_| ())
        };
        match res {
            Ok(()) => rt.persisted = bytes,
            Err(e) => tracing::warn!(error = %e, "persisting rule state"),
        }
    }

    /// Deletes the series the group wrote last time and not this time, and
    /// records the group's health and duration.
    fn finish_group(
        &self,
        g: &Group,
        written: HashSet<(String, Vec<(String, String)>)>,
        error: Option<String>,
        elapsed: Duration,
    ) {
        let elapsed = elapsed.as_secs_f64();
        let mut st = lock(&g.status);
        self.delete_series(st.written.difference(&written));
        st.written = written;
        st.health = Health {
            health: if error.is_none() { "ok" } else { "err" },
            last_error: error.unwrap_or_default(),
            last_eval: Some(SystemTime::now()),
            eval_seconds: elapsed,
        };
        self.inner
            .metrics
            .last_duration
            .with_label_values(&[&g.name])
            .set(elapsed);
    }

    /// Deletes series a group wrote (logged, as every write).
    fn delete_series<'a>(&self, series: impl Iterator<Item = &'a (String, Vec<(String, String)>)>) {
        let out = self.inner.store.logged(crate::now_ms());
        for (name, labels) in series {
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match self.inner.store.family_id(name) {
                Some(fam) => out.delete(fam, name, &pairs),
                None => self.inner.store.delete(name, &pairs),
            };
        }
    }

    /// Evaluates every group on its interval until `shutdown`, handing the
    /// alerts of each evaluation to `notifier` (Prometheus `sendAlerts`:
    /// firing alerts re-sent at most every minute, resolved ones for 15m).
    /// A reload stops the rounds of the old groups and starts the new ones.
    pub async fn run(self, notifier: Option<Notifier>, shutdown: CancellationToken) {
        let mut generation = self.inner.generation.subscribe();
        loop {
            generation.mark_unchanged();
            let round = shutdown.child_token();
            let tasks = self.spawn_rounds(self.groups(), &notifier, &round);
            let reloaded = tokio::select! {
                r = generation.changed() => r.is_ok(),
                _ = shutdown.cancelled() => false,
            };
            round.cancel();
            for t in tasks {
                let _ = t.await;
            }
            if !reloaded {
                break;
            }
        }
        if let Err(e) = self.inner.tree.flush_async().await {
            tracing::warn!(error = %e, "flushing rule state");
        }
        if let Some(liveness) = &self.inner.liveness {
            liveness.flush().await;
        }
    }

    /// One task per evaluation interval over `groups`, until `stop`.
    fn spawn_rounds(
        &self,
        groups: Arc<[Group]>,
        notifier: &Option<Notifier>,
        stop: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        // Groups that share an interval are evaluated together, at one instant
        // and over one read of the store (see `promql::Snapshot`).
        let mut by_interval: Vec<(Duration, Vec<usize>)> = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            let every = g.interval.max(Duration::from_millis(100));
            match by_interval.iter_mut().find(|(d, _)| *d == every) {
                Some((_, idx)) => idx.push(i),
                None => by_interval.push((every, vec![i])),
            }
        }
        let mut tasks = Vec::new();
        for (every, idx) in by_interval {
            let engine = self.clone();
            let notifier = notifier.clone();
            let stop = stop.clone();
            let groups = groups.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    let e = engine.clone();
                    let idx = idx.clone();
                    let groups = groups.clone();
                    let alerts = match tokio::task::spawn_blocking(move || {
                        e.evaluate_in(&groups, &idx, crate::now_ms())
                    })
                    .await
                    {
                        Ok(a) => a,
                        Err(err) => {
                            tracing::error!(error = %err, "rule group evaluation panicked");
                            continue;
                        }
                    };
                    if let Some(n) = &notifier {
                        if !alerts.is_empty() {
                            n.send(alerts);
                        }
                    }
                }
            }));
        }
        tasks
    }

    /// `GET /api/v1/alerts` and `GET /api/v1/rules` (Prometheus' JSON shapes).
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }
}

/// Builds a group's rules, with `restore` their state restored from the tree
/// (firing alerts held, counted in the count), and adds the series its range and `offset` selectors
/// read to `window`.
fn load_group(
    d: GroupDef,
    mut restore: Option<(&sled::Tree, &mut usize)>,
    window: &mut Vec<Selector>,
) -> Result<Group, sled::Error> {
    // Rules of one name in one group are told apart by their position.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::new();
    let mut reads = Reads::default();
    for spec in d.rules {
        promql::window_selectors(&spec.expr.expr, window);
        reads.add(&spec.expr.expr);
        let n = seen.entry(spec.name().to_string()).or_default();
        let key = format!("alert\x00{}\x00{}\x00{}", d.name, spec.name(), n).into_bytes();
        *n += 1;
        let alert = alert_rule(&spec);
        let mut rt = RuleRuntime {
            health: Health {
                health: "unknown",
                ..Default::default()
            },
            ..Default::default()
        };
        if let (Some(_), Some((tree, held))) = (&alert, restore.as_mut()) {
            restore_state(tree, &key, &spec, &mut rt)?;
            **held += alerting::hold_restored(&mut rt.alerts);
        }
        rules.push(Rule {
            spec,
            key,
            alert,
            state: Arc::new(Mutex::new(rt)),
        });
    }
    Ok(Group {
        name: d.name,
        file: d.file,
        interval: d.interval,
        rules,
        reads,
        status: Arc::new(Mutex::new(GroupStatus {
            health: Health {
                health: "unknown",
                ..Default::default()
            },
            ..Default::default()
        })),
    })
}

/// The state machine's view of an alerting rule; None for a recording rule.
fn alert_rule(spec: &RuleSpec) -> Option<AlertRule> {
    match &spec.kind {
        RuleKind::Alert {
            name,
            for_,
            keep_firing_for,
            annotations,
        } => Some(AlertRule {
            name: name.clone(),
            expr: spec.expr.text.clone(),
            for_ms: for_.get().as_millis() as i64,
            keep_firing_for_ms: keep_firing_for.get().as_millis() as i64,
            labels: spec.labels.clone(),
            annotations: annotations.clone(),
            external_url: String::new(),
            external_labels: Default::default(),
        }),
        RuleKind::Record { .. } => None,
    }
}

/// Restores an alerting rule's state stored at `key`; an unreadable one is
/// ignored (the rule starts afresh).
fn restore_state(
    tree: &sled::Tree,
    key: &[u8],
    spec: &RuleSpec,
    rt: &mut RuleRuntime,
) -> Result<(), sled::Error> {
    if let Some(v) = tree.get(key)? {
        match serde_json::from_slice::<RuleState>(&v) {
            Ok(s) => {
                rt.alerts = s;
                rt.persisted = v.to_vec();
            }
            Err(e) => {
                tracing::warn!(rule = %spec.name(), error = %e, "ignoring unreadable rule state")
            }
        }
    }
    Ok(())
}

/// Enables the store's sample window for the series the rules read (and, with
/// a fleet group, the series liveness reads); opens liveness if needed.
fn enable_window(
    cfg: &AggregatorConfig,
    store: &Arc<Store>,
    state: &sled::Db,
    groups: &[Group],
    mut window: Vec<Selector>,
) -> Result<Option<Liveness>, sled::Error> {
    let liveness = if groups.iter().any(|g| g.name == FLEET_GROUP) {
        window.push(Liveness::reads());
        Some(Liveness::open(
            store.clone(),
            state,
            promql::LOOKBACK_MS,
            crate::fleet::Owned::new(&cfg.fleet.clusters),
        )?)
    } else {
        None
    };
    set_window(cfg, store, window);
    Ok(liveness)
}

/// Keeps a sample window for exactly the series in `window`.
fn set_window(cfg: &AggregatorConfig, store: &Store, window: Vec<Selector>) {
    let scope = if window.is_empty() {
        WindowScope::None
    } else {
        WindowScope::Matching(window)
    };
    store.set_window(WindowOptions {
        window: cfg.store.window.get(),
        scope,
        ..WindowOptions::default()
    });
}

/// Why one rule's evaluation failed (its health's last error).
#[derive(Debug, thiserror::Error)]
enum RuleError {
    #[error(transparent)]
    Eval(#[from] promql::EvalError),
    #[error(transparent)]
    Alert(#[from] alerting::StepError),
    #[error("vector contains metrics with the same labelset after applying rule labels")]
    RecordedDuplicate,
}

/// The series a group writes in one evaluation, remembered so that the ones
/// it stops writing are deleted.
struct Writes<'a> {
    store: &'a Store,
    out: crate::store::Logged<'a>,
    now_ms: i64,
    alerts_family: FamilyId,
    for_family: FamilyId,
    written: HashSet<(String, Vec<(String, String)>)>,
}

impl<'a> Writes<'a> {
    fn new(store: &'a Store, now_ms: i64) -> Self {
        let alerts_family = store.family(
            "ALERTS",
            MetricType::Gauge,
            "Alerts of the aggregator's alerting rules (1 while pending or firing).",
            "",
        );
        let for_family = store.family(
            "ALERTS_FOR_STATE",
            MetricType::Gauge,
            "Active-since time (unix seconds) of the aggregator's alerts.",
            "",
        );
        Self {
            store,
            out: store.logged(now_ms),
            now_ms,
            alerts_family,
            for_family,
            written: HashSet::new(),
        }
    }

    fn write(&mut self, name: &str, family: FamilyId, labels: &Labels, v: f64) {
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.out.write(family, name, &pairs, v, self.now_ms);
        self.written.insert((
            name.to_string(),
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
    }
}

/// A recording rule's result written as its series (rule labels applied);
/// later rules of the round read them.
fn record(
    rule: &Rule,
    samples: Vec<promql::Sample>,
    snap: &mut Snapshot<'_>,
    writes: &mut Writes<'_>,
) -> Result<(), RuleError> {
    let name = rule.spec.name();
    let fam = writes.store.family(name, MetricType::Unknown, "", "");
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let mut l = s.labels;
        l.remove("__name__");
        for (k, t) in &rule.spec.labels {
            l.insert(k.clone(), t.raw().to_string());
        }
        if !seen.insert(l.clone()) {
            return Err(RuleError::RecordedDuplicate);
        }
        out.push((l, s.value));
    }
    for (l, v) in out {
        writes.write(name, fam, &l, v);
    }
    snap.invalidate(name);
    Ok(())
}

/// The `ALERTS` and `ALERTS_FOR_STATE` series of an alerting rule's state.
fn write_alert_series(state: &RuleState, snap: &mut Snapshot<'_>, writes: &mut Writes<'_>) {
    for (name, l, v) in alerting::alert_series(state) {
        let fam = if name == "ALERTS" {
            writes.alerts_family
        } else {
            writes.for_family
        };
        writes.write(name, fam, &l, v);
        snap.invalidate(name);
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<RuleEngine>();
}
