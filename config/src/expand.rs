//! Environment expansion in configuration values: `${VAR}`, `${env:VAR}` (the
//! OpenTelemetry Collector's spelling), `${VAR:-default}` (the default when VAR is
//! unset or empty), and `$$` for a literal `$`. A `$` followed by anything else stays
//! as written, so regular expressions (`foo$`) and templates (`$labels`) need no
//! escaping.
//!
//! Expansion happens while a value is deserialised ([`Expand`] wraps the YAML
//! deserializer), not on the file's text: a variable's value cannot change the
//! document's structure (a secret containing `#` or `: ` stays one string), comments
//! are never expanded, and errors keep their `FILE:LINE:COL`. Only values expand; keys
//! are taken as written.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess};
use serde::de::{VariantAccess, Visitor};
use std::borrow::Cow;
use std::env::VarError;
use std::fmt;

/// A value whose `${…}` cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unterminated `${{` (write `$$` for a literal `$`)")]
    Unterminated,
    #[error("`${{{outer}`: a `${{` inside `${{…}}` is not supported")]
    Nested { outer: String },
    #[error(
        "`${{{text}}}`: {name:?} is not a variable name (expected `${{NAME}}`, `${{env:NAME}}` or `${{NAME:-default}}`; write `$${{` for a literal `${{`)"
    )]
    InvalidName { text: String, name: String },
    #[error("environment variable {name} is not set (give a default with `${{{name}:-default}}`)")]
    NotSet { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    NotUnicode { name: String },
}

/// Expands `s` with the process environment.
pub fn expand(s: &str) -> Result<Cow<'_, str>, ExpandError> {
    expand_with(s, |name| std::env::var(name))
}

/// Expands `s`, looking variables up with `lookup` (`std::env::var`'s signature).
/// Borrows `s` when there is nothing to expand.
pub fn expand_with<F>(s: &str, lookup: F) -> Result<Cow<'_, str>, ExpandError>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    if !s.contains('$') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_on) = after.strip_prefix('{') {
            let end = body_on.find('}').ok_or(ExpandError::Unterminated)?;
            let body = &body_on[..end];
            out.push_str(&substitute(body, &lookup)?);
            rest = &body_on[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// The value of one `${body}`.
fn substitute<F>(body: &str, lookup: &F) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    if body.contains("${") {
        return Err(ExpandError::Nested {
            outer: body.to_string(),
        });
    }
    let spec = body.strip_prefix("env:").unwrap_or(body);
    let (name, default) = match spec.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (spec, None),
    };
    if !is_name(name) {
        return Err(ExpandError::InvalidName {
            text: body.to_string(),
            name: name.to_string(),
        });
    }
    match (lookup(name), default) {
        (Ok(v), Some(d)) if v.is_empty() => Ok(d.to_string()),
        (Ok(v), _) => Ok(v),
        (Err(VarError::NotPresent), Some(d)) => Ok(d.to_string()),
        (Err(VarError::NotPresent), None) => Err(ExpandError::NotSet {
            name: name.to_string(),
        }),
        (Err(VarError::NotUnicode(_)), _) => Err(ExpandError::NotUnicode {
            name: name.to_string(),
        }),
    }
}

/// POSIX shell variable names: what `env` and Kubernetes' `env:` can set portably.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

// ---------------------------------------------------------------------------------
// The deserializer wrapper

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
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    fn env(name: &str) -> Result<String, VarError> {
        match name {
            "HOST" => Ok("edge-1".into()),
            "EMPTY" => Ok(String::new()),
            "DOLLARS" => Ok("a$$b${c}".into()),
            _ => Err(VarError::NotPresent),
        }
    }

    #[test]
    fn expansion_rules() {
        use ExpandError::*;
        let not_set = |name: &str| Err(NotSet { name: name.into() });
        let invalid = |text: &str, name: &str| {
            Err(InvalidName {
                text: text.into(),
                name: name.into(),
            })
        };
        let cases: &[(&str, Result<&str, ExpandError>)] = &[
            ("plain", Ok("plain")),
            ("${HOST}", Ok("edge-1")),
            ("${env:HOST}", Ok("edge-1")),
            ("node-${HOST}.local", Ok("node-edge-1.local")),
            ("${HOST}${HOST}", Ok("edge-1edge-1")),
            ("${UNSET}", not_set("UNSET")),
            ("${env:UNSET}", not_set("UNSET")),
            ("${UNSET:-fallback}", Ok("fallback")),
            ("${env:UNSET:-fallback}", Ok("fallback")),
            ("${UNSET:-}", Ok("")),
            ("${UNSET:-a:-b}", Ok("a:-b")),
            ("${HOST:-fallback}", Ok("edge-1")),
            ("${EMPTY}", Ok("")),
            ("${EMPTY:-fallback}", Ok("fallback")),
            // A variable's value is not expanded again.
            ("${DOLLARS}", Ok("a$$b${c}")),
            ("$$", Ok("$")),
            ("$${HOST}", Ok("${HOST}")),
            ("$$$${HOST}", Ok("$${HOST}")),
            ("$$${HOST}", Ok("$edge-1")),
            ("price: 5$", Ok("price: 5$")),
            ("^(a|b)$", Ok("^(a|b)$")),
            ("{{ $labels.instance }}", Ok("{{ $labels.instance }}")),
            ("$1", Ok("$1")),
            ("${HOST", Err(Unterminated)),
            ("x${", Err(Unterminated)),
            (
                "${A:-${HOST}}",
                Err(Nested {
                    outer: "A:-${HOST".into(),
                }),
            ),
            ("${}", invalid("", "")),
            ("${1}", invalid("1", "1")),
            ("${my var}", invalid("my var", "my var")),
            ("${file:/etc/x}", invalid("file:/etc/x", "file:/etc/x")),
        ];
        for (input, want) in cases {
            let got = expand_with(input, env);
            let got = got.as_ref().map(|c| c.as_ref()).map_err(Clone::clone);
            assert_eq!(got, want.clone(), "{input:?}");
        }
        assert!(matches!(
            expand_with("plain $ text", env),
            Ok(Cow::Owned(_))
        ));
        assert!(matches!(expand_with("plain", env), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn error_messages_say_how_to_fix() {
        let e = expand_with("${NOPE}", env).unwrap_err().to_string();
        assert_eq!(
            e,
            "environment variable NOPE is not set (give a default with `${NOPE:-default}`)"
        );
        let e = expand_with("${1}", env).unwrap_err().to_string();
        assert!(e.contains("write `$${` for a literal `${`"), "{e}");
    }

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
