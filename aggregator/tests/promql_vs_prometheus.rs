//! Our PromQL evaluator against a real Prometheus (Debian `prometheus`): the same
//! samples go to Prometheus by remote write and into our store directly, the same
//! expressions are evaluated at the same instant by both, and the results must
//! agree (label sets exactly, values within 1e-9 relative).

use std::collections::BTreeMap;

use edgewatch_aggregator::rules::eval::{self, Value};
use edgewatch_aggregator::store::{MetricType, Store, StoreOptions, WindowOptions, WindowScope};
use edgewatch_testkit::peers::Prometheus;
use prost::Message;

// Remote-write protobuf (prometheus/prompb), by hand.
#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

struct Series {
    name: &'static str,
    kind: MetricType,
    labels: Vec<(&'static str, String)>,
    samples: Vec<(i64, f64)>,
}

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples every 15s from now-10m to now-1m (Prometheus' head accepts them).
fn dataset(now_s: i64) -> Vec<Series> {
    let ts: Vec<i64> = (0..=36).map(|i| (now_s - 600 + 15 * i) * 1000).collect();
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    for inst in ["a", "b"] {
        for code in ["200", "500"] {
            let mut v = 0.0;
            let samples = ts
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    v += (rng.next() * 10.0).floor() + if code == "200" { 5.0 } else { 0.0 };
                    // A counter reset on instance b in the last 5 minutes.
                    if inst == "b" && code == "200" && i == 28 {
                        v = 3.0;
                    }
                    (t, v)
                })
                .collect();
            out.push(Series {
                name: "http_requests_total",
                kind: MetricType::Counter,
                labels: vec![
                    ("job", "api".into()),
                    ("instance", inst.into()),
                    ("code", code.into()),
                ],
                samples,
            });
        }
    }
    for (node, zone) in [("n1", "z1"), ("n2", "z1"), ("n3", "z2")] {
        let base = 15.0 + 10.0 * rng.next();
        let samples = ts
            .iter()
            .map(|&t| (t, base + 10.0 * rng.next() - 3.0))
            .collect();
        out.push(Series {
            name: "temperature",
            kind: MetricType::Gauge,
            labels: vec![("node", node.into()), ("zone", zone.into())],
            samples,
        });
    }
    for (node, rack) in [("n1", "r1"), ("n2", "r2")] {
        out.push(Series {
            name: "node_meta",
            kind: MetricType::Gauge,
            labels: vec![("node", node.into()), ("rack", rack.into())],
            samples: ts.iter().map(|&t| (t, 1.0)).collect(),
        });
    }
    for job in ["api", "web"] {
        let mut counts = [0.0f64; 5];
        let bounds = ["0.05", "0.1", "0.5", "1", "+Inf"];
        let mut per_bucket: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 5];
        for &t in &ts {
            // Observations this interval, spread over the buckets.
            let mut add = [0.0f64; 5];
            for a in add.iter_mut() {
                *a = (rng.next() * 6.0).floor();
            }
            let mut cum = 0.0;
            for (i, a) in add.iter().enumerate() {
                cum += a;
                counts[i] += cum;
                per_bucket[i].push((t, counts[i]));
            }
        }
        for (i, b) in bounds.iter().enumerate() {
            out.push(Series {
                name: "req_duration_seconds_bucket",
                kind: MetricType::Histogram,
                labels: vec![("job", job.into()), ("le", (*b).into())],
                samples: per_bucket[i].clone(),
            });
        }
    }
    // Collectors: n1 reports until the end, n2 stopped 4 minutes ago.
    for (node, stop) in [("n1", ts.len()), ("n2", ts.len() - 12)] {
        out.push(Series {
            name: "edgewatch_collector_info",
            kind: MetricType::Gauge,
            labels: vec![
                ("cluster", "edge-a".into()),
                ("node", node.into()),
                ("instance_id", format!("id-{node}")),
                ("version", "0.1.0".into()),
                ("job", "edgewatch-collector".into()),
            ],
            samples: ts[..stop].iter().map(|&t| (t, 1.0)).collect(),
        });
    }
    for (node, age) in [("n1", 900.0), ("n2", 30.0), ("n3", -1.0)] {
        out.push(Series {
            name: "edgewatch_buffer_oldest_timestamp_seconds",
            kind: MetricType::Gauge,
            labels: vec![("node", node.into())],
            samples: ts
                .iter()
                .map(|&t| {
                    (
                        t,
                        if age < 0.0 {
                            0.0
                        } else {
                            t as f64 / 1000.0 - age
                        },
                    )
                })
                .collect(),
        });
    }
    // A counter that starts 3 minutes ago near zero (rate extrapolation stops at zero).
    out.push(Series {
        name: "new_counter_total",
        kind: MetricType::Counter,
        labels: vec![("job", "api".into())],
        samples: ts[ts.len() - 9..]
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, 2.0 + 5.0 * i as f64))
            .collect(),
    });
    for (node, drops) in [("n1", true), ("n2", false)] {
        let mut v = 100.0;
        out.push(Series {
            name: "edgewatch_buffer_dropped_points_total",
            kind: MetricType::Counter,
            labels: vec![("node", node.into())],
            samples: ts
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    if drops && i > 30 {
                        v += 7.0;
                    }
                    (t, v)
                })
                .collect(),
        });
    }
    out
}

const EXPRS: &[&str] = &[
    "http_requests_total",
    "rate(http_requests_total[5m])",
    "increase(http_requests_total[5m])",
    "increase(http_requests_total[2m])",
    "rate(http_requests_total[50s])",
    "irate(http_requests_total[2m])",
    "delta(temperature[5m])",
    "rate(http_requests_total[1m] offset 2m)",
    "http_requests_total offset 3m",
    "avg_over_time(temperature[5m])",
    "min_over_time(temperature[5m])",
    "max_over_time(temperature[5m])",
    "sum_over_time(temperature[5m])",
    "count_over_time(temperature[3m])",
    "resets(http_requests_total[10m])",
    "changes(temperature[10m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (instance) (http_requests_total)",
    "avg by (zone) (temperature)",
    "min by (zone) (temperature)",
    "max(temperature)",
    "count by (code) (http_requests_total)",
    "topk(2, temperature)",
    "temperature > 20",
    "temperature > bool 20",
    "20 < temperature",
    "temperature * 2 - 1",
    "2 / temperature",
    "-temperature",
    "1 - temperature / 100 < 0.8",
    "clamp_max(temperature, 25)",
    "http_requests_total / on (instance) group_left sum by (instance) (http_requests_total)",
    "temperature * on (node) group_left (rack) node_meta",
    "rate(http_requests_total{code=\"500\"}[5m]) / ignoring (code) rate(http_requests_total{code=\"200\"}[5m])",
    "sum by (code) (rate(http_requests_total[5m])) > bool 1",
    "histogram_quantile(0.9, sum by (le) (rate(req_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(req_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.99, req_duration_seconds_bucket)",
    "histogram_quantile(0.1, sum by (job, le) (increase(req_duration_seconds_bucket[3m])))",
    "time() - timestamp(edgewatch_collector_info)",
    "time() - timestamp(edgewatch_collector_info) > 120",
    "timestamp(temperature)",
    "absent(nonexistent_metric{job=\"x\"})",
    "absent(temperature)",
    "vector(1) + 2",
    "scalar(max(temperature))",
    "time()",
    "temperature and on (node) node_meta",
    "temperature unless on (node) node_meta",
    "node_meta or temperature",
    "time() - edgewatch_buffer_oldest_timestamp_seconds > 600 and edgewatch_buffer_oldest_timestamp_seconds > 0",
    "increase(edgewatch_buffer_dropped_points_total[5m]) > 0",
    "rate(new_counter_total[5m])",
    "increase(new_counter_total[10m])",
    "delta(new_counter_total[1m])",
    "absent_over_time(new_counter_total[1m])",
    "absent_over_time(nothing_here{a=\"b\"}[1m])",
    "last_over_time(temperature[2m])",
    "count(temperature > 20)",
    "bottomk(1, temperature)",
    "group by (zone) (temperature)",
    "timestamp(temperature offset 2m)",
    "max by (zone) (temperature) / on (zone) group_left min by (zone) (temperature)",
    "sum without (code) (rate(http_requests_total[3m])) * 60",
    "abs(delta(temperature[4m]))",
    "clamp_min(temperature, 22) - 22",
    "http_requests_total % 7",
    "temperature ^ 2 >= 400",
    "temperature != bool 20",
    // Both must fail: many-to-many / implicit many-to-one / duplicate label sets.
    "temperature * on (zone) node_meta",
    "temperature * on (zone) sum by (zone) (temperature)",
    "{__name__=~\"edgewatch_buffer_.*\"} + 1",
];

type Result_ = Result<(Option<f64>, BTreeMap<BTreeMap<String, String>, f64>), String>;

fn parse_value(v: &serde_json::Value) -> f64 {
    match v[1].as_str().unwrap() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap(),
    }
}

async fn prometheus_query(client: &reqwest::Client, port: u16, q: &str, at: f64) -> Result_ {
    let r: serde_json::Value = client
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[("query", q), ("time", &format!("{at:.3}"))])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if r["status"] != "success" {
        return Err(r["error"].as_str().unwrap_or("?").to_string());
    }
    let data = &r["data"];
    match data["resultType"].as_str() {
        Some("scalar") => Ok((Some(parse_value(&data["result"])), BTreeMap::new())),
        Some("vector") => {
            let mut out = BTreeMap::new();
            for e in data["result"].as_array().unwrap() {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(e["metric"].clone()).unwrap();
                out.insert(labels, parse_value(&e["value"]));
            }
            Ok((None, out))
        }
        other => Err(format!("unexpected result type {other:?}")),
    }
}

fn ours(store: &Store, q: &str, at_ms: i64) -> Result_ {
    let e = promql_parser::parser::parse(q)?;
    eval::check(&e)?;
    match eval::eval(&e, store, at_ms).map_err(|e| e.to_string())? {
        Value::Scalar(s) => Ok((Some(s), BTreeMap::new())),
        Value::Vector(v) => Ok((None, v.into_iter().map(|s| (s.labels, s.value)).collect())),
        other => Err(format!("unexpected value {other:?}")),
    }
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= 1e-9 * scale
}

#[tokio::test]
async fn same_results_as_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let prom =
        Prometheus::start_with_config(dir.path(), "global:\n  scrape_interval: 1h\n", &[]).await;
    let port = prom.port;
    let client = reqwest::Client::new();

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let now_s = now_ms / 1000;
    let data = dataset(now_s);

    // Remote write.
    let req = WriteRequest {
        timeseries: data
            .iter()
            .map(|s| {
                let mut labels: Vec<Label> = s
                    .labels
                    .iter()
                    .map(|(k, v)| Label {
                        name: k.to_string(),
                        value: v.clone(),
                    })
                    .chain(std::iter::once(Label {
                        name: "__name__".into(),
                        value: s.name.into(),
                    }))
                    .collect();
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                TimeSeries {
                    labels,
                    samples: s
                        .samples
                        .iter()
                        .map(|&(timestamp, value)| Sample { value, timestamp })
                        .collect(),
                }
            })
            .collect(),
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let resp = client
        .post(format!("http://127.0.0.1:{port}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "remote write: {} {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );

    // Our store.
    let store = Store::new(StoreOptions::default(), &prometheus::Registry::new());
    store.set_window(WindowOptions {
        scope: WindowScope::All,
        ..WindowOptions::default()
    });
    for s in &data {
        let fam = store.family(s.name, s.kind, "", "");
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for &(t, v) in &s.samples {
            store.write(fam, s.name, &labels, v, t, now_ms);
        }
    }

    let mut table =
        String::from("| expression | at | prometheus | ours | match |\n|---|---|---|---|---|\n");
    let mut mismatches = Vec::new();
    let mut nonempty = 0;
    // Aligned with the samples' offsets and not.
    for (at_ms, q) in [now_s * 1000 - 30_000, now_s * 1000 - 127_500]
        .into_iter()
        .flat_map(|t| EXPRS.iter().map(move |q| (t, q)))
    {
        let at = at_ms as f64 / 1000.0;
        let p = prometheus_query(&client, port, q, at).await;
        let o = ours(&store, q, at_ms);
        let desc = |r: &Result_| match r {
            Ok((Some(s), _)) => format!("scalar {s}"),
            Ok((None, v)) => format!("{} series", v.len()),
            Err(e) => format!("error: {e}"),
        };
        let ok = match (&p, &o) {
            (Ok((ps, pv)), Ok((os, ov))) => {
                let scalar_ok = match (ps, os) {
                    (Some(a), Some(b)) => close(*a, *b),
                    (None, None) => true,
                    _ => false,
                };
                scalar_ok
                    && pv.len() == ov.len()
                    && pv
                        .iter()
                        .all(|(l, v)| ov.get(l).is_some_and(|w| close(*v, *w)))
            }
            // Both reject the expression (messages differ in detail).
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if let Ok((s, v)) = &p {
            if s.is_some() || !v.is_empty() {
                nonempty += 1;
            }
        }
        table.push_str(&format!(
            "| `{q}` | now-{}s | {} | {} | {} |\n",
            (now_s * 1000 - at_ms) as f64 / 1000.0,
            desc(&p),
            desc(&o),
            if ok { "yes" } else { "NO" }
        ));
        if !ok {
            mismatches.push(format!("{q}\n  prometheus: {p:?}\n  ours:       {o:?}"));
        }
    }
    println!("{table}");
    assert!(EXPRS.len() >= 30);
    assert!(
        nonempty >= 28,
        "too many empty results: {nonempty}\n{table}"
    );
    assert!(mismatches.is_empty(), "{}\n{table}", mismatches.join("\n"));
}
