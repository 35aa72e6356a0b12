//! Serving an axum router over HTTP/1.1 (plain TCP or TLS) with every resource a
//! client can hold bounded: time to send a request head, time to send the rest of a
//! request and get an answer, time to take the answer, requests at once, and open
//! connections. axum's own `serve` has none of these (hyper enforces no header
//! timeout without a timer, and axum sets none), so connections are served here with
//! hyper's HTTP/1 builder directly.
//!
//! Only HTTP/1.1 is spoken: the TLS listeners offer only `http/1.1` in ALPN, and
//! hyper's HTTP/1-or-2 detection would wait for a silent client's first bytes
//! without a deadline.

use crate::accept::{TlsListener, TlsPeer};
use crate::server::{Protocol, ServerTls};
use crate::TlsMetrics;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

/// What one HTTP listener allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections; beyond it the oldest connection without a request in
    /// progress is closed for the new one, and when every connection has one, the
    /// listener stops accepting until one ends.
    pub max_connections: usize,
    /// Requests handled at once; beyond it a request is answered 503 with
    /// `Retry-After` at once (see [`HttpLimits::DEFAULT`] for why not queued).
    pub max_requests: usize,
    /// From the connection (or the end of the previous answer) to a complete
    /// request head. This is also how long an idle keep-alive connection stays
    /// open: hyper runs the same timer while it waits for the next request.
    pub header_read_timeout: Duration,
    /// From the request head to the answer's head, reading the body included:
    /// 408 if the body had not arrived by then, else 503 with `Retry-After`.
    pub request_timeout: Duration,
    /// From the answer's head to its last byte handed to the socket; past it the
    /// connection is closed (a client that does not read holds nothing longer).
    pub response_timeout: Duration,
}

impl HttpLimits {
    /// Every listener but the collector's admin server.
    ///
    /// - 512 connections: an idle HTTP/1 connection costs a socket and hyper's
    ///   buffers (~16 KiB); 512 is ~8 MiB and far more senders than one listener
    ///   serves at once, and past it new clients still get in (idle ones go).
    /// - 128 requests at once: each may hold a request body (up to the OTLP limit)
    ///   or a `/federate` render; a client refused with 503 + `Retry-After`
    ///   retries (OTLP exporters, Prometheus, the fleet page all do), while a queue
    ///   would hold connections and memory exactly when the server is saturated.
    /// - 10 s for a request head: a few hundred bytes; a client that has not sent
    ///   them in 10 s is gone or hostile (Go's servers are commonly set the same).
    /// - 30 s to answer: OTLP exporters give up after 10 s by default, Prometheus
    ///   after its scrape timeout (10 s by default); 30 s still lets a 4 MiB body
    ///   arrive over a ~1 Mbit/s link.
    /// - 30 s to take the answer: a `/federate` answer not taken in 30 s is past
    ///   any scrape timeout, and meanwhile it holds a rendering thread and memory.
    pub const DEFAULT: HttpLimits = HttpLimits {
        max_connections: 512,
        max_requests: 128,
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        response_timeout: Duration::from_secs(30),
    };

    /// The collector's admin server (`/metrics`, probes): a kubelet and a scraper or
    /// two, on a node where memory is tight.
    pub const ADMIN: HttpLimits = HttpLimits {
        max_connections: 64,
        max_requests: 16,
        ..HttpLimits::DEFAULT
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::DEFAULT
    }
}

/// Serves `app` on `tcp` with [`HttpLimits::DEFAULT`], over TLS when `tls` is given,
/// until `shutdown`. Handlers find `ConnectInfo<SocketAddr>` either way, and
/// `ConnectInfo<TlsPeer>` over TLS.
pub async fn serve_http(
    tcp: tokio::net::TcpListener,
    tls: Option<(ServerTls, &'static str, TlsMetrics)>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_http_with(tcp, tls, app, HttpLimits::DEFAULT, None, shutdown).await
}

/// [`serve_http`] with its own limits, counting what they refuse in `metrics` (a
/// listener's series, [`HttpMetrics::listener`]). On `shutdown` the listener closes,
/// idle connections close, and requests in progress finish (within the limits).
pub async fn serve_http_with(
    tcp: tokio::net::TcpListener,
    tls: Option<(ServerTls, &'static str, TlsMetrics)>,
    app: axum::Router,
    limits: HttpLimits,
    metrics: Option<ListenerMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let name = metrics
        .as_ref()
        .map(|m| m.name)
        .or(tls.as_ref().map(|t| t.1))
        .unwrap_or("http");
    let local = tcp.local_addr()?;
    let server = Arc::new(Server {
        app,
        limits,
        requests: Arc::new(Semaphore::new(limits.max_requests)),
        conns: Tracker::new(limits.max_connections),
        warn: Throttle::new(local, name),
        metrics,
    });
    match tls {
        None => {
            let peer = |s: &tokio::net::TcpStream, _: SocketAddr| {
                // As on TLS connections: answers go out without waiting for an ACK.
                let _ = s.set_nodelay(true);
                None
            };
            accept_loop(tcp, peer, server, shutdown).await
        }
        Some((tls, name, metrics)) => {
            let listener = TlsListener::new(tcp, tls, Protocol::Http1, name, &metrics)?;
            let peer = |s: &_, addr| Some(TlsPeer::of(s, addr));
            accept_loop(listener, peer, server, shutdown).await
        }
    }
    Ok(())
}

/// One listener's state, shared by its connections.
struct Server {
    app: axum::Router,
    limits: HttpLimits,
    requests: Arc<Semaphore>,
    conns: Tracker,
    warn: Throttle,
    metrics: Option<ListenerMetrics>,
}

impl Server {
    /// Counts a refusal and logs it (throttled).
    fn refused(&self, peer: SocketAddr, reason: Reason) {
        if let Some(m) = &self.metrics {
            m.refused[reason as usize].inc();
        }
        self.warn.event(peer, reason.message());
    }
}

/// Why a listener refused a request or closed a connection.
#[derive(Debug, Clone, Copy)]
enum Reason {
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

    fn message(self) -> &'static str {
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
    name: &'static str,
    refused: [prometheus::IntCounter; 6],
    open: prometheus::IntGauge,
}

async fn accept_loop<L>(
    mut listener: L,
    peer: fn(&L::Io, SocketAddr) -> Option<TlsPeer>,
    server: Arc<Server>,
    shutdown: impl Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        // The listener's `accept` waits out errors such as running out of file
        // descriptors itself.
        let (io, addr) = tokio::select! {
            _ = &mut shutdown => break,
            c = listener.accept() => c,
        };
        let tls_peer = peer(&io, addr);
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = server.conns.admit(&server.warn) => s,
        };
        let conn = Connection {
            server: server.clone(),
            slot,
            addr,
            tls_peer,
        };
        tokio::spawn(conn.serve(io, stop_rx.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    server.conns.drained().await;
}

/// One accepted connection.
struct Connection {
    server: Arc<Server>,
    slot: Registration,
    addr: SocketAddr,
    tls_peer: Option<TlsPeer>,
}

impl Connection {
    async fn serve<Io>(self, io: Io, mut stop: watch::Receiver<bool>)
    where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (deadline_tx, mut deadline_rx) = watch::channel(None);
        if let Some(m) = &self.server.metrics {
            m.open.inc();
        }
        let slot = self.slot.slot.clone();
        let evicted = slot.evict.clone();
        let ctx = Arc::new(Exchange {
            server: self.server.clone(),
            slot,
            deadline: deadline_tx,
            addr: self.addr,
            tls_peer: self.tls_peer,
        });
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(ctx.handle(req).await) }
        });
        let limits = &self.server.limits;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let mut conn = pin!(builder.serve_connection(TokioIo::new(io), svc));
        let mut overdue = pin!(overdue(&mut deadline_rx));
        let mut stopping = *stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    match r {
                        Err(e) if e.is_timeout() => {
                            self.server.refused(self.addr, Reason::HeaderTimeout);
                        }
                        // Resets, malformed requests: the client's problem, not worth
                        // more than debug.
                        Err(e) => tracing::debug!(peer = %self.addr, error = %e, "HTTP connection ended"),
                        Ok(()) => {}
                    }
                    break;
                }
                _ = evicted.notified() => {
                    self.server.refused(self.addr, Reason::ConnectionLimit);
                    break;
                }
                _ = &mut overdue => {
                    self.server.refused(self.addr, Reason::ResponseTimeout);
                    break;
                }
                r = stop.changed(), if !stopping => {
                    stopping = true;
                    if r.is_err() || *stop.borrow() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        drop(self.slot);
        if let Some(m) = &self.server.metrics {
            m.open.dec();
        }
    }
}

/// Resolves once a deadline set in `rx` passes (it may be moved or cleared meanwhile).
async fn overdue(rx: &mut watch::Receiver<Option<tokio::time::Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        let changed = match deadline {
            Some(d) => tokio::select! {
                _ = tokio::time::sleep_until(d) => return,
                r = rx.changed() => r,
            },
            None => rx.changed().await,
        };
        if changed.is_err() {
            // The connection's service is gone: no deadline can be set any more.
            std::future::pending::<()>().await;
        }
    }
}

/// What a connection's requests share.
struct Exchange {
    server: Arc<Server>,
    slot: Arc<Slot>,
    deadline: watch::Sender<Option<tokio::time::Instant>>,
    addr: SocketAddr,
    tls_peer: Option<TlsPeer>,
}

impl Exchange {
    async fn handle(&self, req: Request<Incoming>) -> Response<axum::body::Body> {
        let limits = &self.server.limits;
        let Ok(permit) = self.server.requests.clone().try_acquire_owned() else {
            self.server.refused(self.addr, Reason::Busy);
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many requests at once (limit {}); retry later\n",
                    limits.max_requests
                ),
            );
        };
        let busy = Busy::new(self.slot.clone(), permit, self.deadline.clone());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.addr));
        if let Some(p) = &self.tls_peer {
            parts.extensions.insert(ConnectInfo(p.clone()));
        }
        let received = Arc::new(AtomicBool::new(body.is_end_stream()));
        let body = Received {
            inner: body,
            done: received.clone(),
        };
        let req = Request::from_parts(parts, axum::body::Body::new(body));
        let call = tower::Service::call(&mut self.server.app.clone(), req);
        let resp = match tokio::time::timeout(limits.request_timeout, call).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(never)) => match never {},
            Err(_) if !received.load(Ordering::Acquire) => {
                self.server.refused(self.addr, Reason::RequestTimeout);
                let mut r = refused(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request was not received within {} s\n",
                        limits.request_timeout.as_secs()
                    ),
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            Err(_) => {
                self.server.refused(self.addr, Reason::AnswerTimeout);
                refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "no answer within {} s; retry later\n",
                        limits.request_timeout.as_secs()
                    ),
                )
            }
        };
        let _ = self
            .deadline
            .send_replace(Some(tokio::time::Instant::now() + limits.response_timeout));
        resp.map(|inner| axum::body::Body::new(Guarded { inner, _busy: busy }))
    }
}

/// A 503/408 of this layer; 503s say when to retry.
fn refused(status: StatusCode, msg: String) -> Response<axum::body::Body> {
    let mut r = Response::new(axum::body::Body::from(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// A request in progress on a connection, from its head to the end of its answer:
/// holds a request permit, keeps the connection from being closed for a new one,
/// and clears the response deadline when it ends.
struct Busy {
    slot: Arc<Slot>,
    _permit: OwnedSemaphorePermit,
    deadline: watch::Sender<Option<tokio::time::Instant>>,
}

impl Busy {
    fn new(
        slot: Arc<Slot>,
        permit: OwnedSemaphorePermit,
        deadline: watch::Sender<Option<tokio::time::Instant>>,
    ) -> Busy {
        slot.busy.store(true, Ordering::Release);
        Busy {
            slot,
            _permit: permit,
            deadline,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot.busy.store(false, Ordering::Release);
        let _ = self.deadline.send_replace(None);
    }
}

/// A request body that notes when it has been read to its end.
struct Received {
    inner: Incoming,
    done: Arc<AtomicBool>,
}

impl HttpBody for Received {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that ends its request's [`Busy`] when it is done (or dropped
/// because the connection closed).
struct Guarded {
    inner: axum::body::Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The open connections of a listener, oldest first.
struct Tracker {
    max: usize,
    next_id: AtomicU64,
    open: Arc<Mutex<BTreeMap<u64, Arc<Slot>>>>,
    /// Signalled when a connection ends.
    freed: Arc<Notify>,
}

/// One open connection as the tracker sees it.
struct Slot {
    /// A request is in progress (head read, answer not yet fully written).
    busy: AtomicBool,
    /// Told to close, to make room for a new connection.
    evict: Arc<Notify>,
}

/// Removes its connection from the tracker when dropped.
struct Registration {
    id: u64,
    slot: Arc<Slot>,
    open: Arc<Mutex<BTreeMap<u64, Arc<Slot>>>>,
    freed: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.id);
        self.freed.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tracker {
    fn new(max: usize) -> Tracker {
        Tracker {
            max: max.max(1),
            next_id: AtomicU64::new(0),
            open: Arc::new(Mutex::new(BTreeMap::new())),
            freed: Arc::new(Notify::new()),
        }
    }

    /// Registers a new connection: at once while there is room, else by closing the
    /// oldest idle connection, else once a connection ends.
    async fn admit(&self, warn: &Throttle) -> Registration {
        loop {
            let freed = self.freed.notified();
            {
                let mut open = lock(&self.open);
                if open.len() >= self.max {
                    let idle = open
                        .iter()
                        .find(|(_, s)| !s.busy.load(Ordering::Acquire))
                        .map(|(id, _)| *id);
                    if let Some(slot) = idle.and_then(|id| open.remove(&id)) {
                        slot.evict.notify_one();
                    }
                }
                if open.len() < self.max {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let slot = Arc::new(Slot {
                        busy: AtomicBool::new(false),
                        evict: Arc::new(Notify::new()),
                    });
                    open.insert(id, slot.clone());
                    return Registration {
                        id,
                        slot,
                        open: self.open.clone(),
                        freed: self.freed.clone(),
                    };
                }
            }
            warn.event(
                warn.local,
                "every connection has a request in progress: not accepting until one ends",
            );
            freed.await;
        }
    }

    /// Resolves once every connection has ended.
    async fn drained(&self) {
        loop {
            let freed = self.freed.notified();
            if lock(&self.open).is_empty() {
                return;
            }
            freed.await;
        }
    }
}

/// At most one warning per listener this often, the rest at debug: a flood must not
/// flood the log too.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Throttle {
    local: SocketAddr,
    name: &'static str,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    fn new(local: SocketAddr, name: &'static str) -> Throttle {
        Throttle {
            local,
            name,
            last: Mutex::new(None),
        }
    }

    fn event(&self, peer: SocketAddr, what: &str) {
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
