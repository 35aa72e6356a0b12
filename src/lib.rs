//! What both executables share: logging, the tokio runtime, signal handling,
//! configuration checks and the collector role itself.
//!
//! `edgewatch` serves every role; `edgewatch-collector` is what an edge node runs.
//! Nothing here may reach the aggregator, the load generator or the bench harness:
//! the collector executable links this library, and its size on the node is the
//! reason it exists.

pub mod footprint;

use anyhow::Context;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// This build's version and git revision, as `--version` prints them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("EDGEWATCH_REVISION"),
    ")"
);

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the
    /// event's fields), for log pipelines.
    Json,
}

/// The variables holding a log filter, the first set one wins: `EDGEWATCH_LOG` is
/// kept from before `RUST_LOG` was honoured, and is more specific.
const LOG_FILTER_VARS: [&str; 2] = ["EDGEWATCH_LOG", "RUST_LOG"];

/// Logs to stderr in `format`, filtered by `EDGEWATCH_LOG` or else `RUST_LOG`
/// (`tracing_subscriber::EnvFilter` directives such as `info,edgewatch_collector=debug`;
/// default `info`).
pub fn init_logging(format: LogFormat) {
    let (filter, problem) = log_filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// The filter from the environment, and what was wrong with it when it could not
/// be used (logged once logging runs).
fn log_filter() -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    for var in LOG_FILTER_VARS {
        let Ok(directives) = std::env::var(var) else {
            continue;
        };
        if directives.trim().is_empty() {
            continue;
        }
        return match EnvFilter::try_new(&directives) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new("info"),
                Some(format!(
                    "{var}={directives:?} is not a log filter ({e}); logging at info"
                )),
            ),
        };
    }
    (EnvFilter::new("info"), None)
}

/// A role's configuration file: `-c/--config FILE`, or else `EDGEWATCH_CONFIG`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// The configuration file (YAML) [default: $EDGEWATCH_CONFIG].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Neither `-c/--config` nor `EDGEWATCH_CONFIG` names a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("no configuration file: give -c/--config FILE or set EDGEWATCH_CONFIG")]
pub struct NoConfig;

impl ConfigArg {
    /// The file to read: the flag's, else `EDGEWATCH_CONFIG`'s (when not empty).
    pub fn resolve(&self) -> Result<PathBuf, NoConfig> {
        self.config
            .clone()
            .or_else(|| {
                std::env::var_os("EDGEWATCH_CONFIG")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .ok_or(NoConfig)
    }
}

/// Which runtime a role gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footprint {
    /// Tokio's defaults: a worker per core.
    Default,
    /// The edge collector's: see [`edge_footprint`].
    Edge,
}

/// Starts logging and the runtime, runs `role` on it and turns its outcome into the
/// exit code; errors go to stderr behind `program: ` (as a log line in JSON).
pub fn run_role<F>(program: &str, footprint: Footprint, log_format: LogFormat, role: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    init_logging(log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if footprint == Footprint::Edge {
        edge_footprint(&mut builder);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A log pipeline reads stderr as JSON lines: the last one too.
            match log_format {
                LogFormat::Text => eprintln!("{program}: {e:#}"),
                LogFormat::Json => tracing::error!(error = format!("{e:#}"), "{program} failed"),
            }
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
    // Measured with the collector under steady OTLP load: RSS 32 → 17.5 MiB
    // (RssAnon 21 → 4 MiB).
    unsafe {
        libc::mallopt(-8, 2);
        libc::mallopt(-3, 256 << 10);
    }
}

/// Cancelled on SIGINT or SIGTERM (Kubernetes stops pods with SIGTERM).
pub fn shutdown_on_signal() -> CancellationToken {
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

/// Runs the collector with the configuration in `config` until SIGINT or SIGTERM.
pub async fn run_collector(config: &Path) -> anyhow::Result<()> {
    let cfg: edgewatch_config::CollectorConfig = edgewatch_config::load(config)?;
    let c = edgewatch_collector::start_reloadable(&cfg, config, shutdown_on_signal())
        .await
        .context("starting the collector")?;
    if footprint::release_enabled() {
        tokio::spawn(footprint::release_code_pages_every(
            std::time::Duration::from_secs(30),
        ));
    }
    c.wait().await?;
    Ok(())
}

/// Checks a collector configuration file; see [`report_validation`].
pub fn validate_collector(file: &Path) -> ExitCode {
    report_validation(edgewatch_config::load::<edgewatch_config::CollectorConfig>(file).map(|_| ()))
}

/// A configuration check's answer: `ok` on stdout, or the error (`FILE:LINE:COL: what
/// is wrong`) on stderr and exit code 2.
pub fn report_validation<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
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
