//! Slow and silent clients against every server of both roles, with the real binaries:
//! a `/federate` client that never reads is cut off while others are served, and a
//! thousand half-open connections on a listener are closed by the server after the
//! header-read timeout while a real client is still answered. Whether the server
//! closed a connection is read from its file descriptors (`/proc`), never timed.

use edgewatch_testkit::otlp::{export_grpc, gauge, kv, now_nanos, point, post_otlp, request};
use edgewatch_testkit::roles::{Aggregator, Collector, CollectorSpec};
use edgewatch_testkit::sockets::{half_open, open_to, raise_fd_limit};
use edgewatch_testkit::{eventually, get, Metrics};
use edgewatch_tls::serve::HttpLimits;
use prost::Message;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// Connections of each flood: more than any listener's connection limit.
const FLOOD: usize = 1000;

/// Time a server is given, past its own timeout, to close what it should have (a
/// loaded test host is slow; the assertion is that it happens, not how fast).
const SLACK: Duration = Duration::from_secs(30);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One gauge point of `metric` from an SDK-like sender.
fn one_point(metric: &str) -> Vec<u8> {
    request(
        vec![kv("service.name", "slow-clients")],
        None,
        vec![gauge(metric, vec![point(vec![], now_nanos(), 1.0)])],
    )
    .encode_to_vec()
}

/// Waits until process `pid` holds no socket to any of `ports`: the server closed
/// every connection of the flood (the test's ends are still open).
async fn closed_by_server(pid: u32, ports: &HashSet<u16>, within: Duration, what: &str) {
    eventually(within, what, || async { open_to(pid, ports) == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federate_client_that_never_reads_is_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start(BIN, dir.path()).await;
    // ~25 MB of exposition: more than the socket buffers of both ends, hyper's write
    // buffer and the rendered chunks queued behind it hold, so the server's answer
    // really waits on the client.
    let pad = "p".repeat(250);
    for batch in 0..10 {
        let points = (0..8_000)
            .map(|i| {
                point(
                    vec![
                        kv("series", format!("{batch}-{i}")),
                        kv("pad", pad.as_str()),
                    ],
                    now_nanos(),
                    i as f64,
                )
            })
            .collect();
        let body = request(
            vec![kv("service.name", "slow-clients")],
            None,
            vec![gauge("federate_big", points)],
        )
        .encode_to_vec();
        assert_eq!(
            post_otlp(agg.http_otlp, body).await.0,
            200,
            "ingest batch {batch}"
        );
    }

    // A client with a tiny receive window that asks for all of it and never reads.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stuck = sock.connect(addr(agg.http)).await.expect("connect");
    stuck
        .write_all(b"GET /federate?match[]=federate_big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request");
    let ports = HashSet::from([stuck.local_addr().expect("local address").port()]);
    let pid = agg.proc.pid();
    eventually(
        Duration::from_secs(10),
        "the server holds the connection",
        || async { open_to(pid, &ports) == 1 },
    )
    .await;

    // Meanwhile every other client is served, ingest included.
    for i in 0..3 {
        let metric = format!("federate_small_{i}");
        assert_eq!(post_otlp(agg.http_otlp, one_point(&metric)).await.0, 200);
        eventually(Duration::from_secs(10), "a small federate answer", || {
            let agg = &agg;
            let metric = metric.clone();
            async move { agg.federate(&metric).await.contains(&metric) }
        })
        .await;
        let (status, _) = get(&agg.url("/readyz")).await.expect("/readyz");
        assert_eq!(status, 200);
    }

    let limits = HttpLimits::DEFAULT;
    closed_by_server(
        pid,
        &ports,
        limits.request_timeout + limits.response_timeout + SLACK,
        "the server closed the connection of the client that never reads",
    )
    .await;
    drop(stuck);
    // The rendering behind the abandoned answer stopped: the server still answers.
    assert!(agg
        .federate("federate_small_0")
        .await
        .contains("federate_small_0"));
}

/// `FLOOD` half-open connections on `port` of process `pid` (half with `partial`
/// sent); `answered` must succeed meanwhile; then the server must close them all.
async fn survives_flood<F, Fut>(pid: u32, port: u16, partial: &'static [u8], answered: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // The flood tests run at once in this process (their servers are children that
    // inherit the limit).
    let limit = raise_fd_limit();
    assert!(
        limit >= 4 * FLOOD as u64 + 1024,
        "the open-files limit ({limit}) leaves no room for 4 floods of {FLOOD} connections"
    );
    let (conns, ports) = tokio::task::spawn_blocking(move || half_open(addr(port), FLOOD, partial))
        .await
        .expect("flood");
    for _ in 0..3 {
        answered().await;
    }
    closed_by_server(
        pid,
        &ports,
        HttpLimits::DEFAULT.header_read_timeout + SLACK,
        "the server closed every half-open connection",
    )
    .await;
    answered().await;
    drop(conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_to_the_aggregator_web_server_are_closed() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start(BIN, dir.path()).await;
    survives_flood(agg.proc.pid(), agg.http, b"GET /metr", || async {
        let (status, body) = get(&agg.url("/metrics")).await.expect("/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("edgewatch_"), "{body}");
    })
    .await;
    refusals_counted(&agg.metrics().await, "http", HttpLimits::DEFAULT);
}

/// The flood shows in the listener's counters: the connections over its limit closed
/// idle ones, the rest ran out of time for their request head.
fn refusals_counted(m: &Metrics, listener: &str, limits: HttpLimits) {
    let refused = |reason: &str| {
        m.get(&format!(
            r#"edgewatch_http_refused_total{{listener="{listener}",reason="{reason}"}}"#
        ))
    };
    assert!(
        refused("connection_limit") >= (FLOOD - limits.max_connections) as f64,
        "connections closed for new ones"
    );
    assert!(refused("header_timeout") > 0.0, "header timeouts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_to_the_collector_admin_server_are_closed() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = CollectorSpec::new("edge", "edge-a", "node-1", edgewatch_testkit::free_port());
    let col = Collector::start_spec(BIN, dir.path(), &spec).await;
    survives_flood(col.proc.pid(), col.admin, b"GET /hea", || async {
        let (status, _) = get(&col.url("/readyz")).await.expect("/readyz");
        assert_eq!(status, 200);
    })
    .await;
    refusals_counted(&col.metrics().await, "admin", HttpLimits::ADMIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_to_the_otlp_http_receiver_are_closed() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = CollectorSpec::new("edge", "edge-a", "node-1", edgewatch_testkit::free_port());
    let col = Collector::start_spec(BIN, dir.path(), &spec).await;
    survives_flood(col.proc.pid(), col.http, b"POST /v1/met", || async {
        let (status, _) = post_otlp(col.http, one_point("flood_probe")).await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_to_the_otlp_grpc_receiver_are_closed() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start(BIN, dir.path()).await;
    // Half the HTTP/2 connection preface.
    survives_flood(agg.proc.pid(), agg.grpc, b"PRI * HTTP/2.0\r\n", || async {
        let req = request(
            vec![kv("service.name", "slow-clients")],
            None,
            vec![gauge("flood_probe", vec![point(vec![], now_nanos(), 1.0)])],
        );
        assert_eq!(export_grpc(agg.grpc, req, &[]).await, tonic::Code::Ok);
    })
    .await;
}
