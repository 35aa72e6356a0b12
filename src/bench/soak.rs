//! S11, the soak: one collector and one aggregator under mixed load for
//! `--s11-duration` (30 min): OTLP at 10k dp/s into the collector, 20 scrape targets of
//! which some misbehave (`edgewatch loadgen targets`), and the aggregator stopped every
//! `--s11-restart-every` (5 min), by SIGKILL and SIGTERM in turn, and started again.
//!
//! Loss is counted exactly: the aggregator remote-writes the load generator's series and
//! nothing else (`write_relabel_configs`) into the counting sink, which outlives every
//! restart; each load generator point is one sample with its own (series, timestamp),
//! so the sink's distinct samples must reach the points the collector acknowledged.

use super::fleet::remote_write_config;
use super::procs::{free_port, metric_sum, AggPorts, ColPorts, Env, Proc, RssTimeline};
use super::scenarios::{num, s, secs, wait_drained, Values};
use super::BenchArgs;
use anyhow::Context;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

const MIB: f64 = 1024.0 * 1024.0;
/// The aggregator's default `store.window`, which the soak does not change.
const STORE_WINDOW: Duration = Duration::from_secs(600);

/// How long S11 runs and how often the aggregator is stopped.
pub struct Plan {
    pub duration: Duration,
    pub restart_every: Duration,
}

impl Plan {
    pub fn of(args: &BenchArgs) -> Plan {
        Plan {
            duration: args.s11_duration.unwrap_or(args.dur(30 * 60, 3 * 60)),
            restart_every: args.s11_restart_every.unwrap_or(args.dur(5 * 60, 60)),
        }
    }

    /// The warm-up excluded from the RSS check: the aggregator's store window (it
    /// keeps every series' last 10 minutes of samples, so it grows for that long,
    /// and a restart rebuilds the same window from its log) or the first restart
    /// period, whichever is longer, and at most half the run. By its end the
    /// collector's buffer and sled caches have reached their working size and the
    /// aggregator has gone through one stop, a log replay and a catch-up of the
    /// collector's backlog — the whole cycle every later period repeats.
    pub fn warmup(&self) -> Duration {
        // Not `clamp`: a short run's half may be below the window.
        let warm = self.restart_every.max(STORE_WINDOW);
        warm.min(self.duration / 2)
    }
}

/// The scrape receiver of the soaked collector. Targets time out after 2 s (a slow
/// target answers after 30 s) and bodies over 1 MiB fail (a huge one streams 256 MiB).
fn prometheus_receiver(targets: &[String]) -> String {
    let mut y = String::from(
        "  prometheus:\n    scrape_interval: 5s\n    scrape_timeout: 2s\n    body_size_limit: 1MiB\n",
    );
    // The `many` target serves 20,000 samples in ~0.7 MiB, under the body size limit.
    y.push_str("    sample_limit: 10000\n");
    y.push_str("    static_targets:\n");
    for t in targets {
        y.push_str(&format!("      - {t}\n"));
    }
    y
}

/// Only the load generator's points go to the counting sink.
const KEEP_LOADGEN: &str = "    write_relabel_configs:\n      - source_labels: [__name__]\n        regex: edgewatch_loadgen_sequence_total\n        action: keep\n";

/// Scrape failure reasons reported per run, in this order (zero when absent).
const REASONS: [(&str, &str); 7] = [
    ("timeout", "fail_timeout"),
    ("connect", "fail_connect"),
    ("http_status", "fail_http_status"),
    ("body_size_limit", "fail_body_size_limit"),
    ("invalid_exposition", "fail_invalid_exposition"),
    ("sample_limit", "fail_sample_limit"),
    ("label_limit", "fail_label_limit"),
];

/// Starts `edgewatch loadgen targets` and reads the URLs it prints.
async fn start_targets(env: &Env) -> anyhow::Result<(Proc, Vec<String>)> {
    let mut p = env.spawn(
        "targets",
        &s(&["loadgen", "targets", "--count", "20"]),
        None,
        true,
    )?;
    let out = p.child.stdout.take().context("targets: no stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("targets printed nothing in 30 s")??
        .context("targets exited before listing its targets")?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    let urls = v["targets"]
        .as_array()
        .context("targets: no list")?
        .iter()
        .filter_map(|t| t["url"].as_str().map(String::from))
        .collect();
    Ok((p, urls))
}

/// How the aggregator is stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Term,
}

/// What the restarts did.
#[derive(Default)]
struct Restarts {
    kills: u32,
    terms: u32,
    /// SIGTERMs not followed by an exit within 30 s (then killed).
    term_timeouts: u32,
    /// Longest time from the signal until `/healthz` answered again.
    max_down: Duration,
}

/// Stops the aggregator every `plan.restart_every` until `end`, SIGKILL first, then
/// SIGTERM, in turn; starts it again on the same ports and state. Returns the last one.
async fn restart_loop(
    env: &Env,
    ports: AggPorts,
    extra: &str,
    mut agg: Proc,
    pid: &AtomicU32,
    plan: &Plan,
    t0: Instant,
) -> anyhow::Result<(Proc, Restarts)> {
    let mut r = Restarts::default();
    for k in 1u32.. {
        let at = t0 + plan.restart_every * k;
        if at >= t0 + plan.duration {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let how = if k % 2 == 1 { Stop::Kill } else { Stop::Term };
        let signalled = Instant::now();
        match how {
            Stop::Kill => {
                r.kills += 1;
                agg.child.start_kill()?;
            }
            Stop::Term => {
                r.terms += 1;
                let ok = std::process::Command::new("kill")
                    .args(["-TERM", &agg.pid.to_string()])
                    .status()?
                    .success();
                anyhow::ensure!(ok, "kill -TERM {} failed", agg.pid);
            }
        }
        let waited = tokio::time::timeout(Duration::from_secs(30), agg.child.wait()).await;
        if waited.is_err() {
            r.term_timeouts += 1;
            agg.child.start_kill()?;
            agg.child.wait().await?;
        }
        agg = env
            .aggregator_with("aggregator", ports, None, extra)
            .await
            .with_context(|| format!("restarting the aggregator (restart {k})"))?;
        pid.store(agg.pid, Ordering::Release);
        r.max_down = r.max_down.max(signalled.elapsed());
        eprintln!(
            "bench: S11 aggregator restart {k} ({}) back after {:.1} s",
            if how == Stop::Kill {
                "SIGKILL"
            } else {
                "SIGTERM"
            },
            signalled.elapsed().as_secs_f64()
        );
    }
    Ok((agg, r))
}

/// Distinct samples the sink holds: everything minus samples seen twice.
async fn sink_distinct(env: &Env, stats: &str) -> anyhow::Result<f64> {
    let v = env.json(stats).await?;
    Ok(num(&v, "samples") - num(&v, "duplicates"))
}

/// Waits until the sink holds `want` distinct samples or has not grown for 60 s.
async fn wait_delivered(env: &Env, stats: &str, want: f64) -> anyhow::Result<f64> {
    let mut last = (Instant::now(), -1.0);
    loop {
        let n = sink_distinct(env, stats).await?;
        if n >= want {
            return Ok(n);
        }
        if n > last.1 {
            last = (Instant::now(), n);
        } else if last.0.elapsed() > Duration::from_secs(60) {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Acknowledged points missing at the sink; NaN when either count is unknown. More at
/// the sink than acknowledged is no loss: a request the load generator counted failed
/// (e.g. timed out) may still have been stored.
fn lost(acked: f64, delivered: f64) -> f64 {
    if acked.is_nan() || delivered.is_nan() {
        f64::NAN
    } else {
        (acked - delivered).max(0.0)
    }
}

/// Lines of `log` that report a panic.
fn panics(log: &std::path::Path) -> f64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("panicked"))
        .count() as f64
}

/// The sum of `name`'s samples whose `label` is `value`.
fn metric_with(text: &str, name: &str, label: &str, value: &str) -> f64 {
    let wanted = format!("{label}=\"{value}\"");
    let lines: String = text
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&wanted))
        .map(|l| format!("{l}\n"))
        .collect();
    metric_sum(&lines, name).unwrap_or(0.0)
}

/// S11: see the module documentation.
pub async fn s11(args: &BenchArgs, _run: usize) -> anyhow::Result<Values> {
    let plan = Plan::of(args);
    let env = Env::new(args)?;
    let sink_port = free_port()?;
    let sink = env.remote_write_sink(sink_port, None).await?;
    let stats = format!("http://127.0.0.1:{sink_port}/stats");
    let (targets, urls) = start_targets(&env).await?;
    let agg_ports = AggPorts::free()?;
    let extra = remote_write_config(
        &format!("http://127.0.0.1:{sink_port}/api/v1/write"),
        "",
        KEEP_LOADGEN,
    );
    let agg = env
        .aggregator_with("aggregator", agg_ports, None, &extra)
        .await?;
    let col = ColPorts::free()?;
    let c = env
        .collector_with(
            "collector",
            col,
            &format!("127.0.0.1:{}", agg_ports.grpc),
            None,
            &prometheus_receiver(&urls),
        )
        .await?;
    let agg_pid = Arc::new(AtomicU32::new(agg.pid));
    let col_rss = RssTimeline::start(c.pid);
    let agg_rss = RssTimeline::follow(agg_pid.clone());
    let load_args = [
        env.collector_target(&col),
        s(&["--protocol", "grpc", "--rate", "10000", "--batch", "100"]),
        s(&["--concurrency", "1", "--sequence-check"]),
        s(&["--duration", &secs(plan.duration)]),
    ]
    .concat();
    let t0 = Instant::now();
    let load = env.loadgen("loadgen", &load_args, None);
    let restarts = restart_loop(&env, agg_ports, &extra, agg, &agg_pid, &plan, t0);
    // An error in either ends both (the load generator is killed when dropped).
    let (rep, (agg, restarts)) = tokio::try_join!(load, restarts)?;
    let (col_rss, agg_rss) = (col_rss.stop(), agg_rss.stop());
    wait_drained(&env, col, Duration::from_secs(300)).await?;
    let acked = num(&rep, "acked_points");
    let delivered = wait_delivered(&env, &stats, acked).await?;
    let col_metrics = env.http.get(col.metrics()).send().await?.text().await?;
    let panics_total = panics(&c.log) + panics(&agg.log);
    for p in [c, agg, targets, sink] {
        p.stop().await;
    }
    let mut v = Values::from([
        ("duration_s", plan.duration.as_secs_f64()),
        ("restart_every_s", plan.restart_every.as_secs_f64()),
        ("warmup_s", plan.warmup().as_secs_f64()),
        ("restarts_kill", restarts.kills as f64),
        ("restarts_term", restarts.terms as f64),
        ("term_timeouts", restarts.term_timeouts as f64),
        ("max_down_s", restarts.max_down.as_secs_f64()),
        ("acked_points", acked),
        ("failed_points", num(&rep, "failed_points")),
        ("delivered_points", delivered),
        ("lost_points", lost(acked, delivered)),
        ("panics", panics_total),
        (
            "scrapes_ok",
            metric_with(
                &col_metrics,
                "edgewatch_scrape_scrapes_total",
                "outcome",
                "ok",
            ),
        ),
        (
            "scrapes_failed",
            metric_with(
                &col_metrics,
                "edgewatch_scrape_scrapes_total",
                "outcome",
                "failed",
            ),
        ),
    ]);
    for (reason, key) in REASONS {
        v.insert(
            key,
            metric_with(
                &col_metrics,
                "edgewatch_scrape_failures_total",
                "reason",
                reason,
            ),
        );
    }
    let warm = plan.warmup().as_secs_f64();
    for (tag, timeline) in [("col", &col_rss), ("agg", &agg_rss)] {
        let minutes: Vec<String> = window_medians(timeline, 0.0, 60.0)
            .iter()
            .map(|r| format!("{:.1}", r / MIB))
            .collect();
        eprintln!(
            "bench: S11 {tag} RSS median per minute (MiB): {}",
            minutes.join(" ")
        );
        insert_flatness(&mut v, tag, flatness(timeline, warm, 60.0));
    }
    Ok(v)
}

/// RSS after the warm-up, from per-minute medians (a minute's median is not moved by a
/// single large scrape or the seconds an aggregator takes to start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flatness {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Largest deviation of a window's median from the mean of the medians, in %.
    pub dev_pct: f64,
}

/// [`Flatness`] of a (seconds, bytes) timeline: samples before `warmup` are left out, the
/// rest cut into windows of `window` seconds. `None` without a full window after the
/// warm-up.
pub fn flatness(timeline: &[(f64, f64)], warmup: f64, window: f64) -> Option<Flatness> {
    let medians = window_medians(timeline, warmup, window);
    if medians.is_empty() {
        return None;
    }
    let mean = medians.iter().sum::<f64>() / medians.len() as f64;
    let min = medians.iter().copied().fold(f64::INFINITY, f64::min);
    let max = medians.iter().copied().fold(0.0, f64::max);
    Some(Flatness {
        mean,
        min,
        max,
        dev_pct: (max - mean).max(mean - min) / mean * 100.0,
    })
}

/// The median of each `window` seconds of a (seconds, bytes) timeline from `from` on; a
/// last partial window counts only if at least half full.
pub fn window_medians(timeline: &[(f64, f64)], from: f64, window: f64) -> Vec<f64> {
    let mut windows: Vec<Vec<f64>> = Vec::new();
    for &(t, rss) in timeline.iter().filter(|(t, _)| *t >= from) {
        let i = ((t - from) / window) as usize;
        if windows.len() <= i {
            windows.resize(i + 1, Vec::new());
        }
        windows[i].push(rss);
    }
    let end = timeline.last().map_or(0.0, |l| l.0);
    if let Some(last) = windows.len().checked_sub(1) {
        let covered = end - (from + last as f64 * window);
        if covered < window / 2.0 {
            windows.pop();
        }
    }
    windows.iter_mut().filter_map(|w| median(w)).collect()
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn insert_flatness(v: &mut Values, tag: &str, f: Option<Flatness>) {
    let f = f.unwrap_or(Flatness {
        mean: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        dev_pct: f64::NAN,
    });
    let keys: [(&'static str, f64); 4] = match tag {
        "col" => [
            ("col_rss_mean_mib", f.mean / MIB),
            ("col_rss_min_mib", f.min / MIB),
            ("col_rss_max_mib", f.max / MIB),
            ("col_rss_dev_pct", f.dev_pct),
        ],
        _ => [
            ("agg_rss_mean_mib", f.mean / MIB),
            ("agg_rss_min_mib", f.min / MIB),
            ("agg_rss_max_mib", f.max / MIB),
            ("agg_rss_dev_pct", f.dev_pct),
        ],
    };
    v.extend(keys);
}

/// (scenario, command, target) of the S11 row.
pub fn describe(a: &BenchArgs) -> (&'static str, String, &'static str) {
    let plan = Plan::of(a);
    (
        "S11 soak: one collector and one aggregator under mixed load, the aggregator stopped periodically (SIGKILL and SIGTERM in turn)",
        format!(
            "`edgewatch loadgen --endpoint http://127.0.0.1:$COLLECTOR_GRPC --protocol grpc --rate 10000 --batch 100 --concurrency 1 --sequence-check --duration {}`; collector scraping `edgewatch loadgen targets --count 20` (default mix: slow=2, huge=1, many=1, garbage=2, flapping=2; `scrape_interval: 5s`, `scrape_timeout: 2s`, `body_size_limit: 1MiB`); aggregator stopped every {} and started again, remote-writing `edgewatch_loadgen_sequence_total` only to `edgewatch loadgen remote-write-sink`",
            secs(plan.duration),
            secs(plan.restart_every)
        ),
        "zero acknowledged points lost, zero panics, RSS of both flat after warm-up (±10 % of per-minute medians)",
    )
}

/// The S11 row: pass when no acknowledged point is missing at the sink, no process
/// panicked and both RSS stayed within ±10 % after the warm-up. A NaN (no window after
/// the warm-up, no count) fails.
pub fn judge(g: &dyn Fn(&str) -> f64) -> (String, bool) {
    let reasons = REASONS
        .iter()
        .map(|(r, k)| format!("{r} {}", super::grouped(g(k))))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "{:.0} min, aggregator stopped {} × SIGKILL + {} × SIGTERM (back within {:.1} s; {} SIGTERM timeouts); {} points acked ({} failed), {} at the sink, lost {}; panics {}; RSS after {:.0} min warm-up: collector {:.1}–{:.1} MiB (±{:.1} %), aggregator {:.1}–{:.1} MiB (±{:.1} %); scrapes ok {}, failed {} ({reasons})",
        g("duration_s") / 60.0,
        g("restarts_kill"),
        g("restarts_term"),
        g("max_down_s"),
        g("term_timeouts"),
        super::grouped(g("acked_points")),
        super::grouped(g("failed_points")),
        super::grouped(g("delivered_points")),
        super::grouped(g("lost_points")),
        g("panics"),
        g("warmup_s") / 60.0,
        g("col_rss_min_mib"),
        g("col_rss_max_mib"),
        g("col_rss_dev_pct"),
        g("agg_rss_min_mib"),
        g("agg_rss_max_mib"),
        g("agg_rss_dev_pct"),
        super::grouped(g("scrapes_ok")),
        super::grouped(g("scrapes_failed")),
    );
    let pass = g("lost_points") == 0.0
        && g("panics") == 0.0
        && g("col_rss_dev_pct") <= 10.0
        && g("agg_rss_dev_pct") <= 10.0;
    (text, pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: f64 = MIB;

    #[test]
    fn flatness_leaves_out_the_warm_up_and_single_spikes() {
        // 0–60 s warm-up climbing to 100 MiB, then 100 MiB with a 300 MiB spike a minute.
        let tl: Vec<(f64, f64)> = (0..300)
            .map(|t| {
                let rss = match t {
                    t if t < 60 => t as f64 * M,
                    t if t % 60 == 30 => 300.0 * M,
                    _ => 100.0 * M,
                };
                (t as f64, rss)
            })
            .collect();
        let f = flatness(&tl, 60.0, 60.0).unwrap();
        assert_eq!((f.min, f.max, f.dev_pct), (100.0 * M, 100.0 * M, 0.0));
    }

    #[test]
    fn flatness_sees_a_leak() {
        // +1 MiB a minute from 50 MiB over 20 minutes after the warm-up: ±18 %.
        let tl: Vec<(f64, f64)> = (0..1500)
            .map(|t| (t as f64, (50.0 + t as f64 / 60.0) * M))
            .collect();
        let f = flatness(&tl, 300.0, 60.0).unwrap();
        assert!(f.dev_pct > 10.0, "{f:?}");
        // Too short for a window after the warm-up: no verdict, and NaN fails.
        assert_eq!(flatness(&tl[..320], 300.0, 60.0), None);
    }

    fn judged(pairs: &[(&str, f64)]) -> bool {
        let base = [
            ("lost_points", 0.0),
            ("panics", 0.0),
            ("col_rss_dev_pct", 3.0),
            ("agg_rss_dev_pct", 9.9),
        ];
        let g = |k: &str| {
            pairs
                .iter()
                .chain(base.iter())
                .find(|(n, _)| *n == k)
                .map_or(0.0, |p| p.1)
        };
        judge(&g).1
    }

    #[test]
    fn judge_fails_on_loss_panic_growth_or_no_measurement() {
        assert!(judged(&[]));
        assert!(!judged(&[("lost_points", 1.0)]));
        assert!(!judged(&[("panics", 1.0)]));
        assert!(!judged(&[("agg_rss_dev_pct", 10.5)]));
        assert!(!judged(&[("col_rss_dev_pct", f64::NAN)]));
    }

    #[test]
    fn loss_counts_only_missing_acknowledged_points() {
        assert_eq!(lost(1000.0, 1000.0), 0.0);
        assert_eq!(lost(1000.0, 1100.0), 0.0);
        assert_eq!(lost(1000.0, 990.0), 10.0);
        assert!(lost(1000.0, f64::NAN).is_nan());
        assert!(!judged(&[("lost_points", lost(f64::NAN, 5.0))]));
    }

    #[test]
    fn failures_are_read_by_reason() {
        let text = "# TYPE edgewatch_scrape_failures_total counter\nedgewatch_scrape_failures_total{reason=\"timeout\"} 12\nedgewatch_scrape_failures_total{reason=\"connect\"} 3\n";
        assert_eq!(
            metric_with(text, "edgewatch_scrape_failures_total", "reason", "timeout"),
            12.0
        );
        assert_eq!(
            metric_with(
                text,
                "edgewatch_scrape_failures_total",
                "reason",
                "label_limit"
            ),
            0.0
        );
    }
}
