//! The HTTP side of one endpoint: TLS, authentication, headers, and what an
//! answer means for the batch (sent, retry, or drop).

use bytes::Bytes;
use edgewatch_config::remote_write::RemoteWriteConfig;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, SystemTime};

use super::RemoteError;

const USER_AGENT: &str = concat!("edgewatch/", env!("CARGO_PKG_VERSION"));

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    Sent,
    /// 5xx, 429 (when configured), a connection error or a timeout; `after` is
    /// `Retry-After` when the endpoint said how long to wait.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Any other answer: not retried, counted under this reason.
    Drop(String),
}

pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    cfg: RemoteWriteConfig,
}

impl Client {
    pub fn new(cfg: &RemoteWriteConfig) -> Result<Client, RemoteError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| RemoteError::Header(k.clone()))?;
            let value = HeaderValue::from_str(v).map_err(|_| RemoteError::Header(k.clone()))?;
            headers.insert(name, value);
        }
        let builder = reqwest::Client::builder()
            .timeout(cfg.remote_timeout.get())
            .user_agent(USER_AGENT)
            .default_headers(headers);
        // Unset: reqwest's own rustls with the public roots (an `https://` URL is
        // TLS either way).
        let builder = if cfg.tls_config.is_set() {
            builder.use_preconfigured_tls(edgewatch_tls::client::client_config(&cfg.tls_config)?)
        } else {
            builder
        };
        let http = builder
            .build()
            .map_err(|e| RemoteError::Client(e.to_string()))?;
        Ok(Client {
            http,
            url: cfg.url.0.clone(),
            cfg: cfg.clone(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One POST of a snappy-compressed `WriteRequest`. Credentials files are read
    /// at each send, so a rotated secret is picked up without a restart.
    pub async fn send(&self, body: Bytes, retry_on_429: bool) -> Attempt {
        let mut req = self
            .http
            .post(&self.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body);
        match self.credentials() {
            Ok(Some(Auth::Basic(user, password))) => req = req.basic_auth(user, Some(password)),
            Ok(Some(Auth::Header(value))) => req = req.header("Authorization", value),
            Ok(None) => {}
            // A Secret volume being rotated: the file comes back.
            Err(e) => {
                return Attempt::Retry {
                    after: None,
                    why: format!("reading the credentials: {e}"),
                }
            }
        }
        match req.send().await {
            Ok(resp) => classify(resp, retry_on_429).await,
            Err(e) => Attempt::Retry {
                after: None,
                why: error_chain(&e),
            },
        }
    }

    fn credentials(&self) -> std::io::Result<Option<Auth>> {
        if let Some(b) = &self.cfg.basic_auth {
            return Ok(Some(Auth::Basic(b.username.clone(), b.password.read()?)));
        }
        if let Some(a) = &self.cfg.authorization {
            return Ok(Some(Auth::Header(format!(
                "{} {}",
                a.kind,
                a.credentials.read()?
            ))));
        }
        Ok(None)
    }
}

enum Auth {
    Basic(String, String),
    Header(String),
}

async fn classify(resp: reqwest::Response, retry_on_429: bool) -> Attempt {
    let status = resp.status();
    if status.is_success() {
        return Attempt::Sent;
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, SystemTime::now()));
    let code = status.as_u16();
    // The body says why (Prometheus: "out of order sample"); keep a little for the log.
    let text = resp.text().await.unwrap_or_default();
    let why: String = text.chars().take(256).collect();
    if status.is_server_error() || (code == 429 && retry_on_429) {
        return Attempt::Retry {
            after: retry_after,
            why: format!("HTTP {code}: {why}"),
        };
    }
    tracing::warn!(status = code, body = %why, "remote_write endpoint refused a batch; dropped");
    Attempt::Drop(format!("http_{code}"))
}

/// An error with its causes (reqwest's own message omits them: "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// `Retry-After`: delay seconds or an HTTP-date.
pub(crate) fn retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}
