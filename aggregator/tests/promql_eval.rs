//! Table tests of the PromQL evaluator on hand-made store data.

use edgewatch_aggregator::promql::{self, Labels, Value};
use edgewatch_aggregator::store::{MetricType, Store, StoreOptions, WindowOptions, WindowScope};
use prometheus::Registry;

const T: i64 = 1_700_000_000_000;
const S: i64 = 1000;

fn store() -> Store {
    let s = Store::new(StoreOptions::default(), &Registry::new());
    s.set_window(WindowOptions {
        scope: WindowScope::All,
        ..WindowOptions::default()
    });
    let put = |name: &str, t: MetricType, labels: &[(&str, &str)], pts: &[(i64, f64)]| {
        let f = s.family(name, t, "", "");
        for &(ts, v) in pts {
            s.write(f, name, labels, v, ts, T);
        }
    };
    use MetricType::*;
    // 1/s counter, samples every 15s over the last 10m.
    let steady: Vec<(i64, f64)> = (0..=40)
        .map(|i| (T - 600 * S + i * 15 * S, i as f64 * 15.0))
        .collect();
    put(
        "req_total",
        Counter,
        &[("job", "api"), ("instance", "a")],
        &steady,
    );
    // A counter with a reset in the last minute: 0, 15, 30, 5, 20.
    let reset: Vec<(i64, f64)> = [0.0, 15.0, 30.0, 5.0, 20.0]
        .iter()
        .enumerate()
        .map(|(i, &v)| (T - 60 * S + i as i64 * 15 * S, v))
        .collect();
    put(
        "req_total",
        Counter,
        &[("job", "api"), ("instance", "b")],
        &reset,
    );
    put(
        "temp",
        Gauge,
        &[("node", "n1"), ("zone", "z1")],
        &[(T - 30 * S, 10.0)],
    );
    put(
        "temp",
        Gauge,
        &[("node", "n2"), ("zone", "z1")],
        &[(T - 30 * S, 20.0)],
    );
    put(
        "temp",
        Gauge,
        &[("node", "n3"), ("zone", "z2")],
        &[(T - 30 * S, 40.0)],
    );
    // Last sample 6m ago: outside the 5m lookback.
    put("old", Gauge, &[("node", "n1")], &[(T - 360 * S, 1.0)]);
    put("recent", Gauge, &[("node", "n1")], &[(T - 240 * S, 2.0)]);
    put("recent2", Gauge, &[("node", "n1")], &[(T - 10 * S, 3.0)]);
    // "one" side for group_left.
    put(
        "node_info",
        Gauge,
        &[("node", "n1"), ("rack", "r1")],
        &[(T, 1.0)],
    );
    put(
        "node_info",
        Gauge,
        &[("node", "n2"), ("rack", "r2")],
        &[(T, 1.0)],
    );
    // Histogram buckets: 10 in (0,0.1], 10 in (0.1,0.5], 0 in (0.5,1], 0 above.
    for (le, v) in [("0.1", 10.0), ("0.5", 20.0), ("1", 20.0), ("+Inf", 20.0)] {
        put(
            "lat_bucket",
            Histogram,
            &[("job", "api"), ("le", le)],
            &[(T, v)],
        );
    }
    // Histogram whose top bucket is +Inf with observations above 1.
    for (le, v) in [("1", 5.0), ("+Inf", 10.0)] {
        put("lat2_bucket", Histogram, &[("le", le)], &[(T, v)]);
    }
    s
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(s: &Store, q: &str) -> Result<Value, String> {
    promql::instant_query(s, q, T).map_err(|e| e.to_string())
}

fn vector(s: &Store, q: &str) -> Vec<(Labels, f64)> {
    match run(s, q) {
        Ok(Value::Vector(v)) => {
            let mut v: Vec<(Labels, f64)> = v.into_iter().map(|s| (s.labels, s.value)).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
        other => panic!("{q}: {other:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || ((a - b) / b).abs() < 1e-9
}

#[test]
fn table() {
    let s = store();
    type Row<'a> = (&'a str, Vec<(Vec<(&'a str, &'a str)>, f64)>);
    let api_a = vec![("instance", "a"), ("job", "api")];
    let api_b = vec![("instance", "b"), ("job", "api")];
    let rows: Vec<Row> = vec![
        (
            "rate(req_total{instance=\"a\"}[1m])",
            vec![(api_a.clone(), 1.0)],
        ),
        (
            "increase(req_total{instance=\"a\"}[1m])",
            vec![(api_a.clone(), 60.0)],
        ),
        // Reset: 20 - 0 + 30 = 50, no extrapolation (samples at both edges).
        (
            "increase(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 50.0)],
        ),
        (
            "resets(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 1.0)],
        ),
        (
            "irate(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 1.0)],
        ),
        // delta is not counter-aware: 20 - 0.
        (
            "delta(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 20.0)],
        ),
        // 50s window: 4 samples (t-45..t), extrapolated to the start by 5s: 45*(50/45)...
        // 45s sampled, durationToStart 5s < 1.1*15 → 45+5 = 50s → 45 * 50/45 = 50.
        (
            "increase(req_total{instance=\"a\"}[50s])",
            vec![(api_a.clone(), 50.0)],
        ),
        (
            "avg_over_time(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 14.0)],
        ),
        (
            "max_over_time(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 30.0)],
        ),
        (
            "min_over_time(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 0.0)],
        ),
        (
            "sum_over_time(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 70.0)],
        ),
        (
            "count_over_time(req_total{instance=\"b\"}[1m])",
            vec![(api_b.clone(), 5.0)],
        ),
        (
            "last_over_time(req_total{instance=\"b\"}[1m])",
            vec![(
                vec![("__name__", "req_total"), ("instance", "b"), ("job", "api")],
                20.0,
            )],
        ),
        // Offset: the value 2m ago.
        (
            "req_total{instance=\"a\"} offset 2m",
            vec![(
                vec![("__name__", "req_total"), ("instance", "a"), ("job", "api")],
                480.0,
            )],
        ),
        // Lookback: 4m-old sample present, 6m-old absent.
        (
            "recent",
            vec![(vec![("__name__", "recent"), ("node", "n1")], 2.0)],
        ),
        ("old", vec![]),
        (
            "absent(old{node=\"n1\",zone=~\"z.*\"})",
            vec![(vec![("node", "n1")], 1.0)],
        ),
        ("absent(recent)", vec![]),
        (
            "time() - timestamp(temp{node=\"n1\"})",
            vec![(vec![("node", "n1"), ("zone", "z1")], 30.0)],
        ),
        (
            "timestamp(temp{node=\"n1\"})",
            vec![(
                vec![("node", "n1"), ("zone", "z1")],
                (T - 30 * S) as f64 / 1000.0,
            )],
        ),
        ("sum(temp)", vec![(vec![], 70.0)]),
        (
            "sum by (zone) (temp)",
            vec![(vec![("zone", "z1")], 30.0), (vec![("zone", "z2")], 40.0)],
        ),
        (
            "avg without (node) (temp)",
            vec![(vec![("zone", "z1")], 15.0), (vec![("zone", "z2")], 40.0)],
        ),
        ("count(temp)", vec![(vec![], 3.0)]),
        ("min(temp)", vec![(vec![], 10.0)]),
        (
            "max by (zone) (temp)",
            vec![(vec![("zone", "z1")], 20.0), (vec![("zone", "z2")], 40.0)],
        ),
        (
            "topk(1, temp)",
            vec![(
                vec![("__name__", "temp"), ("node", "n3"), ("zone", "z2")],
                40.0,
            )],
        ),
        (
            "temp * 2 > 30",
            vec![
                (vec![("node", "n2"), ("zone", "z1")], 40.0),
                (vec![("node", "n3"), ("zone", "z2")], 80.0),
            ],
        ),
        (
            "temp > 15",
            vec![
                (
                    vec![("__name__", "temp"), ("node", "n2"), ("zone", "z1")],
                    20.0,
                ),
                (
                    vec![("__name__", "temp"), ("node", "n3"), ("zone", "z2")],
                    40.0,
                ),
            ],
        ),
        (
            "temp > bool 15",
            vec![
                (vec![("node", "n1"), ("zone", "z1")], 0.0),
                (vec![("node", "n2"), ("zone", "z1")], 1.0),
                (vec![("node", "n3"), ("zone", "z2")], 1.0),
            ],
        ),
        (
            "15 < temp",
            vec![
                (
                    vec![("__name__", "temp"), ("node", "n2"), ("zone", "z1")],
                    20.0,
                ),
                (
                    vec![("__name__", "temp"), ("node", "n3"), ("zone", "z2")],
                    40.0,
                ),
            ],
        ),
        (
            "-temp{node=\"n1\"}",
            vec![(vec![("node", "n1"), ("zone", "z1")], -10.0)],
        ),
        (
            "temp * on (node) group_left (rack) node_info",
            vec![
                (vec![("node", "n1"), ("rack", "r1"), ("zone", "z1")], 10.0),
                (vec![("node", "n2"), ("rack", "r2"), ("zone", "z1")], 20.0),
            ],
        ),
        (
            "temp / ignoring (zone, rack) node_info",
            vec![(vec![("node", "n1")], 10.0), (vec![("node", "n2")], 20.0)],
        ),
        (
            "temp and on (node) node_info",
            vec![
                (
                    vec![("__name__", "temp"), ("node", "n1"), ("zone", "z1")],
                    10.0,
                ),
                (
                    vec![("__name__", "temp"), ("node", "n2"), ("zone", "z1")],
                    20.0,
                ),
            ],
        ),
        (
            "temp unless on (node) node_info",
            vec![(
                vec![("__name__", "temp"), ("node", "n3"), ("zone", "z2")],
                40.0,
            )],
        ),
        (
            "recent or on (node) temp",
            vec![
                (vec![("__name__", "recent"), ("node", "n1")], 2.0),
                (
                    vec![("__name__", "temp"), ("node", "n2"), ("zone", "z1")],
                    20.0,
                ),
                (
                    vec![("__name__", "temp"), ("node", "n3"), ("zone", "z2")],
                    40.0,
                ),
            ],
        ),
        // 10 of 20 below 0.1, then linear within (0.1, 0.5]: rank 15 → 0.1 + 0.4*0.5.
        (
            "histogram_quantile(0.75, lat_bucket)",
            vec![(vec![("job", "api")], 0.3)],
        ),
        (
            "histogram_quantile(0.25, lat_bucket)",
            vec![(vec![("job", "api")], 0.05)],
        ),
        // Rank in the +Inf bucket: the upper bound of the highest finite bucket.
        ("histogram_quantile(0.9, lat2_bucket)", vec![(vec![], 1.0)]),
        (
            "histogram_quantile(1.5, lat2_bucket)",
            vec![(vec![], f64::INFINITY)],
        ),
        ("vector(3) + 1", vec![(vec![], 4.0)]),
        (
            "scalar(temp{node=\"n1\"}) * vector(2)",
            vec![(vec![], 20.0)],
        ),
        (
            "clamp_max(temp, 15)",
            vec![
                (vec![("node", "n1"), ("zone", "z1")], 10.0),
                (vec![("node", "n2"), ("zone", "z1")], 15.0),
                (vec![("node", "n3"), ("zone", "z2")], 15.0),
            ],
        ),
    ];
    let mut failed = Vec::new();
    for (q, want) in rows {
        let mut want: Vec<(Labels, f64)> = want.into_iter().map(|(l, v)| (labels(&l), v)).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let got = vector(&s, q);
        let ok = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 == w.0 && close(g.1, w.1));
        if !ok {
            failed.push(format!("{q}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn scalars() {
    let s = store();
    for (q, want) in [
        ("1 + 2 * 3", 7.0),
        ("2 ^ 3 ^ 2", 512.0),
        ("-2 ^ 2", -4.0),
        ("5 % 3", 2.0),
        ("1 < bool 2", 1.0),
        ("scalar(temp)", f64::NAN),
        ("time()", T as f64 / 1000.0),
    ] {
        match run(&s, q) {
            Ok(Value::Scalar(v)) => assert!(close(v, want), "{q}: {v} != {want}"),
            other => panic!("{q}: {other:?}"),
        }
    }
}

#[test]
fn errors() {
    let s = store();
    // Many-to-one without group_left.
    // node_info lacks zone: both of its series match the group {} → not unique.
    let e = run(&s, "temp * on (zone) node_info").unwrap_err();
    assert!(e.contains("many-to-many matching not allowed"), "{e}");
    let e = run(&s, "temp * on (zone) group_left node_info").unwrap_err();
    assert!(e.contains("many-to-many"), "{e}");
    // Several lhs series for one rhs series without group_left.
    let e = run(&s, "temp * on (zone) group_left sum by (zone) (temp)").err();
    assert!(e.is_none(), "{e:?}");
    let e = run(&s, "temp * on (zone) sum by (zone) (temp)").unwrap_err();
    assert!(e.contains("many-to-one matching must be explicit"), "{e}");
    let e = run(&s, "node_info * on () temp").unwrap_err();
    assert!(e.contains("many-to-many matching not allowed"), "{e}");
    let e = run(&s, "temp * on () group_left node_info").unwrap_err();
    assert!(e.contains("many-to-many"), "{e}");
    // Dropping the name makes two series equal.
    let e = run(&s, "{__name__=~\"recent|recent2\"} + 1").unwrap_err();
    assert!(e.contains("same labelset"), "{e}");
    // Filtering comparisons keep the name: no clash.
    assert_eq!(vector(&s, "{__name__=~\"recent|recent2\"} > 0").len(), 2);
    // Unsupported constructs are rejected by the load-time check, by name.
    for (q, want) in [
        (
            "predict_linear(temp[5m], 60)",
            "unsupported function \"predict_linear\"",
        ),
        (
            "label_replace(temp, \"a\", \"$1\", \"node\", \"(.*)\")",
            "unsupported function \"label_replace\"",
        ),
        (
            "quantile(0.5, temp)",
            "unsupported aggregation \"quantile\"",
        ),
        ("max_over_time(temp[5m:1m])", "subquery"),
        ("temp @ 100", "\"@\""),
    ] {
        let e = promql_parser::parser::parse(q).unwrap();
        let err = promql::check(&e).unwrap_err().to_string();
        assert!(err.contains(want), "{q}: {err}");
    }
    // Query::parse tells a syntax error from an unsupported construct.
    assert!(matches!(
        promql::Query::parse("rate(temp[5m]"),
        Err(promql::ParseError::Syntax(_))
    ));
    assert!(matches!(
        promql::Query::parse("quantile(0.5, temp)"),
        Err(promql::ParseError::Unsupported(
            promql::Unsupported::Aggregation(_)
        ))
    ));
    assert!(matches!(
        promql::instant_query(&s, "temp * on (zone) sum by (zone) (temp)", T),
        Err(promql::QueryError::Eval(
            promql::EvalError::ImplicitManyToOne
        ))
    ));
}
