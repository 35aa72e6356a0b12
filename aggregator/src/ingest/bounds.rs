//! What a forwarded batch's headers may claim. The headers are the sender's word
//! and move durable state (the replay window), so they are checked before any of
//! it is touched:
//!
//! - Arithmetic on them is checked: the batch's sequence numbers
//!   `first_seq .. first_seq + entries` must fit in a u64, and the entry lengths
//!   must add up to the body's length without overflowing.
//! - `floor` may not exceed the batch's last sequence number + 1: a collector never
//!   says it settled entries it has not even sent.
//! - For a collector this aggregator knows, the batch may start at most
//!   [`AHEAD_BASE`] + [`AHEAD_PER_SEC`] × (seconds since its window last moved)
//!   ahead of its window. A collector can only jump by what it appended since
//!   (entries its buffer dropped with `drop_oldest` while the core did not take
//!   them, or the backlog it already held): the base covers more entries than any
//!   edge buffer holds, the rate more than a buffer can append. A forged floor of
//!   `u64::MAX` would otherwise make every later batch of that collector look like a
//!   replay, forever. A collector the aggregator does not know may start anywhere
//!   (its id is namespaced by the cluster its credentials prove, so a new id
//!   touches no other cluster's state).
//!
//! A batch outside these bounds is INVALID_ARGUMENT (HTTP 400) naming the header,
//! and nothing of it is stored or persisted.

use edgewatch_otlp::{BatchInfo, ExportError, HEADER_ENTRY_LENS, HEADER_FIRST_SEQ, HEADER_FLOOR};

/// Entries a known collector may be ahead of its window at any time: 2^32, more
/// than a buffer of 1 TiB holds in entries of 256 bytes.
pub const AHEAD_BASE: u64 = 1 << 32;
/// Entries a known collector may append per second of silence: about a million,
/// far beyond what an edge buffer's fsync'd appends reach.
pub const AHEAD_PER_SEC: u64 = 1 << 20;

/// The sequence numbers a batch covers: `first .. end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub end: u64,
}

/// Checks what the headers say about themselves and the body (no state needed).
pub fn check_headers(info: &BatchInfo, body_len: usize) -> Result<Span, ExportError> {
    let total = info
        .entry_lens
        .iter()
        .try_fold(0usize, |sum, l| sum.checked_add(*l));
    if total != Some(body_len) {
        let total = total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string());
        return Err(ExportError::InvalidArgument(format!(
            "{HEADER_ENTRY_LENS}: entry lengths add up to {total} bytes but the body has {body_len}"
        )));
    }
    let end = u64::try_from(info.entry_lens.len())
        .ok()
        .and_then(|n| info.first_seq.checked_add(n))
        .ok_or_else(|| {
            ExportError::InvalidArgument(format!(
                "{HEADER_FIRST_SEQ}: {} + {} entries is beyond the largest sequence number",
                info.first_seq,
                info.entry_lens.len()
            ))
        })?;
    if info.floor > end {
        return Err(ExportError::InvalidArgument(format!(
            "{HEADER_FLOOR}: {} is above the batch's last sequence number + 1 ({end})",
            info.floor
        )));
    }
    Ok(Span {
        first: info.first_seq,
        end,
    })
}

/// What the aggregator knows of a collector's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Every sequence number below this one is settled.
    pub next: u64,
    /// When its window last moved (ms since the epoch; 0 when unknown).
    pub moved_ms: i64,
}

/// How far ahead of `known.next` a batch may start at `now_ms`.
pub fn allowed_ahead(known: Known, now_ms: i64) -> u64 {
    let silent_secs = u64::try_from(now_ms.saturating_sub(known.moved_ms) / 1000).unwrap_or(0);
    AHEAD_BASE.saturating_add(silent_secs.saturating_mul(AHEAD_PER_SEC))
}

/// Checks a batch's start and floor against what is known of its collector;
/// `None`: a collector this aggregator never saw, which may start anywhere.
pub fn check_ahead(info: &BatchInfo, known: Option<Known>, now_ms: i64) -> Result<(), ExportError> {
    let Some(known) = known else { return Ok(()) };
    let allowed = allowed_ahead(known, now_ms);
    for (header, value) in [
        (HEADER_FIRST_SEQ, info.first_seq),
        (HEADER_FLOOR, info.floor),
    ] {
        let ahead = value.saturating_sub(known.next);
        if ahead > allowed {
            return Err(ExportError::InvalidArgument(format!(
                "{header}: {value} is {ahead} ahead of this collector's next sequence number {} (at most {allowed} now)",
                known.next
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(first_seq: u64, entry_lens: Vec<usize>, floor: u64) -> BatchInfo {
        BatchInfo {
            collector_id: "c".into(),
            first_seq,
            entry_lens,
            floor,
        }
    }

    #[test]
    fn headers_against_themselves_and_the_body() {
        let cases: &[(BatchInfo, usize, Result<u64, &str>)] = &[
            (info(0, vec![3, 4], 0), 7, Ok(2)),
            (info(10, vec![3], 11), 3, Ok(11)),
            (info(10, vec![3], 12), 3, Err(HEADER_FLOOR)),
            (info(0, vec![3], u64::MAX), 3, Err(HEADER_FLOOR)),
            (info(0, vec![3, 4], 0), 8, Err(HEADER_ENTRY_LENS)),
            (info(0, vec![usize::MAX, 2], 0), 1, Err(HEADER_ENTRY_LENS)),
            (info(u64::MAX, vec![1], 0), 1, Err(HEADER_FIRST_SEQ)),
            (info(u64::MAX - 2, vec![1, 1], 0), 2, Ok(u64::MAX)),
            (info(u64::MAX - 1, vec![1, 1], 0), 2, Err(HEADER_FIRST_SEQ)),
        ];
        for (i, body, want) in cases {
            match (check_headers(i, *body), want) {
                (Ok(span), Ok(end)) => assert_eq!(span.end, *end, "{i:?}"),
                (Err(ExportError::InvalidArgument(m)), Err(header)) => {
                    assert!(m.starts_with(header), "{i:?}: {m}")
                }
                (got, _) => panic!("{i:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn how_far_ahead_a_known_collector_may_start() {
        let known = Known {
            next: 100,
            moved_ms: 1_000_000,
        };
        let now = 1_000_000;
        // (what is known, the batch, now, Err: the header named)
        type Case = (Option<Known>, BatchInfo, i64, Result<(), &'static str>);
        let cases: &[Case] = &[
            // Unknown collectors start anywhere.
            (None, info(u64::MAX - 1, vec![1], u64::MAX), now, Ok(())),
            (Some(known), info(100, vec![1], 100), now, Ok(())),
            // Behind the window: replays.
            (Some(known), info(0, vec![1], 0), now, Ok(())),
            (
                Some(known),
                info(100 + AHEAD_BASE, vec![1], 100),
                now,
                Ok(()),
            ),
            (
                Some(known),
                info(101 + AHEAD_BASE, vec![1], 100),
                now,
                Err(HEADER_FIRST_SEQ),
            ),
            (
                Some(known),
                info(100, vec![1], 101 + AHEAD_BASE),
                now,
                Err(HEADER_FLOOR),
            ),
            (
                Some(known),
                info(100, vec![1], u64::MAX),
                now,
                Err(HEADER_FLOOR),
            ),
            // Ten seconds of silence allow ten times the rate more.
            (
                Some(known),
                info(100 + AHEAD_BASE + 10 * AHEAD_PER_SEC, vec![1], 100),
                now + 10_000,
                Ok(()),
            ),
            (
                Some(known),
                info(101 + AHEAD_BASE + 10 * AHEAD_PER_SEC, vec![1], 100),
                now + 10_999,
                Err(HEADER_FIRST_SEQ),
            ),
            // A clock that went back allows the base only.
            (
                Some(known),
                info(101 + AHEAD_BASE, vec![1], 100),
                now - 5_000,
                Err(HEADER_FIRST_SEQ),
            ),
            // A window kept by an older version has no time: counted from the epoch.
            (
                Some(Known {
                    next: 5,
                    moved_ms: 0,
                }),
                info(1 << 50, vec![1], 0),
                1_800_000_000_000,
                Ok(()),
            ),
        ];
        for (known, i, at, want) in cases {
            match (check_ahead(i, *known, *at), want) {
                (Ok(()), Ok(())) => {}
                (Err(ExportError::InvalidArgument(m)), Err(header)) => {
                    assert!(m.starts_with(header), "{i:?}: {m}")
                }
                (got, _) => panic!("{known:?} {i:?} at {at}: {got:?}, want {want:?}"),
            }
        }
    }
}
