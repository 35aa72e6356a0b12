//! GitOps parsing on real git repositories (made with the `git` CLI), the
//! reconciler over a store, the rule YAML, and the status page in headless
//! Chromium.

use std::path::Path;
use std::sync::Arc;

use edgewatch_aggregator::reconcile::gitops::{self, Source};
use edgewatch_aggregator::reconcile::{Reconciler, RULES_YAML, STATUS_METRIC};
use edgewatch_aggregator::store::{MetricType, Selector, Store, StoreOptions};
use edgewatch_config::AggregatorConfig;
use edgewatch_testkit::git::{commit, git, put};
use edgewatch_testkit::now_ms;
use edgewatch_testkit::peers::Chromium;

const D1: &str = "sha256:8486af7728e1214ac5f81c6b93d560078d357f2096d1b40c38a9ac8e1cd68767";
const D2: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const D3: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn app_kustomization(app: &str, model: &str, digest: &str) -> String {
    format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {app}\nnamePrefix: {model}-\ncommonLabels:\n  app: {app}-1\n  model-name: {model}\nresources:\n- ../../base\nimages:\n- name: edge-model-template-image\n  newName: quay.io/rhoai-edge/{model}\n  digest: {digest}\n"
    )
}

/// An ai-edge shaped repository: base, two apps, two clusters.
fn ai_edge_repo(root: &Path) -> String {
    git(root, &["init", "-q", "-b", "main"]);
    put(
        root,
        "acm/odh-edge/base/kustomization.yaml",
        "resources:\n- deployment.yaml\n",
    );
    put(
        root,
        "acm/odh-edge/base/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: model-1\nspec:\n  progressDeadlineSeconds: 600\n  template:\n    spec:\n      containers:\n      - name: model\n        image: edge-model-template-image\n",
    );
    put(
        root,
        "acm/odh-edge/apps/tensorflow-housing-app/kustomization.yaml",
        &app_kustomization("tensorflow-housing-app", "tensorflow-housing", D1),
    );
    put(
        root,
        "acm/odh-edge/apps/bike-rental-app/kustomization.yaml",
        &app_kustomization("bike-rental-app", "bike-rentals-auto-ml", D2),
    );
    put(
        root,
        "clusters/edge-a/kustomization.yaml",
        "resources:\n- ../../acm/odh-edge/apps/tensorflow-housing-app\n- ../../acm/odh-edge/apps/bike-rental-app\n",
    );
    put(
        root,
        "clusters/edge-b/kustomization.yaml",
        "resources:\n- ../../acm/odh-edge/apps/bike-rental-app/\n",
    );
    commit(root, "initial")
}

#[test]
fn ai_edge_layout_apps_clusters_revision() {
    let dir = tempfile::tempdir().unwrap();
    let head = ai_edge_repo(dir.path());
    let l = gitops::load(dir.path(), None).expect("loads");
    assert!(l.issues.is_empty(), "{:?}", l.issues);
    let d = l.desired;
    assert_eq!(d.revision, head);
    assert_eq!(d.apps.len(), 2);
    let h = &d.apps["tensorflow-housing-app"];
    assert_eq!(h.model, "tensorflow-housing");
    assert_eq!(h.digest, D1);
    assert_eq!(h.image, "quay.io/rhoai-edge/tensorflow-housing");
    assert_eq!(h.namespace.as_deref(), Some("tensorflow-housing-app"));
    assert_eq!(
        d.clusters["edge-a"].iter().collect::<Vec<_>>(),
        ["bike-rental-app", "tensorflow-housing-app"]
    );
    assert_eq!(
        d.clusters["edge-b"].iter().collect::<Vec<_>>(),
        ["bike-rental-app"]
    );

    // The config's mapping wins; a repo cluster not in it is reported.
    let cfg = [("edge-a".to_string(), vec!["bike-rental-app".to_string()])]
        .into_iter()
        .collect();
    let l = gitops::load(dir.path(), Some(&cfg)).expect("loads");
    assert_eq!(l.desired.clusters.len(), 1);
    assert_eq!(l.desired.clusters["edge-a"].len(), 1);
    let msgs: Vec<String> = l.issues.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        msgs,
        ["clusters/edge-b/kustomization.yaml:1: unknown cluster \"edge-b\" (not in reconciler.clusters); ignored"]
    );
}

#[test]
fn commits_change_digests_and_a_broken_file_keeps_the_last_good_state() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let first = ai_edge_repo(root);
    let mut src = Source::new(root.to_path_buf(), None);
    assert!(src.poll());
    assert!(!src.poll(), "nothing changed");
    assert_eq!(src.desired.as_ref().unwrap().revision, first);

    let app = "acm/odh-edge/apps/tensorflow-housing-app/kustomization.yaml";
    put(
        root,
        app,
        &app_kustomization("tensorflow-housing-app", "tensorflow-housing", D3),
    );
    let second = commit(root, "bump housing");
    assert!(src.poll());
    let d = src.desired.clone().unwrap();
    assert_eq!(d.revision, second);
    assert_eq!(d.apps["tensorflow-housing-app"].digest, D3);
    assert!(!src.stale);

    // Broken YAML on line 7 (an unclosed flow mapping), committed.
    let mut text = app_kustomization("tensorflow-housing-app", "tensorflow-housing", D1);
    text = text.replace(
        "  model-name: tensorflow-housing\n",
        "  model-name: {tensorflow-housing\n",
    );
    put(root, app, &text);
    let third = commit(root, "broken");
    assert!(src.poll());
    assert!(src.stale);
    assert_eq!(
        src.desired.as_ref().unwrap().revision,
        second,
        "last good state in force"
    );
    assert_eq!(
        src.desired.as_ref().unwrap().apps["tensorflow-housing-app"].digest,
        D3
    );
    assert_eq!(src.issues.len(), 1, "{:?}", src.issues);
    let msg = src.issues[0].to_string();
    assert!(msg.starts_with(&format!("{app}:")), "{msg}");
    let line = src.issues[0].line;
    assert!((7..=9).contains(&line), "{msg}");
    assert_ne!(third, second);

    // Fixed: the new state applies.
    put(
        root,
        app,
        &app_kustomization("tensorflow-housing-app", "tensorflow-housing", D1),
    );
    let fourth = commit(root, "fixed");
    assert!(src.poll());
    assert!(!src.stale);
    assert_eq!(src.desired.as_ref().unwrap().revision, fourth);
    assert_eq!(
        src.desired.as_ref().unwrap().apps["tensorflow-housing-app"].digest,
        D1
    );
}

#[test]
fn bad_input_is_located_and_the_rest_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ai_edge_repo(root);
    // Bad digest.
    put(
        root,
        "acm/odh-edge/apps/bad-digest-app/kustomization.yaml",
        &app_kustomization("bad-digest-app", "x", "sha256:1234"),
    );
    // Duplicate app name (same directory name elsewhere).
    put(
        root,
        "other/apps/bike-rental-app/kustomization.yaml",
        &app_kustomization("bike-rental-app", "bike-copy", D3),
    );
    // Remote base.
    put(
        root,
        "acm/odh-edge/apps/remote-app/kustomization.yaml",
        &format!(
            "commonLabels:\n  model-name: remote\nresources:\n- https://github.com/example/edge//base?ref=v1\nimages:\n- name: m\n  newName: quay.io/x/remote\n  digest: {D3}\n"
        ),
    );
    // A plain Deployment manifest counts as an app.
    put(
        root,
        "plain/llm.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: llm\n  namespace: llm\n  labels:\n    app: llm-app\n    model-name: llama\nspec:\n  template:\n    spec:\n      containers:\n      - name: m\n        image: quay.io/x/llama@{D2}\n"
        ),
    );
    // A cluster referencing an app that does not exist.
    put(
        root,
        "clusters/edge-c/kustomization.yaml",
        "resources:\n- ../../plain/llm.yaml\n- ../../acm/odh-edge/apps/nope\n",
    );
    commit(root, "bad input");
    let l = gitops::load(root, None).expect("semantic errors do not fail the load");
    let msgs: Vec<String> = l.issues.iter().map(|i| i.to_string()).collect();
    let has = |needle: &str| msgs.iter().any(|m| m.contains(needle));
    assert!(
        has("acm/odh-edge/apps/bad-digest-app/kustomization.yaml:13: app bad-digest-app: image edge-model-template-image: digest \"sha256:1234\" is not sha256:<64 lowercase hex>"),
        "{msgs:#?}"
    );
    assert!(has("other/apps/bike-rental-app/kustomization.yaml:1: duplicate app name \"bike-rental-app\""), "{msgs:#?}");
    assert!(
        has("acm/odh-edge/apps/remote-app/kustomization.yaml:4: remote base \"https://github.com/example/edge//base?ref=v1\" is not followed"),
        "{msgs:#?}"
    );
    assert!(
        has("clusters/edge-c/kustomization.yaml:3: resource \"../../acm/odh-edge/apps/nope\" is not an app of this repository"),
        "{msgs:#?}"
    );
    let d = l.desired;
    assert!(!d.apps.contains_key("bad-digest-app"));
    assert_eq!(
        d.apps["bike-rental-app"].digest, D2,
        "the first definition stays"
    );
    assert_eq!(d.apps["llm-app"].model, "llama");
    assert_eq!(d.apps["llm-app"].digest, D2);
    assert_eq!(d.apps["remote-app"].digest, D3);
    assert_eq!(d.clusters["edge-c"].iter().collect::<Vec<_>>(), ["llm-app"]);
    assert_eq!(d.clusters["edge-a"].len(), 2);

    // Unknown app in the config's mapping.
    let cfg = [(
        "edge-a".to_string(),
        vec!["bike-rental-app".to_string(), "ghost".to_string()],
    )]
    .into_iter()
    .collect();
    let l = gitops::load(root, Some(&cfg)).unwrap();
    assert!(l
        .issues
        .iter()
        .any(|i| i.to_string() == "config reconciler.clusters.edge-a: unknown app \"ghost\" (not in the GitOps repository)"));
    assert_eq!(l.desired.clusters["edge-a"].len(), 1);
}

#[test]
fn digest_validation() {
    assert!(gitops::valid_digest(D1));
    assert!(!gitops::valid_digest(&D1.to_uppercase()));
    assert!(!gitops::valid_digest(&D1[..70]));
    assert!(!gitops::valid_digest(&D1.replace("sha256", "sha512")));
}

#[test]
fn rules_yaml_is_a_rule_group_over_deployment_status() {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(RULES_YAML).unwrap();
    let rules = v["groups"][0]["rules"].as_sequence().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["ModelDeploymentOutOfSync", "ModelDeploymentDegraded"]
    );
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        assert!(expr.contains(STATUS_METRIC));
        promql_parser::parser::parse(expr).expect("valid PromQL");
    }
    // The rules engine's own rule-file parser accepts it.
    edgewatch_aggregator::rules::file::parse(RULES_YAML, "<reconcile::RULES_YAML>")
        .expect("a valid rule file for the rules engine");
}

fn config(gitops: &Path, extra: &str) -> AggregatorConfig {
    edgewatch_config::parse(
        &format!(
            "http:\n  listen: 127.0.0.1:0\nstate:\n  path: /tmp/unused\nreconciler:\n  gitops:\n    path: {}\n  progress_deadline: 600s\n  interval: 1s\n{extra}fleet:\n  down_after: 2m\n",
            gitops.display()
        ),
        "test.yaml",
    )
    .expect("config")
}

/// (model, namespace) of the two apps of [`ai_edge_repo`].
const HOUSING: (&str, &str) = ("tensorflow-housing", "tensorflow-housing-app");
const BIKES: (&str, &str) = ("bike-rentals-auto-ml", "bike-rental-app");

/// A ready pod of `app` running `digest` on node n1 of `cluster`, as reported at `ts`.
fn write_pod(store: &Store, cluster: &str, pod: &str, app: (&str, &str), digest: &str, ts: i64) {
    let (model, ns) = app;
    let info = store.family("edgewatch_model_info", MetricType::Gauge, "", "");
    let rdy = store.family("edgewatch_model_ready", MetricType::Gauge, "", "");
    let labels = [
        ("cluster", cluster),
        ("node", "n1"),
        ("namespace", ns),
        ("pod", pod),
        ("deployment", "model-1"),
        ("model", model),
        ("version", "1"),
        ("image", "quay.io/x"),
        ("digest", digest),
    ];
    store.write(info, "edgewatch_model_info", &labels, 1.0, ts, ts);
    store.write(rdy, "edgewatch_model_ready", &labels, 1.0, ts, ts);
}

fn status_lines(store: &Store, now: i64) -> Vec<String> {
    let sel = store.select(&Selector::parse(STATUS_METRIC).unwrap(), now);
    sel.iter()
        .inspect(|s| assert_eq!(s.value(), 1.0, "retired label sets are not selected"))
        .map(|s| {
            format!(
                "{}/{}={}",
                s.label("cluster").unwrap(),
                s.label("app").unwrap(),
                s.label("state").unwrap()
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// An ai-edge repository in `dir/repo` and a configured reconciler over it,
/// writing into a fresh store.
fn reconciled_ai_edge_repo(dir: &Path) -> (Arc<Store>, Reconciler) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    ai_edge_repo(&repo);
    let store = Arc::new(Store::new(
        StoreOptions::default(),
        &prometheus::Registry::new(),
    ));
    let cfg = config(&repo, "");
    let r = Reconciler::new(&cfg, store.clone(), &prometheus::Registry::new())
        .unwrap()
        .expect("configured");
    (store, r)
}

/// The reconciler's, the fleet's and the status page's routes over `store`; the
/// page renders the deployments server-side only `with_handle`.
fn status_app(r: &Reconciler, store: &Arc<Store>, with_handle: bool) -> axum::Router {
    use edgewatch_aggregator::fleet::{Fleet, Owned};
    let fleet = Fleet::new(store.clone(), r.options().down_after, Owned::every());
    r.router()
        .merge(fleet.router())
        .merge(edgewatch_aggregator::web::router(
            fleet,
            with_handle.then(|| r.handle()),
        ))
}

/// Serves `app` on a free 127.0.0.1 port until the token is cancelled.
async fn serve(
    app: axum::Router,
) -> (
    u16,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(edgewatch_aggregator::web::serve(
        listener,
        app,
        stop.clone(),
    ));
    (port, stop, server)
}

#[test]
fn reconciler_writes_status_series_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut r) = reconciled_ai_edge_repo(dir.path());
    let t0 = 1_800_000_000_000i64;
    write_pod(&store, "edge-a", "p1", HOUSING, D2, t0);
    write_pod(&store, "edge-a", "p2", BIKES, D2, t0);
    r.step(t0);
    assert_eq!(
        status_lines(&store, t0),
        [
            "edge-a/bike-rental-app=Synced",
            "edge-a/tensorflow-housing-app=Progressing",
            "edge-b/bike-rental-app=Unknown",
        ]
    );
    // The housing pod moves to the desired digest: Synced, and the old label
    // set is retired (staleness marker), so one series per (cluster, app) remains.
    write_pod(&store, "edge-a", "p1", HOUSING, D1, t0 + 5000);
    write_pod(&store, "edge-a", "p2", BIKES, D2, t0 + 5000);
    r.step(t0 + 5000);
    assert_eq!(
        status_lines(&store, t0 + 5000),
        [
            "edge-a/bike-rental-app=Synced",
            "edge-a/tensorflow-housing-app=Synced",
            "edge-b/bike-rental-app=Unknown",
        ]
    );
    let ts = store.select(
        &Selector::parse("edgewatch_deployment_last_transition_timestamp_seconds{app=\"tensorflow-housing-app\"}").unwrap(),
        t0 + 5000,
    );
    assert_eq!(
        ts.iter().next().unwrap().value(),
        (t0 + 5000) as f64 / 1000.0
    );
    let snap = r.handle().read().unwrap().clone();
    let j = edgewatch_aggregator::reconcile::deployments_json(&snap);
    assert_eq!(
        j["rollouts"][1]["summary"],
        format!("digest {D1}: 1/1 clusters synced")
    );
    assert_eq!(
        j["rollouts"][0]["summary"],
        format!("digest {D2}: 1/2 clusters synced, 1 unknown")
    );
}

/// With `fleet.clusters`, only the owned clusters are reconciled: edge-b's
/// desired app (another aggregator's) is neither Unknown here nor alerted on,
/// and a pod reported from it is not Unmanaged.
#[test]
fn only_owned_clusters_are_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    ai_edge_repo(&repo);
    let store = Arc::new(Store::new(
        StoreOptions::default(),
        &prometheus::Registry::new(),
    ));
    let mut cfg = config(&repo, "");
    cfg.fleet.clusters = vec!["edge-a".into(), "edge-c".into()];
    let mut r = Reconciler::new(&cfg, store.clone(), &prometheus::Registry::new())
        .unwrap()
        .expect("configured");
    let t0 = 1_800_000_000_000i64;
    write_pod(&store, "edge-a", "p1", HOUSING, D1, t0);
    write_pod(&store, "edge-b", "p9", HOUSING, D1, t0);
    r.step(t0);
    assert_eq!(
        status_lines(&store, t0),
        [
            "edge-a/bike-rental-app=Missing",
            "edge-a/tensorflow-housing-app=Synced",
        ]
    );
}

#[test]
fn not_configured_is_none() {
    let cfg: AggregatorConfig = edgewatch_config::parse(
        "http:\n  listen: 127.0.0.1:0\nstate:\n  path: /tmp/unused\n",
        "t.yaml",
    )
    .unwrap();
    let store = Arc::new(Store::new(
        StoreOptions::default(),
        &prometheus::Registry::new(),
    ));
    assert!(Reconciler::new(&cfg, store, &prometheus::Registry::new())
        .unwrap()
        .is_none());
}

/// Headless Chromium loads `/`, the script polls the APIs (alerts: 404,
/// tolerated) and the grid shows the expected cells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut r) = reconciled_ai_edge_repo(dir.path());
    let now = now_ms();
    write_pod(&store, "edge-a", "p1", HOUSING, D1, now);
    write_pod(&store, "edge-a", "p2", BIKES, D3, now);
    let ci = store.family("edgewatch_collector_info", MetricType::Gauge, "", "");
    store.write(
        ci,
        "edgewatch_collector_info",
        &[
            ("cluster", "edge-a"),
            ("node", "n1"),
            ("instance_id", "i-1"),
            ("version", "9.9.9"),
        ],
        1.0,
        now,
        now,
    );
    let be = store.family("edgewatch_buffer_entries", MetricType::Gauge, "", "");
    store.write(
        be,
        "edgewatch_buffer_entries",
        &[
            ("cluster", "edge-a"),
            ("node", "n1"),
            ("job", "edgewatch-collector"),
            ("instance", "i-1"),
        ],
        4242.0,
        now,
        now,
    );
    r.step(now);
    let app = status_app(&r, &store, true);
    let (port, stop, server) = serve(app).await;

    let dom = dump_dom(dir.path(), port).await;
    stop.cancel();
    let _ = server.await;
    assert!(
        dom.contains(
            "data-cluster=\"edge-a\" data-app=\"tensorflow-housing-app\" data-state=\"Synced\""
        ),
        "DOM:\n{dom}"
    );
    assert!(
        dom.contains(
            "data-cluster=\"edge-a\" data-app=\"bike-rental-app\" data-state=\"Progressing\""
        ),
        "{dom}"
    );
    assert!(
        dom.contains("data-cluster=\"edge-b\" data-app=\"bike-rental-app\" data-state=\"Unknown\""),
        "{dom}"
    );
    assert!(dom.contains("class=\"cell state-Unknown\""), "{dom}");
    // The script ran and redrew from the APIs; the alerts API is absent here.
    assert!(updates(&dom) >= 2, "the script polls repeatedly: {dom}");
    assert!(
        dom.contains("<div id=\"alerts\"><p class=\"note alerts-missing\">Alerts API not enabled"),
        "{dom}"
    );
    assert!(dom.contains("4242"), "buffer backlog shown: {dom}");
    assert!(dom.contains("9.9.9"), "collector version shown: {dom}");
    assert!(
        dom.contains("0/2 clusters synced, 1 progressing, 1 unknown"),
        "rollout summary: {dom}"
    );
    assert!(
        dom.contains("<p id=\"status\" class=\"note\">updated "),
        "{dom}"
    );
}

/// The page served without the reconciler's handle (server-side: "not enabled")
/// but with the APIs: the grid, and a firing alert, come from the script alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_updates_live_from_the_apis() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut r) = reconciled_ai_edge_repo(dir.path());
    let now = now_ms();
    write_pod(&store, "edge-b", "p9", BIKES, D2, now);
    r.step(now);
    let alerts = serde_json::json!({"status": "success", "data": {"alerts": [
        {"labels": {"alertname": "ModelDeploymentOutOfSync", "cluster": "edge-a", "app": "bike-rental-app"},
         "annotations": {"summary": "bike-rental-app on edge-a is out of sync"},
         "state": "firing", "activeAt": "2026-01-01T00:00:00Z", "value": "1e+00"},
        {"labels": {"alertname": "Pending1"}, "annotations": {}, "state": "pending"}
    ]}});
    let app = status_app(&r, &store, false).route(
        "/api/v1/alerts",
        axum::routing::get(move || {
            let a = alerts.clone();
            async move { axum::Json(a) }
        }),
    );
    let (port, stop, server) = serve(app).await;
    let (status, html) = get_text(port).await;
    assert_eq!(status, 200);
    let not_enabled = "<div id=\"deployments\"><p class=\"note\">Deployment reconciler not enabled";
    assert!(html.contains(not_enabled), "{html}");
    let dom = dump_dom(dir.path(), port).await;
    stop.cancel();
    let _ = server.await;
    assert!(!dom.contains(not_enabled), "{dom}");
    assert!(
        dom.contains("data-cluster=\"edge-b\" data-app=\"bike-rental-app\" data-state=\"Synced\""),
        "{dom}"
    );
    assert!(
        dom.contains(
            "data-cluster=\"edge-a\" data-app=\"tensorflow-housing-app\" data-state=\"Unknown\""
        ),
        "{dom}"
    );
    assert!(
        dom.contains("data-alertname=\"ModelDeploymentOutOfSync\""),
        "{dom}"
    );
    assert!(
        dom.contains("bike-rental-app on edge-a is out of sync"),
        "{dom}"
    );
    assert!(
        !dom.contains("data-alertname=\"Pending1\""),
        "only firing alerts: {dom}"
    );
    assert!(
        dom.contains("<td>edge-b</td><td>n1</td>"),
        "node row: {dom}"
    );
}

async fn get_text(port: u16) -> (u16, String) {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// How many times the page's script redrew (`<body data-updates="N">`).
fn updates(dom: &str) -> u32 {
    dom.split_once("data-updates=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Headless Chromium: load `/`, let the script run (5 s of virtual time), dump the DOM.
async fn dump_dom(dir: &Path, port: u16) -> String {
    Chromium::new(dir)
        .dump_dom(
            &format!("http://127.0.0.1:{port}/"),
            std::time::Duration::from_secs(5),
        )
        .await
}

#[test]
fn fleet_view_nodes_last_seen_backlog_and_version() {
    use edgewatch_aggregator::fleet;
    let store = Store::new(StoreOptions::default(), &prometheus::Registry::new());
    let now = 1_800_000_100_000i64;
    let g = |name: &str| store.family(name, MetricType::Gauge, "", "");
    let node = |c: &'static str, n: &'static str| {
        [
            ("cluster", c),
            ("node", n),
            ("job", "edgewatch-collector"),
            ("instance", n),
        ]
    };
    let (ci, be, bb, bo) = (
        g("edgewatch_collector_info"),
        g("edgewatch_buffer_entries"),
        g("edgewatch_buffer_bytes"),
        g("edgewatch_buffer_oldest_timestamp_seconds"),
    );
    store.write(
        ci,
        "edgewatch_collector_info",
        &[
            ("cluster", "a"),
            ("node", "n1"),
            ("instance_id", "i1"),
            ("version", "1.2.3"),
        ],
        1.0,
        now - 1000,
        now,
    );
    store.write(
        be,
        "edgewatch_buffer_entries",
        &node("a", "n1"),
        10.0,
        now - 500,
        now,
    );
    store.write(
        bb,
        "edgewatch_buffer_bytes",
        &node("a", "n1"),
        2048.0,
        now - 500,
        now,
    );
    store.write(
        bo,
        "edgewatch_buffer_oldest_timestamp_seconds",
        &node("a", "n1"),
        (now - 90_000) as f64 / 1000.0,
        now - 500,
        now,
    );
    // A node silent for 10 minutes (its series not yet stale in the store).
    store.write(
        be,
        "edgewatch_buffer_entries",
        &node("b", "n9"),
        0.0,
        now - 600_000,
        now,
    );
    // A collector only the rules engine's last-seen series remembers (its own
    // series already dropped by the store): last seen from the value.
    let ls = g(fleet::LAST_SEEN);
    store.write(
        ls,
        fleet::LAST_SEEN,
        &[
            ("cluster", "c"),
            ("node", "n5"),
            ("instance_id", "i5"),
            ("version", "0.9"),
        ],
        (now - 3_600_000) as f64 / 1000.0,
        now,
        now,
    );
    // The rules engine's last-seen series of a live collector has no `version`
    // label: the version from edgewatch_collector_info must survive it.
    store.write(
        ls,
        fleet::LAST_SEEN,
        &[("cluster", "a"), ("node", "n1"), ("instance_id", "i1")],
        (now - 1000) as f64 / 1000.0,
        now,
        now,
    );
    let v = fleet::view(
        &store,
        now,
        std::time::Duration::from_secs(120),
        &fleet::Owned::every(),
    );
    assert_eq!(v.clusters.len(), 3);
    let c = &v.clusters[2];
    assert!(!c.up);
    assert_eq!(c.nodes[0].last_seen_age_seconds, 3600.0);
    assert_eq!(c.nodes[0].collector_version.as_deref(), Some("0.9"));
    let a = &v.clusters[0];
    assert!(a.up);
    assert_eq!(a.buffer_entries, 10.0);
    let n1 = &a.nodes[0];
    assert_eq!(n1.collector_version.as_deref(), Some("1.2.3"));
    assert_eq!(n1.instance_id.as_deref(), Some("i1"));
    assert_eq!(n1.last_seen_ms, now - 500);
    assert_eq!(n1.buffer_bytes, Some(2048.0));
    assert_eq!(n1.buffer_oldest_age_seconds, Some(90.0));
    let b = &v.clusters[1];
    assert!(!b.up);
    assert!(!b.nodes[0].up);
    assert_eq!(b.nodes[0].last_seen_age_seconds, 600.0);
}

/// A committed symbolic link (to `/dev/zero`, to a host file, to a directory) is
/// refused with its path and never read; the last good state stays in force.
#[test]
fn symlinks_in_the_tree_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let good = ai_edge_repo(root);
    let mut src = Source::new(root.to_path_buf(), None);
    assert!(src.poll());
    let outside = tempfile::tempdir().unwrap();
    put(
        outside.path(),
        "kustomization.yaml",
        &app_kustomization("stolen-app", "stolen", D3),
    );
    let links = [
        (
            "acm/odh-edge/apps/zero-app/kustomization.yaml",
            Path::new("/dev/zero").to_path_buf(),
        ),
        (
            "acm/odh-edge/apps/host-file.yaml",
            Path::new("/etc/passwd").to_path_buf(),
        ),
        ("acm/odh-edge/apps/linked-dir", outside.path().to_path_buf()),
    ];
    for (link, target) in &links {
        let at = root.join(link);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &at).unwrap();
    }
    let bad = commit(root, "links");
    assert_eq!(
        git(root, &["ls-files", "-s", links[0].0]).split(' ').next(),
        Some("120000"),
        "committed as a link"
    );
    let e = gitops::load(root, None).expect_err("a link fails the load");
    let mut files: Vec<&str> = e.issues.iter().map(|i| i.file.as_str()).collect();
    files.sort();
    let mut want: Vec<&str> = links.iter().map(|(l, _)| *l).collect();
    want.sort();
    assert_eq!(files, want, "{e}");
    assert!(
        e.issues.iter().all(|i| i.message.contains("symbolic link")),
        "{e}"
    );

    assert!(src.poll());
    assert!(src.stale);
    let d = src.desired.as_ref().unwrap();
    assert_eq!(d.revision, good, "last good state in force");
    assert!(!d.apps.contains_key("stolen-app"));
    assert_eq!(src.issues.len(), 3, "{:?}", src.issues);
    assert_ne!(bad, good);
}

#[test]
fn an_oversized_yaml_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ai_edge_repo(root);
    let big = format!(
        "# {}\n{}",
        "x".repeat(gitops::MAX_FILE_BYTES as usize),
        app_kustomization("big-app", "big", D3)
    );
    put(root, "acm/odh-edge/apps/big-app/kustomization.yaml", &big);
    commit(root, "big");
    let e = gitops::load(root, None).expect_err("refused");
    assert_eq!(e.issues.len(), 1, "{e}");
    assert_eq!(
        e.issues[0].file,
        "acm/odh-edge/apps/big-app/kustomization.yaml"
    );
    assert!(e.issues[0].message.contains("bytes"), "{e}");
}
