//! `edgewatch demo`: a local fleet on embedded defaults, wired from the same
//! libraries the real roles use — one aggregator, three collectors (cluster `edge-a`
//! with two nodes, `edge-b` with one), and simulated OpenVINO Model Servers pushing
//! OVMS-like metrics over real OTLP/gRPC to their node's collector.

use anyhow::Context;
use edgewatch_config::{parse, AggregatorConfig, CollectorConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use rand::Rng;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the fleet keeps its sled data; a fresh temporary directory by default.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Added to every default port (aggregator 9090/14317/14318, collectors 4317.., admin 9464..).
    #[arg(long, default_value_t = 0)]
    port_offset: u16,
    /// Stop by itself after this long (e.g. `30s`); runs until Ctrl-C by default.
    #[arg(long)]
    duration: Option<edgewatch_config::Dur>,
    /// How often each simulated model server pushes its metrics.
    #[arg(long, default_value = "2s")]
    push_interval: edgewatch_config::Dur,
}

/// (cluster, node) of each simulated edge node; each runs its own collector.
const NODES: [(&str, &str); 3] = [
    ("edge-a", "node-1"),
    ("edge-a", "node-2"),
    ("edge-b", "node-1"),
];
/// (model, version) served on every node.
const MODELS: [(&str, &str); 2] = [("tensorflow-housing", "1"), ("bike-rental", "3")];

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
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
    let port = |p: u16| p + args.port_offset;
    let agg_yaml = format!(
        "receivers:\n  otlp:\n    grpc: 127.0.0.1:{}\n    http: 127.0.0.1:{}\nhttp:\n  listen: 127.0.0.1:{}\nstate:\n  path: {}\n",
        port(14317),
        port(14318),
        port(9090),
        data.join("aggregator").display()
    );
    let agg_cfg: AggregatorConfig = parse(&agg_yaml, "<demo aggregator>")?;
    let aggregator = edgewatch_aggregator::start(&agg_cfg, shutdown.clone())
        .await
        .context("starting the demo aggregator")?;

    let mut collectors = Vec::new();
    let mut servers = Vec::new();
    for (i, (cluster, node)) in NODES.iter().enumerate() {
        let step = 10 * i as u16;
        let yaml = format!(
            "cluster: {cluster}\nnode: {node}\nreceivers:\n  otlp:\n    grpc: 127.0.0.1:{}\n    http: 127.0.0.1:{}\nbuffer:\n  path: {}\n  max_bytes: 256MiB\nforward:\n  endpoint: http://{}\nadmin:\n  listen: 127.0.0.1:{}\n  self_metrics_interval: 5s\n",
            port(4317 + step),
            port(4318 + step),
            data.join(format!("collector-{cluster}-{node}")).display(),
            aggregator.otlp_grpc.context("demo aggregator has no gRPC receiver")?,
            port(9464 + i as u16),
        );
        let cfg: CollectorConfig = parse(&yaml, "<demo collector>")?;
        let c = edgewatch_collector::start(&cfg, shutdown.clone())
            .await
            .with_context(|| format!("starting the demo collector for {cluster}/{node}"))?;
        let endpoint = format!(
            "http://{}",
            c.otlp_grpc.context("demo collector has no gRPC receiver")?
        );
        for (model, version) in MODELS {
            let pod = format!("{model}-{cluster}-{node}");
            servers.push(tokio::spawn(model_server(
                endpoint.clone(),
                pod,
                model,
                version,
                args.push_interval.get(),
                shutdown.clone(),
            )));
        }
        println!(
            "collector {cluster}/{node}: OTLP gRPC {endpoint}, admin http://{}/metrics",
            c.admin
        );
        collectors.push(c);
    }
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
    println!("data:       {}", data.display());
    println!("Ctrl-C stops the fleet.");

    if let Some(d) = args.duration {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d.get()).await;
            stop.cancel();
        });
    }
    shutdown.cancelled().await;
    for s in servers {
        let _ = s.await;
    }
    for c in collectors {
        c.wait().await?;
    }
    aggregator.wait().await?;
    Ok(())
}

/// One simulated OpenVINO Model Server: cumulative request counters and a latency
/// histogram, as OVMS exposes them (`name`, `version` labels), pushed over OTLP.
async fn model_server(
    endpoint: String,
    pod: String,
    model: &'static str,
    version: &'static str,
    every: Duration,
    shutdown: CancellationToken,
) {
    let bounds: Vec<f64> = vec![1000.0, 5000.0, 10000.0, 50000.0, 100000.0, 500000.0];
    let mut success = 0u64;
    let mut fail = 0u64;
    let mut buckets = vec![0u64; bounds.len() + 1];
    let mut sum = 0f64;
    let start = now_nanos();
    let mut client: Option<MetricsServiceClient<tonic::transport::Channel>> = None;
    loop {
        {
            let mut rng = rand::rng();
            let n = rng.random_range(20..120u64);
            success += n;
            fail += u64::from(rng.random_bool(0.2));
            for _ in 0..n {
                let latency: f64 = rng.random_range(800.0..60000.0);
                sum += latency;
                let i = bounds
                    .iter()
                    .position(|b| latency <= *b)
                    .unwrap_or(bounds.len());
                buckets[i] += 1;
            }
        }
        let req = ovms_request(
            &pod, model, version, start, success, fail, &bounds, &buckets, sum,
        );
        if client.is_none() {
            client = MetricsServiceClient::connect(endpoint.clone()).await.ok();
        }
        if let Some(c) = client.as_mut() {
            if let Err(e) = c.export(req).await {
                tracing::debug!(error = %e, %pod, "demo model server: export failed");
                client = None;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn ovms_request(
    pod: &str,
    model: &str,
    version: &str,
    start: u64,
    success: u64,
    fail: u64,
    bounds: &[f64],
    buckets: &[u64],
    sum: f64,
) -> ExportMetricsServiceRequest {
    let now = now_nanos();
    let attrs = vec![kv("name", model), kv("version", version)];
    let counter = |name: &str, help: &str, v: u64| Metric {
        name: name.into(),
        description: help.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: attrs.clone(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(v as i64)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let metrics = vec![
        counter(
            "ovms_requests_success",
            "Number of successful requests to a model or a DAG.",
            success,
        ),
        counter(
            "ovms_requests_fail",
            "Number of failed requests to a model or a DAG.",
            fail,
        ),
        Metric {
            name: "ovms_request_time_us".into(),
            description: "Processing time of requests to a model or a DAG.".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attrs.clone(),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: buckets.iter().sum(),
                    sum: Some(sum),
                    bucket_counts: buckets.to_vec(),
                    explicit_bounds: bounds.to_vec(),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        },
        Metric {
            name: "ovms_current_requests".into(),
            description: "Number of inference requests currently in process.".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    attributes: attrs.clone(),
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(
                        rand::rng().random_range(0..8),
                    )),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "ovms"),
                    kv("service.instance.id", pod),
                    kv("k8s.pod.name", pod),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "ovms".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
