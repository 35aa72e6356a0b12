//! `edgewatch demo` as a user runs it: within seconds it serves the fleet page and
//! `/federate` with the fleet's data, and SIGTERM (as Ctrl-C) stops it cleanly.

use edgewatch_testkit::{eventually, free_port_offset, get, parse_samples, Proc};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// The demo's default ports (aggregator, three collectors' receivers and admin).
const DEFAULT_PORTS: [u16; 12] = [
    9090, 14317, 14318, 4317, 4318, 4327, 4328, 4337, 4338, 9464, 9465, 9466,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_fleet_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = free_port_offset(&DEFAULT_PORTS);
    let data = dir.path().join("data");
    let mut demo = Proc::spawn(
        "demo",
        BIN,
        &[
            "demo",
            "--port-offset",
            &offset.to_string(),
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--push-interval",
            "500ms",
        ],
        dir.path(),
    );
    let base = format!("http://127.0.0.1:{}", 9090 + offset);

    let page = eventually(Duration::from_secs(60), "the fleet page", || async {
        get(&format!("{base}/"))
            .await
            .filter(|(s, body)| *s == 200 && body.contains("data-cluster=\"edge-a\""))
            .map(|(_, body)| body)
    })
    .await;
    assert!(page.contains("data-cluster=\"edge-b\""), "{page}");

    let samples = eventually(
        Duration::from_secs(60),
        "both clusters' model servers on /federate",
        || async {
            let url = format!("{base}/federate?match[]=%7Bcluster%3D~%22edge-.%22%7D");
            let (status, text) = get(&url).await?;
            let s = parse_samples(&text);
            (status == 200
                && ["edge-a", "edge-b"].iter().all(|c| {
                    s.iter()
                        .any(|x| x.label("cluster") == *c && x.name.starts_with("ovms_"))
                }))
            .then_some(s)
        },
    )
    .await;
    assert!(
        samples.iter().any(|s| s.name == "edgewatch_model_info"),
        "model metadata on /federate"
    );

    demo.stop();
}

/// A port of the demo already taken (a user's own Prometheus on 9090, here a
/// collector's admin port): the demo starts nothing and says which port and which
/// flag moves its ports.
#[test]
fn a_busy_port_names_itself_and_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = free_port_offset(&DEFAULT_PORTS);
    for (busy, what) in [(9090, "aggregator HTTP"), (9465, "collector 2 admin")] {
        let _taken = TcpListener::bind(("127.0.0.1", busy + offset)).expect("bind");
        let out = Command::new(BIN)
            .args([
                "demo",
                "--port-offset",
                &offset.to_string(),
                "--duration",
                "60s",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("run the demo");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let want = format!(
            "port {} ({what}) is already in use on 127.0.0.1: move every port of the demo with --port-offset N",
            busy + offset
        );
        assert!(stderr.contains(&want), "want {want:?} in {stderr}");
        assert!(
            !dir.path().join("data").exists(),
            "nothing started before the check"
        );
    }
}
