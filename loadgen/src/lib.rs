//! `edgewatch loadgen`: an OTLP metrics load generator (gRPC or HTTP/protobuf) with
//! open-loop pacing, and a counting sink to aim it at.
//!
//! * [`run`] sends synthetic metrics per [`LoadgenArgs`] and returns a [`Report`]
//!   (achieved rate, acked/failed points and requests, errors by code, ack latency).
//! * [`Sink`] / [`run_sink`] is an OTLP gRPC + HTTP receiver on one port that counts
//!   points and checks `--sequence-check` sequences per series (gaps, duplicates,
//!   reordering), with fault hooks (answer errors, drop requests, delay).
//!
//! * [`fleet::run_fleet`] acts as K edge collectors forwarding to an aggregator (their
//!   instance ids, sequence headers, model-server shaped series, optional backlog).
//! * [`remote_write::RemoteWriteSink`] / [`remote_write::run_remote_write_sink`] is a
//!   Prometheus remote write receiver that counts samples, series, metadata,
//!   duplicates and out-of-order samples, with injected 5xx/429 answers.
//! * [`targets::run_targets`] serves Prometheus scrape targets of which some misbehave
//!   (slow, huge, too many samples, invalid, flapping), to soak a scraper.
//!
//! Failed requests are not retried unless `--retry` is given: each point is either
//! acknowledged or counted failed, so a receiver's view can be compared with the report.

mod args;
mod client;
mod codec;
pub mod fleet;
pub mod payload;
pub mod remote_write;
mod report;
mod sink;
pub mod targets;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hdrhistogram::Histogram;

pub use args::{
    grpc_code_name, parse_duration, ArgError, FailCode, LoadgenArgs, Protocol, Rate, SinkArgs,
};
pub use client::{GRPC_EXPORT_PATH, HTTP_EXPORT_PATH};
pub use codec::RawCodec;
pub use fleet::{run_fleet, FleetArgs, FleetReport};
pub use payload::{PayloadBuilder, SEQUENCE_METRIC};
pub use remote_write::{
    run_remote_write_sink, RemoteWriteSink, RemoteWriteSinkArgs, RemoteWriteStats,
};
pub use report::{expand_runs, Latency, Report, SequenceReport, SeriesRun};
pub use sink::{run_sink, sink, SeqStats, Sink, SinkStats};
pub use targets::{run_targets, TargetsArgs};

/// Counters shared by the workers and the progress line.
#[derive(Default)]
struct Counters {
    sent_requests: AtomicU64,
    sent_points: AtomicU64,
    acked_requests: AtomicU64,
    acked_points: AtomicU64,
    failed_requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicUsize,
}

/// What one worker saw.
struct WorkerResult {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    failed: Vec<u64>,
    rejected_points: u64,
    retries: u64,
    max_lag: Duration,
    last_answer: Option<Instant>,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn random_instance_id() -> String {
    format!("loadgen-{:016x}", rand::random::<u64>())
}

struct Plan {
    builder: PayloadBuilder,
    counters: Counters,
    next: AtomicU64,
    t0: Instant,
    end: Instant,
    /// Seconds between consecutive requests (`None`: as fast as possible).
    interval: Option<f64>,
    retry: u32,
    /// Per-series highest acknowledged sequence (only with --sequence-check).
    seq_acked: Vec<AtomicU64>,
}

async fn worker(plan: Arc<Plan>, mut sender: client::Sender) -> WorkerResult {
    let mut res = WorkerResult {
        latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        errors: BTreeMap::new(),
        failed: Vec::new(),
        rejected_points: 0,
        retries: 0,
        max_lag: Duration::ZERO,
        last_answer: None,
    };
    let batch = plan.builder.batch() as u64;
    let cap = plan.builder.max_request_len();
    let c = &plan.counters;
    loop {
        let k = plan.next.fetch_add(1, Relaxed);
        if !wait_for_turn(&plan, k, &mut res).await {
            break;
        }
        let mut buf = BytesMut::with_capacity(cap);
        plan.builder.build(k, unix_nanos(), &mut buf);
        let body = buf.freeze();

        c.sent_requests.fetch_add(1, Relaxed);
        c.sent_points.fetch_add(batch, Relaxed);
        c.in_flight.fetch_add(1, Relaxed);
        let outcome = send_with_retries(&plan, &mut sender, body, &mut res).await;
        c.in_flight.fetch_sub(1, Relaxed);
        res.last_answer = Some(Instant::now());
        record(&plan, k, outcome, &mut res);
    }
    res
}

/// Waits until request `k` is due (with a target rate; at once with `max`).
/// False when it would go out after `--duration`.
async fn wait_for_turn(plan: &Plan, k: u64, res: &mut WorkerResult) -> bool {
    let Some(iv) = plan.interval else {
        return Instant::now() < plan.end;
    };
    let due = plan.t0 + Duration::from_secs_f64(k as f64 * iv);
    if due >= plan.end {
        return false;
    }
    let now = Instant::now();
    if now >= plan.end {
        // Fell behind schedule: never send after --duration.
        return false;
    }
    if due > now {
        tokio::time::sleep_until(due.into()).await;
    } else {
        res.max_lag = res.max_lag.max(now - due);
    }
    true
}

/// Sends one request, retrying up to `--retry` times; the rejected point
/// count and latency of the accepted attempt, or `Err` when every attempt
/// failed.
async fn send_with_retries(
    plan: &Plan,
    sender: &mut client::Sender,
    body: bytes::Bytes,
    res: &mut WorkerResult,
) -> Result<(u64, Duration), ()> {
    let mut attempt = 0;
    loop {
        let start = Instant::now();
        match sender.send(body.clone()).await {
            Ok(rejected) => return Ok((rejected, start.elapsed())),
            Err(code) => {
                plan.counters.errors.fetch_add(1, Relaxed);
                *res.errors.entry(code).or_default() += 1;
                // Retries belong to a request already started, so they may run
                // past --duration; backoff 10 ms, 20 ms, ... up to 640 ms.
                if attempt >= plan.retry {
                    return Err(());
                }
                res.retries += 1;
                let backoff = Duration::from_millis(10 << attempt.min(6));
                attempt += 1;
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Counts the answer to request `k`.
fn record(plan: &Plan, k: u64, outcome: Result<(u64, Duration), ()>, res: &mut WorkerResult) {
    let c = &plan.counters;
    match outcome {
        Ok((rejected, latency)) => {
            c.acked_requests.fetch_add(1, Relaxed);
            c.acked_points
                .fetch_add(plan.builder.batch() as u64, Relaxed);
            res.rejected_points += rejected;
            res.latency_us
                .saturating_record(latency.as_micros().max(1) as u64);
            if !plan.seq_acked.is_empty() {
                plan.builder.for_each_point(k, |s, seq| {
                    plan.seq_acked[s].fetch_max(seq, Relaxed);
                });
            }
        }
        Err(()) => {
            c.failed_requests.fetch_add(1, Relaxed);
            res.failed.push(k);
        }
    }
}

async fn progress(plan: Arc<Plan>, target: Option<f64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let c = &plan.counters;
        let acked = c.acked_points.load(Relaxed);
        let rate = (acked - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, acked);
        let target = target
            .map(|t| format!(" (target {t:.0})"))
            .unwrap_or_default();
        eprintln!(
            "[{:>6.1}s] rate {rate:>10.0} dp/s{target}  acked {acked} dp / {} req  errors {}  in-flight {}",
            (now - plan.t0).as_secs_f64(),
            c.acked_requests.load(Relaxed),
            c.errors.load(Relaxed),
            c.in_flight.load(Relaxed),
        );
    }
}

/// The workers' results added up.
struct Merged {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    failed: Vec<u64>,
    rejected: u64,
    retries: u64,
    lag: Duration,
}

fn merge(results: Vec<WorkerResult>) -> Merged {
    let mut m = Merged {
        latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        errors: BTreeMap::new(),
        failed: Vec::new(),
        rejected: 0,
        retries: 0,
        lag: Duration::ZERO,
    };
    for r in results {
        m.latency.add(&r.latency_us).expect("same histogram bounds");
        for (k, v) in r.errors {
            *m.errors.entry(k).or_default() += v;
        }
        m.failed.extend(r.failed);
        m.rejected += r.rejected_points;
        m.retries += r.retries;
        m.lag = m.lag.max(r.max_lag);
    }
    m
}

/// Latency quantiles in ms from a histogram of µs.
fn latency_summary(latency: &Histogram<u64>) -> Latency {
    if latency.is_empty() {
        return Latency::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50: ms(latency.value_at_quantile(0.50)),
        p90: ms(latency.value_at_quantile(0.90)),
        p99: ms(latency.value_at_quantile(0.99)),
        max: ms(latency.max()),
        mean: latency.mean() / 1000.0,
    }
}

/// What `--sequence-check` reports: per series the highest acknowledged
/// sequence number, and the points of the failed requests (sorted, at most
/// 1000 runs).
fn sequence_report(plan: &Plan, args: &LoadgenArgs, failed: &mut [u64]) -> SequenceReport {
    const MAX_FAILED_RUNS: usize = 1000;
    let width = payload::series_width(args.series);
    failed.sort_unstable();
    let mut failed_points = Vec::new();
    let mut truncated = false;
    for &k in failed.iter() {
        let mut pts = Vec::with_capacity(args.batch);
        plan.builder.for_each_point(k, |s, seq| pts.push((s, seq)));
        for r in runs(pts.into_iter(), width) {
            if failed_points.len() == MAX_FAILED_RUNS {
                truncated = true;
                break;
            }
            failed_points.push(r);
        }
    }
    SequenceReport {
        metric: SEQUENCE_METRIC.to_string(),
        acked_through: runs(
            plan.seq_acked.iter().map(|a| a.load(Relaxed)).enumerate(),
            width,
        ),
        failed: failed_points,
        failed_truncated: truncated,
    }
}

/// Run-length encodes per-series values in series order.
fn runs(values: impl Iterator<Item = (usize, u64)>, width: usize) -> Vec<SeriesRun> {
    let mut out: Vec<(usize, usize, u64)> = Vec::new();
    for (s, v) in values {
        match out.last_mut() {
            Some((_, to, seq)) if *to + 1 == s && *seq == v => *to = s,
            _ => out.push((s, s, v)),
        }
    }
    out.into_iter()
        .map(|(a, b, seq)| SeriesRun {
            from: payload::series_name(a, width),
            to: payload::series_name(b, width),
            seq,
        })
        .collect()
}

/// Runs the load generator: sends for `--duration`, prints a progress line every second on
/// stderr (unless `--quiet`), and returns the report (printing it is the caller's job).
/// Request failures are counted in the report, not returned as errors.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<Report> {
    let workers = args.concurrency.max(1);
    let senders = client::senders(&args, workers)?;
    let instance_id = args.instance_id.clone().unwrap_or_else(random_instance_id);
    let builder = PayloadBuilder::new(
        args.series,
        args.batch,
        args.sequence_check,
        &instance_id,
        unix_nanos(),
    );
    let interval = args.rate.per_second().map(|r| args.batch as f64 / r);
    let seq_acked = if args.sequence_check {
        (0..args.series).map(|_| AtomicU64::new(0)).collect()
    } else {
        Vec::new()
    };
    let t0 = Instant::now();
    let plan = Arc::new(Plan {
        builder,
        counters: Counters::default(),
        next: AtomicU64::new(0),
        t0,
        end: t0 + args.duration,
        interval,
        retry: args.retry,
        seq_acked,
    });
    let progress =
        (!args.quiet).then(|| tokio::spawn(progress(plan.clone(), args.rate.per_second())));
    let handles: Vec<_> = senders
        .into_iter()
        .map(|s| tokio::spawn(worker(plan.clone(), s)))
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(h.await?);
    }
    if let Some(p) = progress {
        p.abort();
    }

    let last = results
        .iter()
        .filter_map(|r| r.last_answer)
        .max()
        .unwrap_or(t0);
    let elapsed = (last - t0).max(args.duration);
    let Merged {
        latency,
        errors,
        mut failed,
        rejected,
        retries,
        lag,
    } = merge(results);
    let c = &plan.counters;
    let acked_points = c.acked_points.load(Relaxed);
    let latency_ms = latency_summary(&latency);
    let sequence = args
        .sequence_check
        .then(|| sequence_report(&plan, &args, &mut failed));
    Ok(Report {
        protocol: args.protocol,
        endpoint: args.endpoint_or_default(),
        target_rate: args.rate.per_second(),
        batch: args.batch,
        series: args.series,
        concurrency: workers,
        gzip: args.gzip,
        instance_id,
        duration_s: args.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        achieved_rate: acked_points as f64 / elapsed.as_secs_f64().max(1e-9),
        sent_points: c.sent_points.load(Relaxed),
        acked_points,
        failed_points: c.failed_requests.load(Relaxed) * args.batch as u64,
        rejected_points: rejected,
        sent_requests: c.sent_requests.load(Relaxed),
        acked_requests: c.acked_requests.load(Relaxed),
        failed_requests: c.failed_requests.load(Relaxed),
        retries,
        errors,
        latency_ms,
        max_schedule_lag_ms: lag.as_secs_f64() * 1000.0,
        sequence,
    })
}
