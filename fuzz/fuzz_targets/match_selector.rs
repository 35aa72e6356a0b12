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

fuzz_target!(|data: &[u8]| {
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
