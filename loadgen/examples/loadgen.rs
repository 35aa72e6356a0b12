//! Stand-alone driver for development and benchmarks until `edgewatch loadgen` is wired:
//!
//! ```text
//! cargo run --release -p edgewatch-loadgen --example loadgen -- sink --listen 127.0.0.1:4317
//! cargo run --release -p edgewatch-loadgen --example loadgen -- --endpoint http://127.0.0.1:4317 --rate max --duration 10s
//! ```
//!
//! `LOADGEN_THREADS=N` sets the tokio worker threads (1 = current-thread runtime, i.e. one core).

use clap::{Parser, Subcommand};
use edgewatch_loadgen::{LoadgenArgs, SinkArgs};

#[derive(Parser)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    args: LoadgenArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the counting sink until Ctrl-C.
    Sink(SinkArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = std::env::var("LOADGEN_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok());
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Runtime::new()?,
    };
    rt.block_on(async move {
        match cli.cmd {
            Some(Cmd::Sink(args)) => {
                edgewatch_loadgen::run_sink(args, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
            }
            None => {
                let json = cli.args.json;
                let report = edgewatch_loadgen::run(cli.args).await?;
                if json {
                    println!("{}", report.to_json());
                } else {
                    println!("{}", report.to_text());
                }
                Ok(())
            }
        }
    })
}
