//! Prometheus' label limits (`label_limit`, `label_name_length_limit`,
//! `label_value_length_limit`) on a sample as it will be stored: its labels after the
//! target's are applied, plus `__name__`, `job` and `instance`, as Prometheus counts
//! them. `sample_limit` is enforced while parsing ([`super::parse::parse_within`]).
//! Over a limit the whole scrape fails, as in Prometheus.

use super::TargetIdentity;
use edgewatch_config::collector::ScrapeLimits;

/// Which limit a scrape went over; the messages are Prometheus' (names and values
/// cut to 50 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("sample_limit exceeded (limit: {limit})")]
    Samples { limit: u64 },
    #[error("label_limit exceeded (metric: {metric}, number of labels: {count}, limit: {limit})")]
    Labels {
        metric: String,
        count: u64,
        limit: u64,
    },
    #[error("label_name_length_limit exceeded (metric: {metric}, label name: {name}, length: {length}, limit: {limit})")]
    NameLength {
        metric: String,
        name: String,
        length: u64,
        limit: u64,
    },
    #[error("label_value_length_limit exceeded (metric: {metric}, label name: {name}, value: {value:?}, length: {length}, limit: {limit})")]
    ValueLength {
        metric: String,
        name: String,
        value: String,
        length: u64,
        limit: u64,
    },
}

impl LimitError {
    /// The `reason` label of `edgewatch_scrape_failures_total`. Prometheus counts
    /// the three label limits in one counter (`…_exceeded_label_limits_total`); so
    /// does this.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitError::Samples { .. } => "sample_limit",
            _ => "label_limit",
        }
    }
}

/// Checks one sample named `name` with `labels` (the target's labels applied) of
/// `target`.
pub fn check_labels(
    name: &str,
    labels: &[(String, String)],
    target: &TargetIdentity,
    limits: &ScrapeLimits,
) -> Result<(), LimitError> {
    // `__name__`, `job`, `instance` come on top of the point's attributes.
    let count = labels.len() as u64 + 3;
    if limits.label_limit > 0 && count > limits.label_limit {
        return Err(LimitError::Labels {
            metric: cut(name),
            count,
            limit: limits.label_limit,
        });
    }
    if limits.label_name_length_limit == 0 && limits.label_value_length_limit == 0 {
        return Ok(());
    }
    let fixed = [
        ("__name__", name),
        ("job", target.job.as_str()),
        ("instance", target.instance.as_str()),
    ];
    let all = fixed
        .into_iter()
        .chain(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (k, v) in all {
        let limit = limits.label_name_length_limit;
        if limit > 0 && k.len() as u64 > limit {
            return Err(LimitError::NameLength {
                metric: cut(name),
                name: cut(k),
                length: k.len() as u64,
                limit,
            });
        }
        let limit = limits.label_value_length_limit;
        if limit > 0 && v.len() as u64 > limit {
            return Err(LimitError::ValueLength {
                metric: cut(name),
                name: cut(k),
                value: cut(v),
                length: v.len() as u64,
                limit,
            });
        }
    }
    Ok(())
}

/// The first 50 characters, as Prometheus' `%.50s` quotes names in its messages.
fn cut(s: &str) -> String {
    s.chars().take(50).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("l{i}"), "v".to_string())).collect()
    }

    fn target() -> TargetIdentity {
        TargetIdentity {
            job: "job".into(),
            instance: "127.0.0.1:9100".into(),
            ..Default::default()
        }
    }

    #[test]
    fn label_count_includes_name_job_and_instance() {
        let limits = ScrapeLimits {
            label_limit: 5,
            ..Default::default()
        };
        assert_eq!(check_labels("m", &labels(2), &target(), &limits), Ok(()));
        let e = check_labels("m", &labels(3), &target(), &limits).unwrap_err();
        assert_eq!(
            e.to_string(),
            "label_limit exceeded (metric: m, number of labels: 6, limit: 5)"
        );
        assert_eq!(e.reason(), "label_limit");
        let none = ScrapeLimits::default();
        assert_eq!(check_labels("m", &labels(100), &target(), &none), Ok(()));
    }

    #[test]
    fn lengths_are_bytes_of_every_label_also_the_name_and_the_target_s() {
        let names = ScrapeLimits {
            label_name_length_limit: 8,
            ..Default::default()
        };
        let long = vec![("abcdefghi".to_string(), "v".to_string())];
        let e = check_labels("m", &long, &target(), &names).unwrap_err();
        assert!(matches!(e, LimitError::NameLength { length: 9, .. }), "{e}");
        assert_eq!(e.reason(), "label_limit");
        assert_eq!(check_labels("m", &labels(3), &target(), &names), Ok(()));

        let values = ScrapeLimits {
            label_value_length_limit: 14,
            ..Default::default()
        };
        // `instance` is 14 bytes: at the limit, not over it.
        assert_eq!(check_labels("m", &labels(1), &target(), &values), Ok(()));
        let e = check_labels("fifteen_bytes_x", &[], &target(), &values).unwrap_err();
        assert!(
            matches!(&e, LimitError::ValueLength { name, length: 15, .. } if name == "__name__"),
            "{e}"
        );
        // Bytes, not characters: 8 two-byte characters are 16 bytes.
        let wide = vec![("l".to_string(), "é".repeat(8))];
        assert!(check_labels("m", &wide, &target(), &values).is_err());
        // Quoted cut at 50 characters, on a character boundary.
        let e = check_labels("m", &[("l".into(), "é".repeat(60))], &target(), &values)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("value: \"{}\"", "é".repeat(50))), "{e}");
    }
}
