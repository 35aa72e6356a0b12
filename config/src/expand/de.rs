//! [`Expand`]: the YAML deserializer, with every string value expanded before the
//! type sees it.

use super::expand;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess};
use serde::de::{VariantAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A deserializer whose string values are expanded before the type sees them.
///
/// Strings expand where they are read (`deserialize_str`, `deserialize_any`, enum
/// variants). A number or boolean written as `${VAR}` reaches the YAML parser as a
/// string: its expansion is read as a YAML scalar of the type asked for, so
/// `port: ${PORT}` works for a `u16`.
pub struct Expand<D>(pub D);

/// Reads an expanded value as a YAML scalar of one type (`Value::deserialize_u16`…).
type Resolve<'de, V> =
    fn(serde_yaml_ng::Value, V) -> Result<<V as Visitor<'de>>::Value, serde_yaml_ng::Error>;

macro_rules! typed_scalars {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let resolve: Resolve<'de, V> = |value, v| value.$method(v);
            self.0.deserialize_any(Typed { visitor, resolve })
        }
    )*};
}

macro_rules! expanding_visitor {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(Visit(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Expand<D> {
    type Error = D::Error;

    typed_scalars!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
    );

    expanding_visitor!(
        deserialize_any,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
    );

    /// An ignored value is not expanded: its unset variable is no error.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_ignored_any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Visit(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Visit(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Visit(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, Visit(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, Visit(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, Visit(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Expands the strings a visitor is given and keeps expanding inside collections.
struct Visit<V>(V);

/// Hands `s` to `visitor`: as given when nothing expanded, else the expansion.
fn visit_expanded<'de, V: Visitor<'de>, E: de::Error>(
    visitor: V,
    s: &str,
    unchanged: impl FnOnce(V) -> Result<V::Value, E>,
) -> Result<V::Value, E> {
    match expand(s).map_err(E::custom)? {
        Cow::Borrowed(_) => unchanged(visitor),
        Cow::Owned(o) => visitor.visit_string(o),
    }
}

macro_rules! forward_visits {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        visit_expanded(self.0, s, |v| v.visit_str(s))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        visit_expanded(self.0, s, |v| v.visit_borrowed_str(s))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        match expand(&s).map_err(E::custom)? {
            Cow::Borrowed(_) => self.0.visit_string(s),
            Cow::Owned(o) => self.0.visit_string(o),
        }
    }

    forward_visits!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        self.0.visit_some(Expand(d))
    }

    fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        self.0.visit_newtype_struct(Expand(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Map(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(Enum(data))
    }
}

/// A visitor for a number or boolean: a string that expands is read as a YAML scalar
/// of the type asked for; anything else goes to the type as the parser found it.
struct Typed<'de, V: Visitor<'de>> {
    visitor: V,
    resolve: Resolve<'de, V>,
}

impl<'de, V: Visitor<'de>> Typed<'de, V> {
    fn visit_text<E: de::Error>(
        self,
        s: &str,
        unchanged: impl FnOnce(V) -> Result<V::Value, E>,
    ) -> Result<V::Value, E> {
        let expanded = match expand(s).map_err(E::custom)? {
            Cow::Borrowed(_) => return unchanged(self.visitor),
            Cow::Owned(o) => o,
        };
        serde_yaml_ng::from_str(&expanded)
            .and_then(|value| (self.resolve)(value, self.visitor))
            .map_err(|e| E::custom(format!("{s:?} expands to {expanded:?}: {e}")))
    }
}

macro_rules! forward_typed_visits {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.visitor.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Typed<'de, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        self.visit_text(s, |v| v.visit_str(s))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        self.visit_text(s, |v| v.visit_borrowed_str(s))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        self.visit_text(&s, |v| v.visit_str(&s))
    }

    forward_typed_visits!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }
}

/// Expands the values of a sequence.
struct Seq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// Expands the values of a mapping; keys are taken as written.
struct Map<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// An enum: its variant name (`action: ${ACTION}`) and contents expand.
struct Enum<A>(A);

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Enum<A> {
    type Error = A::Error;
    type Variant = Variant<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(Seed(seed))?;
        Ok((value, Variant(variant)))
    }
}

struct Variant<A>(A);

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Visit(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Visit(visitor))
    }
}

/// A value's seed, handed an expanding deserializer.
struct Seed<T>(T);

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.0.deserialize(Expand(d))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        port: u16,
        enabled: bool,
        ratio: f64,
        peer: Option<String>,
        tags: Vec<String>,
        labels: BTreeMap<String, String>,
        mode: Mode,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
        Safe,
    }

    #[test]
    fn every_value_expands_with_its_type() {
        std::env::set_var("EW_EXPAND_T_NAME", "edge # not a comment: really");
        std::env::set_var("EW_EXPAND_T_PORT", "8080");
        std::env::set_var("EW_EXPAND_T_ON", "true");
        std::env::set_var("EW_EXPAND_T_MODE", "safe");
        let yaml = "
# ${EW_EXPAND_T_UNSET_COMMENT} in a comment is not expanded
name: ${EW_EXPAND_T_NAME}
port: ${env:EW_EXPAND_T_PORT}
enabled: ${EW_EXPAND_T_ON}
ratio: ${EW_EXPAND_T_UNSET:-0.5}
peer: host-${EW_EXPAND_T_PORT}
tags: [a, '${EW_EXPAND_T_PORT}', $$x]
labels:
  ${key}: ${EW_EXPAND_T_MODE}
mode: ${EW_EXPAND_T_MODE}
";
        let doc: Doc = crate::parse(yaml, "t.yaml").unwrap();
        assert_eq!(
            doc,
            Doc {
                name: "edge # not a comment: really".into(),
                port: 8080,
                enabled: true,
                ratio: 0.5,
                peer: Some("host-8080".into()),
                tags: vec!["a".into(), "8080".into(), "$x".into()],
                labels: [("${key}".to_string(), "safe".to_string())].into(),
                mode: Mode::Safe,
            }
        );
        // Verbatim parsing leaves values as written.
        let raw: BTreeMap<String, String> =
            crate::parse_verbatim("a: ${EW_EXPAND_T_UNSET}\n", "t.yaml").unwrap();
        assert_eq!(raw["a"], "${EW_EXPAND_T_UNSET}");
    }

    #[test]
    fn errors_are_located() {
        std::env::set_var("EW_EXPAND_T_BAD_PORT", "eighty");
        let base = "name: x\nport: 1\nenabled: true\nratio: 1\npeer: ~\ntags: []\nlabels: {}\nmode: fast\n";
        let cases = [
            (
                base.replace("port: 1", "port: ${EW_EXPAND_T_UNSET_P}"),
                "t.yaml:2:7: port: environment variable EW_EXPAND_T_UNSET_P is not set",
            ),
            (
                base.replace("port: 1", "port: ${EW_EXPAND_T_BAD_PORT}"),
                "t.yaml:2:7: port: \"${EW_EXPAND_T_BAD_PORT}\" expands to \"eighty\": invalid type: string \"eighty\", expected u16",
            ),
            (
                base.replace("tags: []", "tags:\n  - ok\n  - ${EW_EXPAND_T_UNSET_TAG"),
                "t.yaml:8:5: tags[1]: unterminated `${`",
            ),
        ];
        for (yaml, want) in cases {
            let e = crate::parse::<Doc>(&yaml, "t.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
    }
}
