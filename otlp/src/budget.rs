//! Element caps: how much memory decoding a request into owned messages would
//! take, counted before anything is decoded, and a request refused when that is
//! more than [`FACTOR`] times its body.
//!
//! An element costs its Rust struct, whatever its encoding: an empty
//! `ResourceMetrics` is 2 bytes of protobuf (3 of JSON) but ~100 bytes decoded,
//! so a 4 MiB body of them would decode into hundreds of MiB. Real requests
//! decode into 1–4 times their size (attributes and points of tens of bytes
//! each); the cap only refuses bodies made of near-empty elements. Each element
//! is weighted by the struct a decode allocates for it in a `Vec`; strings are not
//! counted (their bytes come from the body, at most once).

use crate::shallow::Msg;
use crate::ExportError;
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as m;
use std::mem::size_of;

/// A decode may take at most this many times the body's size (plus [`SLACK`]);
/// `Vec` growth can double it at worst.
pub const FACTOR: usize = 8;
/// Lets small requests through whatever their shape.
pub const SLACK: usize = 64 << 10;

/// What a decoder materialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoding {
    /// [`crate::shallow`]: resources decoded, scope metrics kept as slices.
    Shallow,
    /// prost's decode of the whole request.
    Full,
}

/// Counted elements, by what they decode into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    /// An element of `ArrayValue.values` (counted for every `AnyValue`).
    AnyValue,
    EntityRef,
    /// An element of `EntityRef.id_keys` / `description_keys`.
    EntityKey,
    /// An element of a repeated number field (bucket counts, bounds).
    Number,
}

const SLOTS: usize = Slot::Number as usize + 1;

impl Slot {
    /// Messages that are not an element of a repeated field (decoded in place).
    pub(crate) fn of(m: Msg) -> Option<Slot> {
        Some(match m {
            Msg::ResourceMetrics => Slot::ResourceMetrics,
            Msg::ScopeMetrics => Slot::ScopeMetrics,
            Msg::Metric => Slot::Metric,
            Msg::NumberPoint => Slot::NumberPoint,
            Msg::HistogramPoint => Slot::HistogramPoint,
            Msg::ExpHistogramPoint => Slot::ExpHistogramPoint,
            Msg::SummaryPoint => Slot::SummaryPoint,
            Msg::Quantile => Slot::Quantile,
            Msg::Exemplar => Slot::Exemplar,
            Msg::KeyValue => Slot::KeyValue,
            Msg::AnyValue => Slot::AnyValue,
            Msg::EntityRef => Slot::EntityRef,
            Msg::Request
            | Msg::Resource
            | Msg::Scope
            | Msg::Data(_)
            | Msg::Buckets
            | Msg::ArrayValue
            | Msg::KeyValueList => return None,
        })
    }

    const ALL: [Slot; SLOTS] = [
        Slot::ResourceMetrics,
        Slot::ScopeMetrics,
        Slot::Metric,
        Slot::NumberPoint,
        Slot::HistogramPoint,
        Slot::ExpHistogramPoint,
        Slot::SummaryPoint,
        Slot::Quantile,
        Slot::Exemplar,
        Slot::KeyValue,
        Slot::AnyValue,
        Slot::EntityRef,
        Slot::EntityKey,
        Slot::Number,
    ];

    /// The field holding these elements, as the sender wrote it.
    fn field(self, json: bool) -> &'static str {
        let (proto, js) = match self {
            Slot::ResourceMetrics => ("resource_metrics", "resourceMetrics"),
            Slot::ScopeMetrics => ("scope_metrics", "scopeMetrics"),
            Slot::Metric => ("metrics", "metrics"),
            Slot::NumberPoint
            | Slot::HistogramPoint
            | Slot::ExpHistogramPoint
            | Slot::SummaryPoint => ("data_points", "dataPoints"),
            Slot::Quantile => ("quantile_values", "quantileValues"),
            Slot::Exemplar => ("exemplars", "exemplars"),
            Slot::KeyValue => ("attributes", "attributes"),
            Slot::AnyValue => ("values", "values"),
            Slot::EntityRef => ("entity_refs", "entityRefs"),
            Slot::EntityKey => ("id_keys/description_keys", "idKeys/descriptionKeys"),
            Slot::Number => (
                "bucket_counts/explicit_bounds",
                "bucketCounts/explicitBounds",
            ),
        };
        if json {
            js
        } else {
            proto
        }
    }

    /// Bytes one element takes once decoded.
    fn weight(self, decoding: Decoding) -> usize {
        match (self, decoding) {
            (Slot::ResourceMetrics, Decoding::Shallow) => {
                size_of::<crate::shallow::ShallowResourceMetrics>()
            }
            (Slot::ScopeMetrics, Decoding::Shallow) => size_of::<Bytes>(),
            (Slot::ResourceMetrics, Decoding::Full) => size_of::<m::ResourceMetrics>(),
            (Slot::ScopeMetrics, Decoding::Full) => size_of::<m::ScopeMetrics>(),
            (Slot::Metric, _) => size_of::<m::Metric>(),
            (Slot::NumberPoint, _) => size_of::<m::NumberDataPoint>(),
            (Slot::HistogramPoint, _) => size_of::<m::HistogramDataPoint>(),
            (Slot::ExpHistogramPoint, _) => size_of::<m::ExponentialHistogramDataPoint>(),
            (Slot::SummaryPoint, _) => size_of::<m::SummaryDataPoint>(),
            (Slot::Quantile, _) => size_of::<m::summary_data_point::ValueAtQuantile>(),
            (Slot::Exemplar, _) => size_of::<m::Exemplar>(),
            (Slot::KeyValue, _) => size_of::<KeyValue>(),
            (Slot::AnyValue, _) => size_of::<AnyValue>(),
            (Slot::EntityRef, _) => size_of::<EntityRef>(),
            (Slot::EntityKey, _) => size_of::<String>(),
            (Slot::Number, _) => size_of::<u64>(),
        }
    }
}

/// Elements counted by a walk over a request: all of them, and those inside a
/// `Resource` (the only ones a [`Decoding::Shallow`] materialises besides the
/// resource and scope metrics themselves).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// A singular message field appeared twice in one message (prost merges).
    pub(crate) merges: bool,
    pub(crate) in_resource: bool,
    all: [u64; SLOTS],
    resource: [u64; SLOTS],
}

impl Tally {
    #[inline(always)]
    pub(crate) fn add(&mut self, slot: Slot, n: u64) {
        self.all[slot as usize] += n;
        if self.in_resource {
            self.resource[slot as usize] += n;
        }
    }

    fn counted(&self, slot: Slot, decoding: Decoding) -> u64 {
        match (decoding, slot) {
            (Decoding::Full, _) | (_, Slot::ResourceMetrics | Slot::ScopeMetrics) => {
                self.all[slot as usize]
            }
            (Decoding::Shallow, _) => self.resource[slot as usize],
        }
    }

    /// Err when `decoding` would take more than [`FACTOR`] times the body.
    pub(crate) fn check(&self, decoding: Decoding, body_len: usize) -> Result<(), ExportError> {
        let counts = Slot::ALL.map(|s| self.counted(s, decoding));
        over_budget(
            &counts,
            decoding,
            body_len,
            "ExportMetricsServiceRequest",
            false,
        )
    }
}

/// The answer when the weighted `counts` exceed the budget of a body of
/// `body_len`: names the element that weighs most.
fn over_budget(
    counts: &[u64; SLOTS],
    decoding: Decoding,
    body_len: usize,
    what: &str,
    json: bool,
) -> Result<(), ExportError> {
    let cost = |s: Slot| counts[s as usize].saturating_mul(s.weight(decoding) as u64);
    let total = Slot::ALL
        .iter()
        .map(|&s| cost(s))
        .fold(0u64, u64::saturating_add);
    let budget = body_len.saturating_mul(FACTOR).saturating_add(SLACK) as u64;
    if total <= budget {
        return Ok(());
    }
    let worst = Slot::ALL
        .into_iter()
        .max_by_key(|&s| cost(s))
        .unwrap_or(Slot::ResourceMetrics);
    Err(ExportError::InvalidArgument(format!(
        "{what}: too many elements for the body's size: {} in {} would take {} bytes to decode \
         ({total} in all), more than {FACTOR} times the body's {body_len} bytes",
        counts[worst as usize],
        worst.field(json),
        cost(worst),
    )))
}

/// The element caps of an OTLP/JSON body, checked by a pass that allocates nothing
/// (serde's own recursion limit bounds its depth) before it is decoded.
pub(crate) fn check_json(body: &[u8]) -> Result<(), ExportError> {
    use serde::de::DeserializeSeed;
    let mut counts = [0u64; SLOTS];
    let mut de = serde_json::Deserializer::from_slice(body);
    // A syntax error is left to the decode, which names where it is.
    if (Count {
        counts: &mut counts,
        elements: None,
    })
    .deserialize(&mut de)
    .is_err()
    {
        return Ok(());
    }
    over_budget(&counts, Decoding::Full, body.len(), "OTLP/JSON", true)
}

/// What the elements of an array under this JSON key decode into.
fn json_slot(key: &str) -> Option<Slot> {
    Some(match key {
        "resourceMetrics" | "resource_metrics" => Slot::ResourceMetrics,
        "scopeMetrics" | "scope_metrics" => Slot::ScopeMetrics,
        "metrics" => Slot::Metric,
        // The widest point type: the key does not say which it is.
        "dataPoints" | "data_points" => Slot::HistogramPoint,
        "quantileValues" | "quantile_values" => Slot::Quantile,
        "exemplars" => Slot::Exemplar,
        "attributes" | "filteredAttributes" | "filtered_attributes" => Slot::KeyValue,
        // ArrayValue's AnyValues or KeyValueList's KeyValues: the wider.
        "values" => Slot::KeyValue,
        "entityRefs" | "entity_refs" => Slot::EntityRef,
        "idKeys" | "id_keys" | "descriptionKeys" | "description_keys" => Slot::EntityKey,
        "bucketCounts" | "bucket_counts" | "explicitBounds" | "explicit_bounds" => Slot::Number,
        _ => return None,
    })
}

/// Counts array elements by the key they are under; `elements`: the slot of the
/// array being read, if this value is one.
struct Count<'a> {
    counts: &'a mut [u64; SLOTS],
    elements: Option<Slot>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Count<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let counts = self.counts;
        loop {
            let element = Count {
                counts: &mut *counts,
                elements: None,
            };
            if seq.next_element_seed(element)?.is_none() {
                return Ok(());
            }
            if let Some(slot) = self.elements {
                counts[slot as usize] += 1;
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let counts = self.counts;
        while let Some(key) = map.next_key_seed(Key)? {
            map.next_value_seed(Count {
                counts: &mut *counts,
                elements: key,
            })?;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A map key, read for its slot without being copied.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = Option<Slot>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Slot>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key {
    type Value = Option<Slot>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<Slot>, E> {
        Ok(json_slot(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_elements_are_refused_naming_the_field() {
        let mut json = String::from("{\"resourceMetrics\":[{}");
        json.push_str(&",{}".repeat(100_000));
        json.push_str("]}");
        let e = check_json(json.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("100001 in resourceMetrics"), "{e}");
        // Nested: empty attributes of one resource.
        let mut json = String::from("{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{}");
        json.push_str(&",{}".repeat(100_000));
        json.push_str("]}}]}");
        let e = check_json(json.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("100001 in attributes"), "{e}");
    }

    #[test]
    fn ordinary_bodies_pass() {
        let point = r#"{"timeUnixNano":"1700000000000000000","asDouble":1.5,"attributes":[{"key":"a","value":{"stringValue":"b"}}]}"#;
        let points = vec![point; 10_000].join(",");
        let json = format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"x"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"m","gauge":{{"dataPoints":[{points}]}}}}]}}]}}]}}"#
        );
        check_json(json.as_bytes()).unwrap();
        check_json(b"{}").unwrap();
        check_json(b"not json").unwrap();
    }
}
