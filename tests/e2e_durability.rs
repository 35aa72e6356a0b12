//! The collector's buffer under faults, with real processes: a disk cap with
//! drop-oldest and with backpressure, garbage over the buffer files, a full disk.

use edgewatch_testkit::otlp::{gauge_request, post_otlp};
use edgewatch_testkit::roles::{Aggregator, Collector};
use edgewatch_testkit::{
    disk_usage, eventually, free_port, get, parse_samples, wait_ready, write, Proc,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const POINTS: usize = 500;

/// The collector `col` of node `n1` in cluster `edge-a`, forwarding to `agg_port`;
/// `buffer_extra` is appended to its `buffer:` block.
async fn edge_collector(dir: &Path, agg_port: u16, buffer_extra: &str) -> Collector {
    Collector::start(BIN, dir, "col", "edge-a", "n1", agg_port, buffer_extra).await
}

/// Sends `n` requests of POINTS random-valued points, 8 at a time; returns the statuses.
async fn flood(port: u16, metric: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let mut out = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let sends = chunk
            .iter()
            .map(|i| post_otlp(port, gauge_request(metric, &format!("r{i}"), POINTS)));
        out.extend(futures::future::join_all(sends).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_disk_under_the_cap_and_counts_every_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg_port = free_port(); // the core is down for now
    let cap: u64 = 2 << 20;
    let col = edge_collector(dir.path(), agg_port, "  max_bytes: 2MiB\n").await;

    let statuses = flood(col.http, "cap_test", 600).await;
    assert!(
        statuses.iter().all(|(s, _)| *s == 200),
        "drop_oldest never refuses: {statuses:?}"
    );
    let on_disk = disk_usage(&col.buffer_dir());
    assert!(
        on_disk <= cap + cap / 10,
        "buffer uses {on_disk} bytes on disk, cap {cap}"
    );

    let received = col.metrics().await.get("edgewatch_received_points_total");
    assert_eq!(received, (600 * POINTS) as f64);
    // The gauges follow the writer's cycles: wait for them to settle.
    let (dropped, held, all_dropped) = eventually(
        Duration::from_secs(10),
        "every received point to be held or counted as dropped",
        || async {
            let m = col.metrics().await;
            let dropped = m.get(r#"edgewatch_buffer_dropped_points_total{reason="full"}"#);
            let held = m.get("edgewatch_buffer_entries") * POINTS as f64;
            let all = m.sum("edgewatch_buffer_dropped_points_total");
            (dropped + held == received).then_some((dropped, held, all))
        },
    )
    .await;
    assert!(dropped > 0.0, "a 2 MiB cap cannot hold 300k random points");
    assert_eq!(
        all_dropped, dropped,
        "the cap is the only reason points were dropped"
    );

    // The core comes back: exactly what was held arrives.
    let agg = Aggregator::start_with_grpc(BIN, dir.path(), agg_port).await;
    eventually(Duration::from_secs(60), "the buffer to drain", || async {
        col.metrics().await.get("edgewatch_buffer_entries") == 0.0
    })
    .await;
    let ingested = agg.metrics().await.get("edgewatch_ingest_points_total");
    assert_eq!(
        ingested, held,
        "the aggregator got exactly the points the buffer held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_refuses_with_retry_after_and_an_sdk_retries_until_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg_port = free_port();
    let col = edge_collector(
        dir.path(),
        agg_port,
        "  max_bytes: 1MiB\n  full_policy: backpressure\n",
    )
    .await;

    let statuses = flood(col.http, "bp_test", 200).await;
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(
        !refused.is_empty(),
        "a full buffer refuses in backpressure mode"
    );
    assert!(
        refused.iter().all(|(_, r)| r.is_some()),
        "429 carries Retry-After"
    );
    let accepted = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        col.metrics().await.get("edgewatch_received_points_total"),
        (accepted * POINTS) as f64
    );
    assert_eq!(
        col.metrics()
            .await
            .sum("edgewatch_buffer_dropped_points_total"),
        0.0,
        "nothing accepted is dropped"
    );
    assert!(
        col.metrics()
            .await
            .get(r#"edgewatch_refused_points_total{reason="buffer_full"}"#)
            > 0.0
    );

    // An OpenTelemetry SDK exporter with retries gets RESOURCE_EXHAUSTED, backs off,
    // and succeeds once there is room (`force_flush` fails if every attempt failed).
    // The buffer frees a little space as it compacts (an SDK request could then fit
    // and never be refused), so one-point requests keep it full until the SDK was
    // refused: refusals beyond the filler's own are the SDK's.
    let full_requests = || async {
        col.metrics()
            .await
            .get(r#"edgewatch_received_requests_total{outcome="buffer_full"}"#)
    };
    // Compaction can still free room between the filler's last refusal and the SDK's
    // first attempt, and then the SDK is accepted at once: that attempt proves nothing,
    // so the test tries again (its point is in the buffer and reaches the core too).
    let endpoint = format!("http://127.0.0.1:{}", col.grpc);
    let mut sdk = None;
    for _ in 0..5 {
        let refused_before = refuse_one_point(col.http, &full_requests).await;
        let e = endpoint.clone();
        let attempt = tokio::task::spawn_blocking(move || sdk_send_with_retry(e));
        if sdk_is_refused(col.http, &full_requests, refused_before, &attempt).await {
            sdk = Some(attempt);
            break;
        }
        attempt.await.expect("sdk thread");
    }
    let sdk = sdk.expect("the SDK was refused in one of 5 attempts");
    let agg = Aggregator::start_with_grpc(BIN, dir.path(), agg_port).await;
    sdk.await.expect("sdk thread");
    let text = eventually(
        Duration::from_secs(60),
        "the SDK's metric at the core",
        || async {
            let t = agg.federate("bp_sdk_total").await;
            (!t.is_empty()).then_some(t)
        },
    )
    .await;
    assert!(text.contains("bp_sdk_total{"), "{text}");
}

/// Fills the buffer with one-point requests until one is refused; returns the count of
/// refused requests then.
async fn refuse_one_point<F, Fut>(http: u16, full_requests: &F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut fills = 0;
    while post_otlp(http, gauge_request("bp_fill", "f", 1)).await.0 != 429 {
        fills += 1;
        assert!(fills < 100_000, "a full buffer refuses one point");
    }
    full_requests().await
}

/// Keeps the buffer full (one-point requests) until a refusal beyond the filler's own
/// is counted — the SDK's (true) — or the SDK finished without one (false).
async fn sdk_is_refused<F, Fut>(
    http: u16,
    full_requests: &F,
    refused_before: f64,
    sdk: &tokio::task::JoinHandle<()>,
) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut filler_refused = 0.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while full_requests().await - refused_before - filler_refused < 1.0 {
        if sdk.is_finished() {
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the SDK was neither refused nor accepted in 30 s"
        );
        if post_otlp(http, gauge_request("bp_fill", "f", 1)).await.0 == 429 {
            filler_refused += 1.0;
        }
    }
    true
}

fn sdk_send_with_retry(endpoint: String) {
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithTonicConfig};
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(60))
        .with_retry_policy(
            RetryPolicy::recommended()
                .with_max_retries(100)
                .with_initial_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(1)),
        )
        .build()
        .expect("exporter");
    let provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let c = provider.meter("bp").u64_counter("bp_sdk").build();
    c.add(1, &[]);
    provider
        .force_flush()
        .expect("the SDK's export eventually succeeds");
    let _ = provider.shutdown();
}

fn overwrite_with_garbage(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("buffer dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            n += overwrite_with_garbage(&p);
        } else {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0).max(64) as usize;
            let junk: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
            std::fs::write(&p, junk).expect("overwrite");
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_the_buffer_files_is_moved_aside_and_ingest_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg_port = free_port();
    let mut col = edge_collector(dir.path(), agg_port, "").await;
    assert!(flood(col.http, "before", 10)
        .await
        .iter()
        .all(|(s, _)| *s == 200));
    col.proc.kill();
    let buffer = col.buffer_dir();
    assert!(overwrite_with_garbage(&buffer) > 0);
    col.respawn(dir.path()).await;
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("col-buffer.corrupt-")
        })
        .collect();
    assert_eq!(moved.len(), 1, "the corrupt buffer was moved aside once");
    assert_eq!(
        col.metrics()
            .await
            .get("edgewatch_buffer_corruptions_total"),
        1.0
    );
    assert!(
        col.proc.log_text().contains("corrupt"),
        "the log says what happened"
    );

    assert!(flood(col.http, "after", 3)
        .await
        .iter()
        .all(|(s, _)| *s == 200));
    let agg = Aggregator::start_with_grpc(BIN, dir.path(), agg_port).await;
    let samples = eventually(
        Duration::from_secs(30),
        "the new data at the core",
        || async {
            let s = parse_samples(&agg.federate("after").await);
            (s.len() == 3 * POINTS).then_some(s)
        },
    )
    .await;
    assert!(samples.iter().all(|s| s.label("cluster") == "edge-a"));
}

/// A tmpfs of a few MiB that is unmounted when dropped.
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(path: &Path, size: &str) -> TinyDisk {
        std::fs::create_dir_all(path).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        TinyDisk(path.to_path_buf())
    }

    fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(st.success());
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_retryable_errors_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = TinyDisk::mount(&dir.path().join("disk"), "3m");
    let agg_port = free_port();
    let yaml = dir.path().join("col.yaml");
    let admin = free_port();
    let http = free_port();
    write(
        &yaml,
        &format!(
            "cluster: edge-a\nnode: n1\nreceivers:\n  otlp:\n    http: 127.0.0.1:{http}\nbuffer:\n  path: {}\n  max_bytes: 1GiB\nforward:\n  endpoint: http://127.0.0.1:{agg_port}\nadmin:\n  listen: 127.0.0.1:{admin}\n  self_metrics_interval: 0\n",
            disk.0.join("buffer").display()
        ),
    );
    let mut col_proc = Proc::spawn(
        "col",
        BIN,
        &["collector", "--config", yaml.to_str().expect("utf-8")],
        dir.path(),
    );
    wait_ready(&format!("http://127.0.0.1:{admin}/readyz")).await;

    let mut accepted = 0usize;
    let mut unavailable = 0usize;
    for i in 0..400 {
        match post_otlp(http, gauge_request("full_test", &format!("r{i}"), POINTS)).await {
            (200, _) => accepted += 1,
            (503, retry) => {
                assert!(retry.is_some(), "503 carries Retry-After");
                unavailable += 1;
                if unavailable >= 3 {
                    break;
                }
            }
            other => panic!("a full disk must answer a retryable status, got {other:?}"),
        }
    }
    assert!(unavailable > 0, "3 MiB filled up");
    let (ready, _) = get(&format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready, 503, "not ready while the buffer cannot write");

    disk.grow("64m");
    // Recovery reopens the active segment; on a busy 2-core CI host this took over 20 s once.
    eventually(
        Duration::from_secs(60),
        "writes to succeed again",
        || async {
            let (s, _) = post_otlp(http, gauge_request("full_test", "again", POINTS)).await;
            s == 200
        },
    )
    .await;
    accepted += 1;
    wait_ready(&format!("http://127.0.0.1:{admin}/readyz")).await;

    let agg = Aggregator::start_with_grpc(BIN, dir.path(), agg_port).await;
    eventually(
        Duration::from_secs(60),
        "every accepted point at the core",
        || async {
            agg.metrics().await.get("edgewatch_ingest_points_total") == (accepted * POINTS) as f64
        },
    )
    .await;
    // A full disk episode must not keep the collector from stopping cleanly.
    col_proc.stop();
}
