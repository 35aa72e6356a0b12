//! Attribute values as label values, per the OTel spec "AnyValue
//! representation for non-OTLP protocols" (common/README.md): strings as is,
//! booleans `true`/`false`, integers in decimal, doubles in decimal (`NaN`,
//! `Infinity`, `-Infinity`), bytes in standard base64, arrays and maps as JSON
//! (bytes inside as base64 strings, an empty value as `null`), empty → `""`.

use edgewatch_otlp::view::AnyValueView;
use std::io::Write;

/// Appends the label value of an attribute value to `out`.
pub fn write_any_value(out: &mut Vec<u8>, v: Option<AnyValueView<'_>>) {
    match v {
        None => {}
        Some(AnyValueView::String(s)) => out.extend_from_slice(s.as_bytes()),
        Some(AnyValueView::Bool(b)) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        // Writing to a Vec cannot fail.
        Some(AnyValueView::Int(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(AnyValueView::Double(d)) => write_double(out, d),
        Some(AnyValueView::Bytes(b)) => base64(out, b),
        // Arrays and maps as labels are rare: these build a JSON value (allocating).
        Some(v @ (AnyValueView::Array(_) | AnyValueView::Kvlist(_))) => {
            let _ = serde_json::to_writer(out, &json(Some(v)));
        }
        // An index into a profiles string table: meaningless without it.
        Some(AnyValueView::StringStrindex(_)) => {}
    }
}

fn write_double(out: &mut Vec<u8>, d: f64) {
    if d.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if d == f64::INFINITY {
        out.extend_from_slice(b"Infinity");
    } else if d == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Infinity");
    } else {
        // Rust's Display never uses an exponent: like Go's FormatFloat(d, 'f', -1).
        let _ = write!(out, "{d}");
    }
}

fn json(v: Option<AnyValueView<'_>>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        None => J::Null,
        Some(AnyValueView::String(s)) => J::String(s.to_owned()),
        Some(AnyValueView::Bool(b)) => J::Bool(b),
        Some(AnyValueView::Int(i)) => J::from(i),
        Some(AnyValueView::Double(d)) => serde_json::Number::from_f64(d)
            .map(J::Number)
            .unwrap_or_else(|| {
                let mut s = Vec::new();
                write_double(&mut s, d);
                J::String(String::from_utf8_lossy(&s).into_owned())
            }),
        Some(AnyValueView::Bytes(b)) => {
            let mut s = Vec::new();
            base64(&mut s, b);
            J::String(String::from_utf8_lossy(&s).into_owned())
        }
        Some(AnyValueView::Array(a)) => J::Array(a.values().map(json).collect()),
        Some(AnyValueView::Kvlist(kv)) => J::Object(
            kv.values()
                .map(|x| (x.key().to_owned(), json(x.value())))
                .collect(),
        ),
        Some(AnyValueView::StringStrindex(_)) => J::Null,
    }
}

/// Standard base64 with padding (RFC 4648 §4), appended to `out`.
pub fn base64(out: &mut Vec<u8>, data: &[u8]) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63]);
        out.push(A[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63]
        } else {
            b'='
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};

    /// The label value of `v` read through the request view, as ingest reads it.
    fn any_value_string(v: Option<&AnyValue>) -> String {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{
            metric::Data, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![KeyValue {
                                    key: "k".into(),
                                    value: v.cloned(),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = prost::Message::encode_to_vec(&req);
        let decoded = edgewatch_otlp::view::decode(&body).unwrap();
        let rm = decoded.request().resource_metrics().next().unwrap();
        let m = rm.scope_metrics().next().unwrap().metrics().next().unwrap();
        let p = m.data().unwrap().view().number_points().next().unwrap();
        let kv = p.attributes.clone().next().unwrap();
        let mut out = Vec::new();
        write_any_value(&mut out, kv.value());
        String::from_utf8(out).unwrap()
    }

    fn av(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn stringification_table() {
        let cases: Vec<(Option<AnyValue>, &str)> = vec![
            (None, ""),
            (Some(AnyValue { value: None }), ""),
            (Some(av(Value::StringValue("x y".into()))), "x y"),
            (Some(av(Value::BoolValue(true))), "true"),
            (Some(av(Value::IntValue(-42))), "-42"),
            (Some(av(Value::DoubleValue(1.5))), "1.5"),
            (Some(av(Value::DoubleValue(1e21))), "1000000000000000000000"),
            (Some(av(Value::DoubleValue(f64::NAN))), "NaN"),
            (Some(av(Value::DoubleValue(f64::NEG_INFINITY))), "-Infinity"),
            (Some(av(Value::BytesValue(b"hello".to_vec()))), "aGVsbG8="),
            (Some(av(Value::BytesValue(vec![]))), ""),
            (
                Some(av(Value::ArrayValue(ArrayValue {
                    values: vec![
                        av(Value::StringValue("a".into())),
                        av(Value::IntValue(1)),
                        av(Value::DoubleValue(2.5)),
                        av(Value::BoolValue(false)),
                        av(Value::BytesValue(vec![0xff])),
                        AnyValue { value: None },
                    ],
                }))),
                r#"["a",1,2.5,false,"/w==",null]"#,
            ),
            (
                Some(av(Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        key_strindex: 0,
                        value: Some(av(Value::ArrayValue(ArrayValue {
                            values: vec![av(Value::StringValue("v\"".into()))],
                        }))),
                    }],
                }))),
                r#"{"k":["v\""]}"#,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(any_value_string(v.as_ref()), want, "{v:?}");
        }
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64(&mut out, i.as_bytes());
            assert_eq!(out, o.as_bytes());
        }
    }
}
