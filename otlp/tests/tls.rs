//! Both OTLP servers over mTLS: the sink sees the Subject CN of the client
//! certificate (`ExportContext.client_cn`) and the peer's address; the forwarder's
//! export call reaches the gRPC server through the TLS connector.

use bytes::Bytes;
use edgewatch_config::tls::{ServerTlsConfig, TlsConfig};
use edgewatch_otlp::client::{export, FrameEncoder};
use edgewatch_otlp::server::OtlpListeners;
use edgewatch_otlp::{ExportContext, ExportError, ExportOutcome, MetricsSink};
use edgewatch_testkit::http::tls_client;
use edgewatch_testkit::tls::{Pki, Validity};
use edgewatch_tls::client::TlsConnector;
use edgewatch_tls::server::ServerTls;
use edgewatch_tls::TlsMetrics;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A request's client CN and peer, as the sink was told.
type Sender = (Option<String>, Option<SocketAddr>);

/// What the sink was told about each request's sender.
#[derive(Clone, Default)]
struct Senders(Arc<Mutex<Vec<Sender>>>);

impl MetricsSink for Senders {
    async fn export(&self, _body: Bytes, ctx: ExportContext) -> Result<ExportOutcome, ExportError> {
        self.0.lock().unwrap().push((ctx.client_cn, ctx.peer));
        Ok(ExportOutcome::default())
    }
}

#[tokio::test]
async fn the_sink_sees_the_client_certificate_cn_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let (cert, key) = pki.server("server", &["127.0.0.1"]);
    let (ccert, ckey) = pki.client("client", "edge-a", Validity::Current);
    let metrics = TlsMetrics::register(&prometheus::Registry::new()).unwrap();
    let tls = ServerTls::new(
        &ServerTlsConfig {
            cert_file: cert,
            key_file: key,
            client_ca_file: Some(pki.ca_file()),
        },
        &metrics,
    )
    .unwrap();
    let l = OtlpListeners::bind(
        Some("127.0.0.1:0".parse().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap()
    .with_tls(tls, metrics.clone());
    let (grpc, http) = (l.grpc_addr().unwrap(), l.http_addr().unwrap());
    let sink = Senders::default();
    let stop = CancellationToken::new();
    let served = tokio::spawn(l.serve(sink.clone(), 1 << 20, stop.clone()));

    let client_tls: TlsConfig = edgewatch_config::parse(
        &format!(
            "{{ca_file: {}, cert_file: {}, key_file: {}}}",
            pki.ca_file().display(),
            ccert.display(),
            ckey.display()
        ),
        "test",
    )
    .unwrap();
    let connector = TlsConnector::new(&client_tls, &[b"h2"], &metrics).unwrap();
    let mut channel = tonic::transport::Endpoint::from_shared(format!("https://{grpc}"))
        .unwrap()
        .connect_with_connector_lazy(connector);
    let frame = FrameEncoder::new(1).unwrap().frame(b"").unwrap();
    export(&mut channel, frame, &[], 1 << 20)
        .await
        .expect("gRPC export over mTLS");

    let status = tls_client(&pki.ca_file(), Some((&ccert, &ckey)))
        .post(format!("https://{http}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .expect("HTTP export over mTLS")
        .status();
    assert_eq!(status, 200);

    let seen = sink.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (cn, peer) in seen {
        assert_eq!(cn.as_deref(), Some("edge-a"));
        assert_eq!(peer.map(|p| p.ip()), Some("127.0.0.1".parse().unwrap()));
    }
    stop.cancel();
    served.await.unwrap().unwrap();
}
