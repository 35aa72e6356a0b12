//! What an HTTP listener's limits refuse: counted per listener and reason, logged at
//! most once per 10 s per listener.

use super::tracker::lock;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a listener refused a request or closed a connection.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reason {
    HeaderTimeout,
    RequestTimeout,
    AnswerTimeout,
    ResponseTimeout,
    Busy,
    ConnectionLimit,
}

impl Reason {
    const ALL: [Reason; 6] = [
        Reason::HeaderTimeout,
        Reason::RequestTimeout,
        Reason::AnswerTimeout,
        Reason::ResponseTimeout,
        Reason::Busy,
        Reason::ConnectionLimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::HeaderTimeout => "header_timeout",
            Reason::RequestTimeout => "request_timeout",
            Reason::AnswerTimeout => "answer_timeout",
            Reason::ResponseTimeout => "response_timeout",
            Reason::Busy => "busy",
            Reason::ConnectionLimit => "connection_limit",
        }
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            Reason::HeaderTimeout => "connection closed: no complete request head in time",
            Reason::RequestTimeout => "request timed out (408) before its body arrived",
            Reason::AnswerTimeout => "request timed out (503): no answer in time",
            Reason::ResponseTimeout => {
                "connection closed: the answer was not taken within the response timeout"
            }
            Reason::Busy => "request refused (503): too many requests at once",
            Reason::ConnectionLimit => {
                "idle connection closed: the listener is at its connection limit"
            }
        }
    }
}

/// The HTTP listeners' series of a role.
#[derive(Clone)]
pub struct HttpMetrics {
    refused: prometheus::IntCounterVec,
    open: prometheus::IntGaugeVec,
}

impl HttpMetrics {
    pub fn register(registry: &prometheus::Registry) -> Result<HttpMetrics, crate::TlsError> {
        use prometheus::Opts;
        let m = HttpMetrics {
            refused: prometheus::IntCounterVec::new(
                Opts::new(
                    "edgewatch_http_refused_total",
                    "Requests refused and connections closed by an HTTP listener's limits, by reason: header_timeout (no request head in time, or an idle keep-alive connection), request_timeout (408), answer_timeout (503), response_timeout (answer not taken), busy (503, too many requests at once), connection_limit (an idle connection closed for a new one).",
                ),
                &["listener", "reason"],
            )?,
            open: prometheus::IntGaugeVec::new(
                Opts::new(
                    "edgewatch_http_open_connections",
                    "Connections open on an HTTP listener (TLS handshakes in progress not included).",
                ),
                &["listener"],
            )?,
        };
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.open.clone()))?;
        Ok(m)
    }

    /// The series of the listener `name` (every reason exists from the start).
    pub fn listener(&self, name: &'static str) -> ListenerMetrics {
        ListenerMetrics {
            name,
            refused: Reason::ALL.map(|r| self.refused.with_label_values(&[name, r.label()])),
            open: self.open.with_label_values(&[name]),
        }
    }
}

/// One listener's series.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub(super) name: &'static str,
    pub(super) refused: [prometheus::IntCounter; 6],
    pub(super) open: prometheus::IntGauge,
}

/// At most one warning per listener this often, the rest at debug: a flood must not
/// flood the log too.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Throttle {
    pub(super) local: SocketAddr,
    pub(super) name: &'static str,
    pub(super) last: Mutex<Option<Instant>>,
}

impl Throttle {
    pub(super) fn new(local: SocketAddr, name: &'static str) -> Throttle {
        Throttle {
            local,
            name,
            last: Mutex::new(None),
        }
    }

    pub(super) fn event(&self, peer: SocketAddr, what: &str) {
        let due = {
            let mut last = lock(&self.last);
            let due = last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            tracing::warn!(listener = self.name, local = %self.local, %peer, "{what} (further such events for 10 s at debug)");
        } else {
            tracing::debug!(listener = self.name, local = %self.local, %peer, "{what}");
        }
    }
}
