//! End to end: the `edgewatch aggregator` process with a reconciler over a real git
//! repository. Cluster `edge-a`'s pods report straight to the aggregator's OTLP/HTTP
//! port; cluster `edge-b` runs a real collector process (buffer, forwarder) that its
//! pods push to. A commit changes a digest: `/api/v1/deployments` and `/federate` show
//! Progressing → Synced; edge-b's collector is SIGKILLed mid-rollout (→ Unknown after
//! `down_after`), comes back on the same buffer and the cluster turns Synced.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgewatch_testkit::git::{commit, git, put};
use edgewatch_testkit::otlp::{model_request, ModelPod};
use edgewatch_testkit::roles::{Aggregator, Collector};
use edgewatch_testkit::{eventually, get, parse_samples};

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

const D1: &str = "sha256:8486af7728e1214ac5f81c6b93d560078d357f2096d1b40c38a9ac8e1cd68767";
const D2: &str = "sha256:c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffee0001";
const APP: &str = "tensorflow-housing-app";
const MODEL: &str = "tensorflow-housing";
const KUSTOMIZATION: &str = "acm/odh-edge/apps/tensorflow-housing-app/kustomization.yaml";

fn set_digest(repo: &Path, digest: &str) -> String {
    put(
        repo,
        KUSTOMIZATION,
        &format!(
            "namespace: {APP}\ncommonLabels:\n  app: {APP}-1\n  model-name: {MODEL}\nresources:\n- ../../base\nimages:\n- name: edge-model-template-image\n  newName: quay.io/rhoai-edge/{MODEL}\n  digest: {digest}\n"
        ),
    );
    commit(repo, &format!("deploy {digest}"))
}

fn make_repo(repo: &Path) -> String {
    std::fs::create_dir_all(repo).unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    put(
        repo,
        "acm/odh-edge/base/kustomization.yaml",
        "resources: []\n",
    );
    set_digest(repo, D1)
}

fn reconciler_yaml(repo: &Path) -> String {
    format!(
        "reconciler:\n  gitops:\n    path: {}\n  clusters:\n    edge-a: [{APP}]\n    edge-b: [{APP}]\n  progress_deadline: 600s\n  interval: 300ms\nfleet:\n  down_after: 3s\n  clusters: [edge-a, edge-b, edge-c]\n",
        repo.display()
    )
}

/// Per cluster: the OTLP/HTTP port its pods push to and the digest they run (None:
/// silent).
type Running = Arc<Mutex<BTreeMap<&'static str, (u16, Option<&'static str>)>>>;

fn spawn_pods(running: Running) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now: Vec<(&str, u16, Option<&str>)> = running
                .lock()
                .unwrap()
                .iter()
                .map(|(k, (port, d))| (*k, *port, *d))
                .collect();
            for (cluster, otlp_http, digest) in now {
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
                let sent = reqwest::Client::new()
                    .post(format!("http://127.0.0.1:{otlp_http}/v1/metrics"))
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await;
                // The test may kill this collector while an export is in
                // flight (it stops the cluster's pods first, but this loop may
                // already hold the old list): only a collector still meant to
                // run must answer.
                let still_running = running
                    .lock()
                    .unwrap()
                    .get(cluster)
                    .is_some_and(|(_, d)| d.is_some());
                match sent {
                    Ok(r) => assert_eq!(r.status(), 200, "OTLP export from {cluster}'s pod"),
                    Err(e) if still_running => panic!("OTLP export from {cluster}'s pod: {e}"),
                    Err(_) => {}
                }
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

fn set(running: &Running, cluster: &'static str, digest: Option<&'static str>) {
    if let Some(e) = running.lock().unwrap().get_mut(cluster) {
        e.1 = digest;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_with_a_collector_killed_mid_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    make_repo(&repo);
    let agg = Aggregator::start_with_extra(BIN, dir.path(), &reconciler_yaml(&repo)).await;
    let api = agg.url("");
    let federate = api.as_str();
    let mut edge_b =
        Collector::start(BIN, dir.path(), "edge-b", "edge-b", "node-1", agg.grpc, "").await;
    let running: Running = Arc::new(Mutex::new(
        [
            ("edge-a", (agg.http_otlp, Some(D1))),
            ("edge-b", (edge_b.http, Some(D1))),
        ]
        .into_iter()
        .collect(),
    ));
    let pods = spawn_pods(running.clone());

    expect_state(&api, federate, "edge-a", "Synced", D1).await;
    expect_state(&api, federate, "edge-b", "Synced", D1).await;

    // Fleet API: both clusters, their node, collector version; edge-c is owned
    // (fleet.clusters) but has never reported.
    let (_, fleet) = get(&format!("{api}/api/v1/fleet"))
        .await
        .expect("fleet API");
    let fleet: serde_json::Value = serde_json::from_str(&fleet).unwrap();
    let clusters = fleet["data"]["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 3, "{fleet}");
    assert_eq!(clusters[0]["nodes"][0]["node"], "node-1");
    assert_eq!(clusters[0]["nodes"][0]["collector_version"], "0.1.0-test");
    assert_eq!(clusters[2]["name"], "edge-c");
    assert_eq!(clusters[2]["reported"], false, "{fleet}");
    let m = edgewatch_testkit::Metrics::scrape(&format!("{api}/metrics")).await;
    assert_eq!(m.get("edgewatch_fleet_owned_clusters_unreported"), 1.0);
    assert_eq!(m.get("edgewatch_fleet_unowned_clusters"), 0.0);

    // A commit changes the digest: Progressing until the pods run it.
    let rev = set_digest(&repo, D2);
    expect_state(&api, federate, "edge-a", "Progressing", D2).await;
    expect_state(&api, federate, "edge-b", "Progressing", D2).await;
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
    set(&running, "edge-a", Some(D2));
    expect_state(&api, federate, "edge-a", "Synced", D2).await;

    // Mid-rollout, edge-b's collector dies: disconnected, not failed.
    set(&running, "edge-b", None);
    edge_b.proc.kill();
    expect_state(&api, federate, "edge-b", "Unknown", D2).await;
    assert_eq!(api_state(&api, "edge-a").await.unwrap().0, "Synced");

    // It comes back on the same buffer; its pods run the new digest.
    edge_b.respawn(dir.path()).await;
    set(&running, "edge-b", Some(D2));
    expect_state(&api, federate, "edge-b", "Synced", D2).await;

    let (_, body) = get(&format!("{api}/api/v1/deployments")).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let transitions = v["data"]["transitions"].as_array().unwrap();
    let seen = |cluster: &str, from: &str, to: &str| {
        transitions.iter().any(|t| {
            t["cluster"] == cluster
                && t["from"] == from
                && t["to"] == to
                && t["revision"] == rev.as_str()
        })
    };
    assert!(seen("edge-a", "Progressing", "Synced"), "{transitions:?}");
    assert!(
        seen("edge-b", "Progressing", "Unknown") && seen("edge-b", "Unknown", "Synced"),
        "{transitions:?}"
    );

    // The status page renders the grid server-side.
    let (status, page) = get(&format!("{api}/")).await.expect("status page");
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "data-cluster=\"edge-b\" data-app=\"{APP}\" data-state=\"Synced\""
        )),
        "{page}"
    );
    pods.abort();
}
