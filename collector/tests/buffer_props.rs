//! Property tests of the durable queue against a model `VecDeque`: random
//! appends (incompressible payloads, so that a small cap fills and
//! `drop_oldest` drops), bounded reads and acknowledgements.
//!
//! Properties, after every step: sequence numbers are consecutive; a read
//! returns held entries in order, without gaps or duplicates, byte-identical,
//! within its bounds; what is held is a suffix of what was appended and not
//! acknowledged (only the oldest are dropped, never the newest); every point is
//! held, acknowledged or counted in `edgewatch_buffer_dropped_points_total`.

use bytes::Bytes;
use edgewatch_collector::buffer::{Buffer, BufferOptions, Entry, FullPolicy};
use edgewatch_testkit::Metrics;
use proptest::prelude::*;
use std::collections::VecDeque;

/// Small enough that a few dozen appends of the largest payloads overflow it.
const CAP: u64 = 1 << 20;

#[derive(Debug, Clone)]
enum Op {
    Append {
        len: usize,
        points: u64,
        seed: u64,
    },
    Read {
        max_entries: usize,
        max_bytes: usize,
    },
    /// Acknowledges the first `n` held entries.
    Ack {
        n: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..96 * 1024, 1u64..1000, any::<u64>())
            .prop_map(|(len, points, seed)| Op::Append { len, points, seed }),
        2 => (0usize..20, 1usize..512 * 1024)
            .prop_map(|(max_entries, max_bytes)| Op::Read { max_entries, max_bytes }),
        1 => (0usize..8).prop_map(|n| Op::Ack { n }),
    ]
}

/// Incompressible bytes (xorshift), distinct per seed.
fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Model {
    /// Appended, not acknowledged, not known to be dropped: (seq, points, payload).
    held: VecDeque<(u64, u64, Bytes)>,
    next_seq: Option<u64>,
    dropped_points: u64,
}

impl Model {
    /// Applies what a full read shows: entries missing at the front were dropped.
    fn sync(&mut self, all: &[Entry]) {
        let first = all.first().map(|e| e.seq);
        while let Some((seq, points, _)) = self.held.front() {
            if Some(*seq) == first {
                break;
            }
            self.dropped_points += points;
            self.held.pop_front();
        }
        assert_eq!(
            all.len(),
            self.held.len(),
            "held entries are a suffix of the appended ones"
        );
        for (e, (seq, points, p)) in all.iter().zip(&self.held) {
            assert_eq!((e.seq, e.points), (*seq, *points));
            assert_eq!(&e.payload, p, "payload of {seq}");
        }
    }
}

/// Runs `ops` on a fresh buffer and the model; returns the points dropped.
fn run(ops: Vec<Op>) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = prometheus::Registry::new();
    let opts = BufferOptions {
        path: tmp.path().join("q"),
        max_bytes: CAP,
        full_policy: FullPolicy::DropOldest,
        max_age: None,
    };
    let b = Buffer::open(opts, &reg).expect("open");
    let mut m = Model {
        held: VecDeque::new(),
        next_seq: None,
        dropped_points: 0,
    };
    for op in ops {
        match op {
            Op::Append { len, points, seed } => {
                let p = payload(len, seed);
                let seq = rt.block_on(b.append(points, p.clone())).expect("append");
                if let Some(expected) = m.next_seq {
                    assert_eq!(seq, expected, "consecutive sequence numbers");
                }
                m.next_seq = Some(seq + 1);
                m.held.push_back((seq, points, p));
            }
            Op::Read {
                max_entries,
                max_bytes,
            } => {
                let from = m.held.front().map(|h| h.0).unwrap_or(0);
                let got = b.read(from, max_entries, max_bytes).expect("read");
                assert!(got.len() <= max_entries);
                let before_last: usize = got.iter().rev().skip(1).map(|e| e.payload.len()).sum();
                assert!(
                    got.len() <= 1 || before_last < max_bytes,
                    "read over max_bytes"
                );
                assert!(
                    got.windows(2).all(|w| w[1].seq == w[0].seq + 1),
                    "gap or duplicate"
                );
                for e in &got {
                    let (_, points, p) = m
                        .held
                        .iter()
                        .find(|h| h.0 == e.seq)
                        .unwrap_or_else(|| panic!("read {} which is not held", e.seq));
                    assert_eq!((e.points, &e.payload), (*points, p));
                }
            }
            Op::Ack { n } => {
                let all = b.read(0, usize::MAX, usize::MAX).expect("read all");
                m.sync(&all);
                if let Some((through, _, _)) = m.held.get(n.min(m.held.len()).wrapping_sub(1)) {
                    b.ack(*through).expect("ack");
                    m.held.drain(..n.min(m.held.len()));
                    assert_eq!(b.first_seq(), m.held.front().map(|h| h.0));
                }
            }
        }
        // The newest entry is never the one dropped.
        if let Some((last, _, _)) = m.held.back() {
            let got = b.read(*last, 1, usize::MAX).expect("read newest");
            assert_eq!(
                got.first().map(|e| e.seq),
                Some(*last),
                "newest entry missing"
            );
        }
    }
    let all = b.read(0, usize::MAX, usize::MAX).expect("read all");
    m.sync(&all);
    let counted = Metrics::from_registry(&reg)
        .get_or_zero(r#"edgewatch_buffer_dropped_points_total{reason="full"}"#);
    assert_eq!(
        counted as u64, m.dropped_points,
        "every dropped point is counted"
    );
    b.close();
    m.dropped_points
}

proptest! {
    // Each case opens a buffer on disk and appends up to a few MB: few cases.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops);
    }
}

/// The model's drop accounting is exercised: 4 MB of appends into a 1 MiB cap.
#[test]
fn overflowing_the_cap_drops_and_counts() {
    let appends = (0..40).map(|i| Op::Append {
        len: 96 * 1024,
        points: 10,
        seed: i,
    });
    let reads = [
        Op::Read {
            max_entries: 5,
            max_bytes: 1,
        },
        Op::Ack { n: 2 },
    ];
    let dropped = run(appends.chain(reads).collect());
    assert!(dropped > 0, "nothing dropped");
}
