//! Small HTTP clients and a recording HTTP server with scripted answers.

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::eventually;

/// GET `url`: status and body, `None` if the request failed (nothing listening yet).
pub async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Waits (30 s at most) until `url` answers 200.
pub async fn wait_ready(url: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{url} to answer 200"),
        || async { get(url).await.is_some_and(|(s, _)| s == 200) },
    )
    .await;
}

/// Like [`wait_ready`], with `client` (e.g. an HTTPS one).
pub async fn wait_ready_with(client: &reqwest::Client, url: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{url} to answer 200"),
        || async {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

/// An HTTPS client trusting only the CA in `ca`, presenting `identity` (a
/// certificate and key file) when given.
pub fn tls_client(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> reqwest::Client {
    let read = |p: &std::path::Path| {
        std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&read(ca)).expect("CA PEM"));
    if let Some((cert, key)) = identity {
        let mut pem = read(cert);
        pem.extend_from_slice(&read(key));
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("client identity PEM"));
    }
    b.build().expect("TLS client")
}

/// One request a [`Recorder`] received, with the status it answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Recorded {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What a [`Recorder`]'s handler sees: the request and the status the script says.
pub struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    pub scripted: u16,
}

type Handler = dyn Fn(Incoming<'_>) -> Response + Send + Sync;

/// An HTTP server on 127.0.0.1 that records every request and answers the next
/// status of its script, then its default (a webhook, an API stand-in).
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    default: u16,
    handler: Arc<Handler>,
    delay: Arc<Mutex<Duration>>,
}

impl Recorder {
    /// Answers `script` in order, then `default`, each with an empty body.
    pub async fn start(default: u16, script: &[u16]) -> Recorder {
        Recorder::start_with(default, script, |i| {
            StatusCode::from_u16(i.scripted)
                .expect("scripted status")
                .into_response()
        })
        .await
    }

    /// Like [`Recorder::start`], the answer made by `handler` from the request and the
    /// scripted status (the status it returns is what is recorded).
    pub async fn start_with(
        default: u16,
        script: &[u16],
        handler: impl Fn(Incoming<'_>) -> Response + Send + Sync + 'static,
    ) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let r = Recorder::new(addr, default, script, Arc::new(handler));
        let app = r.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    /// Like [`Recorder::start`], over TLS with `certs`' server certificate; with
    /// `client_auth`, only clients presenting a certificate of `certs`' CA get through
    /// (a failed handshake is no request). [`Recorder::url`] is still `http://…`:
    /// callers write `https://` themselves.
    pub async fn start_tls(
        default: u16,
        script: &[u16],
        certs: &crate::tls::Certs,
        client_auth: bool,
    ) -> Recorder {
        let listener = crate::tls::TlsListener::bind(certs, client_auth).await;
        let addr = listener.addr;
        let r = Recorder::new(
            addr,
            default,
            script,
            Arc::new(|i: Incoming<'_>| {
                StatusCode::from_u16(i.scripted)
                    .expect("scripted status")
                    .into_response()
            }),
        );
        let app = r.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn new(addr: SocketAddr, default: u16, script: &[u16], handler: Arc<Handler>) -> Recorder {
        Recorder {
            addr,
            received: Default::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            default,
            handler,
            delay: Default::default(),
        }
    }

    fn router(&self) -> axum::Router {
        let me = self.clone();
        axum::Router::new().fallback(
            move |method: http::Method, uri: http::Uri, headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    let delay = *me.delay.lock().expect("delay lock");
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    me.handle(method.as_str(), uri.path(), headers, body)
                }
            },
        )
    }

    fn handle(&self, method: &str, path: &str, headers: HeaderMap, body: Bytes) -> Response {
        let scripted = self
            .script
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or(self.default);
        let response = (self.handler)(Incoming {
            method,
            path,
            headers: &headers,
            body: &body,
            scripted,
        });
        self.received.lock().expect("recorder lock").push(Recorded {
            method: method.to_string(),
            path: path.to_string(),
            headers,
            body,
            status: response.status().as_u16(),
        });
        response
    }

    /// Answers every request `delay` late from now on (a slow endpoint).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().expect("delay lock") = delay;
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().expect("recorder lock").clone()
    }

    /// The requests answered 2xx.
    pub fn delivered(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }
}

/// An Alertmanager-style webhook receiver (payload v4): a [`Recorder`] that
/// answers 200, with the notifications it received by group and status.
pub struct Webhook(pub Recorder);

impl Webhook {
    pub async fn start() -> Webhook {
        Webhook(Recorder::start(200, &[]).await)
    }

    /// The URL to configure in `webhook_configs`.
    pub fn url(&self) -> String {
        format!("{}/hook", self.0.url())
    }

    /// Every notification so far, as JSON.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.0.delivered().iter().map(Recorded::json).collect()
    }

    /// Notifications whose group is `alertname` with overall `status`.
    pub fn count(&self, alertname: &str, status: &str) -> usize {
        self.bodies()
            .iter()
            .filter(|b| b["groupLabels"]["alertname"] == alertname && b["status"] == status)
            .count()
    }

    /// The first notification whose group is `alertname` with overall `status`.
    pub fn find(&self, alertname: &str, status: &str) -> Option<serde_json::Value> {
        self.bodies()
            .into_iter()
            .find(|b| b["groupLabels"]["alertname"] == alertname && b["status"] == status)
    }
}
