use super::record::RecordBuilder;
use super::*;
use crate::store::{MetricType, Store, StoreOptions};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn record(store: &Store, values: &[f64], created_ms: i64) -> Vec<u8> {
    let fam = store.family("up", MetricType::Gauge, "", "");
    let mut b = RecordBuilder::default();
    for (i, v) in values.iter().enumerate() {
        b.push(
            fam,
            || store.family_meta("up").expect("registered"),
            "up",
            &[("instance", "a")],
            *v,
            1_000 + i as i64,
        );
    }
    b.finish(created_ms)
}

fn values(r: &Record) -> Vec<f64> {
    let mut out = Vec::new();
    r.for_each(|s| out.push(s.value));
    out
}

/// Reopens after `close`: sled's flusher lets go of the file lock a moment later.
fn reopen(path: &std::path::Path) -> Arc<Wal> {
    for _ in 0..100 {
        if let Ok(w) = Wal::open(path, &Registry::new()) {
            return w;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Wal::open(path, &Registry::new()).expect("reopening the log")
}

fn store() -> Store {
    Store::new(StoreOptions::default(), &Registry::new())
}

#[test]
fn durable_appends_and_windows_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let s = store();
    {
        let wal = Wal::open(&path, &Registry::new()).unwrap();
        let seq = wal
            .append_durable(
                Some(record(&s, &[1.0, 2.0], 5)),
                Some(("collector-1", vec![7; 8])),
            )
            .unwrap();
        assert_eq!(seq, 0);
        assert_eq!(
            wal.append_durable(Some(record(&s, &[3.0], 6)), None)
                .unwrap(),
            1
        );
        wal.close();
    }
    let wal = reopen(&path);
    assert_eq!(
        wal.window("collector-1").unwrap().as_deref(),
        Some(&[7u8; 8][..])
    );
    let mut seen = Vec::new();
    let n = wal.replay(i64::MIN, |r| seen.extend(values(r)));
    assert_eq!((n, seen), (3, vec![1.0, 2.0, 3.0]));
    let mut recent = Vec::new();
    wal.replay(6, |r| recent.extend(values(r)));
    assert_eq!(
        recent,
        vec![3.0],
        "records older than the horizon are not replayed"
    );
    assert_eq!(
        wal.append_durable(Some(record(&s, &[4.0], 7)), None)
            .unwrap(),
        2
    );
    wal.close();
}

#[tokio::test]
async fn readers_keep_their_own_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let s = store();
    let stop = CancellationToken::new();
    {
        let wal = Wal::open(&path, &Registry::new()).unwrap();
        let mut fast = wal.reader("fast", "http://fast").unwrap();
        let _slow = wal.reader("slow", "http://slow").unwrap();
        for v in [1.0, 2.0, 3.0] {
            wal.append_durable(Some(record(&s, &[v], 0)), None).unwrap();
        }
        let (seq, r) = fast.next(&stop).await.unwrap();
        assert_eq!((seq, values(&r)), (0, vec![1.0]));
        fast.commit(seq);
        wal.close();
    }
    let wal = reopen(&path);
    let mut fast = wal.reader("fast", "http://fast").unwrap();
    let mut slow = wal.reader("slow", "http://slow").unwrap();
    assert_eq!(values(&fast.next(&stop).await.unwrap().1), vec![2.0]);
    assert_eq!(values(&slow.next(&stop).await.unwrap().1), vec![1.0]);
    // A reader at the end waits for the next append.
    let mut tail = wal.reader("new", "http://new").unwrap();
    let w = wal.clone();
    let s2 = store();
    let appender = std::thread::spawn(move || {
        w.append_durable(Some(record(&s2, &[9.0], 0)), None)
            .unwrap();
    });
    assert_eq!(values(&tail.next(&stop).await.unwrap().1), vec![9.0]);
    appender.join().unwrap();
    stop.cancel();
    assert!(tail.next(&stop).await.is_none());
    wal.close();
}

#[test]
fn caps_cut_the_oldest_and_count_what_readers_lose() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new();
    let wal = Wal::open(&dir.path().join("wal"), &registry).unwrap();
    let s = store();
    let _reader = wal.reader("ep", "http://ep").unwrap();
    for i in 0..10 {
        wal.append_durable(Some(record(&s, &[1.0, 2.0], i * 1_000)), None)
            .unwrap();
    }
    let one = wal.bytes() / 10;
    let limits = Limits {
        max_bytes: one * 4,
        max_age_ms: i64::MAX,
        keep_ms: 0,
    };
    assert_eq!(wal.trim(limits, 10_000), 6);
    assert!(wal.bytes() <= one * 4 + 4);
    let by_age = Limits {
        max_bytes: u64::MAX,
        max_age_ms: 2_500,
        keep_ms: 0,
    };
    assert_eq!(
        wal.trim(by_age, 10_000),
        2,
        "records created before 7.5 s are too old"
    );
    let m = edgewatch_testkit::Metrics::from_registry(&registry);
    assert_eq!(
        m.get(r#"edgewatch_wal_dropped_samples_total{url="http://ep",reason="max_bytes"}"#),
        12.0
    );
    assert_eq!(
        m.get(r#"edgewatch_wal_dropped_samples_total{url="http://ep",reason="max_age"}"#),
        4.0
    );
    wal.close();
}

#[tokio::test]
async fn records_every_reader_sent_are_cut_once_the_store_no_longer_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(&dir.path().join("wal"), &Registry::new()).unwrap();
    let s = store();
    let mut reader = wal.reader("ep", "http://ep").unwrap();
    for i in 0..4 {
        wal.append_durable(Some(record(&s, &[1.0], i * 1_000)), None)
            .unwrap();
    }
    let stop = CancellationToken::new();
    for _ in 0..2 {
        let (seq, _) = reader.next(&stop).await.unwrap();
        reader.commit(seq);
    }
    let limits = Limits {
        max_bytes: u64::MAX,
        max_age_ms: i64::MAX,
        keep_ms: 500,
    };
    // Records 0 and 1 are sent and older than the store's horizon; 2 and 3 are not sent.
    assert_eq!(wal.trim(limits, 10_000), 2);
    assert_eq!(values(&reader.next(&stop).await.unwrap().1), vec![1.0]);
    wal.close();
}

#[test]
fn a_log_sled_cannot_open_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("conf"), b"garbage that is no sled config\n").unwrap();
    std::fs::write(path.join("db"), vec![0xa5; 4096]).unwrap();
    let registry = Registry::new();
    let wal = Wal::open(&path, &registry).expect("starts with an empty log");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("wal.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let m = edgewatch_testkit::Metrics::from_registry(&registry);
    assert_eq!(m.get("edgewatch_wal_corruptions_total"), 1.0);
    assert_eq!(
        wal.append_durable(Some(record(&store(), &[1.0], 0)), None)
            .unwrap(),
        0
    );
    wal.close();
}

#[test]
fn a_large_record_round_trips_and_declares_its_size() {
    let s = store();
    let fam = s.family("up", MetricType::Gauge, "help", "");
    let mut b = RecordBuilder::default();
    let n = 200_000usize;
    for i in 0..n {
        let instance = format!("node-{}", i % 5_000);
        b.push(
            fam,
            || s.family_meta("up").expect("registered"),
            "up",
            &[("instance", &instance), ("i", &i.to_string())],
            i as f64,
            1_000 + i as i64,
        );
    }
    let raw = b.finish(42);
    assert_eq!(record::header(&raw).unwrap(), (42, n as u32));
    // The frame says how large the samples are: the reader allocates once.
    let declared = zstd::zstd_safe::get_frame_content_size(&raw[12..]).unwrap();
    assert!(declared.is_some_and(|d| d > raw.len() as u64));
    let r = Record::decode(&raw).unwrap();
    let got = values(&r);
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, v)| *v == i as f64));
    let mut labels = Vec::new();
    r.for_each(|s| labels.push(s.labels().map(|(_, v)| v.to_owned()).collect::<Vec<_>>()));
    assert_eq!(labels[n - 1], ["node-4999".to_owned(), (n - 1).to_string()]);
    // The builder is empty and reusable.
    assert!(b.is_empty());
}
