//! Metric and label name rules of the Prometheus data model (legacy, ASCII
//! validation: what Prometheus 2 and the text exposition format accept).

/// The label that holds the metric name in matchers and label sets.
pub const METRIC_NAME: &str = "__name__";

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b.first(), Some(c) if c.is_ascii_alphabetic() || matches!(c, b'_' | b':'))
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b':'))
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b.first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for ok in ["a", "_", ":", "a:b_c9", "job:up:sum", "A_1"] {
            assert!(valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é", "a.b", "aé"] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
    }

    #[test]
    fn label_names() {
        for ok in ["a", "_", "__name__", "le", "A_9"] {
            assert!(valid_label_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a:b", ":", "a-b", "é", "aé"] {
            assert!(!valid_label_name(bad), "{bad}");
        }
    }
}
