//! `edgewatch demo`: a local fleet on embedded defaults, wired from the same
//! libraries the real roles use — one aggregator, three collectors (cluster `edge-a`
//! with two nodes, `edge-b` with one), simulated OpenVINO Model Server pods pushing
//! OVMS-like metrics and their model metadata over real OTLP/gRPC to their node's
//! collector, and a real git GitOps repository. A minute in, a "PR merge" bumps one
//! app's digest; the clusters roll it out at different speeds, and `edge-c`, desired
//! but without a collector, stays Unknown.

mod gitops;
mod model_server;
mod ports;

use anyhow::Context;
// The demo's configs are generated text holding paths: nothing in them is for
// environment expansion.
use edgewatch_config::{parse_verbatim as parse, AggregatorConfig, CollectorConfig};
use model_server::{PodState, SharedPod};
use ports::Ports;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the fleet keeps its sled data; a fresh temporary directory by default.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Added to every port the demo binds (aggregator 9090/14317/14318, collectors'
    /// OTLP 4317/4318 + 10 per node, their admin 9464..): to run beside a Prometheus on 9090.
    #[arg(long, default_value_t = 0)]
    port_offset: u16,
    /// Stop by itself after this long (e.g. `30s`); runs until Ctrl-C by default.
    #[arg(long)]
    duration: Option<edgewatch_config::Dur>,
    /// How often each simulated model server pushes its metrics.
    #[arg(long, default_value = "2s")]
    push_interval: edgewatch_config::Dur,
    /// When the "PR merge" bumps tensorflow-housing-app's digest.
    #[arg(long, default_value = "60s")]
    bump_after: edgewatch_config::Dur,
}

/// (cluster, node) of each simulated edge node; each runs its own collector.
const NODES: [(&str, &str); 3] = [
    ("edge-a", "node-1"),
    ("edge-a", "node-2"),
    ("edge-b", "node-1"),
];
/// How long after the bump each node replaces its pod, and how long the new pod
/// takes to become ready: the clusters roll out at different speeds.
const ROLLOUT: [(&str, &str, u64, u64); 3] = [
    ("edge-a", "node-1", 5, 10),
    ("edge-a", "node-2", 20, 10),
    ("edge-b", "node-1", 45, 15),
];

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ports = Ports::new(args.port_offset, NODES.len() as u16)?;
    ports.check_free()?;
    let tmp;
    let data = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("edgewatch-demo-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let repo = data.join("gitops");
    gitops::init(&repo)?;
    let aggregator = start_aggregator(ports, &data, &repo, &shutdown).await?;
    let agg_grpc = aggregator
        .otlp_grpc
        .context("demo aggregator has no gRPC receiver")?;

    let mut fleet = Fleet::default();
    for (i, (cluster, node)) in NODES.iter().enumerate() {
        let at = Node {
            index: i,
            cluster,
            node,
        };
        let c = start_node(&args, ports, &data, at, agg_grpc, &shutdown, &mut fleet).await?;
        fleet.collectors.push(c);
    }
    fleet.servers.push(tokio::spawn(rollout(
        repo.clone(),
        fleet.pods,
        args.bump_after.get(),
        shutdown.clone(),
    )));
    print_endpoints(&aggregator, &repo, &data, &args);

    if let Some(d) = args.duration {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d.get()).await;
            stop.cancel();
        });
    }
    shutdown.cancelled().await;
    for s in fleet.servers {
        let _ = s.await;
    }
    for c in fleet.collectors {
        c.wait().await?;
    }
    aggregator.wait().await?;
    Ok(())
}

/// What the demo started on the simulated edge nodes.
#[derive(Default)]
struct Fleet {
    collectors: Vec<edgewatch_collector::Collector>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    /// (cluster, node, pod) of every simulated model server.
    pods: Vec<(String, String, SharedPod)>,
}

async fn start_aggregator(
    ports: Ports,
    data: &Path,
    repo: &Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<edgewatch_aggregator::Aggregator> {
    let agg_yaml = format!(
        "receivers:\n  otlp:\n    grpc: 127.0.0.1:{}\n    http: 127.0.0.1:{}\nhttp:\n  listen: 127.0.0.1:{}\nstate:\n  path: {}\nevaluation_interval: 15s\nfleet:\n  down_after: 30s\nreconciler:\n  gitops:\n    path: {}\n  progress_deadline: 120s\n  interval: 2s\n",
        ports.aggregator_grpc(),
        ports.aggregator_otlp_http(),
        ports.aggregator_http(),
        data.join("aggregator").display(),
        repo.display()
    );
    let agg_cfg: AggregatorConfig = parse(&agg_yaml, "<demo aggregator>")?;
    edgewatch_aggregator::start(&agg_cfg, shutdown.clone())
        .await
        .context("starting the demo aggregator")
}

/// One of [`NODES`]; `index` places its ports.
struct Node<'a> {
    index: usize,
    cluster: &'a str,
    node: &'a str,
}

/// Starts a node's collector and a simulated model server per app on it.
async fn start_node(
    args: &DemoArgs,
    ports: Ports,
    data: &Path,
    at: Node<'_>,
    aggregator: std::net::SocketAddr,
    shutdown: &CancellationToken,
    fleet: &mut Fleet,
) -> anyhow::Result<edgewatch_collector::Collector> {
    let Node {
        index: i,
        cluster,
        node,
    } = at;
    let i = i as u16;
    let yaml = format!(
        "cluster: {cluster}\nnode: {node}\nreceivers:\n  otlp:\n    grpc: 127.0.0.1:{}\n    http: 127.0.0.1:{}\nbuffer:\n  path: {}\n  max_bytes: 256MiB\nforward:\n  endpoint: http://{}\nadmin:\n  listen: 127.0.0.1:{}\n  self_metrics_interval: 5s\n",
        ports.collector_grpc(i),
        ports.collector_otlp_http(i),
        data.join(format!("collector-{cluster}-{node}")).display(),
        aggregator,
        ports.collector_admin(i),
    );
    let cfg: CollectorConfig = parse(&yaml, "<demo collector>")?;
    let c = edgewatch_collector::start(&cfg, shutdown.clone())
        .await
        .with_context(|| format!("starting the demo collector for {cluster}/{node}"))?;
    let endpoint = format!(
        "http://{}",
        c.otlp_grpc.context("demo collector has no gRPC receiver")?
    );
    for app in &gitops::APPS {
        let pod = Arc::new(Mutex::new(PodState {
            namespace: app.name.to_string(),
            pod: format!("{}-model-1-{}-{node}", app.model, 1),
            model: app.model.to_string(),
            version: "1".to_string(),
            digest: gitops::digest(app.model, 1),
            ready: true,
        }));
        fleet
            .pods
            .push((cluster.to_string(), node.to_string(), pod.clone()));
        fleet.servers.push(tokio::spawn(model_server::run(
            endpoint.clone(),
            pod,
            args.push_interval.get(),
            shutdown.clone(),
        )));
    }
    println!(
        "collector {cluster}/{node}: OTLP gRPC {endpoint}, admin http://{}/metrics",
        c.admin
    );
    Ok(c)
}

fn print_endpoints(
    aggregator: &edgewatch_aggregator::Aggregator,
    repo: &Path,
    data: &Path,
    args: &DemoArgs,
) {
    let http = aggregator.http;
    println!();
    println!(
        "aggregator: http://{http}/metrics (own metrics), OTLP gRPC {}",
        aggregator
            .otlp_grpc
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    println!(
        "federate:   curl -s 'http://{http}/federate?match[]=%7B__name__%3D~%22ovms_.*%22%7D'"
    );
    println!("            curl -s -G 'http://{http}/federate' --data-urlencode 'match[]={{cluster=\"edge-a\"}}'");
    println!("fleet page: http://{http}/   (deployments: http://{http}/api/v1/deployments)");
    println!(
        "gitops:     {} (a PR merge bumps tensorflow-housing-app in {})",
        repo.display(),
        args.bump_after
    );
    println!("data:       {}", data.display());
    println!("Ctrl-C stops the fleet.");
}

/// A minute in, the "PR merge" pins build 2 of the first app; each node then replaces
/// its pod (not ready on the new digest for a while, then ready) at its own pace.
async fn rollout(
    repo: PathBuf,
    pods: Vec<(String, String, SharedPod)>,
    after: Duration,
    stop: CancellationToken,
) {
    let app = &gitops::APPS[0];
    tokio::select! {
        _ = tokio::time::sleep(after) => {}
        _ = stop.cancelled() => return,
    }
    if let Err(e) = gitops::bump(&repo, app, 2) {
        tracing::error!(target: "edgewatch::demo", error = %e, "the PR merge failed");
        return;
    }
    println!(
        "demo: merged a PR pinning {} build 2 ({})",
        app.model,
        gitops::digest(app.model, 2)
    );
    let mut steps = Vec::new();
    for (cluster, node, replace_after, ready_after) in ROLLOUT {
        let Some((_, _, pod)) = pods.iter().find(|(c, n, p)| {
            c == cluster && n == node && p.lock().map(|p| p.model == app.model).unwrap_or(false)
        }) else {
            continue;
        };
        steps.push((Duration::from_secs(replace_after), pod.clone(), false));
        steps.push((
            Duration::from_secs(replace_after + ready_after),
            pod.clone(),
            true,
        ));
    }
    steps.sort_by_key(|(at, _, _)| *at);
    let start = tokio::time::Instant::now();
    for (at, pod, ready) in steps {
        tokio::select! {
            _ = tokio::time::sleep_until(start + at) => {}
            _ = stop.cancelled() => return,
        }
        if let Ok(mut p) = pod.lock() {
            p.digest = gitops::digest(app.model, 2);
            p.version = "2".to_string();
            p.pod = p.pod.replacen("-model-1-1-", "-model-1-2-", 1);
            p.ready = ready;
        }
    }
}
