//! What a reload of the collector applies (SIGHUP, `POST /-/reload` on the
//! admin port; the mechanism is [`edgewatch_otlp::reload`]): the configuration
//! file is read and checked again as at start (the scrape client's TLS files
//! included), then the static scrape targets are replaced — new ones start,
//! removed ones end with stale markers, unchanged ones keep scraping — and,
//! with pod discovery, its rules (model labels, hint, pod job, interval and
//! timeout) apply to the pods known at once. The buffer and the forwarder's
//! batches in flight are not touched. Anything else that changed is named in the log as needing a
//! restart and keeps its running value.

use std::path::{Path, PathBuf};

use edgewatch_config::CollectorConfig;

use crate::receive::scrape;

/// The reload task's state: the file, and what a reload changes.
pub(crate) struct Reloads {
    path: PathBuf,
    /// The configuration in force: static targets as last applied, the rest as
    /// at start.
    running: CollectorConfig,
    statics: crate::StaticsTx,
}

impl Reloads {
    pub(crate) fn new(path: &Path, cfg: &CollectorConfig, statics: crate::StaticsTx) -> Self {
        Reloads {
            path: path.to_path_buf(),
            running: cfg.clone(),
            statics,
        }
    }

    /// One reload; the error says what is wrong and where (`FILE:LINE:COL`).
    pub(crate) fn apply(&mut self) -> Result<(), String> {
        let next: CollectorConfig =
            edgewatch_config::load(&self.path).map_err(|e| e.to_string())?;
        scrape::client(&next.receivers.prometheus).map_err(|e| e.to_string())?;
        let mut restart = needs_restart(&self.running, &next);
        let new = &next.receivers.prometheus;
        let targets = scrape::static_targets(new);
        match &self.statics {
            Some(s) => {
                s.statics.send_if_modified(|cur| {
                    let changed = *cur != targets;
                    *cur = targets;
                    changed
                });
                if let Some(rules) = &s.rules {
                    let next_rules = crate::discovery_rules(&next);
                    rules.send_if_modified(|cur| {
                        let changed = *cur != next_rules;
                        *cur = next_rules;
                        changed
                    });
                    let d = &mut self.running.discovery;
                    d.model_labels = next.discovery.model_labels.clone();
                    d.hinted_labels = next.discovery.hinted_labels.clone();
                    d.modelserver_hint = next.discovery.modelserver_hint.clone();
                    self.running.receivers.prometheus.pod_job = new.pod_job.clone();
                }
                let p = &mut self.running.receivers.prometheus;
                p.static_targets = new.static_targets.clone();
                p.scrape_interval = new.scrape_interval;
                p.scrape_timeout = new.scrape_timeout;
                p.job = new.job.clone();
            }
            None if !targets.is_empty() => {
                restart.push("receivers.prometheus.static_targets (no scrape receiver at start)")
            }
            None => {}
        }
        for setting in restart {
            tracing::warn!(setting, "changed setting needs a restart: {setting}");
        }
        Ok(())
    }
}

/// The settings that differ between `old` and `new` and apply only at start.
/// The config types have no PartialEq; their Debug shows every field.
fn needs_restart(old: &CollectorConfig, new: &CollectorConfig) -> Vec<&'static str> {
    let d = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let (o, n) = (&old.receivers.otlp, &new.receivers.otlp);
    // The scrape receiver's settings but what a reload applies.
    let fixed = |c: &CollectorConfig| {
        let mut p = c.receivers.prometheus.clone();
        p.static_targets.clear();
        p.scrape_interval = Default::default();
        p.scrape_timeout = Default::default();
        p.job.clear();
        p.pod_job.clear();
        d(&p)
    };
    // Discovery but its rules, which a reload applies.
    let watch = |c: &CollectorConfig| {
        let dc = &c.discovery;
        d(&(dc.kubernetes, &dc.kubeconfig, dc.metadata_interval))
    };
    let pairs: [(&'static str, String, String); 11] = [
        ("cluster", d(&old.cluster), d(&new.cluster)),
        ("node", d(&old.node), d(&new.node)),
        ("receivers.otlp.grpc", d(&o.grpc), d(&n.grpc)),
        ("receivers.otlp.http", d(&o.http), d(&n.http)),
        (
            "receivers.otlp.max_request_bytes",
            d(&o.max_request_bytes),
            d(&n.max_request_bytes),
        ),
        ("receivers.otlp.tls", d(&o.tls), d(&n.tls)),
        (
            "receivers.prometheus (limits, body_size_limit, tls_config)",
            fixed(old),
            fixed(new),
        ),
        ("buffer", d(&old.buffer), d(&new.buffer)),
        ("forward", d(&old.forward), d(&new.forward)),
        ("admin", d(&old.admin), d(&new.admin)),
        (
            "discovery (kubernetes, kubeconfig, metadata_interval)",
            watch(old),
            watch(new),
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

    fn cfg(extra: &str) -> CollectorConfig {
        edgewatch_config::parse(
            &format!("cluster: c\nbuffer: {{path: /tmp/b}}\nforward: {{endpoint: 'http://127.0.0.1:1'}}\n{extra}"),
            "c.yaml",
        )
        .unwrap()
    }

    #[test]
    fn static_targets_reload_the_buffer_path_does_not() {
        let old = cfg("");
        let new = cfg("receivers:\n  prometheus:\n    scrape_interval: 5s\n    static_targets: ['http://127.0.0.1:2/metrics']\n");
        assert!(needs_restart(&old, &new).is_empty());
        let moved = edgewatch_config::parse::<CollectorConfig>(
            "cluster: c\nbuffer: {path: /tmp/elsewhere}\nforward: {endpoint: 'http://127.0.0.1:1'}\nreceivers: {prometheus: {sample_limit: 10}}\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            needs_restart(&old, &moved),
            [
                "receivers.prometheus (limits, body_size_limit, tls_config)",
                "buffer"
            ]
        );
    }
}
