//! `edgewatch bench`: the benchmark harness (scenarios S1–S11 of BENCHMARKS.md).
//!
//! Spawns this binary as separate processes (aggregator, collector, loadgen, sink) on
//! free 127.0.0.1 ports with configs in a temp dir, pins them with `taskset` where a
//! scenario says so, samples the measured process's CPU and RSS from `/proc` every
//! 100 ms, runs each scenario `--runs` times, and writes the medians into the
//! `<!-- bench:begin -->` / `<!-- bench:end -->` block of `--out`.

mod alerting;
mod fleet;
mod procs;
mod scenarios;
mod soak;
mod tls;
mod victoria;

use anyhow::Context;
use scenarios::Values;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated (S1..S11); all by default.
    #[arg(long, value_delimiter = ',')]
    pub scenario: Vec<String>,
    /// Runs per scenario; the table shows the median of each value.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Short durations and a small backlog / series count: a smoke check, not a result.
    #[arg(long)]
    pub quick: bool,
    /// The file whose `<!-- bench:begin -->`..`<!-- bench:end -->` block gets the table.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Record `perf record -g` of the measured process in S1/S2 into this directory and
    /// print the top self-time symbols.
    #[arg(long)]
    pub perf: Option<PathBuf>,
    /// The OTLP links of S1 and S2 over TLS (the forwarder with a client
    /// certificate): a CA and certificates are made for the run.
    #[arg(long)]
    pub tls: bool,
    /// S2 (and S6) points per request.
    #[arg(long, default_value_t = 1000)]
    pub s2_batch: usize,
    /// S2 (and S6 Buffer) requests in flight.
    #[arg(long, default_value_t = 64)]
    pub s2_concurrency: usize,
    /// S3 backlog in points (default 1,200,000 = 2 minutes at 10k dp/s; --quick: 300,000).
    #[arg(long)]
    pub s3_points: Option<u64>,
    /// S4 points per request.
    #[arg(long, default_value_t = 1000)]
    pub s4_batch: usize,
    /// S5 series (--quick: 100,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub s5_series: usize,
    /// Which binary runs the measured collector: `edge` (`edgewatch-collector`, what the
    /// DaemonSet runs; found next to this binary) or `all-roles` (`edgewatch collector`).
    #[arg(long, value_enum, default_value_t = CollectorBinary::Edge)]
    pub collector_binary: CollectorBinary,
    /// S8 simulated collectors.
    #[arg(long, default_value_t = 1000)]
    pub fleet_collectors: usize,
    /// S8 seconds of live fleet traffic (--quick: 60).
    #[arg(long, default_value_t = 600)]
    pub s8_duration: u64,
    /// S11 soak length (default 30m; --quick: 3m), e.g. `10m`.
    #[arg(long, value_parser = edgewatch_loadgen::parse_duration)]
    pub s11_duration: Option<Duration>,
    /// S11: how often the aggregator is stopped and started again (default 5m; --quick: 1m).
    #[arg(long, value_parser = edgewatch_loadgen::parse_duration)]
    pub s11_restart_every: Option<Duration>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectorBinary {
    Edge,
    AllRoles,
}

impl BenchArgs {
    /// The measurement duration: `full` seconds, or `quick` with `--quick`.
    pub fn dur(&self, full: u64, quick: u64) -> Duration {
        Duration::from_secs(if self.quick { quick } else { full })
    }

    pub fn s3_backlog(&self) -> u64 {
        self.s3_points
            .unwrap_or(if self.quick { 300_000 } else { 1_200_000 })
    }
}

const ALL: [&str; 11] = [
    "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11",
];

struct Outcome {
    id: &'static str,
    runs: Vec<Values>,
    median: Values,
    error: Option<String>,
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.quick && args.s5_series == 1_000_000 {
        args.s5_series = 100_000;
    }
    let selected: Vec<&'static str> = if args.scenario.is_empty() {
        ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for s in &args.scenario {
            let id = ALL
                .iter()
                .find(|a| a.eq_ignore_ascii_case(s.trim()))
                .with_context(|| format!("unknown scenario {s:?} (S1..S11)"))?;
            v.push(*id);
        }
        v
    };
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(
        !args.tls || selected.iter().all(|s| ["S1", "S2"].contains(s)),
        "--tls applies to S1 and S2 only (pass --scenario S1,S2)"
    );
    let mut outcomes = Vec::new();
    for id in selected {
        let mut runs = Vec::new();
        let mut error = None;
        for r in 1..=args.runs {
            eprintln!("bench: {id} run {r}/{} ...", args.runs);
            let res = match id {
                "S1" => scenarios::s1(&args, r).await,
                "S2" => scenarios::s2(&args, r).await,
                "S3" => scenarios::s3(&args, r).await,
                "S4" => scenarios::s4(&args, r).await,
                "S5" => scenarios::s5(&args, r).await,
                "S6" => scenarios::s6(&args, r).await,
                "S7" => alerting::s7(&args, r).await,
                "S8" => fleet::s8(&args, r).await,
                "S9" => fleet::s9(&args, r).await,
                "S11" => soak::s11(&args, r).await,
                _ => fleet::s10(&args, r).await,
            };
            match res {
                Ok(v) => {
                    eprintln!("bench: {id} run {r}: {}", fmt_values(&v));
                    runs.push(v);
                }
                Err(e) => {
                    eprintln!("bench: {id} run {r} failed: {e:#}");
                    error = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        let median = median(&runs);
        outcomes.push(Outcome {
            id,
            runs,
            median,
            error,
        });
    }
    let block = render(&args, &outcomes);
    println!("{block}");
    write_block(&args.out, &block, &outcomes)?;
    eprintln!("bench: wrote {}", args.out.display());
    Ok(())
}

fn median(runs: &[Values]) -> Values {
    let mut out = Values::new();
    let Some(first) = runs.first() else {
        return out;
    };
    for k in first.keys() {
        let mut v: Vec<f64> = runs.iter().filter_map(|r| r.get(k).copied()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let m = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        out.insert(k, m);
    }
    out
}

fn fmt_values(v: &Values) -> String {
    v.iter()
        .map(|(k, x)| format!("{k}={}", fmt_num(*x)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// 1234567 → "1,234,567".
fn grouped(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// (scenario, command, target) of each row.
fn describe(id: &str, a: &BenchArgs) -> (&'static str, String, &'static str) {
    let d = |full: u64, quick: u64| a.dur(full, quick).as_secs();
    match id {
        "S1" => (
            "S1 collector at 10k dp/s, durable + forwarding to a live aggregator; collector CPU/RSS",
            format!("`edgewatch loadgen --endpoint http://127.0.0.1:$COLLECTOR_GRPC --protocol grpc --rate 10000 --batch 100 --concurrency 1 --duration {}s`", d(60, 10)),
            "CPU ≤ 3%, RSS ≤ 16 MiB",
        ),
        "S2" => (
            "S2 collector max throughput (`taskset -c 0`), durable + forwarding to `loadgen sink` (core 1); loadgen on core 1",
            format!(
                "`taskset -c 1 edgewatch loadgen sink --listen 127.0.0.1:$SINK -q`; `taskset -c 1 edgewatch loadgen --endpoint http://127.0.0.1:$COLLECTOR_GRPC --rate max --batch {} --concurrency {} --duration {}s`",
                a.s2_batch, a.s2_concurrency, d(30, 5)
            ),
            "≥ 1,000,000 acked dp/s, zero loss",
        ),
        "S3" => (
            "S3 drain of a backlog built with the aggregator down",
            format!(
                "fill: `edgewatch loadgen --endpoint http://127.0.0.1:$COLLECTOR_GRPC --rate max --batch 100 --concurrency 8 --duration 2s` repeated until ≥ {} points ({} min at 10k dp/s); then start the aggregator, poll `edgewatch_buffer_entries` until 0",
                grouped(a.s3_backlog() as f64),
                a.s3_backlog() as f64 / 600_000.0
            ),
            "≥ 20× 10k dp/s, RSS ≤ 64 MiB",
        ),
        "S4" => (
            "S4 aggregator (`taskset -c 0`) ingest from 100 senders (loadgen on core 1)",
            format!(
                "`taskset -c 1 edgewatch loadgen --endpoint http://127.0.0.1:$AGGREGATOR_GRPC --rate max --batch {} --concurrency 100 --connections 100 --duration {}s`",
                a.s4_batch, d(30, 5)
            ),
            "≥ 1,000,000 dp/s",
        ),
        "S5" => (
            "S5 aggregator with many active series: RSS per series, one full /federate",
            format!(
                "`edgewatch loadgen --endpoint http://127.0.0.1:$AGGREGATOR_GRPC --rate max --series {} --batch 1000 --concurrency 4 --duration 5s` until `edgewatch_store_series` ≥ {}; `curl -G $AGG/federate --data-urlencode 'match[]={{__name__=~\".+\"}}'`",
                a.s5_series, a.s5_series
            ),
            "≤ 300 bytes/series; /federate ≤ 1.5 s",
        ),
        "S7" => (
            "S7 alert latency: condition true in the aggregator → webhook notified (`group_wait: 0s`)",
            format!(
                "aggregator with `evaluation_interval: {}s`, rule `edgewatch_bench_probe > 0` (`for: 0s`), route `group_by: [trial]`, `group_wait: 0s` to a local webhook; {} trials, each a new series posted to `/v1/metrics` after a pseudo-random pause within the interval",
                alerting::INTERVAL.as_secs(),
                if a.quick { 6 } else { 30 }
            ),
            "p99 ≤ evaluation interval + 1 s",
        ),
        "S8" | "S9" | "S10" => fleet::describe(id, a),
        "S11" => soak::describe(a),
        _ => (
            "S6 limit baseline: S2 payloads decoded by prost alone; appended+flushed to sled alone",
            format!(
                "in-process, {} s each: `ExportMetricsServiceRequest::decode` on 1 thread; raw sled insert + flush every 10 ms on 1 thread; `collector::buffer::Buffer::append` with {} appenders",
                d(5, 2),
                a.s2_concurrency
            ),
            "report S2 as % of the lower limit",
        ),
    }
}

/// (result text, pass/fail text) of a scenario's medians.
fn judge(o: &Outcome, s2_rate: Option<f64>) -> (String, String) {
    let m = &o.median;
    if m.is_empty() {
        return (
            format!(
                "error: {}",
                o.error.clone().unwrap_or_default().replace('|', "/")
            ),
            "FAIL (no result)".into(),
        );
    }
    let g = &|k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    let (text, pass) = match o.id {
        "S1" => collector_at_10k(g),
        "S2" => collector_max_throughput(g),
        "S3" => backlog_drain(g),
        "S4" => aggregator_ingest(g),
        "S5" => many_series(g),
        "S7" => alert_latency(g),
        "S8" => fleet::judge_s8(g),
        "S9" => fleet::judge_s9(g),
        "S10" => fleet::judge_s10(g),
        "S11" => soak::judge(g),
        _ => return limit_baseline(g, s2_rate),
    };
    (text, if pass { "PASS" } else { "FAIL" }.to_string())
}

/// The collector's CPU and memory at a steady 10k dp/s.
fn collector_at_10k(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "CPU {:.1}% of a core (avg; max 100 ms interval {:.0}%), RSS avg {:.1} MiB / max {:.1} MiB (idle before load {:.1} MiB); {} dp/s acked, ack latency p99 {:.1} ms (target ≤ 50 ms)",
            g("cpu_pct"),
            g("cpu_max_pct"),
            g("rss_avg_mib"),
            g("rss_max_mib"),
            g("rss_idle_mib"),
            grouped(g("acked_rate")),
            g("ack_p99_ms")
        ),
        g("cpu_pct") <= 3.0 && g("rss_max_mib") <= 16.0,
    )
}

/// The collector's maximum acknowledged rate, without loss.
fn collector_max_throughput(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "{} acked dp/s; received {} = acked {}, sink got {} after drain (lost {}); collector CPU {:.0}%, RSS max {:.0} MiB; loadgen CPU {:.0}% (core 1, shared with the sink)",
            grouped(g("acked_rate")),
            grouped(g("received_points")),
            grouped(g("acked_points")),
            grouped(g("sink_points")),
            grouped(g("lost_points")),
            g("cpu_pct"),
            g("rss_max_mib"),
            g("loadgen_cpu_pct")
        ),
        g("acked_rate") >= 1e6 && g("lost_points") == 0.0,
    )
}

/// How fast the collector drains a backlog, and its memory meanwhile.
fn backlog_drain(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "backlog {} points ({} entries, {:.0} MiB on disk) drained in {:.2} s = {} dp/s = {:.1}× 10k dp/s; collector RSS max {:.1} MiB",
            grouped(g("backlog_points")),
            grouped(g("backlog_entries")),
            g("backlog_disk_mib"),
            g("drain_s"),
            grouped(g("drain_rate")),
            g("drain_x_10k"),
            g("rss_max_mib")
        ),
        g("drain_x_10k") >= 20.0 && g("rss_max_mib") <= 64.0,
    )
}

/// The aggregator's ingest rate from many senders.
fn aggregator_ingest(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "{} acked dp/s (aggregator counted {} dp/s); aggregator CPU {:.0}%, RSS max {:.0} MiB; loadgen CPU {:.0}%",
            grouped(g("acked_rate")),
            grouped(g("ingest_rate")),
            g("cpu_pct"),
            g("rss_max_mib"),
            g("loadgen_cpu_pct")
        ),
        g("acked_rate") >= 1e6,
    )
}

/// The aggregator's memory per series and one full /federate.
fn many_series(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "{:.0} bytes/series ({} series; RSS {:.1} MiB empty → {:.1} MiB); full /federate {:.2} s ({:.0} MiB, {} samples)",
            g("bytes_per_series"),
            grouped(g("series")),
            g("rss_empty_mib"),
            g("rss_full_mib"),
            g("federate_s"),
            g("federate_mib"),
            grouped(g("federate_samples"))
        ),
        g("bytes_per_series") <= 300.0 && g("federate_s") <= 1.5,
    )
}

/// From a condition turning true to the webhook's notification.
fn alert_latency(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "latency p50 {:.2} s, p99 {:.2} s, min {:.2} s, max {:.2} s over {} trials (interval {} s)",
            g("p50_s"),
            g("p99_s"),
            g("min_s"),
            g("max_s"),
            g("trials"),
            g("interval_s")
        ),
        g("p99_s") <= g("interval_s") + 1.0,
    )
}

/// Decode and storage limits measured alone, and the collector's maximum
/// throughput as a share of the lower one; reported, not judged.
fn limit_baseline(g: &dyn Fn(&str) -> f64, s2_rate: Option<f64>) -> (String, String) {
    let lower = g("decode_rate").min(g("sled_rate"));
    let s2 = match s2_rate {
        Some(r) => format!(
            "; S2 ({} dp/s) = {:.1}% of the lower",
            grouped(r),
            r / lower * 100.0
        ),
        None => "; S2 not run in this invocation".into(),
    };
    (
        format!(
            "prost decode {} dp/s; raw sled append+flush/10 ms {} dp/s; collector Buffer {} dp/s ({:.0} B/request){s2}",
            grouped(g("decode_rate")),
            grouped(g("sled_rate")),
            grouped(g("buffer_rate")),
            g("payload_bytes")
        ),
        "report".into(),
    )
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = sh("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = if sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (+ uncommitted changes)"
    };
    format!(
        "{model}, {cores} cores, Linux {}, {date}, commit {commit}{dirty}",
        kernel.trim()
    )
}

fn render(args: &BenchArgs, outcomes: &[Outcome]) -> String {
    let s2_rate = outcomes
        .iter()
        .find(|o| o.id == "S2")
        .and_then(|o| o.median.get("acked_rate").copied());
    let cmdline: Vec<String> = std::env::args().collect();
    let mut out = String::new();
    out.push_str(&format!("Machine: {}.\n\n", machine()));
    out.push_str(&format!(
        "Produced by `{}` ({} run(s) per scenario, median shown{}). CPU is % of one core (utime+stime from `/proc/<pid>/stat`), RSS is `VmRSS`, both sampled every 100 ms.\n\n",
        cmdline.join(" ").replace(&*std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(), "target/release/edgewatch"),
        args.runs,
        if args.quick { "; --quick: shortened, a smoke check only" } else { "" }
    ));
    out.push_str("| scenario | command | result | target | pass/fail |\n|---|---|---|---|---|\n");
    for o in outcomes {
        let (name, cmd, target) = describe(o.id, args);
        let (result, pass) = judge(o, s2_rate);
        out.push_str(&format!(
            "| {name} | {cmd} | {result} | {target} | {pass} |\n"
        ));
    }
    out.push_str("\nPer-run values:\n\n");
    for o in outcomes {
        for (i, r) in o.runs.iter().enumerate() {
            out.push_str(&format!("- {} run {}: {}\n", o.id, i + 1, fmt_values(r)));
        }
        if let Some(e) = &o.error {
            out.push_str(&format!("- {} error: {}\n", o.id, e.replace('\n', " ")));
        }
    }
    out
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

/// Replaces the marked block of `path` (appends one if missing). Rows and per-run lines
/// of scenarios not run this time are carried over from the old block.
fn write_block(path: &std::path::Path, block: &str, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let (before, old_block, after) = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => (&old[..b], &old[b + BEGIN.len()..e], &old[e + END.len()..]),
        _ => (old.as_str(), "", ""),
    };
    let ran: Vec<&str> = outcomes.iter().map(|o| o.id).collect();
    let kept = |prefix: &str| -> Vec<&str> {
        old_block
            .lines()
            .filter(|l| {
                // The id ends at the first space (`| S10 ...`, `- S1 run 1: ...`).
                l.strip_prefix(prefix)
                    .and_then(|r| r.split(' ').next())
                    .is_some_and(|id| ALL.contains(&id) && !ran.contains(&id))
            })
            .collect()
    };
    let (old_rows, old_runs) = (kept("| "), kept("- "));
    let mut new = String::new();
    let mut in_table = false;
    for line in block.lines() {
        if line.starts_with("| S") {
            in_table = true;
        } else if in_table {
            for r in &old_rows {
                if r.contains("(earlier run)") {
                    new.push_str(r);
                    new.push('\n');
                } else {
                    new.push_str(&format!(
                        "{} (earlier run) |\n",
                        r.trim_end().trim_end_matches('|').trim_end()
                    ));
                }
            }
            in_table = false;
        }
        new.push_str(line);
        new.push('\n');
    }
    for r in &old_runs {
        new.push_str(r);
        new.push('\n');
    }
    let mut before = before.to_string();
    if !before.is_empty() && !before.ends_with('\n') {
        before.push('\n');
    }
    let text = format!("{before}{BEGIN}\n{new}{END}{after}");
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
