//! `receivers.prometheus` scrape limits: global, per static target, Prometheus' size
//! units, and where mistakes are reported.

use edgewatch_config::collector::{PromSize, ScrapeLimits, StaticTarget};
use edgewatch_config::{parse, CollectorConfig};

const BASE: &str = "cluster: edge-a
buffer:
  path: ./data/collector
forward:
  endpoint: http://127.0.0.1:14317
receivers:
  prometheus:
    sample_limit: 1000
    label_limit: 30
    body_size_limit: 10MB
    static_targets:
      - http://127.0.0.1:9100/metrics
      - url: http://127.0.0.1:9101/metrics
        job: node
        sample_limit: 0
        label_value_length_limit: 64
        body_size_limit: 1.5KB
";

fn err(yaml: &str) -> String {
    parse::<CollectorConfig>(yaml, "c.yaml")
        .unwrap_err()
        .to_string()
}

#[test]
fn per_target_limits_override_the_global_ones() {
    let c: CollectorConfig = parse(BASE, "c.yaml").unwrap();
    let p = &c.receivers.prometheus;
    let global = ScrapeLimits {
        sample_limit: 1000,
        label_limit: 30,
        label_name_length_limit: 0,
        label_value_length_limit: 0,
        body_size_limit: 10 << 20,
    };
    assert_eq!(p.limits(), global);
    let specs: Vec<_> = p.static_targets.iter().map(StaticTarget::spec).collect();
    assert_eq!(p.target_limits(&specs[0]), global);
    assert_eq!(
        p.target_limits(&specs[1]),
        ScrapeLimits {
            sample_limit: 0,
            label_value_length_limit: 64,
            body_size_limit: 1536,
            ..global
        }
    );
    assert_eq!(specs[1].job.as_deref(), Some("node"));
}

#[test]
fn defaults_are_prometheus_except_the_body() {
    let c: CollectorConfig = parse(&BASE[..BASE.find("receivers:").unwrap()], "c.yaml").unwrap();
    assert_eq!(
        c.receivers.prometheus.limits(),
        ScrapeLimits {
            body_size_limit: 16 << 20,
            ..ScrapeLimits::default()
        }
    );
}

/// Prometheus' `<size>`: every unit a power of 1024, `kB` refused.
#[test]
fn sizes_are_read_as_prometheus_reads_them() {
    for (text, bytes) in [
        ("10MB", 10 << 20),
        ("10MiB", 10 << 20),
        ("1KB", 1024),
        ("2GB", 2 << 30),
        ("1EB", 1 << 60),
        ("512B", 512),
        ("1MB512KB", (1 << 20) + (512 << 10)),
        ("0", 0),
        ("4096", 4096),
    ] {
        assert_eq!(text.parse::<PromSize>().unwrap(), PromSize(bytes), "{text}");
    }
    for bad in [
        "", "MB", "10 MB", "10kB", "10mb", "1.5", "10XB", "-1MB", "99999EB",
    ] {
        assert!(bad.parse::<PromSize>().is_err(), "{bad}");
    }
}

#[test]
fn mistakes_are_located() {
    let cases = [
        ("        sample_limit: 0", "        sample_limt: 0", "c.yaml:15:9: unknown field `sample_limt`"),
        ("    label_limit: 30", "    label_limit: many", "c.yaml:9:18: receivers.prometheus.label_limit: invalid type"),
        ("body_size_limit: 10MB", "body_size_limit: 10kB", "c.yaml:10:22: receivers.prometheus.body_size_limit: invalid size \"10kB\""),
        (
            "body_size_limit: 1.5KB",
            "body_size_limit: 1.5XB",
            // A value's own check is placed at its target (serde_yaml places it at the
            // enclosing mapping, and the path locator does not enter sequence items).
            "c.yaml:13:9: receivers.prometheus.static_targets[1].body_size_limit: invalid size",
        ),
        (
            "label_value_length_limit: 64",
            "label_value_length_limit: -1",
            "c.yaml:16:35: receivers.prometheus.static_targets[1].label_value_length_limit: invalid value: integer `-1`, expected u64",
        ),
        (
            "      - http://127.0.0.1:9100/metrics",
            "      - 127.0.0.1:9100",
            "c.yaml:12:9: receivers.prometheus.static_targets[0]: invalid URL",
        ),
    ];
    for (from, to, want) in cases {
        assert!(BASE.contains(from), "{from}");
        let e = err(&BASE.replace(from, to));
        assert!(e.starts_with(want), "want {want:?}, got {e:?}");
    }
}
