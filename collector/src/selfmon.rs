//! The collector's own metrics, sent to the core through its own buffer: the core's
//! fleet view and built-in alerts (`EdgeCollectorDown`, `EdgeBufferBacklog`,
//! `EdgeBufferDropping`) read them, and after an outage they arrive in order with
//! everything else. They are "scraped" from the collector's registry with the scrape
//! receiver's own parser and converter, so they reach the core exactly as a
//! Prometheus scrape of the admin endpoint would store them, under job
//! `edgewatch-collector` and instance = the buffer's instance id.

use crate::receive::scrape::{convert, parse, Deadline, Output};
use edgewatch_config::collector::ScrapeLimits;
use prometheus::{Encoder, Registry, TextEncoder};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const JOB: &str = "edgewatch-collector";

pub async fn run(
    registry: Registry,
    output: Output,
    instance_id: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    let target = convert::TargetIdentity {
        job: JOB.to_string(),
        instance: instance_id.clone(),
        labels: vec![("instance".into(), instance_id), ("job".into(), JOB.into())],
        resource: vec![],
    };
    let mut state = convert::TargetState::default();
    loop {
        let started = Instant::now();
        let mut text = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut text) {
            tracing::warn!(error = %e, "encoding own metrics failed");
        }
        match parse::parse(&String::from_utf8_lossy(&text), parse::Format::Text) {
            Ok(exp) => match convert::convert(
                &exp,
                &target,
                &mut state,
                crate::receive::scrape::now_ms(),
                started.elapsed().as_secs_f64(),
                &ScrapeLimits::default(),
                &Deadline::none(),
            ) {
                Ok((rm, _)) => {
                    if let Err(e) = output.send(vec![rm]).await {
                        tracing::debug!(error = %e, "buffering own metrics failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "own metrics do not convert"),
            },
            Err(e) => tracing::warn!(error = %e, "own metrics do not parse"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
