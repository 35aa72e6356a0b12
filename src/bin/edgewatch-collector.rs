//! `edgewatch-collector`: the edge collector alone, for the DaemonSet.
//!
//! The same collector as `edgewatch collector`, without the aggregator, load
//! generator, demo and bench harness that the all-roles binary carries: an edge node
//! maps and pages in only the code it runs.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "edgewatch-collector",
    version,
    about = "edgewatch's edge collector (one per node): receive, enrich, buffer durably, forward",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// The collector's configuration file (YAML).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
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
    match (cli.command, cli.config) {
        (Some(Command::Validate { file }), _) => edgewatch::validate_collector(&file),
        (None, Some(config)) => edgewatch::run_role(
            "edgewatch-collector",
            edgewatch::Footprint::Edge,
            async move { edgewatch::run_collector(&config).await },
        ),
        (None, None) => unreachable!("clap requires --config without a subcommand"),
    }
}
