//! The `edgewatch` roles as child processes on free ports. The binary's path is passed
//! in (`env!("CARGO_BIN_EXE_edgewatch")` in the root crate's tests), so this crate
//! depends on no edgewatch crate.

use std::path::{Path, PathBuf};

use crate::{free_port, wait_ready, write, Metrics, Proc};

/// `edgewatch aggregator` with its config under a test directory.
pub struct Aggregator {
    pub bin: String,
    pub grpc: u16,
    pub http_otlp: u16,
    pub http: u16,
    pub config: PathBuf,
    pub proc: Proc,
}

impl Aggregator {
    /// On free ports; ready (`/readyz` answers 200) when this returns.
    pub async fn start(bin: &str, dir: &Path) -> Aggregator {
        Aggregator::start_configured(bin, dir, free_port(), "").await
    }

    /// On a given OTLP/gRPC port (collectors may have been pointed at it already).
    pub async fn start_with_grpc(bin: &str, dir: &Path, grpc: u16) -> Aggregator {
        Aggregator::start_configured(bin, dir, grpc, "").await
    }

    /// With `extra` appended to the config at the top level (e.g. `reconciler:`).
    pub async fn start_with_extra(bin: &str, dir: &Path, extra: &str) -> Aggregator {
        Aggregator::start_configured(bin, dir, free_port(), extra).await
    }

    /// On a given OTLP/gRPC port, with `extra` appended at the top level.
    pub async fn start_configured(bin: &str, dir: &Path, grpc: u16, extra: &str) -> Aggregator {
        let spec = AggregatorSpec {
            grpc,
            extra,
            ..AggregatorSpec::default()
        };
        Aggregator::start_spec(bin, dir, &spec).await
    }

    /// With `http_extra` appended to the `http:` block (e.g. `  basic_auth_users:
    /// ...`) and `extra` at the top level.
    pub async fn start_with_http(
        bin: &str,
        dir: &Path,
        http_extra: &str,
        extra: &str,
    ) -> Aggregator {
        let spec = AggregatorSpec {
            http_extra,
            extra,
            ..AggregatorSpec::default()
        };
        Aggregator::start_spec(bin, dir, &spec).await
    }

    /// As `spec` says; with `spec.http_tls`, readiness is asked over HTTPS.
    pub async fn start_spec(bin: &str, dir: &Path, spec: &AggregatorSpec<'_>) -> Aggregator {
        let grpc = if spec.grpc == 0 {
            free_port()
        } else {
            spec.grpc
        };
        let (http_otlp, http) = (free_port(), free_port());
        let config = dir.join("aggregator.yaml");
        write(
            &config,
            &format!(
                "receivers:\n  otlp:\n    grpc: 127.0.0.1:{grpc}\n    http: 127.0.0.1:{http_otlp}\n{otlp}http:\n  listen: 127.0.0.1:{http}\n{http_extra}state:\n  path: {state}\n{extra}",
                otlp = spec.otlp_extra,
                http_extra = spec.http_extra,
                state = dir.join("aggregator-state").display(),
                extra = spec.extra,
            ),
        );
        let proc = spawn_role(bin, "aggregator", "aggregator", &config, dir);
        match &spec.http_tls {
            _ if spec.unready => {}
            None => wait_ready(&format!("http://127.0.0.1:{http}/readyz")).await,
            Some(client) => {
                crate::http::wait_ready_with(client, &format!("https://127.0.0.1:{http}/readyz"))
                    .await
            }
        }
        Aggregator {
            bin: bin.to_string(),
            grpc,
            http_otlp,
            http,
            config,
            proc,
        }
    }

    /// A clean stop (asserted) unless the test already stopped or killed it, then a
    /// start on the same config and ports.
    pub async fn restart(&mut self, dir: &Path) {
        if self.proc.pid() != 0 {
            self.proc.stop();
        }
        self.proc = spawn_role(&self.bin, "aggregator", "aggregator", &self.config, dir);
        wait_ready(&self.url("/readyz")).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// A scrape of its `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        Metrics::scrape(&self.url("/metrics")).await
    }

    /// `POST /-/reload`: status and body.
    pub async fn reload(&self) -> (u16, String) {
        reload(&self.url("/-/reload")).await
    }

    /// `/federate` for one selector; panics unless it answers 200.
    pub async fn federate(&self, selector: &str) -> String {
        let r = reqwest::Client::new()
            .get(self.url("/federate"))
            .query(&[("match[]", selector)])
            .send()
            .await
            .expect("federate request");
        assert_eq!(r.status(), 200, "federate {selector}");
        r.text().await.expect("federate body")
    }
}

/// What an [`Aggregator`] is started with; `*_extra` strings are YAML lines.
#[derive(Default)]
pub struct AggregatorSpec<'a> {
    /// OTLP/gRPC port; 0: a free one.
    pub grpc: u16,
    /// Appended to `receivers.otlp:` (4 spaces, e.g. `    tls: {...}`).
    pub otlp_extra: &'a str,
    /// Appended to `http:` (2 spaces).
    pub http_extra: &'a str,
    /// Appended at the top level.
    pub extra: &'a str,
    /// A client for an HTTPS `http:` listener (see [`crate::http::tls_client`]).
    pub http_tls: Option<reqwest::Client>,
    /// Return once the process is started, without waiting for `/readyz`.
    pub unready: bool,
}

/// What a [`Collector`] is started with; `extra` strings are YAML lines appended to
/// the generated config.
pub struct CollectorSpec<'a> {
    pub name: &'a str,
    pub cluster: &'a str,
    pub node: &'a str,
    pub aggregator_grpc: u16,
    /// Appended to `receivers:` (e.g. a `  prometheus:` section).
    pub receivers_extra: &'a str,
    /// Appended to `buffer:` (e.g. `  max_bytes: 1MiB\n`).
    pub buffer_extra: &'a str,
    /// Appended to `forward:` (e.g. `  max_in_flight: 1\n`).
    pub forward_extra: &'a str,
    /// Appended at the top level.
    pub top_extra: &'a str,
    /// Scheme of `forward.endpoint` (`http` unless set).
    pub forward_scheme: &'a str,
    /// Appended to `admin:` (2 spaces, e.g. `  tls: {...}`).
    pub admin_extra: &'a str,
    /// A client for an HTTPS admin listener (see [`crate::http::tls_client`]).
    pub admin_tls: Option<reqwest::Client>,
}

impl<'a> CollectorSpec<'a> {
    pub fn new(name: &'a str, cluster: &'a str, node: &'a str, aggregator_grpc: u16) -> Self {
        CollectorSpec {
            name,
            cluster,
            node,
            aggregator_grpc,
            receivers_extra: "",
            buffer_extra: "",
            forward_extra: "",
            top_extra: "",
            forward_scheme: "http",
            admin_extra: "",
            admin_tls: None,
        }
    }
}

/// `edgewatch collector` on free ports, own metrics off (tests count points exactly),
/// retries fast (backoff 50–500 ms).
pub struct Collector {
    pub bin: String,
    pub name: String,
    pub grpc: u16,
    pub http: u16,
    pub admin: u16,
    pub config: PathBuf,
    pub proc: Proc,
}

impl Collector {
    /// `buffer_extra` is appended to the `buffer:` block.
    pub async fn start(
        bin: &str,
        dir: &Path,
        name: &str,
        cluster: &str,
        node: &str,
        aggregator_grpc: u16,
        buffer_extra: &str,
    ) -> Collector {
        let spec = CollectorSpec {
            buffer_extra,
            ..CollectorSpec::new(name, cluster, node, aggregator_grpc)
        };
        Collector::start_spec(bin, dir, &spec).await
    }

    /// Ready (`/readyz` answers 200) when this returns.
    pub async fn start_spec(bin: &str, dir: &Path, spec: &CollectorSpec<'_>) -> Collector {
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let config = dir.join(format!("{}.yaml", spec.name));
        write(
            &config,
            &format!(
                "cluster: {cluster}\nnode: {node}\nreceivers:\n  otlp:\n    grpc: 127.0.0.1:{grpc}\n    http: 127.0.0.1:{http}\n{receivers}buffer:\n  path: {buffer}\n{buffer_extra}forward:\n  endpoint: {scheme}://127.0.0.1:{agg}\n  initial_backoff: 50ms\n  max_backoff: 500ms\n{forward_extra}admin:\n  listen: 127.0.0.1:{admin}\n  self_metrics_interval: 0\n{admin_extra}{top}",
                cluster = spec.cluster,
                node = spec.node,
                receivers = spec.receivers_extra,
                buffer = dir.join(format!("{}-buffer", spec.name)).display(),
                buffer_extra = spec.buffer_extra,
                agg = spec.aggregator_grpc,
                scheme = spec.forward_scheme,
                admin_extra = spec.admin_extra,
                forward_extra = spec.forward_extra,
                top = spec.top_extra,
            ),
        );
        let proc = spawn_role(bin, spec.name, "collector", &config, dir);
        match &spec.admin_tls {
            None => wait_ready(&format!("http://127.0.0.1:{admin}/readyz")).await,
            Some(client) => {
                crate::http::wait_ready_with(client, &format!("https://127.0.0.1:{admin}/readyz"))
                    .await
            }
        }
        Collector {
            bin: bin.to_string(),
            name: spec.name.to_string(),
            grpc,
            http,
            admin,
            config,
            proc,
        }
    }

    /// A clean stop (asserted) unless the test already stopped or killed it, then a
    /// start on the same config and ports.
    pub async fn restart(&mut self, dir: &Path) {
        if self.proc.pid() != 0 {
            self.proc.stop();
        }
        self.respawn(dir).await;
    }

    /// Starts the process again on the same config (after [`Proc::kill`] or
    /// [`Proc::stop`]); waits for `/readyz`.
    pub async fn respawn(&mut self, dir: &Path) {
        self.proc = spawn_role(&self.bin, &self.name, "collector", &self.config, dir);
        wait_ready(&self.url("/readyz")).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// A scrape of its admin `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        Metrics::scrape(&self.url("/metrics")).await
    }

    /// `POST /-/reload` on the admin port: status and body.
    pub async fn reload(&self) -> (u16, String) {
        reload(&self.url("/-/reload")).await
    }

    pub fn buffer_dir(&self) -> PathBuf {
        self.config.with_file_name(format!("{}-buffer", self.name))
    }
}

/// `POST url` as an operator reloads (a JSON content type, which the
/// aggregator's listener asks of every state-changing request).
async fn reload(url: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .send()
        .await
        .expect("POST /-/reload");
    let status = r.status().as_u16();
    (status, r.text().await.expect("reload answer"))
}

fn spawn_role(bin: &str, name: &str, role: &str, config: &Path, dir: &Path) -> Proc {
    let config = config.to_str().expect("config path is UTF-8");
    Proc::spawn(name, bin, &[role, "--config", config], dir)
}

/// The JSON report of an `edgewatch loadgen --json` run; panics with its stderr
/// unless it exited successfully.
pub fn loadgen_report(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("loadgen JSON report")
}

/// `edgewatch loadgen` in the background against a collector's OTLP/gRPC port:
/// numbered points (`--sequence-check`), batches of 10, `concurrency` requests at a
/// time; its process output once it finishes.
pub fn sequence_checked_load(
    bin: &str,
    grpc: u16,
    concurrency: u32,
    rate: u64,
    series: u64,
    seconds: u64,
) -> tokio::task::JoinHandle<std::process::Output> {
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let bin = bin.to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["loadgen", "--endpoint", &endpoint, "--protocol", "grpc"])
            .args(["--batch", "10", "--concurrency", &concurrency.to_string()])
            .args(["--rate", &rate.to_string(), "--series", &series.to_string()])
            .args(["--duration", &format!("{seconds}s")])
            .args(["--sequence-check", "--json", "--quiet", "--timeout", "3s"])
            .output()
            .expect("run loadgen")
    })
}

/// Highest acknowledged sequence number per series index (`s<index>`), from a
/// `--sequence-check` report.
pub fn acked_through(report: &serde_json::Value) -> std::collections::BTreeMap<usize, u64> {
    let index = |v: &serde_json::Value| -> usize {
        v.as_str().expect("series name")[1..]
            .parse()
            .expect("series index")
    };
    let mut out = std::collections::BTreeMap::new();
    for run in report["sequence"]["acked_through"]
        .as_array()
        .expect("acked_through runs")
    {
        let seq = run["seq"].as_u64().expect("seq");
        for i in index(&run["from"])..=index(&run["to"]) {
            out.insert(i, seq);
        }
    }
    out
}
