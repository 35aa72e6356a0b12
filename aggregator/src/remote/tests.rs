//! The remote write sender against a recording HTTP endpoint, fed through a real log.

use super::*;
use crate::store::{MetricType, Store, StoreOptions, STALE_NAN};
use crate::wal::record::RecordBuilder;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use edgewatch_testkit::http::{Recorded, Recorder};
use edgewatch_testkit::peers::Prometheus;
use edgewatch_testkit::tls::Certs;
use edgewatch_testkit::{always_for, eventually, Metrics as Scrape};
use prometheus::Registry;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    _dir: tempfile::TempDir,
    wal: Arc<Wal>,
    store: Store,
    registry: Registry,
    metrics: Metrics,
    stop: CancellationToken,
}

/// One sample to write: name, labels (in written order), value, timestamp.
struct In {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    ts: i64,
}

fn sample(name: &str, labels: &[(&str, &str)], value: f64, ts: i64) -> In {
    In {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
        ts,
    }
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::new();
        let wal = Wal::open(&dir.path().join("wal"), &registry).expect("open log");
        let metrics = Metrics::register(&registry).expect("register metrics");
        Fixture {
            _dir: dir,
            wal,
            store: Store::new(StoreOptions::default(), &Registry::new()),
            registry,
            metrics,
            stop: CancellationToken::new(),
        }
    }

    /// Appends one record; its seq.
    fn append(&self, samples: &[In]) -> u64 {
        let mut b = RecordBuilder::default();
        for In {
            name,
            labels,
            value,
            ts,
        } in samples
        {
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let kind = if name.ends_with("_total") {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let fam = self.store.family(name, kind, "Help of it.", "");
            b.push(
                fam,
                || self.store.family_meta(name).expect("registered"),
                name,
                &labels,
                *value,
                *ts,
            );
        }
        self.wal
            .append_durable(Some(b.finish(0)), None)
            .expect("append")
    }

    fn start(&self, yaml: &str) -> JoinHandle<()> {
        let cfg = config(yaml);
        let reader = self.wal.reader(&cfg.name, &cfg.url.0).expect("reader");
        let options = Options {
            shard_update: Duration::from_millis(100),
        };
        RemoteWriter::start(&cfg, reader, &self.metrics, self.stop.clone(), options)
            .expect("writer starts")
    }

    fn scrape(&self) -> Scrape {
        Scrape::from_registry(&self.registry)
    }

    /// Where a new reader of `name` would start.
    async fn position(&self, name: &str) -> Option<u64> {
        let mut r = self.wal.reader(name, "x").expect("reader");
        let stop = CancellationToken::new();
        let probe = tokio::time::timeout(Duration::from_millis(300), r.next(&stop)).await;
        probe.ok().flatten().map(|(seq, _)| seq)
    }
}

fn config(yaml: &str) -> RemoteWriteConfig {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("config {yaml}: {e}"))
}

/// A config for `url` with fast backoff and `extra` YAML lines under queue_config.
fn yaml(url: &str, queue: &str) -> String {
    format!(
        "url: {url}/api/v1/write\nname: ep\nremote_timeout: 2s\nmetadata_config: {{send: false}}\n\
         queue_config: {{min_backoff: 10ms, max_backoff: 100ms, {queue}}}\n"
    )
}

/// One received sample: labels as `k=v,...`, value bits, timestamp.
type Got = (String, u64, i64);

fn decoded(r: &Recorded) -> proto::WriteRequest {
    assert_eq!(r.path, "/api/v1/write");
    proto::decode(&r.body).expect("body decodes as snappy + WriteRequest")
}

fn samples_of(r: &Recorded) -> Vec<Got> {
    decoded(r)
        .timeseries
        .iter()
        .flat_map(|ts| {
            let labels = ts
                .labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>()
                .join(",");
            ts.samples
                .iter()
                .map(move |s| (labels.clone(), s.value.to_bits(), s.timestamp))
        })
        .collect()
}

fn delivered(rec: &Recorder) -> Vec<Got> {
    rec.delivered().iter().flat_map(samples_of).collect()
}

async fn wait_delivered(rec: &Recorder, n: usize) -> Vec<Got> {
    eventually(WAIT, &format!("{n} samples delivered"), || async {
        let got = delivered(rec);
        (got.len() >= n).then_some(got)
    })
    .await
}

async fn stop(f: &Fixture, h: JoinHandle<()>) {
    f.stop.cancel();
    tokio::time::timeout(WAIT, h)
        .await
        .expect("writer stops in time")
        .expect("writer task");
}

#[tokio::test]
async fn samples_go_out_as_prometheus_remote_write() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    let h = f.start(&format!(
        "url: {}/api/v1/write\nmetadata_config: {{send_interval: 100ms}}\n\
         queue_config: {{batch_send_deadline: 50ms}}\n",
        rec.url()
    ));
    f.append(&[
        sample(
            "req_total",
            &[("zone", "b"), ("app", "x"), ("empty", "")],
            3.5,
            1_700_000_000_123,
        ),
        sample("temp", &[("node", "n1")], STALE_NAN, -1_000),
    ]);
    let mut got = wait_delivered(&rec, 2).await;
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "__name__=req_total,app=x,zone=b".into(),
                3.5f64.to_bits(),
                1_700_000_000_123
            ),
            ("__name__=temp,node=n1".into(), STALE_NAN.to_bits(), -1_000),
        ],
        "labels sorted with __name__, empty values dropped, original timestamps, stale NaN bits"
    );
    let r = &rec.delivered()[0];
    let h1 = |k: &str| {
        r.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(h1("content-encoding"), "snappy");
    assert_eq!(h1("content-type"), "application/x-protobuf");
    assert_eq!(h1("x-prometheus-remote-write-version"), "0.1.0");
    assert!(
        h1("user-agent").starts_with("edgewatch/"),
        "{}",
        h1("user-agent")
    );
    let meta = eventually(WAIT, "metadata sent", || async {
        let mut m: Vec<_> = rec
            .delivered()
            .iter()
            .flat_map(|r| decoded(r).metadata)
            .map(|m| (m.metric_family_name, m.r#type, m.help))
            .collect();
        m.sort();
        m.dedup();
        (m.len() == 2).then_some(m)
    })
    .await;
    assert_eq!(
        meta,
        vec![
            ("req_total".to_string(), 1, "Help of it.".to_string()),
            ("temp".to_string(), 2, "Help of it.".to_string())
        ]
    );
    // The endpoint records a request before the writer has its answer.
    eventually(WAIT, "acknowledgements counted", || async {
        metric(&f, &rec, "edgewatch_remote_write_samples_total", "") == 2.0
            && metric(&f, &rec, "edgewatch_remote_write_metadata_total", "") >= 2.0
    })
    .await;
    assert_eq!(
        metric(&f, &rec, "edgewatch_remote_write_pending_samples", ""),
        0.0
    );
    assert_eq!(
        metric(
            &f,
            &rec,
            "edgewatch_remote_write_highest_sent_timestamp_seconds",
            ""
        ),
        1_700_000_000.123
    );
    stop(&f, h).await;
}

#[tokio::test]
async fn batches_are_cut_by_size_and_by_deadline() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    let h = f.start(&yaml(
        &rec.url(),
        "max_samples_per_send: 10, capacity: 100, batch_send_deadline: 300ms",
    ));
    let samples: Vec<In> = (0..25)
        .map(|i| sample(&format!("s{i}"), &[], 1.0, 0))
        .collect();
    f.append(&samples);
    wait_delivered(&rec, 25).await;
    let sizes: Vec<usize> = rec
        .delivered()
        .iter()
        .map(|r| samples_of(r).len())
        .collect();
    assert_eq!(
        sizes,
        vec![10, 10, 5],
        "two full batches, then the rest at the deadline"
    );
    stop(&f, h).await;
}

#[tokio::test]
async fn each_series_stays_in_order_across_shards() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    let h = f.start(&yaml(
        &rec.url(),
        "min_shards: 4, max_shards: 4, max_samples_per_send: 7, capacity: 20, batch_send_deadline: 20ms",
    ));
    for round in 0..30i64 {
        let samples: Vec<In> = (0..12)
            .map(|i| sample("up", &[("pod", &format!("pod-{i}"))], round as f64, round))
            .collect();
        f.append(&samples);
    }
    let got = wait_delivered(&rec, 12 * 30).await;
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for (labels, _, ts) in got {
        per.entry(labels).or_default().push(ts);
    }
    assert_eq!(per.len(), 12);
    for (s, ts) in per {
        assert_eq!(ts, (0..30).collect::<Vec<_>>(), "{s} in order, each once");
    }
    stop(&f, h).await;
}

fn metric(f: &Fixture, rec: &Recorder, name: &str, extra: &str) -> f64 {
    let url = format!("{}/api/v1/write", rec.url());
    f.scrape()
        .get_or_zero(&format!("{name}{{url=\"{url}\"{extra}}}"))
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[500, 503]).await;
    let h = f.start(&yaml(&rec.url(), "batch_send_deadline: 10ms"));
    f.append(&[sample("a", &[], 1.0, 1), sample("b", &[], 2.0, 2)]);
    wait_delivered(&rec, 2).await;
    let statuses: Vec<u16> = rec.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 503, 200]);
    assert_eq!(
        samples_of(&rec.requests()[0]),
        samples_of(&rec.requests()[2]),
        "the same batch again"
    );
    assert_eq!(
        metric(&f, &rec, "edgewatch_remote_write_retried_samples_total", ""),
        4.0
    );
    eventually(WAIT, "the acknowledgement counted", || async {
        metric(&f, &rec, "edgewatch_remote_write_samples_total", "") == 2.0
    })
    .await;
    stop(&f, h).await;
}

#[tokio::test]
async fn too_many_requests_waits_as_retry_after_says() {
    let f = Fixture::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let times = seen.clone();
    let rec = Recorder::start_with(200, &[429], move |i| {
        times.lock().unwrap().push(Instant::now());
        if i.scripted == 429 {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let h = f.start(&yaml(&rec.url(), "batch_send_deadline: 10ms"));
    f.append(&[sample("a", &[], 1.0, 1)]);
    wait_delivered(&rec, 1).await;
    let t = seen.lock().unwrap().clone();
    assert_eq!(t.len(), 2);
    assert!(
        t[1] - t[0] >= Duration::from_millis(950),
        "retried after {:?}, Retry-After said 1 s",
        t[1] - t[0]
    );
    assert_eq!(
        metric(&f, &rec, "edgewatch_remote_write_retried_samples_total", ""),
        1.0
    );
    stop(&f, h).await;
}

#[tokio::test]
async fn refused_batches_are_dropped_counted_and_the_rest_continues() {
    for (status, retry_429) in [(400u16, true), (429, false)] {
        let f = Fixture::new();
        let rec = Recorder::start(200, &[status]).await;
        let h = f.start(&yaml(
            &rec.url(),
            &format!("batch_send_deadline: 10ms, retry_on_http_429: {retry_429}"),
        ));
        f.append(&[sample("bad", &[], 1.0, 1), sample("bad", &[], 2.0, 2)]);
        eventually(WAIT, "the refused request", || async {
            !rec.requests().is_empty()
        })
        .await;
        f.append(&[sample("good", &[], 3.0, 3)]);
        let got = wait_delivered(&rec, 1).await;
        assert_eq!(got, vec![("__name__=good".to_string(), 3f64.to_bits(), 3)]);
        assert_eq!(rec.requests().len(), 2, "{status}: never retried");
        let reason = format!(",reason=\"http_{status}\"");
        assert_eq!(
            metric(
                &f,
                &rec,
                "edgewatch_remote_write_failed_samples_total",
                &reason
            ),
            2.0
        );
        assert_eq!(
            metric(&f, &rec, "edgewatch_remote_write_retried_samples_total", ""),
            0.0
        );
        stop(&f, h).await;
        assert_eq!(
            f.position("ep").await,
            None,
            "{status}: both records are done with"
        );
    }
}

#[tokio::test]
async fn a_slow_endpoint_gets_more_shards_without_reordering() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    rec.set_delay(Duration::from_millis(40));
    let h = f.start(&yaml(
        &rec.url(),
        "min_shards: 1, max_shards: 4, max_samples_per_send: 5, capacity: 10, batch_send_deadline: 10ms",
    ));
    for round in 0..40i64 {
        let samples: Vec<In> = (0..10)
            .map(|i| sample("up", &[("pod", &format!("pod-{i}"))], 1.0, round))
            .collect();
        f.append(&samples);
    }
    eventually(WAIT, "more than one shard", || async {
        metric(&f, &rec, "edgewatch_remote_write_shards", "") > 1.0
    })
    .await;
    let got = wait_delivered(&rec, 400).await;
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for (labels, _, ts) in got {
        per.entry(labels).or_default().push(ts);
    }
    for (s, ts) in per {
        assert_eq!(ts, (0..40).collect::<Vec<_>>(), "{s} in order, each once");
    }
    stop(&f, h).await;
}

#[tokio::test]
async fn credentials_and_headers_go_with_every_request() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let basic = Recorder::start(200, &[]).await;
    let bearer = Recorder::start(200, &[]).await;
    let h1 = f.start(&format!(
        "url: {}/api/v1/write\nname: basic\nheaders: {{X-Scope-OrgID: tenant-1}}\n\
         basic_auth: {{username: edge, password_file: {}}}\nqueue_config: {{batch_send_deadline: 10ms}}\n",
        basic.url(),
        pw.display()
    ));
    let h2 = f.start(&format!(
        "url: {}/api/v1/write\nname: bearer\nauthorization: {{credentials: tok}}\n\
         queue_config: {{batch_send_deadline: 10ms}}\n",
        bearer.url()
    ));
    f.append(&[sample("a", &[], 1.0, 1)]);
    wait_delivered(&basic, 1).await;
    wait_delivered(&bearer, 1).await;
    let hdr = |r: &Recorder, k: &str| {
        r.delivered()[0]
            .headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    // base64("edge:s3cret"): the file's trailing newline is not part of the password.
    assert_eq!(hdr(&basic, "authorization"), "Basic ZWRnZTpzM2NyZXQ=");
    assert_eq!(hdr(&basic, "x-scope-orgid"), "tenant-1");
    assert_eq!(hdr(&bearer, "authorization"), "Bearer tok");
    f.stop.cancel();
    h1.await.unwrap();
    h2.await.unwrap();
}

#[tokio::test]
async fn the_position_moves_only_past_acknowledged_records() {
    let f = Fixture::new();
    let down = Recorder::start(503, &[]).await;
    let h = f.start(&format!(
        "url: {}/api/v1/write\nname: ep\nremote_timeout: 500ms\nmetadata_config: {{send: false}}\n\
         queue_config: {{min_backoff: 10ms, max_backoff: 50ms, batch_send_deadline: 10ms}}\n",
        down.url()
    ));
    f.append(&[sample("a", &[], 1.0, 1)]);
    f.append(&[sample("a", &[], 2.0, 2)]);
    eventually(WAIT, "retries", || async { down.requests().len() >= 3 }).await;
    stop(&f, h).await;
    assert_eq!(
        f.position("ep").await,
        Some(0),
        "nothing acknowledged: resume at the first record"
    );

    // The endpoint is back: a new writer from the same position sends both.
    let f2 = Fixture {
        stop: CancellationToken::new(),
        ..f
    };
    let up = Recorder::start(200, &[]).await;
    let h = f2.start(&yaml(&up.url(), "batch_send_deadline: 10ms"));
    let got = wait_delivered(&up, 2).await;
    assert_eq!(got.iter().map(|g| g.2).collect::<Vec<_>>(), vec![1, 2]);
    stop(&f2, h).await;
    f2.append(&[sample("a", &[], 3.0, 3)]);
    assert_eq!(
        f2.position("ep").await,
        Some(2),
        "resume after the last acknowledged record"
    );
}

#[tokio::test]
async fn an_unreadable_tls_file_is_a_start_error_naming_it() {
    let f = Fixture::new();
    let cfg = config(
        "url: https://127.0.0.1:1/api/v1/write\ntls_config: {ca_file: /nonexistent/ca.pem}\n",
    );
    let reader = f.wal.reader(&cfg.name, &cfg.url.0).unwrap();
    let err = RemoteWriter::start(&cfg, reader, &f.metrics, f.stop.clone(), Options::default())
        .expect_err("start fails");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn retry_after_is_seconds_or_an_http_date() {
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(client::retry_after("7", now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(
        client::retry_after(&later, now),
        Some(Duration::from_secs(30))
    );
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
    assert_eq!(client::retry_after(&earlier, now), Some(Duration::ZERO));
    assert_eq!(client::retry_after("soon", now), None);
}

#[tokio::test]
async fn tls_with_a_private_ca_a_client_certificate_and_a_server_name() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path(), "tsdb.example");
    let (ca, cert, key) = (
        certs.ca.display().to_string(),
        certs.client_cert.display().to_string(),
        certs.client_key.display().to_string(),
    );
    let cases = [
        (
            "right",
            format!(
                "{{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: tsdb.example}}"
            ),
            true,
        ),
        (
            "insecure",
            format!("{{insecure_skip_verify: true, cert_file: {cert}, key_file: {key}}}"),
            true,
        ),
        // The certificate is for tsdb.example, not for 127.0.0.1.
        (
            "no-server-name",
            format!("{{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}"),
            false,
        ),
        // The endpoint wants a client certificate.
        (
            "no-client-cert",
            format!("{{ca_file: {ca}, server_name: tsdb.example}}"),
            false,
        ),
    ];
    let mut running = Vec::new();
    for (name, tls, _) in &cases {
        let rec = Recorder::start_tls(200, &[], &certs, true).await;
        let url = format!("https://127.0.0.1:{}", rec.addr.port());
        let h = f.start(&format!(
            "url: {url}/api/v1/write\nname: {name}\nremote_timeout: 2s\nmetadata_config: {{send: false}}\ntls_config: {tls}\n\
             queue_config: {{min_backoff: 10ms, max_backoff: 50ms, batch_send_deadline: 10ms}}\n"
        ));
        running.push((rec, url, h));
    }
    f.append(&[sample("a", &[], 1.0, 1)]);
    for ((name, _, ok), (rec, url, _)) in cases.iter().zip(&running) {
        let series = |m: &str| format!("{m}{{url=\"{url}/api/v1/write\"}}");
        if *ok {
            wait_delivered(rec, 1).await;
        } else {
            eventually(WAIT, &format!("{name}: retries"), || async {
                f.scrape()
                    .get_or_zero(&series("edgewatch_remote_write_retried_samples_total"))
                    >= 2.0
            })
            .await;
            assert!(rec.requests().is_empty(), "{name}: no request got through");
            assert_eq!(
                f.scrape()
                    .get_or_zero(&series("edgewatch_remote_write_samples_total")),
                0.0,
                "{name}"
            );
        }
    }
    f.stop.cancel();
    for (_, _, h) in running {
        h.await.unwrap();
    }
}

/// The hand-made protocol against the real receiver: every sample arrives with its
/// original timestamp, a backlog interleaved with newer data included, and a stale
/// marker ends a series.
#[tokio::test]
async fn a_real_prometheus_receives_every_sample() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start_with_config(
        dir.path(),
        "global: {scrape_interval: 1m}\nstorage: {tsdb: {out_of_order_time_window: 1h}}\n",
        &[],
    )
    .await;
    let h = f.start(&format!(
        "url: {}\nqueue_config: {{min_shards: 3, max_shards: 3, max_samples_per_send: 7, batch_send_deadline: 20ms}}\n",
        prom.url("/api/v1/write")
    ));
    let now = edgewatch_testkit::now_ms() / 1000 * 1000;
    // Live data first, then the backlog of the same series from before it.
    for half in [1, 0] {
        for i in 0..30i64 {
            let ts = now - 600_000 + (half * 30 + i) * 10_000;
            f.append(&[
                sample(
                    "rw_live",
                    &[("pod", "p1"), ("cluster", "edge-a")],
                    i as f64,
                    ts,
                ),
                sample(
                    "rw_live",
                    &[("pod", "p2"), ("cluster", "edge-a")],
                    -(i as f64),
                    ts,
                ),
            ]);
        }
    }
    f.append(&[sample("rw_gone", &[("pod", "p3")], 1.0, now - 20_000)]);
    f.append(&[sample("rw_gone", &[("pod", "p3")], STALE_NAN, now - 10_000)]);
    wait_delivered_to_prometheus(&f, &prom, 122).await;
    let counts = prom.query("count_over_time(rw_live[11m])").await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    for c in &counts {
        assert_eq!(c["value"][1], "60", "every sample of {}", c["metric"]);
    }
    let first = prom
        .query_at("rw_live{pod=\"p2\"}", (now - 600_000) as f64 / 1000.0)
        .await;
    assert_eq!(
        first[0]["value"][0],
        (now - 600_000) / 1000,
        "original timestamp"
    );
    assert_eq!(first[0]["value"][1], "-0");
    assert!(
        prom.query("rw_gone").await.is_empty(),
        "the stale marker ends the series"
    );
    assert_eq!(
        prom.query("count_over_time(rw_gone[5m])").await[0]["value"][1],
        "1"
    );
    stop(&f, h).await;
}

async fn wait_delivered_to_prometheus(f: &Fixture, prom: &Prometheus, n: u64) {
    let series = format!(
        "edgewatch_remote_write_samples_total{{url=\"{}\"}}",
        prom.url("/api/v1/write")
    );
    eventually(WAIT, &format!("{n} samples acknowledged"), || async {
        f.scrape().get_or_zero(&series) as u64 >= n
    })
    .await;
    assert_eq!(
        f.scrape()
            .sum_or_zero("edgewatch_remote_write_failed_samples_total"),
        0.0
    );
}

#[tokio::test]
async fn a_down_endpoint_holds_the_reader_not_memory_and_gets_everything_back() {
    let f = Fixture::new();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let is_down = down.clone();
    let rec = Recorder::start_with(200, &[], move |_| {
        if is_down.load(Ordering::Relaxed) {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let h = f.start(&yaml(
        &rec.url(),
        "capacity: 20, max_samples_per_send: 10, batch_send_deadline: 10ms",
    ));
    for round in 0..50i64 {
        let samples: Vec<In> = (0..5)
            .map(|i| sample("up", &[("pod", &format!("pod-{i}"))], 1.0, round))
            .collect();
        f.append(&samples);
    }
    eventually(WAIT, "retries", || async { rec.requests().len() >= 3 }).await;
    always_for(
        Duration::from_millis(500),
        "at most one queue of samples pending",
        || async { metric(&f, &rec, "edgewatch_remote_write_pending_samples", "") <= 20.0 },
    )
    .await;
    down.store(false, Ordering::Relaxed);
    let got = wait_delivered(&rec, 250).await;
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for (labels, _, ts) in got {
        per.entry(labels).or_default().push(ts);
    }
    assert_eq!(per.len(), 5);
    for (s, ts) in per {
        assert_eq!(ts, (0..50).collect::<Vec<_>>(), "{s} in order, each once");
    }
    stop(&f, h).await;
    assert_eq!(f.position("ep").await, None, "everything committed");
}

#[tokio::test]
async fn stopping_flushes_what_is_queued() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    // A deadline far away: only the stop sends the batch.
    let h = f.start(&yaml(&rec.url(), "batch_send_deadline: 1h"));
    f.append(&[sample("a", &[], 1.0, 1)]);
    f.append(&[sample("a", &[], 2.0, 2)]);
    eventually(WAIT, "both queued", || async {
        metric(&f, &rec, "edgewatch_remote_write_pending_samples", "") == 2.0
    })
    .await;
    assert!(rec.requests().is_empty());
    stop(&f, h).await;
    assert_eq!(delivered(&rec).len(), 2, "sent at the stop");
    assert_eq!(f.position("ep").await, None, "and committed");
}
