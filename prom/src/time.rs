//! Wall-clock time in the forms Prometheus and Alertmanager use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Go's zero `time.Time` as its JSON encoder writes it; Prometheus and
/// Alertmanager show it for times that are not set (a firing alert's `endsAt`,
/// a rule never evaluated).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits (Go's `RFC3339Nano`
/// minus the trailing-zero trimming within a group).
#[cfg(feature = "rfc3339")]
pub fn rfc3339(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }

    #[cfg(feature = "rfc3339")]
    #[test]
    fn rfc3339_fraction_groups() {
        use std::time::Duration;
        let at = |ms: u64, ns: u32| {
            UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_nanos(ns as u64)
        };
        assert_eq!(rfc3339(at(1_700_000_000_000, 0)), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339(at(1_700_000_000_123, 0)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            rfc3339(at(1_700_000_000_100, 0)),
            "2023-11-14T22:13:20.100Z"
        );
        assert_eq!(
            rfc3339(at(1_700_000_000_000, 1_500)),
            "2023-11-14T22:13:20.000001500Z"
        );
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
