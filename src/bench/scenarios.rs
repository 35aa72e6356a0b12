//! The scenarios S1–S6. Each run returns named values; the harness takes the median of
//! each value over the runs.

use super::procs::{AggPorts, ColPorts, Env, Perf, Sampler};
use super::BenchArgs;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub type Values = BTreeMap<&'static str, f64>;

const MIB: f64 = 1024.0 * 1024.0;

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub fn num(v: &serde_json::Value, k: &str) -> f64 {
    v.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN)
}

pub fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Waits until the collector's buffer is empty; returns how long it took.
pub async fn wait_drained(env: &Env, col: ColPorts, timeout: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        if let Ok(v) = env.metric(&col.metrics(), "edgewatch_buffer_entries").await {
            if v == 0.0 {
                return Ok(t.elapsed());
            }
        }
        if t.elapsed() > timeout {
            bail!("collector buffer not drained after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn perf_start(args: &BenchArgs, tag: &str, pid: u32) -> Option<Perf> {
    let dir = args.perf.as_ref()?;
    match Perf::start(dir, tag, pid) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("bench: perf: {e:#}");
            None
        }
    }
}

fn perf_finish(p: Option<Perf>, tag: &str) {
    if let Some(p) = p {
        match p.finish() {
            Ok(top) => eprintln!("bench: {tag} perf top (self time):\n{top}"),
            Err(e) => eprintln!("bench: perf report: {e:#}"),
        }
    }
}

/// S1: collector at 10k dp/s (batch 100, 1 sender, gRPC), durable + forwarding to a live
/// aggregator; the collector's CPU and RSS.
pub async fn s1(args: &BenchArgs, run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let agg = AggPorts::free()?;
    let col = ColPorts::free()?;
    let a = env.aggregator("aggregator", agg, None).await?;
    let c = env
        .collector("collector", col, &format!("127.0.0.1:{}", agg.grpc), None)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = avg_rss(c.pid).await;
    let dur = args.dur(60, 10);
    let sampler = Sampler::start(c.pid);
    let perf = perf_start(args, &format!("S1-run{run}"), c.pid);
    let rep = env
        .loadgen(
            "loadgen",
            &[
                env.collector_target(&col),
                s(&["--protocol", "grpc", "--rate", "10000", "--batch", "100"]),
                s(&["--concurrency", "1", "--duration", &secs(dur)]),
            ]
            .concat(),
            None,
        )
        .await?;
    let u = sampler.stop();
    perf_finish(perf, "S1");
    let received = env
        .metric(&col.metrics(), "edgewatch_received_points_total")
        .await?;
    c.stop().await;
    a.stop().await;
    Ok(Values::from([
        ("cpu_pct", u.cpu_pct),
        ("cpu_max_pct", u.cpu_max_pct),
        ("rss_avg_mib", u.rss_avg / MIB),
        ("rss_max_mib", u.rss_max / MIB),
        ("rss_idle_mib", idle / MIB),
        ("acked_rate", num(&rep, "achieved_rate")),
        ("acked_points", num(&rep, "acked_points")),
        ("received_points", received),
        ("failed_points", num(&rep, "failed_points")),
        (
            "ack_p99_ms",
            rep["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        ),
    ]))
}

/// S2: collector on core 0, loadgen + sink on core 1, `--rate max`; acknowledged dp/s and
/// no loss (received == acked == what the sink got after drain).
pub async fn s2(args: &BenchArgs, run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let sink_port = super::procs::free_port()?;
    let col = ColPorts::free()?;
    let sink = env.sink(sink_port, Some(1)).await?;
    let c = env
        .collector("collector", col, &format!("127.0.0.1:{sink_port}"), Some(0))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dur = args.dur(30, 5);
    let sampler = Sampler::start(c.pid);
    let perf = perf_start(args, &format!("S2-run{run}"), c.pid);
    let (rep, lg) = env
        .loadgen_sampled(
            "loadgen",
            &[
                env.collector_target(&col),
                s(&["--protocol", "grpc", "--rate", "max"]),
                s(&[
                    "--batch",
                    &args.s2_batch.to_string(),
                    "--concurrency",
                    &args.s2_concurrency.to_string(),
                ]),
                s(&["--duration", &secs(dur)]),
            ]
            .concat(),
            Some(1),
        )
        .await?;
    let u = sampler.stop();
    perf_finish(perf, "S2");
    let received = env
        .metric(&col.metrics(), "edgewatch_received_points_total")
        .await?;
    let drain = wait_drained(&env, col, Duration::from_secs(600)).await?;
    let stats: serde_json::Value = env
        .http
        .get(env.sink_stats(sink_port))
        .send()
        .await?
        .json()
        .await?;
    let sunk = num(&stats, "points");
    c.stop().await;
    sink.stop().await;
    let acked = num(&rep, "acked_points");
    Ok(Values::from([
        ("acked_rate", num(&rep, "achieved_rate")),
        ("acked_points", acked),
        ("failed_points", num(&rep, "failed_points")),
        ("received_points", received),
        ("sink_points", sunk),
        (
            "lost_points",
            (acked - sunk).max(0.0) + (acked - received).abs(),
        ),
        ("drain_after_s", drain.as_secs_f64()),
        ("cpu_pct", u.cpu_pct),
        ("rss_max_mib", u.rss_max / MIB),
        ("loadgen_cpu_pct", lg.cpu_pct),
    ]))
}

/// S3: a backlog built with the aggregator down, then the aggregator starts; drain time.
pub async fn s3(args: &BenchArgs, _run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let agg = AggPorts::free()?;
    let col = ColPorts::free()?;
    let c = env
        .collector("collector", col, &format!("127.0.0.1:{}", agg.grpc), None)
        .await?;
    let target = args.s3_backlog();
    let mut received = 0.0;
    let mut failed = 0.0;
    let t = Instant::now();
    while received < target as f64 {
        if t.elapsed() > Duration::from_secs(300) {
            bail!("could not build the backlog: {received} of {target} points in 300 s");
        }
        let rep = env
            .loadgen(
                "loadgen",
                &s(&[
                    "--endpoint",
                    &col.endpoint(),
                    "--rate",
                    "max",
                    "--batch",
                    "100",
                    "--concurrency",
                    "8",
                    "--duration",
                    "2s",
                ]),
                None,
            )
            .await?;
        failed += num(&rep, "failed_points");
        received = env
            .metric(&col.metrics(), "edgewatch_received_points_total")
            .await?;
    }
    let entries = env
        .metric(&col.metrics(), "edgewatch_buffer_entries")
        .await?;
    let bytes = env.metric(&col.metrics(), "edgewatch_buffer_bytes").await?;
    let fill_s = t.elapsed().as_secs_f64();
    let sampler = Sampler::start(c.pid);
    let t0 = Instant::now();
    let a = env.aggregator("aggregator", agg, None).await?;
    let agg_up = t0.elapsed();
    let drain = wait_drained(&env, col, Duration::from_secs(900)).await?;
    let total = agg_up + drain;
    let u = sampler.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ingested = env
        .metric(&agg.metrics(), "edgewatch_ingest_points_total")
        .await?;
    c.stop().await;
    a.stop().await;
    let rate = received / total.as_secs_f64();
    Ok(Values::from([
        ("backlog_points", received),
        ("backlog_entries", entries),
        ("backlog_disk_mib", bytes / MIB),
        ("fill_s", fill_s),
        ("fill_failed_points", failed),
        ("drain_s", total.as_secs_f64()),
        ("aggregator_start_s", agg_up.as_secs_f64()),
        ("drain_rate", rate),
        ("drain_x_10k", rate / 10_000.0),
        ("aggregator_ingested", ingested),
        ("rss_max_mib", u.rss_max / MIB),
        ("cpu_pct", u.cpu_pct),
    ]))
}

/// S4: aggregator on core 0, one loadgen with 100 senders on core 1, `--rate max`.
pub async fn s4(args: &BenchArgs, _run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let agg = AggPorts::free()?;
    let a = env.aggregator("aggregator", agg, Some(0)).await?;
    let dur = args.dur(30, 5);
    let before = env
        .metric(&agg.metrics(), "edgewatch_ingest_points_total")
        .await
        .unwrap_or(0.0);
    let sampler = Sampler::start(a.pid);
    let t = Instant::now();
    let (rep, lg) = env
        .loadgen_sampled(
            "loadgen",
            &[
                s(&[
                    "--endpoint",
                    &format!("http://127.0.0.1:{}", agg.grpc),
                    "--rate",
                    "max",
                ]),
                s(&[
                    "--batch",
                    &args.s4_batch.to_string(),
                    "--concurrency",
                    "100",
                    "--connections",
                    "100",
                ]),
                s(&["--duration", &secs(dur)]),
            ]
            .concat(),
            Some(1),
        )
        .await?;
    let wall = t.elapsed().as_secs_f64();
    let u = sampler.stop();
    let after = env
        .metric(&agg.metrics(), "edgewatch_ingest_points_total")
        .await?;
    let series = env
        .metric(&agg.metrics(), "edgewatch_store_series")
        .await
        .unwrap_or(f64::NAN);
    a.stop().await;
    Ok(Values::from([
        ("acked_rate", num(&rep, "achieved_rate")),
        ("ingest_rate", (after - before) / wall),
        ("failed_points", num(&rep, "failed_points")),
        ("cpu_pct", u.cpu_pct),
        ("rss_max_mib", u.rss_max / MIB),
        ("series", series),
        ("loadgen_cpu_pct", lg.cpu_pct),
    ]))
}

/// S5: 1,000,000 active series in the aggregator: RSS per series, one full /federate.
pub async fn s5(args: &BenchArgs, _run: usize) -> anyhow::Result<Values> {
    let env = Env::new(args)?;
    let agg = AggPorts::free()?;
    let a = env.aggregator("aggregator", agg, None).await?;
    let want = args.s5_series as f64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let empty = avg_rss(a.pid).await;
    let t = Instant::now();
    let mut series = 0.0;
    while series < want {
        if t.elapsed() > Duration::from_secs(600) {
            bail!("store has {series} of {want} series after 600 s");
        }
        env.loadgen(
            "loadgen",
            &s(&[
                "--endpoint",
                &format!("http://127.0.0.1:{}", agg.grpc),
                "--rate",
                "max",
                "--series",
                &args.s5_series.to_string(),
                "--batch",
                "1000",
                "--concurrency",
                "4",
                "--duration",
                "5s",
            ]),
            None,
        )
        .await?;
        series = env.metric(&agg.metrics(), "edgewatch_store_series").await?;
    }
    let load_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = avg_rss(a.pid).await;
    let url = format!("http://127.0.0.1:{}/federate", agg.http);
    let t = Instant::now();
    let body = env
        .http
        .get(&url)
        .query(&[("match[]", "{__name__=~\".+\"}")])
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let fed = t.elapsed().as_secs_f64();
    let rss_after_fed = avg_rss(a.pid).await;
    let samples = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count();
    a.stop().await;
    Ok(Values::from([
        ("series", series),
        ("load_s", load_s),
        ("rss_empty_mib", empty / MIB),
        ("rss_full_mib", full / MIB),
        ("bytes_per_series", (full - empty) / series),
        ("federate_s", fed),
        ("federate_mib", body.len() as f64 / MIB),
        ("federate_samples", samples as f64),
        ("rss_after_federate_mib", rss_after_fed / MIB),
    ]))
}

/// The average of 10 RSS samples 100 ms apart.
async fn avg_rss(pid: u32) -> f64 {
    let mut sum = 0.0;
    for _ in 0..10 {
        sum += super::procs::rss_bytes(pid).unwrap_or(0) as f64;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sum / 10.0
}

/// The limits measured in-process, each alone: prost decoding of the
/// max-throughput payloads (`--s2-batch` points each) on one thread, and
/// append+flush of the same bytes to sled (raw, one flush per 10 ms group) and
/// through the collector's `Buffer` (group commit, `--s2-concurrency`
/// appenders).
pub async fn s6(args: &BenchArgs, _run: usize) -> anyhow::Result<Values> {
    let batch = args.s2_batch;
    let payloads = limit_payloads(batch);
    let avg_len = payloads.iter().map(|p| p.len()).sum::<usize>() as f64 / payloads.len() as f64;
    let dur = args.dur(5, 2);
    let decode_rate = prost_decode_rate(payloads.clone(), batch, dur).await?;
    let dir = tempfile::Builder::new()
        .prefix("edgewatch-bench-s6-")
        .tempdir()?;
    let sled_rate = raw_sled_rate(dir.path().join("sled"), payloads.clone(), batch, dur).await?;
    let buffer_rate = buffer_append_rate(
        dir.path().join("buffer"),
        payloads,
        batch,
        args.s2_concurrency,
        dur,
    )
    .await?;
    Ok(Values::from([
        ("payload_bytes", avg_len),
        ("decode_rate", decode_rate),
        ("sled_rate", sled_rate),
        ("buffer_rate", buffer_rate),
    ]))
}

/// 256 load generator requests of `batch` points over 1000 series.
fn limit_payloads(batch: usize) -> Vec<bytes::Bytes> {
    let b = edgewatch_loadgen::PayloadBuilder::new(
        1000,
        batch,
        false,
        "bench-s6",
        1_700_000_000_000_000_000,
    );
    (0..256u64)
        .map(|k| {
            let mut buf = bytes::BytesMut::with_capacity(b.max_request_len());
            b.build(k, 1_700_000_000_000_000_000 + k * 1_000_000_000, &mut buf);
            buf.freeze()
        })
        .collect()
}

/// Points per second prost decodes on one thread.
async fn prost_decode_rate(
    ps: Vec<bytes::Bytes>,
    batch: usize,
    dur: Duration,
) -> anyhow::Result<f64> {
    Ok(tokio::task::spawn_blocking(move || {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use prost::Message;
        let t = Instant::now();
        let mut points = 0u64;
        let mut i = 0usize;
        while t.elapsed() < dur {
            for _ in 0..16 {
                let r =
                    ExportMetricsServiceRequest::decode(ps[i % ps.len()].clone()).expect("decode");
                points += batch as u64;
                std::hint::black_box(r);
                i += 1;
            }
        }
        points as f64 / t.elapsed().as_secs_f64()
    })
    .await?)
}

/// Points per second one thread inserts into a bare sled tree, flushing every
/// 10 ms.
async fn raw_sled_rate(
    path: std::path::PathBuf,
    ps: Vec<bytes::Bytes>,
    batch: usize,
    dur: Duration,
) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(4 << 20)
            .flush_every_ms(None)
            .open()?;
        let t = Instant::now();
        let mut last_flush = Instant::now();
        let mut seq = 0u64;
        while t.elapsed() < dur {
            db.insert(
                seq.to_be_bytes(),
                ps[(seq % ps.len() as u64) as usize].as_ref(),
            )?;
            seq += 1;
            if last_flush.elapsed() >= Duration::from_millis(10) {
                db.flush()?;
                last_flush = Instant::now();
            }
        }
        db.flush()?;
        Ok(seq as f64 * batch as f64 / t.elapsed().as_secs_f64())
    })
    .await?
}

/// Points per second `appenders` concurrent tasks append through the
/// collector's `Buffer` (group commit).
async fn buffer_append_rate(
    path: std::path::PathBuf,
    ps: Vec<bytes::Bytes>,
    batch: usize,
    appenders: usize,
    dur: Duration,
) -> anyhow::Result<f64> {
    let buf = edgewatch_collector::buffer::Buffer::open(
        edgewatch_collector::buffer::BufferOptions {
            path,
            max_bytes: 16 << 30,
            full_policy: edgewatch_collector::buffer::FullPolicy::Backpressure,
            max_age: None,
        },
        &prometheus::Registry::new(),
    )
    .context("opening the buffer")?;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..appenders {
        let buf = buf.clone();
        let ps = ps.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while t.elapsed() < dur {
                buf.append(batch as u64, ps[(w + n as usize * 7) % ps.len()].clone())
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut appends = 0u64;
    for task in tasks {
        appends += task.await?.context("append")?;
    }
    let rate = appends as f64 * batch as f64 / t.elapsed().as_secs_f64();
    buf.close();
    Ok(rate)
}
