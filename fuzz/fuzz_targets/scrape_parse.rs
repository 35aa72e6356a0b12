//! The Prometheus / OpenMetrics exposition parser (the first input byte picks
//! the format, the rest is the scraped body).
//!
//! Invariants: an accepted exposition, written back in the text format, parses
//! to the same samples (names, labels, values, timestamps); no sample carries a
//! label name twice; an error names a line of the input.
#![no_main]

use edgewatch_collector::receive::scrape::parse::{parse, Format, Sample};
use libfuzzer_sys::fuzz_target;
use std::fmt::Write;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let format = if mode & 1 == 1 {
        Format::OpenMetrics
    } else {
        Format::Text
    };
    let parsed = match parse(text, format) {
        Ok(p) => p,
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(e.line <= lines, "error line {} of {lines}: {e}", e.line);
            return;
        }
    };
    for s in &parsed.samples {
        let mut names: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), s.labels.len(), "label name twice in {s:?}");
    }
    let rendered = render(&parsed.samples);
    let again = parse(&rendered, Format::Text)
        .unwrap_or_else(|e| panic!("re-rendered exposition refused: {e}\n{rendered}"));
    assert_eq!(again.samples.len(), parsed.samples.len(), "{rendered}");
    for (a, b) in parsed.samples.iter().zip(&again.samples) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.timestamp_ms, b.timestamp_ms);
        assert!(a.value.to_bits() == b.value.to_bits() || a.value.is_nan() && b.value.is_nan());
    }
});

fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for s in samples {
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            out.push('{');
            for (k, v) in &s.labels {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                write!(out, "{k}=\"{v}\",").unwrap();
            }
            out.push('}');
        }
        let v = s.value;
        let value = if v.is_nan() {
            "NaN".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
        } else {
            format!("{v:?}")
        };
        write!(out, " {value}").unwrap();
        if let Some(t) = s.timestamp_ms {
            write!(out, " {t}").unwrap();
        }
        out.push('\n');
    }
    out
}
