//! One simulated collector: its entries (one per scrape round, sequence number = round)
//! go out as the real forwarder sends them (`collector/src/forward.rs`): consecutive
//! entries concatenated into one zstd-compressed gRPC frame with the batch headers
//! (instance id, first seq, entry lengths, floor), up to `max_in_flight` batches at once,
//! acknowledged in order, retryable failures retried with backoff.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use edgewatch_otlp::client::{self, Frame, FrameEncoder};
use edgewatch_otlp::BatchInfo;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

use super::Shared;
use crate::args::grpc_code_name;

/// Entries per batch at most (as the forwarder).
const MAX_BATCH_ENTRIES: u64 = 4096;
const MAX_RESPONSE: usize = 1 << 20;
/// zstd level of the forwarder.
const ZSTD_LEVEL: i32 = 1;
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// When each round of one collector is due and which time it carries.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The run's start (wall clock in ns and the matching instant).
    pub start_unix_nano: u64,
    pub start: Instant,
    /// This collector's offset within the interval, so sends spread out.
    pub phase: Duration,
    pub interval: Duration,
    /// Rounds before the start (the backlog): due at once, with their original times.
    pub backlog: u64,
    /// Every round: backlog + live rounds before the end.
    pub total: u64,
}

impl Schedule {
    /// A schedule of `backlog` past rounds and the live rounds in `duration`.
    pub fn new(
        start: Instant,
        start_unix_nano: u64,
        phase: Duration,
        interval: Duration,
        backlog: u64,
        duration: Duration,
    ) -> Schedule {
        let live = if duration > phase {
            (duration - phase).as_nanos().div_ceil(interval.as_nanos()) as u64
        } else {
            0
        };
        Schedule {
            start_unix_nano,
            start,
            phase,
            interval,
            backlog,
            total: backlog + live,
        }
    }

    /// When round `r` may be sent.
    pub fn due_at(&self, r: u64) -> Instant {
        match r.checked_sub(self.backlog) {
            None => self.start,
            Some(live) => self.start + self.phase + self.interval * live as u32,
        }
    }

    /// Rounds due by `now`.
    pub fn due(&self, now: Instant) -> u64 {
        if now < self.start + self.phase {
            return self.backlog.min(self.total);
        }
        let live = (now - self.start - self.phase).as_nanos() / self.interval.as_nanos() + 1;
        (self.backlog + live as u64).min(self.total)
    }

    /// The scrape time of round `r`, in ns since the epoch.
    pub fn time_unix_nano(&self, r: u64) -> u64 {
        let iv = self.interval.as_nanos() as u64;
        let t = self.start_unix_nano + self.phase.as_nanos() as u64 + r * iv;
        t.saturating_sub(self.backlog * iv)
    }
}

/// What a collector ended with.
#[derive(Debug, Default, Clone, Copy)]
pub struct CollectorEnd {
    /// Seconds from the start until its backlog was acknowledged (backlog collectors).
    pub backlog_drained_s: Option<f64>,
    /// Rounds never acknowledged (rejected or still failing at the give-up time).
    pub lost_entries: u64,
}

/// One batch's result.
struct Sent {
    last: u64,
    entries: u64,
    ok: bool,
}

/// Sends every round of collector `k` per `sched`; gives up on what is not acknowledged
/// by `shared.give_up`.
pub async fn run(shared: Arc<Shared>, k: usize, channel: Channel, sched: Schedule) -> CollectorEnd {
    let template = &shared.templates[k];
    let per_batch = (shared.opts.max_batch_bytes / template.len().max(1))
        .clamp(1, MAX_BATCH_ENTRIES as usize) as u64;
    let mut end = CollectorEnd::default();
    let (mut next, mut acked) = (0u64, 0u64);
    let mut in_flight = FuturesOrdered::new();
    loop {
        let due = sched.due(Instant::now());
        while in_flight.len() < shared.opts.max_in_flight && next < due {
            let n = (due - next).min(per_batch);
            let (info, frame) = batch(&shared, k, &sched, next, n, acked);
            in_flight.push_back(send(shared.clone(), channel.clone(), info, frame, n));
            next += n;
        }
        if in_flight.is_empty() && next == sched.total {
            break;
        }
        let can_send = next < sched.total && in_flight.len() < shared.opts.max_in_flight;
        let wake = sched.due_at(next.min(sched.total.saturating_sub(1)));
        tokio::select! {
            Some(s) = in_flight.next(), if !in_flight.is_empty() => {
                let s: Sent = s;
                acked = s.last + 1;
                if s.ok {
                    let c = &shared.counters;
                    c.acked_points.fetch_add(s.entries * template.otlp_points(), Relaxed);
                    c.acked_samples.fetch_add(s.entries * template.samples(), Relaxed);
                } else {
                    end.lost_entries += s.entries;
                }
                if end.backlog_drained_s.is_none() && sched.backlog > 0 && acked >= sched.backlog {
                    end.backlog_drained_s = Some(sched.start.elapsed().as_secs_f64());
                }
            }
            _ = tokio::time::sleep_until(wake), if can_send => {}
            _ = tokio::time::sleep_until(shared.opts.give_up) => {
                end.lost_entries += sched.total - acked;
                shared.counters.lost_entries.fetch_add(sched.total - acked, Relaxed);
                return end;
            }
        }
    }
    end
}

/// Entries `first .. first + n` as one compressed frame and its headers.
fn batch(
    shared: &Shared,
    k: usize,
    sched: &Schedule,
    first: u64,
    n: u64,
    acked: u64,
) -> (BatchInfo, Option<Frame>) {
    let template = &shared.templates[k];
    let mut body = BytesMut::with_capacity(template.len() * n as usize);
    let mut lens = Vec::with_capacity(n as usize);
    for r in first..first + n {
        let before = body.len();
        template.build(r, sched.time_unix_nano(r), &mut body);
        lens.push(body.len() - before);
    }
    let info = BatchInfo {
        collector_id: shared.ids[k].instance_id.clone(),
        first_seq: first,
        entry_lens: lens,
        // The buffer still holds everything from the oldest unacknowledged entry on.
        floor: acked.min(first),
    };
    let mut encoder = shared
        .encoders
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .map(Ok)
        .unwrap_or_else(|| FrameEncoder::new(ZSTD_LEVEL));
    let frame = match &mut encoder {
        Ok(e) => e.frame(&body),
        Err(e) => {
            tracing::warn!(error = %e, "no zstd context");
            None
        }
    };
    if let Ok(e) = encoder {
        shared
            .encoders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
    (info, frame)
}

/// Sends one batch until it is acknowledged, rejected, or the give-up time passes.
async fn send(
    shared: Arc<Shared>,
    mut channel: Channel,
    info: BatchInfo,
    frame: Option<Frame>,
    entries: u64,
) -> Sent {
    let last = info.first_seq + entries - 1;
    let c = &shared.counters;
    let Some(frame) = frame else {
        c.lost_entries.fetch_add(entries, Relaxed);
        return Sent {
            last,
            entries,
            ok: false,
        };
    };
    let headers = info.to_headers();
    let mut backoff = INITIAL_BACKOFF;
    c.in_flight.fetch_add(1, Relaxed);
    let ok = loop {
        c.requests.fetch_add(1, Relaxed);
        let attempt = client::export(&mut channel, frame.clone(), &headers, MAX_RESPONSE);
        let code = match tokio::time::timeout(shared.opts.timeout, attempt).await {
            Ok(Ok(resp)) => {
                let rejected = resp
                    .partial_success
                    .map_or(0, |p| p.rejected_data_points.max(0));
                c.rejected_points.fetch_add(rejected as u64, Relaxed);
                c.acked_entries.fetch_add(entries, Relaxed);
                c.acked_bytes.fetch_add(frame.len() as u64, Relaxed);
                break true;
            }
            Ok(Err(status)) => status.code(),
            Err(_) => Code::DeadlineExceeded,
        };
        shared.error(grpc_code_name(code));
        if !edgewatch_otlp::client::is_retryable(code) {
            tracing::warn!(
                code = grpc_code_name(code),
                first_seq = info.first_seq,
                "batch rejected; dropping it"
            );
            c.lost_entries.fetch_add(entries, Relaxed);
            break false;
        }
        if Instant::now() + backoff > shared.opts.give_up {
            c.lost_entries.fetch_add(entries, Relaxed);
            break false;
        }
        c.retries.fetch_add(1, Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    c.in_flight.fetch_sub(1, Relaxed);
    Sent { last, entries, ok }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_rounds_are_due_at_once_with_past_times() {
        let start = Instant::now();
        let iv = Duration::from_secs(15);
        let s = Schedule::new(
            start,
            10_000_000_000_000,
            Duration::from_secs(3),
            iv,
            240,
            Duration::from_secs(60),
        );
        // Live rounds at 3 s, 18 s, 33 s, 48 s.
        assert_eq!(s.total, 244);
        assert_eq!(s.due(start), 240);
        assert_eq!(s.due(start + Duration::from_secs(3)), 241);
        assert_eq!(s.due(start + Duration::from_secs(50)), 244);
        assert_eq!(s.due_at(0), start);
        assert_eq!(s.due_at(241), start + Duration::from_secs(18));
        let t = |r| s.time_unix_nano(r);
        assert_eq!(t(240), 10_003_000_000_000);
        assert_eq!(t(239), 10_003_000_000_000 - 15_000_000_000);
        assert_eq!(t(0), 10_003_000_000_000 - 240 * 15_000_000_000);
    }

    #[test]
    fn live_rounds_stop_before_the_end() {
        let start = Instant::now();
        let iv = Duration::from_secs(15);
        let s = Schedule::new(start, 0, Duration::ZERO, iv, 0, Duration::from_secs(30));
        assert_eq!(s.total, 2);
        let s = Schedule::new(
            start,
            0,
            Duration::from_secs(31),
            iv,
            0,
            Duration::from_secs(30),
        );
        assert_eq!(s.total, 0);
    }
}
