//! The relabeling table: every action, defaults, anchoring, templates, and the
//! rules Prometheus refuses. `relabel_vs_prometheus.rs` runs the same table
//! through Prometheus.

mod relabel_cases;

use edgewatch_prom::relabel::RelabelConfig;
use relabel_cases::{owned, run, CASES, INVALID};

#[test]
fn table() {
    assert!(CASES.len() >= 25);
    let mut failures = Vec::new();
    for case in CASES {
        let got = run(case.rules, &owned(case.input));
        let want = case.want.map(owned);
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_rules_are_refused_naming_field_and_value() {
    for (rule, want) in INVALID {
        let err = serde_yaml_ng::from_str::<RelabelConfig>(rule)
            .expect_err(rule)
            .to_string();
        assert!(err.contains(want), "{rule}: error {err:?} lacks {want:?}");
    }
}
