//! The alerting state machine (`rules::alerting::step`) with a controllable clock.

use std::collections::BTreeMap;

use edgewatch_aggregator::promql::{Labels, Sample};
use edgewatch_aggregator::rules::alerting::{
    alert_series, ms_to_time, step, AlertRule, AlertState, RuleState, SendOptions,
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
    let o = SendOptions::default();
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
        SendOptions::default(),
    )
    .unwrap();
    assert_eq!(only(&s).state, AlertState::Firing);
    assert_eq!(sent.len(), 1);
}

#[test]
fn flapping_pending_alert_is_dropped_and_restarts() {
    let r = rule(5, 0);
    let o = SendOptions::default();
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
    let o = SendOptions::default();
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
    let o = SendOptions::default();
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
    let o = SendOptions::default();
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
    let o = SendOptions::default();
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
