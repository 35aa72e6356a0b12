//! PromQL text from outside (`/federate`'s `match[]`, queries, rule files) that
//! made the parser panic: found by the `match_selector` fuzz target.

use edgewatch_aggregator::expose::parse_match_params;
use edgewatch_aggregator::promql::Query;
use edgewatch_aggregator::rules::file;
use edgewatch_aggregator::store::Selector;

/// Durations beyond `std::time::Duration` (promql-parser 0.11.1 called
/// `Duration::from_secs_f64` on them and panicked).
const OUT_OF_RANGE: [&str; 4] = [
    "up[1e300]",
    "up offset 1e300",
    "up[99999999999999999999]",
    "rate(up[5m:1e300])",
];

#[test]
fn out_of_range_durations_are_errors_not_panics() {
    for text in OUT_OF_RANGE {
        assert!(Selector::parse(text).is_err(), "{text}");
        assert!(Query::parse(text).is_err(), "{text}");
        let q = format!(
            "match[]={}",
            text.replace('[', "%5B")
                .replace(']', "%5D")
                .replace(' ', "%20")
        );
        let e = parse_match_params(&q).expect_err(text);
        assert!(e.contains("bad match[] selector"), "{e}");
        let rules =
            format!("groups:\n  - name: g\n    rules:\n      - record: r\n        expr: {text}\n");
        let e = file::parse(&rules, "r.yml").expect_err(text).to_string();
        assert!(e.contains("r.yml:5:"), "{e}");
    }
}
