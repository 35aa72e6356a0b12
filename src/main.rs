//! The `edgewatch` binary: one executable for every role.

mod bench;
mod demo;
mod footprint;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "edgewatch",
    version,
    about = "Observability collector and fleet monitor for ML models at the Kubernetes edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge collector (one per node).
    Collector {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the core aggregator.
    Aggregator {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file: prints `ok`, or `FILE:LINE:COL: what is wrong` and exits 2.
    Validate {
        #[arg(value_enum)]
        role: Role,
        file: PathBuf,
    },
    /// Run a local fleet (aggregator, three collectors, simulated model servers) on embedded defaults.
    Demo(demo::DemoArgs),
    /// Run the benchmark scenarios and write the results into BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Generate OTLP metrics load against any OTLP receiver.
    #[command(args_conflicts_with_subcommands = true)]
    Loadgen {
        #[command(subcommand)]
        sink: Option<LoadgenCommand>,
        #[command(flatten)]
        args: edgewatch_loadgen::LoadgenArgs,
    },
}

#[derive(Subcommand)]
enum LoadgenCommand {
    /// A counting OTLP sink that checks `--sequence-check` sequences.
    Sink(edgewatch_loadgen::SinkArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Collector,
    Aggregator,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Validate { role, file } = &cli.command {
        return validate(*role, file);
    }
    init_logging();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if matches!(cli.command, Command::Collector { .. }) {
        edge_footprint(&mut builder);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgewatch: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgewatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An edge node gives the collector a sliver of a core: one worker thread (unless
/// `TOKIO_WORKER_THREADS` says otherwise) avoids cross-thread wake-ups on every
/// request, a small blocking pool bounds threads, and fewer malloc arenas keep RSS
/// down (glibc creates one per thread up to 8 × cores).
fn edge_footprint(builder: &mut tokio::runtime::Builder) {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    builder.max_blocking_threads(8);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread
    // exists. M_ARENA_MAX is -8 and M_MMAP_THRESHOLD -3 in glibc's malloc.h. A fixed
    // mmap threshold (glibc's initial 128 KiB otherwise rises after each large free)
    // keeps big blocks out of the arenas: sled's zeroed page tables (1.5 MiB per open
    // segment) stay untouched zero pages instead of memset heap, and the buffer
    // compactor's zstd tables (~10 MiB) go back to the system when it is done.
    // Measured in S1: RSS under load 32 → 17.5 MiB (RssAnon 21 → 4 MiB).
    unsafe {
        libc::mallopt(-8, 2);
        libc::mallopt(-3, 256 << 10);
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("EDGEWATCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn validate(role: Role, file: &std::path::Path) -> ExitCode {
    let result = match role {
        Role::Collector => edgewatch_config::load::<edgewatch_config::CollectorConfig>(file)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        // Rule files are part of the aggregator's configuration: check them too.
        Role::Aggregator => edgewatch_config::load::<edgewatch_config::AggregatorConfig>(file)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                edgewatch_aggregator::rules::validate_rule_files(&cfg).map_err(|e| e.to_string())
            }),
    };
    match result {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Cancelled on SIGINT or SIGTERM (Kubernetes stops pods with SIGTERM).
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Collector { config } => {
            let cfg: edgewatch_config::CollectorConfig = edgewatch_config::load(&config)?;
            let c = edgewatch_collector::start(&cfg, shutdown_on_signal())
                .await
                .context("starting the collector")?;
            tokio::spawn(footprint::release_code_pages_every(
                std::time::Duration::from_secs(30),
            ));
            c.wait().await?;
        }
        Command::Aggregator { config } => {
            let cfg: edgewatch_config::AggregatorConfig = edgewatch_config::load(&config)?;
            let a = edgewatch_aggregator::start(&cfg, shutdown_on_signal())
                .await
                .context("starting the aggregator")?;
            a.wait().await?;
        }
        Command::Demo(args) => demo::run(args, shutdown_on_signal()).await?,
        Command::Bench(args) => bench::run(args).await?,
        Command::Loadgen {
            sink: Some(LoadgenCommand::Sink(args)),
            ..
        } => {
            let stop = shutdown_on_signal();
            edgewatch_loadgen::run_sink(args, stop.cancelled_owned()).await?;
        }
        Command::Loadgen { sink: None, args } => {
            let json = args.json;
            let report = edgewatch_loadgen::run(args).await?;
            println!(
                "{}",
                if json {
                    report.to_json()
                } else {
                    report.to_text()
                }
            );
        }
        Command::Validate { .. } => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}
