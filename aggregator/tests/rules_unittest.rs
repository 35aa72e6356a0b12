//! `edgewatch test rules` / `check rules` against the real `promtool` (Debian
//! `prometheus`) on the same files: promtool's own examples (copied from its
//! testdata under `tests/promtool/`, beside edgewatch's own `features*`), the
//! unit tests of the built-in rule groups (`src/rules/builtin/tests/`), and
//! broken variants of them. Both
//! tools must agree on pass or fail and on which tests fail, with the same
//! wording: stdout byte for byte, stderr line for line except where the two
//! evaluators or parsers word an error their own way (`err: …`, a file's
//! parse error).

use std::path::{Path, PathBuf};

use edgewatch_aggregator::rules::builtin::FLEET_YAML;
use edgewatch_aggregator::rules::unittest::{check_rules, test_rules};
use edgewatch_testkit::peers::{promtool, ToolOutput};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> PathBuf {
    manifest_dir().join("tests/promtool")
}

fn builtin_tests() -> PathBuf {
    manifest_dir().join("src/rules/builtin/tests")
}

fn ours(
    run: fn(&[PathBuf], &mut dyn std::io::Write, &mut dyn std::io::Write) -> bool,
    file: &Path,
) -> ToolOutput {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let success = run(&[file.to_path_buf()], &mut out, &mut err);
    ToolOutput {
        success,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

/// stderr with the parts each tool words its own way replaced: an error
/// after `err: `, and a file-level error (any line that is not a test's
/// failure report), consecutive ones counted as one.
fn normalized(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let ours_alike = line.starts_with("    ") || line.starts_with("  WARNING: ");
        let l = if ours_alike || line == "  FAILED:" || line.is_empty() {
            match line.split_once(", err: ") {
                Some((head, _)) => format!("{head}, err: …"),
                None => line.to_string(),
            }
        } else {
            "<error>".to_string()
        };
        if !(l == "<error>" && out.last().is_some_and(|p| p == "<error>")) {
            out.push(l);
        }
    }
    out
}

/// Runs both tools on `file` and asserts they agree, and that the verdict is `pass`.
fn agree(subcommand: &str, file: &Path, pass: bool) -> ToolOutput {
    let theirs = promtool([subcommand.as_ref(), "rules".as_ref(), file.as_os_str()]);
    let run = if subcommand == "test" {
        test_rules
    } else {
        check_rules
    };
    let mine = ours(run, file);
    let f = file.display();
    assert_eq!(
        theirs.success, pass,
        "promtool {subcommand} rules {f}: {theirs:?}"
    );
    assert_eq!(
        mine.success, pass,
        "edgewatch {subcommand} rules {f}: {mine:?}"
    );
    assert_eq!(
        mine.stdout, theirs.stdout,
        "stdout of {subcommand} rules {f}"
    );
    if subcommand == "check" && pass {
        // A lint report: the same words exactly.
        assert_eq!(mine.stderr, theirs.stderr, "stderr of check rules {f}");
    }
    assert_eq!(
        normalized(&mine.stderr),
        normalized(&theirs.stderr),
        "stderr of {subcommand} rules {f}:\nours:\n{}\npromtool:\n{}",
        mine.stderr,
        theirs.stderr
    );
    mine
}

#[test]
fn promtool_examples_give_the_same_verdicts() {
    for (file, pass) in [
        ("unittest.yml", true),
        ("long-period.yml", true),
        ("negative-offset-test.yml", true),
        ("features_test.yml", true),
        ("features-failing-test.yml", false),
        ("failing.yml", false),
        ("bad-rules-error-test.yml", false),
        ("bad-promql.yml", false),
        ("bad-input-series.yml", false),
        ("bad-rules-syntax-test.yml", false),
    ] {
        agree("test", &examples().join(file), pass);
    }
}

#[test]
fn failing_example_names_the_failing_tests() {
    let out = agree("test", &examples().join("failing.yml"), false);
    for want in [
        "    expr: \"test\", time: 0s,",
        "    name: Failing test,\n    alertname: Test, time: 0s, ",
        "    name: Failing alert test,\n    alertname: InstanceDown, time: 5m, ",
        "    name: Failing alert test,\n    alertname: AlwaysFiring, time: 5m, ",
    ] {
        assert!(out.stderr.contains(want), "{want:?} in\n{}", out.stderr);
    }
}

#[test]
fn builtin_rule_tests_pass_in_both() {
    for file in ["fleet_test.yaml", "deployments_test.yaml"] {
        agree("test", &builtin_tests().join(file), true);
    }
}

#[test]
fn rendered_fleet_rules_are_in_step_with_the_builtin_ones() {
    let down_after = edgewatch_config::aggregator::FleetConfig::default()
        .down_after
        .get()
        .as_secs();
    let rendered = std::fs::read_to_string(builtin_tests().join("fleet.rules.yaml")).unwrap();
    let body = rendered
        .split_once("\ngroups:")
        .map(|(_, b)| b)
        .expect("a groups: key");
    let want = FLEET_YAML.replace("${fleet.down_after}", &down_after.to_string());
    assert!(
        want.ends_with(&format!("\ngroups:{body}")),
        "fleet.rules.yaml is out of step with fleet.yaml: render it again (see its header)"
    );
}

/// A broken expectation in a copy of a built-in test: both fail it alike,
/// with the expected and actual alerts in the same words.
#[test]
fn a_wrong_expectation_fails_alike() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        builtin_tests().join("fleet.rules.yaml"),
        dir.path().join("fleet.rules.yaml"),
    )
    .unwrap();
    let test = std::fs::read_to_string(builtin_tests().join("fleet_test.yaml"))
        .unwrap()
        .replace("for 3m 0s.", "for 3m.")
        .replace("eval_time: 11m", "eval_time: 12m");
    let file = dir.path().join("fleet_test.yaml");
    std::fs::write(&file, test).unwrap();
    let out = agree("test", &file, false);
    assert!(out
        .stderr
        .contains("    alertname: EdgeCollectorDown, time: 7m, "));
    assert!(out
        .stderr
        .contains("    alertname: EdgeBufferBacklog, time: 12m, "));
}

#[test]
fn an_unknown_field_fails_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.yml");
    std::fs::write(&file, "tests:\n  - interval: 1m\n    input_seris: []\n").unwrap();
    let out = agree("test", &file, false);
    let want = format!("{}:3:5: ", file.display());
    assert!(out.stderr.contains(&want), "{want} in {}", out.stderr);
    assert!(out.stderr.contains("input_seris"), "{}", out.stderr);
}

#[test]
fn check_rules_agrees() {
    agree("check", &examples().join("rules.yml"), true);
    agree(
        "check",
        &manifest_dir().join("src/rules/builtin/deployments.yaml"),
        true,
    );
    agree("check", &builtin_tests().join("fleet.rules.yaml"), true);
    // promtool's duplicate-rules lint: reported, exit 0.
    let dir = tempfile::tempdir().unwrap();
    let dups = dir.path().join("dups.yml");
    let rule = |name: &str, labels: &str| {
        format!("      - record: {name}\n        expr: sum(up)\n        labels: {{{labels}}}\n")
    };
    let text = format!(
        "groups:\n  - name: a\n    rules:\n{}{}{}  - name: b\n    rules:\n{}{}",
        rule("job:up:sum", "a: \"1\", b: x"),
        rule("job:up:sum", ""),
        rule("job:up:sum", "a: \"1\", b: x"),
        rule("job:up:sum", "a: \"1\", b: x"),
        rule("other", ""),
    );
    std::fs::write(&dups, text).unwrap();
    let out = agree("check", &dups, true);
    assert!(
        out.stderr
            .contains("Metric: job:up:sum\nLabel(s):\n\ta: 1\n\tb: x\n"),
        "{}",
        out.stderr
    );

    let out = agree("check", &examples().join("bad-rules-syntax.yml"), false);
    let want = format!(
        "{}:9:15: ",
        examples().join("bad-rules-syntax.yml").display()
    );
    assert!(out.stderr.contains(&want), "{want} in {}", out.stderr);
}

#[test]
fn broken_and_missing_rule_files_agree() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    write(
        "bad.yml",
        "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: 'test +'\n",
    );
    // Reported once per test group, as promtool loads the rules for each.
    let two_groups = write("two.yml", "rule_files: [bad.yml]\ntests:\n  - {}\n  - {}\n");
    let out = agree("test", &two_groups, false);
    let bad = dir.path().join("bad.yml").display().to_string();
    assert_eq!(
        out.stderr.matches(&format!("{bad}:5:15: ")).count(),
        2,
        "{}",
        out.stderr
    );

    // A pattern matching nothing is a warning (with the path cleaned as Go joins it).
    let missing = write(
        "missing.yml",
        "rule_files: [./none/*.yml]\ntests:\n  - promql_expr_test:\n      - expr: 1\n        exp_samples: [{value: 1}]\n",
    );
    let out = agree("test", &missing, true);
    let want = format!(
        "  WARNING: no file match pattern {}/none/*.yml",
        dir.path().display()
    );
    assert!(out.stderr.contains(&want), "{want} in {}", out.stderr);
}
