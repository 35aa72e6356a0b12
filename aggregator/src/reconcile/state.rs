//! The pure part of the reconciler: desired + observed + previous status at
//! `now` → new status, per (cluster, app).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::gitops::{DesiredApp, DesiredState};

/// Deployment state of one app on one cluster. The label values of
/// `edgewatch_deployment_status{state=…}` are exactly these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum State {
    /// Every pod ready on the desired digest.
    Synced,
    /// Desired changed or pods not ready, within the progress deadline.
    Progressing,
    /// Past the deadline, on the desired digest, not ready.
    Degraded,
    /// Past the deadline, running a different digest.
    OutOfSync,
    /// Desired, but the (reporting) cluster has no pods of it.
    Missing,
    /// The cluster's collectors are silent (disconnected, not failed).
    Unknown,
    /// Running, but not desired on this cluster.
    Unmanaged,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Synced,
        State::Progressing,
        State::Degraded,
        State::OutOfSync,
        State::Missing,
        State::Unknown,
        State::Unmanaged,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            State::Synced => "Synced",
            State::Progressing => "Progressing",
            State::Degraded => "Degraded",
            State::OutOfSync => "OutOfSync",
            State::Missing => "Missing",
            State::Unknown => "Unknown",
            State::Unmanaged => "Unmanaged",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One inference pod as its collector reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedPod {
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub deployment: String,
    pub model: String,
    pub version: String,
    pub image: String,
    pub digest: String,
    pub ready: bool,
}

/// One cluster as its collectors report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedCluster {
    /// Newest sample of any of its collectors (ms); None if never seen.
    pub last_seen_ms: Option<i64>,
    pub pods: Vec<ObservedPod>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub clusters: BTreeMap<String, ObservedCluster>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub progress_deadline: Duration,
    pub down_after: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            progress_deadline: Duration::from_secs(600),
            down_after: Duration::from_secs(120),
        }
    }
}

/// Status of one (cluster, app).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppStatus {
    pub cluster: String,
    pub app: String,
    pub model: String,
    /// Empty for `Unmanaged`.
    pub desired_digest: String,
    /// The digests the pods run, sorted, comma-separated; empty if none.
    pub observed_digest: String,
    pub state: State,
    /// When `state` was entered (ms).
    pub since_ms: i64,
    /// The desired revision at that transition.
    pub revision: String,
    /// Since when the app has been waiting to become Synced (deadline start).
    pub pending_since_ms: Option<i64>,
    /// When the desired digest was last set for this (cluster, app).
    pub desired_since_ms: i64,
    pub pods: usize,
    pub ready: usize,
    pub on_desired: usize,
    pub last_seen_ms: Option<i64>,
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub cluster: String,
    pub app: String,
    pub from: Option<State>,
    pub to: State,
    pub at_ms: i64,
    pub revision: String,
}

/// Every (cluster, app) and the latest transitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Status {
    pub entries: BTreeMap<(String, String), AppStatus>,
    /// Newest last; at most [`MAX_TRANSITIONS`].
    pub transitions: Vec<Transition>,
}

pub const MAX_TRANSITIONS: usize = 500;

impl Status {
    pub fn get(&self, cluster: &str, app: &str) -> Option<&AppStatus> {
        self.entries.get(&(cluster.to_owned(), app.to_owned()))
    }
}

fn cluster_up(c: Option<&ObservedCluster>, now_ms: i64, opts: &Options) -> bool {
    c.and_then(|c| c.last_seen_ms)
        .is_some_and(|t| now_ms.saturating_sub(t) <= opts.down_after.as_millis() as i64)
}

/// Whether a pod belongs to an app: same model, and same namespace when the
/// app sets one.
fn belongs(pod: &ObservedPod, model: &str, namespace: Option<&str>) -> bool {
    pod.model == model && namespace.is_none_or(|ns| ns == pod.namespace)
}

/// The new status. Pure: same inputs, same output.
pub fn reconcile(
    desired: &DesiredState,
    observed: &Observed,
    previous: &Status,
    now_ms: i64,
    opts: &Options,
) -> Status {
    let mut out = Status {
        entries: BTreeMap::new(),
        transitions: previous.transitions.clone(),
    };
    let empty = ObservedCluster::default();
    let mut clusters: BTreeSet<&String> = desired.clusters.keys().collect();
    clusters.extend(observed.clusters.keys());

    for cluster in clusters {
        let obs = observed.clusters.get(cluster);
        let round = Round {
            cluster,
            up: cluster_up(obs, now_ms, opts),
            observed: obs.unwrap_or(&empty),
            revision: &desired.revision,
            now_ms,
            deadline_ms: opts.progress_deadline.as_millis() as i64,
        };
        let mut claimed = vec![false; round.observed.pods.len()];
        let wanted = desired.clusters.get(cluster);
        for app_name in wanted.into_iter().flatten() {
            let Some(app) = desired.apps.get(app_name) else {
                continue;
            };
            let prev = previous.entries.get(&(cluster.clone(), app_name.clone()));
            let st = round.desired_app(app_name, app, prev, &mut claimed);
            record(&mut out, prev, st, now_ms);
        }
        for (app_name, (model, pods)) in unmanaged(desired, round.observed, &claimed) {
            let prev = previous.entries.get(&(cluster.clone(), app_name.clone()));
            let st = round.unmanaged_app(app_name, model, &pods, prev);
            record(&mut out, prev, st, now_ms);
        }
    }
    let excess = out.transitions.len().saturating_sub(MAX_TRANSITIONS);
    out.transitions.drain(..excess);
    out
}

/// One cluster at one reconciliation.
struct Round<'a> {
    cluster: &'a String,
    up: bool,
    observed: &'a ObservedCluster,
    revision: &'a String,
    now_ms: i64,
    deadline_ms: i64,
}

impl Round<'_> {
    /// The status of an app desired on this cluster; marks its pods in `claimed`.
    fn desired_app(
        &self,
        app_name: &str,
        app: &DesiredApp,
        prev: Option<&AppStatus>,
        claimed: &mut [bool],
    ) -> AppStatus {
        let now_ms = self.now_ms;
        let pods: Vec<&ObservedPod> = self
            .observed
            .pods
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                let b = belongs(p, &app.model, app.namespace.as_deref());
                if b {
                    claimed[*i] = true;
                }
                b
            })
            .map(|(_, p)| p)
            .collect();
        let digest_changed = prev.is_none_or(|p| p.desired_digest != app.digest);
        let desired_since_ms = match prev {
            Some(p) if !digest_changed => p.desired_since_ms,
            _ => now_ms,
        };
        let on_desired = pods.iter().filter(|p| p.digest == app.digest).count();
        let all_good = !pods.is_empty() && pods.iter().all(|p| p.ready && p.digest == app.digest);
        let pending_since_ms = if all_good && self.up {
            None
        } else if digest_changed {
            Some(now_ms)
        } else {
            match prev.and_then(|p| p.pending_since_ms) {
                Some(t) if prev.is_some_and(|p| p.state != State::Synced) => Some(t),
                _ => Some(now_ms),
            }
        };
        let within = pending_since_ms.is_none_or(|t| now_ms.saturating_sub(t) <= self.deadline_ms);
        let state = if !self.up {
            State::Unknown
        } else if pods.is_empty() {
            State::Missing
        } else if all_good {
            State::Synced
        } else if within {
            State::Progressing
        } else if on_desired < pods.len() {
            State::OutOfSync
        } else {
            State::Degraded
        };
        AppStatus {
            cluster: self.cluster.clone(),
            app: app_name.to_owned(),
            model: app.model.clone(),
            desired_digest: app.digest.clone(),
            observed_digest: digests(&pods),
            state,
            since_ms: now_ms,
            revision: self.revision.clone(),
            pending_since_ms,
            desired_since_ms,
            pods: pods.len(),
            ready: pods.iter().filter(|p| p.ready).count(),
            on_desired,
            last_seen_ms: self.observed.last_seen_ms,
        }
    }

    /// The status of pods running on this cluster that no desired app claims.
    fn unmanaged_app(
        &self,
        app_name: String,
        model: String,
        pods: &[&ObservedPod],
        prev: Option<&AppStatus>,
    ) -> AppStatus {
        AppStatus {
            cluster: self.cluster.clone(),
            app: app_name,
            model,
            desired_digest: String::new(),
            observed_digest: digests(pods),
            state: if self.up {
                State::Unmanaged
            } else {
                State::Unknown
            },
            since_ms: self.now_ms,
            revision: self.revision.clone(),
            pending_since_ms: None,
            desired_since_ms: prev.map(|p| p.desired_since_ms).unwrap_or(self.now_ms),
            pods: pods.len(),
            ready: pods.iter().filter(|p| p.ready).count(),
            on_desired: 0,
            last_seen_ms: self.observed.last_seen_ms,
        }
    }
}

/// Pods no desired app of the cluster claims, grouped by the app they would
/// be (an app desired elsewhere), else by their model: name → (model, pods).
fn unmanaged<'a>(
    desired: &DesiredState,
    observed: &'a ObservedCluster,
    claimed: &[bool],
) -> BTreeMap<String, (String, Vec<&'a ObservedPod>)> {
    let mut out: BTreeMap<String, (String, Vec<&ObservedPod>)> = BTreeMap::new();
    for (p, _) in observed.pods.iter().zip(claimed).filter(|(_, c)| !**c) {
        let name = desired
            .apps
            .values()
            .find(|a| belongs(p, &a.model, a.namespace.as_deref()))
            .map(|a| a.name.clone())
            .unwrap_or_else(|| p.model.clone());
        out.entry(name)
            .or_insert_with(|| (p.model.clone(), Vec::new()))
            .1
            .push(p);
    }
    out
}

fn digests(pods: &[&ObservedPod]) -> String {
    let set: BTreeSet<&str> = pods.iter().map(|p| p.digest.as_str()).collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// Keeps the previous transition time and revision when the state did not
/// change; records a transition when it did.
fn record(out: &mut Status, prev: Option<&AppStatus>, mut st: AppStatus, now_ms: i64) {
    match prev {
        Some(p) if p.state == st.state => {
            st.since_ms = p.since_ms;
            st.revision = p.revision.clone();
        }
        _ => out.transitions.push(Transition {
            cluster: st.cluster.clone(),
            app: st.app.clone(),
            from: prev.map(|p| p.state),
            to: st.state,
            at_ms: now_ms,
            revision: st.revision.clone(),
        }),
    }
    out.entries.insert((st.cluster.clone(), st.app.clone()), st);
}

/// Per (app, desired digest): how many clusters are in each state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    pub app: String,
    pub model: String,
    pub digest: String,
    pub revision: String,
    pub clusters: usize,
    pub counts: BTreeMap<State, usize>,
    /// e.g. `digest sha256:ab12…: 12/15 clusters synced, 2 progressing, 1 unknown`.
    pub summary: String,
}

pub fn rollouts(status: &Status, revision: &str) -> Vec<Rollout> {
    let mut by: BTreeMap<(String, String), Rollout> = BTreeMap::new();
    for s in status.entries.values() {
        if s.state == State::Unmanaged || s.desired_digest.is_empty() {
            continue;
        }
        let r = by
            .entry((s.app.clone(), s.desired_digest.clone()))
            .or_insert_with(|| Rollout {
                app: s.app.clone(),
                model: s.model.clone(),
                digest: s.desired_digest.clone(),
                revision: revision.to_owned(),
                clusters: 0,
                counts: BTreeMap::new(),
                summary: String::new(),
            });
        r.clusters += 1;
        *r.counts.entry(s.state).or_default() += 1;
    }
    by.into_values()
        .map(|mut r| {
            let synced = r.counts.get(&State::Synced).copied().unwrap_or(0);
            let mut s = format!(
                "digest {}: {}/{} clusters synced",
                r.digest, synced, r.clusters
            );
            for (st, n) in &r.counts {
                if *st != State::Synced {
                    s.push_str(&format!(", {n} {}", st.as_str().to_lowercase()));
                }
            }
            r.summary = s;
            r
        })
        .collect()
}
