//! The TLS crate against real handshakes: reloads while connections stay open,
//! garbage files, mTLS identity, `server_name` as SNI, clients that stall or speak
//! plaintext.

use axum::serve::Listener;
use edgewatch_config::tls::{ServerTlsConfig, TlsConfig};
use edgewatch_testkit::eventually;
use edgewatch_testkit::tls::{Pki, Validity};
use edgewatch_tls::accept::{TlsListener, TlsPeer};
use edgewatch_tls::client::TlsConnector;
use edgewatch_tls::server::{Protocol, ServerTls};
use edgewatch_tls::TlsMetrics;
use prometheus::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);

/// A TLS echo server; every accepted peer is sent to the returned channel.
async fn echo_server(
    tls: ServerTls,
    metrics: &TlsMetrics,
) -> (u16, mpsc::UnboundedReceiver<(TlsPeer, Option<String>)>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let mut listener = TlsListener::new(tcp, tls, Protocol::Http1, "test", metrics).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, addr) = listener.accept().await;
            let sni = stream.get_ref().1.server_name().map(str::to_owned);
            let _ = tx.send((TlsPeer::of(&stream, addr), sni));
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
            });
        }
    });
    (port, rx)
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

async fn connect(
    connector: &mut TlsConnector,
    port: u16,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let uri: http::Uri = format!("https://127.0.0.1:{port}").parse().unwrap();
    let io = tower::Service::call(connector, uri).await?;
    let mut tls = io.into_inner();
    // TLS 1.3 reports a refused client certificate on the first read.
    tls.write_all(b"ping").await?;
    tls.flush().await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(tls)
}

fn reloads(r: &Registry, outcome: &str) -> u64 {
    metric_value(r, "edgewatch_tls_reloads_total", outcome)
}

/// The counter `name` with a label of value `label`.
fn metric_value(registry: &Registry, name: &str, label: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn client_tls(pki: &Pki, cert: &Path, key: &Path, server_name: Option<&str>) -> TlsConfig {
    edgewatch_config::parse(
        &format!(
            "{{ca_file: {}, cert_file: {}, key_file: {}{}}}",
            pki.ca_file().display(),
            cert.display(),
            key.display(),
            server_name
                .map(|n| format!(", server_name: {n}"))
                .unwrap_or_default()
        ),
        "test",
    )
    .unwrap()
}

#[tokio::test]
async fn rotation_is_picked_up_open_connections_stay_and_garbage_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let (cert, key) = pki.server("server", &["127.0.0.1"]);
    let (ccert, ckey) = pki.client("client", "edge-a", Validity::Current);
    let registry = Registry::new();
    let metrics = TlsMetrics::register(&registry).unwrap();
    let server = ServerTls::new(
        &ServerTlsConfig {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_file: Some(pki.ca_file()),
        },
        &metrics,
    )
    .unwrap();
    let (port, _peers) = echo_server(server, &metrics).await;
    let mut connector =
        TlsConnector::new(&client_tls(&pki, &ccert, &ckey, None), &[], &metrics).unwrap();
    let mut open = connect(&mut connector, port).await.unwrap();
    let first = der(&cert);
    assert_eq!(open.get_ref().1.peer_certificates().unwrap()[0], first);

    pki.server("server", &["127.0.0.1"]);
    let second = der(&cert);
    assert_ne!(first, second);
    eventually(WAIT, "new connections get the new certificate", || async {
        let c = connect(&mut connector.clone(), port).await.unwrap();
        c.get_ref().1.peer_certificates().unwrap()[0] == second
    })
    .await;
    assert!(reloads(&registry, "success") >= 1);
    // The connection made before the rotation still works.
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    std::fs::write(&cert, "garbage\n").unwrap();
    eventually(WAIT, "the garbage is counted", || async {
        reloads(&registry, "failure") >= 1
    })
    .await;
    let c = connect(&mut connector, port).await.unwrap();
    assert_eq!(c.get_ref().1.peer_certificates().unwrap()[0], second);
}

#[tokio::test]
async fn client_cn_server_name_as_sni_and_a_rotated_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    // Valid for core.example only, not for the 127.0.0.1 the client dials.
    let (cert, key) = pki.server("server", &["core.example"]);
    let (ccert, ckey) = pki.client("client", "edge-a", Validity::Current);
    let registry = Registry::new();
    let metrics = TlsMetrics::register(&registry).unwrap();
    let server = ServerTls::new(
        &ServerTlsConfig {
            cert_file: cert,
            key_file: key,
            client_ca_file: Some(pki.ca_file()),
        },
        &metrics,
    )
    .unwrap();
    let (port, mut peers) = echo_server(server, &metrics).await;

    let mut unnamed =
        TlsConnector::new(&client_tls(&pki, &ccert, &ckey, None), &[], &metrics).unwrap();
    assert!(
        connect(&mut unnamed, port).await.is_err(),
        "not valid for 127.0.0.1"
    );
    let _ = peers.try_recv();

    let named = client_tls(&pki, &ccert, &ckey, Some("core.example"));
    let mut connector = TlsConnector::new(&named, &[], &metrics).unwrap();
    connect(&mut connector, port).await.unwrap();
    let (peer, sni) = peers.recv().await.unwrap();
    assert_eq!(peer.client_cn.as_deref(), Some("edge-a"));
    assert_eq!(
        sni.as_deref(),
        Some("core.example"),
        "server_name is sent as SNI"
    );

    // A new client certificate is used by the next connection.
    pki.client("client", "edge-b", Validity::Current);
    let peers = std::sync::Mutex::new(peers);
    eventually(
        WAIT,
        "the next connection presents the new certificate",
        || async {
            connect(&mut connector.clone(), port).await.unwrap();
            let mut cn = None;
            while let Ok((p, _)) = peers.lock().unwrap().try_recv() {
                cn = p.client_cn;
            }
            cn.as_deref() == Some("edge-b")
        },
    )
    .await;
}

#[tokio::test]
async fn silent_and_plaintext_clients_do_not_stall_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let (cert, key) = pki.server("server", &["127.0.0.1"]);
    let (ccert, ckey) = pki.client("client", "edge-a", Validity::Current);
    let registry = Registry::new();
    let metrics = TlsMetrics::register(&registry).unwrap();
    let server = ServerTls::new(
        &ServerTlsConfig {
            cert_file: cert,
            key_file: key,
            client_ca_file: None,
        },
        &metrics,
    )
    .unwrap();
    let (port, _peers) = echo_server(server, &metrics).await;
    let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain
        .write_all(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    // The server closes the connection (after a TLS alert at most).
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut rest))
        .await
        .expect("the plaintext connection is closed");
    assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1"));
    let mut connector =
        TlsConnector::new(&client_tls(&pki, &ccert, &ckey, None), &[], &metrics).unwrap();
    connect(&mut connector, port)
        .await
        .expect("a TLS client still gets through");
    eventually(WAIT, "the plaintext client is counted", || async {
        metric_value(&registry, "edgewatch_tls_handshake_failures_total", "test") >= 1
    })
    .await;
}
