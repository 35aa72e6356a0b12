//! Rule-file errors are located as FILE:LINE:COL.

use edgewatch_aggregator::rules::{file, validate_rule_files};

fn err(text: &str) -> String {
    match file::parse(text, "r.yml") {
        Ok(f) => panic!("accepted: {f:?}"),
        Err(e) => e.to_string(),
    }
}

fn at(e: &str, line: usize) {
    assert!(
        e.starts_with(&format!("r.yml:{line}:")),
        "want line {line}: {e}"
    );
}

#[test]
fn accepts_prometheus_rule_files() {
    let f = file::parse(
        r#"
groups:
  - name: g
    interval: 1m
    rules:
      - alert: A
        expr: |
          sum by (job) (rate(x_total[5m]))
            > 1
        for: 5m
        keep_firing_for: 10m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.job }}: {{ $value | humanize }}"
      - record: job:x:rate5m
        expr: sum by (job) (rate(x_total[5m]))
      - alert: B
        expr: 1
"#,
        "r.yml",
    )
    .unwrap();
    assert_eq!(f.groups[0].rules.len(), 3);
}

#[test]
fn bad_promql() {
    let e = err("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n");
    at(&e, 5);
    assert!(e.contains("r.yml:5:15:"), "{e}");
    assert!(e.contains("invalid PromQL"), "{e}");
}

#[test]
fn unknown_function() {
    let e = err("groups:\n  - name: g\n    rules:\n      - alert: A\n        for: 1m\n        expr: predict_linear(x[5m], 60) > 0\n");
    at(&e, 6);
    assert!(e.contains("unsupported function \"predict_linear\""), "{e}");
    let e = err("groups:\n  - name: g\n    rules:\n      - record: r\n        expr: x[5m]\n");
    at(&e, 5);
    assert!(e.contains("instant vector or scalar"), "{e}");
    // Names the parser does not know at all.
    let e = err("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: holt_winters(x[5m], 0.1, 0.1)\n");
    at(&e, 5);
    assert!(e.contains("holt_winters"), "{e}");
}

#[test]
fn second_group_and_rule() {
    let e = err(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n  - name: h\n    rules:\n      - alert: B\n        expr: up\n      - alert: C\n        expr: stddev(up)\n",
    );
    at(&e, 11);
    assert!(e.contains("unsupported aggregation \"stddev\""), "{e}");
}

#[test]
fn bad_template() {
    let e = err("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        annotations:\n          summary: \"{{ $labels.job \"\n");
    at(&e, 7);
    assert!(e.contains("unclosed action"), "{e}");
    let e = err("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        labels:\n          team: \"{{ .Foo }}\"\n");
    at(&e, 7);
    assert!(e.contains("unsupported template action"), "{e}");
}

#[test]
fn unknown_field() {
    let e = err("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        severity: page\n");
    at(&e, 6);
    assert!(e.contains("unknown field `severity`"), "{e}");
    let e = err("groups:\n  - name: g\n    evaluation: 1m\n    rules: []\n");
    at(&e, 3);
}

#[test]
fn rule_shape() {
    let e = err(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: up\n",
    );
    assert!(e.contains("only one of 'record' and 'alert'"), "{e}");
    assert!(
        e.starts_with("r.yml:4:") || e.starts_with("r.yml:3:"),
        "{e}"
    );
    let e = err(
        "groups:\n  - name: g\n    rules:\n      - record: b\n        for: 1m\n        expr: up\n",
    );
    assert!(e.contains("recording rule"), "{e}");
    let e = err("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 5 minutes\n");
    at(&e, 6);
    assert!(e.contains("invalid duration"), "{e}");
    let e = err("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n");
    at(&e, 4);
    assert!(e.contains("repeated"), "{e}");
}

#[test]
fn validate_via_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.rules.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: quantile_over_time(0.5, x[5m])\n",
    )
    .unwrap();
    let yaml = format!(
        "http: {{listen: \"127.0.0.1:0\"}}\nstate: {{path: /tmp/x}}\nrule_files: [\"{}/*.rules.yml\"]\n",
        dir.path().display()
    );
    let cfg: edgewatch_config::AggregatorConfig =
        edgewatch_config::parse(&yaml, "agg.yml").unwrap();
    let e = validate_rule_files(&cfg).unwrap_err().to_string();
    assert!(e.contains("a.rules.yml:5:15:"), "{e}");
    assert!(
        e.contains("unsupported function \"quantile_over_time\""),
        "{e}"
    );
    // A literal path that does not exist is an error; an empty glob is not.
    let yaml = "http: {listen: \"127.0.0.1:0\"}\nstate: {path: /tmp/x}\nrule_files: [/nonexistent/rules.yml]\n";
    let cfg: edgewatch_config::AggregatorConfig = edgewatch_config::parse(yaml, "agg.yml").unwrap();
    assert!(validate_rule_files(&cfg).is_err());
    let yaml = "http: {listen: \"127.0.0.1:0\"}\nstate: {path: /tmp/x}\nrule_files: [\"/nonexistent/*.yml\"]\n";
    let cfg: edgewatch_config::AggregatorConfig = edgewatch_config::parse(yaml, "agg.yml").unwrap();
    validate_rule_files(&cfg).unwrap();
    // Defaults keep old configs working.
    assert_eq!(cfg.evaluation_interval.get().as_secs(), 60);
    assert_eq!(cfg.fleet.down_after.get().as_secs(), 120);
    assert_eq!(cfg.store.window.get().as_secs(), 600);
}

/// The messages users see from `edgewatch validate aggregator` and rule loading,
/// pinned byte for byte.
#[test]
fn messages_are_stable() {
    let rule = |body: &str| {
        err(&format!(
            "groups:\n  - name: g\n    rules:\n      - {body}\n"
        ))
    };
    for (body, want) in [
        (
            "alert: A\n        record: b\n        expr: up",
            r#"r.yml:4:9: groups[0].rules[0]: only one of 'record' and 'alert' may be set"#,
        ),
        (
            "record: b\n        expr: up\n        labels: {a: \"{{ $value }}\"}",
            r#"r.yml:4:9: groups[0].rules[0]: recording rule labels cannot be templated"#,
        ),
        (
            "alert: A\n        expr: rate(x[5m]",
            r#"r.yml:5:15: groups[0].rules[0].expr: invalid PromQL "rate(x[5m]": unclosed left parenthesis"#,
        ),
        (
            "alert: A\n        expr: stddev(up)",
            r#"r.yml:5:15: groups[0].rules[0].expr: unsupported aggregation "stddev" in "stddev(up)""#,
        ),
        (
            "alert: A\n        expr: x[5m]",
            r#"r.yml:5:15: groups[0].rules[0].expr: invalid PromQL "x[5m]": a rule needs an instant vector or scalar, got matrix"#,
        ),
        (
            "alert: A\n        expr: up\n        annotations: {s: \"{{ $labels.job \"}",
            r#"r.yml:6:22: groups[0].rules[0].annotations.s: template "{{ $labels.job ": unclosed action"#,
        ),
        (
            "alert: A\n        expr: up\n        annotations: {s: \"{{ $value | toUpper }}\"}",
            r#"r.yml:6:22: groups[0].rules[0].annotations.s: template "{{ $value | toUpper }}": unsupported template function "toUpper""#,
        ),
        (
            "alert: A\n        expr: up\n        annotations: {s: '{{ printf \"%s %s\" $value }}'}",
            r#"r.yml:6:22: groups[0].rules[0].annotations.s: template "{{ printf \"%s %s\" $value }}": unsupported printf format "%s %s" (one of %s %v %d %f %.Nf %g %e)"#,
        ),
        (
            "alert: A\n        expr: up\n        labels: {\"a-b\": x}",
            r#"r.yml:4:9: groups[0].rules[0]: invalid label name "a-b""#,
        ),
    ] {
        assert_eq!(rule(body), want, "{body}");
    }
}
