//! `edgewatch validate`: `ok`, or exit 2 with FILE:LINE:COL.

use edgewatch_testkit::write;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

fn validate(role: &str, yaml: &str) -> (i32, String, String) {
    validate_with_env(role, yaml, &[])
}

/// `validate` with these environment variables set for the binary.
fn validate_with_env(role: &str, yaml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("c.yaml");
    write(&f, yaml);
    let out = Command::new(BIN)
        .args(["validate", role, f.to_str().expect("utf-8")])
        .envs(env.iter().copied())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&f.display().to_string(), "FILE");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

const COLLECTOR: &str = "cluster: edge-a
receivers:
  otlp:
    grpc: 127.0.0.1:4317
buffer:
  path: ./data/collector
  max_bytes: 1GiB
forward:
  endpoint: http://127.0.0.1:14317
";

#[test]
fn valid_files_print_ok() {
    assert_eq!(
        validate("collector", COLLECTOR),
        (0, "ok\n".into(), String::new())
    );
    let agg = "http:\n  listen: 127.0.0.1:9090\nstate:\n  path: ./data/aggregator\n";
    assert_eq!(validate("aggregator", agg).0, 0);
}

#[test]
fn errors_name_file_line_column() {
    let cases = [
        (
            COLLECTOR.replace("  max_bytes: 1GiB", "  max_bytes: 1GiB\n  colour: red"),
            "FILE:8:3: unknown field `colour`",
        ),
        (
            COLLECTOR.replace("1GiB", "lots"),
            "FILE:7:14: buffer.max_bytes: invalid size",
        ),
        (
            COLLECTOR.replace("127.0.0.1:4317", "4317"),
            "FILE:4:11: receivers.otlp.grpc: invalid address",
        ),
        (
            COLLECTOR.replace("http://127.0.0.1:14317", "127.0.0.1:14317"),
            "FILE:9:13: forward.endpoint: invalid URL",
        ),
        (
            COLLECTOR.replace("cluster: edge-a\n", ""),
            "missing field `cluster`",
        ),
        (
            format!("{COLLECTOR}  timeout: soon\n"),
            "FILE:10:12: forward.timeout: invalid duration",
        ),
    ];
    for (yaml, want) in cases {
        let (code, stdout, stderr) = validate("collector", &yaml);
        assert_eq!(code, 2, "{want}: {stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.starts_with(want) || stderr.contains(want),
            "want {want:?}, got {stderr:?}"
        );
        assert!(stderr.starts_with("FILE:"), "{stderr}");
    }
}

/// `${VAR}` expands in every value before validation: what is checked is the
/// expansion, and an unset variable is located.
#[test]
fn validate_sees_expanded_values() {
    let yaml = COLLECTOR
        .replace("edge-a", "${env:EW_CLI_CLUSTER}")
        .replace("1GiB", "${EW_CLI_MAX_BYTES:-1GiB}")
        .replace("http://127.0.0.1:14317", "${EW_CLI_ENDPOINT}");
    let good = [
        ("EW_CLI_CLUSTER", "edge-b"),
        ("EW_CLI_ENDPOINT", "http://127.0.0.1:14317"),
    ];
    assert_eq!(
        validate_with_env("collector", &yaml, &good),
        (0, "ok\n".into(), String::new())
    );
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[good[0], ("EW_CLI_ENDPOINT", "127.0.0.1:14317")],
            "FILE:9:13: forward.endpoint: invalid URL \"127.0.0.1:14317\"",
        ),
        (
            &[good[0], good[1], ("EW_CLI_MAX_BYTES", "lots")],
            "FILE:7:14: buffer.max_bytes: invalid size",
        ),
        (
            &[good[0]],
            "FILE:9:13: forward.endpoint: environment variable EW_CLI_ENDPOINT is not set",
        ),
    ];
    for (env, want) in cases {
        let (code, _, stderr) = validate_with_env("collector", &yaml, env);
        assert_eq!(code, 2, "{want}: {stderr}");
        assert!(stderr.starts_with(want), "want {want:?}, got {stderr:?}");
    }
}

/// A `remote_write:` block as Prometheus users write it (copied from a Prometheus
/// configuration) validates; its mistakes are located.
#[test]
fn aggregator_remote_write_in_prometheus_shape() {
    let agg = "http:
  listen: 127.0.0.1:9090
state:
  path: ./data/aggregator
wal:
  max_bytes: 2GiB
  max_age: 6h
remote_write:
  - url: https://mimir.example/api/v1/push
    name: mimir
    remote_timeout: 30s
    headers:
      X-Scope-OrgID: edge-fleet
    basic_auth:
      username: edgewatch
      password_file: /etc/edgewatch/mimir-password
    tls_config:
      ca_file: /etc/edgewatch/tls/ca.crt
      server_name: mimir.example
    write_relabel_configs:
      - source_labels: [__name__]
        regex: go_.*
        action: drop
    queue_config:
      capacity: 10000
      min_shards: 1
      max_shards: 20
      max_samples_per_send: 2000
      batch_send_deadline: 5s
      min_backoff: 30ms
      max_backoff: 5s
      retry_on_http_429: true
    metadata_config:
      send: true
      send_interval: 1m
  - url: http://victoria:8428/api/v1/write
";
    assert_eq!(
        validate("aggregator", agg),
        (0, "ok\n".into(), String::new())
    );
    let cases = [
        (
            agg.replace("https://mimir", "mimir"),
            "FILE:9:5: remote_write[0].url: invalid URL",
        ),
        (
            agg.replace("X-Scope-OrgID", "Content-Type"),
            "\"Content-Type\" is set by the protocol",
        ),
        (agg.replace("action: drop", "action: explode"), "explode"),
        (
            agg.replace("max_shards: 20", "max_shards: 0"),
            "min_shards (1) <= max_shards (0)",
        ),
        (
            agg.replace("  max_age: 6h", "  max_age: forever"),
            "FILE:7:12: wal.max_age: invalid duration",
        ),
    ];
    for (yaml, want) in cases {
        let (code, _, stderr) = validate("aggregator", &yaml);
        assert_eq!(code, 2, "{want}: {stderr}");
        assert!(stderr.contains(want), "want {want:?}, got {stderr:?}");
        assert!(stderr.starts_with("FILE:"), "{stderr}");
    }
}
