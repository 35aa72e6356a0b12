//! The relabeling table run by real Prometheus (Debian's 2.42): each case is a
//! scrape job with one static target whose labels are the case's input and
//! whose `relabel_configs` are the case's rules. Prometheus' target labels
//! (before and after relabeling, from `/api/v1/targets`) must be what
//! [`process`] makes of the same discovered labels; and `promtool` must refuse
//! every rule the config refuses.

mod relabel_cases;

use std::collections::BTreeMap;
use std::time::Duration;

use edgewatch_testkit::peers::{promtool_check_config, Prometheus};
use edgewatch_testkit::{eventually, free_port, get, write};
use relabel_cases::{run, yaml_list_indented, CASES, INVALID};
use serde_json::Value;

fn job(i: usize) -> String {
    format!("case_{i}")
}

/// One job per case; the target is Prometheus itself, which is never scraped
/// within the test (hourly interval): only its labels matter.
fn config(port: u16) -> String {
    let mut cfg = String::from("global:\n  scrape_interval: 1h\nscrape_configs:\n");
    for (i, case) in CASES.iter().enumerate() {
        let labels: BTreeMap<&str, &str> = case.input.iter().copied().collect();
        cfg += &format!(
            "- job_name: {}\n  static_configs:\n  - targets: ['127.0.0.1:{port}']\n    labels: {}\n  relabel_configs:\n{}",
            job(i),
            serde_json::to_string(&labels).unwrap(),
            yaml_list_indented(case.rules, "  "),
        );
    }
    cfg
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    let map = v.as_object().expect("a label object");
    map.iter()
        .map(|(n, v)| (n.clone(), v.as_str().expect("a string value").to_owned()))
        .collect()
}

/// What Prometheus shows of a kept target after relabeling: no `__` labels,
/// `instance` defaulting to the address.
fn visible(relabeled: Vec<(String, String)>) -> BTreeMap<String, String> {
    let address = relabeled
        .iter()
        .find(|(n, _)| n == "__address__")
        .map(|(_, v)| v.clone())
        .expect("the table keeps __address__");
    let mut out: BTreeMap<String, String> = relabeled
        .into_iter()
        .filter(|(n, _)| !n.starts_with("__"))
        .collect();
    out.entry("instance".into()).or_insert(address);
    out
}

/// `/api/v1/targets?state=any` once every job's target is listed.
async fn all_targets(prom: &Prometheus) -> (Vec<Value>, Vec<Value>) {
    let url = prom.url("/api/v1/targets?state=any");
    eventually(
        Duration::from_secs(60),
        "every job in /api/v1/targets",
        || {
            let url = url.clone();
            async move {
                let (status, body) = get(&url).await?;
                let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
                let active = v["data"]["activeTargets"].as_array()?.clone();
                let dropped = v["data"]["droppedTargets"].as_array()?.clone();
                (active.len() + dropped.len() == CASES.len()).then_some((active, dropped))
            }
        },
    )
    .await
}

#[tokio::test]
async fn table_agrees_with_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prom = Prometheus::start_on(dir.path(), port, &config(port), &[]).await;
    let (active, dropped) = all_targets(&prom).await;

    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let in_job = |t: &&Value| t["discoveredLabels"]["job"] == job(i).as_str();
        let kept = active.iter().find(in_job);
        let target = kept
            .or_else(|| dropped.iter().find(in_job))
            .unwrap_or_else(|| panic!("{}: no target for {}", case.name, job(i)));
        let ours = run(case.rules, &pairs(&target["discoveredLabels"]));
        let agree = match (kept, ours) {
            (Some(t), Some(ours)) => {
                let theirs: BTreeMap<String, String> = pairs(&t["labels"]).into_iter().collect();
                let ours = visible(ours);
                (theirs == ours)
                    .then_some(())
                    .ok_or(format!("Prometheus {theirs:?}, ours {ours:?}"))
            }
            (None, None) => Ok(()),
            (Some(_), None) => Err("Prometheus keeps the target, we drop it".into()),
            (None, Some(ours)) => Err(format!("Prometheus drops the target, we keep {ours:?}")),
        };
        if let Err(e) = agree {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn promtool_refuses_the_invalid_rules() {
    let dir = tempfile::tempdir().unwrap();
    let valid = dir.path().join("valid.yml");
    write(&valid, &config(9));
    assert_eq!(
        promtool_check_config(&valid),
        Ok(()),
        "the table's rules are valid"
    );
    for (i, (rule, _)) in INVALID.iter().enumerate() {
        let file = dir.path().join(format!("invalid_{i}.yml"));
        write(
            &file,
            &format!(
                "scrape_configs:\n- job_name: j\n  static_configs:\n  - targets: ['127.0.0.1:9']\n  relabel_configs:\n{}",
                yaml_list_indented(&[rule], "  ")
            ),
        );
        assert!(
            promtool_check_config(&file).is_err(),
            "promtool accepts {rule}"
        );
    }
}
