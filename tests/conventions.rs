//! The conventions operators expect of both binaries: `-c/--config` or
//! `EDGEWATCH_CONFIG`, `RUST_LOG`/`EDGEWATCH_LOG` filters, `--log-format json`,
//! `--version` with the git revision, shell completions.

use edgewatch_testkit::{free_port, wait_ready, write, Proc};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const COLLECTOR_BIN: &str = env!("CARGO_BIN_EXE_edgewatch-collector");

/// Environment variables for a run.
type Env<'a> = &'a [(&'a str, &'a str)];

/// Runs `program args` with exactly these configuration and log variables set.
fn run(program: &str, args: &[&str], env: Env) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for var in ["EDGEWATCH_CONFIG", "EDGEWATCH_LOG", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).output().expect("run")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The configuration comes from `-c`, `--config` or `EDGEWATCH_CONFIG`, the flag
/// first; without any, a usage error says both ways. A file with a located mistake
/// shows which file was read, before anything starts.
#[test]
fn config_from_flag_or_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flagged = dir.path().join("flagged.yaml");
    let from_env = dir.path().join("from-env.yaml");
    for f in [&flagged, &from_env] {
        write(f, "colour: red\n");
    }
    let (flagged, from_env) = (
        flagged.to_str().expect("utf-8"),
        from_env.to_str().expect("utf-8"),
    );
    let env = [("EDGEWATCH_CONFIG", from_env)];
    let cases: [(&str, Vec<&str>, Env, &str); 7] = [
        (BIN, vec!["collector", "-c", flagged], &[], flagged),
        (BIN, vec!["collector", "--config", flagged], &env, flagged),
        (BIN, vec!["collector"], &env, from_env),
        (BIN, vec!["aggregator", "-c", flagged], &[], flagged),
        (BIN, vec!["aggregator"], &env, from_env),
        (COLLECTOR_BIN, vec!["-c", flagged], &env, flagged),
        (COLLECTOR_BIN, vec![], &env, from_env),
    ];
    for (program, args, env, read) in cases {
        let out = run(program, &args, env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{read}:1:1: unknown field `colour`")),
            "{program} {args:?} {env:?} should read {read}: {err}"
        );
    }
    let unset: [Env; 2] = [&[], &[("EDGEWATCH_CONFIG", "")]];
    for (program, args, env) in [
        (BIN, vec!["collector"], unset[0]),
        (BIN, vec!["aggregator"], unset[1]),
        (COLLECTOR_BIN, vec![], unset[0]),
        (COLLECTOR_BIN, vec![], unset[1]),
    ] {
        let out = run(program, &args, env);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("give -c/--config FILE or set EDGEWATCH_CONFIG"),
            "{}",
            stderr(&out)
        );
    }
}

/// `EDGEWATCH_LOG` wins over `RUST_LOG`; a filter that cannot be used is named in a
/// warning (and logging goes on at `info`).
#[test]
fn log_filter_from_edgewatch_log_or_rust_log() {
    let missing = ["aggregator", "-c", "/nonexistent/edgewatch.yaml"];
    let cases: [(Env, Option<&str>); 4] = [
        (&[("RUST_LOG", "[[bad")], Some("RUST_LOG=\"[[bad\"")),
        (
            &[("EDGEWATCH_LOG", "[[bad"), ("RUST_LOG", "info")],
            Some("EDGEWATCH_LOG=\"[[bad\""),
        ),
        (&[("EDGEWATCH_LOG", "info"), ("RUST_LOG", "[[bad")], None),
        (&[("EDGEWATCH_LOG", "warn")], None),
    ];
    for (env, warning) in cases {
        let err = stderr(&run(BIN, &missing, env));
        match warning {
            Some(w) => assert!(
                err.contains(&format!("{w} is not a log filter")),
                "{env:?}: {err}"
            ),
            None => assert!(!err.contains("is not a log filter"), "{env:?}: {err}"),
        }
        assert!(err.contains("/nonexistent/edgewatch.yaml"), "{err}");
    }
    // A filter that silences the role's own target: its startup lines are gone, the
    // fatal error (printed, not logged, in text format) stays.
    let err = stderr(&run(BIN, &missing, &[("RUST_LOG", "off")]));
    assert!(err.starts_with("edgewatch: /nonexistent"), "{err}");
}

/// With `--log-format json` every stderr line is one JSON object, from startup to the
/// last line at shutdown, and a fatal error is one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (grpc, admin) = (free_port(), free_port());
    let config = dir.path().join("collector.yaml");
    write(
        &config,
        &format!(
            "cluster: edge-a\nnode: node-1\nreceivers:\n  otlp:\n    grpc: 127.0.0.1:{grpc}\nbuffer:\n  path: {}\nforward:\n  endpoint: http://127.0.0.1:{}\nadmin:\n  listen: 127.0.0.1:{admin}\n",
            dir.path().join("buffer").display(),
            free_port(),
        ),
    );
    for program in [BIN, COLLECTOR_BIN] {
        let mut cmd = Command::new(program);
        if program == BIN {
            cmd.arg("collector");
        }
        cmd.args(["--log-format", "json", "-c"])
            .arg(&config)
            .env_remove("EDGEWATCH_LOG")
            .env("RUST_LOG", "info");
        let name = Path::new(program).file_name().expect("name");
        let mut col = Proc::spawn_command(&name.to_string_lossy(), cmd, dir.path());
        wait_ready(&format!("http://127.0.0.1:{admin}/readyz")).await;
        assert!(col.terminate(Duration::from_secs(15)).success());
        let lines = json_lines(&col.log_text());
        let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
        assert!(messages.contains(&"collector started"), "{messages:?}");
        assert!(messages.contains(&"collector stopped"), "{messages:?}");
        let started = lines
            .iter()
            .find(|l| l["message"] == "collector started")
            .expect("started");
        assert_eq!(started["level"], "INFO");
        assert_eq!(started["node"], "node-1", "fields are top-level: {started}");
        assert!(started["timestamp"].is_string() && started["target"].is_string());
    }

    let out = run(
        BIN,
        &[
            "--log-format",
            "json",
            "aggregator",
            "-c",
            "/nonexistent.yaml",
        ],
        &[("RUST_LOG", "[[bad")],
    );
    let lines = json_lines(&stderr(&out));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines[1]["level"], "ERROR");
    assert!(lines[1]["error"]
        .as_str()
        .is_some_and(|e| e.contains("/nonexistent.yaml")));
}

/// Every line of `text` parsed as a JSON object; panics naming a line that is not.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) if v.is_object() => v,
                _ => panic!("not a JSON object: {line:?}\nin:\n{text}"),
            },
        )
        .collect()
}

/// `--version` names the version and the git revision the binaries were built from.
#[test]
fn version_names_the_git_revision() {
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for (program, name) in [(BIN, "edgewatch"), (COLLECTOR_BIN, "edgewatch-collector")] {
        let out = run(program, &["--version"], &[]);
        assert!(out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{name} {} (git ", env!("CARGO_PKG_VERSION"));
        let revision = stdout
            .trim()
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{stdout:?} is not {prefix}REVISION)"));
        match &head {
            // A checkout: the commit, `-dirty` when tracked files were changed.
            Some(head) => assert!(
                revision == head || revision == format!("{head}-dirty"),
                "{revision} is not HEAD {head}"
            ),
            None => assert_eq!(revision, "unknown"),
        }
    }
}

/// `edgewatch completions SHELL` prints a script the shell accepts, knowing the
/// subcommands.
#[test]
fn completions_for_bash_zsh_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(BIN, &["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in ["collector", "aggregator", "validate", "demo", "completions"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("edgewatch.bash");
    let out = run(BIN, &["completions", "bash"], &[]);
    std::fs::write(&script, &out.stdout).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(check.status.success(), "bash -n: {}", stderr(&check));
    let out = run(BIN, &["completions", "powershell-ish"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
