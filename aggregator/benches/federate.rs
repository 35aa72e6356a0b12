//! Selecting and rendering 100,000 series for /federate.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch_aggregator::expose::{render, Format};
use edgewatch_aggregator::store::{MetricType, Selector, Store, StoreOptions};

pub fn fill(store: &Store, n: usize) {
    let fams: Vec<_> = (0..100)
        .map(|m| {
            store.family(
                &format!("model_metric_{m}_total"),
                MetricType::Counter,
                "A model metric.",
                "",
            )
        })
        .collect();
    for i in 0..n {
        let m = i % 100;
        let pod = i / 100;
        let pod_s = format!("ovms-{pod}-7f9c8d6b5-x2k4q");
        store.write(
            fams[m],
            &format!("model_metric_{m}_total"),
            &[
                ("job", "edge/ovms"),
                ("instance", &format!("{pod_s}:8080")),
                ("cluster", &format!("edge-cluster-{}", pod / 500)),
                ("node", &format!("edge-node-{}", pod / 10)),
                ("pod", &pod_s),
                ("model", &format!("model-{}", pod % 37)),
                ("otel_scope_name", "edgewatch.collector"),
            ],
            i as f64 * 1.5,
            1_700_000_000_123,
            1,
        );
    }
}

fn bench(c: &mut Criterion) {
    let store = Store::new(StoreOptions::default(), &prometheus::Registry::new());
    let n = 100_000;
    fill(&store, n);
    let sel = Selector::parse(r#"{job=~".+"}"#).unwrap();
    let mut g = c.benchmark_group("federate");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    for (name, f) in [
        ("text_100k", Format::Text),
        ("openmetrics_100k", Format::OpenMetrics),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let s = store.select(&sel, 2);
                let mut out = Vec::new();
                render(&s, f, &mut out);
                assert_eq!(s.len(), n);
                out.len()
            })
        });
    }
    g.bench_function("select_only_100k", |b| {
        b.iter(|| store.select(&sel, 2).len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
