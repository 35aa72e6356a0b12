//! The rule engine over a store: rule files, ALERTS series, recording rules,
//! built-in fleet rules, the HTTP API, and restart from sled.

use std::sync::Arc;

use edgewatch_aggregator::rules::{validate_rule_files, RuleEngine, RulesError, FLEET_GROUP};
use edgewatch_aggregator::store::{MetricType, Selector, Store, StoreOptions};
use edgewatch_config::AggregatorConfig;
use edgewatch_testkit::{eventually, Metrics};
use prometheus::Registry;

const T0: i64 = 1_700_000_000_000;
const S: i64 = 1000;

fn config(dir: &std::path::Path, extra: &str) -> AggregatorConfig {
    let yaml = format!(
        "http: {{listen: \"127.0.0.1:0\"}}\nstate: {{path: \"{}\"}}\nrule_files: [\"{}/*.rules.yml\"]\nevaluation_interval: 15s\n{extra}",
        dir.join("state").display(),
        dir.display()
    );
    edgewatch_config::parse(&yaml, "aggregator.yml").unwrap()
}

const RULES: &str = r#"
groups:
  - name: nodes
    interval: 30s
    rules:
      - record: node:temp:avg5m
        expr: avg_over_time(temp[5m])
        labels:
          source: rules
      - alert: HotNode
        expr: node:temp:avg5m > 30
        for: 2m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.node }} averages {{ $value }} degrees"
      - alert: EdgeBufferDropping
        expr: increase(edgewatch_buffer_dropped_points_total[5m]) > 100
"#;

struct Env {
    _dir: tempfile::TempDir,
    cfg: AggregatorConfig,
    db_path: std::path::PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nodes.rules.yml"), RULES).unwrap();
    let cfg = config(dir.path(), "fleet: {down_after: 2m}\n");
    let db_path = dir.path().join("state");
    Env {
        _dir: dir,
        cfg,
        db_path,
    }
}

fn store() -> Arc<Store> {
    Arc::new(Store::new(StoreOptions::default(), &Registry::new()))
}

fn write_temp(s: &Store, node: &str, ts: i64, v: f64) {
    let f = s.family("temp", MetricType::Gauge, "", "");
    s.write(f, "temp", &[("node", node)], v, ts, ts);
}

type Found = Vec<(String, Vec<(String, String)>, f64)>;

fn series(s: &Store, sel: &str, now: i64) -> Found {
    s.samples(&Selector::parse(sel).unwrap(), now - 1, now, now)
        .into_iter()
        .map(|x| (x.name, x.labels, x.samples.last().unwrap().1))
        .collect()
}

#[test]
fn rules_alerts_recording_and_restart() {
    let env = env();
    validate_rule_files(&env.cfg).unwrap();
    let store = store();
    let db = edgewatch_testkit::open_sled(&env.db_path);
    let engine = RuleEngine::load(&env.cfg, store.clone(), &db, &Registry::new()).unwrap();
    // A file rule named like a built-in replaces it; the others stay.
    assert_eq!(engine.group_names(), vec!["nodes", FLEET_GROUP]);

    // n1 hot, n2 cool; samples every 15s (the window holds the temp series).
    let mut t = T0;
    for i in 0..20 {
        write_temp(&store, "n1", T0 + i * 15 * S, 40.0);
        write_temp(&store, "n2", T0 + i * 15 * S, 20.0);
    }
    t += 19 * 15 * S;
    let sent = engine.evaluate_all(t);
    assert!(sent.is_empty(), "pending: nothing sent");
    let rec = series(&store, "node:temp:avg5m", t);
    assert_eq!(rec.len(), 2, "{rec:?}");
    assert!(rec
        .iter()
        .any(|(_, l, v)| *v == 40.0 && l.contains(&("source".into(), "rules".into()))));
    let alerts = series(&store, "ALERTS", t);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0]
        .1
        .contains(&("alertstate".to_string(), "pending".to_string())));
    let api = engine.alerts_json();
    assert_eq!(api["alerts"][0]["state"], "pending");
    assert_eq!(api["alerts"][0]["labels"]["node"], "n1");
    assert_eq!(
        api["alerts"][0]["annotations"]["summary"],
        "n1 averages 40 degrees"
    );
    assert_eq!(api["alerts"][0]["value"], "4e+01");

    // 1m later: still pending. Then restart the engine (new store, same sled).
    for i in 20..24 {
        write_temp(&store, "n1", T0 + i * 15 * S, 40.0);
    }
    t += 60 * S;
    assert!(engine.evaluate_all(t).is_empty());
    drop(engine);
    db.flush().unwrap();
    drop(db);

    let store = self::store();
    let db = edgewatch_testkit::open_sled(&env.db_path);
    let engine = RuleEngine::load(&env.cfg, store.clone(), &db, &Registry::new()).unwrap();
    for i in 24..30 {
        write_temp(&store, "n1", T0 + i * 15 * S, 40.0);
    }
    // The for timer resumed: 2m after the first evaluation it fires.
    t += 60 * S;
    let sent = engine.evaluate_all(t);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].labels["alertname"], "HotNode");
    assert_eq!(sent[0].labels["severity"], "page");
    let alerts = series(&store, "ALERTS", t);
    assert!(alerts[0]
        .1
        .contains(&("alertstate".to_string(), "firing".to_string())));
    let rules = engine.rules_json();
    let g = &rules["groups"][0];
    assert_eq!(g["name"], "nodes");
    assert_eq!(g["interval"], 30.0);
    assert_eq!(g["rules"][0]["type"], "recording");
    assert_eq!(g["rules"][1]["state"], "firing");
    assert_eq!(g["rules"][1]["health"], "ok");
    assert_eq!(g["rules"][1]["duration"], 120.0);

    // Restart while firing: stays firing, no new send before the resend delay.
    drop(engine);
    db.flush().unwrap();
    drop(db);
    let store = self::store();
    let db = edgewatch_testkit::open_sled(&env.db_path);
    let engine = RuleEngine::load(&env.cfg, store.clone(), &db, &Registry::new()).unwrap();
    for i in 30..32 {
        write_temp(&store, "n1", T0 + i * 15 * S, 40.0);
    }
    // 60s after the last evaluation (= the resend delay, not more).
    t = T0 + 31 * 15 * S;
    let sent = engine.evaluate_all(t);
    assert!(sent.is_empty(), "no re-page after restart: {sent:?}");
    assert_eq!(engine.alerts_json()["alerts"][0]["state"], "firing");

    // Cools down: resolved, sent with an end time, ALERTS series removed.
    for i in 32..60 {
        write_temp(&store, "n1", T0 + i * 15 * S, 10.0);
    }
    t = T0 + 59 * 15 * S;
    let sent = engine.evaluate_all(t);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].ends_at.is_some());
    assert!(series(&store, "ALERTS", t).is_empty());
    assert_eq!(engine.alerts_json()["alerts"].as_array().unwrap().len(), 0);
}

/// After a restart with an empty store, an alert that was firing stays firing
/// (API and ALERTS) for `rules.restore_grace` from the first evaluation, then
/// resolves once; a later start with its data back does not hold it.
#[test]
fn restart_holds_firing_alerts_for_the_restore_grace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobs.rules.yml"),
        "groups:\n  - name: jobs\n    rules:\n      - alert: JobUp\n        expr: reqs > 0\n",
    )
    .unwrap();
    let cfg = config(dir.path(), "rules: {restore_grace: 3m}\n");
    let db_path = dir.path().join("state");
    let reopen = |db: sled::Db| {
        db.flush().unwrap();
        drop(db);
        let store = store();
        let db = edgewatch_testkit::open_sled(&db_path);
        let engine = RuleEngine::load(&cfg, store.clone(), &db, &Registry::new()).unwrap();
        (store, db, engine)
    };
    let jobs = |sent: Vec<edgewatch_notify::Alert>| -> Vec<bool> {
        sent.into_iter()
            .filter(|a| a.labels["alertname"] == "JobUp")
            .map(|a| a.ends_at.is_some())
            .collect()
    };
    let store = self::store();
    let db = edgewatch_testkit::open_sled(&db_path);
    let engine = RuleEngine::load(&cfg, store.clone(), &db, &Registry::new()).unwrap();
    let f = store.family("reqs", MetricType::Gauge, "", "");
    store.write(f, "reqs", &[("job", "api")], 1.0, T0, T0);
    assert_eq!(jobs(engine.evaluate_all(T0)), [false], "fires");
    drop(engine);

    // Restarted, no data: held from the first evaluation (T0+10m) for 3m.
    let (store, db, engine) = reopen(db);
    let t1 = T0 + 600 * S;
    for t in [t1, t1 + 60 * S, t1 + 179 * S] {
        assert!(
            jobs(engine.evaluate_all(t))
                .iter()
                .all(|resolved| !resolved),
            "no resolve at {t}"
        );
        assert_eq!(engine.alerts_json()["alerts"][0]["state"], "firing");
        let alerts = series(&store, "ALERTS", t);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(alerts[0]
            .1
            .contains(&("alertstate".to_string(), "firing".to_string())));
    }
    assert_eq!(
        jobs(engine.evaluate_all(t1 + 180 * S)),
        [true],
        "resolved once"
    );
    assert!(series(&store, "ALERTS", t1 + 180 * S).is_empty());
    drop(engine);

    // Fires again; restarted with its data: continues with the same start.
    let (store, db, engine) = reopen(db);
    let t2 = t1 + 600 * S;
    let f = store.family("reqs", MetricType::Gauge, "", "");
    store.write(f, "reqs", &[("job", "api")], 1.0, t2, t2);
    let started = engine.evaluate_all(t2)[0].starts_at;
    drop(engine);
    let (store, _db, engine) = reopen(db);
    let f = store.family("reqs", MetricType::Gauge, "", "");
    store.write(
        f,
        "reqs",
        &[("job", "api")],
        1.0,
        t2 + 120 * S,
        t2 + 120 * S,
    );
    let sent = engine.evaluate_all(t2 + 120 * S);
    assert_eq!(jobs(sent.clone()), [false], "a re-send, not a resolve");
    assert_eq!(sent[0].starts_at, started, "same firing start");
    // Its data is back and the condition clears: resolved within the grace.
    store.write(
        f,
        "reqs",
        &[("job", "api")],
        0.0,
        t2 + 150 * S,
        t2 + 150 * S,
    );
    assert_eq!(jobs(engine.evaluate_all(t2 + 180 * S)), [true]);
}

/// A recording rule's output is visible to the rules after it in the same
/// evaluation, through a fixed name and through a name regex alike (the
/// round reads the store once, then re-reads what it wrote).
#[test]
fn recorded_series_visible_later_in_the_group() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobs.rules.yml"),
        r#"
groups:
  - name: jobs
    rules:
      - alert: SeenBeforeRecording
        expr: '{__name__=~"job:reqs:sum"} > 0'
      - record: job:reqs:sum
        expr: sum by (job) (reqs)
      - alert: ByRegex
        expr: '{__name__=~"job:reqs:.*"} > 0'
      - alert: ByName
        expr: job:reqs:sum > 0
"#,
    )
    .unwrap();
    let cfg = config(dir.path(), "");
    let store = store();
    let db = edgewatch_testkit::open_sled(&dir.path().join("state"));
    let engine = RuleEngine::load(&cfg, store.clone(), &db, &Registry::new()).unwrap();
    let f = store.family("reqs", MetricType::Gauge, "", "");
    store.write(f, "reqs", &[("job", "api"), ("pod", "a")], 2.0, T0, T0);
    store.write(f, "reqs", &[("job", "api"), ("pod", "b")], 3.0, T0, T0);
    let sent = engine.evaluate_all(T0);
    let mut names: Vec<&str> = sent
        .iter()
        .filter_map(|a| a.labels.get("alertname").map(String::as_str))
        .filter(|n| !n.starts_with("Edge"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["ByName", "ByRegex"], "{sent:?}");
    let by_name = sent
        .iter()
        .find(|a| a.labels.get("alertname").is_some_and(|n| n == "ByName"))
        .unwrap();
    assert_eq!(by_name.labels.get("job").map(String::as_str), Some("api"));
}

#[test]
fn fleet_collector_down_survives_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let store = store();
    let db = sled::open(dir.path().join("state")).unwrap();
    let engine = RuleEngine::load(&cfg, store.clone(), &db, &Registry::new()).unwrap();
    let f = store.family("edgewatch_collector_info", MetricType::Gauge, "", "");
    let info = |node: &str, ts: i64| {
        store.write(
            f,
            "edgewatch_collector_info",
            &[
                ("cluster", "edge-a"),
                ("node", node),
                ("instance_id", "x"),
                ("version", "1"),
            ],
            1.0,
            ts,
            ts,
        );
    };
    let mut t = T0;
    info("n1", t);
    info("n2", t);
    assert!(engine.evaluate_all(t).is_empty());
    // n2 goes silent; n1 keeps reporting.
    for _ in 0..40 {
        t += 15 * S;
        info("n1", t);
        store.sweep(t);
        let sent = engine.evaluate_all(t);
        let silent = t - T0;
        if silent > 2 * 60 * S {
            assert_eq!(
                engine.alerts_json()["alerts"].as_array().unwrap().len(),
                1,
                "at {silent}ms"
            );
        } else {
            assert!(sent.is_empty());
        }
    }
    // 10 minutes: the store swept n2's own series long ago, the alert still fires.
    assert_eq!(
        store
            .samples(
                &Selector::parse("edgewatch_collector_info").unwrap(),
                t - 600 * S,
                t,
                t
            )
            .len(),
        1
    );
    let a = &engine.alerts_json()["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "EdgeCollectorDown");
    assert_eq!(a["labels"]["node"], "n2");
    assert_eq!(a["labels"]["cluster"], "edge-a");
    assert_eq!(a["state"], "firing");
    // n2 comes back: resolved.
    t += 15 * S;
    info("n1", t);
    info("n2", t);
    let sent = engine.evaluate_all(t);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].ends_at.is_some());
}

#[tokio::test]
async fn http_api_shapes() {
    use tower::ServiceExt;
    let env = env();
    let store = store();
    let db = edgewatch_testkit::open_sled(&env.db_path);
    let engine = RuleEngine::load(&env.cfg, store.clone(), &db, &Registry::new()).unwrap();
    write_temp(&store, "n1", T0, 50.0);
    engine.evaluate_all(T0);
    for path in ["/api/v1/alerts", "/api/v1/rules"] {
        let resp = engine
            .router()
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "success");
        if path.ends_with("alerts") {
            assert_eq!(v["data"]["alerts"][0]["state"], "pending");
            assert!(v["data"]["alerts"][0]["activeAt"]
                .as_str()
                .unwrap()
                .ends_with('Z'));
        } else {
            let groups = v["data"]["groups"].as_array().unwrap();
            assert_eq!(groups.len(), 2);
            let fleet = &groups[1];
            assert_eq!(fleet["file"], "<built-in>");
            let names: Vec<&str> = fleet["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, vec!["EdgeCollectorDown", "EdgeBufferBacklog"]);
            for r in fleet["rules"].as_array().unwrap() {
                for k in [
                    "query",
                    "health",
                    "lastError",
                    "evaluationTime",
                    "lastEvaluation",
                    "alerts",
                    "labels",
                    "annotations",
                    "duration",
                ] {
                    assert!(r.get(k).is_some(), "{k} missing in {r}");
                }
            }
        }
    }
}

#[test]
fn metrics_registered() {
    let env = env();
    let registry = Registry::new();
    let db = edgewatch_testkit::open_sled(&env.db_path);
    let engine = RuleEngine::load(&env.cfg, store(), &db, &registry).unwrap();
    engine.evaluate_all(T0);
    let names: Vec<String> = registry
        .gather()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    for n in [
        "edgewatch_rule_evaluations_total",
        "edgewatch_rule_evaluation_failures_total",
        "edgewatch_rule_group_last_duration_seconds",
        "edgewatch_rule_alerts_held",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }
    let e = RuleEngine::load(&env.cfg, store(), &db, &registry).err();
    assert!(matches!(e, Some(RulesError::Metrics(_))));
}

#[tokio::test]
async fn run_evaluates_on_the_interval_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fast.rules.yml"),
        "groups:\n  - name: fast\n    interval: 100ms\n    rules:\n      - alert: Always\n        expr: vector(1)\n",
    )
    .unwrap();
    let cfg = config(dir.path(), "");
    let store = store();
    let db = sled::open(dir.path().join("state")).unwrap();
    let registry = Registry::new();
    let engine = RuleEngine::load(&cfg, store.clone(), &db, &registry).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(engine.clone().run(None, stop.clone()));
    // Three rounds of the 100ms interval.
    eventually(
        std::time::Duration::from_secs(10),
        "three evaluations of the fast group",
        || async {
            Metrics::from_registry(&registry)
                .get_or_zero(r#"edgewatch_rule_evaluations_total{group="fast"}"#)
                >= 3.0
        },
    )
    .await;
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("run stops on shutdown")
        .unwrap();
    assert_eq!(engine.alerts_json()["alerts"][0]["state"], "firing");
    assert_eq!(
        engine.alerts_json()["alerts"][0]["labels"]["alertname"],
        "Always"
    );
}

fn alert_states(engine: &RuleEngine) -> Vec<(String, String, String)> {
    let api = engine.alerts_json();
    let mut out: Vec<_> = api["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
                a["activeAt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The rules of group `nodes`.
fn rule_names(engine: &RuleEngine) -> Vec<String> {
    let rules = engine.rules_json();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"] == "nodes")
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// A reload keeps the state of the rules it keeps (same group, name and
/// expression): a pending alert goes on to fire with its first activeAt; a
/// changed expression starts afresh; a removed rule's state leaves sled.
#[test]
fn reload_keeps_the_state_of_unchanged_rules() {
    let env = env();
    let store = store();
    let db = edgewatch_testkit::open_sled(&env.db_path);
    let engine = RuleEngine::load(&env.cfg, store.clone(), &db, &Registry::new()).unwrap();
    let mut t = T0;
    for i in 0..20 {
        write_temp(&store, "n1", T0 + i * 15 * S, 40.0);
    }
    t += 19 * 15 * S;
    engine.evaluate_all(t);
    let before = alert_states(&engine);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].1, "pending");

    // HotNode kept, EdgeBufferDropping removed (the built-in one is back), Fresh added.
    let file = env.cfg.rule_files[0].replace("*.rules.yml", "nodes.rules.yml");
    let kept = RULES.replace(
        "      - alert: EdgeBufferDropping\n        expr: increase(edgewatch_buffer_dropped_points_total[5m]) > 100\n",
        "      - alert: Fresh\n        expr: vector(1)\n",
    );
    std::fs::write(&file, &kept).unwrap();
    engine
        .apply(&env.cfg, RuleEngine::prepare(&env.cfg).unwrap())
        .unwrap();
    assert!(rule_names(&engine).contains(&"Fresh".to_string()));
    assert!(!rule_names(&engine).contains(&"EdgeBufferDropping".to_string()));
    assert_eq!(alert_states(&engine), before, "kept across the reload");
    for i in 20..30 {
        write_temp(&store, "n1", T0 + i * 15 * S, 40.0);
    }
    t += 150 * S;
    let sent = engine.evaluate_all(t);
    assert!(sent.iter().any(|a| a.labels["alertname"] == "HotNode"));
    let after = alert_states(&engine);
    assert!(
        after.contains(&("HotNode".into(), "firing".into(), before[0].2.clone())),
        "fires on its first activeAt: {after:?}"
    );

    // A broken file is refused by prepare, naming file and line; nothing changes.
    std::fs::write(
        &file,
        "groups:\n  - name: nodes\n    rules:\n      - alert: X\n        expr: sum(\n",
    )
    .unwrap();
    let err = RuleEngine::prepare(&env.cfg)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("nodes.rules.yml:5:"), "{err}");
    assert_eq!(alert_states(&engine), after);

    // A changed expression: the rule starts afresh.
    std::fs::write(&file, kept.replace("> 30", "> 31")).unwrap();
    engine
        .apply(&env.cfg, RuleEngine::prepare(&env.cfg).unwrap())
        .unwrap();
    let hot: Vec<_> = alert_states(&engine)
        .into_iter()
        .filter(|a| a.0 == "HotNode")
        .collect();
    assert!(hot.is_empty(), "{hot:?}");
    engine.evaluate_all(t + 30 * S);
    let hot: Vec<_> = alert_states(&engine)
        .into_iter()
        .filter(|a| a.0 == "HotNode")
        .collect();
    assert_eq!(hot.len(), 1, "{hot:?}");
    assert_eq!(hot[0].1, "pending");
    assert_ne!(hot[0].2, before[0].2);
}
