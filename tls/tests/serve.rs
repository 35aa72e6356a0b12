//! `serve_http_with`'s limits against raw TCP clients, with limits small enough to be
//! reached in a test: a body that does not arrive (408), a handler that does not
//! answer (503), requests beyond the limit (503 + Retry-After), connections beyond
//! the limit (the oldest idle one goes), an answer nobody takes (the connection is
//! closed and the body dropped), a silent client (closed after the header timeout);
//! and the HTTP/2 preface deadline of the gRPC listeners.

use axum::routing::{get, post};
use axum::Router;
use edgewatch_testkit::eventually;
use edgewatch_tls::accept::Preface;
use edgewatch_tls::serve::{serve_http_with, HttpLimits};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(15);

/// Limits a test reaches quickly; `f` adjusts them.
fn limits(f: impl FnOnce(&mut HttpLimits)) -> HttpLimits {
    let mut l = HttpLimits {
        max_connections: 8,
        max_requests: 4,
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
    };
    f(&mut l);
    l
}

async fn start(app: Router, limits: HttpLimits) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(serve_http_with(
        tcp,
        None,
        app,
        limits,
        None,
        std::future::pending(),
    ));
    addr
}

/// Sends `request` on a new connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    read_to_close(&mut c).await
}

async fn read_to_close(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, c.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let app = Router::new().route("/in", post(|b: bytes::Bytes| async move { b }));
    let addr = start(app, limits(|_| {})).await;
    let answer = exchange(
        addr,
        "POST /in HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_handler_that_does_not_answer_in_time_gets_503_with_retry_after() {
    let app = Router::new().route("/stuck", get(std::future::pending::<()>));
    let addr = start(app, limits(|_| {})).await;
    let answer = exchange(addr, &get_req("/stuck")).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
}

#[tokio::test]
async fn requests_beyond_the_limit_are_refused_503_with_retry_after() {
    let entered = Arc::new(AtomicBool::new(false));
    let release = Arc::new(Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let app = Router::new()
        .route(
            "/hold",
            get(move || async move {
                e.store(true, Ordering::SeqCst);
                r.notified().await;
                "released"
            }),
        )
        .route("/ok", get(|| async { "ok" }));
    let addr = start(
        app,
        limits(|l| {
            l.max_requests = 1;
            l.request_timeout = Duration::from_secs(60);
        }),
    )
    .await;
    let held = tokio::spawn(async move { exchange(addr, &get_req("/hold")).await });
    eventually(WAIT, "the first request is in its handler", || async {
        entered.load(Ordering::SeqCst)
    })
    .await;
    let answer = exchange(addr, &get_req("/ok")).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    release.notify_one();
    assert!(held.await.unwrap().ends_with("released"));
    let answer = exchange(addr, &get_req("/ok")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn the_oldest_idle_connection_makes_room_for_a_new_one() {
    let app = Router::new().route("/ok", get(|| async { "ok" }));
    let addr = start(
        app,
        limits(|l| {
            l.max_connections = 2;
            l.header_read_timeout = Duration::from_secs(600);
        }),
    )
    .await;
    let mut oldest = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let answer = exchange(addr, &get_req("/ok")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Closed by the server long before its header timeout.
    assert_eq!(read_to_close(&mut oldest).await, "");
}

/// Sets its flag when dropped.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_answer_nobody_takes_ends_with_its_connection() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let app = Router::new().route(
        "/endless",
        get(move || {
            let guard = Dropped(d.clone());
            async move {
                let chunks = std::iter::repeat_with(|| {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![b'x'; 1 << 16]))
                });
                let body = tokio_stream::StreamExt::map(tokio_stream::iter(chunks), move |c| {
                    let _ = &guard;
                    c
                });
                axum::body::Body::from_stream(body)
            }
        }),
    );
    let addr = start(app, limits(|_| {})).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut c = sock.connect(addr).await.unwrap();
    c.write_all(get_req("/endless").as_bytes()).await.unwrap();
    eventually(
        WAIT,
        "the server dropped the answer nobody read",
        || async { dropped.load(Ordering::SeqCst) },
    )
    .await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_header_timeout() {
    let app = Router::new().route("/ok", get(|| async { "ok" }));
    let addr = start(app, limits(|_| {})).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(b"GET /o").await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, "");
    let answer = read_to_close(&mut partial).await;
    assert!(!answer.contains("200"), "{answer}");
}

#[tokio::test]
async fn an_http2_client_must_send_its_preface_in_time() {
    // Nothing sent: reads fail once the deadline passes.
    let (_client, server) = tokio::io::duplex(64);
    let mut conn = Preface::new(server, Duration::from_millis(200));
    let mut buf = [0u8; 64];
    let err = conn.read(&mut buf).await.expect_err("no preface");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

    // The preface sent: the connection is the client's for as long as it likes.
    let (mut client, server) = tokio::io::duplex(64);
    let mut conn = Preface::new(server, Duration::from_millis(200));
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut preface = [0u8; 24];
    conn.read_exact(&mut preface).await.unwrap();
    // Well past the deadline, a read still waits for data instead of failing.
    let idle = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await;
    assert!(idle.is_err(), "still open and waiting: {idle:?}");
}
