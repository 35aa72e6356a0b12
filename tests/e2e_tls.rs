//! TLS between edge and core, with the real binaries: mTLS forwarding, refused client
//! certificates, certificate rotation while a collector keeps sending, TLS/plaintext
//! mismatches, a real Prometheus scraping `/federate` over HTTPS with basic auth, the OpenTelemetry
//! Python SDK exporting to a TLS receiver, the collector's admin server over TLS.

use edgewatch_testkit::http::tls_client;
use edgewatch_testkit::otlp::{gauge_request, post_otlp};
use edgewatch_testkit::peers::{otel_python, Prometheus};
use edgewatch_testkit::roles::{Aggregator, AggregatorSpec, Collector, CollectorSpec};
use edgewatch_testkit::tls::{Pki, Validity};
use edgewatch_testkit::{always_for, eventually};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const WAIT: Duration = Duration::from_secs(30);

/// A core CA, and the core's server certificate for localhost and 127.0.0.1.
struct Core {
    pki: Pki,
    cert: PathBuf,
    key: PathBuf,
}

impl Core {
    fn new(dir: &Path) -> Core {
        let pki = Pki::new(dir, "core-ca");
        let (cert, key) = pki.server("core", &["localhost", "127.0.0.1"]);
        Core { pki, cert, key }
    }

    /// A `tls:` flow mapping of the server side, with mTLS.
    fn server_tls(&self) -> String {
        format!(
            "{{cert_file: {}, key_file: {}, client_ca_file: {}}}",
            self.cert.display(),
            self.key.display(),
            self.pki.ca_file().display()
        )
    }

    async fn aggregator(&self, dir: &Path) -> Aggregator {
        let otlp = format!("    tls: {}\n", self.server_tls());
        let spec = AggregatorSpec {
            otlp_extra: &otlp,
            ..AggregatorSpec::default()
        };
        Aggregator::start_spec(BIN, dir, &spec).await
    }
}

/// A collector of cluster edge-a forwarding over mTLS with the client certificate
/// files given.
async fn tls_collector(
    dir: &Path,
    name: &str,
    core: &Core,
    agg: u16,
    cert: &Path,
    key: &Path,
) -> Collector {
    tls_collector_of(dir, name, "edge-a", core, agg, cert, key).await
}

/// A collector stamping `cluster` on its points, forwarding over mTLS.
async fn tls_collector_of(
    dir: &Path,
    name: &str,
    cluster: &str,
    core: &Core,
    agg: u16,
    cert: &Path,
    key: &Path,
) -> Collector {
    let forward = format!(
        "  tls: {{ca_file: {}, cert_file: {}, key_file: {}, server_name: localhost}}\n",
        core.pki.ca_file().display(),
        cert.display(),
        key.display()
    );
    let spec = CollectorSpec {
        forward_extra: &forward,
        forward_scheme: "https",
        ..CollectorSpec::new(name, cluster, "node-1", agg)
    };
    Collector::start_spec(BIN, dir, &spec).await
}

/// Series of `metric` the aggregator serves.
async fn federated(agg: &Aggregator, metric: &str) -> usize {
    agg.federate(metric)
        .await
        .lines()
        .filter(|l| l.starts_with(metric))
        .count()
}

/// POSTs an OTLP request to the aggregator's TLS HTTP receiver with `client`.
async fn post_tls(client: &reqwest::Client, port: u16, body: Vec<u8>) -> Result<u16, String> {
    client
        .post(format!("https://127.0.0.1:{port}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_forwarding_survives_certificate_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(dir.path());
    let mut agg = core.aggregator(dir.path()).await;
    let (cert, key) = core.pki.client("edge-a", "edge-a", Validity::Current);
    let mut col = tls_collector(dir.path(), "edge-a", &core, agg.grpc, &cert, &key).await;

    assert_eq!(
        post_otlp(col.http, gauge_request("tls_probe", "a", 5))
            .await
            .0,
        200
    );
    eventually(WAIT, "points over mTLS at the core", || async {
        federated(&agg, "tls_probe").await == 5
    })
    .await;

    // The collector keeps sending while both sides' certificates are replaced.
    let sender = {
        let port = col.http;
        tokio::spawn(async move {
            for i in 0..40 {
                let body = gauge_request("tls_rotation", &format!("b{i}"), 2);
                assert_eq!(post_otlp(port, body).await.0, 200, "batch {i}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    core.pki.server("core", &["localhost", "127.0.0.1"]);
    core.pki.client("edge-a", "edge-a", Validity::Current);
    let reloads = r#"edgewatch_tls_reloads_total{outcome="success"}"#;
    eventually(WAIT, "the core reloads its certificate", || async {
        agg.metrics().await.get(reloads) >= 1.0
    })
    .await;
    eventually(
        WAIT,
        "the collector reloads its client certificate",
        || async { col.metrics().await.get(reloads) >= 1.0 },
    )
    .await;
    sender.await.unwrap();
    eventually(WAIT, "no point lost across the rotation", || async {
        federated(&agg, "tls_rotation").await == 80
    })
    .await;

    // Garbage over the certificate: counted, and the old one is still served.
    std::fs::write(&core.cert, "not a certificate\n").unwrap();
    let failures = r#"edgewatch_tls_reloads_total{outcome="failure"}"#;
    eventually(WAIT, "the garbage certificate is counted", || async {
        agg.metrics().await.get(failures) >= 1.0
    })
    .await;
    let direct = tls_client(&core.pki.ca_file(), Some((&cert, &key)));
    assert_eq!(
        post_tls(
            &direct,
            agg.http_otlp,
            gauge_request("tls_after_garbage", "g", 1)
        )
        .await,
        Ok(200),
        "a new connection still gets the previous certificate"
    );
    assert_eq!(
        post_otlp(col.http, gauge_request("tls_after_garbage", "c", 1))
            .await
            .0,
        200
    );
    eventually(WAIT, "forwarding goes on", || async {
        federated(&agg, "tls_after_garbage").await == 2
    })
    .await;
    col.proc.stop();
    agg.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_decides_the_cluster_whatever_the_points_claim() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(dir.path());
    let mut agg = core.aggregator(dir.path()).await;
    // The certificate says edge-a; the collector stamps edge-b on every point.
    let (cert, key) = core.pki.client("edge-a", "edge-a", Validity::Current);
    let mut col =
        tls_collector_of(dir.path(), "liar", "edge-b", &core, agg.grpc, &cert, &key).await;
    assert_eq!(
        post_otlp(col.http, gauge_request("mtls_identity", "a", 3))
            .await
            .0,
        200
    );
    eventually(WAIT, "points at the core", || async {
        federated(&agg, "mtls_identity").await == 3
    })
    .await;
    let text = agg.federate("mtls_identity").await;
    for s in edgewatch_testkit::parse_samples(&text) {
        assert_eq!(s.label("cluster"), "edge-a", "{text}");
    }
    let m = agg.metrics().await;
    assert!(m.get(r#"edgewatch_identity_overrides_total{cluster="edge-a"}"#) >= 1.0);
    col.proc.stop();
    agg.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_certificates_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(dir.path());
    let mut agg = core.aggregator(dir.path()).await;
    let ca = core.pki.ca_file();
    let other = Pki::new(dir.path(), "other-ca");
    let cases = [
        (
            "expired",
            core.pki.client("expired", "edge-a", Validity::Expired),
        ),
        (
            "not-yet-valid",
            core.pki.client("future", "edge-a", Validity::NotYetValid),
        ),
        (
            "wrongly-signed",
            other.client("forged", "edge-a", Validity::Current),
        ),
    ];
    for (what, (cert, key)) in &cases {
        let client = tls_client(&ca, Some((cert, key)));
        let r = post_tls(
            &client,
            agg.http_otlp,
            gauge_request("tls_refused", what, 1),
        )
        .await;
        assert!(r.is_err(), "{what}: refused at the handshake, got {r:?}");
    }
    let anonymous = tls_client(&ca, None);
    let r = post_tls(
        &anonymous,
        agg.http_otlp,
        gauge_request("tls_refused", "none", 1),
    )
    .await;
    assert!(r.is_err(), "no client certificate: refused, got {r:?}");

    // Over gRPC: a collector with a forged certificate never delivers.
    let (forged_cert, forged_key) = other.client("forged", "edge-a", Validity::Current);
    let mut col = tls_collector(
        dir.path(),
        "forged",
        &core,
        agg.grpc,
        &forged_cert,
        &forged_key,
    )
    .await;
    assert_eq!(
        post_otlp(col.http, gauge_request("tls_refused", "grpc", 1))
            .await
            .0,
        200
    );
    eventually(WAIT, "the forged collector retries", || async {
        col.metrics().await.get("edgewatch_forward_retries_total") >= 2.0
    })
    .await;
    assert_eq!(
        col.metrics()
            .await
            .get("edgewatch_forward_sent_points_total"),
        0.0
    );
    let m = agg.metrics().await;
    assert!(m.get(r#"edgewatch_tls_handshake_failures_total{listener="otlp_http"}"#) >= 4.0);
    assert!(m.get(r#"edgewatch_tls_handshake_failures_total{listener="otlp_grpc"}"#) >= 1.0);
    assert_eq!(federated(&agg, "tls_refused").await, 0, "nothing stored");

    // The core keeps serving the right ones.
    let (cert, key) = core.pki.client("edge-a", "edge-a", Validity::Current);
    let good = tls_client(&ca, Some((&cert, &key)));
    assert_eq!(
        post_tls(&good, agg.http_otlp, gauge_request("tls_ok", "x", 1)).await,
        Ok(200)
    );
    assert_eq!(federated(&agg, "tls_ok").await, 1);
    col.proc.stop();
    agg.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_mismatches_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(dir.path());
    let tls_dir = dir.path().join("tls-core");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let mut tls_agg = core.aggregator(&tls_dir).await;

    // Plaintext to the TLS ports: an error for the client, a log line and a count
    // at the core, which goes on serving.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/metrics", tls_agg.http_otlp))
        .header("content-type", "application/x-protobuf")
        .body(gauge_request("tls_plain", "p", 1))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let plain_grpc =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", tls_agg.grpc))
            .unwrap()
            .connect()
            .await;
    if let Ok(channel) = plain_grpc {
        let mut client = opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient::new(channel);
        let req: opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest =
            prost::Message::decode(gauge_request("tls_plain", "g", 1).as_slice()).unwrap();
        assert!(
            client.export(req).await.is_err(),
            "plaintext gRPC to a TLS port"
        );
    }
    eventually(WAIT, "plaintext attempts counted", || async {
        tls_agg
            .metrics()
            .await
            .get(r#"edgewatch_tls_handshake_failures_total{listener="otlp_http"}"#)
            >= 1.0
    })
    .await;
    assert_eq!(federated(&tls_agg, "tls_plain").await, 0);

    // TLS to a plaintext port, and an https:// forward endpoint in front of a
    // plaintext core: no delivery, never a plaintext fallback.
    let plain_dir = dir.path().join("plain-core");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let mut plain_agg = Aggregator::start(BIN, &plain_dir).await;
    let tls_to_plain = tls_client(&core.pki.ca_file(), None)
        .get(format!("https://127.0.0.1:{}/readyz", plain_agg.http))
        .send()
        .await;
    assert!(
        tls_to_plain.is_err(),
        "TLS to a plaintext port: {tls_to_plain:?}"
    );
    let (cert, key) = core.pki.client("edge-a", "edge-a", Validity::Current);
    let mut col = tls_collector(
        dir.path(),
        "https-to-plain",
        &core,
        plain_agg.grpc,
        &cert,
        &key,
    )
    .await;
    assert_eq!(
        post_otlp(col.http, gauge_request("tls_downgrade", "d", 3))
            .await
            .0,
        200
    );
    eventually(
        WAIT,
        "the collector retries instead of sending in plaintext",
        || async { col.metrics().await.get("edgewatch_forward_retries_total") >= 2.0 },
    )
    .await;
    always_for(
        Duration::from_secs(2),
        "nothing reaches the plaintext core",
        || async { federated(&plain_agg, "tls_downgrade").await == 0 },
    )
    .await;
    assert_eq!(
        col.metrics()
            .await
            .get("edgewatch_forward_sent_points_total"),
        0.0
    );
    col.proc.stop();
    plain_agg.proc.stop();
    tls_agg.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_federate_over_https_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(dir.path());
    let (prom_cert, prom_key) = core
        .pki
        .client("prometheus", "prometheus", Validity::Current);
    // mTLS and basic auth, as `web.config.file` offers Prometheus' own users.
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let http_tls = format!(
        "  tls: {}\n  basic_auth_users:\n    prometheus: \"{hash}\"\n",
        core.server_tls()
    );
    let client = tls_client(&core.pki.ca_file(), Some((&prom_cert, &prom_key)));
    let spec = AggregatorSpec {
        http_extra: &http_tls,
        http_tls: Some(client.clone()),
        ..AggregatorSpec::default()
    };
    let mut agg = Aggregator::start_spec(BIN, dir.path(), &spec).await;
    let federate = format!("https://127.0.0.1:{}/federate", agg.http);
    let anonymous = client.get(&federate).send().await.expect("GET /federate");
    assert_eq!(anonymous.status(), 401, "a certificate alone is not a user");
    assert_eq!(
        post_otlp(agg.http_otlp, gauge_request("tls_federated", "f", 3))
            .await
            .0,
        200
    );
    let scrape = format!(
        "  - job_name: core\n    honor_labels: true\n    metrics_path: /federate\n    params: {{'match[]': ['{{__name__=\"tls_federated\"}}']}}\n    scheme: https\n    basic_auth:\n      username: prometheus\n      password: s3cret\n    tls_config:\n      ca_file: {ca}\n      cert_file: {cert}\n      key_file: {key}\n      server_name: localhost\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        ca = core.pki.ca_file().display(),
        cert = prom_cert.display(),
        key = prom_key.display(),
        port = agg.http,
    );
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let mut prom = Prometheus::start(&prom_dir, &scrape).await;
    eventually(
        WAIT,
        "Prometheus has the federated series over HTTPS",
        || async {
            prom.query("count(tls_federated)")
                .await
                .first()
                .map(|r| r["value"][1].clone())
                == Some(serde_json::json!("3"))
        },
    )
    .await;
    assert_eq!(prom.query("up{job=\"core\"}").await[0]["value"][1], "1");
    prom.proc.stop();
    agg.proc.stop();
}

/// Exports one counter through the official OpenTelemetry Python SDK over mTLS,
/// OTLP/HTTP or OTLP/gRPC (argv: protocol, endpoint, CA, certificate, key); exits
/// non-zero when the export failed.
const PYTHON_EXPORT: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
protocol, endpoint, ca, cert, key = sys.argv[1:6]
if protocol == "http":
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter(endpoint=endpoint, certificate_file=ca,
                                  client_certificate_file=cert, client_key_file=key)
else:
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    exporter = OTLPMetricExporter(endpoint=endpoint, credentials=creds, insecure=False)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
provider = MeterProvider(metric_readers=[reader])
provider.get_meter("e2e").create_counter("sdk_tls_" + protocol).add(5, {"model": "housing"})
ok = provider.force_flush()
provider.shutdown()
sys.exit(0 if ok else 1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_python_sdk_exports_to_a_tls_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(dir.path());
    let mut agg = Aggregator::start(BIN, dir.path()).await;
    let receivers = format!("    tls: {}\n", core.server_tls());
    // The admin listener over mTLS too.
    let admin = format!("  tls: {}\n", core.server_tls());
    let (cert, key) = core.pki.client("sdk", "sdk-client", Validity::Current);
    let admin_client = tls_client(&core.pki.ca_file(), Some((&cert, &key)));
    let spec = CollectorSpec {
        receivers_extra: &receivers,
        admin_extra: &admin,
        admin_tls: Some(admin_client.clone()),
        ..CollectorSpec::new("edge", "edge-a", "node-1", agg.grpc)
    };
    let mut col = Collector::start_spec(BIN, dir.path(), &spec).await;
    let metrics = admin_client
        .get(format!("https://127.0.0.1:{}/metrics", col.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("edgewatch_tls_reloads_total"), "{metrics}");
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/metrics", col.admin))
            .await
            .is_err(),
        "plaintext to the TLS admin port"
    );
    let python = otel_python();
    for (protocol, endpoint) in [
        ("http", format!("https://localhost:{}/v1/metrics", col.http)),
        ("grpc", format!("https://localhost:{}", col.grpc)),
    ] {
        let (python, ca, cert, key) = (
            python.clone(),
            core.pki.ca_file(),
            cert.clone(),
            key.clone(),
        );
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                // requests lets these override the exporter's own CA file.
                .env_remove("REQUESTS_CA_BUNDLE")
                .env_remove("CURL_CA_BUNDLE")
                .args(["-c", PYTHON_EXPORT, protocol, &endpoint])
                .args([ca, cert, key])
                .output()
                .expect("run the Python SDK")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "Python SDK export over {protocol}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metric = format!("sdk_tls_{protocol}_total");
        eventually(
            WAIT,
            &format!("the SDK's {protocol} counter at the core"),
            || async { federated(&agg, &metric).await == 1 },
        )
        .await;
    }
    col.proc.stop();
    agg.proc.stop();
}
