//! `edgewatch-collector`: the collector alone. It runs the collector like
//! `edgewatch collector`, carries none of the core's code, and is what the DaemonSet
//! starts.

use edgewatch_testkit::otlp::{gauge_request, post_otlp};
use edgewatch_testkit::roles::Aggregator;
use edgewatch_testkit::{eventually, free_port, get, parse_samples, wait_ready, write, Proc};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const COLLECTOR_BIN: &str = env!("CARGO_BIN_EXE_edgewatch-collector");

/// Strings that only the aggregator's crate holds, one from each of its parts the
/// edge has no use for.
const CORE_ONLY: &[&str] = &[
    // reconcile/: the GitOps status metric and its API route.
    "edgewatch_deployment_status",
    "/api/v1/deployments",
    // rules/: Prometheus' alert state series and a rule metric.
    "ALERTS_FOR_STATE",
    "edgewatch_rule_evaluations_total",
    // notify/
    "edgewatch_notifications_total",
    // expose/
    "/federate",
];

fn contains(binary: &str, needle: &str) -> bool {
    // grep reads the ~100 MB debug executables in a blink; a byte scan in this
    // unoptimised test binary takes seconds per string.
    let status = Command::new("grep")
        .args(["-q", "-a", "-F", "--", needle, binary])
        .status()
        .expect("grep");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("grep {needle} {binary}: {other:?}"),
    }
}

#[test]
fn the_collector_binary_links_no_core_code() {
    for s in CORE_ONLY {
        // The all-roles binary shows each string is a real marker of the core's code.
        assert!(contains(BIN, s), "edgewatch lacks {s:?}");
        assert!(
            !contains(COLLECTOR_BIN, s),
            "edgewatch-collector holds {s:?}"
        );
    }
    // And the collector's own code is there.
    for s in ["edgewatch_buffer_", "edgewatch_forward_"] {
        assert!(
            contains(COLLECTOR_BIN, s),
            "edgewatch-collector lacks {s:?}"
        );
    }
}

#[test]
fn version_and_validate() {
    let out = Command::new(COLLECTOR_BIN)
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    // The git revision that follows is checked in tests/conventions.rs.
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!(
            "edgewatch-collector {} (git ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("c.yaml");
    write(
        &f,
        "cluster: edge-a\nbuffer:\n  path: ./data\nforward:\n  endpoint: http://127.0.0.1:14317\n",
    );
    let validate = |file: &Path| {
        Command::new(COLLECTOR_BIN)
            .args(["validate", file.to_str().expect("utf-8")])
            .output()
            .expect("run")
    };
    let out = validate(&f);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");

    write(
        &f,
        "cluster: edge-a\nbuffer:\n  path: ./data\n  colour: red\nforward:\n  endpoint: http://127.0.0.1:14317\n",
    );
    let out = validate(&f);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:4:3: unknown field `colour`", f.display())),
        "{stderr}"
    );
}

#[test]
fn config_is_required() {
    let out = Command::new(COLLECTOR_BIN)
        .env_remove("EDGEWATCH_CONFIG")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_the_core_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start(BIN, dir.path()).await;
    let (http, admin) = (free_port(), free_port());
    let config = dir.path().join("collector.yaml");
    write(
        &config,
        &format!(
            "cluster: edge-a\nnode: node-1\nreceivers:\n  otlp:\n    http: 127.0.0.1:{http}\nbuffer:\n  path: {}\nforward:\n  endpoint: http://127.0.0.1:{}\nadmin:\n  listen: 127.0.0.1:{admin}\n",
            dir.path().join("buffer").display(),
            agg.grpc
        ),
    );
    let mut col = Proc::spawn(
        "edgewatch-collector",
        COLLECTOR_BIN,
        &["--config", config.to_str().expect("utf-8")],
        dir.path(),
    );
    wait_ready(&format!("http://127.0.0.1:{admin}/readyz")).await;

    let (status, _) = post_otlp(http, gauge_request("binary_test_gauge", "s", 3)).await;
    assert_eq!(status, 200);
    let samples = eventually(
        Duration::from_secs(20),
        "the points at the core",
        || async {
            let s = parse_samples(&agg.federate("binary_test_gauge").await);
            (s.len() == 3).then_some(s)
        },
    )
    .await;
    assert!(samples
        .iter()
        .all(|s| s.label("cluster") == "edge-a" && s.label("node") == "node-1"));

    // A clean stop: the collector drains its tasks and flushes the buffer.
    col.stop();
    assert!(
        get(&format!("http://127.0.0.1:{admin}/healthz"))
            .await
            .is_none(),
        "stopped"
    );
    let log = col.log_text();
    assert!(log.contains("collector stopped"), "{log}");
}

/// The DaemonSet runs the collector-only binary with the flags it takes.
#[test]
fn the_daemonset_runs_the_collector_binary() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/collector/daemonset.yaml"),
    )
    .expect("daemonset.yaml");
    let ds: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let strs = |v: &serde_yaml_ng::Value| -> Vec<String> {
        v.as_sequence()
            .expect("a list")
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    };
    // The collector image holds the binary at its root (Containerfile).
    assert_eq!(strs(&c["command"]), ["/edgewatch-collector"]);
    let name = Path::new(COLLECTOR_BIN).file_name().expect("file name");
    assert_eq!(name, "edgewatch-collector", "the binary the package builds");
    assert_eq!(
        strs(&c["args"]),
        ["--config", "/etc/edgewatch/collector.yaml"]
    );
}

/// `cargo run --release -- demo` (the README's first command) needs a default binary
/// now that the package has two.
#[test]
fn cargo_run_defaults_to_edgewatch() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pkg = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "edgewatch"))
        .expect("the edgewatch package");
    assert_eq!(pkg["default_run"], "edgewatch");
}
