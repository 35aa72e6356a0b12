//! The alerting state machine (`rules::alerting::step`) with a controllable clock.

use std::collections::BTreeMap;

use edgewatch_aggregator::promql::{Labels, Sample};
use edgewatch_aggregator::rules::alerting::{
    alert_series, hold_restored, ms_to_time, step, AlertRule, AlertState, RuleState, StepOptions,
};
use edgewatch_aggregator::rules::template::Template;

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

fn rule(for_min: i64, keep_min: i64) -> AlertRule {
    let mut labels = BTreeMap::new();
    labels.insert("severity".to_string(), Template::parse("page").unwrap());
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".to_string(),
        Template::parse("{{ $labels.node }} is at {{ $value }}").unwrap(),
    );
    AlertRule {
        name: "High".into(),
        expr: "temp > 10".into(),
        for_ms: for_min * MIN,
        keep_firing_for_ms: keep_min * MIN,
        labels,
        annotations,
        external_url: "http://core:9000".into(),
        external_labels: BTreeMap::new(),
    }
}

fn sample(node: &str, v: f64) -> Sample {
    let mut labels = Labels::new();
    labels.insert("__name__".into(), "temp".into());
    labels.insert("node".into(), node.into());
    Sample { labels, value: v }
}

fn only(s: &RuleState) -> &edgewatch_aggregator::rules::alerting::ActiveAlert {
    assert_eq!(s.active.len(), 1, "{s:?}");
    s.active.values().next().unwrap()
}

#[test]
fn pending_then_firing_after_for() {
    let r = rule(5, 0);
    let o = StepOptions::default();
    let (s, sent) = step(&r, RuleState::default(), &[sample("n1", 12.0)], T0, o).unwrap();
    let a = only(&s);
    assert_eq!(a.state, AlertState::Pending);
    assert!(sent.is_empty(), "pending alerts are not sent");
    // Labels: result minus __name__, plus rule labels and alertname.
    let want: Labels = [("alertname", "High"), ("node", "n1"), ("severity", "page")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(a.labels, want);
    assert_eq!(a.annotations["summary"], "n1 is at 12");
    // ALERTS{alertstate="pending"} and ALERTS_FOR_STATE.
    let series = alert_series(&s);
    assert!(series
        .iter()
        .any(|(n, l, v)| *n == "ALERTS" && l["alertstate"] == "pending" && *v == 1.0));
    assert!(series
        .iter()
        .any(|(n, _, v)| *n == "ALERTS_FOR_STATE" && *v == (T0 / 1000) as f64));

    let (s, sent) = step(&r, s, &[sample("n1", 13.0)], T0 + 4 * MIN, o).unwrap();
    assert_eq!(only(&s).state, AlertState::Pending);
    assert!(sent.is_empty());
    assert_eq!(only(&s).annotations["summary"], "n1 is at 13");

    let (s, sent) = step(&r, s, &[sample("n1", 14.0)], T0 + 5 * MIN, o).unwrap();
    let a = only(&s);
    assert_eq!(a.state, AlertState::Firing);
    assert_eq!(a.active_at, T0);
    assert_eq!(a.fired_at, Some(T0 + 5 * MIN));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].starts_at, ms_to_time(T0 + 5 * MIN));
    assert_eq!(sent[0].ends_at, None);
    assert!(sent[0]
        .generator_url
        .starts_with("http://core:9000/graph?g0.expr=temp+%3E+10"));
    // Re-sent only after the resend delay (1m) has passed.
    let (s, sent) = step(&r, s, &[sample("n1", 14.0)], T0 + 5 * MIN + 30_000, o).unwrap();
    assert!(sent.is_empty());
    let (_s, sent) = step(&r, s, &[sample("n1", 14.0)], T0 + 6 * MIN + 30_000, o).unwrap();
    assert_eq!(sent.len(), 1);
}

#[test]
fn for_zero_fires_at_once() {
    let (s, sent) = step(
        &rule(0, 0),
        RuleState::default(),
        &[sample("n1", 12.0)],
        T0,
        StepOptions::default(),
    )
    .unwrap();
    assert_eq!(only(&s).state, AlertState::Firing);
    assert_eq!(sent.len(), 1);
}

#[test]
fn flapping_pending_alert_is_dropped_and_restarts() {
    let r = rule(5, 0);
    let o = StepOptions::default();
    let (s, _) = step(&r, RuleState::default(), &[sample("n1", 12.0)], T0, o).unwrap();
    let (s, sent) = step(&r, s, &[], T0 + MIN, o).unwrap();
    assert!(
        s.active.is_empty(),
        "a pending alert that goes away is dropped"
    );
    assert!(sent.is_empty(), "and never notified");
    let (s, _) = step(&r, s, &[sample("n1", 12.0)], T0 + 2 * MIN, o).unwrap();
    assert_eq!(only(&s).active_at, T0 + 2 * MIN, "the for timer restarts");
    let (s, _) = step(&r, s, &[sample("n1", 12.0)], T0 + 6 * MIN, o).unwrap();
    assert_eq!(only(&s).state, AlertState::Pending);
    let (s, _) = step(&r, s, &[sample("n1", 12.0)], T0 + 7 * MIN, o).unwrap();
    assert_eq!(only(&s).state, AlertState::Firing);
}

#[test]
fn firing_resolves_and_is_resent_for_15m() {
    let r = rule(0, 0);
    let o = StepOptions::default();
    let (s, _) = step(&r, RuleState::default(), &[sample("n1", 12.0)], T0, o).unwrap();
    let (s, sent) = step(&r, s, &[], T0 + MIN, o).unwrap();
    let a = only(&s);
    assert_eq!(a.state, AlertState::Inactive);
    assert_eq!(a.resolved_at, Some(T0 + MIN));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].ends_at, Some(ms_to_time(T0 + MIN)));
    assert!(
        alert_series(&s).is_empty(),
        "no ALERTS series once resolved"
    );
    // Kept and re-sent (resend delay) until 15m after resolving.
    let (s, sent) = step(&r, s, &[], T0 + 3 * MIN, o).unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].ends_at, Some(ms_to_time(T0 + MIN)));
    let (s, _) = step(&r, s, &[], T0 + 16 * MIN, o).unwrap();
    assert_eq!(s.active.len(), 1);
    let (s, sent) = step(&r, s, &[], T0 + 16 * MIN + 1, o).unwrap();
    assert!(s.active.is_empty(), "dropped after the resolved retention");
    assert!(sent.is_empty());
}

#[test]
fn resolved_alert_that_returns_is_new() {
    let r = rule(0, 0);
    let o = StepOptions::default();
    let (s, _) = step(&r, RuleState::default(), &[sample("n1", 12.0)], T0, o).unwrap();
    let (s, _) = step(&r, s, &[], T0 + MIN, o).unwrap();
    let (s, sent) = step(&r, s, &[sample("n1", 12.0)], T0 + 2 * MIN, o).unwrap();
    let a = only(&s);
    assert_eq!(a.state, AlertState::Firing);
    assert_eq!(a.active_at, T0 + 2 * MIN);
    assert_eq!(a.resolved_at, None);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].ends_at, None);
}

#[test]
fn keep_firing_for() {
    let r = rule(0, 10);
    let o = StepOptions::default();
    let (s, _) = step(&r, RuleState::default(), &[sample("n1", 12.0)], T0, o).unwrap();
    let (s, _) = step(&r, s, &[], T0 + MIN, o).unwrap();
    let a = only(&s);
    assert_eq!(a.state, AlertState::Firing, "kept firing");
    assert_eq!(a.keep_firing_since, Some(T0 + MIN));
    // Condition back: keep_firing_since resets.
    let (s, _) = step(&r, s, &[sample("n1", 12.0)], T0 + 2 * MIN, o).unwrap();
    assert_eq!(only(&s).keep_firing_since, None);
    let (s, _) = step(&r, s, &[], T0 + 3 * MIN, o).unwrap();
    let (s, _) = step(&r, s, &[], T0 + 12 * MIN, o).unwrap();
    assert_eq!(only(&s).state, AlertState::Firing, "9m < keep_firing_for");
    let (s, sent) = step(&r, s, &[], T0 + 13 * MIN, o).unwrap();
    let a = only(&s);
    assert_eq!(a.state, AlertState::Inactive);
    assert_eq!(a.resolved_at, Some(T0 + 13 * MIN));
    assert_eq!(sent.len(), 1);
    assert!(sent[0].ends_at.is_some());
}

#[test]
fn several_series_and_duplicate_labels() {
    let r = rule(0, 0);
    let o = StepOptions::default();
    let (s, sent) = step(
        &r,
        RuleState::default(),
        &[sample("n1", 12.0), sample("n2", 15.0)],
        T0,
        o,
    )
    .unwrap();
    assert_eq!(s.active.len(), 2);
    assert_eq!(sent.len(), 2);
    // Two results that differ only by __name__ collide after it is dropped.
    let mut other = sample("n1", 1.0);
    other.labels.insert("__name__".into(), "temp2".into());
    let e = step(&r, s, &[sample("n1", 12.0), other], T0 + MIN, o).unwrap_err();
    assert!(e.to_string().contains("same labelset"), "{e}");
}

/// What one evaluation of the restore-grace table expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// No alert for n1 (a pending alert whose data went away).
    Gone,
    /// n1 in this state, active since this minute.
    Is(AlertState, i64),
}

/// What the evaluation hands the notifier for n1.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sent {
    Nothing,
    /// Firing, starting at this minute (a re-send of an unchanged alert keeps it).
    Firing(i64),
    Resolved,
}

/// One evaluation: minute, whether the expression returns n1, expectations.
type Eval = (i64, bool, Want, Sent);

struct GraceCase {
    name: &'static str,
    for_min: i64,
    /// Evaluations before the restart: (minute, n1 returned).
    before: &'static [(i64, bool)],
    /// Evaluations after it; the first one starts the grace.
    after: &'static [Eval],
}

const GRACE_MIN: i64 = 5;

use AlertState::{Firing, Inactive, Pending};

const GRACE_CASES: &[GraceCase] = &[
    GraceCase {
        name:
            "firing before the restart, data missing: held until the grace ends, then resolved once",
        for_min: 0,
        before: &[(0, true)],
        after: &[
            // Grace 10..15. The re-send of the unchanged alert keeps its start.
            (10, false, Want::Is(Firing, 0), Sent::Firing(0)),
            (12, false, Want::Is(Firing, 0), Sent::Firing(0)),
            (14, false, Want::Is(Firing, 0), Sent::Firing(0)),
            (15, false, Want::Is(Inactive, 0), Sent::Resolved),
            (15, false, Want::Is(Inactive, 0), Sent::Nothing),
        ],
    },
    GraceCase {
        name: "firing before the restart, data back during the grace: continues, same activeAt",
        for_min: 0,
        before: &[(0, true), (1, true)],
        after: &[
            (10, false, Want::Is(Firing, 0), Sent::Firing(0)),
            (11, true, Want::Is(Firing, 0), Sent::Nothing),
            (16, true, Want::Is(Firing, 0), Sent::Firing(0)),
            // Past the grace a missing result resolves as usual.
            (17, false, Want::Is(Inactive, 0), Sent::Resolved),
        ],
    },
    GraceCase {
        name: "data back during the grace, then gone: its data is live, so it resolves",
        for_min: 0,
        before: &[(0, true)],
        after: &[
            (10, true, Want::Is(Firing, 0), Sent::Firing(0)),
            (11, false, Want::Is(Inactive, 0), Sent::Resolved),
        ],
    },
    GraceCase {
        name: "pending before the restart: the for timer resumes, as before the grace existed",
        for_min: 5,
        before: &[(0, true), (2, true)],
        after: &[
            (3, true, Want::Is(Pending, 0), Sent::Nothing),
            (5, true, Want::Is(Firing, 0), Sent::Firing(5)),
        ],
    },
    GraceCase {
        name: "pending before the restart, data missing: dropped (not held), never sent",
        for_min: 5,
        before: &[(0, true)],
        after: &[(3, false, Want::Gone, Sent::Nothing)],
    },
    GraceCase {
        name: "a new alert during the grace fires and resolves as usual",
        for_min: 0,
        before: &[(0, false)],
        after: &[
            (10, false, Want::Gone, Sent::Nothing),
            (11, true, Want::Is(Firing, 11), Sent::Firing(11)),
            (12, false, Want::Is(Inactive, 11), Sent::Resolved),
        ],
    },
    GraceCase {
        name: "resolved before the restart: stays resolved, not revived",
        for_min: 0,
        before: &[(0, true), (1, false)],
        after: &[(10, false, Want::Is(Inactive, 0), Sent::Resolved)],
    },
];

/// The sled round trip of a restart: state serialized and read back, then
/// the engine's restore step.
fn restart(s: &RuleState) -> RuleState {
    let bytes = serde_json::to_vec(s).unwrap();
    let mut restored: RuleState = serde_json::from_slice(&bytes).unwrap();
    hold_restored(&mut restored);
    restored
}

fn n1(present: bool) -> Vec<Sample> {
    if present {
        vec![sample("n1", 12.0)]
    } else {
        Vec::new()
    }
}

#[test]
fn restore_grace_table() {
    for c in GRACE_CASES {
        let r = rule(c.for_min, 0);
        let mut s = RuleState::default();
        for &(min, present) in c.before {
            s = step(&r, s, &n1(present), T0 + min * MIN, StepOptions::default())
                .unwrap()
                .0;
        }
        s = restart(&s);
        let opts = StepOptions {
            hold_until_ms: T0 + (c.after[0].0 + GRACE_MIN) * MIN,
            ..StepOptions::default()
        };
        for &(min, present, want, want_sent) in c.after {
            let at = format!("{}: minute {min}", c.name);
            let (next, sent) = step(&r, s, &n1(present), T0 + min * MIN, opts).unwrap();
            s = next;
            let got = s
                .active
                .values()
                .next()
                .map_or(Want::Gone, |a| Want::Is(a.state, (a.active_at - T0) / MIN));
            assert_eq!(got, want, "{at}");
            assert!(s.active.len() <= 1, "{at}: {s:?}");
            let got_sent = match sent.as_slice() {
                [] => Sent::Nothing,
                [a] if a.ends_at.is_some() => Sent::Resolved,
                [a] => Sent::Firing(
                    a.starts_at
                        .duration_since(ms_to_time(T0))
                        .unwrap()
                        .as_millis() as i64
                        / MIN,
                ),
                more => panic!("{at}: {more:?}"),
            };
            assert_eq!(got_sent, want_sent, "{at}");
            // What ALERTS shows agrees with the state (held alerts as firing).
            let alerts: Vec<_> = alert_series(&s)
                .into_iter()
                .filter(|(n, _, _)| *n == "ALERTS")
                .map(|(_, l, _)| l["alertstate"].clone())
                .collect();
            let shown = match want {
                Want::Is(st @ (Firing | Pending), _) => vec![st.as_str().to_string()],
                _ => Vec::new(),
            };
            assert_eq!(alerts, shown, "{at}");
        }
    }
}

#[test]
fn only_firing_alerts_are_held_on_restore() {
    let r = rule(5, 0);
    let o = StepOptions::default();
    let (s, _) = step(&r, RuleState::default(), &[sample("n1", 12.0)], T0, o).unwrap();
    let (s, _) = step(
        &r,
        s,
        &[sample("n1", 12.0), sample("n2", 12.0)],
        T0 + 5 * MIN,
        o,
    )
    .unwrap();
    let mut s: RuleState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(hold_restored(&mut s), 1, "n1 fires, n2 is pending: {s:?}");
    let held: Vec<_> = s
        .active
        .values()
        .filter(|a| a.held)
        .map(|a| a.labels["node"].clone())
        .collect();
    assert_eq!(held, ["n1"]);
}
