//! Collector liveness kept by the fleet module: the last-seen state survives a
//! restart in the sled tree `fleet`, and a state dir written by older versions
//! (the state under `\x00fleet/last_seen` in the `rules` tree) is migrated.

use std::path::Path;
use std::sync::Arc;

use edgewatch_aggregator::fleet::LAST_SEEN;
use edgewatch_aggregator::rules::RuleEngine;
use edgewatch_aggregator::store::{MetricType, Selector, Store, StoreOptions};
use edgewatch_config::AggregatorConfig;
use prometheus::Registry;

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

fn config(dir: &Path) -> AggregatorConfig {
    let yaml = format!(
        "http: {{listen: \"127.0.0.1:0\"}}\nstate: {{path: \"{}\"}}\nevaluation_interval: 15s\nfleet: {{down_after: 2m}}\n",
        dir.join("state").display(),
    );
    edgewatch_config::parse(&yaml, "aggregator.yml").unwrap()
}

/// A process on the state dir: its sled db at `db_path`, an empty store, the
/// rules engine over both.
fn start(cfg: &AggregatorConfig, db_path: &Path) -> (sled::Db, Arc<Store>, RuleEngine) {
    let db = edgewatch_testkit::open_sled(db_path);
    let store = Arc::new(Store::new(StoreOptions::default(), &Registry::new()));
    let engine = RuleEngine::load(cfg, store.clone(), &db, &Registry::new()).unwrap();
    (db, store, engine)
}

/// Whether the sled tree `tree` holds `key`.
fn holds(db: &sled::Db, tree: &str, key: &[u8]) -> bool {
    db.open_tree(tree).unwrap().get(key).unwrap().is_some()
}

/// (alertname, node) of every active alert.
fn alerts(engine: &RuleEngine) -> Vec<(String, String)> {
    engine.alerts_json()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                a["labels"]["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The last-seen series at `now`: (node, value).
fn last_seen(store: &Store, now: i64) -> Vec<(String, f64)> {
    store
        .samples(&Selector::parse(LAST_SEEN).unwrap(), now - 1, now, now)
        .into_iter()
        .map(|s| {
            let node = s.labels.iter().find(|(k, _)| k == "node").unwrap();
            (node.1.clone(), s.samples.last().unwrap().1)
        })
        .collect()
}

fn collector_info(store: &Store, node: &str, ts: i64) {
    let f = store.family("edgewatch_collector_info", MetricType::Gauge, "", "");
    let labels = [
        ("cluster", "edge-a"),
        ("node", node),
        ("instance_id", "x"),
        ("version", "1"),
    ];
    store.write(f, "edgewatch_collector_info", &labels, 1.0, ts, ts);
}

#[test]
fn last_seen_survives_a_restart_in_the_fleet_tree() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let db_path = dir.path().join("state");
    {
        let (db, s, e) = start(&cfg, &db_path);
        collector_info(&s, "n1", T0);
        assert!(e.evaluate_all(T0).is_empty());
        assert!(holds(&db, "fleet", b"last_seen"));
        db.flush().unwrap();
    }
    // A new process: the store is empty, the collector silent since T0.
    let (_db, s, e) = start(&cfg, &db_path);
    let now = T0 + 3 * MIN;
    let sent = e.evaluate_all(now);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        alerts(&e),
        vec![("EdgeCollectorDown".to_owned(), "n1".to_owned())]
    );
    assert_eq!(
        last_seen(&s, now),
        vec![("n1".to_owned(), T0 as f64 / 1000.0)]
    );
}

#[test]
fn state_in_the_old_layout_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let db_path = dir.path().join("state");
    {
        // As older versions wrote it: JSON under `\x00fleet/last_seen` in `rules`.
        let db = sled::open(&db_path).unwrap();
        let old = serde_json::json!({"collectors": {
            "edge-a\u{0}n2": [[["cluster", "edge-a"], ["instance_id", "x"], ["node", "n2"]], T0]
        }});
        db.open_tree("rules")
            .unwrap()
            .insert(b"\x00fleet/last_seen", serde_json::to_vec(&old).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let (db, s, e) = start(&cfg, &db_path);
    assert!(!holds(&db, "rules", b"\x00fleet/last_seen"));
    assert!(holds(&db, "fleet", b"last_seen"));
    // Within down_after: written, not firing; past it: firing.
    assert!(e.evaluate_all(T0 + MIN).is_empty());
    assert_eq!(
        last_seen(&s, T0 + MIN),
        vec![("n2".to_owned(), T0 as f64 / 1000.0)]
    );
    assert_eq!(e.evaluate_all(T0 + 3 * MIN).len(), 1);
    assert_eq!(
        alerts(&e),
        vec![("EdgeCollectorDown".to_owned(), "n2".to_owned())]
    );
}

#[test]
fn a_state_already_in_the_fleet_tree_wins_over_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let db_path = dir.path().join("state");
    let state = |node: &str| {
        serde_json::to_vec(&serde_json::json!({"collectors": {
            format!("edge-a\u{0}{node}"): [[["cluster", "edge-a"], ["node", node]], T0]
        }}))
        .unwrap()
    };
    {
        let db = sled::open(&db_path).unwrap();
        let rules = db.open_tree("rules").unwrap();
        rules.insert(b"\x00fleet/last_seen", state("old")).unwrap();
        let fleet = db.open_tree("fleet").unwrap();
        fleet.insert("last_seen", state("new")).unwrap();
        db.flush().unwrap();
    }
    let (db, s, e) = start(&cfg, &db_path);
    e.evaluate_all(T0 + MIN);
    assert_eq!(
        last_seen(&s, T0 + MIN),
        vec![("new".to_owned(), T0 as f64 / 1000.0)]
    );
    assert!(!holds(&db, "rules", b"\x00fleet/last_seen"));
}

#[test]
fn a_collector_silent_for_a_day_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (_db, s, e) = start(&cfg, &dir.path().join("state"));
    collector_info(&s, "n1", T0);
    e.evaluate_all(T0);
    let day = 24 * 60 * MIN;
    assert_eq!(e.evaluate_all(T0 + day - MIN).len(), 1);
    assert_eq!(last_seen(&s, T0 + day - MIN).len(), 1);
    // Forgotten: the series is gone and the alert resolves.
    let sent = e.evaluate_all(T0 + day + MIN);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].ends_at.is_some());
    assert!(last_seen(&s, T0 + day + MIN).is_empty());
    assert!(alerts(&e).is_empty());
}

/// With `fleet.clusters`, only owned clusters' collectors are tracked: edge-a moved
/// to another aggregator (restart with a list without it) is forgotten at once, not
/// reported down here for a day, and its new reports are not tracked here either.
#[test]
fn a_cluster_no_longer_owned_is_forgotten_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("state");
    {
        let (db, s, e) = start(&config(dir.path()), &db_path);
        collector_info(&s, "n1", T0);
        e.evaluate_all(T0);
        assert_eq!(last_seen(&s, T0).len(), 1);
        db.flush().unwrap();
    }
    let mut cfg = config(dir.path());
    cfg.fleet.clusters = vec!["edge-b".into()];
    let (_db, s, e) = start(&cfg, &db_path);
    let now = T0 + 3 * MIN;
    collector_info(&s, "n2", now);
    assert!(e.evaluate_all(now).is_empty());
    assert!(alerts(&e).is_empty());
    assert!(last_seen(&s, now).is_empty());
}
