//! The collector's and the aggregator's configuration YAML.
//!
//! Invariants: parsing is deterministic, and every refusal is a located message
//! naming the file (`FILE:LINE:COL: …`).
#![no_main]

use edgewatch_config::{parse, AggregatorConfig, CollectorConfig, ConfigError};
use libfuzzer_sys::fuzz_target;

const ORIGIN: &str = "fuzz.yaml";

fn check<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) {
    let first = parse::<T>(text, ORIGIN);
    let second = parse::<T>(text, ORIGIN);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(matches!(a, ConfigError::Invalid { .. }), "{a}");
            assert!(a.to_string().starts_with(&format!("{ORIGIN}:")), "{a}");
        }
        _ => panic!("parsing twice disagrees"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check::<CollectorConfig>(text);
    check::<AggregatorConfig>(text);
});
