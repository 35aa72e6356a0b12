//! What goes on the wire, checked by decoding it and by a real receiver.

use super::*;
use edgewatch_testkit::peers::VictoriaMetrics;

#[tokio::test]
async fn samples_go_out_as_prometheus_remote_write() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    let h = f.start(&format!(
        "url: {}/api/v1/write\nmetadata_config: {{send_interval: 100ms}}\n\
         queue_config: {{batch_send_deadline: 50ms}}\n",
        rec.url()
    ));
    f.append(&[
        sample(
            "req_total",
            &[("zone", "b"), ("app", "x"), ("empty", "")],
            3.5,
            1_700_000_000_123,
        ),
        sample("temp", &[("node", "n1")], STALE_NAN, -1_000),
    ]);
    let mut got = wait_delivered(&rec, 2).await;
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "__name__=req_total,app=x,zone=b".into(),
                3.5f64.to_bits(),
                1_700_000_000_123
            ),
            ("__name__=temp,node=n1".into(), STALE_NAN.to_bits(), -1_000),
        ],
        "labels sorted with __name__, empty values dropped, original timestamps, stale NaN bits"
    );
    let r = &rec.delivered()[0];
    let h1 = |k: &str| {
        r.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(h1("content-encoding"), "snappy");
    assert_eq!(h1("content-type"), "application/x-protobuf");
    assert_eq!(h1("x-prometheus-remote-write-version"), "0.1.0");
    assert!(
        h1("user-agent").starts_with("edgewatch/"),
        "{}",
        h1("user-agent")
    );
    let meta = eventually(WAIT, "metadata sent", || async {
        let mut m: Vec<_> = rec
            .delivered()
            .iter()
            .flat_map(|r| decoded(r).metadata)
            .map(|m| (m.metric_family_name, m.r#type, m.help))
            .collect();
        m.sort();
        m.dedup();
        (m.len() == 2).then_some(m)
    })
    .await;
    assert_eq!(
        meta,
        vec![
            ("req_total".to_string(), 1, "Help of it.".to_string()),
            ("temp".to_string(), 2, "Help of it.".to_string())
        ]
    );
    // The endpoint records a request before the writer has its answer.
    eventually(WAIT, "acknowledgements counted", || async {
        metric(&f, &rec, "edgewatch_remote_write_samples_total", "") == 2.0
            && metric(&f, &rec, "edgewatch_remote_write_metadata_total", "") >= 2.0
    })
    .await;
    assert_eq!(
        metric(&f, &rec, "edgewatch_remote_write_pending_samples", ""),
        0.0
    );
    assert_eq!(
        metric(
            &f,
            &rec,
            "edgewatch_remote_write_highest_sent_timestamp_seconds",
            ""
        ),
        1_700_000_000.123
    );
    stop(&f, h).await;
}

/// The hand-made protocol against the real receiver: every sample arrives with its
/// original timestamp, a backlog interleaved with newer data included, and a stale
/// marker ends a series.
#[tokio::test]
async fn a_real_prometheus_receives_every_sample() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start_with_config(
        dir.path(),
        "global: {scrape_interval: 1m}\nstorage: {tsdb: {out_of_order_time_window: 1h}}\n",
        &[],
    )
    .await;
    let h = f.start(&format!(
        "url: {}\nqueue_config: {{min_shards: 3, max_shards: 3, max_samples_per_send: 7, batch_send_deadline: 20ms}}\n",
        prom.url("/api/v1/write")
    ));
    let now = edgewatch_testkit::now_ms() / 1000 * 1000;
    // Live data first, then the backlog of the same series from before it.
    for half in [1, 0] {
        for i in 0..30i64 {
            let ts = now - 600_000 + (half * 30 + i) * 10_000;
            f.append(&[
                sample(
                    "rw_live",
                    &[("pod", "p1"), ("cluster", "edge-a")],
                    i as f64,
                    ts,
                ),
                sample(
                    "rw_live",
                    &[("pod", "p2"), ("cluster", "edge-a")],
                    -(i as f64),
                    ts,
                ),
            ]);
        }
    }
    f.append(&[sample("rw_gone", &[("pod", "p3")], 1.0, now - 20_000)]);
    f.append(&[sample("rw_gone", &[("pod", "p3")], STALE_NAN, now - 10_000)]);
    wait_delivered_to_prometheus(&f, &prom, 122).await;
    let counts = prom.query("count_over_time(rw_live[11m])").await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    for c in &counts {
        assert_eq!(c["value"][1], "60", "every sample of {}", c["metric"]);
    }
    let first = prom
        .query_at("rw_live{pod=\"p2\"}", (now - 600_000) as f64 / 1000.0)
        .await;
    assert_eq!(
        first[0]["value"][0],
        (now - 600_000) / 1000,
        "original timestamp"
    );
    assert_eq!(first[0]["value"][1], "-0");
    assert!(
        prom.query("rw_gone").await.is_empty(),
        "the stale marker ends the series"
    );
    assert_eq!(
        prom.query("count_over_time(rw_gone[5m])").await[0]["value"][1],
        "1"
    );
    stop(&f, h).await;
}

async fn wait_delivered_to_prometheus(f: &Fixture, prom: &Prometheus, n: u64) {
    let series = format!(
        "edgewatch_remote_write_samples_total{{url=\"{}\"}}",
        prom.url("/api/v1/write")
    );
    eventually(WAIT, &format!("{n} samples acknowledged"), || async {
        f.scrape().get_or_zero(&series) as u64 >= n
    })
    .await;
    assert_eq!(
        f.scrape()
            .sum_or_zero("edgewatch_remote_write_failed_samples_total"),
        0.0
    );
}

/// VictoriaMetrics takes the same requests; a backlog needs no configuration there.
#[tokio::test]
async fn a_real_victoria_metrics_receives_every_sample() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let vm = VictoriaMetrics::start(dir.path()).await;
    let url = vm.url("/api/v1/write");
    let h = f.start(&format!(
        "url: {url}\nqueue_config: {{min_shards: 2, max_shards: 2, max_samples_per_send: 9, batch_send_deadline: 20ms}}\n"
    ));
    let now = edgewatch_testkit::now_ms() / 1000 * 1000;
    let start = now - 600_000;
    for half in [1, 0] {
        for i in 0..30i64 {
            let ts = start + (half * 30 + i) * 10_000;
            f.append(&[
                sample("rw_vm", &[("pod", "p1")], (half * 30 + i) as f64, ts),
                sample("rw_vm", &[("pod", "p2")], 0.5, ts),
            ]);
        }
    }
    eventually(WAIT, "120 samples acknowledged", || async {
        f.scrape().get_or_zero(&format!(
            "edgewatch_remote_write_samples_total{{url=\"{url}\"}}"
        )) == 120.0
    })
    .await;
    let end_s = (now / 1000) as f64;
    let counts = vm.query_at("count_over_time(rw_vm[11m])", end_s).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    for c in &counts {
        assert_eq!(c["value"][1], "60", "every sample of {}", c["metric"]);
    }
    let first = vm
        .query_at("rw_vm{pod=\"p1\"}", (start / 1000) as f64)
        .await;
    assert_eq!(
        first[0]["value"][1], "0",
        "the backlog's first sample, at its own time"
    );
    stop(&f, h).await;
}

#[tokio::test]
async fn write_relabel_configs_rewrite_and_drop_and_drops_are_no_failures() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    let h = f.start(&format!(
        "url: {}/api/v1/write\nname: ep\nmetadata_config: {{send: false}}\n\
         queue_config: {{batch_send_deadline: 10ms}}\n\
         write_relabel_configs:\n\
         - {{source_labels: [__name__], regex: 'secret_.*', action: drop}}\n\
         - {{regex: pod, action: labeldrop}}\n\
         - {{source_labels: [node], target_label: host, replacement: 'edge-$1'}}\n",
        rec.url()
    ));
    f.append(&[
        sample("secret_total", &[("pod", "p1")], 1.0, 1),
        sample("up", &[("pod", "p1"), ("node", "n1")], 1.0, 2),
    ]);
    let got = wait_delivered(&rec, 1).await;
    assert_eq!(
        got,
        vec![(
            "__name__=up,host=edge-n1,node=n1".to_string(),
            1f64.to_bits(),
            2
        )]
    );
    stop(&f, h).await;
    let url = format!("{}/api/v1/write", rec.url());
    let m = f.scrape();
    assert_eq!(
        m.get(&format!(
            "edgewatch_remote_write_relabel_dropped_samples_total{{url=\"{url}\"}}"
        )),
        1.0
    );
    assert_eq!(
        m.sum_or_zero("edgewatch_remote_write_failed_samples_total"),
        0.0
    );
    assert_eq!(
        f.position("ep").await,
        None,
        "the dropped sample's record is done with"
    );
}
