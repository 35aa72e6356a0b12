//! One evaluation round of 1,000 alerting rules over 100,000 series (target: ≤ 250 ms
//! on one core). Series: 100 counters × 1,000 pods, 20 samples each in the window.

use criterion::{criterion_group, criterion_main, Criterion};
use edgewatch_aggregator::rules::RuleEngine;
use edgewatch_aggregator::store::{MetricType, Store, StoreOptions};
use std::sync::Arc;
use std::time::Duration;

const NOW: i64 = 1_700_000_300_000;

/// Rules of the shapes operators write: thresholds on instant vectors, rates,
/// aggregations by cluster and node, ratios between two metrics.
fn rule_file() -> String {
    let mut y = String::from("groups:\n");
    for g in 0..10 {
        y.push_str(&format!("  - name: g{g}\n    rules:\n"));
        for r in 0..100 {
            let i = g * 100 + r;
            let m = i % 100;
            let n = (i + 1) % 100;
            let expr = match i % 5 {
                0 => format!("model_metric_{m}_total{{cluster=\"edge-cluster-1\"}} > 1e9"),
                1 => format!("rate(model_metric_{m}_total[2m]) > 1e6"),
                2 => format!("sum by (cluster) (rate(model_metric_{m}_total[2m])) > 1e9"),
                3 => format!("max by (node) (model_metric_{m}_total) > 1e12"),
                _ => format!(
                    "sum by (model) (increase(model_metric_{m}_total[2m])) / sum by (model) (increase(model_metric_{n}_total[2m])) > 1e6"
                ),
            };
            y.push_str(&format!(
                "      - alert: A{i}\n        expr: {expr}\n        for: 1m\n"
            ));
        }
    }
    y
}

fn fill(store: &Store) {
    let fams: Vec<_> = (0..100)
        .map(|m| {
            store.family(
                &format!("model_metric_{m}_total"),
                MetricType::Counter,
                "",
                "",
            )
        })
        .collect();
    for step in 0..20i64 {
        let ts = NOW - (19 - step) * 15_000;
        for i in 0..100_000usize {
            let m = i % 100;
            let pod = i / 100;
            let pod_s = format!("ovms-{pod}");
            store.write(
                fams[m],
                &format!("model_metric_{m}_total"),
                &[
                    ("job", "ovms"),
                    ("instance", &pod_s),
                    ("cluster", &format!("edge-cluster-{}", pod / 50)),
                    ("node", &format!("edge-node-{}", pod / 5)),
                    ("model", &format!("model-{}", pod % 37)),
                ],
                (step as f64 + 1.0) * (i % 7 + 1) as f64,
                ts,
                ts,
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, rule_file()).expect("rule file");
    let yaml = format!(
        "http:\n  listen: 127.0.0.1:0\nstate:\n  path: {}\nrule_files: [{}]\n",
        dir.path().join("state").display(),
        rules.display()
    );
    let cfg: edgewatch_config::AggregatorConfig =
        edgewatch_config::parse(&yaml, "bench").expect("config");
    let registry = prometheus::Registry::new();
    let store = Arc::new(Store::new(
        StoreOptions {
            staleness: Duration::from_secs(3600),
        },
        &registry,
    ));
    let state = sled::Config::new().temporary(true).open().expect("sled");
    let engine = RuleEngine::load(&cfg, store.clone(), &state, &registry).expect("rules load");
    fill(&store);
    let mut g = c.benchmark_group("rules");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("1000_rules_100k_series", |b| {
        b.iter(|| engine.evaluate_all(NOW))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
