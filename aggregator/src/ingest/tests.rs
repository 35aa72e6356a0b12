//! Ingest with the write-ahead log: an answer means durable, a failed append means
//! "retry" and moves nothing, a replay after a restart is recognised.

use super::*;
use crate::store::StoreOptions;
use edgewatch_testkit::otlp::gauge_request;

struct Core {
    store: Arc<Store>,
    wal: Arc<Wal>,
    sink: IngestSink,
    registry: Registry,
}

fn core(path: &std::path::Path) -> Core {
    core_with(path, 4 << 20)
}

fn core_with(path: &std::path::Path, max_request_bytes: usize) -> Core {
    let registry = Registry::new();
    let store = Arc::new(Store::new(StoreOptions::default(), &registry));
    let mut wal = Wal::open(path, &registry);
    for _ in 0..100 {
        // A previous handle's file lock goes a moment after it is dropped.
        if wal.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        wal = Wal::open(path, &Registry::new());
    }
    let wal = wal.expect("opening the log");
    store.set_wal(wal.clone());
    let gate = Gate::new(identity::Policy::default(), &registry).expect("gate");
    let sink = IngestSink::new(
        store.clone(),
        wal.clone(),
        max_request_bytes,
        gate,
        &registry,
    )
    .expect("sink");
    Core {
        store,
        wal,
        sink,
        registry,
    }
}

fn batch(collector: &str, first_seq: u64, entries: &[Vec<u8>]) -> (Bytes, ExportContext) {
    let body: Vec<u8> = entries.concat();
    let ctx = ExportContext {
        peer: None,
        batch: Some(BatchInfo {
            collector_id: collector.into(),
            first_seq,
            entry_lens: entries.iter().map(Vec::len).collect(),
            floor: first_seq,
        }),
        ..ExportContext::default()
    };
    (Bytes::from(body), ctx)
}

fn counter(c: &Core, name: &str) -> f64 {
    edgewatch_testkit::Metrics::from_registry(&c.registry).get(name)
}

#[tokio::test]
async fn an_answer_means_durable_and_a_replay_after_restart_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let entries = [gauge_request("g", "a", 10), gauge_request("g", "b", 5)];
    {
        let c = core(&path);
        let (body, ctx) = batch("col-1", 0, &entries);
        assert_eq!(
            c.sink.export(body, ctx).await.unwrap(),
            ExportOutcome::default()
        );
        assert_eq!(c.store.series_count(), 15);
        c.wal.close();
    }
    let c = core(&path);
    let mut replayed = 0;
    c.wal.replay(i64::MIN, |r| replayed += r.len());
    assert_eq!(replayed, 15, "the acknowledged samples are in the log");
    let (body, ctx) = batch("col-1", 0, &entries);
    c.sink.export(body, ctx).await.unwrap();
    assert_eq!(counter(&c, "edgewatch_ingest_duplicate_batches_total"), 2.0);
    assert_eq!(counter(&c, "edgewatch_ingest_points_total"), 0.0);
    c.wal.close();
}

#[tokio::test]
async fn a_failed_append_asks_for_a_retry_and_the_retry_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let entries = [gauge_request("g", "a", 4)];
    {
        let c = core(&path);
        c.wal.close(); // every append now fails, as on a full disk
        let (body, ctx) = batch("col-1", 0, &entries);
        match c.sink.export(body, ctx).await {
            Err(ExportError::Unavailable { message, .. }) => {
                assert!(message.contains("not durable at the core"), "{message}")
            }
            other => panic!("a retryable error, got {other:?}"),
        }
        assert_eq!(counter(&c, "edgewatch_ingest_points_total"), 0.0);
    }
    let c = core(&path);
    let (body, ctx) = batch("col-1", 0, &entries);
    c.sink.export(body, ctx).await.unwrap();
    assert_eq!(
        counter(&c, "edgewatch_ingest_points_total"),
        4.0,
        "not taken for a replay"
    );
    assert_eq!(counter(&c, "edgewatch_ingest_duplicate_batches_total"), 0.0);
    c.wal.close();
}

#[tokio::test]
async fn requests_beyond_the_in_flight_budget_are_told_to_back_off() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of 16 KiB: sixteen requests of the largest accepted size (1 KiB).
    let c = core_with(&dir.path().join("wal"), 1024);
    let big = gauge_request("g", "held", 250);
    assert!(big.len() > 9 * 1024, "{} bytes", big.len());
    // Ahead of a gap: it waits for its collector's earlier batches, holding its bytes.
    let (body, mut ctx) = batch("col-1", 5, std::slice::from_ref(&big));
    if let Some(info) = ctx.batch.as_mut() {
        info.floor = 0; // seqs 0..5 are still to come
    }
    let waiting = tokio::spawn({
        let sink = c.sink.clone();
        async move { sink.export(body, ctx).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (body, ctx) = batch("col-2", 0, std::slice::from_ref(&big));
    match c.sink.export(body, ctx).await {
        Err(ExportError::ResourceExhausted { retry_after, .. }) => {
            assert!(retry_after > Duration::ZERO)
        }
        other => panic!("backpressure, got {other:?}"),
    }
    assert!(
        waiting.await.unwrap().is_ok(),
        "the held batch goes ahead after its wait"
    );
    let (body, ctx) = batch("col-2", 0, std::slice::from_ref(&big));
    assert!(
        c.sink.export(body, ctx).await.is_ok(),
        "the budget is free again"
    );
    assert_eq!(
        counter(&c, r#"edgewatch_ingest_requests_total{outcome="busy"}"#),
        1.0
    );
    c.wal.close();
}
