//! The forwarded-batch headers and the aggregator's replay window, applied as
//! ingest applies them. The input is lines; each group of four is one batch's
//! headers (collector id, first seq, entry lengths, floor; an empty line is a
//! missing header).
//!
//! Invariants: parsed headers survive `to_headers` → `from_headers`; the window
//! never accepts a sequence number twice nor one below a floor it was given,
//! refuses a new one only when it is below `next()`, never moves `next()` back,
//! and survives `encode` → `decode`.
#![no_main]

use edgewatch_aggregator::ingest::dedup::SeqWindow;
use edgewatch_otlp::{
    BatchInfo, HEADER_COLLECTOR_ID, HEADER_ENTRY_LENS, HEADER_FIRST_SEQ, HEADER_FLOOR,
};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

/// Claims per batch at most: enough to cross the window's own bound over a run.
const MAX_ENTRIES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let mut window = SeqWindow::default();
    let mut accepted = HashSet::new();
    let mut max_floor = 0u64;
    for batch in lines.chunks(4) {
        let header = |name: &str| {
            let i = [
                HEADER_COLLECTOR_ID,
                HEADER_FIRST_SEQ,
                HEADER_ENTRY_LENS,
                HEADER_FLOOR,
            ]
            .iter()
            .position(|h| *h == name)?;
            batch
                .get(i)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string())
        };
        let Ok(Some(info)) = BatchInfo::from_headers(header) else {
            continue;
        };
        let sent = info.to_headers();
        let back =
            BatchInfo::from_headers(|k| sent.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()));
        assert_eq!(back, Ok(Some(info.clone())), "headers round trip");

        let before = window.next();
        window.raise_floor(info.floor);
        max_floor = max_floor.max(info.floor);
        assert!(window.next() >= before.max(info.floor), "floor not applied");
        for i in 0..info.entry_lens.len().min(MAX_ENTRIES) as u64 {
            let Some(seq) = info.first_seq.checked_add(i) else {
                break;
            };
            let next_before = window.next();
            let fresh = window.claim(seq);
            if fresh {
                assert!(accepted.insert(seq), "seq {seq} accepted twice");
                assert!(
                    seq >= max_floor,
                    "seq {seq} below floor {max_floor} accepted"
                );
            } else {
                assert!(
                    accepted.contains(&seq) || seq < next_before,
                    "new seq {seq} refused (next {next_before})"
                );
            }
            assert!(window.next() >= next_before, "next moved back");
        }
        assert_eq!(
            SeqWindow::decode(&window.encode()).as_ref(),
            Some(&window),
            "encode/decode"
        );
    }
});
