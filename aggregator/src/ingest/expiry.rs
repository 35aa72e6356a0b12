//! Collector ids do not live forever. A collector's replay state is kept in memory
//! while it sends, and evicted after [`EVICT_IDLE`] without a batch (it is read back
//! from the log when the collector comes back). Its persisted window is forgotten
//! after `state.collector_expiry` (default 30 days) without moving: a collector back
//! after that starts as a new one. That bound must be longer than any edge buffer
//! keeps entries (`buffer.max_age`), or the entries a collector had sent without
//! getting the answer could be ingested twice.
//!
//! A persisted window carries the time it last moved ([`Stored`]), which is also
//! what bounds how far ahead a collector may jump (`bounds.rs`).

use super::dedup::SeqWindow;

/// A collector without a batch for this long leaves the in-memory map.
pub const EVICT_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Marks the persisted form that carries a time (a legacy window is a multiple of
/// 8 bytes long; this one is 1 more).
const TAG: u8 = 1;

/// A collector's window as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub window: SeqWindow,
    /// When it last moved (ms since the epoch); 0 for a window an older version
    /// wrote, whose time is unknown.
    pub moved_ms: i64,
}

impl Stored {
    pub fn encode(&self) -> Vec<u8> {
        encode(&self.window, self.moved_ms)
    }

    pub fn decode(raw: &[u8]) -> Option<Stored> {
        match raw {
            [TAG, rest @ ..] if raw.len() % 8 == 1 && rest.len() >= 8 => {
                let (time, window) = rest.split_at(8);
                Some(Stored {
                    window: SeqWindow::decode(window)?,
                    moved_ms: i64::from_le_bytes(time.try_into().ok()?),
                })
            }
            _ => Some(Stored {
                window: SeqWindow::decode(raw)?,
                moved_ms: 0,
            }),
        }
    }
}

/// The persisted form of `window`, moved at `moved_ms`.
pub fn encode(window: &SeqWindow, moved_ms: i64) -> Vec<u8> {
    let window = window.encode();
    let mut out = Vec::with_capacity(9 + window.len());
    out.push(TAG);
    out.extend_from_slice(&moved_ms.to_le_bytes());
    out.extend_from_slice(&window);
    out
}

/// What to do with a persisted window at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Silent beyond the expiry: remove it.
    Forget,
    /// A legacy window (or one that does not decode): give it the current time,
    /// so it expires from now on.
    Stamp(Vec<u8>),
}

pub fn verdict(raw: &[u8], now_ms: i64, expiry_ms: i64) -> Verdict {
    match Stored::decode(raw) {
        Some(s) if s.moved_ms == 0 => Verdict::Stamp(encode(&s.window, now_ms)),
        Some(s) if now_ms.saturating_sub(s.moved_ms) > expiry_ms => Verdict::Forget,
        Some(_) => Verdict::Keep,
        None => Verdict::Forget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(seqs: &[u64]) -> SeqWindow {
        let mut w = SeqWindow::default();
        for s in seqs {
            w.claim(*s);
        }
        w
    }

    #[test]
    fn stored_round_trips_and_reads_the_legacy_form() {
        let s = Stored {
            window: window(&[0, 1, 5]),
            moved_ms: 1_700_000_000_000,
        };
        assert_eq!(Stored::decode(&s.encode()), Some(s.clone()));
        let legacy = Stored::decode(&s.window.encode()).unwrap();
        assert_eq!(legacy.window, s.window);
        assert_eq!(legacy.moved_ms, 0);
        assert_eq!(Stored::decode(&[TAG, 1, 2]), None);
        assert_eq!(Stored::decode(&[]), None);
    }

    #[test]
    fn verdicts() {
        let day = 86_400_000;
        let now = 100 * day;
        let at = |moved_ms| {
            Stored {
                window: window(&[0]),
                moved_ms,
            }
            .encode()
        };
        let legacy = window(&[0]).encode();
        let cases: &[(Vec<u8>, Verdict)] = &[
            (at(now), Verdict::Keep),
            (at(now - 30 * day), Verdict::Keep),
            (at(now - 30 * day - 1), Verdict::Forget),
            (at(now + day), Verdict::Keep),
            (legacy.clone(), Verdict::Stamp(at(now))),
            (vec![7, 7, 7], Verdict::Forget),
        ];
        for (raw, want) in cases {
            assert_eq!(&verdict(raw, now, 30 * day), want, "{raw:?}");
        }
    }
}
