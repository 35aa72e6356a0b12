//! Floats exactly as Prometheus' Go code writes and reads them.
//!
//! - [`format_g`] / [`append_g`]: Go's `strconv.FormatFloat(f, 'g', -1, 64)`,
//!   the form client libraries write `le` and `quantile` label values in and
//!   Go templates print `%v` in.
//! - [`write_text_float`] / [`write_om_float`] / [`write_om_timestamp`]:
//!   prometheus/common expfmt's `writeFloat` and `writeOpenMetricsFloat`, the
//!   same digits with their special cases (`-0` written as `0`, `.0` on
//!   OpenMetrics integers). The appenders write into a caller's buffer and
//!   allocate nothing: `/federate` renders every sample through them.
//! - [`format_e`]: `strconv.FormatFloat(f, 'e', -1, 64)` (the rules API's
//!   alert values).
//! - [`parse_float`]: `strconv.ParseFloat` for what expositions contain.

use std::fmt::Write as _;

/// A fixed stack buffer for `{:e}` output (shortest round-trip digits).
struct Stack {
    buf: [u8; 40],
    len: usize,
}

impl std::fmt::Write for Stack {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Go's `strconv.AppendFloat(f, 'g', -1, 64)` for finite, non-zero `f`:
/// shortest round-trip digits; `%e` form (`d.ddde±XX`, at least two exponent
/// digits) when the decimal exponent is < -4 or >= 6 (Go uses precision 6 for
/// that decision in shortest mode), plain decimal otherwise.
fn append_g_finite(out: &mut Vec<u8>, f: f64) {
    let mut s = Stack {
        buf: [0; 40],
        len: 0,
    };
    // Rust's LowerExp without precision prints the shortest representation
    // that round-trips, like Go's shortest mode: "1.2345e-7", "5e0".
    let _ = write!(s, "{:e}", f.abs());
    let text = &s.buf[..s.len];
    let epos = text.iter().position(|&c| c == b'e').unwrap_or(text.len());
    let (mant, exp) = (&text[..epos], &text[epos + 1..]);
    let exp: i32 = std::str::from_utf8(exp)
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for &c in mant {
        if c.is_ascii_digit() && nd < digits.len() {
            digits[nd] = c;
            nd += 1;
        }
    }
    let digits = &digits[..nd];
    if f.is_sign_negative() {
        out.push(b'-');
    }
    // strconv/ftoa.go formatDigits, case 'g' with shortest: eprec = 6;
    // exp := dp - 1; if exp < -4 || exp >= eprec → %e.
    if !(-4..6).contains(&exp) {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        append_u64(out, e as u64);
    } else {
        // %f with max(nd - dp, 0) fraction digits, dp = exp + 1.
        let dp = exp + 1;
        if dp <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-dp) as usize));
            out.extend_from_slice(digits);
        } else {
            let dp = dp as usize;
            if nd <= dp {
                out.extend_from_slice(digits);
                out.extend(std::iter::repeat_n(b'0', dp - nd));
            } else {
                out.extend_from_slice(&digits[..dp]);
                out.push(b'.');
                out.extend_from_slice(&digits[dp..]);
            }
        }
    }
}

/// Go's `strconv.AppendFloat(f, 'g', -1, 64)`: `NaN`, `+Inf`, `-Inf`, `-0`
/// included.
pub fn append_g(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if f == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else if f == 0.0 {
        out.extend_from_slice(if f.is_sign_negative() { b"-0" } else { b"0" });
    } else {
        append_g_finite(out, f);
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`, which is also what Go's `%v`
/// prints for a float64.
pub fn format_g(f: f64) -> String {
    let mut out = Vec::with_capacity(24);
    append_g(&mut out, f);
    // Only ASCII digits, signs, '.', 'e' and the special names are written.
    String::from_utf8(out).expect("ASCII")
}

/// Go's `strconv.FormatFloat(f, 'e', -1, 64)`: shortest digits, always in
/// exponent form with at least two exponent digits (`1e+00`, `2.5e-07`).
pub fn format_e(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    go_exponent(&format!("{f:e}"))
}

/// Rewrites Rust's exponent notation the way Go writes it: a sign and at
/// least two digits (`1.5e6` → `1.5e+06`, `1.5e-6` → `1.5e-06`). Text
/// without an exponent comes back as it is.
pub fn go_exponent(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, d) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{d:0>2}")
        }
        None => s.to_string(),
    }
}

/// A sample value or label float in the text format 0.0.4 (expfmt
/// `writeFloat`): Go's 'g' form, except that `-0` is written `0`.
#[inline]
pub fn write_text_float(out: &mut Vec<u8>, f: f64) {
    write_float(out, f, false);
}

/// An OpenMetrics float (expfmt `writeOpenMetricsFloat`): like Go 'g' but an
/// integral value gets `.0`.
#[inline]
pub fn write_om_float(out: &mut Vec<u8>, f: f64) {
    write_float(out, f, true);
}

/// Both exposition formats: Go's shortest 'g' (integers below 1e6 print as plain
/// integers, `-0` as `0`), with `.0` after an integral value in OpenMetrics.
#[inline]
fn write_float(out: &mut Vec<u8>, f: f64, openmetrics: bool) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if f == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else if f.fract() == 0.0 && f.abs() < 1e6 {
        append_i64(out, f as i64);
        if openmetrics {
            out.extend_from_slice(b".0");
        }
    } else {
        let start = out.len();
        append_g_finite(out, f);
        if openmetrics && !out[start..].iter().any(|&c| c == b'e' || c == b'.') {
            out.extend_from_slice(b".0");
        }
    }
}

/// An OpenMetrics timestamp (seconds) from ms, exactly as expfmt writes
/// `float64(ms)/1000` — without float formatting for realistic timestamps:
/// for 1e9 <= ms < 1e15 the shortest round-trip digits of ms/1000 are the
/// decimal digits of ms (a shorter decimal is at least 1e-3 away while the
/// double's rounding interval, below 1.3e-4 there, is far smaller), and the
/// decimal exponent is >= 6, so Go prints `d.ddde+XX`.
#[inline]
pub fn write_om_timestamp(out: &mut Vec<u8>, ms: i64) {
    if !(1_000_000_000..1_000_000_000_000_000).contains(&ms) {
        write_om_float(out, ms as f64 / 1000.0);
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = ms as u64;
    while v > 0 {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    let digits = &buf[i..];
    let exp = digits.len() as i64 - 1 - 3;
    let mut nd = digits.len();
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    out.push(digits[0]);
    if nd > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[1..nd]);
    }
    out.extend_from_slice(b"e+");
    if exp < 10 {
        out.push(b'0');
    }
    append_u64(out, exp as u64);
}

/// Decimal digits of `v`, without allocating.
#[inline]
pub fn append_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Decimal digits of `v` with a leading `-` when negative, without allocating.
#[inline]
pub fn append_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    append_u64(out, v.unsigned_abs());
}

/// Go's `strconv.ParseFloat(s, 64)` for what expositions contain: decimal and
/// exponent forms, `_` digit separators, `NaN`, `Inf`, `+Inf`, `-Inf` (also in
/// lower case). Hex floats are not accepted.
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => {
            let t = s.strip_prefix('+').unwrap_or(s);
            if t.is_empty()
                || !t.bytes().all(|c| {
                    c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+' | b'_')
                })
            {
                return None;
            }
            t.replace('_', "").parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: f64) -> String {
        let mut v = Vec::new();
        write_text_float(&mut v, f);
        String::from_utf8(v).unwrap()
    }
    fn om(f: f64) -> String {
        let mut v = Vec::new();
        write_om_float(&mut v, f);
        String::from_utf8(v).unwrap()
    }

    /// Values checked against Go's `strconv.FormatFloat(f, 'g', -1, 64)`.
    const GO_G: &[(f64, &str)] = &[
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (-1.0, "-1"),
        (2.0, "2"),
        (0.5, "0.5"),
        (0.1, "0.1"),
        (0.005, "0.005"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (2.5e-5, "2.5e-05"),
        (12.5, "12.5"),
        (-3.25, "-3.25"),
        (100.0, "100"),
        (123456.0, "123456"),
        (999999.0, "999999"),
        (-999_999.0, "-999999"),
        (1e6, "1e+06"),
        (-1e6, "-1e+06"),
        (1234567.0, "1.234567e+06"),
        (2.5e7, "2.5e+07"),
        (1.700000000123e9, "1.700000000123e+09"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (0.1 + 0.2, "0.30000000000000004"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
    ];

    #[test]
    fn g_matches_go_strconv() {
        for (f, want) in GO_G {
            assert_eq!(format_g(*f), *want, "{f:e}");
        }
    }

    /// client_golang's DefBuckets and the exponential and linear buckets its
    /// helpers produce, as Go writes them in `le`.
    #[test]
    fn bucket_bounds_as_le() {
        let def = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let want = [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
        ];
        for (f, w) in def.iter().zip(want) {
            assert_eq!(format_g(*f), w);
        }
        // ExponentialBuckets(0.001, 2, 12): doubling is exact, so every bound
        // keeps the short decimal of its start.
        let mut b = 0.001;
        let exp = [
            "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256",
            "0.512", "1.024", "2.048",
        ];
        for w in exp {
            assert_eq!(format_g(b), w);
            b *= 2.0;
        }
        // ExponentialBuckets(100, 10, 6) crosses the switch to exponent form.
        let mut b = 100.0;
        for w in ["100", "1000", "10000", "100000", "1e+06", "1e+07"] {
            assert_eq!(format_g(b), w);
            b *= 10.0;
        }
        // LinearBuckets(0.1, 0.1, 4) accumulates the binary error Go prints.
        let mut b = 0.1;
        for w in ["0.1", "0.2", "0.30000000000000004", "0.4"] {
            assert_eq!(format_g(b), w);
            b += 0.1;
        }
    }

    /// The edge checks scraped `le` values with `format_g`, the core writes
    /// bucket bounds with `write_text_float`: they must agree on every value
    /// but `-0` (expfmt writes it `0`).
    #[test]
    fn text_float_agrees_with_g() {
        for (f, want) in GO_G {
            let want = if *want == "-0" { "0" } else { *want };
            assert_eq!(text(*f), want, "{f:e}");
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..50_000 {
            // xorshift over all bit patterns: every exponent and sign.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if f == 0.0 {
                continue;
            }
            assert_eq!(text(f), format_g(f), "{f:e}");
            if f.is_finite() {
                let g = format_g(f);
                assert_eq!(parse_float(&g).map(f64::to_bits), Some(f.to_bits()), "{g}");
            }
        }
        for i in -200_000i64..200_000 {
            let f = i as f64 / 8.0;
            if f != 0.0 {
                assert_eq!(text(f), format_g(f), "{f}");
            }
        }
    }

    #[test]
    fn om_format_table() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "0.0"),
            (1.0, "1.0"),
            (-1.0, "-1.0"),
            (2.0, "2.0"),
            (100.0, "100.0"),
            (-42.0, "-42.0"),
            (999_999.0, "999999.0"),
            (0.5, "0.5"),
            (1e6, "1e+06"),
            (1_700_000_000.123, "1.700000000123e+09"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (f, want) in cases {
            assert_eq!(om(*f), *want);
        }
    }

    #[test]
    fn om_timestamp_fast_path_matches_float_path() {
        let mut x: i64 = 1_000_000_000;
        let mut cases = vec![
            0,
            1,
            999,
            1000,
            123_456,
            999_999_999,
            1_700_000_000_123,
            1_700_000_000_000,
            (1 << 53) - 1,
            1 << 53,
        ];
        while x < 1_000_000_000_000_000 {
            cases.push(x);
            cases.push(x + 7);
            cases.push(x * 3 + 123);
            x = x * 13 / 7 + 1;
        }
        for ms in cases {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_om_timestamp(&mut a, ms);
            write_om_float(&mut b, ms as f64 / 1000.0);
            assert_eq!(
                String::from_utf8(a).unwrap(),
                String::from_utf8(b).unwrap(),
                "{ms}"
            );
        }
    }

    #[test]
    fn e_matches_go_strconv() {
        for (f, want) in [
            (0.0, "0e+00"),
            (-0.0, "-0e+00"),
            (1.0, "1e+00"),
            (0.5, "5e-01"),
            (123456.0, "1.23456e+05"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (-2.5, "-2.5e+00"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_e(f), want, "{f}");
        }
    }

    #[test]
    fn exponents_in_go_form() {
        assert_eq!(go_exponent("1.5e6"), "1.5e+06");
        assert_eq!(go_exponent("1.5e-6"), "1.5e-06");
        assert_eq!(go_exponent("2e100"), "2e+100");
        assert_eq!(go_exponent("12.5"), "12.5");
    }

    #[test]
    fn parse() {
        for (s, want) in [
            ("1", 1.0),
            ("+1.5", 1.5),
            ("-2e3", -2000.0),
            ("1_000", 1000.0),
            ("1E-2", 0.01),
            (".5", 0.5),
            ("Inf", f64::INFINITY),
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("-inf", f64::NEG_INFINITY),
        ] {
            assert_eq!(parse_float(s), Some(want), "{s}");
        }
        assert!(parse_float("NaN").unwrap().is_nan());
        for bad in ["", "+", "x", "0x10", "1.5f", "1 2", "infinity", "--1"] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
    }

    #[test]
    fn ints() {
        let mut v = Vec::new();
        append_i64(&mut v, i64::MIN);
        v.push(b' ');
        append_i64(&mut v, 0);
        v.push(b' ');
        append_i64(&mut v, 1_700_000_000_123);
        v.push(b' ');
        append_u64(&mut v, u64::MAX);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "-9223372036854775808 0 1700000000123 18446744073709551615"
        );
    }
}
