//! The fleet scenarios: simulated collectors (`edgewatch loadgen fleet`) feeding one
//! aggregator that remote-writes to VictoriaMetrics (S8, S10) or to the counting
//! remote write sink (S9).

use super::procs::{free_port, AggPorts, Env, RssTimeline, Sampler};
use super::scenarios::Values;
use super::victoria::Victoria;
use super::BenchArgs;
use anyhow::{bail, Context};
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;

/// Every series the simulated nodes send, and nothing the aggregator derives.
pub const FLEET_SELECTOR: &str =
    r#"{__name__=~"nv_.+|process_.+|edgewatch_collector_info",cluster=~"fleet-c.+"}"#;

/// How long the samples may take to become queryable after the fleet stopped.
const QUERYABLE_TIMEOUT: Duration = Duration::from_secs(900);

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN)
}

/// The aggregator's configuration lines for one remote write endpoint and a log large
/// enough for the scenario's backlog; `queue` adds `queue_config` keys, `endpoint` keys
/// of the endpoint (indented 4 spaces).
pub fn remote_write_config(url: &str, queue: &str, endpoint: &str) -> String {
    format!(
        "remote_write:\n  - url: {url}\n{endpoint}    queue_config:\n      min_backoff: 10ms\n      max_backoff: 200ms\n{queue}wal:\n  max_bytes: 16GiB\n"
    )
}

/// S9's queue: more shards than it would start with and larger sends, so the pipeline
/// (one request at a time per shard) does not bound the rate before the core does.
const S9_QUEUE: &str =
    "      min_shards: 16\n      max_samples_per_send: 10000\n      capacity: 40000\n";

/// A fleet run's shape.
pub struct Fleet {
    pub collectors: usize,
    pub clusters: usize,
    pub series: usize,
    pub interval: &'static str,
    pub duration: String,
    pub backlog: Option<&'static str>,
}

impl Fleet {
    /// `edgewatch loadgen fleet` arguments against `agg`.
    pub fn args(&self, agg: AggPorts) -> Vec<String> {
        let mut a = vec![
            "fleet".to_string(),
            "--endpoint".into(),
            format!("http://127.0.0.1:{}", agg.grpc),
            "--collectors".into(),
            self.collectors.to_string(),
            "--clusters".into(),
            self.clusters.to_string(),
            "--series".into(),
            self.series.to_string(),
            "--interval".into(),
            self.interval.into(),
            "--duration".into(),
            self.duration.clone(),
            "--drain-timeout".into(),
            "30m".into(),
        ];
        if let Some(b) = self.backlog {
            a.extend([
                "--backlog".into(),
                b.into(),
                "--backlog-clusters".into(),
                "1".into(),
            ]);
        }
        a
    }

    /// The command line as BENCHMARKS.md shows it.
    pub fn command(&self) -> String {
        let a = self.args(AggPorts {
            grpc: 0,
            otlp_http: 0,
            http: 0,
        });
        format!(
            "edgewatch loadgen {}",
            a.join(" ")
                .replace("http://127.0.0.1:0", "http://127.0.0.1:$AGGREGATOR_GRPC")
        )
    }
}

pub fn s8_fleet(args: &BenchArgs) -> Fleet {
    Fleet {
        collectors: args.fleet_collectors,
        clusters: 10,
        series: 500,
        interval: "15s",
        duration: format!("{}s", if args.quick { 60 } else { args.s8_duration }),
        backlog: None,
    }
}

pub fn s9_fleet(args: &BenchArgs) -> Fleet {
    Fleet {
        collectors: 100,
        clusters: 1,
        series: 1000,
        interval: "1s",
        duration: "0s".into(),
        backlog: Some(if args.quick { "30s" } else { "5m" }),
    }
}

pub fn s10_fleet(args: &BenchArgs) -> Fleet {
    Fleet {
        collectors: if args.quick { 100 } else { 300 },
        clusters: 1,
        series: 500,
        interval: "15s",
        duration: "0s".into(),
        backlog: Some(if args.quick { "10m" } else { "1h" }),
    }
}

/// RSS after the warm-up (the first fifth of the run): mean, min, max, and the largest
/// deviation from the mean in %.
fn rss_after_warmup(timeline: &[(f64, f64)]) -> (f64, f64, f64, f64) {
    let end = timeline.last().map_or(0.0, |l| l.0);
    let warm: Vec<f64> = timeline
        .iter()
        .filter(|(t, _)| *t >= end / 5.0)
        .map(|(_, r)| *r)
        .collect();
    if warm.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = warm.iter().sum::<f64>() / warm.len() as f64;
    let min = warm.iter().copied().fold(f64::INFINITY, f64::min);
    let max = warm.iter().copied().fold(0.0, f64::max);
    let dev = (max - mean).max(mean - min) / mean * 100.0;
    (mean, min, max, dev)
}

/// The time range of a fleet report's samples.
fn range(rep: &serde_json::Value) -> (i64, i64) {
    (
        num(rep, "first_timestamp_ms") as i64,
        num(rep, "last_timestamp_ms") as i64,
    )
}

/// S8: 1,000 collectors (500 series every 15 s each) → aggregator → VictoriaMetrics for
/// `--s8-duration`: the aggregator's RSS over time and CPU, every sample in VictoriaMetrics.
pub async fn s8(args: &BenchArgs, _run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let vm = Victoria::start(&env).await?;
    let agg = AggPorts::free()?;
    let a = env
        .aggregator_with(
            "aggregator",
            agg,
            None,
            &remote_write_config(&vm.write_url(), "", ""),
        )
        .await?;
    let timeline = RssTimeline::start(a.pid);
    let sampler = Sampler::start(a.pid);
    let (rep, lg) = env
        .loadgen_sampled("fleet", &s8_fleet(args).args(agg), None)
        .await?;
    let u = sampler.stop();
    let rss = timeline.stop();
    let fleet_done = Instant::now();
    let acked = num(&rep, "acked_samples");
    let (stored, at) = vm
        .wait_count(&env, FLEET_SELECTOR, range(&rep), acked, QUERYABLE_TIMEOUT)
        .await?;
    a.stop().await;
    let disk = vm.disk_bytes(&env).await?;
    vm.stop().await;
    let rate = num(&rep, "samples_per_s");
    let (mean, min, max, dev) = rss_after_warmup(&rss);
    Ok(Values::from([
        ("collectors", num(&rep, "collectors")),
        ("acked_samples", acked),
        ("lost_entries", num(&rep, "lost_entries")),
        ("vm_samples", stored),
        ("missing_samples", acked - stored),
        ("queryable_after_s", (at - fleet_done).as_secs_f64()),
        ("vm_bytes_per_sample", disk / stored),
        ("samples_per_s", rate),
        ("cpu_pct", u.cpu_pct),
        ("cpu_per_100k", u.cpu_pct / (rate / 1e5)),
        ("rss_warm_mean_mib", mean / MIB),
        ("rss_warm_min_mib", min / MIB),
        ("rss_warm_max_mib", max / MIB),
        ("rss_dev_pct", dev),
        ("rss_max_mib", u.rss_max / MIB),
        ("loadgen_cpu_pct", lg.cpu_pct),
    ]))
}

/// S9: the aggregator (`taskset -c 0`) holds a backlog in its log while the remote write
/// endpoint is down; then the counting sink (core 1) starts: samples/s until drained.
pub async fn s9(args: &BenchArgs, _run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let sink_port = free_port()?;
    let url = format!("http://127.0.0.1:{sink_port}/api/v1/write");
    let agg = AggPorts::free()?;
    let a = env
        .aggregator_with(
            "aggregator",
            agg,
            Some(0),
            &remote_write_config(&url, S9_QUEUE, ""),
        )
        .await?;
    let fill = Instant::now();
    let rep = env
        .loadgen("fleet", &s9_fleet(args).args(agg), Some(1))
        .await?;
    let fill_s = fill.elapsed().as_secs_f64();
    let want = num(&rep, "acked_samples");
    let sink = env.remote_write_sink(sink_port, Some(1)).await?;
    let stats_url = format!("http://127.0.0.1:{sink_port}/stats");
    let sampler = Sampler::start(a.pid);
    let sink_sampler = Sampler::start(sink.pid);
    let (mut first, mut last) = (None, (Instant::now(), 0.0));
    let mut stats = serde_json::Value::Null;
    loop {
        stats = env.json(&stats_url).await.unwrap_or(stats);
        let n = num(&stats, "samples");
        let now = Instant::now();
        if n > 0.0 && first.is_none() {
            first = Some((now, n));
        }
        if n > last.1 {
            last = (now, n);
        }
        if n >= want {
            break;
        }
        if now - last.0 > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let u = sampler.stop();
    let sink_cpu = sink_sampler.stop().cpu_pct;
    sink.stop().await;
    a.stop().await;
    let Some((t0, n0)) = first else {
        bail!("the remote write sink received nothing in 60 s");
    };
    let rate = (last.1 - n0) / (last.0 - t0).as_secs_f64().max(1e-3);
    Ok(Values::from([
        ("backlog_samples", want),
        ("fill_s", fill_s),
        ("sink_samples", num(&stats, "samples")),
        ("rw_rate", rate),
        ("duplicates", num(&stats, "duplicates")),
        ("out_of_order", num(&stats, "out_of_order")),
        ("metadata", num(&stats, "metadata")),
        ("cpu_pct", u.cpu_pct),
        ("rss_max_mib", u.rss_max / MIB),
        ("sink_cpu_pct", sink_cpu),
    ]))
}

/// S10: one cluster's backlog (`--backlog 1h` of 15 s points, original timestamps) drained
/// edge → aggregator → VictoriaMetrics: until every sample is queryable; aggregator RSS.
pub async fn s10(args: &BenchArgs, _run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let vm = Victoria::start(&env).await?;
    let agg = AggPorts::free()?;
    let a = env
        .aggregator_with(
            "aggregator",
            agg,
            None,
            &remote_write_config(&vm.write_url(), "", ""),
        )
        .await?;
    let sampler = Sampler::start(a.pid);
    let t = Instant::now();
    let rep = env
        .loadgen("fleet", &s10_fleet(args).args(agg), None)
        .await
        .context("draining the backlog")?;
    let edge_s = t.elapsed().as_secs_f64();
    let acked = num(&rep, "acked_samples");
    let (stored, at) = vm
        .wait_count(&env, FLEET_SELECTOR, range(&rep), acked, QUERYABLE_TIMEOUT)
        .await?;
    let u = sampler.stop();
    a.stop().await;
    let disk = vm.disk_bytes(&env).await?;
    vm.stop().await;
    let queryable_s = (at - t).as_secs_f64();
    Ok(Values::from([
        ("backlog_samples", num(&rep, "backlog_samples")),
        ("acked_samples", acked),
        ("lost_entries", num(&rep, "lost_entries")),
        ("edge_drained_s", edge_s),
        ("vm_samples", stored),
        ("missing_samples", acked - stored),
        ("queryable_s", queryable_s),
        ("samples_per_s", stored / queryable_s),
        ("vm_bytes_per_sample", disk / stored),
        ("cpu_pct", u.cpu_pct),
        ("rss_max_mib", u.rss_max / MIB),
    ]))
}

/// (scenario, command, target) of the fleet rows.
pub fn describe(id: &str, a: &BenchArgs) -> (&'static str, String, &'static str) {
    let agg = "aggregator with `remote_write: [{url: …, queue_config: {min_backoff: 10ms, max_backoff: 200ms}}]` (other keys at Prometheus' defaults), `wal: {max_bytes: 16GiB}`";
    let vm = "`victoria-metrics -dedup.minScrapeInterval=1ms -search.latencyOffset=0s` (Debian package); samples counted with `sum(count_over_time({__name__=~\"nv_.+|process_.+|edgewatch_collector_info\",cluster=~\"fleet-c.+\"}[range]))`";
    match id {
        "S8" => (
            "S8 simulated collectors → one aggregator → VictoriaMetrics: aggregator RSS over time, CPU per 100k samples/s, every sample stored",
            format!("{agg}; {vm}; `{}`", s8_fleet(a).command()),
            "RSS flat after warm-up (±10 %), no sample missing",
        ),
        "S9" => (
            "S9 remote_write throughput of one aggregator core (`taskset -c 0`) into `loadgen remote-write-sink` (core 1)",
            format!(
                "{agg}, here with `queue_config: {{min_shards: 16, max_samples_per_send: 10000, capacity: 40000}}`; fill its log with the sink down: `taskset -c 1 {}`; then `taskset -c 1 edgewatch loadgen remote-write-sink --listen 127.0.0.1:$SINK -q` and poll its `/stats` until every sample arrived",
                s9_fleet(a).command()
            ),
            "≥ 1,000,000 samples/s",
        ),
        _ => (
            "S10 one cluster's backlog (original timestamps) drained edge → aggregator → VictoriaMetrics",
            format!("{agg}; {vm}; `{}`", s10_fleet(a).command()),
            "every sample queryable; aggregator RSS ≤ 256 MiB",
        ),
    }
}

pub fn judge_s8(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "{} samples from {} collectors ({} samples/s), {} in VictoriaMetrics ({} missing, all queryable {:.1} s after the fleet stopped; {:.2} B/sample on disk right after); aggregator CPU {:.1}% = {:.1}% per 100k samples/s; RSS after warm-up {:.0}–{:.0} MiB (mean {:.0}, ±{:.1}%), max {:.0} MiB",
            super::grouped(g("acked_samples")),
            g("collectors"),
            super::grouped(g("samples_per_s")),
            super::grouped(g("vm_samples")),
            super::grouped(g("missing_samples")),
            g("queryable_after_s"),
            g("vm_bytes_per_sample"),
            g("cpu_pct"),
            g("cpu_per_100k"),
            g("rss_warm_min_mib"),
            g("rss_warm_max_mib"),
            g("rss_warm_mean_mib"),
            g("rss_dev_pct"),
            g("rss_max_mib"),
        ),
        g("rss_dev_pct") <= 10.0 && g("missing_samples") == 0.0 && g("lost_entries") == 0.0,
    )
}

pub fn judge_s9(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "{} samples/s ({} of {} backlog samples; {} duplicates, {} out of order at the sink); aggregator CPU {:.0}%, RSS max {:.0} MiB; sink CPU {:.0}%",
            super::grouped(g("rw_rate")),
            super::grouped(g("sink_samples")),
            super::grouped(g("backlog_samples")),
            super::grouped(g("duplicates")),
            super::grouped(g("out_of_order")),
            g("cpu_pct"),
            g("rss_max_mib"),
            g("sink_cpu_pct"),
        ),
        g("rw_rate") >= 1e6 && g("sink_samples") >= g("backlog_samples"),
    )
}

pub fn judge_s10(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    (
        format!(
            "{} backlog samples: edge drained in {:.1} s, all queryable after {:.1} s ({} samples/s end to end; {} missing; {:.2} B/sample on disk right after); aggregator RSS max {:.0} MiB, CPU {:.0}%",
            super::grouped(g("backlog_samples")),
            g("edge_drained_s"),
            g("queryable_s"),
            super::grouped(g("samples_per_s")),
            super::grouped(g("missing_samples")),
            g("vm_bytes_per_sample"),
            g("rss_max_mib"),
            g("cpu_pct"),
        ),
        g("missing_samples") == 0.0 && g("lost_entries") == 0.0 && g("rss_max_mib") <= 256.0,
    )
}
