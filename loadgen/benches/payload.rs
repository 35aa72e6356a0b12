//! Payload build throughput of the load generator (no network).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch_loadgen::PayloadBuilder;

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen_payload");
    for (batch, sequence) in [(100usize, false), (1000, false), (100, true)] {
        let b = PayloadBuilder::new(1000, batch, sequence, "bench", 1);
        g.throughput(Throughput::Elements(batch as u64));
        let mut k = 0u64;
        g.bench_function(format!("batch{batch}_sequence{sequence}"), |bench| {
            bench.iter(|| {
                let mut buf = bytes::BytesMut::with_capacity(b.max_request_len());
                b.build(k, 1_700_000_000_000_000_000 + k, &mut buf);
                k += 1;
                buf.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);
