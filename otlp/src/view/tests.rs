//! The view must accept exactly what prost accepts and read what prost
//! decodes: both are rendered to one text form and compared, on canonical,
//! hand-made non-canonical and mutated requests.

use super::*;
use crate::ExportMetricsServiceRequest;
use edgewatch_testkit::mutate::{
    agree_with_prost, assert_both_verdicts, bad_gauge_attribute_key, break_utf8,
};
use edgewatch_testkit::otlp::{kv, s, wrap_metrics};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::fmt::Write;

/// Every kind of metric and attribute value, exemplars, optional fields.
fn request() -> ExportMetricsServiceRequest {
    let attrs = vec![
        kv("pod", s("ovms-1")),
        kv("n", any_value::Value::IntValue(-3)),
        kv("d", any_value::Value::DoubleValue(0.25)),
        kv("b", any_value::Value::BytesValue(vec![0, 1, 255])),
        kv(
            "list",
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![kv("deep", any_value::Value::BoolValue(true))],
                        })),
                    },
                    AnyValue { value: None },
                ],
            }),
        ),
        KeyValue {
            key: "none".into(),
            value: None,
            ..Default::default()
        },
    ];
    let exemplar = Exemplar {
        filtered_attributes: vec![kv("trace", s("x"))],
        time_unix_nano: 7,
        span_id: vec![1; 8],
        trace_id: vec![2; 16],
        value: Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(0.5)),
    };
    let number = |v: number_data_point::Value| NumberDataPoint {
        attributes: attrs.clone(),
        time_unix_nano: 1_700_000_000_000_000_000,
        start_time_unix_nano: 5,
        value: Some(v),
        exemplars: vec![exemplar.clone()],
        flags: 1,
    };
    let m = |name: &str, data: metric::Data| Metric {
        name: name.into(),
        description: "d".into(),
        unit: "s".into(),
        data: Some(data),
        metadata: vec![kv("meta", s("x"))],
    };
    let metrics = vec![
        m(
            "g",
            metric::Data::Gauge(Gauge {
                data_points: vec![
                    number(number_data_point::Value::AsDouble(1.5)),
                    number(number_data_point::Value::AsInt(-2)),
                ],
            }),
        ),
        m(
            "c_total",
            metric::Data::Sum(Sum {
                data_points: vec![number(number_data_point::Value::AsDouble(3.0))],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        m(
            "h",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attrs.clone(),
                    count: 5,
                    sum: Some(2.5),
                    bucket_counts: vec![1, 2, 2],
                    explicit_bounds: vec![0.1, 1.0],
                    exemplars: vec![exemplar.clone()],
                    min: Some(0.01),
                    time_unix_nano: 9,
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
        ),
        m(
            "e",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint::default(); 2],
                aggregation_temporality: 1,
            }),
        ),
        m(
            "q",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: attrs.clone(),
                    count: 4,
                    sum: 1.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 0.7,
                        },
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 0.1,
                        },
                    ],
                    time_unix_nano: 11,
                    ..Default::default()
                }],
            }),
        ),
        Metric {
            name: "nodata".into(),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("ovms"))],
                    dropped_attributes_count: 2,
                    ..Default::default()
                }),
                scope_metrics: vec![
                    ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: "sdk".into(),
                            version: "1".into(),
                            attributes: vec![kv("a", s("b"))],
                            dropped_attributes_count: 1,
                        }),
                        metrics,
                        schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                    },
                    ScopeMetrics::default(),
                ],
                schema_url: "x".into(),
            },
            ResourceMetrics::default(),
        ],
    }
}

// One text form for both sides; floats by their bits.

fn any_prost(out: &mut String, v: Option<&any_value::Value>) {
    use any_value::Value as V;
    match v {
        None => out.push_str("none"),
        Some(V::StringValue(x)) => write!(out, "s{x:?}").unwrap(),
        Some(V::BoolValue(x)) => write!(out, "b{x}").unwrap(),
        Some(V::IntValue(x)) => write!(out, "i{x}").unwrap(),
        Some(V::DoubleValue(x)) => write!(out, "d{:x}", x.to_bits()).unwrap(),
        Some(V::BytesValue(x)) => write!(out, "y{x:?}").unwrap(),
        Some(V::StringValueStrindex(x)) => write!(out, "x{x}").unwrap(),
        Some(V::ArrayValue(a)) => {
            out.push('[');
            for e in &a.values {
                any_prost(out, e.value.as_ref());
                out.push(',');
            }
            out.push(']');
        }
        Some(V::KvlistValue(l)) => {
            out.push('{');
            for e in &l.values {
                kv_prost(out, e);
            }
            out.push('}');
        }
    }
}

fn kv_prost(out: &mut String, kv: &KeyValue) {
    write!(out, "{:?}=", kv.key).unwrap();
    any_prost(out, kv.value.as_ref().and_then(|v| v.value.as_ref()));
    out.push(';');
}

fn any_view(out: &mut String, v: Option<AnyValueView<'_>>) {
    match v {
        None => out.push_str("none"),
        Some(AnyValueView::String(x)) => write!(out, "s{x:?}").unwrap(),
        Some(AnyValueView::Bool(x)) => write!(out, "b{x}").unwrap(),
        Some(AnyValueView::Int(x)) => write!(out, "i{x}").unwrap(),
        Some(AnyValueView::Double(x)) => write!(out, "d{:x}", x.to_bits()).unwrap(),
        Some(AnyValueView::Bytes(x)) => write!(out, "y{x:?}").unwrap(),
        Some(AnyValueView::StringStrindex(x)) => write!(out, "x{x}").unwrap(),
        Some(AnyValueView::Array(a)) => {
            out.push('[');
            for e in a.values() {
                any_view(out, e);
                out.push(',');
            }
            out.push(']');
        }
        Some(AnyValueView::Kvlist(l)) => {
            out.push('{');
            for e in l.values() {
                kv_view(out, e);
            }
            out.push('}');
        }
    }
}

fn kv_view(out: &mut String, kv: KeyValueView<'_>) {
    write!(out, "{:?}=", kv.key()).unwrap();
    any_view(out, kv.value());
    out.push(';');
}

fn render_prost(req: &ExportMetricsServiceRequest) -> String {
    let mut o = String::new();
    for rm in &req.resource_metrics {
        o.push_str("R ");
        for a in rm.resource.iter().flat_map(|r| &r.attributes) {
            kv_prost(&mut o, a);
        }
        for sm in &rm.scope_metrics {
            let (n, v) = sm
                .scope
                .as_ref()
                .map_or(("", ""), |s| (&s.name[..], &s.version[..]));
            write!(o, "\n S {n:?} {v:?}").unwrap();
            for m in &sm.metrics {
                write!(o, "\n  M {:?} {:?} {:?} ", m.name, m.description, m.unit).unwrap();
                match &m.data {
                    None => o.push_str("none"),
                    Some(metric::Data::Gauge(g)) => {
                        o.push_str("gauge");
                        numbers_prost(&mut o, &g.data_points);
                    }
                    Some(metric::Data::Sum(s)) => {
                        write!(o, "sum {} {}", s.aggregation_temporality, s.is_monotonic).unwrap();
                        numbers_prost(&mut o, &s.data_points);
                    }
                    Some(metric::Data::Histogram(h)) => {
                        write!(o, "hist {}", h.aggregation_temporality).unwrap();
                        for p in &h.data_points {
                            o.push_str("\n   P ");
                            for a in &p.attributes {
                                kv_prost(&mut o, a);
                            }
                            let bounds: Vec<u64> =
                                p.explicit_bounds.iter().map(|b| b.to_bits()).collect();
                            write!(
                                o,
                                " {} {} {:?} {:?} {:?} {}",
                                p.time_unix_nano,
                                p.count,
                                p.sum.map(f64::to_bits),
                                p.bucket_counts,
                                bounds,
                                p.flags
                            )
                            .unwrap();
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        write!(o, "exp {}", h.data_points.len()).unwrap();
                    }
                    Some(metric::Data::Summary(s)) => {
                        o.push_str("summary");
                        for p in &s.data_points {
                            o.push_str("\n   P ");
                            for a in &p.attributes {
                                kv_prost(&mut o, a);
                            }
                            let q: Vec<(u64, u64)> = p
                                .quantile_values
                                .iter()
                                .map(|q| (q.quantile.to_bits(), q.value.to_bits()))
                                .collect();
                            write!(
                                o,
                                " {} {} {:x} {:?} {}",
                                p.time_unix_nano,
                                p.count,
                                p.sum.to_bits(),
                                q,
                                p.flags
                            )
                            .unwrap();
                        }
                    }
                }
            }
        }
        o.push('\n');
    }
    o
}

fn numbers_prost(o: &mut String, pts: &[NumberDataPoint]) {
    for p in pts {
        o.push_str("\n   P ");
        for a in &p.attributes {
            kv_prost(o, a);
        }
        let v = match p.value {
            None => "none".to_string(),
            Some(number_data_point::Value::AsDouble(d)) => format!("d{:x}", d.to_bits()),
            Some(number_data_point::Value::AsInt(i)) => format!("i{i}"),
        };
        write!(o, " {} {v} {}", p.time_unix_nano, p.flags).unwrap();
    }
}

fn render_view(req: RequestView<'_>) -> String {
    let mut o = String::new();
    for rm in req.resource_metrics() {
        o.push_str("R ");
        for a in rm.resource_attributes() {
            kv_view(&mut o, a);
        }
        for sm in rm.scope_metrics() {
            write!(o, "\n S {:?} {:?}", sm.scope_name(), sm.scope_version()).unwrap();
            for m in sm.metrics() {
                write!(
                    o,
                    "\n  M {:?} {:?} {:?} ",
                    m.name(),
                    m.description(),
                    m.unit()
                )
                .unwrap();
                match m.data() {
                    None => o.push_str("none"),
                    Some(Data::Gauge(g)) => {
                        o.push_str("gauge");
                        numbers_view(&mut o, g);
                    }
                    Some(Data::Sum(s)) => {
                        write!(
                            o,
                            "sum {} {}",
                            s.aggregation_temporality(),
                            s.is_monotonic()
                        )
                        .unwrap();
                        numbers_view(&mut o, s);
                    }
                    Some(Data::Histogram(h)) => {
                        write!(o, "hist {}", h.aggregation_temporality()).unwrap();
                        for p in h.histogram_points() {
                            o.push_str("\n   P ");
                            for a in p.attributes {
                                kv_view(&mut o, a);
                            }
                            let counts: Vec<u64> = p.bucket_counts.collect();
                            let bounds: Vec<u64> = p.explicit_bounds.collect();
                            write!(
                                o,
                                " {} {} {:?} {:?} {:?} {}",
                                p.time_unix_nano,
                                p.count,
                                p.sum.map(f64::to_bits),
                                counts,
                                bounds,
                                p.flags
                            )
                            .unwrap();
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        write!(o, "exp {}", h.point_count()).unwrap();
                    }
                    Some(Data::Summary(s)) => {
                        o.push_str("summary");
                        for p in s.summary_points() {
                            o.push_str("\n   P ");
                            for a in p.attributes {
                                kv_view(&mut o, a);
                            }
                            let q: Vec<(u64, u64)> = p
                                .quantile_values
                                .map(|q| (q.quantile.to_bits(), q.value.to_bits()))
                                .collect();
                            write!(
                                o,
                                " {} {} {:x} {:?} {}",
                                p.time_unix_nano,
                                p.count,
                                p.sum.to_bits(),
                                q,
                                p.flags
                            )
                            .unwrap();
                        }
                    }
                }
            }
        }
        o.push('\n');
    }
    o
}

fn numbers_view(o: &mut String, d: DataView<'_>) {
    for p in d.number_points() {
        o.push_str("\n   P ");
        for a in p.attributes {
            kv_view(o, a);
        }
        let v = match p.value {
            None => "none".to_string(),
            Some(NumberValue::Double(d)) => format!("d{:x}", d.to_bits()),
            Some(NumberValue::Int(i)) => format!("i{i}"),
        };
        write!(o, " {} {v} {}", p.time_unix_nano, p.flags).unwrap();
    }
}

/// prost's verdict and the view's on `bytes`; when both accept, the same
/// reading.
fn agree(bytes: &[u8]) -> bool {
    let full = ExportMetricsServiceRequest::decode(bytes);
    agree_with_prost(bytes, full, "the view", decode(bytes), |f, v| {
        assert_eq!(render_view(v.request()), render_prost(&f), "{bytes:?}");
    })
}

#[test]
fn canonical_request_reads_as_prost_decodes_it() {
    let bytes = request().encode_to_vec();
    assert!(agree(&bytes));
    let d = decode(&bytes).unwrap();
    assert!(!d.normalized(), "a canonical body is viewed in place");
    assert!(agree(&[]));
}

#[test]
fn last_wins_oneofs_and_unpacked_numbers() {
    use prost::encoding::{double, fixed64, string, uint32, uint64, WireType};
    // A histogram point with bounds and counts written one by one, scalars
    // repeated (the last wins), an unknown field and a group.
    let mut p = Vec::new();
    for b in [0.5, 1.0] {
        double::encode(7, &b, &mut p);
    }
    fixed64::encode_packed(6, &[1, 2], &mut p);
    fixed64::encode(6, &3, &mut p);
    fixed64::encode(3, &5, &mut p);
    fixed64::encode(3, &6, &mut p);
    double::encode(5, &1.0, &mut p);
    uint32::encode(10, &1, &mut p);
    uint64::encode(99, &7, &mut p);
    prost::encoding::encode_key(98, WireType::StartGroup, &mut p);
    uint64::encode(1, &7, &mut p);
    prost::encoding::encode_key(98, WireType::EndGroup, &mut p);
    let mut h = Vec::new();
    prost::encoding::bytes::encode(1, &p, &mut h);
    uint64::encode(2, &2, &mut h);
    uint64::encode(2, &1, &mut h);
    let mut m = Vec::new();
    string::encode(1, &"first".to_string(), &mut m);
    string::encode(1, &"h".to_string(), &mut m);
    // A gauge, then the histogram: the last variant wins.
    let g = Gauge {
        data_points: vec![NumberDataPoint::default()],
    };
    prost::encoding::message::encode(5, &g, &mut m);
    prost::encoding::bytes::encode(9, &h, &mut m);
    let req = wrap_metrics(&m);
    assert!(agree(&req));
    let d = decode(&req).unwrap();
    assert!(!d.normalized());
    let text = render_view(d.request());
    assert!(
        text.contains("M \"h\" \"\" \"\" hist 1\n   P  6 0 Some(4607182418800017408) [1, 2, 3] [4602678819172646912, 4607182418800017408] 1"),
        "{text}"
    );
}

#[test]
fn merged_messages_are_read_as_prost_merges_them() {
    let m = |name: &str| Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv(name, s("v"))],
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: false,
        })),
        ..Default::default()
    };
    // The same variant twice in one metric: points appended, scalars merged.
    let mut twice = m("a").encode_to_vec();
    twice.extend(m("b").encode_to_vec());
    let monotonic = Metric {
        data: Some(metric::Data::Sum(Sum {
            is_monotonic: true,
            ..Default::default()
        })),
        ..Default::default()
    };
    twice.extend(monotonic.encode_to_vec());
    let req = wrap_metrics(&twice);
    assert!(agree(&req));
    assert!(decode(&req).unwrap().normalized());

    // A resource, a scope and an attribute value given twice.
    let mut rm = ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s("a"))],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let res = Resource {
        attributes: vec![kv("k", s("b"))],
        ..Default::default()
    };
    prost::encoding::message::encode(1, &res, &mut rm);
    let mut scopes = ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: "n".into(),
            ..Default::default()
        }),
        metrics: vec![Metric {
            name: "m".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let version = InstrumentationScope {
        version: "2".into(),
        ..Default::default()
    };
    prost::encoding::message::encode(1, &version, &mut scopes);
    prost::encoding::bytes::encode(2, &scopes, &mut rm);
    let mut value = kv("arr", any_value::Value::ArrayValue(ArrayValue::default())).encode_to_vec();
    let arr = AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(s("x")),
            }],
        })),
    };
    prost::encoding::message::encode(2, &arr, &mut value);
    let mut r = Vec::new();
    prost::encoding::bytes::encode(1, &value, &mut r);
    prost::encoding::bytes::encode(1, &r, &mut rm);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &rm, &mut req);
    assert!(agree(&req));
    assert!(decode(&req).unwrap().normalized());
}

#[test]
fn mutated_requests_get_prosts_verdict_and_reading() {
    let base = request().encode_to_vec();
    assert_both_verdicts(&base, 0x9e37_79b9_7f4a_7c15, 20_000, 1000, agree);
}

#[test]
fn errors_name_the_path() {
    let bytes = bad_gauge_attribute_key(request());
    let err = decode(&bytes).err().expect("rejected").to_string();
    assert!(
        err.contains("malformed ExportMetricsServiceRequest: ExportMetricsServiceRequest field 1: ResourceMetrics field 2: ScopeMetrics field 2: Metric field 5: Gauge field 1: NumberDataPoint field 7: KeyValue field 1: invalid string value"),
        "{err}"
    );
    // Resource attributes are checked too.
    let mut req = request();
    req.resource_metrics[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes[0]
        .key = "BAD-KEY".into();
    let bytes = break_utf8(req.encode_to_vec(), b"BAD-KEY");
    let err = decode(&bytes).err().expect("rejected").to_string();
    assert!(
        err.contains(
            "ResourceMetrics field 1: Resource field 1: KeyValue field 1: invalid string value"
        ),
        "{err}"
    );
}

#[test]
fn merged_bodies_of_empty_points_are_refused_before_decoding() {
    // A metric with its gauge given twice (so prost would decode it all), the
    // first of 512 Ki empty points, the second of one: 1 MiB that would decode
    // into ~50 MiB.
    let mut gauge = Vec::new();
    prost::encoding::bytes::encode(1, &Vec::new(), &mut gauge);
    let points = [0x0a_u8, 0x00].repeat(1 << 19);
    let mut metric = Vec::new();
    prost::encoding::bytes::encode(5, &points, &mut metric);
    prost::encoding::bytes::encode(5, &gauge, &mut metric);
    let e = decode(&wrap_metrics(&metric))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("524289 in data_points"), "{e}");
    // Unmerged, the same points are only walked (the view allocates nothing).
    let mut metric = Vec::new();
    prost::encoding::bytes::encode(5, &points, &mut metric);
    assert!(!decode(&wrap_metrics(&metric)).unwrap().normalized());
}
