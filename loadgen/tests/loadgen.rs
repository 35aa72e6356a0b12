//! The load generator against the counting sink on 127.0.0.1.
//!
//! Tests that generate load take a global lock so they don't compete with each other
//! for the machine's cores. Rate accuracy is measured in `benches/rate.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use edgewatch_loadgen::{
    run, FailCode, LoadgenArgs, Protocol, Rate, Report, Sink, SinkArgs, SinkStats,
};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start_sink(args: SinkArgs) -> Sink {
    Sink::start(&args).await.expect("sink starts")
}

fn args(sink: &Sink, protocol: Protocol, rate: Rate, duration: Duration) -> LoadgenArgs {
    LoadgenArgs {
        endpoint: Some(sink.endpoint()),
        protocol,
        rate,
        duration,
        quiet: true,
        timeout: Duration::from_secs(5),
        ..LoadgenArgs::default()
    }
}

/// A paced run: everything sent is acknowledged and counted by the sink, and the
/// generator never sends more requests than its schedule holds. How close it comes to
/// the target rate is measured by `benches/rate.rs`, not asserted here.
async fn check_paced_run(
    protocol: Protocol,
    rate: f64,
    batch: usize,
    concurrency: usize,
    secs: f64,
) {
    let _serial = SERIAL.lock().await;
    let sink = start_sink(SinkArgs::new(local())).await;
    let mut a = args(
        &sink,
        protocol,
        Rate::PerSecond(rate),
        Duration::from_secs_f64(secs),
    );
    a.batch = batch;
    a.concurrency = concurrency;
    let report = run(a).await.expect("run");
    let stats = sink.stop().await;
    let ctx = format!("{protocol} @ {rate}: {}\nsink: {stats:?}", report.to_text());

    assert!(report.errors.is_empty(), "{ctx}");
    assert_eq!(report.failed_requests, 0, "{ctx}");
    assert!(report.sent_points > 0, "{ctx}");
    assert_eq!(report.acked_points, report.sent_points, "{ctx}");
    assert_eq!(stats.points, report.acked_points, "{ctx}");
    assert_eq!(stats.requests, report.acked_requests, "{ctx}");
    assert_eq!(report.target_rate, Some(rate), "{ctx}");
    let scheduled = (secs * rate / batch as f64).ceil() as u64;
    assert!(report.sent_requests <= scheduled, "{ctx}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_grpc_run_counts_match() {
    check_paced_run(Protocol::Grpc, 10_000.0, 100, 1, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_http_run_counts_match() {
    check_paced_run(Protocol::Http, 10_000.0, 100, 4, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_stops_at_duration_and_counts_match() {
    let _serial = SERIAL.lock().await;
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let sink = start_sink(SinkArgs::new(local())).await;
        let mut a = args(&sink, protocol, Rate::Max, Duration::from_millis(500));
        a.concurrency = 2;
        let report = run(a).await.unwrap();
        let stats = sink.stop().await;
        assert!(report.acked_points > 0, "{}", report.to_text());
        assert_eq!(report.target_rate, None);
        assert_eq!(stats.points, report.acked_points, "{}", report.to_text());
        // It stops by itself (a generous bound: this is not a timing measurement).
        assert!(report.elapsed_s < 3.0, "{}", report.to_text());
        assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.max >= report.latency_ms.p99);
    }
}

fn seq_args(sink: &Sink, protocol: Protocol) -> LoadgenArgs {
    let mut a = args(
        sink,
        protocol,
        Rate::PerSecond(20_000.0),
        Duration::from_secs(1),
    );
    a.sequence_check = true;
    a.series = 250;
    a.batch = 100;
    a
}

fn assert_sequences_match(report: &Report, sink: &Sink) {
    let seq = report.sequence.as_ref().expect("sequence report");
    let acked = seq.acked_through_map();
    assert_eq!(acked.len(), 250);
    // At most 20k points over 250 series: every series acked through at most 80 (less
    // when a loaded machine made the generator skip late requests at the end).
    assert!(acked.values().all(|&v| (1..=80).contains(&v)), "{acked:?}");
    assert_eq!(sink.max_seq(&report.instance_id), acked);
    if report.acked_points == 20_000 {
        assert_eq!(
            seq.acked_through,
            vec![edgewatch_loadgen::SeriesRun {
                from: "s000000".into(),
                to: "s000249".into(),
                seq: 80
            }]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_check_clean_run_has_no_gaps() {
    let _serial = SERIAL.lock().await;
    for (protocol, concurrency) in [(Protocol::Grpc, 1), (Protocol::Http, 4)] {
        let sink = start_sink(SinkArgs::new(local())).await;
        let mut a = seq_args(&sink, protocol);
        a.concurrency = concurrency;
        let report = run(a).await.unwrap();
        assert_eq!(
            report.acked_points,
            report.sent_points,
            "{}",
            report.to_text()
        );
        // Enough requests for the checks below (how close the generator comes to its
        // target rate is measured by benches/rate.rs).
        assert!(report.acked_points >= 1_000, "{}", report.to_text());
        assert_sequences_match(&report, &sink);
        let sink_max = sink.max_seq(&report.instance_id);
        let stats = sink.stop().await;
        let s = &stats.sequence[&report.instance_id];
        assert_eq!(s.series, 250);
        assert_eq!(s.points, report.acked_points);
        assert_eq!((s.gaps, s.duplicates), (0, 0), "{stats:?}");
        assert!(s.missing.is_empty());
        if concurrency == 1 {
            assert_eq!(s.out_of_order, 0);
        }
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let runs: Vec<edgewatch_loadgen::SeriesRun> = json["sequence"]["acked_through"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| edgewatch_loadgen::SeriesRun {
                from: r["from"].as_str().unwrap().into(),
                to: r["to"].as_str().unwrap().into(),
                seq: r["seq"].as_u64().unwrap(),
            })
            .collect();
        assert_eq!(edgewatch_loadgen::expand_runs(&runs), sink_max);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_check_detects_a_dropped_request() {
    let _serial = SERIAL.lock().await;
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let mut sa = SinkArgs::new(local());
        sa.drop_request = vec![5];
        let sink = start_sink(sa).await;
        let report = run(seq_args(&sink, protocol)).await.unwrap();
        // The generator saw every request acknowledged...
        assert!(report.errors.is_empty());
        assert_eq!(report.acked_points, report.sent_points);
        // Enough requests for the checks below (how close the generator comes to its
        // target rate is measured by benches/rate.rs).
        assert!(report.acked_points >= 1_000, "{}", report.to_text());
        let stats = sink.stop().await;
        // ...but the sink lost request 5 = points 400..500 = series 150..249, sequence 2.
        assert_eq!(stats.dropped_requests, 1);
        assert_eq!(stats.dropped_points, 100);
        assert_eq!(stats.points, report.acked_points - 100);
        let s = &stats.sequence[&report.instance_id];
        assert_eq!(s.gaps, 100, "{stats:?}");
        assert_eq!(stats.gaps(), 100);
        assert_eq!(s.duplicates, 0);
        assert_eq!(s.missing.len(), 100);
        assert_eq!(
            (
                s.missing[0].series.as_str(),
                s.missing[0].from,
                s.missing[0].to
            ),
            ("s000150", 2, 2)
        );
        assert_eq!(s.missing[99].series, "s000249");
    }
}

async fn failing_run(
    protocol: Protocol,
    code: &str,
    fail_every: usize,
    retry: u32,
) -> (Report, SinkStats) {
    let mut sa = SinkArgs::new(local());
    sa.fail_with = Some(code.parse::<FailCode>().unwrap());
    sa.fail_every = fail_every;
    let sink = start_sink(sa).await;
    let mut a = args(
        &sink,
        protocol,
        Rate::PerSecond(5_000.0),
        Duration::from_millis(400),
    );
    a.retry = retry;
    let report = run(a).await.unwrap();
    (report, sink.stop().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_code() {
    let _serial = SERIAL.lock().await;
    // 20 requests are scheduled; on a loaded machine late ones may be skipped at the
    // end of --duration, so counts are checked against what was sent.
    let (r, s) = failing_run(Protocol::Grpc, "RESOURCE_EXHAUSTED", 1, 0).await;
    let sent = r.sent_requests;
    assert!((1..=20).contains(&sent), "{}", r.to_text());
    assert_eq!(r.failed_requests, sent, "{}", r.to_text());
    assert_eq!(r.failed_points, sent * 100);
    assert_eq!(r.acked_points, 0);
    assert_eq!(r.achieved_rate, 0.0);
    assert_eq!(
        r.errors.get("RESOURCE_EXHAUSTED"),
        Some(&sent),
        "{:?}",
        r.errors
    );
    assert_eq!(r.errors.len(), 1);
    assert_eq!((s.failed_requests, s.points), (sent, 0));

    let (r, _) = failing_run(Protocol::Http, "RESOURCE_EXHAUSTED", 1, 0).await;
    assert!(r.sent_requests >= 1, "{}", r.to_text());
    assert_eq!(
        r.errors.get("429"),
        Some(&r.sent_requests),
        "{:?}",
        r.errors
    );
    assert_eq!(r.errors.len(), 1);

    // Every 2nd request received fails (concurrency 1: requests arrive in order).
    let (r, _) = failing_run(Protocol::Http, "503", 2, 0).await;
    let failed = r.sent_requests / 2;
    assert_eq!(r.errors.get("503"), Some(&failed), "{:?}", r.errors);
    assert_eq!(
        (r.acked_requests, r.failed_requests),
        (r.sent_requests - failed, failed)
    );

    let (r, _) = failing_run(Protocol::Grpc, "UNAVAILABLE", 2, 0).await;
    let failed = r.sent_requests / 2;
    assert!(failed > 0);
    assert_eq!(r.errors.get("UNAVAILABLE"), Some(&failed), "{:?}", r.errors);

    let text = r.to_text();
    assert!(text.contains(&format!("UNAVAILABLE={failed}")), "{text}");
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["errors"]["UNAVAILABLE"], failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resends_failed_requests() {
    let _serial = SERIAL.lock().await;
    // Every 2nd request received fails; with one retry each request gets through.
    let (r, s) = failing_run(Protocol::Grpc, "UNAVAILABLE", 2, 1).await;
    assert_eq!(r.failed_requests, 0, "{}", r.to_text());
    assert_eq!(r.acked_requests, r.sent_requests);
    assert_eq!(r.retries, r.errors["UNAVAILABLE"]);
    assert!(r.retries > 0);
    assert_eq!(s.points, r.acked_points);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_counted_as_connect() {
    let _serial = SERIAL.lock().await;
    // Nothing listens there.
    let port = edgewatch_testkit::free_port();
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let a = LoadgenArgs {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            protocol,
            rate: Rate::PerSecond(1000.0),
            duration: Duration::from_millis(300),
            quiet: true,
            ..LoadgenArgs::default()
        };
        let r = run(a).await.unwrap();
        assert_eq!(r.acked_requests, 0);
        assert_eq!(r.failed_requests, r.sent_requests);
        assert_eq!(
            r.errors.get("connect"),
            Some(&r.sent_requests),
            "{protocol}: {:?}",
            r.errors
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_accepted() {
    let _serial = SERIAL.lock().await;
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let sink = start_sink(SinkArgs::new(local())).await;
        let mut a = args(
            &sink,
            protocol,
            Rate::PerSecond(4_000.0),
            Duration::from_millis(500),
        );
        a.gzip = true;
        a.concurrency = 2;
        let r = run(a).await.unwrap();
        let s = sink.stop().await;
        assert!(r.errors.is_empty(), "{protocol}: {:?}", r.errors);
        // Up to 20 requests scheduled (compression is slow in debug builds: late ones
        // may be skipped at the end).
        assert!(r.acked_requests >= 1, "{}", r.to_text());
        assert_eq!(r.acked_points, r.sent_points);
        assert_eq!(s.points, r.acked_points);
        assert!(s.bytes > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_serves_stats_json_and_otlp_json() {
    let sink = start_sink(SinkArgs::new(local())).await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "resourceMetrics": [{
            "resource": {"attributes": [{"key": "service.instance.id", "value": {"stringValue": "j"}}]},
            "scopeMetrics": [{"metrics": [{
                "name": "edgewatch_loadgen_sequence",
                "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [
                    {"asInt": "1", "timeUnixNano": "1", "attributes": [{"key": "series", "value": {"stringValue": "a"}}]},
                    {"asInt": "3", "timeUnixNano": "2", "attributes": [{"key": "series", "value": {"stringValue": "a"}}]}
                ]}
            }]}]
        }]
    });
    let resp = client
        .post(format!("{}/v1/metrics", sink.endpoint()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let stats: serde_json::Value = client
        .get(format!("{}/stats", sink.endpoint()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["points"], 2);
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["sequence"]["j"]["gaps"], 1);
    assert_eq!(
        stats["sequence"]["j"]["missing"],
        serde_json::json!([{"series": "a", "from": 2, "to": 2}])
    );

    let bad = client
        .post(format!("{}/v1/metrics", sink.endpoint()))
        .header("content-type", "application/x-protobuf")
        .body(vec![0x0Au8, 0x05, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(sink.stats().malformed_requests, 1);
}

#[test]
fn args_parse_with_clap() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }
    let cli = Cli::try_parse_from([
        "loadgen",
        "--endpoint",
        "http://127.0.0.1:4318",
        "--protocol",
        "http",
        "--rate",
        "100k",
        "--batch",
        "500",
        "--series",
        "10",
        "--concurrency",
        "8",
        "--duration",
        "500ms",
        "--sequence-check",
        "--json",
        "--gzip",
        "--quiet",
    ])
    .unwrap();
    let a = cli.args;
    assert_eq!(a.protocol, Protocol::Http);
    assert_eq!(a.rate, Rate::PerSecond(100_000.0));
    assert_eq!((a.batch, a.series, a.concurrency), (500, 10, 8));
    assert_eq!(a.duration, Duration::from_millis(500));
    assert!(a.sequence_check && a.json && a.gzip && a.quiet);
    assert_eq!(a.retry, 0);

    let cli = Cli::try_parse_from(["loadgen", "--rate", "max"]).unwrap();
    assert_eq!(cli.args.rate, Rate::Max);
    assert_eq!(cli.args.endpoint_or_default(), "http://127.0.0.1:4317");
    assert!(Cli::try_parse_from(["loadgen", "--batch", "0"]).is_err());
}

/// `--tls-cert-file` makes the sink speak TLS, and an `https://` endpoint makes the
/// generator speak it, verifying the sink against `--ca-file`; without the CA the
/// sink's certificate is refused and nothing is counted (no plaintext fallback).
#[tokio::test]
async fn tls_sink_and_https_endpoint() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = edgewatch_testkit::tls::Pki::new(dir.path(), "ca");
    let (cert, key) = pki.server("sink", &["127.0.0.1"]);
    let mut sa = SinkArgs::new(local());
    sa.tls_cert_file = Some(cert);
    sa.tls_key_file = Some(key);
    let sink = start_sink(sa).await;
    let https = sink.endpoint().replace("http://", "https://");
    let mut a = args(
        &sink,
        Protocol::Grpc,
        Rate::PerSecond(1000.0),
        Duration::from_millis(500),
    );
    a.endpoint = Some(https.clone());
    a.ca_file = Some(pki.ca_file());
    let report = run(a).await.expect("run");
    assert!(report.errors.is_empty(), "{}", report.to_text());
    assert!(report.acked_points > 0, "{}", report.to_text());

    let mut untrusted = args(
        &sink,
        Protocol::Grpc,
        Rate::PerSecond(1000.0),
        Duration::from_millis(300),
    );
    untrusted.endpoint = Some(https);
    let refused = run(untrusted).await.expect("run");
    assert_eq!(refused.acked_points, 0, "{}", refused.to_text());
    let stats = sink.stop().await;
    assert_eq!(stats.points, report.acked_points, "{stats:?}");
}
