//! Rate accuracy of the load generator against the counting sink on 127.0.0.1: for
//! each protocol and target (10k and 100k points/s, 3 s), the achieved rate — by the
//! generator's report and by the sink's count — must be within ±5% of the target, the
//! generator's correctness requirement. A measurement on an idle machine, so not part
//! of the default test suite: `cargo bench -p edgewatch-loadgen --bench rate`.

use std::process::ExitCode;
use std::time::Duration;

use edgewatch_loadgen::{run, LoadgenArgs, Protocol, Rate, Sink, SinkArgs};

const TOLERANCE: f64 = 0.05;

struct Case {
    protocol: Protocol,
    rate: f64,
    batch: usize,
    concurrency: usize,
}

/// Whether one paced run came within [`TOLERANCE`] of its target; prints the numbers.
async fn measure(c: &Case, secs: f64) -> bool {
    let sink = Sink::start(&SinkArgs::new("127.0.0.1:0".parse().expect("address")))
        .await
        .expect("sink starts");
    let args = LoadgenArgs {
        endpoint: Some(sink.endpoint()),
        protocol: c.protocol,
        rate: Rate::PerSecond(c.rate),
        duration: Duration::from_secs_f64(secs),
        batch: c.batch,
        concurrency: c.concurrency,
        quiet: true,
        timeout: Duration::from_secs(5),
        ..LoadgenArgs::default()
    };
    let report = run(args).await.expect("loadgen run");
    let stats = sink.stop().await;
    let at_sink = stats.points as f64 / report.elapsed_s;
    let within = |v: f64| (v - c.rate).abs() <= c.rate * TOLERANCE;
    let ok = report.failed_requests == 0
        && within(report.achieved_rate)
        && within(at_sink)
        && report.elapsed_s < secs + 0.5;
    println!(
        "{:<5} target {:>8.0}/s: achieved {:>10.0}/s, at the sink {:>10.0}/s, elapsed {:.2} s, failed {}{}",
        c.protocol.to_string(),
        c.rate,
        report.achieved_rate,
        at_sink,
        report.elapsed_s,
        report.failed_requests,
        if ok { "" } else { "  OUT OF BAND" }
    );
    ok
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = if quick { 0.5 } else { 3.0 };
    let cases = [
        (Protocol::Grpc, 10_000.0, 100, 1),
        (Protocol::Http, 10_000.0, 100, 1),
        (Protocol::Grpc, 100_000.0, 200, 4),
        (Protocol::Http, 100_000.0, 200, 4),
    ]
    .map(|(protocol, rate, batch, concurrency)| Case {
        protocol,
        rate,
        batch,
        concurrency,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut all_ok = true;
    for c in &cases {
        all_ok &= rt.block_on(measure(c, secs));
    }
    if quick || all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
