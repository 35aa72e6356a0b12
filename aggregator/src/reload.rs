//! What a reload of the aggregator applies (SIGHUP, `POST /-/reload`; the
//! mechanism is [`edgewatch_otlp::reload`]): the configuration file is read and
//! checked again as at start — rule files, alerting receivers and their secrets
//! included — and only then applied. Live: rule files and
//! `evaluation_interval` (alert state kept, see [`crate::rules`]), `alerting`'s
//! routes, receivers and inhibitions (silences, known alerts and the
//! notification log kept), `limits`, `reconciler` (GitOps path, clusters,
//! deadline, interval: taken at its next round), `remote_write` (see
//! [`crate::remote::live`]). Anything else that changed is named in the
//! log as needing a restart and keeps its running value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgewatch_config::AggregatorConfig;
use edgewatch_notify::Notifier;

use crate::rules::RuleEngine;
use crate::store::{Limits, Store};

/// The reload task's state: the file, and what a reload changes.
pub(crate) struct Reloads {
    path: PathBuf,
    /// The configuration in force: live sections as last applied, the others
    /// as at start.
    running: AggregatorConfig,
    store: Arc<Store>,
    rules: RuleEngine,
    notifier: Option<Notifier>,
    reconciler: Option<crate::reconcile::Settings>,
    endpoints: crate::remote::live::Endpoints,
}

impl Reloads {
    pub(crate) fn new(
        path: &Path,
        cfg: &AggregatorConfig,
        store: Arc<Store>,
        rules: RuleEngine,
        notifier: Option<Notifier>,
        reconciler: Option<crate::reconcile::Settings>,
        endpoints: crate::remote::live::Endpoints,
    ) -> Self {
        Reloads {
            path: path.to_path_buf(),
            running: cfg.clone(),
            store,
            rules,
            notifier,
            reconciler,
            endpoints,
        }
    }

    /// One reload; the error says what is wrong and where (`FILE:LINE:COL`).
    pub(crate) fn apply(&mut self) -> Result<(), String> {
        let next: AggregatorConfig =
            edgewatch_config::load(&self.path).map_err(|e| e.to_string())?;
        let rules = RuleEngine::prepare(&next).map_err(|e| e.to_string())?;
        let alerting = match (&self.notifier, &next.alerting) {
            (Some(_), Some(a)) => Some(Notifier::prepare(a).map_err(|e| e.to_string())?),
            _ => None,
        };
        let reconciler = match (&self.reconciler, &next.reconciler) {
            (Some(s), Some(rc)) => Some((s, rc)),
            _ => None,
        };
        if let Some((_, rc)) = reconciler {
            if rc.interval.get().is_zero() {
                return Err(crate::reconcile::ReconcileError::ZeroInterval.to_string());
            }
        }
        crate::remote::live::check(&next.remote_write).map_err(|e| e.to_string())?;
        let mut restart = needs_restart(&self.running, &next);
        // Routes first: the new rules' first alerts already take them.
        if let (Some(n), Some(prepared)) = (&self.notifier, alerting) {
            restart.extend(n.apply(prepared));
            n.set_eval_interval(next.evaluation_interval.get());
            self.running.alerting = next.alerting.clone();
        }
        self.rules.apply(&next, rules).map_err(|e| e.to_string())?;
        if let Some((settings, rc)) = reconciler {
            settings.set(rc).map_err(|e| e.to_string())?;
            self.running.reconciler = Some(rc.clone());
        }
        self.endpoints.set(&next.remote_write);
        self.running.remote_write = next.remote_write.clone();
        self.store.set_limits(Limits::from_config(&next.limits));
        self.running.rule_files = next.rule_files;
        self.running.evaluation_interval = next.evaluation_interval;
        self.running.limits = next.limits;
        for setting in restart {
            tracing::warn!(setting, "changed setting needs a restart: {setting}");
        }
        Ok(())
    }
}

/// The settings that differ between `old` and `new` and apply only at start.
/// The config types have no PartialEq; their Debug shows every field.
fn needs_restart(old: &AggregatorConfig, new: &AggregatorConfig) -> Vec<&'static str> {
    let d = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let (o, n) = (&old.receivers.otlp, &new.receivers.otlp);
    let pairs: [(&'static str, String, String); 15] = [
        ("receivers.otlp.grpc", d(&o.grpc), d(&n.grpc)),
        ("receivers.otlp.http", d(&o.http), d(&n.http)),
        (
            "receivers.otlp.max_request_bytes",
            d(&o.max_request_bytes),
            d(&n.max_request_bytes),
        ),
        ("receivers.otlp.tls", d(&o.tls), d(&n.tls)),
        ("auth", d(&old.auth), d(&new.auth)),
        ("http.listen", d(&old.http.listen), d(&new.http.listen)),
        ("http.tls", d(&old.http.tls), d(&new.http.tls)),
        (
            "http.basic_auth_users",
            d(&old.http.basic_auth_users),
            d(&new.http.basic_auth_users),
        ),
        ("state", d(&old.state), d(&new.state)),
        ("store", d(&old.store), d(&new.store)),
        ("wal", d(&old.wal), d(&new.wal)),
        ("fleet", d(&old.fleet), d(&new.fleet)),
        (
            "reconciler (added or removed)",
            d(&old.reconciler.is_some()),
            d(&new.reconciler.is_some()),
        ),
        ("rules.restore_grace", d(&old.rules), d(&new.rules)),
        (
            "alerting (added or removed)",
            d(&old.alerting.is_some()),
            d(&new.alerting.is_some()),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, _, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> AggregatorConfig {
        edgewatch_config::parse(
            &format!("http: {{listen: 127.0.0.1:9}}\nstate: {{path: /tmp/x}}\n{extra}"),
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn names_what_cannot_change_live() {
        let old = cfg("receivers: {otlp: {grpc: 127.0.0.1:1}}\n");
        let new = cfg("receivers: {otlp: {grpc: 127.0.0.1:2}}\nevaluation_interval: 5s\nrule_files: [a.yaml]\nlimits: {max_series: 10}\nremote_write: [{url: 'http://127.0.0.1:3/w'}]\n");
        assert_eq!(needs_restart(&old, &new), ["receivers.otlp.grpc"]);
        assert!(needs_restart(&old, &old).is_empty());
    }
}
