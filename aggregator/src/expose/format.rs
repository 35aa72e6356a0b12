//! Number formatting exactly as Prometheus' Go encoders do it
//! (prometheus/common expfmt `writeFloat`, `writeOpenMetricsFloat`, i.e.
//! `strconv.AppendFloat(f, 'g', -1, 64)` plus special cases).

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
fn append_g(out: &mut Vec<u8>, f: f64) {
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

/// Text 0.0.4 float (expfmt `writeFloat`).
pub fn write_go_float(out: &mut Vec<u8>, f: f64) {
    if f == 1.0 {
        out.push(b'1');
    } else if f == 0.0 {
        out.push(b'0');
    } else if f == -1.0 {
        out.extend_from_slice(b"-1");
    } else if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if f == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else if f.fract() == 0.0 && f.abs() < 1e6 {
        // Integers below 1e6 print as plain integers in Go's shortest 'g'.
        append_i64(out, f as i64);
    } else {
        append_g(out, f);
    }
}

/// OpenMetrics float (expfmt `writeOpenMetricsFloat`): like Go 'g' but an
/// integral value gets `.0`.
pub fn write_om_float(out: &mut Vec<u8>, f: f64) {
    if f == 1.0 {
        out.extend_from_slice(b"1.0");
    } else if f == 0.0 {
        out.extend_from_slice(b"0.0");
    } else if f == -1.0 {
        out.extend_from_slice(b"-1.0");
    } else if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if f == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else if f.fract() == 0.0 && f.abs() < 1e6 {
        append_i64(out, f as i64);
        out.extend_from_slice(b".0");
    } else {
        let start = out.len();
        append_g(out, f);
        if !out[start..].iter().any(|&c| c == b'e' || c == b'.') {
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

pub fn append_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    append_u64(out, v.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(f: f64) -> String {
        let mut v = Vec::new();
        write_go_float(&mut v, f);
        String::from_utf8(v).unwrap()
    }
    fn om(f: f64) -> String {
        let mut v = Vec::new();
        write_om_float(&mut v, f);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn go_g_format_table() {
        // Values checked against Go's strconv.FormatFloat(f, 'g', -1, 64).
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (2.0, "2"),
            (0.5, "0.5"),
            (0.1, "0.1"),
            (0.005, "0.005"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456.0, "123456"),
            (999999.0, "999999"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1.700000000123e9, "1.700000000123e+09"),
            (12.5, "12.5"),
            (-3.25, "-3.25"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.1 + 0.2, "0.30000000000000004"),
            (100.0, "100"),
            (-999_999.0, "-999999"),
            (-1_000_000.0, "-1e+06"),
            (2.5e-5, "2.5e-05"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (f, want) in cases {
            assert_eq!(g(*f), *want, "{f:e}");
        }
    }

    #[test]
    fn om_format_table() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
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
    fn ints() {
        let mut v = Vec::new();
        append_i64(&mut v, i64::MIN);
        v.push(b' ');
        append_i64(&mut v, 0);
        v.push(b' ');
        append_i64(&mut v, 1_700_000_000_123);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "-9223372036854775808 0 1700000000123"
        );
    }
}
