//! The remote write sender against a recording HTTP endpoint (or a real
//! Prometheus), fed through a real log.

mod client;
mod queue;
mod wire;

use super::*;
use crate::store::{MetricType, Store, StoreOptions, STALE_NAN};
use crate::wal::record::RecordBuilder;
use crate::wal::Wal;
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
    /// Names of the writers started.
    started: Mutex<Vec<String>>,
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
            started: Mutex::default(),
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
        self.started.lock().unwrap().push(cfg.name.clone());
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

    /// Where a new reader of `name` (a writer's, so its position exists) would
    /// start; `None` at the end of the log.
    async fn position(&self, name: &str) -> Option<u64> {
        assert!(
            self.started.lock().unwrap().iter().any(|n| n == name),
            "no writer named {name} ran: a new reader would start at the end"
        );
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

fn metric(f: &Fixture, rec: &Recorder, name: &str, extra: &str) -> f64 {
    let url = format!("{}/api/v1/write", rec.url());
    f.scrape()
        .get_or_zero(&format!("{name}{{url=\"{url}\"{extra}}}"))
}
