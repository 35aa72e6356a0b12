//! The series notation of promtool's test files: `metric{label="value"}`
//! for label sets, and the expanding notation of `input_series` values
//! (Prometheus `promql/parser`'s `series_description` grammar):
//!
//! - `a` one value; `stale` a stale marker;
//! - `axn` the value `a`, `n + 1` times;
//! - `a+bxn`, `a-bxn` `n + 1` values from `a`, each `b` more (less) than the last;
//! - `_` a missing sample; `_xn` `n` missing samples (not `n + 1`).

use crate::promql::Labels;
use crate::store::STALE_NAN;
use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

/// Why a series or its values do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("invalid series {text:?}: {reason}")]
    Series { text: String, reason: String },
    #[error("invalid value {item:?} in {text:?}: expected a number, \"stale\" or \"_\", optionally followed by [+-]<number>x<count> or x<count>")]
    Value { item: String, text: String },
    #[error("{text:?} expands to more than {MAX_VALUES} values")]
    TooMany { text: String },
}

/// The most values one series expands to: a typo such as `1x99999999999`
/// is an error, not an attempt to allocate terabytes (115 days at 1s).
pub const MAX_VALUES: usize = 10_000_000;

/// Parses `metric{a="b", c="d"}`, `{__name__="metric"}`, `metric` or `{}`
/// into a label set (`__name__` included).
pub fn parse_labels(text: &str) -> Result<Labels, SeriesError> {
    let t = text.trim();
    if t.is_empty() || t == "{}" {
        return Ok(Labels::new());
    }
    let bad = |reason: &str| SeriesError::Series {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let expr = crate::promql::parse_expr(t).map_err(|e| bad(e.trim()))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(bad("not a series"));
    };
    if vs.offset.is_some() || vs.at.is_some() || !vs.matchers.or_matchers.is_empty() {
        return Err(bad("not a series"));
    }
    let mut labels = Labels::new();
    if let Some(name) = vs.name {
        labels.insert("__name__".to_string(), name);
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(bad("labels must be given with ="));
        }
        if !m.value.is_empty() {
            labels.insert(m.name, m.value);
        }
    }
    Ok(labels)
}

/// Expands a `values` string: one entry per step of the series' interval,
/// `None` where a sample is missing.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, SeriesError> {
    let mut out = Vec::new();
    for item in text.split_ascii_whitespace() {
        expand_item(item, &mut out).map_err(|e| match e {
            ItemError::Invalid => SeriesError::Value {
                item: item.to_string(),
                text: text.to_string(),
            },
            ItemError::TooMany => SeriesError::TooMany {
                text: text.to_string(),
            },
        })?;
    }
    Ok(out)
}

enum ItemError {
    Invalid,
    TooMany,
}

/// Appends `item`'s values to `out`, which stays within [`MAX_VALUES`].
fn expand_item(item: &str, out: &mut Vec<Option<f64>>) -> Result<(), ItemError> {
    let room = |n: usize, out: &Vec<Option<f64>>| {
        n.checked_add(out.len())
            .is_some_and(|total| total <= MAX_VALUES)
            .then_some(())
            .ok_or(ItemError::TooMany)
    };
    if let Some(rest) = item.strip_prefix('_') {
        let n = if rest.is_empty() { 1 } else { times(rest)? };
        room(n, out)?;
        out.extend(std::iter::repeat_n(None, n));
        return Ok(());
    }
    let (first, rest) = match item.strip_prefix("stale") {
        Some(rest) => (STALE_NAN, rest),
        None => number(item)?,
    };
    if rest.is_empty() {
        room(1, out)?;
        out.push(Some(first));
        return Ok(());
    }
    let (step, rest) = if rest.starts_with(['+', '-']) {
        let (step, rest) = number(rest)?;
        (Some(step), rest)
    } else {
        (None, rest)
    };
    let n = times(rest)?;
    room(n.checked_add(1).ok_or(ItemError::TooMany)?, out)?;
    match step {
        // `axn`: copies (a stale marker stays one; adding 0 would not keep it).
        None => out.extend(std::iter::repeat_n(Some(first), n + 1)),
        Some(step) => {
            // Repeated addition, as Prometheus does: `0.1+0.1x2` is 0.1, 0.2, 0.30000000000000004.
            let mut v = first;
            for _ in 0..=n {
                out.push(Some(v));
                v += step;
            }
        }
    }
    Ok(())
}

/// `x<count>`.
fn times(s: &str) -> Result<usize, ItemError> {
    let digits = s.strip_prefix('x').ok_or(ItemError::Invalid)?;
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ItemError::Invalid);
    }
    // Past usize: a count no series could hold.
    digits.parse().map_err(|_| ItemError::TooMany)
}

/// A leading (optionally signed) number: `12`, `-1.5e3`, `+Inf`, `NaN`;
/// returns it and the text after it.
fn number(s: &str) -> Result<(f64, &str), ItemError> {
    let (sign, body) = match s.as_bytes().first().ok_or(ItemError::Invalid)? {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    for (word, v) in [("inf", f64::INFINITY), ("nan", f64::NAN)] {
        if body.get(..3).is_some_and(|w| w.eq_ignore_ascii_case(word)) {
            return Ok((sign * v, &body[3..]));
        }
    }
    let b = body.as_bytes();
    let mut i = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(i) == Some(&b'.') {
        i += 1;
        i += b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp > 0 {
            i = j + exp;
        }
    }
    let v: f64 = body[..i].parse().map_err(|_| ItemError::Invalid)?;
    Ok((sign * v, &body[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(v: &[Option<f64>]) -> String {
        v.iter()
            .map(|x| match x {
                None => "_".to_string(),
                Some(f) if f.to_bits() == STALE_NAN.to_bits() => "stale".to_string(),
                Some(f) => f.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn expanding_notation() {
        let cases = [
            ("1", "1"),
            ("0 0", "0 0"),
            ("1+2x3", "1 3 5 7"),
            ("-2+4x3", "-2 2 6 10"),
            ("1-2x4", "1 -1 -3 -5 -7"),
            ("-1-1x4", "-1 -2 -3 -4 -5"),
            ("1x3", "1 1 1 1"),
            ("1x0", "1"),
            ("0+0x2", "0 0 0"),
            ("1 _x3 stale", "1 _ _ _ stale"),
            ("_", "_"),
            ("0 _ _ 0", "0 _ _ 0"),
            ("stale", "stale"),
            ("stalex2", "stale stale stale"),
            ("1.5+0.5x2", "1.5 2 2.5"),
            ("0.1+0.1x2", "0.1 0.2 0.30000000000000004"),
            ("1e3 -1e-1", "1000 -0.1"),
            ("2E+2+1e2x1", "200 300"),
            ("+Inf -inf", "inf -inf"),
            ("NaN", "NaN"),
            ("  1   2  ", "1 2"),
            ("", ""),
        ];
        for (input, want) in cases {
            let got = expand_values(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(show(&got), want, "{input:?}");
        }
    }

    #[test]
    fn expanding_notation_errors() {
        for input in [
            "a", "1x", "1+2", "1+2x", "1x-1", "_x", "_+1x2", "1+x3", "1 2y", "--1", "1+2x3x4",
            "ééé", "1+ééx2", "1xé", "_é",
        ] {
            assert!(expand_values(input).is_err(), "{input:?} should fail");
        }
    }

    proptest::proptest! {
        /// Test files come from users: any text is an error or a value, never a panic.
        #[test]
        fn any_text_parses_or_fails_cleanly(s in "[0-9a-fsxtléINn_+\\-.eE {}=\"]{0,16}") {
            if let Ok(v) = expand_values(&s) {
                proptest::prop_assert!(v.len() <= MAX_VALUES);
            }
            let _ = parse_labels(&s);
        }
    }

    #[test]
    fn too_many_values_is_an_error() {
        assert_eq!(expand_values("1x9999999").unwrap().len(), MAX_VALUES);
        for input in [
            "1x10000000",
            "1x99999999999999999999",
            "_x10000001",
            "0 1+1x9999999",
            "1x5000000 1x5000000",
        ] {
            assert!(
                matches!(
                    expand_values(input),
                    Err(SeriesError::TooMany { .. }) | Err(SeriesError::Value { .. })
                ),
                "{input:?}"
            );
        }
        assert!(matches!(
            expand_values("1x10000000"),
            Err(SeriesError::TooMany { .. })
        ));
    }

    #[test]
    fn series_labels() {
        let l = parse_labels(r#"up{job="a", instance="b:1"}"#).unwrap();
        assert_eq!(
            l.into_iter().collect::<Vec<_>>(),
            [
                ("__name__".to_string(), "up".to_string()),
                ("instance".to_string(), "b:1".to_string()),
                ("job".to_string(), "a".to_string()),
            ]
        );
        assert_eq!(parse_labels("{}").unwrap().len(), 0);
        assert_eq!(parse_labels("").unwrap().len(), 0);
        assert_eq!(parse_labels(r#"{a="1"}"#).unwrap().len(), 1);
        assert_eq!(parse_labels("job:x:rate5m").unwrap().len(), 1);
        for bad in [r#"up{a=~"x"}"#, "rate(up[5m])", "up{", "1"] {
            assert!(parse_labels(bad).is_err(), "{bad:?}");
        }
    }
}
