use edgewatch_config::{parse, AggregatorConfig, CollectorConfig, ConfigError};

fn err<T: serde::de::DeserializeOwned + std::fmt::Debug>(yaml: &str) -> String {
    parse::<T>(yaml, "c.yaml").unwrap_err().to_string()
}

const GOOD: &str = "cluster: edge-a
node: node-1
receivers:
  otlp:
    grpc: 127.0.0.1:4317
    http: 127.0.0.1:4318
buffer:
  path: ./data/collector
  max_bytes: 1GiB
forward:
  endpoint: http://127.0.0.1:14317
admin:
  listen: 127.0.0.1:9464
";

#[test]
fn the_documented_collector_config_parses() {
    let c: CollectorConfig = parse(GOOD, "c.yaml").unwrap();
    assert_eq!(c.cluster.0, "edge-a");
    assert_eq!(c.buffer.max_bytes.bytes(), 1 << 30);
    assert_eq!(c.receivers.otlp.grpc.unwrap().0.port(), 4317);
}

#[test]
fn unknown_key_is_located() {
    let e = err::<CollectorConfig>(
        &GOOD.replace("  max_bytes: 1GiB", "  max_bytes: 1GiB\n  maxbytes: 2"),
    );
    assert!(e.starts_with("c.yaml:10:3: "), "{e}");
    assert!(e.contains("unknown field `maxbytes`"), "{e}");
}

#[test]
fn bad_size_duration_address_are_located() {
    let e = err::<CollectorConfig>(&GOOD.replace("1GiB", "1GiBs"));
    assert!(e.starts_with("c.yaml:9:14: "), "{e}");
    assert!(e.contains("unknown unit"), "{e}");
    let e = err::<CollectorConfig>(&GOOD.replace("127.0.0.1:4318", "nowhere"));
    assert!(e.starts_with("c.yaml:6:11: "), "{e}");
    assert!(e.contains("invalid address"), "{e}");
    let e = err::<CollectorConfig>(&GOOD.replace(
        "  endpoint: http://127.0.0.1:14317",
        "  endpoint: http://127.0.0.1:14317\n  timeout: 10 seconds",
    ));
    assert!(e.starts_with("c.yaml:12:12: "), "{e}");
    assert!(e.contains("invalid duration"), "{e}");
}

#[test]
fn missing_cluster_is_reported() {
    let e = err::<CollectorConfig>(&GOOD.replace("cluster: edge-a\n", ""));
    assert!(e.starts_with("c.yaml:"), "{e}");
    assert!(e.contains("missing field `cluster`"), "{e}");
    let e = err::<CollectorConfig>(&GOOD.replace("cluster: edge-a", "cluster: ''"));
    assert!(e.starts_with("c.yaml:1:10: "), "{e}");
}

#[test]
fn aggregator_config_parses_and_rejects_unknown_keys() {
    let yaml = "receivers:\n  otlp:\n    grpc: 127.0.0.1:14317\n    http: 127.0.0.1:14318\nhttp:\n  listen: 127.0.0.1:9090\nstate:\n  path: ./data/aggregator\n";
    let a: AggregatorConfig = parse(yaml, "a.yaml").unwrap();
    assert_eq!(a.http.listen.0.port(), 9090);
    let e = parse::<AggregatorConfig>(&format!("{yaml}bogus: 1\n"), "a.yaml").unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { line: 9, .. }), "{e}");
}

/// A URL is logged and labels metrics: a password in it is refused, not shown.
#[test]
fn credentials_in_urls_are_refused_without_echoing_them() {
    let e = err::<CollectorConfig>(&GOOD.replace(
        "http://127.0.0.1:14317",
        "https://user:hunter2@core.example:14317/x",
    ));
    assert!(e.starts_with("c.yaml:11:13: forward.endpoint: "), "{e}");
    assert!(e.contains("credentials in a URL"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let ok = GOOD.replace("http://127.0.0.1:14317", "https://core.example:14317/a@b");
    parse::<CollectorConfig>(&ok, "c.yaml").unwrap();
}

#[test]
fn aggregator_limits_parse_and_bad_ones_are_located() {
    let yaml = "http:\n  listen: 127.0.0.1:9090\nstate:\n  path: ./data/aggregator\n  collector_expiry: 7d\nlimits:\n  max_series_per_cluster: 100000\n  max_series: 1000000\n  max_label_names_per_series: 40\n  max_label_value_length: 2048\n  max_metric_name_length: 256\n  max_help_length: 1024\n";
    let a: AggregatorConfig = parse(yaml, "a.yaml").unwrap();
    let l = &a.limits;
    let got = [
        l.max_series_per_cluster,
        l.max_series,
        l.max_label_names_per_series,
        l.max_label_value_length,
        l.max_metric_name_length,
        l.max_help_length,
    ]
    .map(|v| v.map(|v| v.get()));
    assert_eq!(
        got,
        [100_000, 1_000_000, 40, 2048, 256, 1024].map(Some),
        "{l:?}"
    );
    assert_eq!(a.state.collector_expiry.get().as_secs(), 7 * 86_400);
    let none: AggregatorConfig = parse(
        "http:\n  listen: 127.0.0.1:9090\nstate:\n  path: x\n",
        "a.yaml",
    )
    .unwrap();
    assert!(none.limits.max_series.is_none());
    assert_eq!(none.state.collector_expiry.get().as_secs(), 30 * 86_400);
    let e = parse::<AggregatorConfig>(
        &yaml.replace("max_series: 1000000", "max_series: 0"),
        "a.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("a.yaml:8:15: limits.max_series: "), "{e}");
    let e = parse::<AggregatorConfig>(&yaml.replace("max_help_length", "max_help_len"), "a.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("a.yaml:12:3: "), "{e}");
    assert!(e.contains("unknown field `max_help_len`"), "{e}");
}
