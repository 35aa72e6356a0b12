//! Alerts as the notifier sees them: identity (fingerprint), status at a time, label
//! sets printed the Alertmanager way, and RFC 3339 times as Go prints them.

use super::Alert;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub type Labels = BTreeMap<String, String>;

/// Prometheus' label-set fingerprint (FNV-1a 64 over sorted `name 0xff value 0xff`),
/// the `fingerprint` Alertmanager shows (as `%016x`).
pub fn fingerprint(labels: &Labels) -> u64 {
    const OFFSET: u64 = 14695981039346656037;
    const PRIME: u64 = 1099511628211;
    let mut h = OFFSET;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

pub fn fingerprint_hex(fp: u64) -> String {
    format!("{fp:016x}")
}

/// Alertmanager's `LabelSet.String()`: `{a="b", c="d"}`.
pub fn labels_string(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

impl Alert {
    /// Resolved at `now`: its end time has passed.
    pub fn resolved_at(&self, now: SystemTime) -> bool {
        self.ends_at.is_some_and(|e| e <= now)
    }
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }
    pub fn alertname(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Labels (or annotations) shared with the same value by every map.
pub fn common<'a>(maps: impl IntoIterator<Item = &'a Labels>) -> Labels {
    let mut it = maps.into_iter();
    let Some(first) = it.next() else {
        return Labels::new();
    };
    let mut out = first.clone();
    for m in it {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub use edgewatch_prom::time::{rfc3339, ZERO_TIME};

/// A time that is not RFC 3339.
#[derive(Debug, thiserror::Error)]
#[error("invalid time {text:?}: {source}")]
pub struct TimeError {
    pub text: String,
    pub source: chrono::ParseError,
}

pub fn parse_rfc3339(s: &str) -> Result<SystemTime, TimeError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| SystemTime::from(d.with_timezone(&chrono::Utc)))
        .map_err(|source| TimeError {
            text: s.to_string(),
            source,
        })
}

/// Cuts a string to at most `max` bytes on a char boundary, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Labels written `a=1,b=2`, for tests.
#[cfg(test)]
pub(crate) fn test_labels(s: &str) -> Labels {
    s.split(',')
        .map(|p| p.split_once('=').expect("name=value"))
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_prometheus() {
        // prometheus/common model: LabelSet{}.Fingerprint() == FNV offset basis
        assert_eq!(fingerprint(&Labels::new()), 14695981039346656037);
        let l: Labels = [("alertname".to_string(), "X".to_string())].into();
        assert_ne!(fingerprint(&l), fingerprint(&Labels::new()));
        assert_eq!(fingerprint_hex(1), "0000000000000001");
    }

    #[test]
    fn formats() {
        let l: Labels = [
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "x\"y".to_string()),
        ]
        .into();
        assert_eq!(labels_string(&l), r#"{a="x\"y", b="2"}"#);
        assert_eq!(rfc3339(from_ms(1_700_000_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339(from_ms(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z").unwrap(),
            from_ms(1_700_000_000_123)
        );
        assert_eq!(truncate("héllo", 4), "h…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
