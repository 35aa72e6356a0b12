//! One module per integration. A grouped integration (PagerDuty, Dynatrace, webhook)
//! implements [`Integration`] and [`FromConfig`]; the flush in the crate root does the
//! rest (notification log, muting, retries, metrics) the same way for all of them.
//!
//! Adding one (Slack, email): its config type in `edgewatch_config::alerting` (a
//! `*_configs` list on `ReceiverConfig`), one file here implementing both traits, its
//! `mod` line and one `add` line in [`build`]. Nothing else names an integration:
//! metrics, retries, rate limits and the notification log go by these traits.
//!
//! The Alertmanager push ([`alertmanager`]) is not an [`Integration`]: it forwards every
//! alert ungrouped as the rules send it, re-sent every `resend_delay` without a
//! notification log, because the Alertmanager groups and deduplicates itself.

pub mod alertmanager;
pub mod dynatrace;
pub mod pagerduty;
pub mod webhook;

use crate::deliver::Request;
use crate::payload::Data;
use edgewatch_config::alerting::{ReceiverConfig, SecretError};
use std::time::Duration;

/// What an answer means for a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after a backoff (or the answer's `Retry-After`).
    Retry,
    /// Rejected: retrying would not help.
    Drop,
}

/// The classes every receiver we deliver to uses: 2xx delivered; 429 (rate limited)
/// and 5xx retried; any other answer is a bad request and never retried.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Drop,
    }
}

/// A receiver's limit on events, per key, over a sliding minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit<'a> {
    pub key: &'a str,
    pub per_minute: usize,
}

/// One configured destination of grouped notifications.
pub trait Integration: Send + Sync {
    /// Whether resolved alerts are notified.
    fn send_resolved(&self) -> bool;
    /// The request notifying about `data` (a group, at a time).
    fn request(&self, data: &Data) -> Request;
    /// What an HTTP answer's status means.
    fn classify(&self, status: u16) -> Verdict {
        classify_status(status)
    }
    /// Wait for a slot under this limit before each request.
    fn rate_limit(&self) -> Option<RateLimit<'_>> {
        None
    }
    /// A receiver that closes an open event by itself after a while: a firing group is
    /// re-sent at least this often, whatever the route's `repeat_interval`.
    fn keep_alive(&self) -> Option<Duration> {
        None
    }
}

/// How an integration is made from its entry in a receiver's configuration.
pub trait FromConfig: Integration + Sized + 'static {
    type Config;
    /// The `integration` metric label and the prefix of the notification-log id.
    /// Never rename one: the notification log is keyed by `NAME/index`, a new id
    /// would notify every open group again.
    const NAME: &'static str;
    fn from_config(cfg: &Self::Config) -> Result<Self, BuildError>;
}

/// A secret of an integration could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct BuildError {
    /// The configuration key, e.g. `routing_key_file`.
    pub field: &'static str,
    pub source: SecretError,
}

/// An integration that could not be built, with where it is configured.
#[derive(Debug, thiserror::Error)]
#[error("{kind}_configs[{index}].{source}")]
pub struct IntegrationError {
    pub kind: &'static str,
    pub index: usize,
    pub source: BuildError,
}

/// One grouped integration of a receiver.
pub struct Configured {
    /// The notification-log id, `NAME/index`.
    pub id: String,
    /// [`FromConfig::NAME`]: the `integration` metric label.
    pub name: &'static str,
    pub integration: Box<dyn Integration>,
}

/// A receiver's grouped integrations.
pub type Integrations = Vec<Configured>;

/// Builds a receiver's grouped integrations in a fixed order (the ids depend only on
/// the position within each kind's list).
pub fn build(r: &ReceiverConfig) -> Result<Integrations, IntegrationError> {
    let mut out = Integrations::new();
    add::<pagerduty::PagerDuty>(&mut out, &r.pagerduty_configs)?;
    add::<dynatrace::Dynatrace>(&mut out, &r.dynatrace_configs)?;
    add::<webhook::Webhook>(&mut out, &r.webhook_configs)?;
    Ok(out)
}

fn add<I: FromConfig>(out: &mut Integrations, cfgs: &[I::Config]) -> Result<(), IntegrationError> {
    for (index, cfg) in cfgs.iter().enumerate() {
        let integ = I::from_config(cfg).map_err(|source| IntegrationError {
            kind: I::NAME,
            index,
            source,
        })?;
        out.push(Configured {
            id: format!("{}/{index}", I::NAME),
            name: I::NAME,
            integration: Box::new(integ),
        });
    }
    Ok(())
}

fn json_body(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        for (status, want) in [
            (200, Verdict::Delivered),
            (202, Verdict::Delivered),
            (400, Verdict::Drop),
            (404, Verdict::Drop),
            (301, Verdict::Drop),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (503, Verdict::Retry),
        ] {
            assert_eq!(classify_status(status), want, "{status}");
        }
    }
}
