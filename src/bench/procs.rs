//! Child processes of the harness (aggregator, collector, loadgen, sink), their
//! configs, and the `/proc` sampler that measures them.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Context shared by one scenario run: the binary, a temp dir, an HTTP client.
pub struct Env {
    pub exe: PathBuf,
    /// The program and leading arguments that run a collector.
    collector: (PathBuf, Vec<String>),
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub cores: usize,
    /// With `--tls`: the run's certificates; the collectors' OTLP receivers, their
    /// forwarding (mTLS), the aggregators' OTLP receivers and the sink use them.
    pub tls: Option<super::tls::BenchTls>,
}

impl Env {
    pub fn new(args: &super::BenchArgs) -> anyhow::Result<Env> {
        let exe = std::env::current_exe().context("locating the edgewatch binary")?;
        // Checked when a collector starts: scenarios without one do not need the binary.
        let collector = match args.collector_binary {
            super::CollectorBinary::Edge => (exe.with_file_name("edgewatch-collector"), Vec::new()),
            super::CollectorBinary::AllRoles => (exe.clone(), vec!["collector".to_string()]),
        };
        let dir = tempfile::Builder::new()
            .prefix("edgewatch-bench-")
            .tempdir()?;
        let tls = match args.tls {
            true => Some(super::tls::BenchTls::generate(dir.path())?),
            false => None,
        };
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(120));
        if let Some(t) = &tls {
            let ca = reqwest::Certificate::from_pem(&std::fs::read(&t.ca)?)?;
            // The sink asks for a client certificate, as the core does.
            let mut pem = std::fs::read(&t.client_cert)?;
            pem.extend(std::fs::read(&t.client_key)?);
            http = http
                .add_root_certificate(ca)
                .identity(reqwest::Identity::from_pem(&pem)?);
        }
        Ok(Env {
            exe,
            collector,
            dir,
            http: http.build()?,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            tls,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `http` or, with `--tls`, `https`: the scheme of the OTLP links.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Loadgen's arguments to send to a collector's OTLP/gRPC receiver.
    pub fn collector_target(&self, col: &ColPorts) -> Vec<String> {
        let mut a = vec![
            "--endpoint".to_string(),
            format!("{}://127.0.0.1:{}", self.scheme(), col.grpc),
        ];
        if let Some(t) = &self.tls {
            a.extend(["--ca-file".to_string(), t.ca.display().to_string()]);
        }
        a
    }

    /// A `tls:` line for an OTLP receiver (`indent` spaces), empty without `--tls`.
    fn receiver_tls(&self, indent: usize, mtls: bool) -> String {
        match &self.tls {
            Some(t) => format!("{:indent$}tls: {}\n", "", t.server_yaml(mtls)),
            None => String::new(),
        }
    }

    /// `taskset -c N` only when the machine has that core.
    fn pin(&self, core: Option<usize>) -> Option<usize> {
        core.filter(|c| *c < self.cores)
    }

    /// Spawns `edgewatch <args>` (optionally under `taskset -c core`), stderr to `<name>.log`.
    pub fn spawn(
        &self,
        name: &str,
        args: &[String],
        core: Option<usize>,
        stdout: bool,
    ) -> anyhow::Result<Proc> {
        self.spawn_program(&self.exe, name, args, core, stdout)
    }

    /// Spawns `program <args>` (optionally pinned), stderr to `<name>.log`.
    pub fn spawn_program(
        &self,
        program: &Path,
        name: &str,
        args: &[String],
        core: Option<usize>,
        stdout: bool,
    ) -> anyhow::Result<Proc> {
        let mut cmd = match self.pin(core) {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c.to_string()).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(args);
        let log = self.path(&format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        cmd.stderr(Stdio::from(f));
        cmd.stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdin(Stdio::null());
        cmd.env("EDGEWATCH_LOG", "warn");
        cmd.kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Proc {
            name: name.to_string(),
            pid,
            child,
            log,
        })
    }

    /// Starts an aggregator on the given ports; waits until `/healthz` answers.
    pub async fn aggregator(
        &self,
        name: &str,
        ports: AggPorts,
        core: Option<usize>,
    ) -> anyhow::Result<Proc> {
        self.aggregator_with(name, ports, core, "").await
    }

    /// [`Env::aggregator`] with `extra` appended to its configuration.
    pub async fn aggregator_with(
        &self,
        name: &str,
        ports: AggPorts,
        core: Option<usize>,
        extra: &str,
    ) -> anyhow::Result<Proc> {
        let yaml = format!(
            "receivers:\n  otlp:\n    grpc: 127.0.0.1:{}\n    http: 127.0.0.1:{}\n{}http:\n  listen: 127.0.0.1:{}\nstate:\n  path: {}\n{extra}",
            ports.grpc,
            ports.otlp_http,
            self.receiver_tls(4, true),
            ports.http,
            self.path(&format!("{name}-state")).display()
        );
        let cfg = self.path(&format!("{name}.yaml"));
        std::fs::write(&cfg, yaml)?;
        let p = self.spawn(
            name,
            &[
                "aggregator".into(),
                "--config".into(),
                cfg.display().to_string(),
            ],
            core,
            false,
        )?;
        self.wait_healthy(&p, &format!("http://127.0.0.1:{}/healthz", ports.http))
            .await?;
        Ok(p)
    }

    /// Starts a collector forwarding to `forward` (`host:port`); waits for `/healthz`.
    pub async fn collector(
        &self,
        name: &str,
        ports: ColPorts,
        forward: &str,
        core: Option<usize>,
    ) -> anyhow::Result<Proc> {
        self.collector_with(name, ports, forward, core, "").await
    }

    /// [`Env::collector`] with `receivers` (more receivers, indented 2 spaces, e.g. a
    /// `prometheus:` block) after its OTLP receiver.
    pub async fn collector_with(
        &self,
        name: &str,
        ports: ColPorts,
        forward: &str,
        core: Option<usize>,
        receivers: &str,
    ) -> anyhow::Result<Proc> {
        let yaml = format!(
            "cluster: bench\nnode: node-1\nreceivers:\n  otlp:\n    grpc: 127.0.0.1:{}\n    http: 127.0.0.1:{}\n{}{receivers}buffer:\n  path: {}\n  max_bytes: 8GiB\n  full_policy: backpressure\nforward:\n  endpoint: {}://{forward}\n  initial_backoff: 50ms\n  max_backoff: 250ms\n{}admin:\n  listen: 127.0.0.1:{}\n  self_metrics_interval: 0\n",
            ports.grpc,
            ports.http,
            self.receiver_tls(4, false),
            self.path(&format!("{name}-buffer")).display(),
            self.scheme(),
            match &self.tls {
                Some(t) => format!("  tls: {}\n", t.forward_yaml()),
                None => String::new(),
            },
            ports.admin
        );
        let cfg = self.path(&format!("{name}.yaml"));
        std::fs::write(&cfg, yaml)?;
        let (program, lead) = &self.collector;
        anyhow::ensure!(
            program.is_file(),
            "{} not found (build it, or pass --collector-binary all-roles)",
            program.display()
        );
        let mut args = lead.clone();
        args.extend(["--config".to_string(), cfg.display().to_string()]);
        let p = self.spawn_program(program, name, &args, core, false)?;
        self.wait_healthy(&p, &format!("http://127.0.0.1:{}/healthz", ports.admin))
            .await?;
        Ok(p)
    }

    /// `edgewatch loadgen sink --listen 127.0.0.1:port -q`; waits until `/stats` answers.
    pub async fn sink(&self, port: u16, core: Option<usize>) -> anyhow::Result<Proc> {
        let mut args = [
            "loadgen",
            "sink",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "-q",
        ]
        .map(String::from)
        .to_vec();
        if let Some(t) = &self.tls {
            for (flag, file) in [
                ("--tls-cert-file", &t.cert),
                ("--tls-key-file", &t.key),
                ("--tls-client-ca-file", &t.ca),
            ] {
                args.extend([flag.to_string(), file.display().to_string()]);
            }
        }
        let p = self.spawn("sink", &args, core, false)?;
        self.wait_healthy(&p, &self.sink_stats(port)).await?;
        Ok(p)
    }

    /// The sink's `/stats` URL.
    pub fn sink_stats(&self, port: u16) -> String {
        format!("{}://127.0.0.1:{port}/stats", self.scheme())
    }

    /// `edgewatch loadgen remote-write-sink --listen 127.0.0.1:port -q`; waits until
    /// `/stats` answers.
    pub async fn remote_write_sink(&self, port: u16, core: Option<usize>) -> anyhow::Result<Proc> {
        let args = [
            "loadgen",
            "remote-write-sink",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "-q",
        ]
        .map(String::from);
        let p = self.spawn("remote-write-sink", &args, core, false)?;
        self.wait_healthy(&p, &format!("http://127.0.0.1:{port}/stats"))
            .await?;
        Ok(p)
    }

    /// GET `url` as JSON.
    pub async fn json(&self, url: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn wait_healthy(&self, p: &Proc, url: &str) -> anyhow::Result<()> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(r) = self
                .http
                .get(url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "{} did not become healthy at {url}; log: {}",
            p.name,
            tail(&p.log)
        )
    }

    /// Runs `edgewatch loadgen <args> --json -q` to completion; returns its JSON report.
    pub async fn loadgen(
        &self,
        name: &str,
        args: &[String],
        core: Option<usize>,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(self.loadgen_sampled(name, args, core).await?.0)
    }

    /// [`Env::loadgen`], also returning loadgen's own CPU/RSS.
    pub async fn loadgen_sampled(
        &self,
        name: &str,
        args: &[String],
        core: Option<usize>,
    ) -> anyhow::Result<(serde_json::Value, Usage)> {
        let mut a = vec!["loadgen".to_string()];
        a.extend_from_slice(args);
        a.push("--json".into());
        a.push("-q".into());
        let p = self.spawn(name, &a, core, true)?;
        let log = p.log.clone();
        let sampler = Sampler::start(p.pid);
        let out = p.child.wait_with_output().await?;
        let usage = sampler.stop();
        if !out.status.success() {
            bail!("loadgen failed ({}): {}", out.status, tail(&log));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .context("loadgen printed no JSON report")?;
        Ok((serde_json::from_str(line)?, usage))
    }

    /// The sum of every sample of `name` (any labels) on a Prometheus text endpoint.
    pub async fn metric(&self, url: &str, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        metric_sum(&text, name).with_context(|| format!("{name} not found at {url}"))
    }
}

#[derive(Clone, Copy)]
pub struct AggPorts {
    pub grpc: u16,
    pub otlp_http: u16,
    pub http: u16,
}

impl AggPorts {
    pub fn free() -> anyhow::Result<AggPorts> {
        Ok(AggPorts {
            grpc: free_port()?,
            otlp_http: free_port()?,
            http: free_port()?,
        })
    }
    pub fn metrics(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.http)
    }
}

#[derive(Clone, Copy)]
pub struct ColPorts {
    pub grpc: u16,
    pub http: u16,
    pub admin: u16,
}

impl ColPorts {
    pub fn free() -> anyhow::Result<ColPorts> {
        Ok(ColPorts {
            grpc: free_port()?,
            http: free_port()?,
            admin: free_port()?,
        })
    }
    pub fn metrics(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.admin)
    }
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }
}

pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let rest = match rest.rfind('}') {
            Some(i) if rest.starts_with('{') => &rest[i + 1..],
            _ => rest,
        };
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// VmRSS of a process once a second, with the seconds since the start.
pub struct RssTimeline {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(f64, f64)>>,
}

impl RssTimeline {
    pub fn start(pid: u32) -> RssTimeline {
        RssTimeline::follow(Arc::new(AtomicU32::new(pid)))
    }

    /// Samples whichever process `pid` holds (a restarted process gets a new pid); none
    /// while it is down.
    pub fn follow(pid: Arc<AtomicU32>) -> RssTimeline {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut out = Vec::new();
            while !s.load(Ordering::Acquire) {
                if let Some(r) = rss_bytes(pid.load(Ordering::Acquire)) {
                    out.push((t0.elapsed().as_secs_f64(), r as f64));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            out
        });
        RssTimeline { stop, handle }
    }

    pub fn stop(self) -> Vec<(f64, f64)> {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_default()
    }
}

/// What the sampler saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// utime+stime over wall time, % of one core.
    pub cpu_pct: f64,
    /// Highest 100 ms interval, % of one core.
    pub cpu_max_pct: f64,
    pub rss_avg: f64,
    pub rss_max: f64,
}

/// Samples a process every 100 ms on its own thread until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Usage>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let tck = clk_tck();
            let t0 = Instant::now();
            let c0 = cpu_ticks(pid).unwrap_or(0);
            let (mut last_t, mut last_c) = (t0, c0);
            let (mut rss_sum, mut rss_n, mut rss_max, mut cpu_max) = (0f64, 0u64, 0f64, 0f64);
            let mut c_end = c0;
            loop {
                if let Some(r) = rss_bytes(pid) {
                    rss_sum += r as f64;
                    rss_n += 1;
                    rss_max = rss_max.max(r as f64);
                }
                let now = Instant::now();
                if let Some(c) = cpu_ticks(pid) {
                    let dt = now.duration_since(last_t).as_secs_f64();
                    if dt > 0.05 {
                        cpu_max = cpu_max.max((c - last_c) as f64 / tck / dt * 100.0);
                    }
                    c_end = c;
                    last_c = c;
                    last_t = now;
                }
                if s.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let wall = t0.elapsed().as_secs_f64();
            Usage {
                cpu_pct: (c_end - c0) as f64 / tck / wall * 100.0,
                cpu_max_pct: cpu_max,
                rss_avg: if rss_n > 0 {
                    rss_sum / rss_n as f64
                } else {
                    0.0
                },
                rss_max,
            }
        });
        Sampler { stop, handle }
    }

    pub fn stop(self) -> Usage {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_default()
    }
}

/// `perf record -g` on a pid while a measurement runs (`--perf DIR`).
pub struct Perf {
    child: std::process::Child,
    data: PathBuf,
}

impl Perf {
    pub fn start(dir: &Path, tag: &str, pid: u32) -> anyhow::Result<Perf> {
        std::fs::create_dir_all(dir)?;
        let data = dir.join(format!("{tag}.perf.data"));
        let child = std::process::Command::new("perf")
            .args(["record", "-F", "499", "-g", "-o"])
            .arg(&data)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning perf (apt-get install linux-perf)")?;
        Ok(Perf { child, data })
    }

    /// Stops recording (SIGINT to our perf child) and writes `<tag>.perf.txt`: the top
    /// self-time symbols. Returns the first lines.
    pub fn finish(mut self) -> anyhow::Result<String> {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let out = std::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-g",
                "none",
                "--sort",
                "dso,symbol",
                "--percent-limit",
                "0.7",
                "-i",
            ])
            .arg(&self.data)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        std::fs::write(self.data.with_extension("txt"), &text)?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(25)
            .map(|l| {
                l.trim_end()
                    .trim_end_matches('-')
                    .trim_end()
                    .trim_end_matches('-')
                    .trim_end()
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }
}
