//! The receive path before the buffer: decode + check + count + stamp +
//! re-encode of an OTLP request, as the collector does it (shallow: scope
//! metrics stay slices of the body) and, for comparison, with a full prost
//! decode. `cargo bench -p edgewatch-collector --bench ingest`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch_collector::enrich::Stamp;
use edgewatch_testkit::payloads as testdata;
use prost::Message;

fn bench(c: &mut Criterion) {
    let stamp = Stamp::new("edge-a", "node-1");
    let mut g = c.benchmark_group("ingest");
    for (name, body) in [
        ("random_100_points", testdata::otlp_100_points(1)),
        ("typical_100_points", testdata::otlp_100_points_typical(1)),
    ] {
        let body = Bytes::from(body);
        g.throughput(Throughput::Elements(100));
        g.bench_function(format!("shallow_{name}"), |b| {
            b.iter(|| {
                let (mut req, points) =
                    edgewatch_otlp::shallow::decode_shallow(body.clone()).expect("valid");
                stamp.apply(req.resource_metrics.iter_mut().map(|rm| &mut rm.resource));
                (points, req.encode_to_vec())
            })
        });
        g.bench_function(format!("prost_full_{name}"), |b| {
            b.iter(|| {
                let mut req = edgewatch_otlp::decode_request(&body).expect("valid");
                let points = edgewatch_otlp::count_points(&req);
                stamp.apply(req.resource_metrics.iter_mut().map(|rm| &mut rm.resource));
                (points, req.encode_to_vec())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
