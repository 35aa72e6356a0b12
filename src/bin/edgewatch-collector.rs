//! `edgewatch-collector`: the edge collector alone, for the DaemonSet.
//!
//! The same collector as `edgewatch collector`, without the aggregator, load
//! generator, demo and bench harness that the all-roles binary carries: an edge node
//! maps and pages in only the code it runs.

use clap::{CommandFactory, Parser, Subcommand};
use edgewatch::{ConfigArg, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "edgewatch-collector",
    version = edgewatch::VERSION,
    about = "edgewatch's edge collector (one per node): receive, enrich, buffer durably, forward",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    /// Log lines on stderr as `text`, or `json` (one JSON object per line) for log
    /// pipelines. The filter comes from EDGEWATCH_LOG, else RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a collector configuration file: prints `ok`, or `FILE:LINE:COL: what is wrong` and exits 2.
    Validate { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Validate { file }) = cli.command {
        return edgewatch::validate_collector(&file);
    }
    let config = match cli.config.resolve() {
        Ok(path) => path,
        Err(e) => Cli::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, e)
            .exit(),
    };
    edgewatch::run_role(
        "edgewatch-collector",
        edgewatch::Footprint::Edge,
        cli.log_format,
        async move { edgewatch::run_collector(&config).await },
    )
}
