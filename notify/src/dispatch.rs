//! The dispatcher's pure core, as Alertmanager's `dispatch/dispatch.go` and the dedup
//! stage of `notify/notify.go`; time is always a parameter.
//!
//! - Every alert is routed; per matched route it joins the group of its group labels.
//! - A new group flushes `group_wait` after its creation, then every `group_interval`.
//! - At a flush, per receiver integration, [`needs_update`] compares the group's
//!   firing/resolved sets with what was last notified (the notification log): new
//!   firing alerts, newly resolved ones (when resolved are sent) or "everything
//!   resolved" notify at once; an unchanged group only after `repeat_interval`.
//! - After a flush every integration delivered, resolved alerts are dropped from the
//!   group; an empty group is deleted.
//! - A firing alert not refreshed for `resolve_timeout` resolves by itself.

use super::model::{to_ms, Labels};
use super::route::RouteTree;
use super::Alert;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// What was last notified for (group, receiver, integration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Entry {
    pub firing: BTreeSet<u64>,
    pub resolved: BTreeSet<u64>,
    /// Unix ms of the notification.
    pub ts_ms: i64,
}

/// Alertmanager's `DedupStage.needsUpdate`.
pub fn needs_update(
    entry: Option<&Entry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat: Duration,
    now: SystemTime,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        // all resolved: tell the receiver if it was told something fired
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    e.ts_ms + repeat.as_millis() as i64 <= to_ms(now)
}

#[derive(Debug, Clone)]
pub struct StoredAlert {
    pub alert: Alert,
    /// When the rules last sent it.
    pub updated_at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub route: usize,
    pub key: String,
    pub labels: Labels,
    pub alerts: BTreeMap<u64, Alert>,
    pub next_flush: SystemTime,
    pub in_flight: bool,
}

/// A flush to perform: the group's alerts at `now` (muting is applied by the caller).
#[derive(Debug, Clone)]
pub struct FlushJob {
    pub group_id: String,
    pub group_key: String,
    pub group_labels: Labels,
    pub receiver: String,
    pub repeat_interval: Duration,
    pub alerts: Vec<Alert>,
    pub now: SystemTime,
}

pub struct Dispatcher {
    pub tree: RouteTree,
    pub resolve_timeout: Duration,
    /// Every known alert by fingerprint (inhibition, the API).
    pub alerts: BTreeMap<u64, StoredAlert>,
    /// By group id (`route id` + group key).
    pub groups: BTreeMap<String, Group>,
}

/// Resolved alerts stay known this long (so late duplicates don't re-open groups).
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

impl Dispatcher {
    pub fn new(tree: RouteTree, resolve_timeout: Duration) -> Self {
        Dispatcher {
            tree,
            resolve_timeout,
            alerts: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// Takes alerts from the rules (or restored state). Returns the alerts whose
    /// content changed (to persist).
    pub fn ingest(&mut self, alerts: Vec<Alert>, now: SystemTime) -> Vec<Alert> {
        let mut changed = Vec::new();
        for a in alerts {
            let fp = a.fingerprint();
            let same = self.alerts.get(&fp).is_some_and(|s| s.alert == a);
            if !same {
                changed.push(a.clone());
            }
            self.alerts.insert(
                fp,
                StoredAlert {
                    alert: a.clone(),
                    updated_at: now,
                },
            );
            if same
                && (a.ends_at.is_some() || self.groups.values().any(|g| g.alerts.contains_key(&fp)))
            {
                continue;
            }
            for node in self.tree.matches(&a.labels) {
                let labels = node.group_labels(&a.labels);
                let key = node.group_key(&labels);
                let id = format!("{}\u{1f}{key}", node.id);
                let g = self.groups.entry(id).or_insert_with(|| Group {
                    route: node.id,
                    key,
                    labels,
                    alerts: BTreeMap::new(),
                    next_flush: now + node.group_wait,
                    in_flight: false,
                });
                g.alerts.insert(fp, a.clone());
            }
        }
        changed
    }

    /// Resolves alerts the rules stopped sending; forgets long-resolved alerts.
    /// Returns (alerts changed, fingerprints forgotten).
    pub fn expire(&mut self, now: SystemTime) -> (Vec<Alert>, Vec<u64>) {
        let mut changed = Vec::new();
        let mut forgotten = Vec::new();
        for (fp, s) in self.alerts.iter_mut() {
            if s.alert.ends_at.is_none() && s.updated_at + self.resolve_timeout <= now {
                s.alert.ends_at = Some(s.updated_at + self.resolve_timeout);
                changed.push(s.alert.clone());
            }
            if s.alert
                .ends_at
                .is_some_and(|e| e + RESOLVED_RETENTION.max(self.resolve_timeout) <= now)
            {
                forgotten.push(*fp);
            }
        }
        for a in &changed {
            let fp = a.fingerprint();
            for g in self.groups.values_mut() {
                if let Some(x) = g.alerts.get_mut(&fp) {
                    *x = a.clone();
                }
            }
        }
        for fp in &forgotten {
            if !self.groups.values().any(|g| g.alerts.contains_key(fp)) {
                self.alerts.remove(fp);
            }
        }
        forgotten.retain(|fp| !self.alerts.contains_key(fp));
        (changed, forgotten)
    }

    /// The groups due at `now`, marked in flight; their next flush is set.
    pub fn due(&mut self, now: SystemTime) -> Vec<FlushJob> {
        let mut jobs = Vec::new();
        for (id, g) in self.groups.iter_mut() {
            if g.in_flight || g.next_flush > now {
                continue;
            }
            let node = &self.tree.nodes[g.route];
            g.in_flight = true;
            g.next_flush = now + node.group_interval;
            jobs.push(FlushJob {
                group_id: id.clone(),
                group_key: g.key.clone(),
                group_labels: g.labels.clone(),
                receiver: node.receiver.clone(),
                repeat_interval: node.repeat_interval,
                alerts: g.alerts.values().cloned().collect(),
                now,
            });
        }
        jobs
    }

    /// A flush finished. If every integration delivered, the resolved alerts it
    /// carried (unchanged since) leave the group. `refresh_at` asks for an earlier
    /// next flush (Dynatrace keep-alive).
    pub fn complete(&mut self, job: &FlushJob, delivered: bool, refresh_at: Option<SystemTime>) {
        let Some(g) = self.groups.get_mut(&job.group_id) else {
            return;
        };
        g.in_flight = false;
        if let Some(r) = refresh_at {
            g.next_flush = g.next_flush.min(r);
        }
        if delivered {
            for a in &job.alerts {
                if a.resolved_at(job.now) && g.alerts.get(&a.fingerprint()) == Some(a) {
                    g.alerts.remove(&a.fingerprint());
                }
            }
            if g.alerts.is_empty() {
                self.groups.remove(&job.group_id);
            }
        }
    }

    /// When the next group is due (None: no groups).
    pub fn next_due(&self) -> Option<SystemTime> {
        self.groups
            .values()
            .filter(|g| !g.in_flight)
            .map(|g| g.next_flush)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_ms;
    use edgewatch_config::alerting::AlertingConfig;

    fn secs(s: u64) -> SystemTime {
        from_ms(1_000_000_000) + Duration::from_secs(s)
    }

    fn alert(name: &str, node: &str, end: Option<u64>) -> Alert {
        Alert {
            labels: [
                ("alertname".to_string(), name.to_string()),
                ("node".to_string(), node.to_string()),
            ]
            .into(),
            annotations: Default::default(),
            starts_at: secs(0),
            ends_at: end.map(secs),
            generator_url: String::new(),
        }
    }

    fn dispatcher() -> Dispatcher {
        let c = AlertingConfig::from_yaml(
            "route: {receiver: r, group_by: [alertname], group_wait: 30s, group_interval: 5m, repeat_interval: 4h}\nreceivers: [{name: r}]",
        )
        .unwrap();
        Dispatcher::new(RouteTree::new(&c.route), Duration::from_secs(300))
    }

    #[test]
    fn grouping_and_timers() {
        let mut d = dispatcher();
        d.ingest(
            vec![
                alert("A", "n1", None),
                alert("A", "n2", None),
                alert("B", "n1", None),
            ],
            secs(0),
        );
        assert_eq!(d.groups.len(), 2);
        assert!(d.due(secs(29)).is_empty(), "group_wait");
        let jobs = d.due(secs(30));
        assert_eq!(jobs.len(), 2);
        let a = jobs
            .iter()
            .find(|j| j.group_key == r#"{}:{alertname="A"}"#)
            .unwrap();
        assert_eq!(a.alerts.len(), 2);
        assert!(d.due(secs(31)).is_empty(), "in flight");
        for j in &jobs {
            d.complete(j, true, None);
        }
        // a new alert joins an existing group: flushed at the next group_interval, not group_wait
        d.ingest(vec![alert("A", "n3", None)], secs(40));
        assert!(d.due(secs(70)).is_empty());
        assert_eq!(d.due(secs(330)).len(), 2);
        assert_eq!(d.next_due(), None, "both in flight");
    }

    #[test]
    fn resolved_alerts_leave_and_groups_close() {
        let mut d = dispatcher();
        d.ingest(vec![alert("A", "n1", None)], secs(0));
        let j = d.due(secs(30)).pop().unwrap();
        d.complete(&j, true, None);
        d.ingest(vec![alert("A", "n1", Some(100))], secs(100));
        let j = d.due(secs(330)).pop().unwrap();
        assert!(j.alerts[0].resolved_at(j.now));
        d.complete(&j, false, None);
        assert_eq!(d.groups.len(), 1, "kept: delivery failed");
        let j = d.due(secs(630)).pop().unwrap();
        d.complete(&j, true, Some(secs(700)));
        assert!(d.groups.is_empty());
    }

    #[test]
    fn stale_alerts_resolve() {
        let mut d = dispatcher();
        d.ingest(vec![alert("A", "n1", None)], secs(0));
        let (changed, _) = d.expire(secs(299));
        assert!(changed.is_empty());
        let (changed, _) = d.expire(secs(300));
        assert_eq!(changed[0].ends_at, Some(secs(300)));
        let g = d.groups.values().next().unwrap();
        assert!(g.alerts.values().next().unwrap().resolved_at(secs(300)));
    }

    #[test]
    fn dedup_table() {
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        let e = Entry {
            firing: set(&[1, 2]),
            resolved: set(&[3]),
            ts_ms: to_ms(secs(0)),
        };
        let rep = Duration::from_secs(3600);
        // (entry, firing, resolved, send_resolved, at, want)
        type Case<'a> = (Option<&'a Entry>, &'a [u64], &'a [u64], bool, u64, bool);
        let cases: &[Case] = &[
            (None, &[1], &[], true, 0, true),
            (None, &[], &[1], true, 0, false), // only resolved, never notified
            (Some(&e), &[1, 2], &[3], true, 10, false),
            (Some(&e), &[1], &[2, 3], false, 10, false), // resolved not sent: nothing new
            (Some(&e), &[1], &[2, 3], true, 10, true),
            (Some(&e), &[1, 2, 4], &[3], true, 10, true), // new firing
            (Some(&e), &[], &[1, 2, 3], false, 10, true), // all resolved
            (Some(&e), &[1, 2], &[3], true, 3600, true),  // repeat_interval
            (
                Some(&Entry {
                    firing: set(&[]),
                    resolved: set(&[1]),
                    ts_ms: 0,
                }),
                &[],
                &[1],
                true,
                10,
                false,
            ),
        ];
        for (i, (entry, f, r, sr, at, want)) in cases.iter().enumerate() {
            assert_eq!(
                needs_update(*entry, &set(f), &set(r), *sr, rep, secs(*at)),
                *want,
                "case {i}"
            );
        }
    }
}
