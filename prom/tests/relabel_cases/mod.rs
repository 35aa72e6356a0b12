//! The relabeling table shared by `relabel.rs` (expected results) and
//! `relabel_vs_prometheus.rs` (the same rules and inputs run by Prometheus).
//! Rules are YAML flow mappings, so they paste into any indentation.
//!
//! Kept out of the table because Prometheus 2.42 (the Debian package the
//! comparison runs) differs from Prometheus 3 there, and covered by the unit
//! tests in `src/relabel/tests.rs` instead: `.` matching a newline, an empty
//! replacement with a templated target_label, labelmap collisions, a
//! templated target_label of lowercase/uppercase/keepequal/dropequal (2.42
//! accepts it).

// Each test binary uses a part of the table's helpers.
#![allow(dead_code)]

use edgewatch_prom::relabel::{process, RelabelConfig};

pub type Labels = &'static [(&'static str, &'static str)];

pub struct Case {
    pub name: &'static str,
    pub rules: &'static [&'static str],
    pub input: Labels,
    /// `None`: the rules drop the set.
    pub want: Option<Labels>,
}

/// Parses a case's rules as a configuration file would.
pub fn configs(rules: &[&str]) -> Vec<RelabelConfig> {
    serde_yaml_ng::from_str(&yaml_list(rules)).expect("table rules are valid")
}

/// The rules as a block YAML list, each line indented by `indent`.
pub fn yaml_list_indented(rules: &[&str], indent: &str) -> String {
    rules.iter().map(|r| format!("{indent}- {r}\n")).collect()
}

fn yaml_list(rules: &[&str]) -> String {
    yaml_list_indented(rules, "")
}

/// Runs `rules` on `labels`: the sorted result, or `None` when dropped.
pub fn run(rules: &[&str], labels: &[(String, String)]) -> Option<Vec<(String, String)>> {
    let mut labels = labels.to_vec();
    process(&mut labels, &configs(rules)).then_some(labels)
}

pub fn owned(labels: Labels) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

pub const CASES: &[Case] = &[
    Case {
        name: "replace with every default copies the value",
        rules: &["{source_labels: [a], target_label: b}"],
        input: &[("__name__", "m"), ("a", "foo")],
        want: Some(&[("__name__", "m"), ("a", "foo"), ("b", "foo")]),
    },
    Case {
        name: "replace with a group",
        rules: &["{source_labels: [a], regex: 'f(o+)', target_label: b, replacement: 'x$1'}"],
        input: &[("a", "foo")],
        want: Some(&[("a", "foo"), ("b", "xoo")]),
    },
    Case {
        name: "the regex is anchored at both ends",
        rules: &["{source_labels: [a], regex: 'o+', target_label: b, replacement: hit}"],
        input: &[("a", "foo"), ("b", "old")],
        want: Some(&[("a", "foo"), ("b", "old")]),
    },
    Case {
        name: "alternatives are anchored as a whole",
        rules: &["{source_labels: [a], regex: 'x|fo', target_label: b, replacement: hit}"],
        input: &[("a", "foo")],
        want: Some(&[("a", "foo")]),
    },
    Case {
        name: "source labels join with the default separator",
        rules: &["{source_labels: [a, c], target_label: b}"],
        input: &[("a", "1"), ("c", "2")],
        want: Some(&[("a", "1"), ("b", "1;2"), ("c", "2")]),
    },
    Case {
        name: "a configured separator",
        rules: &["{source_labels: [a, c, a], separator: '-', target_label: b}"],
        input: &[("a", "1"), ("c", "2")],
        want: Some(&[("a", "1"), ("b", "1-2-1"), ("c", "2")]),
    },
    Case {
        name: "an empty separator",
        rules: &["{source_labels: [a, c], separator: '', target_label: b}"],
        input: &[("a", "1"), ("c", "2")],
        want: Some(&[("a", "1"), ("b", "12"), ("c", "2")]),
    },
    Case {
        name: "a missing source label reads as empty",
        rules: &["{source_labels: [a, missing], regex: 'foo;', target_label: b, replacement: ok}"],
        input: &[("a", "foo")],
        want: Some(&[("a", "foo"), ("b", "ok")]),
    },
    Case {
        name: "a constant label without source labels",
        rules: &["{target_label: env, replacement: prod}"],
        input: &[("a", "1")],
        want: Some(&[("a", "1"), ("env", "prod")]),
    },
    Case {
        name: "an empty replacement removes the target",
        rules: &["{source_labels: [a], target_label: c, replacement: ''}"],
        input: &[("a", "1"), ("c", "2")],
        want: Some(&[("a", "1")]),
    },
    Case {
        name: "braced group followed by text",
        rules: &["{source_labels: [a], regex: '(.)(.*)', target_label: b, replacement: '${1}x$2'}"],
        input: &[("a", "foo")],
        want: Some(&[("a", "foo"), ("b", "fxoo")]),
    },
    Case {
        name: "$1x names group 1x, which is empty, so the target goes",
        rules: &["{source_labels: [a], regex: '(.*)', target_label: b, replacement: '$1x'}"],
        input: &[("a", "foo"), ("b", "old")],
        want: Some(&[("a", "foo")]),
    },
    Case {
        name: "named groups and $$",
        rules: &["{source_labels: [addr], regex: '(?P<host>[^:]+):(?P<port>[0-9]+)', target_label: b, replacement: '${port}$$$host'}"],
        input: &[("addr", "h1:9100")],
        want: Some(&[("addr", "h1:9100"), ("b", "9100$h1")]),
    },
    Case {
        name: "a templated target label",
        rules: &["{source_labels: [a], regex: '(.+)', target_label: 'lbl_$1', replacement: 'yes'}"],
        input: &[("a", "foo")],
        want: Some(&[("a", "foo"), ("lbl_foo", "yes")]),
    },
    Case {
        name: "a target label that expands to an invalid name is skipped",
        rules: &["{source_labels: [a], regex: '(.+)', target_label: '$1', replacement: 'yes'}"],
        input: &[("a", "1x")],
        want: Some(&[("a", "1x")]),
    },
    Case {
        name: "keep on a match",
        rules: &["{source_labels: [__name__], regex: 'up|node_.*', action: keep}"],
        input: &[("__name__", "node_load1"), ("a", "1")],
        want: Some(&[("__name__", "node_load1"), ("a", "1")]),
    },
    Case {
        name: "keep drops a non-match",
        rules: &["{source_labels: [__name__], regex: 'up|node_.*', action: keep}"],
        input: &[("__name__", "go_goroutines")],
        want: None,
    },
    Case {
        name: "keep with the default regex keeps everything",
        rules: &["{source_labels: [missing], action: keep}"],
        input: &[("a", "1")],
        want: Some(&[("a", "1")]),
    },
    Case {
        name: "an empty regex matches only the empty value",
        rules: &["{source_labels: [missing], regex: '', action: keep}", "{source_labels: [a], regex: '', action: keep}"],
        input: &[("a", "1")],
        want: None,
    },
    Case {
        name: "drop on a match",
        rules: &["{source_labels: [__name__, a], regex: 'm;1', action: drop}"],
        input: &[("__name__", "m"), ("a", "1")],
        want: None,
    },
    Case {
        name: "drop keeps a non-match",
        rules: &["{source_labels: [__name__], regex: 'go_.*', action: drop}"],
        input: &[("__name__", "up")],
        want: Some(&[("__name__", "up")]),
    },
    Case {
        name: "the action is case-insensitive",
        rules: &["{source_labels: [a], regex: '1', action: DROP}"],
        input: &[("a", "1")],
        want: None,
    },
    Case {
        name: "keepequal keeps equal values",
        rules: &["{source_labels: [a], target_label: b, action: keepequal}"],
        input: &[("a", "x"), ("b", "x")],
        want: Some(&[("a", "x"), ("b", "x")]),
    },
    Case {
        name: "keepequal drops different values",
        rules: &["{source_labels: [a], target_label: b, action: keepequal}"],
        input: &[("a", "x"), ("b", "y")],
        want: None,
    },
    Case {
        name: "dropequal drops equal values, a missing target reads as empty",
        rules: &["{source_labels: [missing], target_label: b, action: dropequal}"],
        input: &[("a", "x")],
        want: None,
    },
    Case {
        name: "dropequal keeps different values",
        rules: &["{source_labels: [a], target_label: b, action: dropequal}"],
        input: &[("a", "x"), ("b", "y")],
        want: Some(&[("a", "x"), ("b", "y")]),
    },
    Case {
        name: "hashmod",
        rules: &["{source_labels: [c], modulus: 1000, target_label: d, action: hashmod}"],
        input: &[("c", "baz")],
        want: Some(&[("c", "baz"), ("d", "976")]),
    },
    Case {
        name: "hashmod of several labels",
        rules: &["{source_labels: [a, c], modulus: 7, target_label: shard, action: hashmod}"],
        input: &[("a", "node-1:9100"), ("c", "x")],
        want: Some(&[("a", "node-1:9100"), ("c", "x"), ("shard", "6")]),
    },
    Case {
        name: "labelmap with the default replacement",
        rules: &["{regex: 'meta_(.+)', action: labelmap}"],
        input: &[("meta_x", "1"), ("meta_y", "2"), ("z", "3")],
        want: Some(&[("meta_x", "1"), ("meta_y", "2"), ("x", "1"), ("y", "2"), ("z", "3")]),
    },
    Case {
        name: "labelmap with a braced replacement",
        rules: &["{regex: 'meta_(.+)', replacement: 'new_${1}_l', action: labelmap}"],
        input: &[("meta_x", "1"), ("z", "3")],
        want: Some(&[("meta_x", "1"), ("new_x_l", "1"), ("z", "3")]),
    },
    Case {
        name: "labeldrop",
        rules: &["{regex: 'tmp_.*', action: labeldrop}"],
        input: &[("a", "1"), ("tmp_a", "2"), ("tmp_b", "3")],
        want: Some(&[("a", "1")]),
    },
    Case {
        name: "labelkeep",
        rules: &["{regex: '__.*|a|b', action: labelkeep}"],
        input: &[("__name__", "m"), ("a", "1"), ("ab", "2"), ("b", "3"), ("c", "4")],
        want: Some(&[("__name__", "m"), ("a", "1"), ("b", "3")]),
    },
    Case {
        name: "lowercase",
        rules: &["{source_labels: [a, c], target_label: low, action: lowercase}"],
        input: &[("a", "FoO"), ("c", "BAR")],
        want: Some(&[("a", "FoO"), ("c", "BAR"), ("low", "foo;bar")]),
    },
    Case {
        name: "uppercase into the source label",
        rules: &["{source_labels: [a], target_label: a, action: uppercase}"],
        input: &[("a", "FoO-1")],
        want: Some(&[("a", "FOO-1")]),
    },
    Case {
        name: "an empty input value is no label",
        rules: &["{source_labels: [e], regex: '', target_label: was_empty, replacement: yes}"],
        input: &[("a", "1"), ("e", "")],
        want: Some(&[("a", "1"), ("was_empty", "yes")]),
    },
    Case {
        name: "rules apply in order, each seeing the previous result",
        rules: &[
            "{source_labels: [a], regex: '(.*)-(.*)', target_label: host, replacement: '$1'}",
            "{regex: 'a', action: labeldrop}",
            "{source_labels: [host, a], regex: 'n1;', action: keep}",
            "{source_labels: [host], target_label: HOST, action: uppercase}",
        ],
        input: &[("a", "n1-9100")],
        want: Some(&[("HOST", "N1"), ("host", "n1")]),
    },
];

/// Rules Prometheus refuses, and a part of the error we give.
pub const INVALID: &[(&str, &str)] = &[
    (
        "{source_labels: [a], target_label: b, action: foo}",
        "action: unknown relabel action \"foo\"",
    ),
    (
        "{source_labels: [a], target_label: b, action: null}",
        "action: cannot be empty",
    ),
    (
        "{source_labels: [a], target_label: b, action: hashmod}",
        "modulus: the hashmod action requires a non-zero modulus",
    ),
    (
        "{source_labels: [a], modulus: 0, target_label: b, action: hashmod}",
        "modulus:",
    ),
    (
        "{source_labels: [a]}",
        "target_label: the replace action requires a target_label",
    ),
    (
        "{source_labels: [a], action: lowercase}",
        "target_label: the lowercase action requires",
    ),
    (
        "{source_labels: [a], action: keepequal}",
        "target_label: the keepequal action requires",
    ),
    (
        "{source_labels: [a], modulus: 2, action: hashmod}",
        "target_label: the hashmod action requires",
    ),
    (
        "{source_labels: [a], target_label: '1bad'}",
        "target_label: \"1bad\" is not a valid label name for the replace action",
    ),
    (
        "{source_labels: [a], target_label: 'x-$1'}",
        "target_label: \"x-$1\"",
    ),
    (
        "{source_labels: [a], target_label: 'b', replacement: x, action: uppercase}",
        "replacement: cannot be set for the uppercase action (got \"x\")",
    ),
    (
        "{regex: 'a(.*)', replacement: 'a-$1', action: labelmap}",
        "replacement: \"a-$1\" is not a valid label name",
    ),
    (
        "{source_labels: [a], target_label: b, regex: '(.*)', action: keepequal}",
        "regex: the keepequal action takes only source_labels and target_label",
    ),
    (
        "{source_labels: [a], target_label: b, separator: ',', action: dropequal}",
        "separator: the dropequal action takes only",
    ),
    (
        "{source_labels: [a], regex: 'a', action: labeldrop}",
        "source_labels: the labeldrop action takes only regex",
    ),
    (
        "{regex: 'a', target_label: b, action: labelkeep}",
        "target_label: the labelkeep action takes only regex",
    ),
    (
        "{regex: 'a', replacement: b, action: labelkeep}",
        "replacement: the labelkeep action takes only regex",
    ),
    (
        "{source_labels: [a], regex: '(', target_label: b}",
        "regex: invalid regex \"(\"",
    ),
    (
        "{source_labels: ['a-b'], target_label: b}",
        "source_labels: \"a-b\" is not a valid label name",
    ),
    (
        "{source_labels: [a], target_label: b, colour: red}",
        "unknown field `colour`",
    ),
];
