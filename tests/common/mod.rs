//! Harness for end-to-end tests: the built `edgewatch` binary and real peers
//! (Prometheus) as child processes on free 127.0.0.1 ports.
#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (SIGKILL) when dropped; its output goes to a log file that
/// is printed if the test fails.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &str, args: &[&str], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(program)
            .args(args)
            .env("EDGEWATCH_LOG", "info")
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, as a power loss or OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

pub fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
}

/// Polls `f` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

pub async fn wait_ready(url: &str) {
    eventually(Duration::from_secs(30), url, || async {
        get(url).await.filter(|(s, _)| *s == 200)
    })
    .await;
}

/// The aggregator under test: its config and process.
pub struct Aggregator {
    pub grpc: u16,
    pub http_otlp: u16,
    pub http: u16,
    pub config: PathBuf,
    pub proc: Proc,
}

impl Aggregator {
    pub async fn start(dir: &Path) -> Aggregator {
        Self::start_with_grpc(dir, free_port()).await
    }

    /// On a given OTLP/gRPC port (collectors may have been pointed at it already).
    pub async fn start_with_grpc(dir: &Path, grpc: u16) -> Aggregator {
        Self::start_configured(dir, grpc, "").await
    }

    /// Like [`Aggregator::start`], with `extra` appended to the config at the top level
    /// (e.g. a `reconciler:` or `fleet:` section).
    pub async fn start_with_extra(dir: &Path, extra: &str) -> Aggregator {
        Self::start_configured(dir, free_port(), extra).await
    }

    async fn start_configured(dir: &Path, grpc: u16, extra: &str) -> Aggregator {
        let (http_otlp, http) = (free_port(), free_port());
        let config = dir.join("aggregator.yaml");
        write(
            &config,
            &format!(
                "receivers:\n  otlp:\n    grpc: 127.0.0.1:{grpc}\n    http: 127.0.0.1:{http_otlp}\nhttp:\n  listen: 127.0.0.1:{http}\nstate:\n  path: {}\n{extra}",
                dir.join("aggregator-state").display()
            ),
        );
        let proc = Self::spawn(&config, dir);
        wait_ready(&format!("http://127.0.0.1:{http}/readyz")).await;
        Aggregator {
            grpc,
            http_otlp,
            http,
            config,
            proc,
        }
    }

    fn spawn(config: &Path, dir: &Path) -> Proc {
        Proc::spawn(
            "aggregator",
            BIN,
            &[
                "aggregator",
                "--config",
                config.to_str().expect("utf-8 path"),
            ],
            dir,
        )
    }

    pub async fn restart(&mut self, dir: &Path) {
        self.proc.stop();
        self.proc = Self::spawn(&self.config, dir);
        wait_ready(&format!("http://127.0.0.1:{}/readyz", self.http)).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = get(&self.url("/metrics"))
            .await
            .expect("aggregator /metrics");
        sample_value(&body, name).unwrap_or(0.0)
    }

    /// `/federate` for one selector.
    pub async fn federate(&self, selector: &str) -> String {
        let client = reqwest::Client::new();
        let r = client
            .get(self.url("/federate"))
            .query(&[("match[]", selector)])
            .send()
            .await
            .expect("federate request");
        assert_eq!(r.status(), 200, "federate {selector}");
        r.text().await.expect("federate body")
    }
}

pub struct Collector {
    pub grpc: u16,
    pub http: u16,
    pub admin: u16,
    pub config: PathBuf,
    pub proc: Proc,
}

impl Collector {
    /// `extra` is appended to the `buffer:` block (e.g. `  max_bytes: 1MiB\n`).
    pub async fn start(
        dir: &Path,
        name: &str,
        cluster: &str,
        node: &str,
        aggregator_grpc: u16,
        extra_buffer: &str,
    ) -> Collector {
        Self::spawn(
            dir,
            name,
            cluster,
            node,
            aggregator_grpc,
            "",
            extra_buffer,
            "",
        )
        .await
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = get(&format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .expect("collector /metrics");
        sample_value(&body, name).unwrap_or(0.0)
    }
}

/// The value of the first sample line of exposition text whose series starts with
/// `series` (a name, or a name with a label prefix).
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(series)
                && matches!(
                    l.as_bytes().get(series.len()),
                    Some(b' ') | Some(b'{') | Some(b',') | Some(b'}')
                )
        })
        .and_then(|l| {
            l.rsplit_once('}')
                .map(|(_, v)| v)
                .or_else(|| l.split_once(' ').map(|(_, v)| v))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A real Prometheus server (Debian package `prometheus`) on a free port.
pub struct Prometheus {
    pub port: u16,
    pub proc: Proc,
}

impl Prometheus {
    pub async fn start(dir: &Path, scrape_configs: &str) -> Prometheus {
        let port = free_port();
        let cfg = dir.join("prometheus.yml");
        write(&cfg, &format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"));
        let data = dir.join("prometheus-data");
        let proc = Proc::spawn(
            "prometheus",
            "prometheus",
            &[
                &format!("--config.file={}", cfg.display()),
                &format!("--storage.tsdb.path={}", data.display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--web.enable-remote-write-receiver",
            ],
            dir,
        );
        let p = Prometheus { port, proc };
        wait_ready(&format!("http://127.0.0.1:{port}/-/ready")).await;
        p
    }

    /// An instant query; the `data.result` array.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let client = reqwest::Client::new();
        let Ok(r) = client
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", promql)])
            .send()
            .await
        else {
            return vec![];
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// One sample line of exposition text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
    pub timestamp: Option<i64>,
}

impl Sample {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Parses the sample lines of Prometheus text exposition (escapes in label values
/// are kept as written; the tests do not use them).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, rest) = match line.find('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => line.split_once(' ').expect("name value"),
        };
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..series.len() - 1]),
            None => (series, ""),
        };
        let mut map = std::collections::BTreeMap::new();
        let mut rest_labels = labels;
        while let Some(eq) = rest_labels.find("=\"") {
            let key = rest_labels[..eq].trim_start_matches(',').trim().to_string();
            let after = &rest_labels[eq + 2..];
            let end = after.find('"').expect("closing quote");
            map.insert(key, after[..end].to_string());
            rest_labels = &after[end + 1..];
        }
        let mut parts = rest.split_whitespace();
        let value = match parts.next().expect("value") {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().expect("numeric value"),
        };
        let timestamp = parts.next().map(|t| t.parse().expect("timestamp"));
        out.push(Sample {
            name: name.to_string(),
            labels: map,
            value,
            timestamp,
        });
    }
    out
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// An OTLP request of `points` gauge points in series `series_prefix-<i>`, values
/// random (so the buffer cannot compress them away), timestamped now.
pub fn gauge_request(metric: &str, series_prefix: &str, points: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use prost::Message;
    use rand::Rng;
    let kv = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let now = now_ms() as u64 * 1_000_000;
    let mut rng = rand::rng();
    let data_points = (0..points)
        .map(|i| NumberDataPoint {
            attributes: vec![kv("series", format!("{series_prefix}-{i}"))],
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsDouble(rng.random())),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", "durability".into())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: metric.into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// POSTs a protobuf OTLP body; the HTTP status and the Retry-After header.
pub async fn post_otlp(port: u16, body: Vec<u8>) -> (u16, Option<String>) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("post to the collector");
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (r.status().as_u16(), retry)
}

/// Bytes of all files under `dir`.
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += disk_usage(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

impl Collector {
    /// Sum of a labelled counter family's samples (e.g. all `reason`s).
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let (_, body) = get(&format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .expect("collector /metrics");
        parse_samples(&body)
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    pub async fn metric_with(&self, name: &str, label: &str, value: &str) -> f64 {
        let (_, body) = get(&format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .expect("collector /metrics");
        parse_samples(&body)
            .iter()
            .filter(|s| s.name == name && s.label(label) == value)
            .map(|s| s.value)
            .sum()
    }

    pub fn buffer_dir(&self) -> PathBuf {
        self.config
            .with_file_name(format!("{}-buffer", self.proc.name))
    }
}

impl Collector {
    /// Like [`Collector::start`], with `receivers_extra` appended to the `receivers:` block
    /// (e.g. a `  prometheus:` section) and `top_extra` appended at the top level.
    pub async fn start_with_receivers(
        dir: &Path,
        name: &str,
        cluster: &str,
        node: &str,
        aggregator_grpc: u16,
        receivers_extra: &str,
        top_extra: &str,
    ) -> Collector {
        Self::spawn(
            dir,
            name,
            cluster,
            node,
            aggregator_grpc,
            receivers_extra,
            "",
            top_extra,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn spawn(
        dir: &Path,
        name: &str,
        cluster: &str,
        node: &str,
        aggregator_grpc: u16,
        receivers_extra: &str,
        buffer_extra: &str,
        top_extra: &str,
    ) -> Collector {
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let config = dir.join(format!("{name}.yaml"));
        // Own metrics are off: several tests count points exactly.
        write(
            &config,
            &format!(
                "cluster: {cluster}\nnode: {node}\nreceivers:\n  otlp:\n    grpc: 127.0.0.1:{grpc}\n    http: 127.0.0.1:{http}\n{receivers_extra}buffer:\n  path: {}\n{buffer_extra}forward:\n  endpoint: http://127.0.0.1:{aggregator_grpc}\n  initial_backoff: 50ms\n  max_backoff: 500ms\nadmin:\n  listen: 127.0.0.1:{admin}\n  self_metrics_interval: 0\n{top_extra}",
                dir.join(format!("{name}-buffer")).display()
            ),
        );
        let proc = Proc::spawn(
            name,
            BIN,
            &[
                "collector",
                "--config",
                config.to_str().expect("utf-8 path"),
            ],
            dir,
        );
        wait_ready(&format!("http://127.0.0.1:{admin}/readyz")).await;
        Collector {
            grpc,
            http,
            admin,
            config,
            proc,
        }
    }
}

/// One inference pod as a collector reports it (`edgewatch_model_info` /
/// `edgewatch_model_ready`).
#[derive(Debug, Clone)]
pub struct ModelPod {
    pub namespace: String,
    pub pod: String,
    pub deployment: String,
    pub model: String,
    pub version: String,
    pub image: String,
    pub digest: String,
    pub ready: bool,
}

/// An OTLP request as a collector on (cluster, node) forwards it: the pods' model
/// gauges under scope `edgewatch.scrape` (names kept exact) and the collector's own
/// `edgewatch_collector_info`, resource attributes `k8s.cluster.name`/`k8s.node.name`,
/// timestamped now.
pub fn model_request(
    cluster: &str,
    node: &str,
    pods: &[ModelPod],
    collector_version: &str,
) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use prost::Message;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let now = now_ms() as u64 * 1_000_000;
    let point = |attrs: Vec<KeyValue>, v: f64| NumberDataPoint {
        attributes: attrs,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let gauge = |name: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    };
    let pod_attrs = |p: &ModelPod| {
        vec![
            kv("namespace", &p.namespace),
            kv("pod", &p.pod),
            kv("deployment", &p.deployment),
            kv("model", &p.model),
            kv("version", &p.version),
            kv("image", &p.image),
            kv("digest", &p.digest),
        ]
    };
    let info = pods.iter().map(|p| point(pod_attrs(p), 1.0)).collect();
    let ready = pods
        .iter()
        .map(|p| point(pod_attrs(p), if p.ready { 1.0 } else { 0.0 }))
        .collect();
    let collector = vec![point(
        vec![
            kv("instance_id", &format!("{cluster}-{node}")),
            kv("version", collector_version),
        ],
        1.0,
    )];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![
                    kv("service.name", "edgewatch-collector"),
                    kv("k8s.cluster.name", cluster),
                    kv("k8s.node.name", node),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "edgewatch.scrape".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    gauge("edgewatch_model_info", info),
                    gauge("edgewatch_model_ready", ready),
                    gauge("edgewatch_collector_info", collector),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}
