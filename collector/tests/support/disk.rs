//! Bytes on disk per buffered data point: shared by the `buffer_queue` test (compaction
//! shrinks the buffer) and the `disk` bench (the size against its target).

use bytes::Bytes;
use edgewatch_collector::buffer::{Buffer, BufferOptions, Entry, FullPolicy};
use edgewatch_testkit::disk_usage;
use futures::future::join_all;
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits until every sealed segment is compacted (`.z`, nothing `.compacting`).
async fn wait_compacted(path: &Path) {
    let t = Instant::now();
    loop {
        let mut names: Vec<String> = std::fs::read_dir(path.join("segments"))
            .expect("segments")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.pop(); // the active segment
        if names.iter().all(|n| n.ends_with(".z")) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "compaction did not finish: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bytes on disk per data point for 4000 appends of 100 points made by `gen`,
/// right after the appends and once sealed segments are compacted.
pub async fn disk_per_point(gen: fn(u64) -> Vec<u8>) -> (f64, f64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    let b = Buffer::open(
        BufferOptions {
            path: path.clone(),
            max_bytes: 32 << 20,
            full_policy: FullPolicy::DropOldest,
            max_age: None,
        },
        &prometheus::Registry::new(),
    )
    .expect("open");
    let mut i = 0u64;
    while i < 4000 {
        let futs = (i..i + 50).map(|k| {
            let b = b.clone();
            async move { b.append(100, Bytes::from(gen(k))).await }
        });
        for r in join_all(futs).await {
            r.expect("append");
        }
        i += 50;
    }
    let immediate = disk_usage(&path) as f64 / 400_000.0;
    wait_compacted(&path).await;
    let settled = disk_usage(&path) as f64 / 400_000.0;
    // Compacted segments read back byte-identical, in order, each once.
    let expected: std::collections::HashSet<Vec<u8>> = (0..4000).map(gen).collect();
    let got = read_all(&b);
    assert_eq!(got.len(), 4000);
    let mut seen = std::collections::HashSet::new();
    for (n, e) in got.iter().enumerate() {
        assert_eq!(e.seq, n as u64);
        assert_eq!(e.points, 100);
        assert!(expected.contains(&e.payload[..]), "entry {} differs", e.seq);
        assert!(seen.insert(e.payload.clone()), "entry {} twice", e.seq);
    }
    b.close();
    (immediate, settled)
}

/// Every entry from the start, in order.
pub fn read_all(b: &Buffer) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let got = b.read(from, 500, 8 << 20).expect("read");
        let Some(last) = got.last() else { break };
        from = last.seq + 1;
        out.extend(got);
    }
    out
}
