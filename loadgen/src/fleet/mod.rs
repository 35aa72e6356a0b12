//! `edgewatch loadgen fleet`: K simulated edge collectors forwarding to one aggregator.
//!
//! Each collector has its own instance id and sequence numbers and sends one buffer
//! entry per scrape interval ([`shape`]: ~500 model-server series per node by default),
//! forwarded as the real collector forwards ([`collector`]). Nodes are spread over C
//! clusters in contiguous blocks (`fleet-c000` holds the first K/C nodes). With
//! `--backlog`, the collectors of the first `--backlog-clusters` clusters start with
//! that much history (rounds before the start, original timestamps) and drain it as fast
//! as the aggregator accepts, as a cluster does after an outage, then go on live.
//!
//! Everything is pre-encoded per node; a round costs a copy, a few hundred patched
//! fields and one zstd compression, so a thousand collectors fit on one core.

mod collector;
pub mod shape;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgewatch_otlp::client::FrameEncoder;
use serde::Serialize;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::args::{parse_duration, ArgError};
pub use collector::Schedule;
pub use shape::{NodeIdentity, NodeTemplate};

/// Flags of `edgewatch loadgen fleet`.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// The aggregator's OTLP/gRPC receiver.
    #[arg(long, default_value = "http://127.0.0.1:14317")]
    pub endpoint: String,
    /// Simulated collectors (edge nodes), each with its own instance id and sequence.
    #[arg(long, default_value_t = 100)]
    pub collectors: usize,
    /// Clusters the nodes are spread over (`fleet-c000`, `fleet-c001`, ...).
    #[arg(long, default_value_t = 10)]
    pub clusters: usize,
    /// Prometheus series per node (at least 3).
    #[arg(long, default_value_t = 500)]
    pub series: usize,
    /// Scrape interval: one entry per node per interval.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long the live collectors send.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// History the backlog collectors hold at the start (e.g. 1h), drained at once.
    #[arg(long, value_parser = parse_duration)]
    pub backlog: Option<Duration>,
    /// How many clusters (the first ones) start with `--backlog`.
    #[arg(long, default_value_t = 1)]
    pub backlog_clusters: usize,
    /// Batches in flight per collector (the forwarder's `max_in_flight`).
    #[arg(long, default_value_t = 4)]
    pub max_in_flight: usize,
    /// Bytes of entries per batch at most (the forwarder's `max_batch_bytes`).
    #[arg(long, default_value_t = 2 << 20)]
    pub max_batch_bytes: usize,
    /// gRPC connections shared by the collectors; default one per collector.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// After `--duration`, how long unacknowledged entries are still retried.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl FleetArgs {
    /// Defaults, aimed at `endpoint`.
    pub fn new(endpoint: &str) -> FleetArgs {
        FleetArgs {
            endpoint: endpoint.to_string(),
            collectors: 100,
            clusters: 10,
            series: 500,
            interval: Duration::from_secs(15),
            duration: Duration::from_secs(60),
            backlog: None,
            backlog_clusters: 1,
            max_in_flight: 4,
            max_batch_bytes: 2 << 20,
            connections: None,
            timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(300),
            json: false,
            quiet: true,
        }
    }

    fn check(&self) -> Result<(), FleetError> {
        let positive = [
            ("--collectors", self.collectors),
            ("--clusters", self.clusters),
            ("--max-in-flight", self.max_in_flight),
            ("--max-batch-bytes", self.max_batch_bytes),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(FleetError::Arg(
                    flag,
                    ArgError::NotPositive { input: "0".into() },
                ));
            }
        }
        if self.series < shape::MIN_SERIES {
            return Err(FleetError::TooFewSeries(self.series));
        }
        if self.interval.is_zero() {
            return Err(FleetError::ZeroInterval);
        }
        Ok(())
    }

    fn backlog_rounds(&self) -> u64 {
        self.backlog.map_or(0, |b| {
            (b.as_nanos() / self.interval.as_nanos().max(1)) as u64
        })
    }

    /// Cluster index of node `k`: contiguous blocks.
    fn cluster_of(&self, k: usize) -> usize {
        k * self.clusters / self.collectors
    }
}

/// Bad flags or a failed setup.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}: {1}")]
    Arg(&'static str, ArgError),
    #[error("--series {0}: a node needs at least {min} series", min = shape::MIN_SERIES)]
    TooFewSeries(usize),
    #[error("--interval must be positive")]
    ZeroInterval,
    #[error("invalid endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("endpoint {0:?}: the fleet simulation speaks plaintext gRPC only (use http://)")]
    Https(String),
    #[error(transparent)]
    Template(#[from] shape::TemplateError),
    #[error("a collector task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    acked_entries: AtomicU64,
    acked_points: AtomicU64,
    acked_samples: AtomicU64,
    acked_bytes: AtomicU64,
    rejected_points: AtomicU64,
    lost_entries: AtomicU64,
    retries: AtomicU64,
    in_flight: AtomicUsize,
}

struct Opts {
    max_in_flight: usize,
    max_batch_bytes: usize,
    timeout: Duration,
    give_up: Instant,
}

/// What every collector task reads.
struct Shared {
    templates: Vec<NodeTemplate>,
    ids: Vec<NodeIdentity>,
    /// zstd contexts, borrowed per batch: one per collector would cost a context each.
    encoders: Mutex<Vec<FrameEncoder>>,
    counters: Counters,
    errors: Mutex<BTreeMap<String, u64>>,
    opts: Opts,
}

impl Shared {
    fn error(&self, code: &str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code.to_string())
            .or_default() += 1;
    }
}

/// Result of `edgewatch loadgen fleet`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FleetReport {
    pub endpoint: String,
    pub collectors: usize,
    pub clusters: usize,
    pub series_per_node: usize,
    pub interval_s: f64,
    pub duration_s: f64,
    /// Seconds of history per backlog collector, and how many collectors had one.
    pub backlog_s: f64,
    pub backlog_collectors: usize,
    /// From the start until the last collector finished, seconds.
    pub elapsed_s: f64,
    /// Entries (one per node and round) the run was to deliver.
    pub entries: u64,
    pub acked_entries: u64,
    /// Entries given up on (rejected as invalid, or unacknowledged at the give-up time).
    pub lost_entries: u64,
    /// OTLP data points and Prometheus samples acknowledged (a histogram point is one
    /// OTLP point and buckets + 2 samples).
    pub acked_points: u64,
    pub acked_samples: u64,
    /// What the run was to deliver, in samples (`entries` × samples per entry).
    pub expected_samples: u64,
    /// Points the aggregator reported rejected in an acknowledged answer.
    pub rejected_points: u64,
    /// Compressed bytes of acknowledged requests.
    pub acked_bytes: u64,
    pub requests: u64,
    pub retries: u64,
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged samples per second of `elapsed_s`.
    pub samples_per_s: f64,
    /// Seconds from the start until the slowest backlog collector's history was acknowledged.
    pub backlog_drained_s: Option<f64>,
    /// Samples in the backlogs.
    pub backlog_samples: u64,
    /// Oldest and newest sample timestamp sent, ms since the epoch.
    pub first_timestamp_ms: i64,
    pub last_timestamp_ms: i64,
}

impl FleetReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("report serializes")
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "edgewatch loadgen fleet: {} collectors in {} clusters, {} series/node every {} s, {} s live{} → {}",
            self.collectors,
            self.clusters,
            self.series_per_node,
            self.interval_s,
            self.duration_s,
            if self.backlog_collectors > 0 {
                format!(", {} collectors with {} s of backlog", self.backlog_collectors, self.backlog_s)
            } else {
                String::new()
            },
            self.endpoint
        );
        let _ = writeln!(
            s,
            "  acked       {} samples ({} OTLP points, {} entries of {}) in {:.1} s = {:.0} samples/s",
            self.acked_samples, self.acked_points, self.acked_entries, self.entries, self.elapsed_s, self.samples_per_s
        );
        let _ = writeln!(
            s,
            "  lost        {} entries; rejected {} points; requests {}, retries {}, errors {:?}",
            self.lost_entries, self.rejected_points, self.requests, self.retries, self.errors
        );
        if let Some(d) = self.backlog_drained_s {
            let _ = writeln!(
                s,
                "  backlog     {} samples drained in {d:.1} s",
                self.backlog_samples
            );
        }
        s.truncate(s.trim_end().len());
        s
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The nodes' identities and pre-encoded entries.
fn nodes(
    args: &FleetArgs,
    start_unix_nano: u64,
) -> Result<(Vec<NodeIdentity>, Vec<NodeTemplate>), FleetError> {
    let ids: Vec<NodeIdentity> = (0..args.collectors)
        .map(|k| NodeIdentity {
            cluster: format!("fleet-c{:03}", args.cluster_of(k)),
            node: format!("node-{k:05}"),
            instance_id: uuid::Uuid::new_v4().to_string(),
            index: k,
        })
        .collect();
    let templates = ids
        .iter()
        .map(|id| NodeTemplate::new(id, args.series, start_unix_nano))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ids, templates))
}

fn channels(args: &FleetArgs) -> Result<Vec<Channel>, FleetError> {
    // tonic without its TLS features would send an https:// endpoint plaintext.
    if args.endpoint.starts_with("https://") {
        return Err(FleetError::Https(args.endpoint.clone()));
    }
    let ep = Endpoint::from_shared(args.endpoint.clone())
        .map_err(|source| FleetError::Endpoint {
            endpoint: args.endpoint.clone(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let n = args
        .connections
        .unwrap_or(args.collectors)
        .clamp(1, args.collectors);
    Ok((0..n).map(|_| ep.connect_lazy()).collect())
}

async fn progress(shared: Arc<Shared>, t0: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let mut last = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let c = &shared.counters;
        let samples = c.acked_samples.load(Relaxed);
        let now = Instant::now();
        let rate = (samples - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, samples);
        eprintln!(
            "[{:>6.1}s] fleet {rate:>10.0} samples/s  acked {samples} samples / {} entries  in-flight {}  retries {}  lost {}",
            (now - t0).as_secs_f64(),
            c.acked_entries.load(Relaxed),
            c.in_flight.load(Relaxed),
            c.retries.load(Relaxed),
            c.lost_entries.load(Relaxed),
        );
    }
}

/// Runs the fleet until every collector sent its rounds (or gave up after
/// `--drain-timeout`); returns the report.
pub async fn run_fleet(args: FleetArgs) -> Result<FleetReport, FleetError> {
    args.check()?;
    let start_unix_nano = unix_nanos();
    let (ids, templates) = nodes(&args, start_unix_nano)?;
    let channels = channels(&args)?;
    let start = Instant::now();
    let backlog = args.backlog_rounds();
    let has_backlog = |k: usize| backlog > 0 && args.cluster_of(k) < args.backlog_clusters;
    let schedules: Vec<Schedule> = (0..args.collectors)
        .map(|k| {
            let phase = args.interval.mul_f64(k as f64 / args.collectors as f64);
            let b = if has_backlog(k) { backlog } else { 0 };
            Schedule::new(
                start,
                start_unix_nano,
                phase,
                args.interval,
                b,
                args.duration,
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        templates,
        ids,
        encoders: Mutex::new(Vec::new()),
        counters: Counters::default(),
        errors: Mutex::new(BTreeMap::new()),
        opts: Opts {
            max_in_flight: args.max_in_flight,
            max_batch_bytes: args.max_batch_bytes,
            timeout: args.timeout,
            give_up: start + args.duration + args.drain_timeout,
        },
    });
    let ticker = (!args.quiet).then(|| tokio::spawn(progress(shared.clone(), start)));
    let tasks: Vec<_> = schedules
        .iter()
        .enumerate()
        .map(|(k, s)| {
            tokio::spawn(collector::run(
                shared.clone(),
                k,
                channels[k % channels.len()].clone(),
                *s,
            ))
        })
        .collect();
    let mut ends = Vec::with_capacity(tasks.len());
    for t in tasks {
        ends.push(t.await?);
    }
    if let Some(t) = ticker {
        t.abort();
    }
    Ok(report(&args, &shared, &schedules, &ends, start.elapsed()))
}

fn report(
    args: &FleetArgs,
    shared: &Shared,
    schedules: &[Schedule],
    ends: &[collector::CollectorEnd],
    elapsed: Duration,
) -> FleetReport {
    let c = &shared.counters;
    let per_entry = |k: usize| shared.templates[k].samples();
    let entries: u64 = schedules.iter().map(|s| s.total).sum();
    let expected_samples = schedules
        .iter()
        .enumerate()
        .map(|(k, s)| s.total * per_entry(k))
        .sum();
    let backlog_samples = schedules
        .iter()
        .enumerate()
        .map(|(k, s)| s.backlog * per_entry(k))
        .sum();
    let backlog_collectors = schedules.iter().filter(|s| s.backlog > 0).count();
    let times = schedules
        .iter()
        .filter(|s| s.total > 0)
        .flat_map(|s| [s.time_unix_nano(0), s.time_unix_nano(s.total - 1)]);
    let (first, last) = times.fold((u64::MAX, 0), |(a, b), t| (a.min(t), b.max(t)));
    let acked_samples = c.acked_samples.load(Relaxed);
    let drained: Vec<f64> = ends.iter().filter_map(|e| e.backlog_drained_s).collect();
    FleetReport {
        endpoint: args.endpoint.clone(),
        collectors: args.collectors,
        clusters: args.clusters,
        series_per_node: args.series,
        interval_s: args.interval.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        backlog_s: args.backlog_rounds() as f64 * args.interval.as_secs_f64(),
        backlog_collectors,
        elapsed_s: elapsed.as_secs_f64(),
        entries,
        acked_entries: c.acked_entries.load(Relaxed),
        lost_entries: ends.iter().map(|e| e.lost_entries).sum(),
        acked_points: c.acked_points.load(Relaxed),
        acked_samples,
        expected_samples,
        rejected_points: c.rejected_points.load(Relaxed),
        acked_bytes: c.acked_bytes.load(Relaxed),
        requests: c.requests.load(Relaxed),
        retries: c.retries.load(Relaxed),
        errors: shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        samples_per_s: acked_samples as f64 / elapsed.as_secs_f64().max(1e-9),
        // Only when every backlog was drained: the slowest one's time.
        backlog_drained_s: (backlog_collectors > 0 && drained.len() == backlog_collectors)
            .then(|| drained.iter().copied().fold(0.0, f64::max)),
        backlog_samples,
        first_timestamp_ms: if last == 0 {
            0
        } else {
            (first / 1_000_000) as i64
        },
        last_timestamp_ms: (last / 1_000_000) as i64,
    }
}
