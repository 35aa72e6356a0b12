//! `edgewatch check rules` and `edgewatch test rules` as a CI job runs them:
//! exit codes and promtool's output shape (the verdicts themselves are
//! compared with promtool in aggregator/tests/rules_unittest.rs).

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

fn edgewatch(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("aggregator"))
        .output()
        .expect("run edgewatch")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn test_rules_exits_0_when_every_test_passes_and_1_otherwise() {
    let pass = "tests/promtool/unittest.yml";
    let fail = "tests/promtool/failing.yml";
    let out = edgewatch(&["test", "rules", pass]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Unit Testing:  {pass}\n  SUCCESS\n\n")
    );

    let out = edgewatch(&["test", "rules", pass, fail]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("Unit Testing:  {fail}\n")),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).starts_with("  FAILED:\n"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_rules_counts_rules_or_names_the_error() {
    let good = "src/rules/builtin/deployments.yaml";
    let bad = "tests/promtool/bad-rules-syntax.yml";
    let out = edgewatch(&["check", "rules", good]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Checking {good}\n  SUCCESS: 2 rules found\n\n")
    );

    let out = edgewatch(&["check", "rules", good, bad]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("{bad}:9:15: ")), "{stderr}");
}

#[test]
fn rules_commands_need_a_file() {
    for cmd in ["check", "test"] {
        let out = edgewatch(&[cmd, "rules"]);
        assert_eq!(out.status.code(), Some(2), "{cmd} rules without files");
    }
}
