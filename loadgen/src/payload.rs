//! Cheap OTLP payloads: `ExportMetricsServiceRequest` bodies assembled from pre-encoded
//! per-series data point templates whose fixed-width fields (timestamps, values) are
//! patched in place. Building a request is a few memcpys per point and no allocation
//! other than the output buffer.
//!
//! Point `i` (global, across requests) belongs to series `i % series` and round
//! `i / series`; request `k` carries points `k*batch .. (k+1)*batch`. In
//! `--sequence-check` mode every series is the cumulative monotonic Sum
//! [`SEQUENCE_METRIC`] whose value is `round + 1`, so the per-series sequence is 1, 2, 3, ...
//! Otherwise even series are a gauge and odd series a cumulative monotonic Sum.

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;

/// Name of the per-series sequence metric of `--sequence-check`.
pub const SEQUENCE_METRIC: &str = "edgewatch_loadgen_sequence";
/// Gauge metric of the default (mixed) mode.
pub const GAUGE_METRIC: &str = "edgewatch_loadgen_gauge";
/// Cumulative monotonic Sum of the default (mixed) mode.
pub const COUNTER_METRIC: &str = "edgewatch_loadgen_counter";
/// The data point attribute that names a series.
pub const SERIES_ATTRIBUTE: &str = "series";

/// `AggregationTemporality::Cumulative`.
const CUMULATIVE: u64 = 2;

/// Series label of series index `s` (`s000123`), zero-padded to at least 6 digits.
pub fn series_name(s: usize, width: usize) -> String {
    format!("s{s:0width$}")
}

/// Width of the zero-padded series number for `series` series.
pub fn series_width(series: usize) -> usize {
    series.saturating_sub(1).max(1).to_string().len().max(6)
}

/// Which metric a series belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Sum,
}

/// Pre-encoded data point templates for one kind of metric.
struct Templates {
    /// `series` templates of `len` bytes each (field key + length + NumberDataPoint body).
    bytes: Vec<u8>,
    len: usize,
    /// Offsets within a template of the 8-byte `time_unix_nano` and value fields.
    time_off: usize,
    value_off: usize,
    /// Encoded `Metric` fields before the data field (name, description, unit).
    metric_header: Vec<u8>,
}

/// Builds request bodies for a fixed configuration.
pub struct PayloadBuilder {
    series: usize,
    batch: usize,
    sequence: bool,
    /// Encoded ResourceMetrics.resource field (key + length + Resource).
    resource_field: Vec<u8>,
    /// Encoded ScopeMetrics.scope field.
    scope_field: Vec<u8>,
    gauge: Templates,
    sum: Templates,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// Appends field `field` (wire type LEN) holding `body`.
fn put_len_field(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    encode_varint(u64::from(field << 3 | 2), out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Size of a LEN field (single-byte key) with a body of `len` bytes.
#[inline]
fn len_field_size(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

#[inline]
fn put_len_header(buf: &mut BytesMut, key: u8, len: usize) {
    buf.put_u8(key);
    encode_varint(len as u64, buf);
}

impl PayloadBuilder {
    /// A builder for `series` series, `batch` points per request. `start_time_unix_nano`
    /// is the start of the cumulative sums.
    pub fn new(
        series: usize,
        batch: usize,
        sequence: bool,
        instance_id: &str,
        start_time_unix_nano: u64,
    ) -> Self {
        assert!(series > 0 && batch > 0);
        let resource = Resource {
            attributes: vec![
                kv("service.name", "loadgen"),
                kv("service.instance.id", instance_id),
                kv("telemetry.sdk.name", "edgewatch-loadgen"),
            ],
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "edgewatch-loadgen".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        };
        let mut resource_field = Vec::new();
        put_len_field(&mut resource_field, 1, &resource.encode_to_vec());
        let mut scope_field = Vec::new();
        put_len_field(&mut scope_field, 1, &scope.encode_to_vec());

        let width = series_width(series);
        let (gauge_name, sum_name) = if sequence {
            ("", SEQUENCE_METRIC)
        } else {
            (GAUGE_METRIC, COUNTER_METRIC)
        };
        let gauge = Self::templates(series, width, Kind::Gauge, gauge_name, "1", 0);
        let sum = Self::templates(
            series,
            width,
            Kind::Sum,
            sum_name,
            "1",
            start_time_unix_nano,
        );
        PayloadBuilder {
            series,
            batch,
            sequence,
            resource_field,
            scope_field,
            gauge,
            sum,
        }
    }

    fn templates(
        series: usize,
        width: usize,
        kind: Kind,
        name: &str,
        unit: &str,
        start: u64,
    ) -> Templates {
        let mut metric_header = Vec::new();
        put_len_field(&mut metric_header, 1, name.as_bytes());
        put_len_field(
            &mut metric_header,
            2,
            match kind {
                Kind::Gauge => b"synthetic gauge from edgewatch loadgen".as_slice(),
                Kind::Sum => b"synthetic cumulative counter from edgewatch loadgen".as_slice(),
            },
        );
        put_len_field(&mut metric_header, 3, unit.as_bytes());

        let mut bytes = Vec::new();
        let mut layout = None;
        for s in 0..series {
            // NumberDataPoint body, fields in tag order like prost writes them.
            let mut body = Vec::with_capacity(64);
            if kind == Kind::Sum {
                body.push(0x11); // 2: start_time_unix_nano, fixed64
                body.extend_from_slice(&start.to_le_bytes());
            }
            body.push(0x19); // 3: time_unix_nano, fixed64
            let time_off = body.len();
            body.extend_from_slice(&0u64.to_le_bytes());
            body.push(match kind {
                Kind::Gauge => 0x21, // 4: as_double
                Kind::Sum => 0x31,   // 6: as_int, sfixed64
            });
            let value_off = body.len();
            body.extend_from_slice(&0u64.to_le_bytes());
            let attr = kv(SERIES_ATTRIBUTE, &series_name(s, width)).encode_to_vec();
            put_len_field(&mut body, 7, &attr);

            let mut t = Vec::with_capacity(body.len() + 2);
            put_len_field(&mut t, 1, &body); // Gauge/Sum.data_points
            let prefix = t.len() - body.len();
            let l = (t.len(), prefix + time_off, prefix + value_off);
            match layout {
                None => layout = Some(l),
                Some(prev) => debug_assert_eq!(prev, l, "templates must have equal length"),
            }
            bytes.extend_from_slice(&t);
        }
        let (len, time_off, value_off) = layout.expect("series > 0");
        Templates {
            bytes,
            len,
            time_off,
            value_off,
            metric_header,
        }
    }

    /// Data points per request.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Number of series.
    pub fn series(&self) -> usize {
        self.series
    }

    fn kind(&self, s: usize) -> Kind {
        if self.sequence || s % 2 == 1 {
            Kind::Sum
        } else {
            Kind::Gauge
        }
    }

    /// An upper bound of the encoded size of one request.
    pub fn max_request_len(&self) -> usize {
        let points = self.batch * self.gauge.len.max(self.sum.len);
        points + self.resource_field.len() + self.scope_field.len() + 512
    }

    /// Appends the encoded `ExportMetricsServiceRequest` of request `k` to `buf`, with
    /// `time_unix_nano` = `now_unix_nano` (plus the round offset in ns when a request
    /// spans several rounds, so no series repeats a timestamp).
    pub fn build(&self, k: u64, now_unix_nano: u64, buf: &mut BytesMut) {
        let first = k * self.batch as u64;
        let s0 = (first % self.series as u64) as usize;
        let r0 = first / self.series as u64;

        // Count points per kind.
        let (n_gauge, n_sum) = if self.sequence {
            (0, self.batch)
        } else {
            // Even series are gauges: count even indices among s0, s0+1, ... wrapping at series.
            let mut g = 0usize;
            let mut s = s0;
            let mut left = self.batch;
            while left > 0 {
                let run = left.min(self.series - s);
                // even numbers in [s, s+run)
                g += (s + run).div_ceil(2) - s.div_ceil(2);
                left -= run;
                s = 0;
            }
            (g, self.batch - g)
        };

        let gauge_data = n_gauge * self.gauge.len;
        let gauge_metric = if n_gauge > 0 {
            self.gauge.metric_header.len() + len_field_size(gauge_data)
        } else {
            0
        };
        let sum_data = n_sum * self.sum.len + 4; // + temporality + is_monotonic
        let sum_metric = if n_sum > 0 {
            self.sum.metric_header.len() + len_field_size(sum_data)
        } else {
            0
        };
        let mut scope_metrics = self.scope_field.len();
        if n_gauge > 0 {
            scope_metrics += len_field_size(gauge_metric);
        }
        if n_sum > 0 {
            scope_metrics += len_field_size(sum_metric);
        }
        let resource_metrics = self.resource_field.len() + len_field_size(scope_metrics);
        buf.reserve(len_field_size(resource_metrics));

        put_len_header(buf, 0x0A, resource_metrics); // ExportMetricsServiceRequest.resource_metrics
        buf.put_slice(&self.resource_field);
        put_len_header(buf, 0x12, scope_metrics); // ResourceMetrics.scope_metrics
        buf.put_slice(&self.scope_field);
        if n_gauge > 0 {
            put_len_header(buf, 0x12, gauge_metric); // ScopeMetrics.metrics
            buf.put_slice(&self.gauge.metric_header);
            put_len_header(buf, 0x2A, gauge_data); // Metric.gauge (5)
            self.put_points(Kind::Gauge, s0, r0, now_unix_nano, buf);
        }
        if n_sum > 0 {
            put_len_header(buf, 0x12, sum_metric);
            buf.put_slice(&self.sum.metric_header);
            put_len_header(buf, 0x3A, sum_data); // Metric.sum (7)
            self.put_points(Kind::Sum, s0, r0, now_unix_nano, buf);
            buf.put_slice(&[0x10, CUMULATIVE as u8, 0x18, 0x01]);
        }
    }

    fn put_points(&self, kind: Kind, s0: usize, r0: u64, now: u64, buf: &mut BytesMut) {
        let t = match kind {
            Kind::Gauge => &self.gauge,
            Kind::Sum => &self.sum,
        };
        let mixed = !self.sequence;
        let mut s = s0;
        let mut r = r0;
        for _ in 0..self.batch {
            let here = !mixed || (s % 2 == 1) == (kind == Kind::Sum);
            if here {
                debug_assert_eq!(self.kind(s), kind);
                let start = buf.len();
                buf.put_slice(&t.bytes[s * t.len..(s + 1) * t.len]);
                let p = &mut buf[start..];
                let time = now + (r - r0);
                p[t.time_off..t.time_off + 8].copy_from_slice(&time.to_le_bytes());
                let value: [u8; 8] = match kind {
                    // A deterministic wobble per series and round.
                    Kind::Gauge => {
                        let v = ((s as u64 * 7919 + r * 104_729) % 10_000) as f64 / 100.0;
                        v.to_le_bytes()
                    }
                    Kind::Sum if self.sequence => ((r + 1) as i64).to_le_bytes(),
                    Kind::Sum => (((r + 1) * (1 + s as u64 % 7)) as i64).to_le_bytes(),
                };
                p[t.value_off..t.value_off + 8].copy_from_slice(&value);
            }
            s += 1;
            if s == self.series {
                s = 0;
                r += 1;
            }
        }
    }

    /// Visits `(series index, sequence number)` of every point in request `k`.
    pub fn for_each_point(&self, k: u64, mut f: impl FnMut(usize, u64)) {
        let first = k * self.batch as u64;
        let mut s = (first % self.series as u64) as usize;
        let mut r = first / self.series as u64;
        for _ in 0..self.batch {
            f(s, r + 1);
            s += 1;
            if s == self.series {
                s = 0;
                r += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};

    fn decode(b: &PayloadBuilder, k: u64, now: u64) -> ExportMetricsServiceRequest {
        let mut buf = BytesMut::new();
        b.build(k, now, &mut buf);
        ExportMetricsServiceRequest::decode(buf.as_ref()).expect("valid protobuf")
    }

    fn attr(p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> String {
        match &p.attributes[0].value.as_ref().unwrap().value {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mixed_payload_decodes() {
        for (series, batch) in [(1000, 100), (7, 10), (3, 3), (1, 5), (10, 1), (5, 1000)] {
            let b = PayloadBuilder::new(series, batch, false, "inst-1", 42);
            for k in [0u64, 1, 2, 17, 1001] {
                let req = decode(&b, k, 1_000_000);
                assert_eq!(req.resource_metrics.len(), 1);
                let rm = &req.resource_metrics[0];
                let attrs = &rm.resource.as_ref().unwrap().attributes;
                assert_eq!(attrs[0].key, "service.name");
                assert_eq!(attrs[1].key, "service.instance.id");
                let sm = &rm.scope_metrics[0];
                assert_eq!(sm.scope.as_ref().unwrap().name, "edgewatch-loadgen");
                let mut total = 0;
                let mut seen = Vec::new();
                for m in &sm.metrics {
                    match m.data.as_ref().unwrap() {
                        Data::Gauge(g) => {
                            assert_eq!(m.name, GAUGE_METRIC);
                            for p in &g.data_points {
                                assert!(matches!(p.value, Some(Value::AsDouble(_))));
                                assert_eq!(p.start_time_unix_nano, 0);
                                seen.push(attr(p));
                            }
                            total += g.data_points.len();
                        }
                        Data::Sum(s) => {
                            assert_eq!(m.name, COUNTER_METRIC);
                            assert!(s.is_monotonic);
                            assert_eq!(s.aggregation_temporality, 2);
                            for p in &s.data_points {
                                assert!(matches!(p.value, Some(Value::AsInt(v)) if v > 0));
                                assert_eq!(p.start_time_unix_nano, 42);
                                assert!(p.time_unix_nano >= 1_000_000);
                                seen.push(attr(p));
                            }
                            total += s.data_points.len();
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                assert_eq!(total, batch, "series={series} batch={batch} k={k}");
                let mut expect = Vec::new();
                b.for_each_point(k, |s, _| expect.push(series_name(s, 6)));
                seen.sort();
                expect.sort();
                assert_eq!(seen, expect);
            }
        }
    }

    #[test]
    fn sequence_payload_numbers_points() {
        let b = PayloadBuilder::new(4, 3, true, "i", 1);
        // Points 0..12 over 4 requests: series 0,1,2 | 3,0,1 | 2,3,0 | 1,2,3
        let mut got = Vec::new();
        for k in 0..4 {
            let req = decode(&b, k, 100);
            let m = &req.resource_metrics[0].scope_metrics[0].metrics;
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].name, SEQUENCE_METRIC);
            let Some(Data::Sum(s)) = &m[0].data else {
                panic!()
            };
            for p in &s.data_points {
                let Some(Value::AsInt(v)) = p.value else {
                    panic!()
                };
                got.push((attr(p), v));
            }
        }
        let want: Vec<(String, i64)> = [
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 1),
            (0, 2),
            (1, 2),
            (2, 2),
            (3, 2),
            (0, 3),
            (1, 3),
            (2, 3),
            (3, 3),
        ]
        .iter()
        .map(|(s, v)| (series_name(*s, 6), *v))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn batch_larger_than_series_has_distinct_timestamps() {
        let b = PayloadBuilder::new(2, 6, true, "i", 1);
        let req = decode(&b, 0, 1000);
        let Some(Data::Sum(s)) = &req.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!()
        };
        let times: Vec<u64> = s.data_points.iter().map(|p| p.time_unix_nano).collect();
        assert_eq!(times, vec![1000, 1000, 1001, 1001, 1002, 1002]);
    }

    #[test]
    fn series_names() {
        assert_eq!(series_name(123, series_width(1000)), "s000123");
        assert_eq!(series_width(10_000_001), 8);
    }
}
