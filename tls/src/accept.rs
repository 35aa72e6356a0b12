//! TLS accept loops. Handshakes run in their own tasks with a deadline, so a client
//! that connects and says nothing (or speaks plaintext) neither blocks nor brings
//! down the listener; it is logged with its address and counted.

use crate::server::{Protocol, ServerTls};
use crate::TlsMetrics;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;

pub use crate::serve::{serve_http, serve_http_with, HttpLimits};

/// A handshake not done by then is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// Handshaken connections the server has not taken yet.
const READY_QUEUE: usize = 64;
/// At most one warning per listener this often; the rest go to debug (a port
/// scanner must not flood the log). Every failure is counted.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A TLS connection's peer: its address and, on an mTLS listener, the Subject CN
/// of the client certificate that was verified (axum's `ConnectInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    pub addr: SocketAddr,
    pub client_cn: Option<String>,
}

impl TlsPeer {
    pub fn of(stream: &TlsStream<TcpStream>, addr: SocketAddr) -> TlsPeer {
        let (_, session) = stream.get_ref();
        TlsPeer {
            addr,
            client_cn: crate::identity::chain_cn(session.peer_certificates()),
        }
    }
}

/// Connections whose handshake succeeded, in the order they completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TlsListener {
    /// Starts accepting on `tcp`; `name` labels logs and
    /// `edgewatch_tls_handshake_failures_total`. Within a tokio runtime.
    pub fn new(
        tcp: TcpListener,
        tls: ServerTls,
        protocol: Protocol,
        name: &'static str,
        metrics: &TlsMetrics,
    ) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let failures = Failures {
            name,
            counter: metrics.handshake_failures.with_label_values(&[name]),
            last_warn: Arc::new(Mutex::new(None)),
        };
        let accept = tokio::spawn(accept_loop(tcp, tls, protocol, tx, failures));
        Ok(TlsListener {
            ready,
            local,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: ServerTls,
    protocol: Protocol,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    failures: Failures,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = tx.closed() => return,
            r = tcp.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(listener = failures.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tls.acceptor(protocol);
        let tx = tx.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let _ = tx.send((s, peer)).await;
                }
                Ok(Err(e)) => failures.record(peer, &e.to_string()),
                Err(_) => failures.record(peer, "handshake timed out"),
            }
        });
    }
}

#[derive(Clone)]
struct Failures {
    name: &'static str,
    counter: prometheus::IntCounter,
    last_warn: Arc<Mutex<Option<Instant>>>,
}

impl Failures {
    fn record(&self, peer: SocketAddr, error: &str) {
        self.counter.inc();
        let warn = match self.last_warn.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => true,
        };
        // A plaintext client shows up as a record that is not TLS.
        if warn {
            tracing::warn!(listener = self.name, %peer, error, "TLS handshake failed (plaintext client, unknown or invalid certificate?); connection closed");
        } else {
            tracing::debug!(listener = self.name, %peer, error, "TLS handshake failed");
        }
    }
}

/// For tonic's `serve_with_incoming*`.
impl tokio_stream::Stream for TlsListener {
    type Item = io::Result<TlsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready
            .poll_recv(cx)
            .map(|c| c.map(|(s, addr)| Ok(TlsConn::new(s, addr))))
    }
}

/// A TLS connection for tonic: each request's extensions carry its [`TlsPeer`]
/// (tonic's own `TlsConnectInfo` comes only with tonic's TLS client, whose
/// connector refuses the `https://` endpoints edgewatch-tls connects itself).
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl TlsConn {
    fn new(stream: TlsStream<TcpStream>, addr: SocketAddr) -> TlsConn {
        let peer = TlsPeer::of(&stream, addr);
        TlsConn { stream, peer }
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended (it only does when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        TlsPeer::of(stream.io(), *stream.remote_addr())
    }
}

/// How long an HTTP/2 (gRPC) client has, once connected (and past TLS), to send the
/// connection preface: hyper's HTTP/2 handshake waits for it without a deadline, so
/// a client that connects and says nothing would hold its connection for good.
/// As long as the HTTP/1 header-read timeout (`serve::HttpLimits::DEFAULT`).
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's first bytes of an HTTP/2 connection (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;

/// A connection whose client must send its first [`PREFACE_LEN`] bytes (the HTTP/2
/// preface) within a deadline, else reads fail with `TimedOut` and the server ends
/// it; afterwards it is the connection itself. For tonic's `serve_with_incoming*`:
/// `incoming.map(|c| c.map(|c| Preface::new(c, PREFACE_TIMEOUT)))`.
pub struct Preface<S> {
    inner: S,
    /// Preface bytes still to come.
    missing: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Preface<S> {
    /// Within a tokio runtime (the deadline is a tokio timer).
    pub fn new(inner: S, timeout: Duration) -> Preface<S> {
        Preface {
            inner,
            missing: PREFACE_LEN,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Preface<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Preface<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let got = buf.filled().len() - before;
                self.missing = self.missing.saturating_sub(got);
                if self.missing == 0 {
                    self.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the deadline",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Preface<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
