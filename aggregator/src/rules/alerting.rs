//! The alerting-rule state machine, as Prometheus `rules/alerting.go`
//! (`AlertingRule.Eval` + `sendAlerts`), pure and clock-free: [`step`] takes
//! the previous state, the expression's result and the evaluation time and
//! returns the next state and the alerts to hand to the notifier.
//!
//! After a restart the store may lack data that a collector has not resent
//! yet; an alert restored as firing ([`hold_restored`]) is then held firing
//! until its data returns or the restore grace ends
//! ([`StepOptions::hold_until_ms`]), so receivers get neither a resolve nor
//! a second trigger for an incident that did not change.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::template::{Externals, Template};
use crate::promql::{Labels, Sample};
use edgewatch_notify::Alert;

/// A resolved alert is kept (and re-sent) this long (Prometheus `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;
/// Minimum time between two sends of an unchanged alert (Prometheus `--rules.alert.resend-delay`).
pub const RESEND_DELAY_MS: i64 = 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

fn nan() -> f64 {
    f64::NAN
}

/// One alert of a rule (an element of Prometheus' `r.active`). Times in ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    #[serde(skip, default = "nan")]
    pub value: f64,
    pub active_at: i64,
    #[serde(default)]
    pub fired_at: Option<i64>,
    #[serde(default)]
    pub resolved_at: Option<i64>,
    #[serde(default)]
    pub last_sent_at: Option<i64>,
    #[serde(default)]
    pub keep_firing_since: Option<i64>,
    /// Restored as firing and not seen in a result since: not resolved while
    /// the restore grace lasts. Not persisted: every start holds afresh.
    #[serde(skip)]
    pub held: bool,
}

/// The state of one alerting rule: its alerts by label set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub active: BTreeMap<String, ActiveAlert>,
}

/// The parts of an alerting rule the state machine needs.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub expr: String,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, Template>,
    pub annotations: BTreeMap<String, Template>,
    /// Prefix of the generator URL (the external URL, may be empty), also
    /// `$externalURL` in templates.
    pub external_url: String,
    /// `$externalLabels` in templates.
    pub external_labels: BTreeMap<String, String>,
}

/// Timing of an evaluation's sends and of the restore grace.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions {
    pub resend_delay_ms: i64,
    /// Until this time (ms) held alerts stay firing without a result; the
    /// engine sets it to its first evaluation plus `rules.restore_grace`.
    pub hold_until_ms: i64,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            resend_delay_ms: RESEND_DELAY_MS,
            hold_until_ms: i64::MIN,
        }
    }
}

/// Marks the firing alerts of a state restored at start as held (see
/// [`StepOptions::hold_until_ms`]); pending ones keep their `for` timer only.
/// Returns how many were marked.
pub fn hold_restored(state: &mut RuleState) -> usize {
    let mut n = 0;
    for a in state.active.values_mut() {
        a.held = a.state == AlertState::Firing;
        n += usize::from(a.held);
    }
    n
}

pub fn ms_to_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn key_of(l: &Labels) -> String {
    let mut s = String::new();
    for (k, v) in l {
        s.push_str(k);
        s.push('\u{1}');
        s.push_str(v);
        s.push('\u{2}');
    }
    s
}

/// Why an evaluation's result cannot become alerts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("vector contains metrics with the same labelset after applying alert labels")]
    DuplicateLabelset,
}

/// One evaluation: Prometheus' `AlertingRule.Eval` followed by `sendAlerts`.
pub fn step(
    rule: &AlertRule,
    mut state: RuleState,
    results: &[Sample],
    now: i64,
    opts: StepOptions,
) -> Result<(RuleState, Vec<Alert>), StepError> {
    let fresh = alerts_of(rule, results, now)?;
    let result_keys: HashSet<String> = fresh.keys().cloned().collect();
    merge(&mut state, fresh);
    advance(rule, &mut state, &result_keys, now, opts.hold_until_ms);
    let out = send_alerts(rule, &mut state, now, opts);
    Ok((state, out))
}

/// The alerts of this evaluation's result, by label key: labels and
/// annotations expanded, pending from `now`.
fn alerts_of(
    rule: &AlertRule,
    results: &[Sample],
    now: i64,
) -> Result<BTreeMap<String, ActiveAlert>, StepError> {
    let mut fresh: BTreeMap<String, ActiveAlert> = BTreeMap::new();
    let externals = Externals {
        labels: rule.external_labels.clone(),
        url: rule.external_url.clone(),
    };
    for s in results {
        let mut l = s.labels.clone();
        l.remove("__name__");
        // Templates see the result's labels with `__name__`, as Prometheus
        // passes `smpl.Metric.Map()`.
        let tmpl_labels = &s.labels;
        for (k, t) in &rule.labels {
            let v = t.expand_with(tmpl_labels, s.value, &externals);
            if v.is_empty() {
                l.remove(k);
            } else {
                l.insert(k.clone(), v);
            }
        }
        l.insert("alertname".to_string(), rule.name.clone());
        let annotations = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.expand_with(tmpl_labels, s.value, &externals)))
            .collect();
        let key = key_of(&l);
        if fresh.contains_key(&key) {
            return Err(StepError::DuplicateLabelset);
        }
        fresh.insert(
            key,
            ActiveAlert {
                labels: l,
                annotations,
                state: AlertState::Pending,
                value: s.value,
                active_at: now,
                fired_at: None,
                resolved_at: None,
                last_sent_at: None,
                keep_firing_since: None,
                held: false,
            },
        );
    }
    Ok(fresh)
}

/// Alerts still active keep their state and take the new value and
/// annotations; the others start (again) as pending.
fn merge(state: &mut RuleState, fresh: BTreeMap<String, ActiveAlert>) {
    for (k, a) in fresh {
        match state.active.get_mut(&k) {
            Some(old) if old.state != AlertState::Inactive => {
                old.value = a.value;
                old.annotations = a.annotations;
            }
            _ => {
                state.active.insert(k, a);
            }
        }
    }
}

/// Resolves the alerts missing from the result (unless the restore grace or
/// `keep_firing_for` holds them), forgets pending ones and resolved ones past
/// retention, and fires pending alerts whose `for` has passed.
fn advance(
    rule: &AlertRule,
    state: &mut RuleState,
    result_keys: &HashSet<String>,
    now: i64,
    hold_until: i64,
) {
    let mut remove = Vec::new();
    for (k, a) in state.active.iter_mut() {
        if !result_keys.contains(k) {
            if a.held && now < hold_until {
                continue;
            }
            // Past the grace the alert is judged like any other: its data had
            // the whole grace to come back.
            a.held = false;
            let mut keep_firing = false;
            if a.state == AlertState::Firing && rule.keep_firing_for_ms > 0 {
                let since = *a.keep_firing_since.get_or_insert(now);
                if now - since < rule.keep_firing_for_ms {
                    keep_firing = true;
                }
            }
            if a.state == AlertState::Pending
                || a.resolved_at
                    .is_some_and(|r| now - r > RESOLVED_RETENTION_MS)
            {
                remove.push(k.clone());
            }
            if a.state != AlertState::Inactive && !keep_firing {
                a.state = AlertState::Inactive;
                a.resolved_at = Some(now);
            }
            if !keep_firing {
                continue;
            }
        } else {
            // Its data is back: from now on a missing result is a resolve.
            a.held = false;
            a.keep_firing_since = None;
        }
        if a.state == AlertState::Pending && now - a.active_at >= rule.for_ms {
            a.state = AlertState::Firing;
            a.fired_at = Some(now);
        }
    }
    for k in remove {
        state.active.remove(&k);
    }
}

/// Prometheus' `sendAlerts`: the alerts due for a (re)send, marked sent.
fn send_alerts(rule: &AlertRule, state: &mut RuleState, now: i64, opts: StepOptions) -> Vec<Alert> {
    let mut out = Vec::new();
    for a in state.active.values_mut() {
        if needs_sending(a, now, opts.resend_delay_ms) {
            a.last_sent_at = Some(now);
            out.push(Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: ms_to_time(a.fired_at.unwrap_or(a.active_at)),
                ends_at: a.resolved_at.map(ms_to_time),
                generator_url: generator_url(&rule.external_url, &rule.expr),
            });
        }
    }
    out
}

fn needs_sending(a: &ActiveAlert, now: i64, resend_delay_ms: i64) -> bool {
    if a.state == AlertState::Pending {
        return false;
    }
    // Resolved since the last send: send the resolve.
    if let Some(r) = a.resolved_at {
        if a.last_sent_at.is_none_or(|s| r > s) {
            return true;
        }
    }
    match a.last_sent_at {
        None => true,
        Some(s) => s + resend_delay_ms < now,
    }
}

/// `<external>/graph?g0.expr=<expr>&g0.tab=1` (Prometheus' table link).
pub fn generator_url(external: &str, expr: &str) -> String {
    let mut enc = String::with_capacity(expr.len() * 2);
    for b in expr.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                enc.push(b as char)
            }
            b' ' => enc.push('+'),
            _ => enc.push_str(&format!("%{b:02X}")),
        }
    }
    format!(
        "{}/graph?g0.expr={enc}&g0.tab=1",
        external.trim_end_matches('/')
    )
}

/// The `ALERTS` and `ALERTS_FOR_STATE` samples of a rule's state:
/// `(metric name, labels without __name__, value)`.
pub fn alert_series(state: &RuleState) -> Vec<(&'static str, Labels, f64)> {
    let mut out = Vec::new();
    for a in state.active.values() {
        if a.state == AlertState::Inactive {
            continue;
        }
        let mut l = a.labels.clone();
        out.push((
            "ALERTS_FOR_STATE",
            l.clone(),
            (a.active_at as f64 / 1000.0).floor(),
        ));
        l.insert("alertstate".to_string(), a.state.as_str().to_string());
        out.push(("ALERTS", l, 1.0));
    }
    out
}
