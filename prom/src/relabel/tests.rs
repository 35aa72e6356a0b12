//! Semantics outside the shared table in `tests/relabel_cases` (where
//! Prometheus 3 differs from the 2.42 the table is compared with), defaults
//! and explicit nulls.

use super::*;

fn rules(yaml: &str) -> Vec<RelabelConfig> {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn run(yaml: &str, input: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    let mut l = labels(input);
    process(&mut l, &rules(yaml)).then_some(l)
}

#[test]
fn defaults() {
    let c = &rules("- {target_label: b}")[0];
    assert_eq!(c.action(), Action::Replace);
    assert_eq!(c.separator, ";");
    let Rule::Replace {
        regex,
        target,
        replacement,
    } = &c.rule
    else {
        panic!("{c:?}")
    };
    assert_eq!(regex.as_str(), "^(?s:(.*))$");
    assert_eq!(target.text, "b");
    assert!(!target.has_vars);
    assert_eq!(replacement.text, "$1");
    assert!(replacement.has_vars);
}

#[test]
fn explicit_null_is_the_empty_value() {
    let c = &rules("- {source_labels: [a, b], separator: null, regex: null, target_label: c, replacement: null}")[0];
    assert_eq!(c.separator, "");
    let Rule::Replace {
        regex, replacement, ..
    } = &c.rule
    else {
        panic!("{c:?}")
    };
    assert_eq!(regex.as_str(), "^(?s:)$");
    assert_eq!(replacement.text, "");
}

#[test]
fn dot_matches_newline() {
    let got = run(
        "- {source_labels: [a], regex: 'x.y', target_label: b, replacement: hit}",
        &[("a", "x\ny")],
    );
    assert_eq!(got, Some(labels(&[("a", "x\ny"), ("b", "hit")])));
}

#[test]
fn empty_replacement_removes_the_expanded_target() {
    let got = run(
        "- {source_labels: [a], regex: '(.*)', target_label: 'lbl_$1', replacement: '$2'}",
        &[("a", "x"), ("lbl_x", "old")],
    );
    assert_eq!(got, Some(labels(&[("a", "x")])));
}

#[test]
fn labelmap_collision_last_in_builder_order_wins() {
    // Prometheus iterates labels no rule has set (in order), then set ones:
    // `m_b` was set by the first rule, so it is mapped after `m_a` and wins.
    let yaml = "
- {target_label: m_b, replacement: second}
- {regex: 'm_(.)', replacement: 'x', action: labelmap}";
    let got = run(yaml, &[("m_a", "first"), ("m_b", "0"), ("m_c", "")]);
    assert_eq!(
        got,
        Some(labels(&[
            ("m_a", "first"),
            ("m_b", "second"),
            ("x", "second")
        ]))
    );
}

#[test]
fn a_set_label_keeps_its_place_when_set_again() {
    let yaml = "
- {target_label: m_a, replacement: one}
- {target_label: m_b, replacement: two}
- {target_label: m_a, replacement: three}
- {regex: 'm_(.)', replacement: 'x', action: labelmap}";
    let got = run(yaml, &[]);
    assert_eq!(
        got,
        Some(labels(&[("m_a", "three"), ("m_b", "two"), ("x", "two")]))
    );
}

#[test]
fn result_is_sorted_even_from_unsorted_input() {
    let got = run(
        "- {target_label: b, replacement: x}",
        &[("c", "1"), ("a", "2")],
    );
    assert_eq!(got, Some(labels(&[("a", "2"), ("b", "x"), ("c", "1")])));
}

#[test]
fn template_names() {
    for ok in ["a", "$1", "${1}", "a_$1", "${name}_x", "$1$2", "_"] {
        assert!(valid_template_name(ok), "{ok}");
    }
    for bad in ["", "1a", "a-$1", "${}", "$", "a b", "${1"] {
        assert!(!valid_template_name(bad), "{bad}");
    }
}

#[test]
fn action_names() {
    for a in Action::ALL {
        assert_eq!(Action::parse(a.as_str()), Some(a));
        assert_eq!(Action::parse(&a.as_str().to_uppercase()), Some(a));
    }
    assert_eq!(Action::parse("keep_equal"), None);
}

#[test]
fn only_replace_takes_a_templated_target() {
    for action in [
        "lowercase",
        "uppercase",
        "keepequal",
        "dropequal",
        "hashmod",
    ] {
        let rule =
            format!("{{source_labels: [a], target_label: '$1', modulus: 2, action: {action}}}");
        let err = serde_yaml_ng::from_str::<RelabelConfig>(&rule)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target_label: \"$1\" is not a valid label name"),
            "{rule}: {err}"
        );
    }
}

#[test]
fn a_regex_error_points_into_the_pattern_as_written() {
    let err = serde_yaml_ng::from_str::<RelabelConfig>(
        "{source_labels: [a], regex: 'go_(.*', action: drop}",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("regex: invalid regex \"go_(.*\": "),
        "{err}"
    );
    assert!(
        err.contains("\n    go_(.*\n") && !err.contains("(?s:"),
        "{err}"
    );
    assert!(err.contains("unclosed group"), "{err}");
}

#[test]
fn unquoted_numbers_are_strings_as_in_prometheus() {
    let got = run(
        "- {source_labels: [code], regex: 404, target_label: missing, replacement: 1}",
        &[("code", "404")],
    );
    assert_eq!(got, Some(labels(&[("code", "404"), ("missing", "1")])));
}
