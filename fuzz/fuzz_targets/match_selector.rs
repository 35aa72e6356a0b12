//! `/federate`'s `match[]` parameters (query string parsing, URL decoding and
//! the PromQL selector parser).
//!
//! Invariants: a query without `match[]` is refused; every accepted selector
//! has a matcher that does not match the empty string (it cannot select every
//! series); one selector sent URL-encoded parses as it does raw.
#![no_main]

use edgewatch_aggregator::expose::parse_match_params;
use edgewatch_aggregator::store::Selector;
use libfuzzer_sys::fuzz_target;

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn check(selectors: &[Selector]) {
    for s in selectors {
        assert!(
            s.matchers.iter().any(|m| !m.matches("")),
            "selects everything: {s:?}"
        );
    }
}

fuzz_target!(init: allow_caught_duration_panic(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The whole input as a raw query string.
    match parse_match_params(text) {
        Ok(sel) => check(&sel),
        Err(e) => assert!(!e.is_empty()),
    }
    // The whole input as one selector.
    let raw = Selector::parse(text);
    let encoded = parse_match_params(&format!("match[]={}", url_encode(text)));
    assert_eq!(raw.is_ok(), encoded.is_ok(), "{raw:?} vs {encoded:?}");
    if let (Ok(a), Ok(b)) = (raw, encoded) {
        check(&a);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
});

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
