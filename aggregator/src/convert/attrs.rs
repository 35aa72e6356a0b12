//! Attribute values as label values, per the OTel spec "AnyValue
//! representation for non-OTLP protocols" (common/README.md): strings as is,
//! booleans `true`/`false`, integers in decimal, doubles in decimal (`NaN`,
//! `Infinity`, `-Infinity`), bytes in standard base64, arrays and maps as JSON
//! (bytes inside as base64 strings, an empty value as `null`), empty → `""`.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::AnyValue;

pub fn any_value_string(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => double_string(*d),
        Some(Value::BytesValue(b)) => base64(b),
        Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => json(Some(v)).to_string(),
        // An index into a profiles string table: meaningless without it.
        Some(Value::StringValueStrindex(_)) => String::new(),
    }
}

fn double_string(d: f64) -> String {
    if d.is_nan() {
        "NaN".into()
    } else if d == f64::INFINITY {
        "Infinity".into()
    } else if d == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        // Rust's Display never uses an exponent: like Go's FormatFloat(d, 'f', -1).
        d.to_string()
    }
}

fn json(v: Option<&Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or_else(|| J::String(double_string(*d))),
        Some(Value::BytesValue(b)) => J::String(base64(b)),
        Some(Value::ArrayValue(a)) => {
            J::Array(a.values.iter().map(|x| json(x.value.as_ref())).collect())
        }
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|x| {
                    (
                        x.key.clone(),
                        json(x.value.as_ref().and_then(|v| v.value.as_ref())),
                    )
                })
                .collect(),
        ),
        Some(Value::StringValueStrindex(_)) => J::Null,
    }
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, KeyValueList};

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
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
