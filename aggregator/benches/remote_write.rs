//! Remote write throughput on one core: a backlog of model-server shaped samples in
//! the write-ahead log, drained by one writer into a sink that only counts bytes.
//! The writer runs on this thread alone (a current-thread runtime); the sink runs on
//! another thread, so the CPU time reported is the writer's: log reading, encoding,
//! compression and HTTP.
//!
//! `cargo bench -p edgewatch-aggregator --bench remote_write`

use edgewatch_aggregator::remote::{Metrics, Options, RemoteWriter};
use edgewatch_aggregator::store::{MetricType, Store, StoreOptions};
use edgewatch_aggregator::wal::record::RecordBuilder;
use edgewatch_aggregator::wal::Wal;
use prometheus::Registry;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SAMPLES: usize = 2_000_000;
/// Samples per log record (one forwarded batch).
const PER_RECORD: usize = 2_000;

fn main() {
    let sink = start_sink();
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::new();
    let wal = Wal::open(&dir.path().join("wal"), &registry).expect("log");
    let metrics = Metrics::register(&registry).expect("metrics");
    let reader = wal.reader("bench", &sink).expect("reader");
    fill(&wal);
    let cfg: edgewatch_config::remote_write::RemoteWriteConfig = serde_yaml_ng::from_str(&format!(
        "url: {sink}\nname: bench\nmetadata_config: {{send: false}}\n\
         queue_config: {{min_shards: 4, max_shards: 4, batch_send_deadline: 50ms}}\n"
    ))
    .expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stop = CancellationToken::new();
    let cpu0 = thread_cpu();
    let started = Instant::now();
    rt.block_on(async {
        let h = RemoteWriter::start(&cfg, reader, &metrics, stop.clone(), Options::default())
            .expect("writer");
        let sent = registry_counter(&registry);
        while sent() < SAMPLES as f64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        let _ = h.await;
    });
    let wall = started.elapsed();
    let cpu = thread_cpu() - cpu0;
    println!(
        "remote write: {SAMPLES} samples in {wall:.2?} wall, {cpu:.2?} CPU of the writer's thread: \
         {:.2} M samples/s per core ({:.2} M/s wall)",
        SAMPLES as f64 / cpu.as_secs_f64() / 1e6,
        SAMPLES as f64 / wall.as_secs_f64() / 1e6
    );
}

/// Appends the backlog: 100 metrics × 1,000 pods, 7 labels each.
fn fill(wal: &Wal) {
    let store = Store::new(StoreOptions::default(), &Registry::new());
    let names: Vec<String> = (0..100).map(|m| format!("ovms_metric_{m}_total")).collect();
    let fams: Vec<_> = names
        .iter()
        .map(|n| store.family(n, MetricType::Counter, "A model metric.", ""))
        .collect();
    let pods: Vec<String> = (0..1000)
        .map(|p| format!("ovms-{p}-7f9c8d6b5-x2k4q"))
        .collect();
    let instances: Vec<String> = pods.iter().map(|p| format!("{p}:8080")).collect();
    let nodes: Vec<String> = (0..100).map(|n| format!("edge-node-{n}")).collect();
    let mut b = RecordBuilder::default();
    for i in 0..SAMPLES {
        let pod = i / 100 % 1000;
        let m = i % 100;
        let labels = [
            ("job", "edge/ovms"),
            ("instance", instances[pod].as_str()),
            ("k8s_cluster_name", "edge-cluster-1"),
            ("k8s_node_name", nodes[pod / 10].as_str()),
            ("pod", pods[pod].as_str()),
            ("model", "resnet-50"),
            ("otel_scope_name", "edgewatch.collector"),
        ];
        b.push(
            fams[m],
            || store.family_meta(&names[m]).expect("registered"),
            &names[m],
            &labels,
            i as f64,
            1_700_000_000_000 + (i / 100_000) as i64 * 15_000,
        );
        if b.samples() as usize == PER_RECORD {
            wal.append_durable(Some(b.finish(0)), None).expect("append");
        }
    }
}

fn registry_counter(registry: &Registry) -> impl Fn() -> f64 + '_ {
    move || {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "edgewatch_remote_write_samples_total")
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
            .sum()
    }
}

/// A sink on its own thread that answers 204 to every request.
fn start_sink() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("sink runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("address"))
                .expect("send address");
            let app = axum::Router::new()
                .fallback(|_body: axum::body::Bytes| async { axum::http::StatusCode::NO_CONTENT });
            axum::serve(listener, app).await.expect("sink");
        });
    });
    let addr = rx.recv().expect("sink address");
    format!("http://{addr}/api/v1/write")
}

/// CPU time of the calling thread (user + system), from /proc.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<i64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // `rest` starts at field 3 (the state, not a number): utime is f[10], in 1/100 s.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks.max(0) as u64 * 10)
}
