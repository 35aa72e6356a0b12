//! The final report of a run.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::args::Protocol;

/// Ack latency of acknowledged requests, in milliseconds (send to answer).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Consecutive series (by index, named `from` ..= `to`) sharing one sequence number.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeriesRun {
    pub from: String,
    pub to: String,
    pub seq: u64,
}

/// `--sequence-check` results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SequenceReport {
    /// The metric carrying the sequence numbers.
    pub metric: String,
    /// Highest acknowledged sequence number per series, run-length encoded over all
    /// series in order (`seq` 0: nothing acknowledged for those series).
    pub acked_through: Vec<SeriesRun>,
    /// Points of requests that failed (not acknowledged, not retried), as
    /// `(series range, sequence)` runs; capped at 1000 runs (`failed_truncated`).
    pub failed: Vec<SeriesRun>,
    pub failed_truncated: bool,
}

impl SequenceReport {
    /// `acked_through` expanded to `series name -> highest acked sequence`, leaving out
    /// series with nothing acknowledged.
    pub fn acked_through_map(&self) -> BTreeMap<String, u64> {
        expand_runs(&self.acked_through)
    }
}

/// Expands runs whose names are `s` + zero-padded index (as generated) into a map,
/// leaving out `seq` 0.
pub fn expand_runs(runs: &[SeriesRun]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in runs.iter().filter(|r| r.seq > 0) {
        let width = r.from.len() - 1;
        let (Ok(a), Ok(b)) = (r.from[1..].parse::<usize>(), r.to[1..].parse::<usize>()) else {
            continue;
        };
        for i in a..=b {
            out.insert(crate::payload::series_name(i, width), r.seq);
        }
    }
    out
}

/// Result of `edgewatch loadgen`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub protocol: Protocol,
    pub endpoint: String,
    /// Target data points/s; `null` for `--rate max`.
    pub target_rate: Option<f64>,
    pub batch: usize,
    pub series: usize,
    pub concurrency: usize,
    pub gzip: bool,
    /// `service.instance.id` of the generated resource.
    pub instance_id: String,
    /// `--duration`, seconds.
    pub duration_s: f64,
    /// From the first send until the last answer (at least `duration_s`), seconds.
    pub elapsed_s: f64,
    /// Acknowledged data points per second of `elapsed_s`.
    pub achieved_rate: f64,
    pub sent_points: u64,
    pub acked_points: u64,
    pub failed_points: u64,
    /// Points acknowledged but reported rejected by an OTLP partial success.
    pub rejected_points: u64,
    pub sent_requests: u64,
    pub acked_requests: u64,
    pub failed_requests: u64,
    /// Retries done because of `--retry`.
    pub retries: u64,
    /// Failed attempts by error code: gRPC code names (`RESOURCE_EXHAUSTED`), HTTP
    /// statuses (`429`), `connect`, `timeout`, `transport`.
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    /// How far behind its schedule the generator fell at worst (open-loop pacing), ms.
    pub max_schedule_lag_ms: f64,
    pub sequence: Option<SequenceReport>,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("report serializes")
    }

    /// The report for people (several lines, no trailing newline).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let target = match self.target_rate {
            Some(r) => format!("{r:.0} dp/s"),
            None => "max".into(),
        };
        let _ = writeln!(
            s,
            "edgewatch loadgen: {} {} target {target}, batch {}, {} series, concurrency {}{}",
            self.protocol,
            self.endpoint,
            self.batch,
            self.series,
            self.concurrency,
            if self.gzip { ", gzip" } else { "" }
        );
        let _ = writeln!(
            s,
            "  achieved    {:.1} dp/s ({} points acked in {:.3} s; duration {:.3} s)",
            self.achieved_rate, self.acked_points, self.elapsed_s, self.duration_s
        );
        let _ = writeln!(
            s,
            "  points      sent {}  acked {}  failed {}  rejected {}",
            self.sent_points, self.acked_points, self.failed_points, self.rejected_points
        );
        let _ = writeln!(
            s,
            "  requests    sent {}  acked {}  failed {}  retries {}",
            self.sent_requests, self.acked_requests, self.failed_requests, self.retries
        );
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(s, "  errors      {errors}");
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "  ack latency p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms",
            l.p50, l.p90, l.p99, l.max, l.mean
        );
        let _ = writeln!(
            s,
            "  pacing      max schedule lag {:.3} ms",
            self.max_schedule_lag_ms
        );
        if let Some(q) = &self.sequence {
            let runs = |runs: &[SeriesRun]| {
                runs.iter()
                    .map(|r| format!("{}..{}={}", r.from, r.to, r.seq))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(
                s,
                "  sequence    {} (instance {}) acked through: {}",
                q.metric,
                self.instance_id,
                runs(&q.acked_through)
            );
            if !q.failed.is_empty() {
                let _ = writeln!(
                    s,
                    "  failed      {}{}",
                    runs(&q.failed),
                    if q.failed_truncated { " ..." } else { "" }
                );
            }
        }
        s.truncate(s.trim_end().len());
        s
    }
}
