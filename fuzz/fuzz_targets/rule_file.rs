//! Prometheus rule files as the aggregator loads them.
//!
//! Invariants: a refusal is located (`FILE:LINE:COL: …`, the line within the
//! file, lines counted as YAML counts them); an accepted file has unique group names and every expression
//! re-parses from its own text.
#![no_main]

use edgewatch_aggregator::rules::file::{parse, PromExpr};
use edgewatch_config::ConfigError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: allow_caught_duration_panic(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, "rules.yaml") {
        Err(ConfigError::Invalid { path, line, .. }) => {
            assert_eq!(path, "rules.yaml");
            assert!(line <= yaml_lines(text) + 1, "line {line}");
        }
        Err(e) => panic!("not a located error: {e}"),
        Ok(f) => {
            let mut names: Vec<&str> = f.groups.iter().map(|g| g.name.as_str()).collect();
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(names.len(), n, "repeated group name accepted");
            for g in &f.groups {
                for r in &g.rules {
                    PromExpr::parse(&r.expr.text).expect("an accepted expression re-parses");
                }
            }
        }
    }
});

/// Lines as libyaml counts them: a lone `\r`, NEL, LS and PS break a line too.
fn yaml_lines(text: &str) -> usize {
    let breaks = text.replace("\r\n", "\n");
    1 + breaks
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}

/// libfuzzer-sys aborts on every panic, caught or not; the PromQL parser's
/// panic on an out-of-range duration is caught by `promql::parse_expr` (see
/// RELIABILITY.md), so only that one is let through.
fn allow_caught_duration_panic() {
    let abort_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !msg.contains("cannot convert float seconds to Duration") {
            abort_hook(info);
        }
    }));
}
