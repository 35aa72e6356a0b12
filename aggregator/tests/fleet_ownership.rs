//! `fleet.clusters` (several aggregators share a fleet): the fleet view, the
//! `/api/v1/fleet` shape, the ownership gauges, and the status page
//! (server-rendered and redrawn by its script in headless Chromium).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgewatch_aggregator::fleet::{Fleet, Owned, COLLECTOR_INFO};
use edgewatch_aggregator::store::{MetricType, Store, StoreOptions};
use edgewatch_testkit::http::get;
use edgewatch_testkit::peers::Chromium;
use edgewatch_testkit::{now_ms, Metrics};

/// A store where collectors of edge-a (node n1) and edge-x (node n7) reported at `now`.
fn store_with_two_clusters(now: i64) -> Arc<Store> {
    let store = Arc::new(Store::new(
        StoreOptions::default(),
        &prometheus::Registry::new(),
    ));
    let info = store.family(COLLECTOR_INFO, MetricType::Gauge, "", "");
    for (cluster, node) in [("edge-a", "n1"), ("edge-x", "n7")] {
        store.write(
            info,
            COLLECTOR_INFO,
            &[("cluster", cluster), ("node", node), ("version", "1.0")],
            1.0,
            now - 1000,
            now,
        );
    }
    store
}

/// Owns edge-a and edge-b: edge-x reports here without being owned, edge-b
/// has never reported.
fn fleet(store: Arc<Store>) -> Fleet {
    Fleet::new(
        store,
        Duration::from_secs(120),
        Owned::new(&["edge-b".into(), "edge-a".into()]),
    )
}

#[test]
fn view_marks_owned_unowned_and_never_reported_clusters() {
    let now = 1_800_000_000_000i64;
    let v = fleet(store_with_two_clusters(now)).view(now);
    assert_eq!(v.owned_clusters, ["edge-a", "edge-b"]);
    assert!(!v.owns_every_cluster);
    let got: Vec<(&str, bool, bool, bool, usize)> = v
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.owned, c.reported, c.up, c.nodes.len()))
        .collect();
    assert_eq!(
        got,
        [
            ("edge-a", true, true, true, 1),
            ("edge-b", true, false, false, 0),
            ("edge-x", false, true, true, 1),
        ]
    );
    assert_eq!(v.clusters[0].last_seen_age_seconds, Some(1.0));
    assert_eq!(v.clusters[1].last_seen_ms, None);

    // Without a list every reporting cluster is owned, and none is expected.
    let all = Fleet::new(
        store_with_two_clusters(now),
        Duration::from_secs(120),
        Owned::every(),
    )
    .view(now);
    assert!(all.owns_every_cluster);
    assert!(all.owned_clusters.is_empty());
    assert_eq!(all.clusters.len(), 2);
    assert!(all.clusters.iter().all(|c| c.owned && c.reported));
}

#[test]
fn ownership_gauges() {
    let registry = prometheus::Registry::new();
    fleet(store_with_two_clusters(now_ms()))
        .register(&registry)
        .unwrap();
    let m = Metrics::from_registry(&registry);
    assert_eq!(m.get("edgewatch_fleet_unowned_clusters"), 1.0);
    assert_eq!(m.get("edgewatch_fleet_owned_clusters_unreported"), 1.0);
}

/// Serves the fleet API and the page on a free port until the token is cancelled.
async fn serve(
    fleet: Fleet,
) -> (
    u16,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let app = fleet
        .router()
        .merge(edgewatch_aggregator::web::router(fleet, None));
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

/// The rows the page must show, server-rendered and redrawn by its script alike.
fn assert_ownership_rows(html: &str) {
    for row in [
        "<tr class=\"cluster\" data-cluster=\"edge-a\" data-owned=\"true\" data-reported=\"true\"><td>edge-a</td><td>up</td><td>this aggregator</td>",
        "<tr class=\"cluster\" data-cluster=\"edge-b\" data-owned=\"true\" data-reported=\"false\"><td>edge-b</td><td>never reported</td><td>this aggregator</td><td>0</td><td>-</td>",
        "<tr class=\"cluster unowned\" data-cluster=\"edge-x\" data-owned=\"false\" data-reported=\"true\"><td>edge-x</td><td>up</td><td>not owned by this aggregator</td>",
        "<p class=\"ownership\">This aggregator owns <code>edge-a</code>, <code>edge-b</code>.</p>",
    ] {
        assert!(html.contains(row), "missing {row} in {html}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_page_say_which_clusters_this_aggregator_owns() {
    let dir = tempfile::tempdir().unwrap();
    let (port, stop, server) = serve(fleet(store_with_two_clusters(now_ms()))).await;

    let (status, body) = get(&format!("http://127.0.0.1:{port}/api/v1/fleet"))
        .await
        .expect("fleet API");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = &v["data"];
    assert_eq!(d["owned_clusters"], serde_json::json!(["edge-a", "edge-b"]));
    assert_eq!(d["owns_every_cluster"], false);
    let c = |i: usize| &d["clusters"][i];
    assert_eq!(
        (&c(1)["name"], &c(1)["owned"], &c(1)["reported"]),
        (&"edge-b".into(), &true.into(), &false.into()),
        "{body}"
    );
    assert!(c(1)["last_seen_age_seconds"].is_null(), "{body}");
    assert_eq!(
        (&c(2)["name"], &c(2)["owned"]),
        (&"edge-x".into(), &false.into())
    );

    let (status, page) = get(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(status, 200);
    assert_ownership_rows(&page);

    let dom = dump_dom(dir.path(), port).await;
    stop.cancel();
    let _ = server.await;
    assert!(
        dom.contains("data-updates=\"") && !dom.contains("data-updates=\"0\""),
        "the script redrew the page: {dom}"
    );
    let status = dom.split("id=\"status\"").nth(1).unwrap_or_default();
    assert!(status.contains(">updated "), "the script's status: {dom}");
    assert_ownership_rows(&dom);
}

/// Headless Chromium: load `/`, let the script run, dump the DOM.
async fn dump_dom(dir: &Path, port: u16) -> String {
    Chromium::new(dir)
        .dump_dom(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5))
        .await
}
