use super::*;
use std::sync::Arc;

fn store(staleness_s: u64) -> Store {
    Store::new(
        StoreOptions {
            staleness: Duration::from_secs(staleness_s),
        },
        &prometheus::Registry::new(),
    )
}

type Row = (String, Vec<(String, String)>, f64, i64);

fn all(sel: &Selection) -> Vec<Row> {
    sel.iter()
        .map(|s| {
            (
                s.name().to_owned(),
                s.labels()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                s.value(),
                s.timestamp_ms(),
            )
        })
        .collect()
}

fn sel(s: &str) -> Vec<Selector> {
    Selector::parse(s).unwrap()
}

#[test]
fn latest_sample_wins_and_older_is_ignored() {
    let st = store(300);
    let f = st.family("up", MetricType::Gauge, "", "");
    assert_eq!(
        st.write(f, "up", &[("job", "a")], 1.0, 1000, 1000),
        WriteOutcome::Inserted
    );
    assert_eq!(
        st.write(f, "up", &[("job", "a")], 2.0, 2000, 2000),
        WriteOutcome::Updated
    );
    assert_eq!(
        st.write(f, "up", &[("job", "a")], 3.0, 1500, 2100),
        WriteOutcome::OutOfOrder
    );
    assert_eq!(
        st.write(f, "up", &[("job", "a")], 4.0, 2000, 2200),
        WriteOutcome::Updated
    );
    let r = all(&st.select(&sel("up"), 2200));
    assert_eq!(
        r,
        vec![("up".into(), vec![("job".into(), "a".into())], 4.0, 2000)]
    );
    assert_eq!(st.series_count(), 1);
}

#[test]
fn label_order_empty_values_and_duplicates() {
    let st = store(300);
    let f = st.family("m", MetricType::Gauge, "", "");
    st.write(
        f,
        "m",
        &[("b", "2"), ("a", "1"), ("c", ""), ("a", "9")],
        1.0,
        1,
        1,
    );
    assert_eq!(
        st.write(f, "m", &[("a", "9"), ("b", "2")], 2.0, 2, 2),
        WriteOutcome::Updated,
        "same identity regardless of order/empties"
    );
    let r = all(&st.select(&sel("m"), 2));
    assert_eq!(
        r[0].1,
        vec![
            ("a".to_owned(), "9".to_owned()),
            ("b".to_owned(), "2".to_owned())
        ]
    );
}

#[test]
fn staleness_hides_then_sweep_removes_and_frees_symbols() {
    let st = store(10);
    let f = st.family("g", MetricType::Gauge, "", "");
    st.write(f, "g", &[("pod", "p1")], 1.0, 0, 0);
    st.write(f, "g", &[("pod", "p2")], 1.0, 5_000, 5_000);
    assert_eq!(st.select(&sel("g"), 10_000).len(), 2);
    // p1 last updated at 0 → stale after 10 s
    let r = all(&st.select(&sel("g"), 10_001));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1[0].1, "p2");
    assert_eq!(st.sweep(10_001), 1);
    assert_eq!(st.series_count(), 1);
    assert_eq!(read(&st.symbols).get("p1"), None, "unused symbol freed");
    assert!(read(&st.symbols).get("p2").is_some());
    // a re-appearing series comes back
    st.write(f, "g", &[("pod", "p1")], 3.0, 11_000, 11_000);
    assert_eq!(st.select(&sel("g"), 11_000).len(), 2);
    assert_eq!(st.series_gauge.get(), 2);
    assert_eq!(st.sweep(100_000), 2);
    assert_eq!(st.series_count(), 0);
    assert_eq!(st.series_gauge.get(), 0);
    assert_eq!(read(&st.symbols).live(), 0);
}

#[test]
fn matchers_union_and_anchoring() {
    let st = store(300);
    let f = st.family("ovms_requests_success", MetricType::Counter, "", "");
    let g = st.family("up", MetricType::Gauge, "", "");
    st.write(
        f,
        "ovms_requests_success",
        &[("cluster", "edge-a"), ("job", "m")],
        1.0,
        1,
        1,
    );
    st.write(
        f,
        "ovms_requests_success",
        &[("cluster", "edge-b"), ("job", "m")],
        2.0,
        1,
        1,
    );
    st.write(g, "up", &[("cluster", "edge-a"), ("job", "xm")], 1.0, 1, 1);
    st.write(g, "up", &[("instance", "i")], 1.0, 1, 1);
    let names = |q: &[&str]| {
        let s: Vec<Selector> = q.iter().flat_map(|q| sel(q)).collect();
        st.select(&s, 1)
            .iter()
            .map(|s| format!("{}{:?}", s.name(), s.labels().collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&[r#"{__name__=~"ovms_.*",cluster="edge-a"}"#]).len(),
        1
    );
    assert_eq!(
        names(&[r#"{job=~"m"}"#]).len(),
        2,
        "anchored: xm not matched"
    );
    assert_eq!(names(&[r#"{job=~".+"}"#]).len(), 3);
    assert_eq!(
        names(&[r#"{job!~".+",instance="i"}"#]),
        vec![r#"up[("instance", "i")]"#]
    );
}

#[test]
fn union_dedups() {
    let st = store(300);
    let g = st.family("up", MetricType::Gauge, "", "");
    st.write(g, "up", &[("job", "a")], 1.0, 1, 1);
    let mut s = sel("up");
    s.extend(sel(r#"{job="a"}"#));
    assert_eq!(st.select(&s, 1).len(), 1);
}

#[test]
fn histogram_family_order() {
    let st = store(300);
    let h = st.family("lat", MetricType::Histogram, "", "");
    for (le, v) in [("+Inf", 5.0), ("10", 4.0), ("0.5", 1.0), ("2", 3.0)] {
        st.write(h, "lat_bucket", &[("le", le), ("job", "b")], v, 1, 1);
        st.write(h, "lat_bucket", &[("le", le), ("job", "a")], v, 1, 1);
    }
    for j in ["b", "a"] {
        st.write(h, "lat_count", &[("job", j)], 5.0, 1, 1);
        st.write(h, "lat_sum", &[("job", j)], 9.0, 1, 1);
    }
    let g = st.family("lat_a", MetricType::Gauge, "", "");
    st.write(g, "lat_a", &[], 1.0, 1, 1);
    let r: Vec<String> = st
        .select(&sel(r#"{__name__=~"lat.*"}"#), 1)
        .iter()
        .map(|s| format!("{} {:?}", s.name(), s.labels().collect::<Vec<_>>()))
        .collect();
    let want = vec![
        r#"lat_bucket [("job", "a"), ("le", "0.5")]"#,
        r#"lat_bucket [("job", "a"), ("le", "2")]"#,
        r#"lat_bucket [("job", "a"), ("le", "10")]"#,
        r#"lat_bucket [("job", "a"), ("le", "+Inf")]"#,
        r#"lat_sum [("job", "a")]"#,
        r#"lat_count [("job", "a")]"#,
        r#"lat_bucket [("job", "b"), ("le", "0.5")]"#,
        r#"lat_bucket [("job", "b"), ("le", "2")]"#,
        r#"lat_bucket [("job", "b"), ("le", "10")]"#,
        r#"lat_bucket [("job", "b"), ("le", "+Inf")]"#,
        r#"lat_sum [("job", "b")]"#,
        r#"lat_count [("job", "b")]"#,
        r#"lat_a []"#,
    ];
    assert_eq!(r, want);
}

#[test]
fn selector_parse_errors() {
    for bad in [
        r#"{job=~".*"}"#,
        r#"{job=""}"#,
        "",
        "sum(up)",
        "up[5m]",
        "up offset 5m",
        r#"{job=~"("}"#,
        "1",
    ] {
        assert!(Selector::parse(bad).is_err(), "{bad:?} should be rejected");
    }
    for good in [
        "up",
        r#"{job=~".+"}"#,
        r#"{__name__=~"ovms_.*",cluster="edge-a"}"#,
        r#"up{job!=""}"#,
    ] {
        assert!(Selector::parse(good).is_ok(), "{good:?} should parse");
    }
    // `or` selectors yield one selector per alternative
    assert_eq!(
        Selector::parse(r#"{a="1" or b="2"}"#)
            .map(|v| v.len())
            .unwrap_or(1),
        2
    );
}

#[test]
fn family_metadata_last_writer_wins() {
    let st = store(300);
    let a = st.family("x", MetricType::Gauge, "h1", "");
    let b = st.family("x", MetricType::Gauge, "h2", "By");
    assert_eq!(a, b);
    assert_eq!(st.family_meta("x").unwrap().help, "h2");
}

#[test]
fn concurrent_writes_and_selects() {
    let st = Arc::new(store(300));
    let f = st.family("c", MetricType::Counter, "", "");
    let mut hs = Vec::new();
    for t in 0..4 {
        let st = st.clone();
        hs.push(std::thread::spawn(move || {
            for i in 0..2000 {
                let inst = format!("i{}", i % 500);
                st.write(
                    f,
                    "c",
                    &[("t", &t.to_string()), ("instance", &inst)],
                    i as f64,
                    i,
                    i,
                );
                if i % 500 == 0 {
                    st.sweep(i);
                }
            }
        }));
    }
    for _ in 0..20 {
        let _ = st.select(&sel("c"), 10);
    }
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(st.series_count(), 2000);
    assert_eq!(st.select(&sel("c"), 2000).len(), 2000);
}

#[test]
fn slot_stays_32_bytes() {
    // Memory per series is a target (≤ 300 B at 1 M series); the slot is most of it.
    assert_eq!(std::mem::size_of::<super::Slot>(), 32);
}

#[test]
fn staleness_counts_from_arrival_even_for_old_samples() {
    let st = store(10);
    let f = st.family("g", MetricType::Gauge, "", "");
    // A sample an hour old arrives now (a drained backlog): served for the staleness period.
    st.write(
        f,
        "g",
        &[("pod", "p1")],
        1.0,
        1_000_000,
        1_000_000 + 3_600_000,
    );
    assert_eq!(st.select(&sel("g"), 1_000_000 + 3_600_000 + 9_000).len(), 1);
    assert_eq!(
        st.select(&sel("g"), 1_000_000 + 3_600_000 + 10_001).len(),
        0
    );
}

#[test]
fn symbol_ids_memoised_by_a_writer_do_not_outlive_their_collection() {
    let st = store(10);
    let f = st.family("up", MetricType::Gauge, "", "");
    st.write(f, "up", &[("job", "a")], 1.0, 1000, 1000);
    // The series goes, its symbols are freed; the next write of the same
    // strings on this thread must not reuse the ids it saw before.
    assert_eq!(st.sweep(100_000), 1);
    assert_eq!(st.symbol_count(), 0);
    let g = st.family("other", MetricType::Gauge, "", "");
    let h = std::thread::spawn(move || {
        // Another thread takes the freed ids for other strings first.
        st.write(g, "other", &[("zone", "z")], 5.0, 100_000, 100_000);
        st
    });
    let st = h.join().unwrap();
    st.write(f, "up", &[("job", "a")], 2.0, 100_001, 100_001);
    let r = all(&st.select(&sel(r#"{__name__=~".+"}"#), 100_001));
    assert_eq!(
        r,
        vec![
            (
                "other".into(),
                vec![("zone".into(), "z".into())],
                5.0,
                100_000
            ),
            ("up".into(), vec![("job".into(), "a".into())], 2.0, 100_001),
        ]
    );
}

fn limited_store(limits: Limits) -> (Store, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let st = Store::new(
        StoreOptions {
            staleness: Duration::from_secs(10),
        },
        &registry,
    );
    st.set_limits(limits);
    (st, registry)
}

#[test]
fn limits_refuse_new_series_only_and_only_for_ingest() {
    let (st, registry) = limited_store(Limits {
        max_series_per_cluster: Some(2),
        max_series: Some(5),
        max_label_names_per_series: Some(3),
        max_label_value_length: Some(8),
        max_metric_name_length: Some(10),
        max_help_length: None,
    });
    let f = st.family("m", MetricType::Gauge, "", "");
    let out = st.ingest_logged(1000);
    let w = |name: &str, labels: &[(&str, &str)]| out.write(f, name, labels, 1.0, 1000);
    use WriteOutcome::{Inserted, Limited, Updated};
    // (name, labels, outcome), in order.
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        WriteOutcome,
    );
    let cases: &[Case] = &[
        ("m", &[("cluster", "a"), ("i", "1")], Inserted),
        ("m", &[("cluster", "a"), ("i", "2")], Inserted),
        (
            "m",
            &[("cluster", "a"), ("i", "3")],
            Limited(Limit::SeriesPerCluster),
        ),
        // A series already held is never refused.
        ("m", &[("cluster", "a"), ("i", "1")], Updated),
        ("m", &[("cluster", "b"), ("i", "1")], Inserted),
        (
            "m",
            &[("cluster", "c"), ("i", "1"), ("j", "1"), ("k", "1")],
            Limited(Limit::LabelNamesPerSeries),
        ),
        (
            "m",
            &[("cluster", "c"), ("i", "123456789")],
            Limited(Limit::LabelValueLength),
        ),
        (
            "m_0123456789",
            &[("cluster", "c")],
            Limited(Limit::MetricNameLength),
        ),
        ("m", &[("i", "1")], Inserted),
        ("m", &[("cluster", "c"), ("i", "1")], Inserted),
        ("m", &[("cluster", "d"), ("i", "1")], Limited(Limit::Series)),
    ];
    for (name, labels, want) in cases {
        assert_eq!(w(name, labels), *want, "{name} {labels:?}");
    }
    assert_eq!(st.series_count(), 5);
    let drops = out.take_limited();
    let find = |cluster: &str, limit| {
        drops
            .iter()
            .find(|d| d.cluster == cluster && d.limit == limit)
            .map(|d| d.samples)
    };
    assert_eq!(find("a", Limit::SeriesPerCluster), Some(1));
    assert_eq!(find("c", Limit::LabelNamesPerSeries), Some(1));
    assert_eq!(find("d", Limit::Series), Some(1));
    let m = edgewatch_testkit::Metrics::from_registry(&registry);
    assert_eq!(
        m.get(
            r#"edgewatch_limit_dropped_samples_total{cluster="a",limit="max_series_per_cluster"}"#
        ),
        1.0
    );
    // The core's own writes are not limited.
    assert_eq!(
        st.write(f, "m", &[("cluster", "a"), ("i", "9")], 1.0, 1000, 1000),
        Inserted
    );
    // Expired series give their cluster's room back.
    st.sweep(1000 + 11_000);
    assert_eq!(st.series_count(), 0);
    let out = st.ingest_logged(20_000);
    for i in ["1", "2"] {
        assert_eq!(
            out.write(f, "m", &[("cluster", "a"), ("i", i)], 1.0, 20_000),
            Inserted
        );
    }
}

#[test]
fn refused_metrics_by_name_and_help() {
    let limits = Limits {
        max_metric_name_length: Some(4),
        max_help_length: Some(5),
        ..Limits::default()
    };
    let cases = [
        ("abcd", "12345", None),
        ("abcde", "", Some(Limit::MetricNameLength)),
        ("abcd", "123456", Some(Limit::HelpLength)),
    ];
    for (name, help, want) in cases {
        assert_eq!(limits.refuses_metric(name, help), want, "{name} {help}");
    }
    let (st, _) = limited_store(limits);
    assert!(st.ingest_logged(1).refuses_metric("x", "abcd", "123456", 3));
    assert!(
        !st.logged(1).refuses_metric("x", "abcd", "123456", 3),
        "not limited"
    );
}

#[test]
fn families_and_symbols_of_expired_series_are_reclaimed() {
    let st = store(10);
    let keep = st.family("kept", MetricType::Gauge, "", "");
    st.pin_family(keep);
    let steady = st.family("steady", MetricType::Gauge, "h", "");
    st.write(steady, "steady", &[("a", "1")], 1.0, 0, 0);
    let (families, symbols) = (read(&st.families).metas.len(), st.symbol_count());
    for i in 0..2_000 {
        let name = format!("burst_{i}");
        let f = st.family(&name, MetricType::Counter, "a burst", "");
        st.write(f, &name, &[("series", &i.to_string())], 1.0, 1000, 1000);
    }
    let wide = st.family("wide", MetricType::Gauge, "", "");
    for i in 0..50_000 {
        st.write(
            wide,
            "wide",
            &[("series", &format!("w{i}"))],
            1.0,
            1000,
            1000,
        );
    }
    assert_eq!(read(&st.families).metas.len(), families + 2_001);
    let shard_capacity = || st.shards.iter().map(|s| read(s).capacity()).sum::<usize>();
    let peak = shard_capacity();
    // The steady series stays fresh; the burst expires.
    st.write(steady, "steady", &[("a", "1")], 2.0, 20_000, 20_000);
    st.sweep(20_000);
    // A family is freed once it stayed unused across two collections.
    st.sweep(21_000);
    let f = read(&st.families);
    assert_eq!(f.metas.len(), families, "burst families freed (wide too)");
    assert!(f.by_name.contains_key("kept"), "pinned");
    assert!(f.by_name.contains_key("steady"));
    assert!(!f.by_name.contains_key("burst_1"));
    assert!(f.metas.capacity() < 1_000, "{}", f.metas.capacity());
    drop(f);
    assert_eq!(st.symbol_count(), symbols);
    assert!(read(&st.symbols).capacity() <= symbols + 64);
    assert!(
        shard_capacity() < peak / 4,
        "{} of {peak}",
        shard_capacity()
    );
    assert_eq!(st.family_meta("steady").unwrap().help, "h");
    let r = all(&st.select(&sel("steady"), 21_000));
    assert_eq!(r.len(), 1);
    // A name comes back: a new family.
    let f = st.family("burst_1", MetricType::Gauge, "again", "");
    st.write(f, "burst_1", &[], 1.0, 21_000, 21_000);
    assert_eq!(st.family_meta("burst_1").unwrap().help, "again");
}
