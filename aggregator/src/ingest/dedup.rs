//! Replay de-duplication: which sequence numbers of a collector were already ingested.
//!
//! Batches of one collector arrive in any order (several are in flight) and may be
//! re-sent after a crash, so per collector we keep `next` (every seq below it was
//! ingested, or dropped at the edge) and the set of ingested seqs above it. The set
//! stays as small as the collector's in-flight window: it drains into `next` as
//! gaps fill, and each batch's floor (see `edgewatch_otlp::HEADER_FLOOR`) closes
//! gaps left by entries the collector dropped.

use std::collections::BTreeSet;

/// Entries above `next` we remember at most; beyond it the oldest are folded into
/// `next` (they can then no longer be told apart from replays).
const MAX_ABOVE: usize = 65_536;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqWindow {
    next: u64,
    above: BTreeSet<u64>,
}

impl SeqWindow {
    /// Every sequence number below this one is settled.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Everything below `floor` is settled at the edge.
    pub fn raise_floor(&mut self, floor: u64) {
        if floor > self.next {
            self.next = floor;
            self.above = self.above.split_off(&floor);
            self.compact();
        }
    }

    /// True when `seq` is new (and records it); false for a replay.
    pub fn claim(&mut self, seq: u64) -> bool {
        if seq < self.next || !self.above.insert(seq) {
            return false;
        }
        self.compact();
        true
    }

    fn compact(&mut self) {
        while self.above.len() > MAX_ABOVE {
            if let Some(first) = self.above.pop_first() {
                self.next = first.saturating_add(1);
            }
        }
        // `u64::MAX` itself can be claimed but never folded into `next`: there is
        // no number above it to say "everything below is settled".
        while self.next < u64::MAX && self.above.first() == Some(&self.next) {
            self.above.pop_first();
            self.next += 1;
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * (1 + self.above.len()));
        out.extend_from_slice(&self.next.to_le_bytes());
        for s in &self.above {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    pub fn decode(raw: &[u8]) -> Option<Self> {
        if raw.len() < 8 || !raw.len().is_multiple_of(8) {
            return None;
        }
        let mut words = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        let next = words.next()?;
        Some(SeqWindow {
            next,
            above: words.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_replay_and_out_of_order() {
        let mut w = SeqWindow::default();
        assert!(w.claim(0));
        assert!(w.claim(1));
        assert!(!w.claim(1), "replay");
        assert!(w.claim(3), "ahead of a gap");
        assert!(!w.claim(3));
        assert!(w.claim(2), "gap filled late");
        assert_eq!(w.next, 4);
        assert!(w.above.is_empty());
    }

    #[test]
    fn floor_closes_gaps_of_dropped_entries() {
        let mut w = SeqWindow::default();
        assert!(w.claim(100));
        assert_eq!(w.above.len(), 1);
        w.raise_floor(100);
        assert_eq!(w.next, 101);
        assert!(w.above.is_empty());
        assert!(!w.claim(50), "below the floor is settled");
        w.raise_floor(10); // a lower floor changes nothing
        assert_eq!(w.next, 101);
    }

    #[test]
    fn round_trips_through_bytes() {
        let mut w = SeqWindow::default();
        for s in [0, 1, 5, 9] {
            w.claim(s);
        }
        assert_eq!(SeqWindow::decode(&w.encode()), Some(w));
        assert_eq!(SeqWindow::decode(&[1, 2, 3]), None);
    }

    /// Found by the `seq_window_props` property test: `next` overflowed.
    #[test]
    fn the_last_sequence_number_does_not_overflow() {
        let mut w = SeqWindow::default();
        assert!(w.claim(u64::MAX));
        w.raise_floor(u64::MAX);
        assert_eq!(w.next(), u64::MAX);
        assert!(!w.claim(u64::MAX), "replay of the last number");
        let mut w = SeqWindow::default();
        w.raise_floor(u64::MAX);
        assert!(w.claim(u64::MAX));
        assert!(!w.claim(u64::MAX));
        assert_eq!(SeqWindow::decode(&w.encode()), Some(w));
    }

    #[test]
    fn the_top_of_the_range_does_not_overflow() {
        let mut w = SeqWindow::default();
        w.raise_floor(u64::MAX - 1);
        assert!(w.claim(u64::MAX - 1));
        assert_eq!(w.next, u64::MAX);
        assert!(w.claim(u64::MAX));
        assert!(!w.claim(u64::MAX), "replay");
        let mut w = SeqWindow::default();
        for s in (u64::MAX - MAX_ABOVE as u64)..=u64::MAX {
            w.claim(s);
        }
        assert!(w.above.len() <= MAX_ABOVE);
    }

    #[test]
    fn stays_bounded() {
        let mut w = SeqWindow::default();
        for s in 1..(MAX_ABOVE as u64 + 10) {
            w.claim(s); // seq 0 never arrives
        }
        assert!(w.above.len() <= MAX_ABOVE);
    }
}
