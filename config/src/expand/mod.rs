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

mod de;

pub use de::Expand;

use std::borrow::Cow;
use std::env::VarError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
