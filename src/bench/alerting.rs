//! S7: alert latency, from the moment a condition becomes true in the aggregator to
//! the moment the webhook receives the firing notification (`group_wait: 0s`).
//!
//! Each trial makes a new series `edgewatch_bench_probe{trial="N"} 1` true through the
//! aggregator's OTLP/HTTP receiver; the rule `edgewatch_bench_probe > 0` (`for: 0s`)
//! fires at its next evaluation, and the route groups by `trial`, so every trial is a
//! new alert group that `group_wait: 0s` sends at once. Trials start at a spread of
//! phases of the evaluation interval (a pseudo-random pause before each), so the
//! latency samples the whole interval as real conditions do.

use super::procs::{free_port, AggPorts, Env};
use super::scenarios::Values;
use super::BenchArgs;
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The rule evaluation interval of the scenario.
pub const INTERVAL: Duration = Duration::from_secs(5);

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A webhook receiver recording when each trial's firing alert first arrived.
async fn webhook(port: u16, arrivals: Arrivals) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::{routing::post, Json, Router};
    let app = Router::new().route(
        "/hook",
        post(move |Json(body): Json<serde_json::Value>| {
            let arrivals = arrivals.clone();
            async move {
                let now = Instant::now();
                let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                for alert in body["alerts"].as_array().into_iter().flatten() {
                    if alert["status"] == "firing" {
                        if let Some(t) = alert["labels"]["trial"].as_str() {
                            a.entry(t.to_string()).or_insert(now);
                        }
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

fn probe(trial: usize) -> serde_json::Value {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string();
    serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bench"}}]},
        "scopeMetrics": [{"metrics": [{
            "name": "edgewatch_bench_probe",
            "gauge": {"dataPoints": [{
                "asDouble": 1.0,
                "timeUnixNano": ts,
                "attributes": [{"key": "trial", "value": {"stringValue": trial.to_string()}}]
            }]}
        }]}]
    }]})
}

pub async fn s7(args: &BenchArgs, run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let hook_port = free_port()?;
    let arrivals: Arrivals = Arc::default();
    let server = webhook(hook_port, arrivals.clone()).await?;
    let rules = env.path("s7-rules.yaml");
    std::fs::write(
        &rules,
        "groups:\n  - name: latency\n    rules:\n      - alert: BenchProbe\n        expr: edgewatch_bench_probe > 0\n        for: 0s\n",
    )?;
    let extra = format!(
        "evaluation_interval: {}s\nrule_files: [{}]\nalerting:\n  route:\n    receiver: hook\n    group_by: [trial]\n    group_wait: 0s\n    group_interval: 1m\n    repeat_interval: 1h\n  receivers:\n    - name: hook\n      webhook_configs: [{{url: 'http://127.0.0.1:{hook_port}/hook'}}]\n",
        INTERVAL.as_secs(),
        rules.display()
    );
    let agg = AggPorts::free()?;
    let a = env.aggregator_with("aggregator", agg, None, &extra).await?;
    let trials = if args.quick { 6 } else { 30 };
    let mut latencies = Vec::with_capacity(trials);
    let url = format!("http://127.0.0.1:{}/v1/metrics", agg.otlp_http);
    // A fixed pseudo-random sequence of pauses (xorshift), different per run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ run as u64;
    for trial in 0..trials {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pause = INTERVAL.mul_f64((x % 1000) as f64 / 1000.0);
        tokio::time::sleep(pause).await;
        let t0 = Instant::now();
        let r = env
            .http
            .post(&url)
            .json(&probe(trial))
            .send()
            .await
            .context("OTLP/HTTP export to the aggregator")?;
        if !r.status().is_success() {
            bail!("aggregator answered {} to the probe", r.status());
        }
        let key = trial.to_string();
        let arrived = loop {
            if let Some(t) = arrivals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .copied()
            {
                break t;
            }
            if t0.elapsed() > INTERVAL * 4 {
                bail!("trial {trial}: no notification after {:?}", t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        latencies.push(arrived.saturating_duration_since(t0).as_secs_f64());
    }
    a.stop().await;
    server.abort();
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Ok(Values::from([
        ("trials", trials as f64),
        ("interval_s", INTERVAL.as_secs_f64()),
        ("p50_s", q(0.5)),
        ("p99_s", q(0.99)),
        ("max_s", q(1.0)),
        ("min_s", q(0.0)),
    ]))
}
