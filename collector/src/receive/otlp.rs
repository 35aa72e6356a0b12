//! The collector's OTLP sink: validate, stamp, append durably; answer only then.

mod split;

use crate::buffer::{Buffer, BufferError};
use crate::enrich::Stamp;
use bytes::Bytes;
use edgewatch_otlp::{ExportContext, ExportError, ExportOutcome, MetricsSink};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct BufferSink {
    inner: Arc<Inner>,
}

struct Inner {
    buffer: Buffer,
    stamp: Stamp,
    /// Largest entry (stamped, encoded): the forwarder's `max_batch_bytes`.
    max_entry_bytes: usize,
    received_points: IntCounter,
    requests: IntCounterVec,
    refused_points: IntCounterVec,
    /// Inference pods of this node: `model.name`/`model.version` for pushes from them.
    models: Option<crate::discover::SnapshotRx>,
}

impl BufferSink {
    /// `max_entry_bytes`: the forwarder's `max_batch_bytes`; a larger request is
    /// split into entries no larger (see `otlp/split.rs`).
    pub fn new(
        buffer: Buffer,
        stamp: Stamp,
        max_entry_bytes: usize,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let received_points = IntCounter::new(
            "edgewatch_received_points_total",
            "Data points accepted from senders and written durably to the buffer.",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "edgewatch_received_requests_total",
                "OTLP export requests by outcome.",
            ),
            &["outcome"],
        )?;
        let refused_points = IntCounterVec::new(
            Opts::new(
                "edgewatch_refused_points_total",
                "Data points refused to senders (they may retry), by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(received_points.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(refused_points.clone()))?;
        Ok(BufferSink {
            inner: Arc::new(Inner {
                buffer,
                stamp,
                max_entry_bytes,
                received_points,
                requests,
                refused_points,
                models: None,
            }),
        })
    }
}

impl BufferSink {
    /// Enriches pushes from model pods with `model.name`/`model.version` (resource
    /// attributes), looked up in the discovery snapshot by pod uid/name/IP or peer address.
    pub fn with_models(self, models: crate::discover::SnapshotRx) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_models before the sink is shared"));
        inner.models = Some(models);
        BufferSink {
            inner: Arc::new(inner),
        }
    }
}

impl MetricsSink for BufferSink {
    async fn export(&self, body: Bytes, ctx: ExportContext) -> Result<ExportOutcome, ExportError> {
        let i = &self.inner;
        // Resources decoded, scope metrics kept as slices of `body`, checked
        // and counted without materialising a data point (see `otlp::shallow`).
        let (mut req, points) = match edgewatch_otlp::shallow::decode_shallow(body) {
            Ok(r) => r,
            Err(e) => {
                i.requests.with_label_values(&["invalid"]).inc();
                return Err(e);
            }
        };
        if points == 0 {
            i.requests.with_label_values(&["empty"]).inc();
            return Ok(ExportOutcome::default());
        }
        if let Some(models) = &i.models {
            let resources = req.resource_metrics.iter_mut().map(|rm| &mut rm.resource);
            crate::discover::enrich_models(&models.borrow(), resources, ctx.peer);
        }
        i.stamp
            .apply(req.resource_metrics.iter_mut().map(|rm| &mut rm.resource));
        let entries = match split::entries(req, points, i.max_entry_bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, peer = ?ctx.peer, "refusing an OTLP request");
                i.requests.with_label_values(&["too_large"]).inc();
                i.refused_points
                    .with_label_values(&["too_large"])
                    .inc_by(points);
                return Err(ExportError::TooLarge(e.to_string()));
            }
        };
        // Entry by entry: should a later one fail, the sender's retry re-sends the
        // earlier ones again (the same samples, written twice at the core).
        let mut appended = 0;
        for (n, payload) in entries {
            if let Err(e) = i.buffer.append(n, payload).await {
                i.received_points.inc_by(appended);
                return Err(self.refused(e, points - appended));
            }
            appended += n;
        }
        i.received_points.inc_by(points);
        i.requests.with_label_values(&["ok"]).inc();
        Ok(ExportOutcome::default())
    }
}

impl BufferSink {
    /// Counts a request the buffer did not take and answers why.
    fn refused(&self, e: BufferError, points: u64) -> ExportError {
        let (reason, err) = match e {
            BufferError::Full { retry_after } => (
                "buffer_full",
                ExportError::ResourceExhausted {
                    message: "buffer full (full_policy: backpressure); retry later".into(),
                    retry_after,
                },
            ),
            BufferError::Io { context, source } => (
                "write_error",
                ExportError::Unavailable {
                    message: format!("buffer write failed: {context}: {source}"),
                    retry_after: Duration::from_secs(5),
                },
            ),
            BufferError::Closed => (
                "shutting_down",
                ExportError::Unavailable {
                    message: "collector is shutting down".into(),
                    retry_after: Duration::from_secs(1),
                },
            ),
        };
        let i = &self.inner;
        i.requests.with_label_values(&[reason]).inc();
        i.refused_points.with_label_values(&[reason]).inc_by(points);
        err
    }
}
