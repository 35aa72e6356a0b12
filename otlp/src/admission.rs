//! Admission for the OTLP/gRPC servers: bounds what tonic reads and holds before a
//! sink can refuse anything.
//!
//! tonic reads a unary request's whole body, and decompresses it, before the service
//! sees it; a sink's own in-flight budget only applies after that. With hundreds of
//! collectors draining backlogs at once (each with several batches in flight), the
//! bodies being read and decompressed were the largest part of the core's memory.
//! So a request first waits for a read slot (a few per core); its body stays in
//! HTTP/2 flow control (bounded by the connection window) until it has one. A
//! connection must also show the first bytes of HTTP/2 within a deadline and the
//! number of connections is capped, so half-open connections cannot pile up.

use prometheus::{IntCounterVec, Opts, Registry};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a request waits for a read slot before it is answered
/// RESOURCE_EXHAUSTED (the sender retries after backing off). Short: a waiting
/// request holds its stream's flow-control window, and OTLP senders give up after
/// 10 s by default.
pub const READ_SLOT_WAIT: Duration = Duration::from_secs(2);
/// How long a new connection may take to send the HTTP/2 connection preface (the
/// same deadline as the TLS listeners' [`edgewatch_tls::accept::Preface`]).
pub use edgewatch_tls::accept::PREFACE_TIMEOUT;
/// Connections served at once per gRPC listener: a fleet of a thousand collectors
/// with room to spare; each may buffer up to [`CONNECTION_WINDOW`] unread bytes.
pub const MAX_CONNECTIONS: usize = 4096;
/// HTTP/2 flow-control windows. hyper's defaults are 1 MiB each; half as much still
/// carries 5 MB/s per connection at 100 ms round trip (about 2 M forwarded samples/s)
/// and halves what a stalled connection can make the server buffer.
pub const CONNECTION_WINDOW: u32 = 512 * 1024;
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// The HTTP/2 preface every client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Requests read and decoded at once per server: enough to keep the cores busy
/// decompressing, few enough that their bodies (each up to the request limit,
/// decompressed) stay a small multiple of it.
pub fn read_slots() -> usize {
    (std::thread::available_parallelism().map_or(2, |n| n.get()) * 2).max(4)
}

/// `edgewatch_otlp_grpc_refused_total{reason}`: what admission turned away.
#[derive(Clone)]
pub struct AdmissionMetrics {
    refused: IntCounterVec,
}

impl AdmissionMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let refused = IntCounterVec::new(
            Opts::new(
                "edgewatch_otlp_grpc_refused_total",
                "OTLP/gRPC requests or connections refused before being read: busy = no read \
                 slot in time (RESOURCE_EXHAUSTED), connections = over the connection cap, \
                 preface = no HTTP/2 preface in time.",
            ),
            &["reason"],
        )?;
        for reason in ["busy", "connections", "preface"] {
            refused.with_label_values(&[reason]);
        }
        registry.register(Box::new(refused.clone()))?;
        Ok(AdmissionMetrics { refused })
    }

    /// Metrics no registry sees, for servers built in tests and tools.
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("a fresh registry takes the metric")
    }

    pub(crate) fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}

/// The read slots of one server, shared by all its connections.
#[derive(Clone)]
pub struct ReadSlots {
    slots: Arc<Semaphore>,
    metrics: AdmissionMetrics,
}

impl ReadSlots {
    pub fn new(n: usize, metrics: AdmissionMetrics) -> Self {
        ReadSlots {
            slots: Arc::new(Semaphore::new(n)),
            metrics,
        }
    }

    /// A slot, or `None` after [`READ_SLOT_WAIT`] (counted as `busy`).
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        match tokio::time::timeout(READ_SLOT_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(p),
            _ => {
                self.metrics.refused("busy");
                None
            }
        }
    }
}

/// A plaintext connection admitted to the gRPC server; its slot is freed when the
/// server drops it.
pub struct Admitted {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// Accepts plaintext connections for a gRPC server: TCP_NODELAY (tonic sets it only
/// on connections it accepts itself; without it each small answer waits for the
/// peer's delayed ACK, about 40 ms), at most [`MAX_CONNECTIONS`] at once, and each
/// handed on only once its HTTP/2 preface has arrived. Ends when the server stops
/// taking connections.
pub fn plaintext(
    listener: TcpListener,
    metrics: AdmissionMetrics,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Admitted>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: do not spin, and keep serving.
                    tracing::warn!(error = %e, "accepting an OTLP/gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics.refused("connections");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tx, metrics) = (tx.clone(), metrics.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(PREFACE_TIMEOUT, preface(&stream)).await {
                    Ok(true) => {
                        let _ = tx
                            .send(Ok(Admitted {
                                io: stream,
                                _slot: slot,
                            }))
                            .await;
                    }
                    _ => metrics.refused("preface"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Whether the connection's first bytes are the HTTP/2 preface (peeked, left for
/// the server to read). A client that sends part of it and stalls is caught by the
/// caller's deadline.
async fn preface(stream: &TcpStream) -> bool {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if buf[..n] != PREFACE[..n] => return false,
            Ok(n) if n == PREFACE.len() => return true,
            // Part of it so far: peeking does not consume, so readiness stays set;
            // poll again shortly instead of spinning.
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
