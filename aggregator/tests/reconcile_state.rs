//! Table-driven tests of the pure reconcile function with a controllable clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use edgewatch_aggregator::reconcile::gitops::{DesiredApp, DesiredState};
use edgewatch_aggregator::reconcile::{
    reconcile, rollouts, Observed, ObservedCluster, ObservedPod, Options, State, Status,
};

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

/// A clock the test moves by hand.
struct Clock(i64);
impl Clock {
    fn set_s(&mut self, s: i64) -> i64 {
        self.0 = 1_700_000_000_000 + s * 1000;
        self.0
    }
}

fn opts() -> Options {
    Options {
        progress_deadline: Duration::from_secs(600),
        down_after: Duration::from_secs(120),
    }
}

fn app(name: &str, model: &str, digest: &str) -> DesiredApp {
    DesiredApp {
        name: name.into(),
        model: model.into(),
        namespace: None,
        image: format!("quay.io/x/{model}"),
        digest: digest.into(),
        file: format!("apps/{name}/kustomization.yaml"),
    }
}

fn desired(rev: &str, apps: &[DesiredApp], clusters: &[(&str, &[&str])]) -> DesiredState {
    DesiredState {
        revision: rev.into(),
        apps: apps.iter().map(|a| (a.name.clone(), a.clone())).collect(),
        clusters: clusters
            .iter()
            .map(|(c, a)| {
                (
                    c.to_string(),
                    a.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
                )
            })
            .collect(),
    }
}

fn pod(i: usize, model: &str, digest: &str, ready: bool) -> ObservedPod {
    ObservedPod {
        node: "n1".into(),
        namespace: model.into(),
        pod: format!("{model}-{i}"),
        deployment: "model-1".into(),
        model: model.into(),
        version: "1".into(),
        image: format!("quay.io/x/{model}"),
        digest: digest.into(),
        ready,
    }
}

fn observed(now: i64, clusters: &[(&str, Option<i64>, Vec<ObservedPod>)]) -> Observed {
    Observed {
        clusters: clusters
            .iter()
            .map(|(c, ago, pods)| {
                (
                    c.to_string(),
                    ObservedCluster {
                        last_seen_ms: ago.map(|a| now - a * 1000),
                        pods: pods.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// One step of a single (cluster c1, app a / model m) scenario.
struct Step {
    at_s: i64,
    /// Desired digest of app `a` (None: not desired on c1).
    want: Option<&'static str>,
    /// Seconds since c1's collectors were last seen (None: never).
    seen_ago_s: Option<i64>,
    /// (digest, ready) per pod.
    pods: &'static [(&'static str, bool)],
    expect: Option<State>,
}

const fn s(
    at_s: i64,
    want: Option<&'static str>,
    seen_ago_s: Option<i64>,
    pods: &'static [(&'static str, bool)],
    expect: Option<State>,
) -> Step {
    Step {
        at_s,
        want,
        seen_ago_s,
        pods,
        expect,
    }
}

use State::*;

#[allow(clippy::type_complexity)]
fn scenarios() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        (
            "desired, cluster up, never reported -> Missing -> Synced",
            vec![
                s(0, Some(D1), Some(1), &[], Some(Missing)),
                s(30, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
            ],
        ),
        (
            "rollout: Synced -> Progressing on digest change -> Synced",
            vec![
                s(
                    0,
                    Some(D1),
                    Some(1),
                    &[(D1, true), (D1, true)],
                    Some(Synced),
                ),
                s(
                    10,
                    Some(D2),
                    Some(1),
                    &[(D1, true), (D1, true)],
                    Some(Progressing),
                ),
                s(
                    60,
                    Some(D2),
                    Some(1),
                    &[(D2, false), (D1, true)],
                    Some(Progressing),
                ),
                s(
                    120,
                    Some(D2),
                    Some(1),
                    &[(D2, true), (D2, true)],
                    Some(Synced),
                ),
            ],
        ),
        (
            "digest changed, still old digest past the deadline -> OutOfSync",
            vec![
                s(0, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
                s(10, Some(D2), Some(1), &[(D1, true)], Some(Progressing)),
                s(610, Some(D2), Some(1), &[(D1, true)], Some(Progressing)),
                s(611, Some(D2), Some(1), &[(D1, true)], Some(OutOfSync)),
                s(700, Some(D2), Some(1), &[(D2, true)], Some(Synced)),
            ],
        ),
        (
            "desired digest, not ready past the deadline -> Degraded -> Synced",
            vec![
                s(0, Some(D1), Some(1), &[(D1, false)], Some(Progressing)),
                s(600, Some(D1), Some(1), &[(D1, false)], Some(Progressing)),
                s(601, Some(D1), Some(1), &[(D1, false)], Some(Degraded)),
                s(900, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
            ],
        ),
        (
            "Synced pod turns unready: Progressing, then Degraded after the deadline",
            vec![
                s(0, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
                s(100, Some(D1), Some(1), &[(D1, false)], Some(Progressing)),
                s(650, Some(D1), Some(1), &[(D1, false)], Some(Progressing)),
                s(701, Some(D1), Some(1), &[(D1, false)], Some(Degraded)),
            ],
        ),
        (
            "running some other digest past the deadline (mixed) -> OutOfSync",
            vec![
                s(
                    0,
                    Some(D2),
                    Some(1),
                    &[(D2, true), (D3, true)],
                    Some(Progressing),
                ),
                s(
                    601,
                    Some(D2),
                    Some(1),
                    &[(D2, true), (D3, true)],
                    Some(OutOfSync),
                ),
            ],
        ),
        (
            "collectors silent past down_after -> Unknown -> back -> Synced",
            vec![
                s(0, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
                s(100, Some(D1), Some(120), &[(D1, true)], Some(Synced)),
                s(200, Some(D1), Some(121), &[(D1, true)], Some(Unknown)),
                s(2000, Some(D1), Some(1900), &[], Some(Unknown)),
                s(2010, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
            ],
        ),
        (
            "cluster never seen -> Unknown (disconnected, not Missing)",
            vec![s(0, Some(D1), None, &[], Some(Unknown))],
        ),
        (
            "Unknown while progressing keeps the deadline: back late and not ready -> Degraded",
            vec![
                s(0, Some(D1), Some(1), &[(D1, false)], Some(Progressing)),
                s(300, Some(D1), Some(200), &[(D1, false)], Some(Unknown)),
                s(700, Some(D1), Some(1), &[(D1, false)], Some(Degraded)),
            ],
        ),
        (
            "running but not desired -> Unmanaged; desired again -> Synced",
            vec![
                s(0, None, Some(1), &[(D1, true)], Some(Unmanaged)),
                s(10, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
                s(20, None, Some(1), &[(D1, true)], Some(Unmanaged)),
            ],
        ),
        (
            "no longer desired and gone -> no entry",
            vec![
                s(0, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
                s(10, None, Some(1), &[], None),
            ],
        ),
        (
            "pods gone while desired -> Missing",
            vec![
                s(0, Some(D1), Some(1), &[(D1, true)], Some(Synced)),
                s(10, Some(D1), Some(1), &[], Some(Missing)),
            ],
        ),
    ]
}

#[test]
fn every_state_and_transition() {
    let mut seen_states = BTreeSet::new();
    for (name, steps) in scenarios() {
        let mut clock = Clock(0);
        let mut prev = Status::default();
        let mut last_state: Option<State> = None;
        for (i, st) in steps.iter().enumerate() {
            let now = clock.set_s(st.at_s);
            let rev = format!("rev{i}");
            let d = match st.want {
                Some(dig) => desired(&rev, &[app("a", "m", dig)], &[("c1", &["a"])]),
                None => desired(&rev, &[], &[]),
            };
            let pods: Vec<ObservedPod> = st
                .pods
                .iter()
                .enumerate()
                .map(|(j, (dig, ready))| pod(j, "m", dig, *ready))
                .collect();
            let o = observed(now, &[("c1", st.seen_ago_s, pods)]);
            let next = reconcile(&d, &o, &prev, now, &opts());
            let got = next.get("c1", if st.want.is_some() { "a" } else { "m" });
            // Unmanaged pods of a model no app claims are named by the model.
            let got = got.or_else(|| next.get("c1", "a"));
            assert_eq!(
                got.map(|g| g.state),
                st.expect,
                "{name}: step {i} (t={}s)",
                st.at_s
            );
            if let (Some(g), Some(e)) = (got, st.expect) {
                seen_states.insert(e);
                if last_state != Some(e) {
                    assert_eq!(g.since_ms, now, "{name}: step {i}: transition time");
                    assert_eq!(g.revision, rev, "{name}: step {i}: transition revision");
                    let t = next.transitions.last().expect("a transition");
                    assert_eq!((t.to, t.at_ms, t.revision.as_str()), (e, now, rev.as_str()));
                    assert_eq!(
                        t.from,
                        last_state.filter(|_| prev.get("c1", &g.app).is_some())
                    );
                } else {
                    assert!(g.since_ms < now, "{name}: step {i}: no transition");
                    assert_eq!(next.transitions.len(), prev.transitions.len());
                }
                if let Some(dig) = st.want {
                    assert_eq!(g.desired_digest, dig);
                }
            }
            last_state = st.expect;
            prev = next;
        }
    }
    assert_eq!(
        seen_states,
        State::ALL.into_iter().collect(),
        "every state covered"
    );
}

#[test]
fn pure_same_inputs_same_output() {
    let d = desired("r", &[app("a", "m", D1)], &[("c1", &["a"])]);
    let o = observed(1_000_000, &[("c1", Some(1), vec![pod(0, "m", D1, false)])]);
    let a = reconcile(&d, &o, &Status::default(), 1_000_000, &opts());
    let b = reconcile(&d, &o, &Status::default(), 1_000_000, &opts());
    assert_eq!(a, b);
}

#[test]
fn clusters_apps_namespaces_and_unmanaged_names() {
    let now = 5_000_000;
    let mut a1 = app("housing-a", "housing", D1);
    a1.namespace = Some("ns-a".into());
    let mut a2 = app("housing-b", "housing", D2);
    a2.namespace = Some("ns-b".into());
    let bike = app("bike", "bike", D3);
    let d = desired(
        "r1",
        &[a1, a2, bike],
        &[("c1", &["housing-a", "housing-b"]), ("c2", &["bike"])],
    );
    let mut p_a = pod(0, "housing", D1, true);
    p_a.namespace = "ns-a".into();
    let mut p_b = pod(1, "housing", D1, true);
    p_b.namespace = "ns-b".into();
    let stray = pod(2, "bike", D3, true); // bike runs on c1 but is desired on c2 only
    let other = pod(3, "llm", D2, true); // a model nobody wants
    let o = observed(
        now,
        &[
            ("c1", Some(2), vec![p_a, p_b, stray, other]),
            ("c2", Some(2), vec![]),
        ],
    );
    let st = reconcile(&d, &o, &Status::default(), now, &opts());
    let state = |c: &str, a: &str| st.get(c, a).map(|e| e.state);
    assert_eq!(state("c1", "housing-a"), Some(Synced));
    assert_eq!(state("c1", "housing-b"), Some(Progressing)); // runs D1, wants D2
    assert_eq!(st.get("c1", "housing-b").unwrap().observed_digest, D1);
    assert_eq!(state("c1", "bike"), Some(Unmanaged));
    assert_eq!(state("c1", "llm"), Some(Unmanaged));
    assert_eq!(state("c2", "bike"), Some(Missing));
    assert_eq!(st.entries.len(), 5);
}

#[test]
fn rollout_summary_per_desired_digest() {
    let now = 9_000_000;
    let names: Vec<String> = (0..15).map(|i| format!("edge-{i:02}")).collect();
    let apps = ["a"];
    let clusters: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &apps[..])).collect();
    let d = desired("r9", &[app("a", "m", D2)], &clusters);
    let mut obs: Vec<(&str, Option<i64>, Vec<ObservedPod>)> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let (seen, pods) = match i {
            0..=11 => (Some(1), vec![pod(0, "m", D2, true)]),
            12 | 13 => (Some(1), vec![pod(0, "m", D1, true)]),
            _ => (Some(999), vec![]),
        };
        obs.push((n.as_str(), seen, pods));
    }
    let st = reconcile(&d, &observed(now, &obs), &Status::default(), now, &opts());
    let r = rollouts(&st, "r9");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].clusters, 15);
    assert_eq!(
        r[0].summary,
        format!("digest {D2}: 12/15 clusters synced, 2 progressing, 1 unknown")
    );
    let counts: BTreeMap<State, usize> = r[0].counts.clone();
    assert_eq!(counts.get(&Synced), Some(&12));
}
