//! A zero-copy walk over an encoded `ExportMetricsServiceRequest` that counts data
//! points (all metric types) and extracts the `--sequence-check` points, without
//! allocating the prost message tree. Keeps the sink cheap at millions of points/s.

use crate::payload::{SEQUENCE_METRIC, SERIES_ATTRIBUTE};

/// A malformed protobuf message.
#[derive(Debug, thiserror::Error)]
#[error("malformed protobuf: {0}")]
pub struct WireError(pub &'static str);

pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Len(&'a [u8]),
}

/// The fields of one encoded protobuf message, in wire order.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err(WireError("truncated varint"));
            };
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError("truncated field"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    pub(crate) fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let v = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| WireError("length overflow"))?;
                Value::Len(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            _ => return Err(WireError("unsupported wire type")),
        };
        Ok(Some((field, v)))
    }
}

/// One point of the sequence metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqPoint<'a> {
    /// `service.instance.id` of the resource ("" if absent).
    pub instance: &'a str,
    /// Value of the `series` attribute.
    pub series: &'a str,
    /// The point's value (the sequence number).
    pub seq: u64,
}

/// What a request contained.
#[derive(Debug, Default)]
pub struct Summary<'a> {
    /// Data points of every metric type.
    pub points: u64,
    /// Points of [`SEQUENCE_METRIC`].
    pub seq: Vec<SeqPoint<'a>>,
}

fn as_str(b: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError("invalid utf-8"))
}

/// `(key, string value)` of an encoded KeyValue; the value is "" unless a string.
fn key_value(kv: &[u8]) -> Result<(&str, &str), WireError> {
    let (mut key, mut val) = ("", "");
    let mut f = Fields::new(kv);
    while let Some((n, v)) = f.next_field()? {
        match (n, v) {
            (1, Value::Len(b)) => key = as_str(b)?,
            (2, Value::Len(any)) => {
                let mut a = Fields::new(any);
                while let Some((n, v)) = a.next_field()? {
                    if let (1, Value::Len(s)) = (n, v) {
                        val = as_str(s)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((key, val))
}

/// Walks an encoded `ExportMetricsServiceRequest`.
pub fn summarize(req: &[u8]) -> Result<Summary<'_>, WireError> {
    let mut out = Summary::default();
    let mut f = Fields::new(req);
    while let Some((n, v)) = f.next_field()? {
        if let (1, Value::Len(rm)) = (n, v) {
            resource_metrics(rm, &mut out)?;
        }
    }
    Ok(out)
}

fn resource_metrics<'a>(rm: &'a [u8], out: &mut Summary<'a>) -> Result<(), WireError> {
    // The resource may follow the scope metrics on the wire: find it first.
    let mut instance = "";
    let mut f = Fields::new(rm);
    while let Some((n, v)) = f.next_field()? {
        if let (1, Value::Len(res)) = (n, v) {
            let mut r = Fields::new(res);
            while let Some((n, v)) = r.next_field()? {
                if let (1, Value::Len(kv)) = (n, v) {
                    let (k, val) = key_value(kv)?;
                    if k == "service.instance.id" {
                        instance = val;
                    }
                }
            }
        }
    }
    let mut f = Fields::new(rm);
    while let Some((n, v)) = f.next_field()? {
        if let (2, Value::Len(sm)) = (n, v) {
            let mut s = Fields::new(sm);
            while let Some((n, v)) = s.next_field()? {
                if let (2, Value::Len(m)) = (n, v) {
                    metric(m, instance, out)?;
                }
            }
        }
    }
    Ok(())
}

fn metric<'a>(m: &'a [u8], instance: &'a str, out: &mut Summary<'a>) -> Result<(), WireError> {
    let mut name = "";
    let mut data: Option<(u64, &[u8])> = None;
    let mut f = Fields::new(m);
    while let Some((n, v)) = f.next_field()? {
        match (n, v) {
            (1, Value::Len(b)) => name = as_str(b)?,
            (5 | 7 | 9 | 10 | 11, Value::Len(b)) => data = Some((n, b)),
            _ => {}
        }
    }
    let Some((kind, data)) = data else {
        return Ok(());
    };
    let sequence = kind == 7 && name == SEQUENCE_METRIC;
    let mut f = Fields::new(data);
    while let Some((n, v)) = f.next_field()? {
        if let (1, Value::Len(dp)) = (n, v) {
            out.points += 1;
            if sequence {
                if let Some(p) = sequence_point(dp, instance)? {
                    out.seq.push(p);
                }
            }
        }
    }
    Ok(())
}

fn sequence_point<'a>(dp: &'a [u8], instance: &'a str) -> Result<Option<SeqPoint<'a>>, WireError> {
    let mut series = None;
    let mut seq = None;
    let mut f = Fields::new(dp);
    while let Some((n, v)) = f.next_field()? {
        match (n, v) {
            (7, Value::Len(kv)) => {
                let (k, val) = key_value(kv)?;
                if k == SERIES_ATTRIBUTE {
                    series = Some(val);
                }
            }
            (6, Value::Fixed64(v)) => seq = u64::try_from(v as i64).ok(),
            (4, Value::Fixed64(v)) => {
                let d = f64::from_bits(v);
                if d >= 0.0 && d.fract() == 0.0 && d < 1e18 {
                    seq = Some(d as u64);
                }
            }
            _ => {}
        }
    }
    Ok(match (series, seq) {
        (Some(series), Some(seq)) => Some(SeqPoint {
            instance,
            series,
            seq,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadBuilder;
    use bytes::BytesMut;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
    };
    use prost::Message;

    #[test]
    fn counts_generated_points() {
        let b = PayloadBuilder::new(10, 25, false, "x", 1);
        let mut buf = BytesMut::new();
        b.build(3, 5, &mut buf);
        let s = summarize(&buf).unwrap();
        assert_eq!(s.points, 25);
        assert!(s.seq.is_empty());
    }

    #[test]
    fn extracts_sequence_points() {
        let b = PayloadBuilder::new(3, 4, true, "inst", 1);
        let mut buf = BytesMut::new();
        b.build(1, 5, &mut buf); // points 4..8: s1 r1, s2 r1, s0 r2, s1 r2
        let s = summarize(&buf).unwrap();
        assert_eq!(s.points, 4);
        let got: Vec<(&str, &str, u64)> = s
            .seq
            .iter()
            .map(|p| (p.instance, p.series, p.seq))
            .collect();
        assert_eq!(
            got,
            vec![
                ("inst", "s000001", 2),
                ("inst", "s000002", 2),
                ("inst", "s000000", 3),
                ("inst", "s000001", 3)
            ]
        );
    }

    #[test]
    fn counts_histogram_points_and_rejects_garbage() {
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "h".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint::default(); 3],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(summarize(&req.encode_to_vec()).unwrap().points, 3);
        assert!(summarize(&[0x0A, 0x05, 0x01]).is_err());
    }
}
