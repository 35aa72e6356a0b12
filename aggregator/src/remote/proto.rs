//! Prometheus remote write 1.0 on the wire: `prometheus.WriteRequest` (prompb
//! remote.proto / types.proto), snappy block compressed.
//!
//! The sender encodes by hand straight into reused buffers: building the prost
//! structs would allocate a `String` per label of every sample (each sample is its
//! own `TimeSeries`, as in Prometheus' queue manager), which is what kept a prost
//! encoder well below one million samples per second on one core. The prost
//! types below describe the same messages; tests decode the hand-made bytes with
//! them, and a receiver stand-in can use them too.

use crate::store::MetricType;

/// `WriteRequest.timeseries`, `TimeSeries.labels`, `Label.name`, `MetricMetadata.type`…
const LEN: u8 = 2;
const FIXED64: u8 = 1;
const VARINT: u8 = 0;

const fn tag(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    out.push(tag(field, LEN));
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends one `Label` as a `TimeSeries.labels` entry.
pub(crate) fn put_label(out: &mut Vec<u8>, name: &str, value: &str) {
    let len = 1
        + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(value.len() as u64)
        + value.len();
    out.push(tag(1, LEN));
    put_varint(out, len as u64);
    put_bytes(out, 1, name.as_bytes());
    put_bytes(out, 2, value.as_bytes());
}

/// Appends one `WriteRequest.timeseries` entry: `labels` (already encoded by
/// [`put_label`], sorted by name) and one sample. The value's bits go out as they
/// are, so Prometheus' stale NaN stays a stale marker.
pub(crate) fn put_series(out: &mut Vec<u8>, labels: &[u8], value: f64, timestamp_ms: i64) {
    let sample_len = 1 + 8 + 1 + varint_len(timestamp_ms as u64);
    let series_len = labels.len() + 1 + varint_len(sample_len as u64) + sample_len;
    out.push(tag(1, LEN));
    put_varint(out, series_len as u64);
    out.extend_from_slice(labels);
    out.push(tag(2, LEN));
    put_varint(out, sample_len as u64);
    out.push(tag(1, FIXED64));
    out.extend_from_slice(&value.to_bits().to_le_bytes());
    out.push(tag(2, VARINT));
    put_varint(out, timestamp_ms as u64);
}

/// `MetricMetadata.MetricType` numbers (prompb/types.proto).
fn metadata_type(t: MetricType) -> u64 {
    match t {
        MetricType::Unknown => 0,
        MetricType::Counter => 1,
        MetricType::Gauge => 2,
        MetricType::Histogram => 3,
        MetricType::Summary => 5,
    }
}

/// Appends one `WriteRequest.metadata` entry.
pub(crate) fn put_metadata(out: &mut Vec<u8>, name: &str, t: MetricType, help: &str, unit: &str) {
    let mut m = Vec::with_capacity(name.len() + help.len() + unit.len() + 16);
    let code = metadata_type(t);
    if code != 0 {
        m.push(tag(1, VARINT));
        put_varint(&mut m, code);
    }
    put_bytes(&mut m, 2, name.as_bytes());
    if !help.is_empty() {
        put_bytes(&mut m, 4, help.as_bytes());
    }
    if !unit.is_empty() {
        put_bytes(&mut m, 5, unit.as_bytes());
    }
    put_bytes(out, 3, &m);
}

/// `prometheus.WriteRequest`, for decoding (see the module comment).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// UNKNOWN 0, COUNTER 1, GAUGE 2, HISTOGRAM 3, GAUGEHISTOGRAM 4, SUMMARY 5, INFO 6, STATESET 7.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Decodes a snappy-compressed `WriteRequest` as a receiver does.
pub fn decode(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    let plain = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(DecodeError::Snappy)?;
    prost::Message::decode(plain.as_slice()).map_err(DecodeError::Protobuf)
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not snappy block format: {0}")]
    Snappy(snap::Error),
    #[error("body is not a WriteRequest: {0}")]
    Protobuf(prost::DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn labels(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in pairs {
            put_label(&mut b, k, v);
        }
        b
    }

    #[test]
    fn hand_encoding_decodes_with_prost_to_the_same_content() {
        let long = "x".repeat(300);
        type Case<'a> = (&'a [(&'a str, &'a str)], f64, i64);
        let cases: [Case<'_>; 5] = [
            (&[("__name__", "up"), ("job", "a")], 1.0, 1_700_000_000_123),
            (&[("__name__", "up")], crate::store::STALE_NAN, 0),
            (&[("__name__", "neg"), ("v", long.as_str())], -0.0, -5),
            (&[("__name__", "ü"), ("ñ", "")], f64::INFINITY, i64::MAX),
            (&[], 0.0, i64::MIN),
        ];
        let mut out = Vec::new();
        for (l, v, ts) in &cases {
            put_series(&mut out, &labels(l), *v, *ts);
        }
        put_metadata(&mut out, "req_total", MetricType::Counter, "Requests.", "");
        put_metadata(&mut out, "lat", MetricType::Summary, "", "seconds");
        put_metadata(&mut out, "x", MetricType::Unknown, "", "");
        let got = WriteRequest::decode(out.as_slice()).expect("prost decodes it");
        assert_eq!(got.timeseries.len(), cases.len());
        for (ts, (l, v, t)) in got.timeseries.iter().zip(&cases) {
            let want: Vec<Label> = l
                .iter()
                .map(|(k, v)| Label {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect();
            assert_eq!(ts.labels, want);
            assert_eq!(ts.samples.len(), 1);
            assert_eq!(ts.samples[0].value.to_bits(), v.to_bits());
            assert_eq!(ts.samples[0].timestamp, *t);
        }
        let meta: Vec<_> = got
            .metadata
            .iter()
            .map(|m| {
                (
                    m.r#type,
                    m.metric_family_name.as_str(),
                    m.help.as_str(),
                    m.unit.as_str(),
                )
            })
            .collect();
        assert_eq!(
            meta,
            vec![
                (1, "req_total", "Requests.", ""),
                (5, "lat", "", "seconds"),
                (0, "x", "", "")
            ]
        );
        // Re-encoding with prost gives the same bytes for the series (prost omits
        // zero fields, so compare where none is zero).
        let first = WriteRequest {
            timeseries: vec![got.timeseries[0].clone()],
            metadata: vec![],
        };
        let mut one = Vec::new();
        put_series(&mut one, &labels(cases[0].0), cases[0].1, cases[0].2);
        assert_eq!(first.encode_to_vec(), one);
    }

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
