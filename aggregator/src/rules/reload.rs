//! Rule files re-read at a reload (SIGHUP, `POST /-/reload`): the new groups
//! replace the old ones whole. A rule still there (same group, name and
//! expression) keeps its state, so pending and firing alerts keep their
//! active-since (Prometheus' `copyState`); a group still there keeps the series
//! it wrote, so the ones it stops writing are deleted at its next round; a
//! removed group's series and stored alert state are deleted at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use edgewatch_config::AggregatorConfig;

use super::{
    load_group, load_groups, lock, set_window, GroupDef, GroupStatus, Rule, RuleEngine, RulesError,
};

/// Rule groups read and checked, not yet applied.
pub struct PreparedRules(Vec<GroupDef>);

/// A rule's identity across a reload.
type RuleId = (String, String, String);

fn rule_id(group: &str, rule: &Rule) -> RuleId {
    (
        group.to_string(),
        rule.spec.name().to_string(),
        rule.spec.expr.text.clone(),
    )
}

impl RuleEngine {
    /// Reads and checks every rule file as at start (`FILE:LINE:COL` errors);
    /// nothing changes until [`RuleEngine::apply`].
    pub fn prepare(cfg: &AggregatorConfig) -> Result<PreparedRules, RulesError> {
        load_groups(cfg).map(PreparedRules)
    }

    /// Replaces the groups with `next`, carrying state over (see the module
    /// comment); the evaluation loop restarts on the new groups.
    pub fn apply(&self, cfg: &AggregatorConfig, next: PreparedRules) -> Result<(), RulesError> {
        let old = self.groups();
        let mut old_rules: HashMap<RuleId, VecDeque<&Rule>> = HashMap::new();
        let mut old_status: HashMap<&str, Arc<Mutex<GroupStatus>>> = HashMap::new();
        for g in old.iter() {
            old_status.insert(&g.name, g.status.clone());
            for r in &g.rules {
                old_rules
                    .entry(rule_id(&g.name, r))
                    .or_default()
                    .push_back(r);
            }
        }
        let mut window = Vec::new();
        let mut groups = Vec::with_capacity(next.0.len());
        let mut kept_keys: HashSet<Vec<u8>> = HashSet::new();
        for d in next.0 {
            let mut g = load_group(d, None, &mut window)?;
            for r in &mut g.rules {
                let Some(before) = old_rules
                    .get_mut(&rule_id(&g.name, r))
                    .and_then(VecDeque::pop_front)
                else {
                    continue;
                };
                r.state = before.state.clone();
                if before.key == r.key {
                    kept_keys.insert(r.key.clone());
                } else {
                    // Stored again under the new key at the next round.
                    lock(&r.state).persisted.clear();
                }
            }
            if let Some(st) = old_status.remove(g.name.as_str()) {
                g.status = st;
            }
            self.inner.metrics.export_zeros(&g.name);
            groups.push(g);
        }
        for (name, st) in old_status {
            self.delete_series(lock(&st).written.iter());
            self.inner.metrics.forget(name);
        }
        if self.inner.liveness.is_some() {
            window.push(crate::fleet::Liveness::reads());
        }
        set_window(cfg, &self.inner.store, window);
        let count = groups.len();
        *self.inner.groups.write().unwrap_or_else(|e| e.into_inner()) = groups.into();
        self.inner.generation.send_modify(|g| *g += 1);
        // A rule that is gone must not come back with its state after a restart.
        for r in old.iter().flat_map(|g| g.rules.iter()) {
            if r.alert.is_some() && !kept_keys.contains(&r.key) {
                if let Err(e) = self.inner.tree.remove(&r.key) {
                    tracing::warn!(rule = %r.spec.name(), error = %e, "forgetting a removed rule's state");
                }
            }
        }
        tracing::info!(groups = count, "rules reloaded");
        Ok(())
    }
}
