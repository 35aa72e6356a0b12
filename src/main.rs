//! The `edgewatch` binary: one executable for every role (edge nodes run
//! `edgewatch-collector`, which holds only the collector).

mod bench;
mod demo;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use edgewatch::{report_validation, shutdown_on_signal, ConfigArg, Footprint, LogFormat};
use edgewatch_aggregator::rules::unittest;
use std::io::{stderr, stdout};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "edgewatch",
    version = edgewatch::VERSION,
    about = "Observability collector and fleet monitor for ML models at the Kubernetes edge"
)]
struct Cli {
    /// Log lines on stderr as `text`, or `json` (one JSON object per line) for log
    /// pipelines. The filter comes from EDGEWATCH_LOG, else RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge collector (one per node).
    Collector {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the core aggregator.
    Aggregator {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check a configuration file: prints `ok`, or `FILE:LINE:COL: what is wrong` and exits 2.
    Validate {
        #[arg(value_enum)]
        role: Role,
        file: PathBuf,
    },
    /// Run a local fleet (aggregator, three collectors, simulated model servers) on embedded defaults.
    Demo(demo::DemoArgs),
    /// Print a shell completion script (e.g. `edgewatch completions bash > /etc/bash_completion.d/edgewatch`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    /// Check rule files, as `promtool check rules`: exits 1 if any is invalid.
    #[command(subcommand)]
    Check(RulesCommand),
    /// Run rule unit tests (promtool's test file format), as `promtool test rules`.
    #[command(subcommand)]
    Test(RulesCommand),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Prometheus rule files (check) or rule unit-test files (test).
    Rules {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LoadgenCommand {
    /// A counting OTLP sink that checks `--sequence-check` sequences.
    Sink(edgewatch_loadgen::SinkArgs),
    /// K simulated edge collectors forwarding model-server series to an aggregator.
    Fleet(edgewatch_loadgen::FleetArgs),
    /// A counting Prometheus remote write receiver (samples, series, duplicates, order).
    RemoteWriteSink(edgewatch_loadgen::RemoteWriteSinkArgs),
    /// Prometheus scrape targets of which some misbehave (slow, huge, invalid, flapping).
    Targets(edgewatch_loadgen::TargetsArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Collector,
    Aggregator,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate { role, file } => return validate(*role, file),
        Command::Completions { shell } => {
            let mut out = std::io::stdout();
            clap_complete::generate(*shell, &mut Cli::command(), "edgewatch", &mut out);
            return ExitCode::SUCCESS;
        }
        Command::Check(RulesCommand::Rules { files }) => {
            return rules_exit(unittest::check_rules(files, &mut stdout(), &mut stderr()))
        }
        Command::Test(RulesCommand::Rules { files }) => {
            return rules_exit(unittest::test_rules(files, &mut stdout(), &mut stderr()))
        }
        Command::Collector { config } | Command::Aggregator { config } => require_config(config),
        _ => {}
    }
    let footprint = match cli.command {
        Command::Collector { .. } => Footprint::Edge,
        _ => Footprint::Default,
    };
    edgewatch::run_role("edgewatch", footprint, cli.log_format, run(cli.command))
}

/// A missing configuration is a usage error, reported before logging or the runtime
/// start (exit code 2).
fn require_config(config: &ConfigArg) {
    if let Err(e) = config.resolve() {
        Cli::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, e)
            .exit();
    }
}

fn rules_exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn validate(role: Role, file: &std::path::Path) -> ExitCode {
    match role {
        Role::Collector => edgewatch::validate_collector(file),
        // Rule files are part of the aggregator's configuration: check them too.
        Role::Aggregator => {
            match edgewatch_config::load::<edgewatch_config::AggregatorConfig>(file) {
                Ok(cfg) => {
                    report_validation(edgewatch_aggregator::rules::validate_rule_files(&cfg))
                }
                Err(e) => report_validation(Err(e)),
            }
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Collector { config } => edgewatch::run_collector(&config.resolve()?).await?,
        Command::Aggregator { config } => {
            let config = config.resolve()?;
            let cfg: edgewatch_config::AggregatorConfig = edgewatch_config::load(&config)?;
            let a = edgewatch_aggregator::start_reloadable(&cfg, &config, shutdown_on_signal())
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
        Command::Loadgen {
            sink: Some(LoadgenCommand::Fleet(args)),
            ..
        } => {
            let json = args.json;
            let report = edgewatch_loadgen::run_fleet(args).await?;
            println!(
                "{}",
                if json {
                    report.to_json()
                } else {
                    report.to_text()
                }
            );
        }
        Command::Loadgen {
            sink: Some(LoadgenCommand::RemoteWriteSink(args)),
            ..
        } => {
            let stop = shutdown_on_signal();
            edgewatch_loadgen::run_remote_write_sink(args, stop.cancelled_owned()).await?;
        }
        Command::Loadgen {
            sink: Some(LoadgenCommand::Targets(args)),
            ..
        } => {
            let stop = shutdown_on_signal();
            edgewatch_loadgen::run_targets(args, stop.cancelled_owned()).await?;
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
        Command::Validate { .. }
        | Command::Completions { .. }
        | Command::Check(_)
        | Command::Test(_) => {
            unreachable!("handled before the runtime starts")
        }
    }
    Ok(())
}
