//! The durable queue (`edgewatch_collector::buffer`) against real files.

#[path = "support/disk.rs"]
mod disk;

use bytes::Bytes;
use disk::read_all;
use edgewatch_collector::buffer::{Buffer, BufferError, BufferOptions, FullPolicy};
use edgewatch_testkit::payloads as testdata;
use edgewatch_testkit::{always_for, disk_usage, eventually, Metrics};
use futures::future::join_all;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn opts(path: &Path, max_bytes: u64, policy: FullPolicy) -> BufferOptions {
    BufferOptions {
        path: path.to_path_buf(),
        max_bytes,
        full_policy: policy,
        max_age: None,
    }
}

fn payload(i: u64) -> Bytes {
    Bytes::from(testdata::otlp_100_points(i))
}

/// Compaction gives disk back: once sealed segments are compacted the buffer takes
/// less space than right after the appends, and reads back byte-identical, in order.
/// (How much less, in bytes per point against the target, is measured by
/// `cargo bench -p edgewatch-collector --bench disk`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_shrinks_the_buffer_on_disk() {
    for gen in [testdata::otlp_100_points, testdata::otlp_100_points_typical] {
        let (immediate, compacted) = disk::disk_per_point(gen).await;
        assert!(
            compacted < immediate,
            "compacted {compacted:.2} B/point, right after the appends {immediate:.2}"
        );
    }
}

/// Appends `n` realistic payloads, `par` at a time. Returns their seqs.
async fn fill(b: &Buffer, start: u64, n: u64, par: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut i = start;
    while i < start + n {
        let hi = (i + par).min(start + n);
        let futs = (i..hi).map(|k| {
            let b = b.clone();
            async move { b.append(100, payload(k)).await }
        });
        for r in join_all(futs).await {
            seqs.push(r.expect("append"));
        }
        i = hi;
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_in_order_with_bounded_reads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = prometheus::Registry::new();
    let b = Buffer::open(
        opts(&tmp.path().join("q"), 64 << 20, FullPolicy::DropOldest),
        &reg,
    )
    .expect("open");
    assert_eq!(b.first_seq(), None);
    let mut seqs = Vec::new();
    for i in 0..20u64 {
        seqs.push(b.append(i + 1, payload(i)).await.expect("append"));
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(b.first_seq(), Some(seqs[0]));
    let s = b.stats();
    assert_eq!(s.entries, 20);
    assert!(s.bytes > 0);
    assert!(s.oldest_appended_at_ms.is_some());

    let all = read_all(&b);
    assert_eq!(all.len(), 20);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, seqs[i]);
        assert_eq!(e.points, i as u64 + 1);
        assert_eq!(e.payload, payload(i as u64), "payload {i} round-trips");
    }
    // Bounded: by count, by bytes (at least one entry), from the middle.
    assert_eq!(b.read(seqs[0], 3, usize::MAX).expect("read").len(), 3);
    assert_eq!(b.read(seqs[0], 100, 1).expect("read").len(), 1);
    // Never over the byte limit (the forwarder's request limit) unless one entry
    // alone is: the entry that would go over starts the next read.
    let sizes: Vec<usize> = all.iter().map(|e| e.payload.len()).collect();
    for limit in [
        sizes[0],
        sizes[0] + sizes[1] - 1,
        sizes[0] + sizes[1],
        3 * sizes[0],
    ] {
        let got = b.read(seqs[0], 100, limit).expect("read");
        let bytes: usize = got.iter().map(|e| e.payload.len()).sum();
        assert!(
            bytes <= limit,
            "{} entries, {bytes} bytes > {limit}",
            got.len()
        );
        let with_next: usize = sizes[..got.len() + 1].iter().sum();
        assert!(
            with_next > limit,
            "the next entry would have fitted in {limit}"
        );
    }
    let mid = b.read(seqs[10], 100, usize::MAX).expect("read");
    assert_eq!(mid.first().map(|e| e.seq), Some(seqs[10]));
    assert_eq!(mid.len(), 10);

    b.ack(seqs[4]).expect("ack");
    assert_eq!(b.first_seq(), Some(seqs[5]));
    assert_eq!(b.stats().entries, 15);
    // Reading from below the head starts at the head.
    assert_eq!(b.read(0, 1, usize::MAX).expect("read")[0].seq, seqs[5]);
    assert_eq!(
        Metrics::from_registry(&reg).get("edgewatch_buffer_entries"),
        15.0
    );
    assert_eq!(
        Metrics::from_registry(&reg).get("edgewatch_buffer_appended_points_total"),
        210.0
    );
    for name in [
        "edgewatch_buffer_bytes",
        "edgewatch_buffer_oldest_timestamp_seconds",
        "edgewatch_buffer_corruptions_total",
        "edgewatch_buffer_flushes_total",
        "edgewatch_buffer_write_errors_total",
    ] {
        Metrics::from_registry(&reg).get(name);
    }
    for reason in ["full", "max_age", "corrupt"] {
        assert_eq!(
            Metrics::from_registry(&reg).get(&format!(
                r#"edgewatch_buffer_dropped_points_total{{reason="{reason}"}}"#
            )),
            0.0
        );
    }
    b.close();
    assert!(matches!(
        b.append(1, payload(0)).await,
        Err(BufferError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_survive_reopen_and_full_drain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    let reg = prometheus::Registry::new();
    let b = Buffer::open(opts(&path, 8 << 20, FullPolicy::DropOldest), &reg).expect("open");
    let id = b.instance_id().to_string();
    let mut seqs = fill(&b, 0, 50, 10).await;
    seqs.sort_unstable();
    b.close();
    drop(b);

    let b = Buffer::open(opts(&path, 8 << 20, FullPolicy::DropOldest), &reg).expect("reopen");
    assert_eq!(b.instance_id(), id, "instance id is persisted");
    let all = read_all(&b);
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    let s1 = b.append(100, payload(50)).await.expect("append");
    assert_eq!(s1, seqs[49] + 1);
    // Drain everything, let the segments go, restart: numbers continue.
    b.ack(s1).expect("ack");
    assert_eq!(b.first_seq(), None);
    b.close();
    drop(b);
    let b = Buffer::open(opts(&path, 8 << 20, FullPolicy::DropOldest), &reg).expect("reopen");
    assert_eq!(b.instance_id(), id);
    assert_eq!(b.stats().entries, 0, "acked entries are not replayed");
    assert!(read_all(&b).is_empty());
    let s2 = b.append(100, payload(51)).await.expect("append");
    assert_eq!(s2, s1 + 1, "never reused after drain and restart");

    // A brand-new directory gets a new identity.
    let other = Buffer::open(
        opts(&tmp.path().join("other"), 8 << 20, FullPolicy::DropOldest),
        &prometheus::Registry::new(),
    )
    .expect("open other");
    assert_ne!(other.instance_id(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_flushes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = prometheus::Registry::new();
    let b = Buffer::open(
        opts(&tmp.path().join("q"), 64 << 20, FullPolicy::DropOldest),
        &reg,
    )
    .expect("open");
    let payloads: Vec<Bytes> = (0..200).map(payload).collect();
    let flushes0 = Metrics::from_registry(&reg).get("edgewatch_buffer_flushes_total");
    let futs = payloads.into_iter().map(|p| {
        let b = b.clone();
        tokio::spawn(async move { b.append(100, p).await })
    });
    let mut seqs: Vec<u64> = join_all(futs)
        .await
        .into_iter()
        .map(|r| r.expect("join").expect("append"))
        .collect();
    let flushes = Metrics::from_registry(&reg).get("edgewatch_buffer_flushes_total") - flushes0;
    assert!(
        flushes <= 40.0,
        "200 concurrent appends took {flushes} flushes"
    );
    seqs.sort_unstable();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "unique, contiguous"
    );
    assert_eq!(read_all(&b).len(), 200);
    eprintln!("200 concurrent appends: {flushes} flushes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_disk_under_cap_and_counts_points() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    let reg = prometheus::Registry::new();
    // 300k points compact to ~2.3 MB: a 1.5 MiB cap must drop.
    let cap: u64 = 3 << 19;
    let b = Buffer::open(opts(&path, cap, FullPolicy::DropOldest), &reg).expect("open");
    let mut max_seen = 0;
    for round in 0..30u64 {
        fill(&b, round * 100, 100, 25).await;
        max_seen = max_seen.max(disk_usage(&path)).max(b.stats().bytes);
    }
    let appended = Metrics::from_registry(&reg).get("edgewatch_buffer_appended_points_total");
    assert_eq!(appended, 300_000.0);
    let dropped =
        Metrics::from_registry(&reg).get(r#"edgewatch_buffer_dropped_points_total{reason="full"}"#);
    assert!(dropped > 0.0, "something was dropped");
    let held: u64 = read_all(&b).iter().map(|e| e.points).sum();
    assert_eq!(
        dropped + held as f64,
        appended,
        "every point is either held or counted as dropped"
    );
    assert!(
        max_seen as f64 <= cap as f64 * 1.1,
        "disk {max_seen} > cap {cap} + 10%"
    );
    // The newest data is what is kept.
    let all = read_all(&b);
    let last = all.last().map(|e| e.payload.clone()).expect("entries held");
    assert!(
        (2975..3000).any(|i| payload(i) == last),
        "newest batch is kept"
    );
    eprintln!(
        "drop_oldest: cap {cap}, max on disk {max_seen}, held {} entries",
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_refuses_when_full_and_recovers_after_drain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    let reg = prometheus::Registry::new();
    let cap: u64 = 2 << 20;
    let b = Buffer::open(opts(&path, cap, FullPolicy::Backpressure), &reg).expect("open");
    let mut last_ok = None;
    let mut full = None;
    for i in 0..5000u64 {
        match b.append(100, payload(i)).await {
            Ok(s) => last_ok = Some(s),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    match full {
        Some(BufferError::Full { retry_after }) => assert!(retry_after > Duration::ZERO),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(disk_usage(&path) as f64 <= cap as f64 * 1.1);
    assert_eq!(
        Metrics::from_registry(&reg).get(r#"edgewatch_buffer_dropped_points_total{reason="full"}"#),
        0.0
    );
    let held = read_all(&b);
    assert_eq!(held.last().map(|e| e.seq), last_ok, "nothing was dropped");
    // Drain: room comes back.
    b.ack(last_ok.expect("some appends succeeded"))
        .expect("ack");
    let t = Instant::now();
    loop {
        match b.append(100, payload(0)).await {
            Ok(_) => break,
            Err(BufferError::Full { .. }) if t.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("append after drain: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_drops_old_entries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = prometheus::Registry::new();
    let mut o = opts(&tmp.path().join("q"), 64 << 20, FullPolicy::DropOldest);
    // Long enough that the read right after the appends sees them young on a loaded machine.
    o.max_age = Some(Duration::from_secs(1));
    let b = Buffer::open(o, &reg).expect("open");
    fill(&b, 0, 5, 5).await;
    assert_eq!(read_all(&b).len(), 5, "young entries are kept");
    eventually(
        Duration::from_secs(10),
        "the entries dropped once older than max_age",
        || async { read_all(&b).is_empty() },
    )
    .await;
    let fresh = b.append(7, payload(9)).await.expect("append");
    let got = read_all(&b);
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![fresh],
        "old entries dropped on read"
    );
    assert_eq!(
        Metrics::from_registry(&reg)
            .get(r#"edgewatch_buffer_dropped_points_total{reason="max_age"}"#),
        500.0
    );
    // And periodically, without reads.
    eventually(Duration::from_secs(15), "periodic max_age", || async {
        b.stats().entries == 0
    })
    .await;
    assert_eq!(
        Metrics::from_registry(&reg)
            .get(r#"edgewatch_buffer_dropped_points_total{reason="max_age"}"#),
        507.0
    );
    assert_eq!(
        Metrics::from_registry(&reg).get("edgewatch_buffer_oldest_timestamp_seconds"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_returns_to_baseline_after_drain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    let reg = prometheus::Registry::new();
    let b = Buffer::open(opts(&path, 32 << 20, FullPolicy::DropOldest), &reg).expect("open");
    let baseline = disk_usage(&path);
    let mut seqs = fill(&b, 0, 4000, 50).await;
    seqs.sort_unstable();
    let full = disk_usage(&path);
    let segs = std::fs::read_dir(path.join("segments"))
        .expect("segments")
        .count();
    assert!(segs > 2, "rolled into several segments ({segs})");
    // Drain in forwarder-sized steps.
    for chunk in seqs.chunks(500) {
        b.ack(*chunk.last().expect("chunk")).expect("ack");
    }
    let t = Instant::now();
    while disk_usage(&path) > baseline + 256 * 1024 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "disk not back to baseline: {} bytes, segments {:?}",
            disk_usage(&path),
            std::fs::read_dir(path.join("segments")).map(|d| d
                .flatten()
                .map(|e| (e.file_name(), disk_usage(&e.path())))
                .collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = disk_usage(&path);
    assert!(b.stats().bytes <= 256 * 1024);
    assert_eq!(
        Metrics::from_registry(&reg).get("edgewatch_buffer_entries"),
        0.0
    );
    eprintln!(
        "4000 x 100 points: {full} bytes on disk ({:.2} B/point); after drain {after} (baseline {baseline})",
        full as f64 / 400_000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_files_is_moved_aside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    {
        let b = Buffer::open(
            opts(&path, 8 << 20, FullPolicy::DropOldest),
            &prometheus::Registry::new(),
        )
        .expect("open");
        fill(&b, 0, 20, 5).await;
        b.close();
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![path.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert!(!files.is_empty());
    for (i, f) in files.iter().enumerate() {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|k| (k.wrapping_mul(2_654_435_761) >> (i % 24)) as u8)
            .collect();
        std::fs::write(f, garbage).expect("garbage");
    }
    let reg = prometheus::Registry::new();
    let b =
        Buffer::open(opts(&path, 8 << 20, FullPolicy::DropOldest), &reg).expect("open succeeds");
    assert_eq!(
        Metrics::from_registry(&reg).get("edgewatch_buffer_corruptions_total"),
        1.0
    );
    let aside: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read_dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("q.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "moved aside as q.corrupt-<ts>");
    assert_eq!(b.stats().entries, 0);
    let s = b.append(100, payload(1)).await.expect("append works");
    assert_eq!(
        read_all(&b).iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![s]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_meta_is_moved_aside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    {
        let b = Buffer::open(
            opts(&path, 8 << 20, FullPolicy::DropOldest),
            &prometheus::Registry::new(),
        )
        .expect("open");
        fill(&b, 0, 3, 3).await;
        b.close();
    }
    let meta = path.join("meta.json");
    let body = std::fs::read(&meta).expect("meta");
    std::fs::write(&meta, &body[..body.len() / 2]).expect("truncate");
    let reg = prometheus::Registry::new();
    let b =
        Buffer::open(opts(&path, 8 << 20, FullPolicy::DropOldest), &reg).expect("open succeeds");
    assert_eq!(
        Metrics::from_registry(&reg).get("edgewatch_buffer_corruptions_total"),
        1.0
    );
    b.append(1, payload(0)).await.expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_sealed_segment_is_skipped_and_counted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    let o = || opts(&path, 16 << 20, FullPolicy::DropOldest);
    {
        let b = Buffer::open(o(), &prometheus::Registry::new()).expect("open");
        fill(&b, 0, 1500, 50).await;
        b.close();
    }
    let mut segs: Vec<PathBuf> = std::fs::read_dir(path.join("segments"))
        .expect("segments")
        .flatten()
        .map(|e| e.path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "need sealed segments, got {}", segs.len());
    // Garbage over the second segment's data file.
    let victim = &segs[1];
    let len = std::fs::metadata(victim.join("db")).expect("db").len() as usize;
    std::fs::write(victim.join("db"), vec![0xA5u8; len]).expect("garbage");

    let reg = prometheus::Registry::new();
    let b = Buffer::open(o(), &reg).expect("open");
    let all = read_all(&b);
    assert!(
        all.len() < 1500 && !all.is_empty(),
        "read {} entries",
        all.len()
    );
    assert!(all.windows(2).all(|w| w[1].seq > w[0].seq));
    assert_eq!(
        Metrics::from_registry(&reg).get("edgewatch_buffer_corruptions_total"),
        1.0
    );
    let lost = Metrics::from_registry(&reg)
        .get(r#"edgewatch_buffer_dropped_points_total{reason="corrupt"}"#);
    assert_eq!(
        lost as usize,
        (1500 - all.len()) * 100,
        "lost points counted exactly"
    );
    assert!(!victim.exists(), "segment moved aside");
    // The queue keeps flowing.
    let s = b.append(100, payload(1)).await.expect("append");
    assert_eq!(read_all(&b).last().map(|e| e.seq), Some(s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_entries_wakes_on_append_and_close() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(
        opts(&tmp.path().join("q"), 8 << 20, FullPolicy::DropOldest),
        &prometheus::Registry::new(),
    )
    .expect("open");
    let s = b.append(1, payload(0)).await.expect("append");
    // Already there: returns at once.
    tokio::time::timeout(Duration::from_secs(1), b.wait_for_entries(s))
        .await
        .expect("immediate");
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.wait_for_entries(s + 1).await })
    };
    always_for(
        Duration::from_millis(200),
        "the waiter waits for an entry not yet appended",
        || async { !waiter.is_finished() },
    )
    .await;
    b.append(1, payload(1)).await.expect("append");
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken")
        .expect("join");

    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.wait_for_entries(s + 100).await })
    };
    always_for(
        Duration::from_millis(100),
        "the waiter waits for entries never appended",
        || async { !waiter.is_finished() },
    )
    .await;
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || b2.close())
        .await
        .expect("close");
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken at close")
        .expect("join");
}
