//! End to end: the aggregator with a reconciler over a real git repository;
//! simulated collectors send OTLP (`edgewatch_model_info` / `_ready` under scope
//! `edgewatch.scrape`, `edgewatch_collector_info`) to its OTLP/HTTP port. A commit
//! changes a digest: `/api/v1/deployments` and `/federate` show Progressing → Synced;
//! a cluster that stops reporting goes Unknown, and Synced again when it is back.
//!
//! `fleet_in_process` runs the real aggregator library (`edgewatch_aggregator::start`)
//! with the reconciler, fleet and web routers served beside it on one more port (as the
//! aggregator will serve them once wired into `start`). `fleet_process` runs the same
//! scenario against the `edgewatch aggregator` process with everything on its HTTP port.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, get, model_request, parse_samples, post_otlp, ModelPod};

const D1: &str = "sha256:8486af7728e1214ac5f81c6b93d560078d357f2096d1b40c38a9ac8e1cd68767";
const D2: &str = "sha256:c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffee0001";
const APP: &str = "tensorflow-housing-app";
const MODEL: &str = "tensorflow-housing";
const KUSTOMIZATION: &str = "acm/odh-edge/apps/tensorflow-housing-app/kustomization.yaml";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn set_digest(repo: &Path, digest: &str) -> String {
    let p = repo.join(KUSTOMIZATION);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(
        &p,
        format!(
            "namespace: {APP}\ncommonLabels:\n  app: {APP}-1\n  model-name: {MODEL}\nresources:\n- ../../base\nimages:\n- name: edge-model-template-image\n  newName: quay.io/rhoai-edge/{MODEL}\n  digest: {digest}\n"
        ),
    )
    .unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", &format!("deploy {digest}")]);
    git(repo, &["rev-parse", "HEAD"])
}

fn make_repo(repo: &Path) -> String {
    std::fs::create_dir_all(repo).unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(repo.join("acm/odh-edge/base")).unwrap();
    std::fs::write(
        repo.join("acm/odh-edge/base/kustomization.yaml"),
        "resources: []\n",
    )
    .unwrap();
    set_digest(repo, D1)
}

fn reconciler_yaml(repo: &Path) -> String {
    format!(
        "reconciler:\n  gitops:\n    path: {}\n  clusters:\n    edge-a: [{APP}]\n    edge-b: [{APP}]\n  progress_deadline: 600s\n  interval: 300ms\nfleet:\n  down_after: 3s\n",
        repo.display()
    )
}

/// Simulated collectors: per cluster the digest its pod runs (None: silent).
type Running = Arc<Mutex<BTreeMap<&'static str, Option<&'static str>>>>;

fn spawn_collectors(otlp_http: u16, running: Running) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now: Vec<(&str, Option<&str>)> = running
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect();
            for (cluster, digest) in now {
                let Some(digest) = digest else { continue };
                let pod = ModelPod {
                    namespace: APP.into(),
                    pod: format!("{MODEL}-model-1-abc"),
                    deployment: format!("{MODEL}-model-1"),
                    model: MODEL.into(),
                    version: "1".into(),
                    image: format!("quay.io/rhoai-edge/{MODEL}"),
                    digest: digest.into(),
                    ready: true,
                };
                let body = model_request(cluster, "node-1", &[pod], "0.1.0-test");
                let (status, _) = post_otlp(otlp_http, body).await;
                assert_eq!(status, 200, "OTLP export to the aggregator");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// (state, desired digest, observed digest) of APP on `cluster` from the API.
async fn api_state(api: &str, cluster: &str) -> Option<(String, String, String)> {
    let (status, body) = get(&format!("{api}/api/v1/deployments")).await?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["deployments"].as_array()?.iter().find_map(|d| {
        (d["cluster"] == cluster && d["app"] == APP).then(|| {
            (
                d["state"].as_str().unwrap_or("").to_owned(),
                d["desired_digest"].as_str().unwrap_or("").to_owned(),
                d["observed_digest"].as_str().unwrap_or("").to_owned(),
            )
        })
    })
}

/// The `state` labels of APP on `cluster` on `/federate`.
async fn federated_states(federate: &str, cluster: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let Ok(r) = client
        .get(format!("{federate}/federate"))
        .query(&[("match[]", "edgewatch_deployment_status")])
        .send()
        .await
    else {
        return vec![];
    };
    let text = r.text().await.unwrap_or_default();
    parse_samples(&text)
        .into_iter()
        .filter(|s| s.label("cluster") == cluster && s.label("app") == APP && s.value == 1.0)
        .map(|s| format!("{}:{}", s.label("state"), s.label("desired_digest")))
        .collect()
}

async fn expect_state(api: &str, federate: &str, cluster: &str, state: &str, desired: &str) {
    let what = format!("{cluster} {state} (desired {desired})");
    eventually(Duration::from_secs(30), &what, || async {
        let s = api_state(api, cluster).await?;
        (s.0 == state && s.1 == desired).then_some(())
    })
    .await;
    let want = vec![format!("{state}:{desired}")];
    eventually(
        Duration::from_secs(10),
        &format!("/federate {what}"),
        || async { (federated_states(federate, cluster).await == want).then_some(()) },
    )
    .await;
}

async fn scenario(otlp_http: u16, api: &str, federate: &str, repo: &Path) {
    let running: Running = Arc::new(Mutex::new(
        [("edge-a", Some(D1)), ("edge-b", Some(D1))]
            .into_iter()
            .collect(),
    ));
    let collectors = spawn_collectors(otlp_http, running.clone());

    expect_state(api, federate, "edge-a", "Synced", D1).await;
    expect_state(api, federate, "edge-b", "Synced", D1).await;

    // Fleet API: both clusters, their node, collector version.
    let (_, fleet) = get(&format!("{api}/api/v1/fleet"))
        .await
        .expect("fleet API");
    let fleet: serde_json::Value = serde_json::from_str(&fleet).unwrap();
    let clusters = fleet["data"]["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2, "{fleet}");
    assert_eq!(clusters[0]["nodes"][0]["node"], "node-1");
    assert_eq!(clusters[0]["nodes"][0]["collector_version"], "0.1.0-test");

    // A commit changes the digest: Progressing until the pods run it, then Synced.
    let rev = set_digest(repo, D2);
    expect_state(api, federate, "edge-a", "Progressing", D2).await;
    expect_state(api, federate, "edge-b", "Progressing", D2).await;
    let (_, body) = get(&format!("{api}/api/v1/deployments")).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["revision"], rev.as_str());
    let summary = format!("digest {D2}: 0/2 clusters synced, 2 progressing");
    assert!(
        v["data"]["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["summary"] == summary.as_str()),
        "{body}"
    );
    running.lock().unwrap().insert("edge-a", Some(D2));
    running.lock().unwrap().insert("edge-b", Some(D2));
    expect_state(api, federate, "edge-a", "Synced", D2).await;
    expect_state(api, federate, "edge-b", "Synced", D2).await;
    let transitions = {
        let (_, body) = get(&format!("{api}/api/v1/deployments")).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["transitions"].clone()
    };
    assert!(
        transitions
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["cluster"] == "edge-a"
                && t["from"] == "Progressing"
                && t["to"] == "Synced"
                && t["revision"] == rev.as_str()),
        "{transitions}"
    );

    // edge-b stops reporting: Unknown (disconnected) after down_after; edge-a unaffected.
    running.lock().unwrap().insert("edge-b", None);
    expect_state(api, federate, "edge-b", "Unknown", D2).await;
    assert_eq!(api_state(api, "edge-a").await.unwrap().0, "Synced");
    running.lock().unwrap().insert("edge-b", Some(D2));
    expect_state(api, federate, "edge-b", "Synced", D2).await;

    // The status page renders the grid server-side.
    let (status, page) = get(&format!("{api}/")).await.expect("status page");
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "data-cluster=\"edge-b\" data-app=\"{APP}\" data-state=\"Synced\""
        )),
        "{page}"
    );
    collectors.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    make_repo(&repo);
    let yaml = format!(
        "receivers:\n  otlp:\n    http: 127.0.0.1:0\nhttp:\n  listen: 127.0.0.1:0\nstate:\n  path: {}\n{}",
        dir.path().join("state").display(),
        reconciler_yaml(&repo)
    );
    let cfg: edgewatch_config::AggregatorConfig =
        edgewatch_config::parse(&yaml, "aggregator.yaml").expect("config");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let agg = edgewatch_aggregator::start(&cfg, shutdown.clone())
        .await
        .expect("aggregator");
    let registry = prometheus::Registry::new();
    let r = edgewatch_aggregator::reconcile::Reconciler::new(&cfg, agg.store.clone(), &registry)
        .expect("reconciler")
        .expect("configured");
    let down_after = cfg.fleet.down_after.get();
    let app = r
        .router()
        .merge(edgewatch_aggregator::fleet::router(
            agg.store.clone(),
            down_after,
        ))
        .merge(edgewatch_aggregator::web::router(
            agg.store.clone(),
            down_after,
            Some(r.handle()),
        ));
    let task = tokio::spawn(r.run(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(edgewatch_aggregator::web::serve(
        listener,
        app,
        shutdown.clone(),
    ));
    let otlp_http = agg.otlp_http.expect("OTLP/HTTP listener").port();
    let federate = format!("http://{}", agg.http);

    scenario(otlp_http, &api, &federate, &repo).await;

    shutdown.cancel();
    let _ = task.await;
    let _ = server.await;
    let _ = agg.wait().await;
}

/// The same against the `edgewatch aggregator` process: needs the reconciler wired
/// into `edgewatch_aggregator::start` (routes `/`, `/api/v1/fleet`, `/api/v1/deployments`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn fleet_process() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    make_repo(&repo);
    let agg = common::Aggregator::start_with_extra(dir.path(), &reconciler_yaml(&repo)).await;
    let base = agg.url("");
    scenario(agg.http_otlp, &base, &base, &repo).await;
}
