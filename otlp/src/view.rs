//! A borrowed view of an encoded `ExportMetricsServiceRequest`: resources,
//! scopes, metrics and data points read in place, every string and byte
//! string a slice of the request body. The aggregator converts from it without
//! allocating per data point; prost only decodes into owned messages (a
//! `String` per attribute key and value, a `Vec` per point), hence this view.
//!
//! [`decode`] first checks the body with the walk [`crate::shallow`] uses
//! (exactly prost's verdict, errors naming the field path). The accessors
//! then read the checked bytes with prost's semantics: of a non-repeated
//! field the last occurrence wins, of a oneof the last variant, repeated
//! numbers may be packed or not, unknown fields are skipped. prost *merges*
//! the occurrences of a message field that appears twice in one message; no
//! exporter writes that, so instead of merging here such a body is decoded
//! by prost and re-encoded once (allocating), and the view reads that.

use std::borrow::Cow;

use crate::budget::Decoding;
use crate::shallow::{walk_request, Reader, WireError, I64, LEN, VARINT};
use crate::ExportError;

/// A checked request body (see the module documentation).
pub struct Decoded<'a> {
    body: Cow<'a, [u8]>,
}

/// Checks `body` as prost's decode would and returns it for viewing.
pub fn decode(body: &[u8]) -> Result<Decoded<'_>, ExportError> {
    let (_, tally) = walk_request(body)?;
    if !tally.merges {
        return Ok(Decoded {
            body: Cow::Borrowed(body),
        });
    }
    // The only path that decodes into owned messages: bounded like the others.
    tally.check(Decoding::Full, body.len())?;
    let req = crate::decode_request(body)?;
    Ok(Decoded {
        body: Cow::Owned(prost::Message::encode_to_vec(&req)),
    })
}

impl Decoded<'_> {
    pub fn request(&self) -> RequestView<'_> {
        RequestView(&self.body)
    }

    /// True when the body had merged fields and was re-encoded by prost.
    pub fn normalized(&self) -> bool {
        matches!(self.body, Cow::Owned(_))
    }
}

/// One field's value as read from the wire.
#[derive(Clone, Copy)]
enum Val<'a> {
    Varint(u64),
    I64(u64),
    Len(&'a [u8]),
    /// 32-bit or group: no field the view reads has these.
    Other,
}

/// The fields of a checked message, in order.
#[derive(Clone)]
struct Fields<'a>(Reader<'a>);

fn fields(b: &[u8]) -> Fields<'_> {
    Fields(Reader { b, pos: 0 })
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Val<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let r = &mut self.0;
        if r.pos >= r.b.len() {
            return None;
        }
        let read = |r: &mut Reader<'a>| -> Result<(u32, Val<'a>), WireError> {
            let (tag, wt) = r.key()?;
            let v = match wt {
                VARINT => Val::Varint(r.varint()?),
                I64 => Val::I64(le64(r.take(8)?)),
                LEN => Val::Len(r.delimited()?),
                _ => {
                    r.skip(tag, wt, 0)?;
                    Val::Other
                }
            };
            Ok((tag, v))
        };
        match read(r) {
            Ok(f) => Some(f),
            // Unreachable for a checked body; ends the message rather than panic.
            Err(_) => {
                r.pos = r.b.len();
                None
            }
        }
    }
}

fn le64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

fn utf8(b: &[u8]) -> &str {
    // Checked by `decode`; an empty string can never be reached.
    std::str::from_utf8(b).unwrap_or_default()
}

/// The last occurrence of length-delimited field `tag`.
fn last_len(b: &[u8], tag: u32) -> Option<&[u8]> {
    let mut out = None;
    for (t, v) in fields(b) {
        if let (true, Val::Len(s)) = (t == tag, v) {
            out = Some(s);
        }
    }
    out
}

fn last_str(b: &[u8], tag: u32) -> &str {
    last_len(b, tag).map(utf8).unwrap_or("")
}

/// The occurrences of a repeated message field.
pub struct Repeated<'a, T> {
    fields: Fields<'a>,
    tag: u32,
    view: fn(&'a [u8]) -> T,
}

fn repeated<'a, T>(b: &'a [u8], tag: u32, view: fn(&'a [u8]) -> T) -> Repeated<'a, T> {
    Repeated {
        fields: fields(b),
        tag,
        view,
    }
}

impl<'a, T> Iterator for Repeated<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        for (t, v) in self.fields.by_ref() {
            if let (true, Val::Len(s)) = (t == self.tag, v) {
                return Some((self.view)(s));
            }
        }
        None
    }
}

/// `ExportMetricsServiceRequest`.
#[derive(Clone, Copy)]
pub struct RequestView<'a>(&'a [u8]);

impl<'a> RequestView<'a> {
    pub fn resource_metrics(self) -> Repeated<'a, ResourceMetricsView<'a>> {
        repeated(self.0, 1, ResourceMetricsView)
    }
}

/// `ResourceMetrics`.
#[derive(Clone, Copy)]
pub struct ResourceMetricsView<'a>(&'a [u8]);

impl<'a> ResourceMetricsView<'a> {
    /// The resource's attributes (none without a resource).
    pub fn resource_attributes(self) -> Repeated<'a, KeyValueView<'a>> {
        repeated(last_len(self.0, 1).unwrap_or_default(), 1, KeyValueView)
    }

    pub fn scope_metrics(self) -> Repeated<'a, ScopeMetricsView<'a>> {
        repeated(self.0, 2, ScopeMetricsView)
    }
}

/// `ScopeMetrics`.
#[derive(Clone, Copy)]
pub struct ScopeMetricsView<'a>(&'a [u8]);

impl<'a> ScopeMetricsView<'a> {
    /// `scope.name` ("" without a scope).
    pub fn scope_name(self) -> &'a str {
        last_len(self.0, 1).map_or("", |s| last_str(s, 1))
    }

    /// `scope.version` ("" without a scope).
    pub fn scope_version(self) -> &'a str {
        last_len(self.0, 1).map_or("", |s| last_str(s, 2))
    }

    pub fn metrics(self) -> Repeated<'a, MetricView<'a>> {
        repeated(self.0, 2, MetricView)
    }
}

/// `Metric`.
#[derive(Clone, Copy)]
pub struct MetricView<'a>(&'a [u8]);

impl<'a> MetricView<'a> {
    pub fn name(self) -> &'a str {
        last_str(self.0, 1)
    }

    pub fn description(self) -> &'a str {
        last_str(self.0, 2)
    }

    pub fn unit(self) -> &'a str {
        last_str(self.0, 3)
    }

    /// The `data` oneof: its last variant.
    pub fn data(self) -> Option<Data<'a>> {
        let mut out = None;
        for (t, v) in fields(self.0) {
            let Val::Len(b) = v else { continue };
            let d = DataView(b);
            out = match t {
                5 => Some(Data::Gauge(d)),
                7 => Some(Data::Sum(d)),
                9 => Some(Data::Histogram(d)),
                10 => Some(Data::ExponentialHistogram(d)),
                11 => Some(Data::Summary(d)),
                _ => out,
            };
        }
        out
    }
}

/// `Metric.data`.
#[derive(Clone, Copy)]
pub enum Data<'a> {
    Gauge(DataView<'a>),
    Sum(DataView<'a>),
    Histogram(DataView<'a>),
    ExponentialHistogram(DataView<'a>),
    Summary(DataView<'a>),
}

impl<'a> Data<'a> {
    pub fn view(self) -> DataView<'a> {
        match self {
            Data::Gauge(d)
            | Data::Sum(d)
            | Data::Histogram(d)
            | Data::ExponentialHistogram(d)
            | Data::Summary(d) => d,
        }
    }
}

/// `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` or `Summary`: field 1
/// holds the data points.
#[derive(Clone, Copy)]
pub struct DataView<'a>(&'a [u8]);

impl<'a> DataView<'a> {
    pub fn point_count(self) -> usize {
        repeated(self.0, 1, |_| ()).count()
    }

    pub fn number_points(self) -> Repeated<'a, NumberPoint<'a>> {
        repeated(self.0, 1, NumberPoint::read)
    }

    pub fn histogram_points(self) -> Repeated<'a, HistogramPoint<'a>> {
        repeated(self.0, 1, HistogramPoint::read)
    }

    pub fn summary_points(self) -> Repeated<'a, SummaryPoint<'a>> {
        repeated(self.0, 1, SummaryPoint::read)
    }

    /// `aggregation_temporality` (Sum, Histogram, ExponentialHistogram).
    pub fn aggregation_temporality(self) -> i32 {
        self.last_varint(2) as i32
    }

    /// `is_monotonic` (Sum).
    pub fn is_monotonic(self) -> bool {
        self.last_varint(3) != 0
    }

    fn last_varint(self, tag: u32) -> u64 {
        let mut out = 0;
        for (t, v) in fields(self.0) {
            if let (true, Val::Varint(x)) = (t == tag, v) {
                out = x;
            }
        }
        out
    }
}

/// `NumberDataPoint.value`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NumberValue {
    Double(f64),
    Int(i64),
}

/// `NumberDataPoint`.
pub struct NumberPoint<'a> {
    pub attributes: Repeated<'a, KeyValueView<'a>>,
    pub time_unix_nano: u64,
    pub value: Option<NumberValue>,
    pub flags: u32,
}

impl<'a> NumberPoint<'a> {
    fn read(b: &'a [u8]) -> Self {
        let mut p = NumberPoint {
            attributes: repeated(b, 7, KeyValueView),
            time_unix_nano: 0,
            value: None,
            flags: 0,
        };
        for (t, v) in fields(b) {
            match (t, v) {
                (3, Val::I64(x)) => p.time_unix_nano = x,
                (4, Val::I64(x)) => p.value = Some(NumberValue::Double(f64::from_bits(x))),
                (6, Val::I64(x)) => p.value = Some(NumberValue::Int(x as i64)),
                (8, Val::Varint(x)) => p.flags = x as u32,
                _ => {}
            }
        }
        p
    }
}

/// `HistogramDataPoint`.
pub struct HistogramPoint<'a> {
    pub attributes: Repeated<'a, KeyValueView<'a>>,
    pub time_unix_nano: u64,
    pub count: u64,
    pub sum: Option<f64>,
    pub bucket_counts: Fixed64s<'a>,
    /// `explicit_bounds` as bits: `f64::from_bits` each.
    pub explicit_bounds: Fixed64s<'a>,
    pub flags: u32,
}

impl<'a> HistogramPoint<'a> {
    fn read(b: &'a [u8]) -> Self {
        let mut p = HistogramPoint {
            attributes: repeated(b, 9, KeyValueView),
            time_unix_nano: 0,
            count: 0,
            sum: None,
            bucket_counts: Fixed64s::new(b, 6),
            explicit_bounds: Fixed64s::new(b, 7),
            flags: 0,
        };
        for (t, v) in fields(b) {
            match (t, v) {
                (3, Val::I64(x)) => p.time_unix_nano = x,
                (4, Val::I64(x)) => p.count = x,
                (5, Val::I64(x)) => p.sum = Some(f64::from_bits(x)),
                (10, Val::Varint(x)) => p.flags = x as u32,
                _ => {}
            }
        }
        p
    }
}

/// `SummaryDataPoint`.
pub struct SummaryPoint<'a> {
    pub attributes: Repeated<'a, KeyValueView<'a>>,
    pub time_unix_nano: u64,
    pub count: u64,
    pub sum: f64,
    pub quantile_values: Repeated<'a, Quantile>,
    pub flags: u32,
}

impl<'a> SummaryPoint<'a> {
    fn read(b: &'a [u8]) -> Self {
        let mut p = SummaryPoint {
            attributes: repeated(b, 7, KeyValueView),
            time_unix_nano: 0,
            count: 0,
            sum: 0.0,
            quantile_values: repeated(b, 6, Quantile::read),
            flags: 0,
        };
        for (t, v) in fields(b) {
            match (t, v) {
                (3, Val::I64(x)) => p.time_unix_nano = x,
                (4, Val::I64(x)) => p.count = x,
                (5, Val::I64(x)) => p.sum = f64::from_bits(x),
                (8, Val::Varint(x)) => p.flags = x as u32,
                _ => {}
            }
        }
        p
    }
}

/// `SummaryDataPoint.ValueAtQuantile`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantile {
    pub quantile: f64,
    pub value: f64,
}

impl Quantile {
    fn read(b: &[u8]) -> Self {
        let mut q = Quantile {
            quantile: 0.0,
            value: 0.0,
        };
        for (t, v) in fields(b) {
            match (t, v) {
                (1, Val::I64(x)) => q.quantile = f64::from_bits(x),
                (2, Val::I64(x)) => q.value = f64::from_bits(x),
                _ => {}
            }
        }
        q
    }
}

/// A repeated `fixed64`/`double` field, packed or not (prost accepts both,
/// and a mix).
#[derive(Clone)]
pub struct Fixed64s<'a> {
    fields: Fields<'a>,
    tag: u32,
    packed: &'a [u8],
}

impl<'a> Fixed64s<'a> {
    fn new(b: &'a [u8], tag: u32) -> Self {
        Fixed64s {
            fields: fields(b),
            tag,
            packed: &[],
        }
    }
}

impl<'a, T> Clone for Repeated<'a, T> {
    fn clone(&self) -> Self {
        Repeated {
            fields: self.fields.clone(),
            tag: self.tag,
            view: self.view,
        }
    }
}

impl Iterator for Fixed64s<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            if self.packed.len() >= 8 {
                let x = le64(self.packed);
                self.packed = &self.packed[8..];
                return Some(x);
            }
            let (t, v) = self.fields.next()?;
            if t != self.tag {
                continue;
            }
            match v {
                Val::I64(x) => return Some(x),
                Val::Len(p) => self.packed = p,
                _ => {}
            }
        }
    }
}

/// `KeyValue`.
#[derive(Clone, Copy)]
pub struct KeyValueView<'a>(&'a [u8]);

impl<'a> KeyValueView<'a> {
    pub fn key(self) -> &'a str {
        last_str(self.0, 1)
    }

    /// The value; `None` when the value or its oneof is unset.
    pub fn value(self) -> Option<AnyValueView<'a>> {
        last_len(self.0, 2).and_then(any_value)
    }
}

/// `AnyValue.value`.
#[derive(Clone, Copy)]
pub enum AnyValueView<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(ArrayView<'a>),
    Kvlist(KvlistView<'a>),
    /// An index into a profiles string table.
    StringStrindex(i32),
}

/// The oneof of an encoded `AnyValue`: its last variant.
fn any_value(b: &[u8]) -> Option<AnyValueView<'_>> {
    let mut out = None;
    for (t, v) in fields(b) {
        out = match (t, v) {
            (1, Val::Len(s)) => Some(AnyValueView::String(utf8(s))),
            (2, Val::Varint(x)) => Some(AnyValueView::Bool(x != 0)),
            (3, Val::Varint(x)) => Some(AnyValueView::Int(x as i64)),
            (4, Val::I64(x)) => Some(AnyValueView::Double(f64::from_bits(x))),
            (5, Val::Len(s)) => Some(AnyValueView::Array(ArrayView(s))),
            (6, Val::Len(s)) => Some(AnyValueView::Kvlist(KvlistView(s))),
            (7, Val::Len(s)) => Some(AnyValueView::Bytes(s)),
            (8, Val::Varint(x)) => Some(AnyValueView::StringStrindex(x as i32)),
            _ => out,
        };
    }
    out
}

/// `ArrayValue`.
#[derive(Clone, Copy)]
pub struct ArrayView<'a>(&'a [u8]);

impl<'a> ArrayView<'a> {
    /// The elements; `None` for an element whose oneof is unset.
    pub fn values(self) -> Repeated<'a, Option<AnyValueView<'a>>> {
        repeated(self.0, 1, any_value)
    }
}

/// `KeyValueList`.
#[derive(Clone, Copy)]
pub struct KvlistView<'a>(&'a [u8]);

impl<'a> KvlistView<'a> {
    pub fn values(self) -> Repeated<'a, KeyValueView<'a>> {
        repeated(self.0, 1, KeyValueView)
    }
}

#[cfg(test)]
mod tests;
