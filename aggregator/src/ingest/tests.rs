//! Ingest with the write-ahead log: an answer means durable, a failed append means
//! "retry" and moves nothing, a replay after a restart is recognised.

use super::*;
use crate::store::StoreOptions;
use edgewatch_testkit::eventually;
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
    // A known collector (a new one does not wait: there is nothing to wait for).
    let (body, ctx) = batch("col-1", 0, &[gauge_request("g", "first", 1)]);
    c.sink.export(body, ctx).await.unwrap();
    // Ahead of a gap: it waits for its collector's earlier batches, holding its bytes.
    let (body, mut ctx) = batch("col-1", 5, std::slice::from_ref(&big));
    if let Some(info) = ctx.batch.as_mut() {
        info.floor = 1; // seqs 1..5 are still to come
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

fn with_info(body: Vec<u8>, info: BatchInfo) -> (Bytes, ExportContext) {
    let ctx = ExportContext {
        batch: Some(info),
        ..ExportContext::default()
    };
    (Bytes::from(body), ctx)
}

async fn export(
    c: &Core,
    (body, ctx): (Bytes, ExportContext),
) -> Result<ExportOutcome, ExportError> {
    c.sink.export(body, ctx).await
}

fn invalid_naming(result: Result<ExportOutcome, ExportError>, header: &str) {
    match result {
        Err(ExportError::InvalidArgument(m)) => assert!(m.starts_with(header), "{m}"),
        other => panic!("INVALID_ARGUMENT naming {header}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_forged_floor_does_not_take_over_a_collector() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let entry = || gauge_request("g", "a", 3);
    {
        let c = core(&path);
        let (body, ctx) = batch("col-1", 0, &[entry(), entry()]);
        c.sink.export(body, ctx).await.unwrap();
        // Another sender claims col-1 settled everything up to the top of the range.
        let forged = entry();
        let info = |first_seq, floor| BatchInfo {
            collector_id: "col-1".into(),
            first_seq,
            entry_lens: vec![forged.len()],
            floor,
        };
        invalid_naming(
            export(&c, with_info(forged.clone(), info(2, u64::MAX))).await,
            edgewatch_otlp::HEADER_FLOOR,
        );
        invalid_naming(
            export(
                &c,
                with_info(forged.clone(), info(u64::MAX - 1, u64::MAX - 1)),
            )
            .await,
            edgewatch_otlp::HEADER_FIRST_SEQ,
        );
        let far = 2 + bounds::AHEAD_BASE + 1;
        invalid_naming(
            export(&c, with_info(forged.clone(), info(far, far))).await,
            edgewatch_otlp::HEADER_FIRST_SEQ,
        );
        // The same under an id of its own: a new collector, no harm to col-1.
        let mut own = info(u64::MAX - 2, u64::MAX - 2);
        own.collector_id = "col-x".into();
        export(&c, with_info(forged, own)).await.unwrap();
        // The legitimate collector goes on.
        let (body, ctx) = batch("col-1", 2, &[entry()]);
        c.sink.export(body, ctx).await.unwrap();
        assert_eq!(counter(&c, "edgewatch_ingest_points_total"), 12.0);
        assert_eq!(counter(&c, "edgewatch_ingest_duplicate_batches_total"), 0.0);
        c.wal.close();
    }
    // Nothing forged was persisted either.
    let c = core(&path);
    let (body, ctx) = batch("col-1", 3, &[entry()]);
    c.sink.export(body, ctx).await.unwrap();
    assert_eq!(counter(&c, "edgewatch_ingest_points_total"), 3.0);
    c.wal.close();
}

#[tokio::test]
async fn headers_that_overflow_are_refused_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let c = core(&dir.path().join("wal"));
    let e = gauge_request("g", "a", 3);
    let two = [e.clone(), e.clone()].concat();
    let info = |first_seq, entry_lens, floor| BatchInfo {
        collector_id: "col-1".into(),
        first_seq,
        entry_lens,
        floor,
    };
    use edgewatch_otlp::{HEADER_ENTRY_LENS, HEADER_FIRST_SEQ, HEADER_FLOOR};
    let cases = [
        (info(u64::MAX, vec![e.len(), e.len()], 0), HEADER_FIRST_SEQ),
        (
            info(u64::MAX, vec![e.len(), e.len()], u64::MAX),
            HEADER_FIRST_SEQ,
        ),
        (
            info(0, vec![usize::MAX, e.len() * 2 + 1], 0),
            HEADER_ENTRY_LENS,
        ),
        (
            info(
                0,
                vec![usize::MAX / 2 + 1, usize::MAX / 2 + 1, e.len() * 2],
                0,
            ),
            HEADER_ENTRY_LENS,
        ),
        (info(0, vec![e.len(), e.len()], 3), HEADER_FLOOR),
        (info(7, vec![e.len(), e.len()], u64::MAX), HEADER_FLOOR),
    ];
    for (i, header) in cases {
        invalid_naming(export(&c, with_info(two.clone(), i)).await, header);
    }
    assert_eq!(c.store.series_count(), 0);
    let mut logged = 0;
    c.wal.replay(i64::MIN, |r| logged += r.len());
    assert_eq!(logged, 0);
    assert!(c.wal.window("col-1").unwrap().is_none());
    assert_eq!(
        counter(&c, r#"edgewatch_ingest_requests_total{outcome="invalid"}"#),
        6.0
    );
    c.wal.close();
}

#[tokio::test]
async fn new_collectors_with_a_gap_wait_only_while_few_do() {
    let dir = tempfile::tempdir().unwrap();
    let c = core(&dir.path().join("wal"));
    let gap = |collector: String| {
        let (body, mut ctx) = batch(&collector, 5, &[gauge_request("g", &collector, 2)]);
        if let Some(info) = ctx.batch.as_mut() {
            info.floor = 0; // seqs 0..5 never come
        }
        let sink = c.sink.clone();
        tokio::spawn(async move { sink.export(body, ctx).await })
    };
    // Every slot for new collectors' waits taken by ids with a gap...
    let mut waiting: Vec<_> = (0..NEW_COLLECTOR_WAITS)
        .map(|i| gap(format!("forged-{i}")))
        .collect();
    eventually(Duration::from_secs(10), "the slots taken", || async {
        c.sink.inner.new_waits.available_permits() == 0
    })
    .await;
    // ...one more goes ahead at once, answered before any of them.
    let mut more = gap("one-more".into());
    let first_waiting = futures::future::select_all(waiting.iter_mut());
    tokio::select! {
        biased;
        done = &mut more => assert!(done.unwrap().is_ok()),
        _ = first_waiting => panic!("a waiting batch went first: the last one waited too"),
    }
    for w in waiting {
        assert!(w.await.unwrap().is_ok(), "after its wait");
    }
    assert_eq!(
        counter(&c, "edgewatch_ingest_points_total"),
        2.0 * (NEW_COLLECTOR_WAITS + 1) as f64
    );
    c.wal.close();
}

#[tokio::test]
async fn idle_collectors_are_evicted_and_long_silent_ones_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let c = core(&dir.path().join("wal"));
    let minute = 60_000;
    let day = 1440 * minute;
    let expiry = Duration::from_secs(30 * 86_400);
    let entries = [gauge_request("g", "a", 2)];
    let send = || async {
        let (body, ctx) = batch("col-1", 0, &entries);
        c.sink.export(body, ctx).await.unwrap();
    };
    let held = || counter(&c, "edgewatch_ingest_collectors");
    let t0 = crate::now_ms();
    send().await;
    // (time since the batch, evicted, forgotten)
    for (after, evicted, forgotten) in [(minute, 0, 0), (9 * minute, 0, 0), (11 * minute, 1, 0)] {
        assert_eq!(
            c.sink.expire(t0 + after, expiry),
            (evicted, forgotten),
            "{after} ms"
        );
    }
    assert_eq!(held(), 0.0);
    // Back: its window is read from the log, the batch is a replay.
    send().await;
    assert_eq!(held(), 1.0);
    assert_eq!(counter(&c, "edgewatch_ingest_duplicate_batches_total"), 1.0);
    // A collector a batch holds stays, whatever its time.
    let in_use = c.sink.collector("col-1");
    assert_eq!(c.sink.expire(t0 + 11 * minute, expiry), (0, 0));
    drop(in_use);
    assert_eq!(c.sink.expire(t0 + 29 * day, expiry), (1, 0));
    assert_eq!(c.sink.expire(t0 + 31 * day, expiry), (0, 1));
    assert_eq!(
        counter(&c, "edgewatch_ingest_forgotten_collectors_total"),
        1.0
    );
    // Forgotten: the same batch is new again.
    send().await;
    assert_eq!(counter(&c, "edgewatch_ingest_points_total"), 4.0);
    c.wal.close();
}

#[tokio::test]
async fn a_window_from_an_older_version_gets_a_time_and_then_expires() {
    let dir = tempfile::tempdir().unwrap();
    let c = core(&dir.path().join("wal"));
    let mut legacy = SeqWindow::default();
    legacy.claim(0);
    c.wal
        .append_durable(None, Some(("col-old", legacy.encode())))
        .unwrap();
    let day = 86_400_000;
    let expiry = Duration::from_secs(30 * 86_400);
    let now = crate::now_ms();
    assert_eq!(c.sink.expire(now, expiry), (0, 0));
    let stored = expiry::Stored::decode(&c.wal.window("col-old").unwrap().unwrap()).unwrap();
    assert_eq!((stored.window, stored.moved_ms), (legacy, now));
    assert_eq!(c.sink.expire(now + 29 * day, expiry), (0, 0));
    assert_eq!(c.sink.expire(now + 31 * day, expiry), (0, 1));
    assert!(c.wal.window("col-old").unwrap().is_none());
    c.wal.close();
}
