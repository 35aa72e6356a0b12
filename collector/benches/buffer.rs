//! Durable queue throughput: append (+ group-commit flush) of realistic
//! 100-point OTLP payloads with 1 and 16 concurrent appenders, and read
//! (decompress) throughput. `cargo bench -p edgewatch-collector --bench buffer`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch_collector::buffer::{Buffer, BufferOptions, FullPolicy};
use edgewatch_testkit::payloads as testdata;
use std::time::{Duration, Instant};

fn open(dir: &std::path::Path) -> Buffer {
    Buffer::open(
        BufferOptions {
            path: dir.join("q"),
            max_bytes: 4 << 30,
            full_policy: FullPolicy::DropOldest,
            max_age: None,
        },
        &prometheus::Registry::new(),
    )
    .expect("open buffer")
}

fn payloads() -> Vec<Bytes> {
    (0..256)
        .map(|i| Bytes::from(testdata::otlp_100_points(i)))
        .collect()
}

fn bench_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ps = payloads();
    let mut g = c.benchmark_group("buffer_append");
    g.throughput(Throughput::Elements(100)); // data points per append
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for appenders in [1u64, 16] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let b = open(tmp.path());
        g.bench_function(format!("{appenders}_appenders_100_points"), |bn| {
            bn.iter_custom(|iters| {
                let per = iters.div_ceil(appenders);
                let t = Instant::now();
                rt.block_on(async {
                    let mut tasks = Vec::new();
                    for a in 0..appenders {
                        let b = b.clone();
                        let ps = ps.clone();
                        tasks.push(tokio::spawn(async move {
                            for i in 0..per {
                                let p = ps[((a * per + i) % ps.len() as u64) as usize].clone();
                                b.append(100, p).await.expect("append");
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.expect("join");
                    }
                });
                // Report per append (iters may be rounded up to a multiple).
                t.elapsed().mul_f64(iters as f64 / (per * appenders) as f64)
            })
        });
        b.close();
    }
    g.finish();
}

fn bench_read(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let b = open(tmp.path());
    let ps = payloads();
    const N: u64 = 4000;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for a in 0..16u64 {
            let b = b.clone();
            let ps = ps.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..N / 16 {
                    b.append(100, ps[((a * 16 + i) % 256) as usize].clone())
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
    });
    let mut g = c.benchmark_group("buffer_read");
    g.throughput(Throughput::Elements(N * 100));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("read_4000x100_points_in_500_entry_chunks", |bn| {
        bn.iter(|| {
            let mut from = 0;
            let mut n = 0;
            loop {
                let got = b.read(from, 500, 16 << 20).expect("read");
                let Some(last) = got.last() else { break };
                from = last.seq + 1;
                n += got.len();
            }
            assert_eq!(n as u64, N);
        })
    });
    g.finish();
    b.close();
}

criterion_group!(benches, bench_append, bench_read);
criterion_main!(benches);
