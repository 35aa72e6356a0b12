//! The aggregator's borrowed view of an OTLP export request.
//!
//! Invariants: it accepts exactly what prost accepts, and reads what prost
//! decodes: resources, scopes, metric names, attribute keys and every number,
//! histogram and summary point (values compared bit for bit).
#![no_main]

use edgewatch_otlp::view::{self, AnyValueView, Data, KeyValueView, NumberValue, Repeated};
use edgewatch_otlp::{decode_request, ExportMetricsServiceRequest};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use std::fmt::Write;

fuzz_target!(|data: &[u8]| {
    let viewed = view::decode(data);
    let full = decode_request(data);
    // An element-count cap may refuse what prost would decode; it says so.
    if let (Err(e), Ok(_)) = (&viewed, &full) {
        if is_limit(e) {
            return;
        }
    }
    assert_eq!(
        viewed.is_ok(),
        full.is_ok(),
        "view and prost disagree: {:?} vs {:?}",
        viewed.as_ref().err(),
        full.as_ref().err()
    );
    let (Ok(viewed), Ok(full)) = (viewed, full) else {
        return;
    };
    assert_eq!(render_view(&viewed), render_prost(&full));
});

fn any_view(out: &mut String, v: Option<AnyValueView<'_>>) {
    match v {
        None => out.push('-'),
        Some(AnyValueView::String(s)) => write!(out, "s{s:?}").unwrap(),
        Some(AnyValueView::Bool(b)) => write!(out, "b{b}").unwrap(),
        Some(AnyValueView::Int(i)) => write!(out, "i{i}").unwrap(),
        Some(AnyValueView::Double(d)) => write!(out, "d{:x}", d.to_bits()).unwrap(),
        Some(AnyValueView::Bytes(b)) => write!(out, "y{b:?}").unwrap(),
        Some(AnyValueView::Array(a)) => {
            out.push('[');
            for v in a.values() {
                any_view(out, v);
                out.push(',');
            }
            out.push(']');
        }
        Some(AnyValueView::StringStrindex(i)) => write!(out, "x{i}").unwrap(),
        Some(AnyValueView::Kvlist(l)) => {
            out.push('{');
            attrs_view(out, l.values());
            out.push('}');
        }
    }
}

fn attrs_view(out: &mut String, kvs: Repeated<'_, KeyValueView<'_>>) {
    for kv in kvs {
        write!(out, "{:?}=", kv.key()).unwrap();
        any_view(out, kv.value());
        out.push(';');
    }
}

fn any_prost(out: &mut String, v: Option<&any_value::Value>) {
    use any_value::Value;
    match v {
        None => out.push('-'),
        Some(Value::StringValue(s)) => write!(out, "s{s:?}").unwrap(),
        Some(Value::BoolValue(b)) => write!(out, "b{b}").unwrap(),
        Some(Value::IntValue(i)) => write!(out, "i{i}").unwrap(),
        Some(Value::DoubleValue(d)) => write!(out, "d{:x}", d.to_bits()).unwrap(),
        Some(Value::BytesValue(b)) => write!(out, "y{:?}", b.as_slice()).unwrap(),
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for v in &a.values {
                any_prost(out, v.value.as_ref());
                out.push(',');
            }
            out.push(']');
        }
        Some(Value::StringValueStrindex(i)) => write!(out, "x{i}").unwrap(),
        Some(Value::KvlistValue(l)) => {
            out.push('{');
            attrs_prost(out, &l.values);
            out.push('}');
        }
    }
}

fn attrs_prost(out: &mut String, kvs: &[KeyValue]) {
    for kv in kvs {
        write!(out, "{:?}=", kv.key).unwrap();
        any_prost(out, kv.value.as_ref().and_then(|v| v.value.as_ref()));
        out.push(';');
    }
}

fn render_view(d: &view::Decoded<'_>) -> String {
    let mut out = String::new();
    for rm in d.request().resource_metrics() {
        out.push_str("R ");
        attrs_view(&mut out, rm.resource_attributes());
        out.push('\n');
        for sm in rm.scope_metrics() {
            writeln!(out, " S {:?} {:?}", sm.scope_name(), sm.scope_version()).unwrap();
            for m in sm.metrics() {
                write!(
                    out,
                    "  M {:?} {:?} {:?}",
                    m.name(),
                    m.description(),
                    m.unit()
                )
                .unwrap();
                let Some(data) = m.data() else {
                    out.push_str(" none\n");
                    continue;
                };
                let (kind, dv) = match data {
                    Data::Gauge(v) => ("gauge", v),
                    Data::Sum(v) => ("sum", v),
                    Data::Histogram(v) => ("hist", v),
                    Data::ExponentialHistogram(v) => ("exp", v),
                    Data::Summary(v) => ("summary", v),
                };
                // Only the fields the message has (others are unknown fields to prost).
                let t = match kind {
                    "sum" | "hist" | "exp" => dv.aggregation_temporality(),
                    _ => 0,
                };
                let mono = kind == "sum" && dv.is_monotonic();
                assert_eq!(data.view().point_count(), dv.point_count());
                writeln!(out, " {kind} n={} t={t} mono={mono}", dv.point_count()).unwrap();
                match kind {
                    "gauge" | "sum" => {
                        for p in dv.number_points() {
                            write!(out, "   P {} {} ", p.time_unix_nano, p.flags).unwrap();
                            match p.value {
                                None => out.push('-'),
                                Some(NumberValue::Int(i)) => write!(out, "i{i}").unwrap(),
                                Some(NumberValue::Double(d)) => {
                                    write!(out, "d{:x}", d.to_bits()).unwrap()
                                }
                            }
                            out.push(' ');
                            attrs_view(&mut out, p.attributes);
                            out.push('\n');
                        }
                    }
                    "hist" => {
                        for p in dv.histogram_points() {
                            let sum = p.sum.map(f64::to_bits);
                            let b: Vec<u64> = p.bucket_counts.collect();
                            let e: Vec<u64> = p.explicit_bounds.collect();
                            write!(
                                out,
                                "   H {} {} {sum:?} {b:?} {e:?} {} ",
                                p.time_unix_nano, p.count, p.flags
                            )
                            .unwrap();
                            attrs_view(&mut out, p.attributes);
                            out.push('\n');
                        }
                    }
                    "summary" => {
                        for p in dv.summary_points() {
                            let q: Vec<(u64, u64)> = p
                                .quantile_values
                                .map(|q| (q.quantile.to_bits(), q.value.to_bits()))
                                .collect();
                            write!(
                                out,
                                "   Q {} {} {:x} {q:?} {} ",
                                p.time_unix_nano,
                                p.count,
                                p.sum.to_bits(),
                                p.flags
                            )
                            .unwrap();
                            attrs_view(&mut out, p.attributes);
                            out.push('\n');
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

fn render_prost(req: &ExportMetricsServiceRequest) -> String {
    let mut out = String::new();
    for rm in &req.resource_metrics {
        out.push_str("R ");
        if let Some(r) = &rm.resource {
            attrs_prost(&mut out, &r.attributes);
        }
        out.push('\n');
        for sm in &rm.scope_metrics {
            let (name, version) = sm
                .scope
                .as_ref()
                .map(|s| (s.name.as_str(), s.version.as_str()))
                .unwrap_or(("", ""));
            writeln!(out, " S {name:?} {version:?}").unwrap();
            for m in &sm.metrics {
                write!(out, "  M {:?} {:?} {:?}", m.name, m.description, m.unit).unwrap();
                let Some(data) = &m.data else {
                    out.push_str(" none\n");
                    continue;
                };
                match data {
                    metric::Data::Gauge(g) => {
                        writeln!(out, " gauge n={} t=0 mono=false", g.data_points.len()).unwrap();
                        numbers(&mut out, &g.data_points);
                    }
                    metric::Data::Sum(s) => {
                        writeln!(
                            out,
                            " sum n={} t={} mono={}",
                            s.data_points.len(),
                            s.aggregation_temporality,
                            s.is_monotonic
                        )
                        .unwrap();
                        numbers(&mut out, &s.data_points);
                    }
                    metric::Data::Histogram(h) => {
                        writeln!(
                            out,
                            " hist n={} t={} mono=false",
                            h.data_points.len(),
                            h.aggregation_temporality
                        )
                        .unwrap();
                        for p in &h.data_points {
                            let sum = p.sum.map(f64::to_bits);
                            let e: Vec<u64> =
                                p.explicit_bounds.iter().map(|b| b.to_bits()).collect();
                            write!(
                                out,
                                "   H {} {} {sum:?} {:?} {e:?} {} ",
                                p.time_unix_nano, p.count, p.bucket_counts, p.flags
                            )
                            .unwrap();
                            attrs_prost(&mut out, &p.attributes);
                            out.push('\n');
                        }
                    }
                    metric::Data::ExponentialHistogram(h) => {
                        writeln!(
                            out,
                            " exp n={} t={} mono=false",
                            h.data_points.len(),
                            h.aggregation_temporality
                        )
                        .unwrap();
                    }
                    metric::Data::Summary(s) => {
                        writeln!(out, " summary n={} t=0 mono=false", s.data_points.len()).unwrap();
                        for p in &s.data_points {
                            let q: Vec<(u64, u64)> = p
                                .quantile_values
                                .iter()
                                .map(|q| (q.quantile.to_bits(), q.value.to_bits()))
                                .collect();
                            write!(
                                out,
                                "   Q {} {} {:x} {q:?} {} ",
                                p.time_unix_nano,
                                p.count,
                                p.sum.to_bits(),
                                p.flags
                            )
                            .unwrap();
                            attrs_prost(&mut out, &p.attributes);
                            out.push('\n');
                        }
                    }
                }
            }
        }
    }
    out
}

fn numbers(out: &mut String, points: &[opentelemetry_proto::tonic::metrics::v1::NumberDataPoint]) {
    for p in points {
        write!(out, "   P {} {} ", p.time_unix_nano, p.flags).unwrap();
        match p.value {
            None => out.push('-'),
            Some(number_data_point::Value::AsInt(i)) => write!(out, "i{i}").unwrap(),
            Some(number_data_point::Value::AsDouble(d)) => {
                write!(out, "d{:x}", d.to_bits()).unwrap()
            }
        }
        out.push(' ');
        attrs_prost(out, &p.attributes);
        out.push('\n');
    }
}

fn is_limit(e: &edgewatch_otlp::ExportError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    matches!(e, edgewatch_otlp::ExportError::TooLarge(_))
        || text.contains("limit")
        || text.contains("too many")
}
