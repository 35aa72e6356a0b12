//! Real peers on free 127.0.0.1 ports: Prometheus, Alertmanager and VictoriaMetrics
//! (Debian packages `prometheus`, `prometheus-alertmanager`, `victoria-metrics`) and
//! headless Chromium. A missing binary is a test failure naming the package
//! (`scripts/test` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_ready, write, Proc};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// `path`, or a panic saying which Debian package provides it.
pub fn require(path: &'static str, package: &str) -> &'static str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: scripts/test installs the Debian package {package}"
    );
    path
}

/// The Python of the repository's `.venv` with the official OpenTelemetry SDK
/// (`scripts/test` creates it), or a panic saying so.
pub fn otel_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let ok = Command::new(&python)
        .args([
            "-c",
            "import opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} has no OpenTelemetry SDK: scripts/test creates .venv",
        python.display()
    );
    python
}

/// A Prometheus server, killed when dropped.
pub struct Prometheus {
    pub port: u16,
    pub proc: Proc,
}

impl Prometheus {
    /// Scrapes every second; `scrape_configs` is the YAML list under `scrape_configs:`
    /// (may be empty). The remote-write receiver is enabled.
    pub async fn start(dir: &Path, scrape_configs: &str) -> Prometheus {
        let global = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n";
        let body = if scrape_configs.trim().is_empty() {
            String::new()
        } else {
            format!("scrape_configs:\n{scrape_configs}")
        };
        Prometheus::start_with_config(dir, &format!("{global}{body}"), &[]).await
    }

    /// With a whole configuration file and extra flags; waits for `/-/ready`.
    pub async fn start_with_config(dir: &Path, config: &str, flags: &[&str]) -> Prometheus {
        Prometheus::start_on(dir, free_port(), config, flags).await
    }

    /// On a chosen port (a config that scrapes Prometheus itself names it).
    pub async fn start_on(dir: &Path, port: u16, config: &str, flags: &[&str]) -> Prometheus {
        let bin = require(PROMETHEUS, "prometheus");
        let cfg = dir.join("prometheus.yml");
        write(&cfg, config);
        let mut args = vec![
            format!("--config.file={}", cfg.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".to_string(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn("prometheus", bin, &args, dir);
        wait_ready(&format!("http://127.0.0.1:{port}/-/ready")).await;
        Prometheus { port, proc }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An instant query at now: `data.result`; panics on an error answer.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        self.query_params(&[("query", promql)]).await
    }

    /// An instant query at `time_s` (Unix seconds).
    pub async fn query_at(&self, promql: &str, time_s: f64) -> Vec<serde_json::Value> {
        self.query_params(&[("query", promql), ("time", &time_s.to_string())])
            .await
    }

    async fn query_params(&self, params: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let r = reqwest::Client::new()
            .get(self.url("/api/v1/query"))
            .query(params)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Prometheus query {params:?}: {e}"));
        let v: serde_json::Value = r.json().await.expect("Prometheus answers JSON");
        assert_eq!(v["status"], "success", "Prometheus query {params:?}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// `promtool check config FILE`: Ok, or promtool's output.
pub fn promtool_check_config(file: &Path) -> Result<(), String> {
    let out = Command::new(require(PROMTOOL, "prometheus"))
        .args(["check", "config"])
        .arg(file)
        .output()
        .expect("running promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What a tool printed and whether it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `promtool ARGS…` (e.g. `test rules FILE`) to compare its verdict and
/// wording with ours.
pub fn promtool<I, S>(args: I) -> ToolOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(require(PROMTOOL, "prometheus"))
        .args(args)
        .output()
        .expect("running promtool");
    ToolOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An Alertmanager (no clustering), killed when dropped.
pub struct Alertmanager {
    pub port: u16,
    pub proc: Proc,
}

impl Alertmanager {
    /// With `config` (alertmanager.yml); waits for `/-/ready`.
    pub async fn start(dir: &Path, config: &str) -> Alertmanager {
        let bin = require(ALERTMANAGER, "prometheus-alertmanager");
        let port = free_port();
        let cfg = dir.join("alertmanager.yml");
        write(&cfg, config);
        let args = [
            format!("--config.file={}", cfg.display()),
            format!("--storage.path={}", dir.join("alertmanager-data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn("alertmanager", bin, &args, dir);
        wait_ready(&format!("http://127.0.0.1:{port}/-/ready")).await;
        Alertmanager { port, proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A page as headless Chromium left it.
#[derive(Debug, Clone)]
pub struct Page {
    pub dom: String,
    /// Console messages, one line each (`...:CONSOLE:1] "message", source: URL (line)`).
    pub console: Vec<String>,
}

/// Headless Chromium (Debian package `chromium`).
pub struct Chromium {
    pub bin: &'static str,
    profile: PathBuf,
}

impl Chromium {
    /// Chromium with its profile under `dir`.
    pub fn new(dir: &Path) -> Chromium {
        let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium is missing: scripts/test installs the Debian package chromium");
        Chromium {
            bin,
            profile: dir.join("chromium-profile"),
        }
    }

    fn command(&self, profile: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .kill_on_drop(true);
        cmd
    }

    /// Loads `url`, lets its scripts run for `budget` of virtual time, returns the DOM.
    pub async fn dump_dom(&self, url: &str, budget: Duration) -> String {
        self.load(url, budget).await.dom
    }

    /// Like [`Chromium::dump_dom`], also returning what the page wrote to the
    /// console: its own messages, script errors and Content-Security-Policy
    /// violations (Chromium logs them all on stderr with `--enable-logging`).
    pub async fn load(&self, url: &str, budget: Duration) -> Page {
        let profile = self.fresh_profile();
        let out = self
            .command(&profile)
            .args(["--enable-logging=stderr", "--v=0"])
            .arg(format!("--virtual-time-budget={}", budget.as_millis()))
            .arg("--dump-dom")
            .arg(url)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .expect("chromium finished within 120 s")
            .expect("chromium ran");
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            dom.contains("</html>"),
            "no DOM from chromium for {url}; stderr:\n{stderr}"
        );
        let console = stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect();
        Page { dom, console }
    }

    /// A browser kept running with the DevTools protocol on a free port (for tests
    /// that drive a page over time); waits until `/json/version` answers.
    pub async fn start_devtools(&self, dir: &Path) -> (Proc, u16) {
        let port = free_port();
        let mut cmd = Command::new(self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--remote-debugging-address=127.0.0.1",
        ])
        .arg(format!("--remote-debugging-port={port}"))
        .arg(format!(
            "--user-data-dir={}",
            self.fresh_profile().display()
        ))
        .arg("about:blank");
        let proc = Proc::spawn_command("chromium", cmd, dir);
        wait_ready(&format!("http://127.0.0.1:{port}/json/version")).await;
        (proc, port)
    }

    /// Each run gets its own profile directory: Chromium locks the one it uses.
    fn fresh_profile(&self) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.profile.with_file_name(format!("chromium-profile-{n}"))
    }
}

pub const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

/// A single-node VictoriaMetrics (Debian `victoria-metrics`), killed when dropped.
/// Duplicates (same series and timestamp) are merged at query time
/// (`-dedup.minScrapeInterval=1ms`), as a remote_write target should be run.
pub struct VictoriaMetrics {
    pub port: u16,
    pub proc: Proc,
}

/// One series of a VictoriaMetrics export: its labels and its samples in time order.
#[derive(Debug, Clone)]
pub struct ExportedSeries {
    pub labels: std::collections::BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

impl VictoriaMetrics {
    pub async fn start(dir: &Path) -> VictoriaMetrics {
        VictoriaMetrics::start_on(dir, free_port()).await
    }

    /// On a chosen port with its data under `dir` (a restart keeps the data).
    pub async fn start_on(dir: &Path, port: u16) -> VictoriaMetrics {
        let bin = require(VICTORIA_METRICS, "victoria-metrics");
        let args = [
            format!("-storageDataPath={}", dir.join("vm-data").display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-retentionPeriod=100y".to_string(),
            "-dedup.minScrapeInterval=1ms".to_string(),
            "-search.latencyOffset=0s".to_string(),
            "-search.disableCache".to_string(),
            "-loggerLevel=ERROR".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn("victoria-metrics", bin, &args, dir);
        wait_ready(&format!("http://127.0.0.1:{port}/health")).await;
        VictoriaMetrics { port, proc }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The remote write URL.
    pub fn write_url(&self) -> String {
        self.url("/api/v1/write")
    }

    /// An instant query at `time_s` after making everything written queryable:
    /// `data.result`; panics on an error answer.
    pub async fn query_at(&self, promql: &str, time_s: f64) -> Vec<serde_json::Value> {
        let client = reqwest::Client::new();
        client
            .get(self.url("/internal/force_flush"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("VictoriaMetrics force_flush: {e}"));
        let r = client
            .get(self.url("/api/v1/query"))
            .query(&[("query", promql), ("time", &time_s.to_string())])
            .send()
            .await
            .unwrap_or_else(|e| panic!("VictoriaMetrics query {promql}: {e}"));
        let v: serde_json::Value = r.json().await.expect("VictoriaMetrics answers JSON");
        assert_eq!(
            v["status"], "success",
            "VictoriaMetrics query {promql}: {v}"
        );
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Every sample of the series `selector` matches, made searchable first.
    pub async fn export(&self, selector: &str) -> Vec<ExportedSeries> {
        let client = reqwest::Client::new();
        let flushed = client.get(self.url("/internal/force_flush")).send().await;
        assert!(flushed.is_ok(), "VictoriaMetrics force_flush: {flushed:?}");
        let body = client
            .get(self.url("/api/v1/export"))
            .query(&[("match[]", selector)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("VictoriaMetrics export {selector}: {e}"))
            .text()
            .await
            .expect("export body");
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("export line is JSON");
                let labels = v["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
                let vals = v["values"].as_array().cloned().unwrap_or_default();
                let mut samples: Vec<(i64, f64)> = ts
                    .iter()
                    .zip(vals.iter())
                    .map(|(t, x)| {
                        (
                            t.as_i64().unwrap_or_default(),
                            x.as_f64().unwrap_or(f64::NAN),
                        )
                    })
                    .collect();
                samples.sort_by_key(|s| s.0);
                ExportedSeries { labels, samples }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the status page test relies on: a CSP violation reaches `console`.
    #[tokio::test]
    async fn chromium_reports_csp_violations_on_the_console() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let page = || async {
            (
                [
                    ("content-type", "text/html"),
                    ("content-security-policy", "default-src 'none'"),
                ],
                "<!doctype html><html><body><p>x</p><script>document.title='ran'</script></body></html>",
            )
        };
        let app = axum::Router::new().route("/", axum::routing::get(page));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let p = Chromium::new(dir.path())
            .load(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(1))
            .await;
        assert!(
            p.dom.contains("<p>x</p>") && !p.dom.contains("<title>ran"),
            "{}",
            p.dom
        );
        assert!(
            p.console
                .iter()
                .any(|l| l.contains("Content Security Policy")),
            "{:?}",
            p.console
        );
    }
}
