use super::*;
use crate::expose::{render, Format};
use crate::store::{Selector, StoreOptions};
use edgewatch_testkit::otlp::kv;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope,
};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};
use opentelemetry_proto::tonic::metrics::v1::{
    summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

const T: u64 = 1_700_000_000_123_000_000; // ns
const T_MS: i64 = 1_700_000_000_123;
const NOW: i64 = 1_700_000_001_000;

fn resource() -> Vec<KeyValue> {
    vec![
        kv("service.name", "ovms"),
        kv("service.namespace", "models"),
        kv("service.instance.id", "pod-1"),
        kv("k8s.cluster.name", "edge-a"),
        kv("k8s.node.name", "node-1"),
    ]
}

fn req_with(
    res: Vec<KeyValue>,
    scope: &str,
    version: &str,
    metrics: Vec<Metric>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: res,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    version: version.into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A request with no scope name/version and only service.name (so output
/// lines stay short): job="svc".
fn req(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    req_with(vec![kv("service.name", "svc")], "", "", metrics)
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn np(v: f64, time: u64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn gauge(name: &str, unit: &str, pts: Vec<NumberDataPoint>) -> Metric {
    metric(name, unit, Data::Gauge(Gauge { data_points: pts }))
}

fn sum(
    name: &str,
    unit: &str,
    mono: bool,
    temporality: AggregationTemporality,
    pts: Vec<NumberDataPoint>,
) -> Metric {
    metric(
        name,
        unit,
        Data::Sum(Sum {
            data_points: pts,
            aggregation_temporality: temporality as i32,
            is_monotonic: mono,
        }),
    )
}

fn hist(name: &str, temporality: AggregationTemporality, pts: Vec<HistogramDataPoint>) -> Metric {
    metric(
        name,
        "s",
        Data::Histogram(Histogram {
            data_points: pts,
            aggregation_temporality: temporality as i32,
        }),
    )
}

fn hp(time: u64, bounds: &[f64], counts: &[u64], sum: f64) -> HistogramDataPoint {
    HistogramDataPoint {
        time_unix_nano: time,
        explicit_bounds: bounds.to_vec(),
        bucket_counts: counts.to_vec(),
        count: counts.iter().fold(0u64, |a, b| a.saturating_add(*b)),
        sum: Some(sum),
        ..Default::default()
    }
}

struct Env {
    store: Store,
    conv: Converter,
    reg: prometheus::Registry,
}

fn env() -> Env {
    let reg = prometheus::Registry::new();
    Env {
        store: Store::new(StoreOptions::default(), &reg),
        conv: Converter::new(&reg),
        reg,
    }
}

impl Env {
    /// Encodes `r` and converts it through the request view, as ingest does.
    fn ingest(&self, r: &ExportMetricsServiceRequest) -> IngestOutcome {
        let body = prost::Message::encode_to_vec(r);
        let req = edgewatch_otlp::view::decode(&body).expect("a valid request");
        self.conv.ingest(req.request(), &self.store, NOW)
    }
    fn dump(&self) -> String {
        let sel = self
            .store
            .select(&Selector::parse(r#"{__name__=~".+"}"#).unwrap(), NOW);
        let mut out = Vec::new();
        render(&sel, Format::Text, &mut out);
        String::from_utf8(out).unwrap()
    }
    fn dropped(&self, reason: &str) -> u64 {
        self.conv.dropped.with_label_values(&[reason]).get()
    }
}

#[test]
fn gauge_resource_scope_and_target_info() {
    let e = env();
    let mut res = resource();
    res.push(kv("host.arch", "arm64"));
    res.push(kv("k8s.pod.name", "ovms-0"));
    let r = req_with(
        res,
        "io.opentelemetry.runtime",
        "1.2.0",
        vec![gauge(
            "queue.depth",
            "{request}",
            vec![np(3.0, T, vec![kv("model", "resnet")])],
        )],
    );
    assert_eq!(
        e.ingest(&r),
        IngestOutcome {
            accepted_points: 1,
            dropped_points: 0,
            limited_points: 0,
        }
    );
    let want = format!(
        "# TYPE queue_depth gauge\n\
         queue_depth{{cluster=\"edge-a\",instance=\"pod-1\",job=\"models/ovms\",model=\"resnet\",node=\"node-1\",otel_scope_name=\"io.opentelemetry.runtime\",otel_scope_version=\"1.2.0\"}} 3 {T_MS}\n\
         # HELP target_info Target metadata\n\
         # TYPE target_info gauge\n\
         target_info{{cluster=\"edge-a\",host_arch=\"arm64\",instance=\"pod-1\",job=\"models/ovms\",k8s_pod_name=\"ovms-0\",node=\"node-1\"}} 1 {NOW}\n"
    );
    assert_eq!(e.dump(), want);
    assert_eq!(e.conv.points.get(), 1);
}

#[test]
fn no_target_info_without_extra_resource_attributes() {
    let e = env();
    e.ingest(&req_with(
        resource(),
        "",
        "",
        vec![gauge("g", "", vec![np(1.0, T, vec![])])],
    ));
    assert!(!e.dump().contains("target_info"));
    // job without namespace is service.name alone
    let e = env();
    e.ingest(&req(vec![gauge("g", "", vec![np(1.0, T, vec![])])]));
    assert_eq!(
        e.dump(),
        format!("# TYPE g gauge\ng{{job=\"svc\"}} 1 {T_MS}\n")
    );
}

#[test]
fn metric_type_table() {
    use AggregationTemporality::*;
    // (metric, expected exposition)
    let cases: Vec<(Metric, String)> = vec![
        (
            gauge("cpu.utilization", "1", vec![np(0.5, T, vec![])]),
            format!("# TYPE cpu_utilization_ratio gauge\ncpu_utilization_ratio{{job=\"svc\"}} 0.5 {T_MS}\n"),
        ),
        (
            sum("http.requests", "{request}", true, Cumulative, vec![np(7.0, T, vec![])]),
            format!("# TYPE http_requests_total counter\nhttp_requests_total{{job=\"svc\"}} 7 {T_MS}\n"),
        ),
        (
            sum("cpu.time", "s", true, Cumulative, vec![np(1.5, T, vec![])]),
            format!("# TYPE cpu_time_seconds_total counter\ncpu_time_seconds_total{{job=\"svc\"}} 1.5 {T_MS}\n"),
        ),
        (
            sum("requests_total", "", true, Cumulative, vec![np(1.0, T, vec![])]),
            format!("# TYPE requests_total counter\nrequests_total{{job=\"svc\"}} 1 {T_MS}\n"),
        ),
        (
            sum("active.requests", "", false, Cumulative, vec![np(-2.0, T, vec![])]),
            format!("# TYPE active_requests gauge\nactive_requests{{job=\"svc\"}} -2 {T_MS}\n"),
        ),
        (
            sum("memory.usage", "By", false, Cumulative, vec![np(1e9, T, vec![])]),
            format!("# TYPE memory_usage_bytes gauge\nmemory_usage_bytes{{job=\"svc\"}} 1e+09 {T_MS}\n"),
        ),
        (
            hist("latency", Cumulative, vec![hp(T, &[0.1, 1.0], &[1, 2, 3], 4.5)]),
            format!(
                "# TYPE latency_seconds histogram\n\
                 latency_seconds_bucket{{job=\"svc\",le=\"0.1\"}} 1 {T_MS}\n\
                 latency_seconds_bucket{{job=\"svc\",le=\"1\"}} 3 {T_MS}\n\
                 latency_seconds_bucket{{job=\"svc\",le=\"+Inf\"}} 6 {T_MS}\n\
                 latency_seconds_sum{{job=\"svc\"}} 4.5 {T_MS}\n\
                 latency_seconds_count{{job=\"svc\"}} 6 {T_MS}\n"
            ),
        ),
        (
            // no buckets: only +Inf from the count
            hist(
                "latency",
                Cumulative,
                vec![HistogramDataPoint {
                    time_unix_nano: T,
                    count: 4,
                    sum: None,
                    ..Default::default()
                }],
            ),
            format!(
                "# TYPE latency_seconds histogram\n\
                 latency_seconds_bucket{{job=\"svc\",le=\"+Inf\"}} 4 {T_MS}\n\
                 latency_seconds_count{{job=\"svc\"}} 4 {T_MS}\n"
            ),
        ),
        (
            metric(
                "rpc.duration",
                "ms",
                Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        time_unix_nano: T,
                        count: 10,
                        sum: 55.0,
                        quantile_values: vec![
                            ValueAtQuantile {
                                quantile: 0.5,
                                value: 4.0,
                            },
                            ValueAtQuantile {
                                quantile: 0.99,
                                value: 9.5,
                            },
                        ],
                        ..Default::default()
                    }],
                }),
            ),
            format!(
                "# TYPE rpc_duration_milliseconds summary\n\
                 rpc_duration_milliseconds{{job=\"svc\",quantile=\"0.5\"}} 4 {T_MS}\n\
                 rpc_duration_milliseconds{{job=\"svc\",quantile=\"0.99\"}} 9.5 {T_MS}\n\
                 rpc_duration_milliseconds_sum{{job=\"svc\"}} 55 {T_MS}\n\
                 rpc_duration_milliseconds_count{{job=\"svc\"}} 10 {T_MS}\n"
            ),
        ),
    ];
    for (m, want) in cases {
        let e = env();
        let name = m.name.clone();
        let out = e.ingest(&req(vec![m]));
        assert_eq!(out.dropped_points, 0, "{name}");
        assert_eq!(e.dump(), want, "{name}");
    }
}

#[test]
fn delta_sum_accumulates_across_requests() {
    use AggregationTemporality::Delta;
    let e = env();
    let m = |v: f64, t: u64| {
        sum(
            "jobs.done",
            "",
            true,
            Delta,
            vec![np(v, t, vec![kv("q", "a")])],
        )
    };
    e.ingest(&req(vec![m(2.0, T)]));
    e.ingest(&req(vec![m(3.0, T + 1_000_000_000)]));
    let out = e.ingest(&req(vec![m(5.0, T)])); // older than the last one
    assert_eq!(out.dropped_points, 1);
    assert_eq!(e.dropped("delta_out_of_order"), 1);
    assert_eq!(
        e.dump(),
        format!(
            "# TYPE jobs_done_total counter\njobs_done_total{{job=\"svc\",q=\"a\"}} 5 {}\n",
            T_MS + 1000
        )
    );
    // non-monotonic delta → gauge holding the running total
    let e = env();
    let m = |v: f64, t: u64| sum("queue.items", "", false, Delta, vec![np(v, t, vec![])]);
    e.ingest(&req(vec![m(4.0, T)]));
    e.ingest(&req(vec![m(-1.0, T + 1)]));
    assert_eq!(
        e.dump(),
        format!("# TYPE queue_items gauge\nqueue_items{{job=\"svc\"}} 3 {T_MS}\n")
    );
    assert_eq!(e.conv.delta_series(), 1);
}

#[test]
fn delta_histogram_accumulates() {
    use AggregationTemporality::Delta;
    let e = env();
    e.ingest(&req(vec![hist(
        "lat",
        Delta,
        vec![hp(T, &[1.0], &[1, 1], 2.5)],
    )]));
    e.ingest(&req(vec![hist(
        "lat",
        Delta,
        vec![hp(T + 1_000_000, &[1.0], &[2, 0], 1.0)],
    )]));
    assert_eq!(
        e.dump(),
        format!(
            "# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{{job=\"svc\",le=\"1\"}} 3 {t}\n\
             lat_seconds_bucket{{job=\"svc\",le=\"+Inf\"}} 4 {t}\n\
             lat_seconds_sum{{job=\"svc\"}} 3.5 {t}\n\
             lat_seconds_count{{job=\"svc\"}} 4 {t}\n",
            t = T_MS + 1
        )
    );
}

#[test]
fn drops_are_counted() {
    use AggregationTemporality::*;
    let e = env();
    let exp = metric(
        "exp",
        "",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint::default(); 2],
            aggregation_temporality: Cumulative as i32,
        }),
    );
    let no_name = gauge("", "", vec![np(1.0, T, vec![])]);
    let bad_name = gauge("...", "", vec![np(1.0, T, vec![])]);
    let unspecified = sum("s", "", true, Unspecified, vec![np(1.0, T, vec![])]);
    let bad_hist = hist(
        "h",
        Cumulative,
        vec![
            hp(T, &[1.0, 2.0], &[1, 2], 0.0),
            hp(T, &[2.0, 1.0], &[1, 2, 3], 0.0),
        ],
    );
    let no_value = gauge(
        "nv",
        "",
        vec![NumberDataPoint {
            time_unix_nano: T,
            ..Default::default()
        }],
    );
    let no_recorded = gauge(
        "nr",
        "",
        vec![NumberDataPoint {
            time_unix_nano: T,
            flags: 1,
            value: Some(number_data_point::Value::AsInt(1)),
            ..Default::default()
        }],
    );
    let out = e.ingest(&req(vec![
        exp,
        no_name,
        bad_name,
        unspecified,
        bad_hist,
        no_value,
        no_recorded,
    ]));
    assert_eq!(
        out,
        IngestOutcome {
            accepted_points: 1,
            dropped_points: 8,
            limited_points: 0,
        }
    );
    for (r, n) in [
        ("exponential_histogram", 2),
        ("empty_name", 1),
        ("invalid_name", 1),
        ("unspecified_temporality", 1),
        ("invalid_histogram", 2),
        ("missing_value", 1),
    ] {
        assert_eq!(e.dropped(r), n, "{r}");
    }
    assert_eq!(
        e.store.series_count(),
        0,
        "nothing written; no target_info (no extra attrs)"
    );
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&e.reg.gather())
        .unwrap();
    assert!(
        text.contains("edgewatch_convert_dropped_points_total{reason=\"exponential_histogram\"} 2")
    );
    assert!(text.contains("edgewatch_convert_points_total 1"));
}

#[test]
fn label_sanitising_collisions_and_odd_values() {
    let e = env();
    let arr = KeyValue {
        key: "tags".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(any_value::Value::StringValue("a".into())),
                    },
                    AnyValue {
                        value: Some(any_value::Value::IntValue(2)),
                    },
                ],
            })),
        }),
        ..Default::default()
    };
    let bytes = KeyValue {
        key: "raw".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BytesValue(vec![1, 2, 3])),
        }),
        ..Default::default()
    };
    let attrs = vec![
        kv("a_b", "2"),
        kv("a.b", "1"),
        kv("1st", "x"),
        kv("empty", ""),
        kv("__name__", "evil"),
        kv("quote", "say \"hi\"\\\n"),
        arr,
        bytes,
        kv("job", "overridden"),
    ];
    e.ingest(&req(vec![gauge("g", "", vec![np(f64::NAN, T, attrs)])]));
    assert_eq!(
        e.dump(),
        format!(
            "# TYPE g gauge\n\
             g{{_name_=\"evil\",a_b=\"1;2\",job=\"svc\",key_1st=\"x\",quote=\"say \\\"hi\\\"\\\\\\n\",raw=\"AQID\",tags=\"[\\\"a\\\",2]\"}} NaN {T_MS}\n"
        )
    );
}

#[test]
fn timestamp_zero_gets_now_and_inf_passes() {
    let e = env();
    e.ingest(&req(vec![gauge(
        "g",
        "",
        vec![np(f64::NEG_INFINITY, 0, vec![])],
    )]));
    assert_eq!(
        e.dump(),
        format!("# TYPE g gauge\ng{{job=\"svc\"}} -Inf {NOW}\n")
    );
}

#[test]
fn scraped_origin_passes_through() {
    use AggregationTemporality::Cumulative;
    let e = env();
    let mut res = resource();
    // would make a target_info for OTLP-native metrics; service.namespace is
    // not part of a scraped series' job (job = service.name)
    res.push(kv("host.arch", "arm64"));
    let r = req_with(
        res,
        SCRAPE_SCOPE,
        "0.1.0",
        vec![
            // a counter without _total, as OVMS exposes it
            sum(
                "ovms_requests_success",
                "",
                true,
                Cumulative,
                vec![np(
                    12.0,
                    T,
                    vec![
                        kv("name", "resnet"),
                        kv("api", "KServe"),
                        kv("job", "scrapejob"),
                    ],
                )],
            ),
            gauge(
                "ovms_current_requests",
                "1",
                vec![np(0.0, T, vec![kv("name", "resnet")])],
            ),
            hist(
                "ovms_request_time_us",
                Cumulative,
                vec![HistogramDataPoint {
                    attributes: vec![kv("name", "resnet")],
                    ..hp(T, &[10.0], &[1, 1], 30.0)
                }],
            ),
        ],
    );
    assert_eq!(e.ingest(&r).accepted_points, 3);
    let base = "cluster=\"edge-a\",instance=\"pod-1\",job=\"ovms\"";
    assert_eq!(
        e.dump(),
        format!(
            "# TYPE ovms_current_requests gauge\n\
             ovms_current_requests{{{base},name=\"resnet\",node=\"node-1\"}} 0 {T_MS}\n\
             # TYPE ovms_request_time_us histogram\n\
             ovms_request_time_us_bucket{{{base},le=\"10\",name=\"resnet\",node=\"node-1\"}} 1 {T_MS}\n\
             ovms_request_time_us_bucket{{{base},le=\"+Inf\",name=\"resnet\",node=\"node-1\"}} 2 {T_MS}\n\
             ovms_request_time_us_sum{{{base},name=\"resnet\",node=\"node-1\"}} 30 {T_MS}\n\
             ovms_request_time_us_count{{{base},name=\"resnet\",node=\"node-1\"}} 2 {T_MS}\n\
             # TYPE ovms_requests_success counter\n\
             ovms_requests_success{{api=\"KServe\",cluster=\"edge-a\",exported_job=\"scrapejob\",instance=\"pod-1\",job=\"ovms\",name=\"resnet\",node=\"node-1\"}} 12 {T_MS}\n"
        )
    );
}

#[test]
fn mixed_scopes_in_one_resource() {
    // a native scope in the same resource brings target_info and scope labels
    // for its own series only
    let e = env();
    let mut r = req_with(
        vec![kv("service.name", "svc"), kv("x", "1")],
        SCRAPE_SCOPE,
        "",
        vec![gauge("up_like", "", vec![np(1.0, T, vec![])])],
    );
    r.resource_metrics[0].scope_metrics.push(ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: "lib".into(),
            ..Default::default()
        }),
        metrics: vec![gauge("native", "", vec![np(2.0, T, vec![])])],
        ..Default::default()
    });
    e.ingest(&r);
    assert_eq!(
        e.dump(),
        format!(
            "# TYPE native gauge\nnative{{job=\"svc\",otel_scope_name=\"lib\"}} 2 {T_MS}\n\
             # HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{{job=\"svc\",x=\"1\"}} 1 {NOW}\n\
             # TYPE up_like gauge\nup_like{{job=\"svc\"}} 1 {T_MS}\n"
        )
    );
}

#[test]
fn converter_is_send_sync() {
    fn f<X: Send + Sync>() {}
    f::<Converter>();
}

#[test]
fn malformed_input_never_panics() {
    use AggregationTemporality::*;
    let e = env();
    let weird = vec![
        ExportMetricsServiceRequest::default(),
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics::default()],
        },
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics::default()],
                ..Default::default()
            }],
        },
        req(vec![
            Metric {
                name: "no_data".into(),
                ..Default::default()
            },
            hist(
                "nan_bound",
                Cumulative,
                vec![hp(T, &[f64::NAN], &[1, 1], 0.0)],
            ),
            hist(
                "inf_bound",
                Cumulative,
                vec![hp(T, &[1.0, f64::INFINITY], &[1, 1, 0], 0.0)],
            ),
            hist(
                "huge",
                Delta,
                vec![hp(u64::MAX, &[1.0], &[u64::MAX, u64::MAX], f64::MAX)],
            ),
            hist(
                "huge",
                Delta,
                vec![hp(u64::MAX - 1, &[1.0], &[u64::MAX, 1], f64::MAX)],
            ),
            sum("s", "", true, Delta, vec![np(f64::NAN, u64::MAX, vec![])]),
            gauge(
                "\u{0}\u{ffff}",
                "\u{0}/\u{0}",
                vec![np(1.0, T, vec![kv("", "x"), kv("\n", "y")])],
            ),
            gauge("u", "/", vec![np(1.0, T, vec![])]),
            gauge("u2", "{a}/{b}", vec![np(1.0, T, vec![])]),
        ]),
    ];
    for r in &weird {
        e.ingest(r);
    }
    let text = e.dump();
    assert!(
        text.contains("inf_bound_seconds_bucket{job=\"svc\",le=\"1\"} 1 "),
        "{text}"
    );
    assert!(
        text.contains("inf_bound_seconds_bucket{job=\"svc\",le=\"+Inf\"} 2 "),
        "{text}"
    );
    assert!(!text.contains("nan_bound"), "{text}");
    assert_eq!(e.dropped("invalid_histogram"), 1);
    assert_eq!(e.dropped("delta_out_of_order"), 1);
    assert_eq!(
        e.dropped("invalid_name"),
        1,
        "a name of only invalid characters"
    );
}

#[test]
fn stale_markers_end_series_at_once() {
    let e = env();
    let g = |flags: u32| {
        let mut p = np(3.0, T, vec![kv("a", "1")]);
        p.flags = flags;
        gauge("g", "", vec![p])
    };
    let mut h = hp(T, &[1.0, 5.0], &[1, 2, 3], 9.0);
    e.ingest(&req(vec![
        g(0),
        hist("h", AggregationTemporality::Cumulative, vec![h.clone()]),
    ]));
    assert!(
        e.dump().contains("g{a=\"1\",job=\"svc\"} 3"),
        "{}",
        e.dump()
    );
    assert!(
        e.dump()
            .contains("h_seconds_bucket{job=\"svc\",le=\"5\"} 3"),
        "{}",
        e.dump()
    );

    h.flags = FLAG_NO_RECORDED_VALUE;
    h.time_unix_nano = T + 1_000_000;
    let mut marker = g(FLAG_NO_RECORDED_VALUE);
    if let Some(Data::Gauge(gg)) = &mut marker.data {
        gg.data_points[0].time_unix_nano = T + 1_000_000;
    }
    let out = e.ingest(&req(vec![
        marker,
        hist("h", AggregationTemporality::Cumulative, vec![h]),
    ]));
    assert_eq!(out.dropped_points, 0);
    let dump = e.dump();
    assert!(!dump.contains("g{"), "the gauge is gone: {dump}");
    assert!(!dump.contains("h_seconds"), "{dump}");
}

#[test]
fn model_enrichment_becomes_labels_unless_the_series_has_its_own() {
    let e = env();
    let mut res = vec![kv("service.name", "triton")];
    res.push(kv("model.name", "housing"));
    res.push(kv("model.version", "3"));
    let own = np(1.0, T, vec![kv("model", "resnet")]);
    let plain = np(2.0, T, vec![]);
    e.ingest(&req_with(
        res.clone(),
        SCRAPE_SCOPE,
        "",
        vec![gauge("nv_inference_count", "", vec![own])],
    ));
    e.ingest(&req_with(
        res,
        "",
        "",
        vec![gauge("queue", "", vec![plain])],
    ));
    let dump = e.dump();
    assert!(
        dump.contains("nv_inference_count{job=\"triton\",model=\"resnet\",model_version=\"3\"} 1"),
        "{dump}"
    );
    assert!(
        dump.contains("queue{job=\"triton\",model=\"housing\",model_version=\"3\"} 2"),
        "{dump}"
    );
    assert!(
        !dump.contains("target_info"),
        "model attributes are labels, not target_info: {dump}"
    );
}

#[test]
fn conversion_through_the_view_matches_prosts_decode_on_mutated_requests() {
    use prost::Message;
    use AggregationTemporality::*;
    // Every kind of point, markers, deltas, odd attribute values.
    let mut marker = np(1.0, T, vec![kv("m", "x")]);
    marker.flags = FLAG_NO_RECORDED_VALUE;
    let attrs = vec![
        kv("a.b", "1"),
        kv("a_b", "2"),
        kv("job", "j"),
        KeyValue {
            key: "n".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(7)),
            }),
            ..Default::default()
        },
    ];
    let summary = metric(
        "rpc",
        "ms",
        Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: attrs.clone(),
                time_unix_nano: T,
                count: 3,
                sum: 2.0,
                quantile_values: vec![ValueAtQuantile {
                    quantile: 0.5,
                    value: 1.0,
                }],
                ..Default::default()
            }],
        }),
    );
    let metrics = vec![
        gauge("g", "1", vec![np(1.0, T, attrs.clone()), marker]),
        sum("c", "s", true, Cumulative, vec![np(2.0, T, attrs.clone())]),
        sum("d", "", true, Delta, vec![np(3.0, T, attrs.clone())]),
        hist("h", Delta, vec![hp(T, &[0.5, 1.0], &[1, 2, 3], 4.0)]),
        summary,
    ];
    let mut r = req_with(resource(), "lib", "1", metrics.clone());
    r.resource_metrics[0].scope_metrics.push(ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: SCRAPE_SCOPE.into(),
            ..Default::default()
        }),
        metrics,
        ..Default::default()
    });
    r.resource_metrics[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("host.arch", "arm64"));
    let base = r.encode_to_vec();
    let convert = |body: &[u8]| {
        let e = env();
        let req = edgewatch_otlp::view::decode(body).expect("accepted");
        let out = e.conv.ingest(req.request(), &e.store, NOW);
        (out, e.dump())
    };
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut accepted = 0;
    for _ in 0..3000 {
        let mut b = base.clone();
        for _ in 0..1 + next() % 2 {
            let i = (next() % b.len() as u64) as usize;
            match next() % 3 {
                0 => b[i] = next() as u8,
                1 => b[i] ^= 1 << (next() % 8),
                _ => {
                    b.remove(i);
                }
            }
        }
        let Ok(decoded) = ExportMetricsServiceRequest::decode(&b[..]) else {
            continue;
        };
        accepted += 1;
        assert_eq!(
            convert(&b),
            convert(&decoded.encode_to_vec()),
            "conversion of {b:?}"
        );
    }
    assert!(accepted > 300, "{accepted}");
}
