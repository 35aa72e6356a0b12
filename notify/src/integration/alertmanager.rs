//! Pushing to real Alertmanagers (`/api/v2/alerts`), as Prometheus does. Not an
//! [`Integration`](super::Integration): the Alertmanager groups, deduplicates and
//! notifies itself, so every alert goes out ungrouped as the rules send it (no
//! notification log, no group timers), each at most once per `resend_delay` unless its
//! state changed, from a bounded queue per Alertmanager drained in batches.

use super::classify_status;
use crate::deliver::{Failure, Request};
use crate::model::rfc3339;
use crate::{Alert, Inner};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The `integration` metric label of pushes.
pub const NAME: &str = "alertmanager";

/// Alerts waiting for one Alertmanager beyond this are dropped, oldest first.
const AM_QUEUE_CAP: usize = 10_000;
const AM_BATCH: usize = 256;

/// One Alertmanager of one receiver.
pub(crate) struct AmTarget {
    pub(crate) receiver: String,
    pub(crate) url: String,
    pub(crate) queue: Mutex<VecDeque<Alert>>,
    /// fingerprint → (last pushed, was resolved)
    pub(crate) last: Mutex<HashMap<u64, (SystemTime, bool)>>,
    pub(crate) notify: tokio::sync::Notify,
}

impl AmTarget {
    pub(crate) fn new(receiver: &str, base_url: &str) -> Self {
        AmTarget {
            receiver: receiver.to_string(),
            url: format!("{}/api/v2/alerts", base_url.trim_end_matches('/')),
            queue: Mutex::new(VecDeque::new()),
            last: Mutex::new(HashMap::new()),
            notify: tokio::sync::Notify::new(),
        }
    }
}

impl Inner {
    pub(crate) fn enqueue_push(&self, t: usize, a: Alert, now: SystemTime) {
        let target = &self.am_targets[t];
        let resolved = a.resolved_at(now);
        {
            let mut last = target.last.lock().unwrap_or_else(|e| e.into_inner());
            let fp = a.fingerprint();
            if let Some((at, was_resolved)) = last.get(&fp) {
                if *was_resolved == resolved && *at + self.resend_delay > now {
                    return;
                }
            }
            last.insert(fp, (now, resolved));
        }
        let mut q = target.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= AM_QUEUE_CAP {
            q.pop_front();
            self.deliverer
                .metrics
                .failed
                .with_label_values(&[&target.receiver, "queue_full"])
                .inc();
        }
        q.push_back(a);
        target.notify.notify_one();
    }
}

pub(crate) async fn push_loop(inner: Arc<Inner>, t: usize, shutdown: CancellationToken) {
    let target = &inner.am_targets[t];
    loop {
        let batch: Vec<Alert> = {
            let mut q = target.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = q.len().min(AM_BATCH);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            tokio::select! {
                _ = target.notify.notified() => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        let now = inner.now();
        let eval = Duration::from_millis(inner.eval_interval_ms.load(Ordering::Relaxed));
        let body = payload(&batch, now, eval);
        let req = Request {
            url: target.url.clone(),
            headers: vec![],
            body: serde_json::to_vec(&body).unwrap_or_default(),
        };
        if let Err(f) = inner
            .deliverer
            .post(&target.receiver, NAME, &classify_status, req, &shutdown)
            .await
        {
            tracing::warn!(
                receiver = target.receiver,
                alerts = batch.len(),
                reason = f.reason(),
                "alerts not pushed to Alertmanager"
            );
            // let the next round re-push them
            let mut last = target.last.lock().unwrap_or_else(|e| e.into_inner());
            for a in &batch {
                last.remove(&a.fingerprint());
            }
            if f == Failure::Shutdown {
                return;
            }
        }
    }
}

/// Alertmanager `/api/v2/alerts` body for these alerts, Prometheus' way: a firing alert
/// carries `endsAt = now + 4 * max(eval_interval, 1m)`, a resolved one its resolve time.
pub fn payload(alerts: &[Alert], now: SystemTime, eval_interval: Duration) -> Value {
    let horizon = 4 * eval_interval.max(Duration::from_secs(60));
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                let ends = match a.ends_at {
                    Some(e) if a.resolved_at(now) => e,
                    _ => now + horizon,
                };
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339(ends),
                    "generatorURL": a.generator_url,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_ms;
    use crate::payload::tests::alert;

    #[test]
    fn alertmanager_push_body() {
        let now = from_ms(1_000_000);
        let v = payload(
            &[
                alert(&[("alertname", "A")], &[], 0, None),
                alert(&[("alertname", "B")], &[], 0, Some(900_000)),
            ],
            now,
            Duration::from_secs(15),
        );
        assert_eq!(v[0]["endsAt"], rfc3339(now + Duration::from_secs(240)));
        assert_eq!(v[1]["endsAt"], rfc3339(from_ms(900_000)));
        assert_eq!(v[0]["generatorURL"], "http://gen/x");
    }
}
