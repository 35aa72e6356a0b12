//! Batching, order, retries, drops, sharding, backpressure and the log position.

use super::*;

#[tokio::test]
async fn batches_are_cut_by_size_and_by_deadline() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    let h = f.start(&yaml(
        &rec.url(),
        "max_samples_per_send: 10, capacity: 100, batch_send_deadline: 300ms",
    ));
    let samples: Vec<In> = (0..25)
        .map(|i| sample(&format!("s{i}"), &[], 1.0, 0))
        .collect();
    f.append(&samples);
    wait_delivered(&rec, 25).await;
    let sizes: Vec<usize> = rec
        .delivered()
        .iter()
        .map(|r| samples_of(r).len())
        .collect();
    assert_eq!(
        sizes,
        vec![10, 10, 5],
        "two full batches, then the rest at the deadline"
    );
    stop(&f, h).await;
}

#[tokio::test]
async fn each_series_stays_in_order_across_shards() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    let h = f.start(&yaml(
        &rec.url(),
        "min_shards: 4, max_shards: 4, max_samples_per_send: 7, capacity: 20, batch_send_deadline: 20ms",
    ));
    for round in 0..30i64 {
        let samples: Vec<In> = (0..12)
            .map(|i| sample("up", &[("pod", &format!("pod-{i}"))], round as f64, round))
            .collect();
        f.append(&samples);
    }
    let got = wait_delivered(&rec, 12 * 30).await;
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for (labels, _, ts) in got {
        per.entry(labels).or_default().push(ts);
    }
    assert_eq!(per.len(), 12);
    for (s, ts) in per {
        assert_eq!(ts, (0..30).collect::<Vec<_>>(), "{s} in order, each once");
    }
    stop(&f, h).await;
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let f = Fixture::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let times = seen.clone();
    let rec = Recorder::start_with(200, &[500, 503, 502, 500], move |i| {
        times.lock().unwrap().push(Instant::now());
        StatusCode::from_u16(i.scripted).unwrap().into_response()
    })
    .await;
    let h = f.start(&format!(
        "url: {}/api/v1/write\nname: ep\nmetadata_config: {{send: false}}\n\
         queue_config: {{min_backoff: 40ms, max_backoff: 100ms, batch_send_deadline: 10ms}}\n",
        rec.url()
    ));
    f.append(&[sample("a", &[], 1.0, 1), sample("b", &[], 2.0, 2)]);
    wait_delivered(&rec, 2).await;
    let statuses: Vec<u16> = rec.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 503, 502, 500, 200]);
    assert_eq!(
        samples_of(&rec.requests()[0]),
        samples_of(&rec.requests()[4]),
        "the same batch again"
    );
    let t = seen.lock().unwrap().clone();
    let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // Doubling from min_backoff, capped at max_backoff.
    for (gap, least) in gaps.iter().zip([40, 80, 100, 100]) {
        assert!(
            *gap >= Duration::from_millis(least),
            "waited {gap:?}, backoff says at least {least} ms: {gaps:?}"
        );
    }
    assert_eq!(
        metric(&f, &rec, "edgewatch_remote_write_retried_samples_total", ""),
        8.0
    );
    eventually(WAIT, "the acknowledgement counted", || async {
        metric(&f, &rec, "edgewatch_remote_write_samples_total", "") == 2.0
    })
    .await;
    stop(&f, h).await;
}

#[tokio::test]
async fn too_many_requests_waits_as_retry_after_says() {
    let f = Fixture::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let times = seen.clone();
    let rec = Recorder::start_with(200, &[429], move |i| {
        times.lock().unwrap().push(Instant::now());
        if i.scripted == 429 {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let h = f.start(&yaml(&rec.url(), "batch_send_deadline: 10ms"));
    f.append(&[sample("a", &[], 1.0, 1)]);
    wait_delivered(&rec, 1).await;
    let t = seen.lock().unwrap().clone();
    assert_eq!(t.len(), 2);
    assert!(
        t[1] - t[0] >= Duration::from_millis(950),
        "retried after {:?}, Retry-After said 1 s",
        t[1] - t[0]
    );
    assert_eq!(
        metric(&f, &rec, "edgewatch_remote_write_retried_samples_total", ""),
        1.0
    );
    stop(&f, h).await;
}

#[tokio::test]
async fn refused_batches_are_dropped_counted_and_the_rest_continues() {
    for (status, retry_429) in [(400u16, true), (429, false)] {
        let f = Fixture::new();
        let rec = Recorder::start(200, &[status]).await;
        let h = f.start(&yaml(
            &rec.url(),
            &format!("batch_send_deadline: 10ms, retry_on_http_429: {retry_429}"),
        ));
        f.append(&[sample("bad", &[], 1.0, 1), sample("bad", &[], 2.0, 2)]);
        eventually(WAIT, "the refused request", || async {
            !rec.requests().is_empty()
        })
        .await;
        f.append(&[sample("good", &[], 3.0, 3)]);
        let got = wait_delivered(&rec, 1).await;
        assert_eq!(got, vec![("__name__=good".to_string(), 3f64.to_bits(), 3)]);
        assert_eq!(rec.requests().len(), 2, "{status}: never retried");
        let reason = format!(",reason=\"http_{status}\"");
        assert_eq!(
            metric(
                &f,
                &rec,
                "edgewatch_remote_write_failed_samples_total",
                &reason
            ),
            2.0
        );
        assert_eq!(
            metric(&f, &rec, "edgewatch_remote_write_retried_samples_total", ""),
            0.0
        );
        stop(&f, h).await;
        assert_eq!(
            f.position("ep").await,
            None,
            "{status}: both records are done with"
        );
    }
}

#[tokio::test]
async fn a_slow_endpoint_gets_more_shards_without_reordering() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    rec.set_delay(Duration::from_millis(40));
    let h = f.start(&yaml(
        &rec.url(),
        "min_shards: 1, max_shards: 4, max_samples_per_send: 5, capacity: 10, batch_send_deadline: 10ms",
    ));
    for round in 0..40i64 {
        let samples: Vec<In> = (0..10)
            .map(|i| sample("up", &[("pod", &format!("pod-{i}"))], 1.0, round))
            .collect();
        f.append(&samples);
    }
    eventually(WAIT, "more than one shard", || async {
        metric(&f, &rec, "edgewatch_remote_write_shards", "") > 1.0
    })
    .await;
    let got = wait_delivered(&rec, 400).await;
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for (labels, _, ts) in got {
        per.entry(labels).or_default().push(ts);
    }
    for (s, ts) in per {
        assert_eq!(ts, (0..40).collect::<Vec<_>>(), "{s} in order, each once");
    }
    stop(&f, h).await;
}

#[tokio::test]
async fn the_position_moves_only_past_acknowledged_records() {
    let f = Fixture::new();
    let down = Recorder::start(503, &[]).await;
    let h = f.start(&format!(
        "url: {}/api/v1/write\nname: ep\nremote_timeout: 500ms\nmetadata_config: {{send: false}}\n\
         queue_config: {{min_backoff: 10ms, max_backoff: 50ms, batch_send_deadline: 10ms}}\n",
        down.url()
    ));
    f.append(&[sample("a", &[], 1.0, 1)]);
    f.append(&[sample("a", &[], 2.0, 2)]);
    eventually(WAIT, "retries", || async { down.requests().len() >= 3 }).await;
    stop(&f, h).await;
    assert_eq!(
        f.position("ep").await,
        Some(0),
        "nothing acknowledged: resume at the first record"
    );

    // The endpoint is back: a new writer from the same position sends both.
    let f2 = Fixture {
        stop: CancellationToken::new(),
        ..f
    };
    let up = Recorder::start(200, &[]).await;
    let h = f2.start(&yaml(&up.url(), "batch_send_deadline: 10ms"));
    let got = wait_delivered(&up, 2).await;
    assert_eq!(got.iter().map(|g| g.2).collect::<Vec<_>>(), vec![1, 2]);
    stop(&f2, h).await;
    f2.append(&[sample("a", &[], 3.0, 3)]);
    assert_eq!(
        f2.position("ep").await,
        Some(2),
        "resume after the last acknowledged record"
    );
}

#[tokio::test]
async fn a_down_endpoint_holds_the_reader_not_memory_and_gets_everything_back() {
    let f = Fixture::new();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let is_down = down.clone();
    let rec = Recorder::start_with(200, &[], move |_| {
        if is_down.load(Ordering::Relaxed) {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let h = f.start(&yaml(
        &rec.url(),
        "capacity: 20, max_samples_per_send: 10, batch_send_deadline: 10ms",
    ));
    for round in 0..50i64 {
        let samples: Vec<In> = (0..5)
            .map(|i| sample("up", &[("pod", &format!("pod-{i}"))], 1.0, round))
            .collect();
        f.append(&samples);
    }
    eventually(WAIT, "retries", || async { rec.requests().len() >= 3 }).await;
    always_for(
        Duration::from_millis(500),
        "at most one queue of samples pending",
        || async { metric(&f, &rec, "edgewatch_remote_write_pending_samples", "") <= 20.0 },
    )
    .await;
    down.store(false, Ordering::Relaxed);
    let got = wait_delivered(&rec, 250).await;
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for (labels, _, ts) in got {
        per.entry(labels).or_default().push(ts);
    }
    assert_eq!(per.len(), 5);
    for (s, ts) in per {
        assert_eq!(ts, (0..50).collect::<Vec<_>>(), "{s} in order, each once");
    }
    stop(&f, h).await;
    assert_eq!(f.position("ep").await, None, "everything committed");
}

#[tokio::test]
async fn stopping_flushes_what_is_queued() {
    let f = Fixture::new();
    let rec = Recorder::start(200, &[]).await;
    // A deadline far away: only the stop sends the batch.
    let h = f.start(&yaml(&rec.url(), "batch_send_deadline: 1h"));
    f.append(&[sample("a", &[], 1.0, 1)]);
    f.append(&[sample("a", &[], 2.0, 2)]);
    eventually(WAIT, "both queued", || async {
        metric(&f, &rec, "edgewatch_remote_write_pending_samples", "") == 2.0
    })
    .await;
    assert!(rec.requests().is_empty());
    stop(&f, h).await;
    assert_eq!(delivered(&rec).len(), 2, "sent at the stop");
    assert_eq!(f.position("ep").await, None, "and committed");
}
