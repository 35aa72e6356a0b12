//! The shallow decode must accept exactly what prost's full decode accepts,
//! count the same points, and re-encode to the same request.

use super::*;
use crate::{count_points, ExportMetricsServiceRequest};
use edgewatch_testkit::mutate::{agree_with_prost, assert_both_verdicts, bad_gauge_attribute_key};
use edgewatch_testkit::otlp::{kv, s, wrap_metrics};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValueList,
};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use prost::Message;

/// A request with every kind of metric, exemplars and nested attribute values.
fn request() -> ExportMetricsServiceRequest {
    let attrs = vec![
        kv("pod", s("ovms-1")),
        kv("n", any_value::Value::IntValue(-3)),
        kv(
            "list",
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: vec![kv("deep", any_value::Value::BoolValue(true))],
                    })),
                }],
            }),
        ),
    ];
    let exemplar = Exemplar {
        filtered_attributes: vec![kv("trace", s("x"))],
        time_unix_nano: 7,
        span_id: vec![1; 8],
        trace_id: vec![2; 16],
        value: Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(0.5)),
    };
    let number = |v: f64| NumberDataPoint {
        attributes: attrs.clone(),
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        exemplars: vec![exemplar.clone()],
        ..Default::default()
    };
    let metric = |name: &str, data: Data| Metric {
        name: name.into(),
        unit: "s".into(),
        data: Some(data),
        ..Default::default()
    };
    let metrics = vec![
        metric(
            "g",
            Data::Gauge(Gauge {
                data_points: vec![number(1.0), number(2.0)],
            }),
        ),
        metric(
            "c_total",
            Data::Sum(Sum {
                data_points: vec![number(3.0)],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        metric(
            "h",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attrs.clone(),
                    count: 5,
                    sum: Some(2.5),
                    bucket_counts: vec![1, 2, 2],
                    explicit_bounds: vec![0.1, 1.0],
                    exemplars: vec![exemplar.clone()],
                    min: Some(0.01),
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            }),
        ),
        metric(
            "e",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    count: 3,
                    scale: -2,
                    positive: Some(Buckets {
                        offset: -1,
                        bucket_counts: vec![1, 300, 2],
                    }),
                    zero_threshold: 0.001,
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "q",
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    count: 4,
                    sum: 1.0,
                    quantile_values: vec![ValueAtQuantile {
                        quantile: 0.99,
                        value: 0.7,
                    }],
                    ..Default::default()
                }],
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("ovms"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "sdk".into(),
                        version: "1".into(),
                        attributes: vec![kv("a", s("b"))],
                        dropped_attributes_count: 1,
                    }),
                    metrics,
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                }],
                schema_url: String::new(),
            },
            ResourceMetrics::default(),
        ],
    }
}

/// prost's verdict and ours on `bytes`; when both accept, the same points and
/// the same request after the shallow re-encode.
fn agree(bytes: &[u8]) -> bool {
    let full = ExportMetricsServiceRequest::decode(bytes);
    let shallow = decode_shallow(Bytes::copy_from_slice(bytes));
    agree_with_prost(bytes, full, "shallow", shallow, |f, (sh, points)| {
        assert_eq!(points, count_points(&f), "points of {bytes:?}");
        let again = ExportMetricsServiceRequest::decode(&sh.encode_to_vec()[..])
            .expect("re-encoded shallow request decodes");
        assert_eq!(again, f, "re-encode of {bytes:?}");
    })
}

#[test]
fn valid_requests_count_and_round_trip() {
    let req = request();
    let bytes = req.encode_to_vec();
    assert!(agree(&bytes));
    let (sh, points) = decode_shallow(Bytes::from(bytes.clone())).unwrap();
    assert_eq!(points, 6);
    // Canonical input: the shallow re-encode is byte for byte the same.
    assert_eq!(sh.encode_to_vec(), bytes);
    assert!(agree(&[]));
}

#[test]
fn oneof_semantics_match_prost() {
    // A metric whose `data` appears twice: prost keeps the last variant, and
    // merges a repeated one.
    let mut m = Metric {
        name: "x".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint::default(); 2],
        })),
        ..Default::default()
    };
    let mut bytes = m.encode_to_vec();
    m.data = Some(Data::Sum(Sum {
        data_points: vec![NumberDataPoint::default(); 3],
        ..Default::default()
    }));
    let sum = m.encode_to_vec();
    bytes.extend_from_slice(&sum);
    bytes.extend_from_slice(&sum);
    let req = wrap_metrics(&bytes);
    assert!(agree(&req));
    assert_eq!(decode_shallow(Bytes::from(req)).unwrap().1, 6);
}

#[test]
fn mutated_requests_get_prosts_verdict() {
    let base = request().encode_to_vec();
    assert_both_verdicts(&base, 0x2545_f491_4f6c_dd1d, 20_000, 1000, agree);
}

#[test]
fn errors_name_the_path() {
    let bytes = bad_gauge_attribute_key(request());
    let err = decode_shallow(Bytes::from(bytes)).unwrap_err().to_string();
    assert!(
        err.contains("ScopeMetrics field 2: Metric field 5: Gauge field 1: NumberDataPoint field 7: KeyValue field 1: invalid string value"),
        "{err}"
    );
}

/// `n` copies of an empty message in field 1, as one length-delimited field
/// `tag` (the message holding them).
fn empties(n: usize, tag: u32) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::bytes::encode(tag, &[0x0a_u8, 0x00].repeat(n), &mut out);
    out
}

#[test]
fn bodies_of_empty_elements_are_refused_before_decoding() {
    // 1 Mi empty ResourceMetrics: 2 MiB that would decode into ~100 MiB.
    let bomb = [0x0a_u8, 0x00].repeat(1 << 20);
    let e = decode_shallow(Bytes::from(bomb)).unwrap_err();
    assert!(matches!(e, ExportError::InvalidArgument(_)), "{e}");
    let e = e.to_string();
    assert!(e.contains("1048576 in resource_metrics"), "{e}");
    // The same inside one resource: empty attributes, empty entity references.
    for (tag, field) in [(1, "attributes"), (3, "entity_refs")] {
        let resource = [(tag << 3 | 2) as u8, 0x00].repeat(1 << 19);
        let mut rm = Vec::new();
        prost::encoding::bytes::encode(1, &resource, &mut rm);
        let mut req = Vec::new();
        prost::encoding::bytes::encode(1, &rm, &mut req);
        let e = decode_shallow(Bytes::from(req)).unwrap_err().to_string();
        assert!(e.contains(&format!("524288 in {field}")), "{e}");
    }
    // Empty data points are not decoded here: only counted.
    let gauge = empties(1 << 19, 5);
    let (_, points) = decode_shallow(Bytes::from(wrap_metrics(&gauge))).unwrap();
    assert_eq!(points, 1 << 19);
    // An ordinary request is far from the cap.
    let ordinary = request().encode_to_vec();
    decode_shallow(Bytes::from(ordinary)).unwrap();
}
