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

mod exchange;
mod metrics;
mod tracker;

pub use metrics::{HttpMetrics, ListenerMetrics};

use crate::accept::{TlsListener, TlsPeer};
use crate::server::{Protocol, ServerTls};
use crate::TlsMetrics;
use axum::http::Request;
use exchange::Exchange;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{Reason, Throttle};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tracker::{Registration, Tracker};

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
