//! Property tests of the replay window (`SeqWindow`) against a model: the set of
//! accepted sequence numbers and the highest floor given.
//!
//! Properties, after every step: `claim` accepts exactly the numbers at or above
//! the floor not accepted before (so never one twice); `next()` is the lowest
//! number at or above the floor not yet accepted; a lower floor changes nothing;
//! `encode` → `decode` gives the same window, which then behaves the same.

use edgewatch_aggregator::ingest::dedup::SeqWindow;
use proptest::prelude::*;
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
enum Op {
    Claim(u64),
    Floor(u64),
    /// Persist and reload the window (the WAL does this).
    Reload,
}

/// Numbers that collide often, plus the top of the range (forged headers).
fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..200, 1 => (u64::MAX - 4)..=u64::MAX]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => seq().prop_map(Op::Claim),
        2 => seq().prop_map(Op::Floor),
        1 => Just(Op::Reload),
    ]
}

/// The lowest number at or above `floor` not in `accepted` (saturating at the top).
fn model_next(floor: u64, accepted: &BTreeSet<u64>) -> u64 {
    let mut n = floor;
    while accepted.contains(&n) && n < u64::MAX {
        n += 1;
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn window_matches_model(ops in prop::collection::vec(op(), 1..200)) {
        let mut w = SeqWindow::default();
        let mut accepted = BTreeSet::new();
        let mut floor = 0u64;
        for op in ops {
            match op {
                Op::Claim(s) => {
                    let expect = s >= floor && !accepted.contains(&s);
                    prop_assert_eq!(w.claim(s), expect, "claim({})", s);
                    if expect {
                        accepted.insert(s);
                    }
                }
                Op::Floor(f) => {
                    let before = w.clone();
                    w.raise_floor(f);
                    if f <= before.next() {
                        prop_assert_eq!(&w, &before, "a lower floor changed the window");
                    }
                    floor = floor.max(f);
                }
                Op::Reload => {
                    let back = SeqWindow::decode(&w.encode());
                    prop_assert_eq!(back.as_ref(), Some(&w));
                    w = back.unwrap_or_default();
                }
            }
            prop_assert_eq!(w.next(), model_next(floor, &accepted));
        }
    }

    #[test]
    fn decode_never_panics(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Some(w) = SeqWindow::decode(&raw) {
            prop_assert_eq!(SeqWindow::decode(&w.encode()), Some(w));
        }
    }
}
