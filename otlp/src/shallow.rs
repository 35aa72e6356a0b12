//! An export request decoded only as deep as the collector needs: each
//! resource (to stamp and enrich it) and, below it, the scope metrics kept as
//! encoded bytes — slices of the request body, not copies. Re-encoding writes
//! the resources and copies those slices once: no allocation per data point.
//!
//! The bytes are still checked as strictly as prost's full decode would check
//! them (wire types of known fields, lengths, varints, UTF-8 of strings,
//! prost's nesting limit), and the data points are counted, by [`check_scope`]:
//! a walk over the encoding that allocates nothing. No crate offers a
//! validating, non-materialising walk over a prost schema, hence this one; its
//! verdicts are checked against prost's on mutated requests in the tests.

use bytes::Bytes;
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::budget::{Decoding, Slot, Tally};
use crate::ExportError;

/// `ExportMetricsServiceRequest`, wire-compatible, resources decoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShallowRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ShallowResourceMetrics>,
}

/// `ResourceMetrics` with its scope metrics left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShallowResourceMetrics {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub scope_metrics: Vec<Bytes>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// Decodes `body` shallowly, checks every scope metrics message and counts
/// the data points (a histogram or summary point counts as one).
/// The body is walked first: checked, and its elements counted so that a body of
/// tiny elements is refused before being decoded (see [`crate::budget`]).
pub fn decode_shallow(body: Bytes) -> Result<(ShallowRequest, u64), ExportError> {
    use prost::Message;
    let (points, tally) = walk_request(&body)?;
    tally.check(Decoding::Shallow, body.len())?;
    let req = ShallowRequest::decode(body).map_err(|e| malformed_request(&e))?;
    Ok((req, points))
}

/// Checks a whole request as prost's decode would: its data point count and its
/// elements.
pub(crate) fn walk_request(body: &[u8]) -> Result<(u64, Tally), ExportError> {
    let mut tally = Tally::default();
    let points = walk(body, Msg::Request, 0, &mut tally)
        .map_err(|e| malformed_request(&format_args!("{} {e}", Msg::Request.name())))?;
    Ok((points, tally))
}

/// The answer to a body that is not a valid export request.
pub(crate) fn malformed_request(e: &dyn std::fmt::Display) -> ExportError {
    ExportError::InvalidArgument(format!("malformed ExportMetricsServiceRequest: {e}"))
}

/// Why bytes are not a valid encoding (worded as prost words it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("buffer underflow")]
    BufferUnderflow,
    #[error("invalid varint")]
    InvalidVarint,
    #[error("invalid key value: {0}")]
    InvalidKey(u64),
    #[error("invalid wire type value: {0}")]
    InvalidWireTypeValue(u8),
    #[error("invalid tag value: 0")]
    ZeroTag,
    /// A known field encoded with a wire type its type cannot have.
    #[error("invalid wire type {0}")]
    WrongWireType(u8),
    #[error("invalid string value: data is not UTF-8 encoded")]
    NotUtf8,
    /// A packed `repeated double` whose length is not a multiple of 8.
    #[error("delimited length exceeded")]
    DelimitedLengthExceeded,
    #[error("recursion limit reached")]
    RecursionLimit,
    #[error("unexpected end group tag")]
    UnexpectedEndGroup,
}

/// A malformed message and where it is: the messages and fields from the
/// outermost inward, then the reason — `ScopeMetrics field 2: Metric field 5:
/// Gauge field 1: … : buffer underflow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Innermost first: the walk adds a step as the error leaves a message.
    path: Vec<Step>,
    reason: WireError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Message(&'static str),
    Field(u32),
}

impl Malformed {
    pub fn reason(&self) -> WireError {
        self.reason
    }

    fn within(mut self: Box<Self>, step: Step) -> Box<Self> {
        self.path.push(step);
        self
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for step in self.path.iter().rev() {
            match step {
                Step::Message(name) => write!(f, "{name} ")?,
                Step::Field(tag) => write!(f, "field {tag}: ")?,
            }
        }
        write!(f, "{}", self.reason)
    }
}

impl std::error::Error for Malformed {}

impl From<WireError> for Box<Malformed> {
    fn from(reason: WireError) -> Self {
        Box::new(Malformed {
            path: Vec::new(),
            reason,
        })
    }
}

/// The walk's result: boxed, so that the error path costs the checks on
/// valid bodies nothing (a `Result` of two words).
pub(crate) type Walked<T> = Result<T, Box<Malformed>>;

/// prost's recursion limit: a message nested deeper than this is an error.
const RECURSION_LIMIT: u32 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Msg {
    /// `ExportMetricsServiceRequest`.
    Request,
    ResourceMetrics,
    Resource,
    EntityRef,
    ScopeMetrics,
    Scope,
    Metric,
    /// Gauge, Sum, Histogram, ExponentialHistogram, Summary: field 1 holds
    /// their data points.
    Data(Kind),
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    Buckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
}

impl Msg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Msg::Request => "ExportMetricsServiceRequest",
            Msg::ResourceMetrics => "ResourceMetrics",
            Msg::Resource => "Resource",
            Msg::EntityRef => "EntityRef",
            Msg::ScopeMetrics => "ScopeMetrics",
            Msg::Scope => "InstrumentationScope",
            Msg::Metric => "Metric",
            Msg::Data(Kind::Gauge) => "Gauge",
            Msg::Data(Kind::Sum) => "Sum",
            Msg::Data(Kind::Histogram) => "Histogram",
            Msg::Data(Kind::ExpHistogram) => "ExponentialHistogram",
            Msg::Data(Kind::Summary) => "Summary",
            Msg::NumberPoint => "NumberDataPoint",
            Msg::HistogramPoint => "HistogramDataPoint",
            Msg::ExpHistogramPoint => "ExponentialHistogramDataPoint",
            Msg::Buckets => "Buckets",
            Msg::SummaryPoint => "SummaryDataPoint",
            Msg::Quantile => "ValueAtQuantile",
            Msg::Exemplar => "Exemplar",
            Msg::KeyValue => "KeyValue",
            Msg::AnyValue => "AnyValue",
            Msg::ArrayValue => "ArrayValue",
            Msg::KeyValueList => "KeyValueList",
        }
    }
}

impl Kind {
    fn point(self) -> Msg {
        match self {
            Kind::Gauge | Kind::Sum => Msg::NumberPoint,
            Kind::Histogram => Msg::HistogramPoint,
            Kind::ExpHistogram => Msg::ExpHistogramPoint,
            Kind::Summary => Msg::SummaryPoint,
        }
    }
}

#[derive(Clone, Copy)]
enum Field {
    Str,
    Blob,
    Msg(Msg),
    Varint,
    Fixed64,
    /// repeated fixed64/double: packed or one by one.
    Fixed64s,
    /// repeated uint64: packed or one by one.
    Varints,
}

/// The fields of the OTLP metrics schema (opentelemetry-proto 0.33) that a
/// message knows; `None` for fields it does not (skipped, as prost does).
fn field(m: Msg, tag: u32) -> Option<Field> {
    use Field::{Blob, Fixed64, Fixed64s, Str, Varint, Varints};
    Some(match (m, tag) {
        (Msg::Request, 1) => Field::Msg(Msg::ResourceMetrics),
        (Msg::ResourceMetrics, 1) => Field::Msg(Msg::Resource),
        (Msg::ResourceMetrics, 2) => Field::Msg(Msg::ScopeMetrics),
        (Msg::ResourceMetrics, 3) => Str,
        (Msg::Resource, 1) => Field::Msg(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => Field::Msg(Msg::EntityRef),
        (Msg::EntityRef, 1..=4) => Str,
        (Msg::ScopeMetrics, 1) => Field::Msg(Msg::Scope),
        (Msg::ScopeMetrics, 2) => Field::Msg(Msg::Metric),
        (Msg::ScopeMetrics, 3) => Str,
        (Msg::Scope, 1 | 2) => Str,
        (Msg::Scope, 3) => Field::Msg(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,
        (Msg::Metric, 1..=3) => Str,
        (Msg::Metric, 5) => Field::Msg(Msg::Data(Kind::Gauge)),
        (Msg::Metric, 7) => Field::Msg(Msg::Data(Kind::Sum)),
        (Msg::Metric, 9) => Field::Msg(Msg::Data(Kind::Histogram)),
        (Msg::Metric, 10) => Field::Msg(Msg::Data(Kind::ExpHistogram)),
        (Msg::Metric, 11) => Field::Msg(Msg::Data(Kind::Summary)),
        (Msg::Metric, 12) => Field::Msg(Msg::KeyValue),
        (Msg::Data(k), 1) => Field::Msg(k.point()),
        // Sum, Histogram, ExponentialHistogram: temporality; Sum: is_monotonic.
        (Msg::Data(Kind::Sum | Kind::Histogram | Kind::ExpHistogram), 2) => Varint,
        (Msg::Data(Kind::Sum), 3) => Varint,
        (Msg::NumberPoint, 7) => Field::Msg(Msg::KeyValue),
        (Msg::NumberPoint, 2 | 3 | 4 | 6) => Fixed64,
        (Msg::NumberPoint, 5) => Field::Msg(Msg::Exemplar),
        (Msg::NumberPoint, 8) => Varint,
        (Msg::HistogramPoint, 9) => Field::Msg(Msg::KeyValue),
        (Msg::HistogramPoint, 2..=5 | 11 | 12) => Fixed64,
        (Msg::HistogramPoint, 6 | 7) => Fixed64s,
        (Msg::HistogramPoint, 8) => Field::Msg(Msg::Exemplar),
        (Msg::HistogramPoint, 10) => Varint,
        (Msg::ExpHistogramPoint, 1) => Field::Msg(Msg::KeyValue),
        (Msg::ExpHistogramPoint, 2..=5 | 7 | 12..=14) => Fixed64,
        (Msg::ExpHistogramPoint, 6 | 10) => Varint,
        (Msg::ExpHistogramPoint, 8 | 9) => Field::Msg(Msg::Buckets),
        (Msg::ExpHistogramPoint, 11) => Field::Msg(Msg::Exemplar),
        (Msg::Buckets, 1) => Varint,
        (Msg::Buckets, 2) => Varints,
        (Msg::SummaryPoint, 7) => Field::Msg(Msg::KeyValue),
        (Msg::SummaryPoint, 2..=5) => Fixed64,
        (Msg::SummaryPoint, 6) => Field::Msg(Msg::Quantile),
        (Msg::SummaryPoint, 8) => Varint,
        (Msg::Quantile, 1 | 2) => Fixed64,
        (Msg::Exemplar, 7) => Field::Msg(Msg::KeyValue),
        (Msg::Exemplar, 2 | 3 | 6) => Fixed64,
        (Msg::Exemplar, 4 | 5) => Blob,
        (Msg::KeyValue, 1) => Str,
        (Msg::KeyValue, 2) => Field::Msg(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,
        (Msg::AnyValue, 1) => Str,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => Fixed64,
        (Msg::AnyValue, 5) => Field::Msg(Msg::ArrayValue),
        (Msg::AnyValue, 6) => Field::Msg(Msg::KeyValueList),
        (Msg::AnyValue, 7) => Blob,
        (Msg::ArrayValue, 1) => Field::Msg(Msg::AnyValue),
        (Msg::KeyValueList, 1) => Field::Msg(Msg::KeyValue),
        _ => return None,
    })
}

/// Checks one encoded `ScopeMetrics` found `level` messages below the request
/// and returns its data point count (prost's semantics: of a metric's `data`
/// oneof, the last variant seen counts; a repeated variant merges).
/// Errors name the path: `Metric field 5: Gauge field 1: … : reason`.
pub fn check_scope(b: &[u8], level: u32) -> Result<u64, Malformed> {
    walk(b, Msg::ScopeMetrics, level, &mut Tally::default())
        .map_err(|e| *e.within(Step::Message(Msg::ScopeMetrics.name())))
}

/// A singular message field (or a message variant of a oneof): prost merges
/// its occurrences when it appears more than once in one message.
fn singular(m: Msg, tag: u32) -> bool {
    matches!(
        (m, tag),
        (Msg::ResourceMetrics | Msg::ScopeMetrics, 1)
            | (Msg::Metric, 5 | 7 | 9 | 10 | 11)
            | (Msg::KeyValue, 2)
            | (Msg::AnyValue, 5 | 6)
    )
}

/// Walks message `m` (checking it as [`check_scope`] does) and returns its
/// data point count; counts the elements in `tally`, and sets its `merges` when a
/// [`singular`] field appears twice in one message (prost would merge the
/// occurrences).
pub(crate) fn walk(b: &[u8], m: Msg, level: u32, tally: &mut Tally) -> Walked<u64> {
    let mut tag = 0;
    walk_fields(b, m, level, &mut tag, tally).map_err(|e| match tag {
        0 => e,
        t => e.within(Step::Field(t)),
    })
}

/// The fields of one message; `at` is the field being read (for errors).
fn walk_fields(b: &[u8], m: Msg, level: u32, at: &mut u32, tally: &mut Tally) -> Walked<u64> {
    if level > RECURSION_LIMIT {
        return Err(WireError::RecursionLimit.into());
    }
    let mut r = Reader { b, pos: 0 };
    let mut points = 0u64;
    // Metric: (tag of the data variant, its points).
    let mut data = (0u32, 0u64);
    // Tags (all below 32) of the singular message fields seen so far.
    let mut seen = 0u32;
    while r.pos < b.len() {
        *at = 0;
        let (tag, wt) = r.key()?;
        *at = tag;
        let Some(f) = field(m, tag) else {
            r.skip(tag, wt, level)?;
            continue;
        };
        let sub = match f {
            Field::Msg(sub) if wt == LEN => sub,
            Field::Msg(_) => return Err(WireError::WrongWireType(wt).into()),
            scalar => {
                let repeated = check_scalar(&mut r, scalar, wt)?;
                tally.add(Slot::Number, repeated);
                if m == Msg::EntityRef && matches!(tag, 3 | 4) {
                    tally.add(Slot::EntityKey, 1);
                }
                continue;
            }
        };
        if singular(m, tag) {
            tally.merges |= seen & (1 << tag) != 0;
            seen |= 1 << tag;
        }
        if let Some(slot) = Slot::of(sub) {
            tally.add(slot, 1);
        }
        let outer = tally.in_resource;
        tally.in_resource |= sub == Msg::Resource;
        let n = walk(r.delimited()?, sub, level + 1, tally)
            .map_err(|e| e.within(Step::Message(sub.name())))?;
        tally.in_resource = outer;
        match m {
            Msg::Request | Msg::ResourceMetrics | Msg::ScopeMetrics => points += n,
            Msg::Metric if matches!(sub, Msg::Data(_)) => {
                if data.0 == tag {
                    data.1 += n;
                } else {
                    data = (tag, n);
                }
            }
            Msg::Data(_) if tag == 1 => points += 1,
            _ => {}
        }
    }
    Ok(if m == Msg::Metric { data.1 } else { points })
}

/// Reads one field that is not a message, checking its wire type and, for a
/// string, its UTF-8. Returns how many elements of a repeated number it held.
#[inline(always)]
fn check_scalar(r: &mut Reader<'_>, f: Field, wt: u8) -> Result<u64, WireError> {
    let wrong = || Err(WireError::WrongWireType(wt));
    match f {
        Field::Str => {
            if wt != LEN {
                return wrong();
            }
            std::str::from_utf8(r.delimited()?).map_err(|_| WireError::NotUtf8)?;
        }
        Field::Blob => {
            if wt != LEN {
                return wrong();
            }
            r.delimited()?;
        }
        Field::Varint => {
            if wt != VARINT {
                return wrong();
            }
            r.varint()?;
        }
        Field::Fixed64 => {
            if wt != I64 {
                return wrong();
            }
            r.take(8)?;
        }
        Field::Fixed64s => match wt {
            I64 => {
                r.take(8)?;
                return Ok(1);
            }
            LEN => {
                let packed = r.delimited()?.len();
                if packed % 8 != 0 {
                    return Err(WireError::DelimitedLengthExceeded);
                }
                return Ok(packed as u64 / 8);
            }
            _ => return wrong(),
        },
        Field::Varints => match wt {
            VARINT => {
                r.varint()?;
                return Ok(1);
            }
            LEN => {
                let mut p = Reader {
                    b: r.delimited()?,
                    pos: 0,
                };
                let mut n = 0;
                while p.pos < p.b.len() {
                    p.varint()?;
                    n += 1;
                }
                return Ok(n);
            }
            _ => return wrong(),
        },
        // The caller walks messages.
        Field::Msg(_) => {}
    }
    Ok(0)
}

pub(crate) const VARINT: u8 = 0;
pub(crate) const I64: u8 = 1;
pub(crate) const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;

#[derive(Clone)]
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(WireError::BufferUnderflow)?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// prost's varint: at most 10 bytes, the 10th at most 1.
    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let &byte = self.b.get(self.pos).ok_or(WireError::BufferUnderflow)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    return Err(WireError::InvalidVarint);
                }
                return Ok(v);
            }
        }
        Err(WireError::InvalidVarint)
    }

    pub(crate) fn delimited(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        self.take(usize::try_from(len).map_err(|_| WireError::BufferUnderflow)?)
    }

    pub(crate) fn key(&mut self) -> Result<(u32, u8), WireError> {
        let k = self.varint()?;
        if k > u64::from(u32::MAX) {
            return Err(WireError::InvalidKey(k));
        }
        let wt = (k & 7) as u8;
        if wt > I32 {
            return Err(WireError::InvalidWireTypeValue(wt));
        }
        let tag = (k >> 3) as u32;
        if tag == 0 {
            return Err(WireError::ZeroTag);
        }
        Ok((tag, wt))
    }

    /// Skips an unknown field (prost's `skip_field`).
    /// `level`: of the message the field is in (prost counts from there).
    pub(crate) fn skip(&mut self, tag: u32, wt: u8, level: u32) -> Result<(), WireError> {
        if level >= RECURSION_LIMIT {
            return Err(WireError::RecursionLimit);
        }
        match wt {
            VARINT => {
                self.varint()?;
            }
            I64 => {
                self.take(8)?;
            }
            LEN => {
                self.delimited()?;
            }
            I32 => {
                self.take(4)?;
            }
            START_GROUP => loop {
                let (inner, iwt) = self.key()?;
                if iwt == END_GROUP {
                    if inner != tag {
                        return Err(WireError::UnexpectedEndGroup);
                    }
                    break;
                }
                self.skip(inner, iwt, level + 1)?;
            },
            _ => return Err(WireError::UnexpectedEndGroup),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
