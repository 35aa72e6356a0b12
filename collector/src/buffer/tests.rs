//! Unit tests that need the internal fault-injection hook.

use super::*;
use std::sync::atomic::Ordering;

fn opts(dir: &Path) -> BufferOptions {
    BufferOptions {
        path: dir.join("buf"),
        max_bytes: 64 << 20,
        full_policy: FullPolicy::DropOldest,
        max_age: None,
    }
}

#[tokio::test]
async fn injected_write_and_flush_failures_are_io_errors_and_recover() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = prometheus::Registry::new();
    let b = Buffer::open(opts(tmp.path()), &reg).expect("open");
    let p = Bytes::from(edgewatch_testkit::payloads::otlp_100_points(1));
    let s0 = b.append(100, p.clone()).await.expect("append");
    assert!(b.writable());

    for (fault, name) in [
        (&b.faults().fail_writes, "write"),
        (&b.faults().fail_flush, "flush"),
    ] {
        fault.store(true, Ordering::SeqCst);
        let err = b.append(100, p.clone()).await.expect_err(name);
        assert!(matches!(err, BufferError::Io { .. }), "{name}: {err:?}");
        assert!(!b.writable(), "{name}: unwritable after a failure");
        // Still failing while the fault lasts, and reads keep working.
        assert!(matches!(
            b.append(1, p.clone()).await,
            Err(BufferError::Io { .. })
        ));
        let got = b.read(0, 100, usize::MAX).expect("read during fault");
        assert_eq!(got.len() as u64, b.stats().entries);
        fault.store(false, Ordering::SeqCst);
        let s = b
            .append(100, p.clone())
            .await
            .expect("append after fault cleared");
        assert!(b.writable(), "{name}: writable again");
        assert!(s > s0);
    }
    assert_eq!(
        edgewatch_testkit::Metrics::from_registry(&reg).get("edgewatch_buffer_write_errors_total"),
        4.0
    );
    let before: Vec<(u64, Bytes)> = b
        .read(0, 100, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|e| (e.seq, e.payload))
        .collect();
    assert_eq!(before.len(), 3, "only the acknowledged appends are held");
    // Contiguous numbers: failed appends never became entries.
    assert_eq!(
        before.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![s0, s0 + 1, s0 + 2]
    );
    b.close();
    drop(b);
    // Nothing acknowledged was lost, nothing failed resurfaced.
    let reg = prometheus::Registry::new();
    let b = Buffer::open(opts(tmp.path()), &reg).expect("reopen");
    let after: Vec<(u64, Bytes)> = b
        .read(0, 100, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|e| (e.seq, e.payload))
        .collect();
    assert_eq!(after, before);
    assert_eq!(b.append(1, p).await.expect("append"), s0 + 3);
}
