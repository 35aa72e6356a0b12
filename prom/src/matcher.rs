//! One label matcher with Prometheus semantics: `=`, `!=`, `=~`, `!~`, regexes
//! anchored at both ends, and a label a series lacks matching as `""`.
//!
//! The syntaxes that produce matchers (PromQL selectors, Alertmanager's
//! `matchers:` strings) have their own parsers; they all build a [`Matcher`].

use std::fmt;

use regex::Regex;

/// The operator of a matcher, without its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regex => "=~",
            MatchType::NotRegex => "!~",
        }
    }
}

impl fmt::Display for MatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operator with its operand: the value compared against, or the compiled
/// (already anchored) regex.
#[derive(Debug, Clone)]
pub enum MatchOp {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl MatchOp {
    pub fn match_type(&self) -> MatchType {
        match self {
            MatchOp::Equal(_) => MatchType::Equal,
            MatchOp::NotEqual(_) => MatchType::NotEqual,
            MatchOp::Regex(_) => MatchType::Regex,
            MatchOp::NotRegex(_) => MatchType::NotRegex,
        }
    }
}

/// A pattern that does not compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid regex {pattern:?}: {source}")]
pub struct RegexError {
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

/// Compiles `pattern` anchored at both ends, as Prometheus and Alertmanager do:
/// `a|b` matches `a` and `b`, not `xa`.
pub fn anchored(pattern: &str) -> Result<Regex, RegexError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|source| RegexError {
        pattern: pattern.to_owned(),
        source,
    })
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
}

impl Matcher {
    /// `name <op> value`; for the regex operators `value` is the pattern, which
    /// is anchored at both ends.
    pub fn new(name: &str, op: MatchType, value: &str) -> Result<Self, RegexError> {
        let op = match op {
            MatchType::Equal => MatchOp::Equal(value.to_owned()),
            MatchType::NotEqual => MatchOp::NotEqual(value.to_owned()),
            MatchType::Regex => MatchOp::Regex(anchored(value)?),
            MatchType::NotRegex => MatchOp::NotRegex(anchored(value)?),
        };
        Ok(Self {
            name: name.to_owned(),
            op,
        })
    }

    pub fn equal(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: MatchOp::Equal(value.to_owned()),
        }
    }

    pub fn not_equal(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: MatchOp::NotEqual(value.to_owned()),
        }
    }

    /// `name=~"pattern"`; the pattern is anchored at both ends.
    pub fn regex(name: &str, pattern: &str) -> Result<Self, RegexError> {
        Self::new(name, MatchType::Regex, pattern)
    }

    /// `name!~"pattern"`; the pattern is anchored at both ends.
    pub fn not_regex(name: &str, pattern: &str) -> Result<Self, RegexError> {
        Self::new(name, MatchType::NotRegex, pattern)
    }

    /// Whether a label value matches; pass `""` for a label the series lacks.
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal(v) => v == value,
            MatchOp::NotEqual(v) => v != value,
            MatchOp::Regex(r) => r.is_match(value),
            MatchOp::NotRegex(r) => !r.is_match(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators() {
        let eq = Matcher::equal("job", "api");
        assert!(eq.matches("api") && !eq.matches("apis") && !eq.matches(""));
        let ne = Matcher::not_equal("job", "api");
        assert!(!ne.matches("api") && ne.matches("") && ne.matches("x"));
        let re = Matcher::regex("job", "a.*|b").unwrap();
        assert!(re.matches("api") && re.matches("b") && re.matches("a"));
        assert!(!re.matches("xa") && !re.matches("bb") && !re.matches(""));
        let nre = Matcher::not_regex("job", "a.*|b").unwrap();
        assert!(!nre.matches("api") && nre.matches("bb") && nre.matches(""));
    }

    #[test]
    fn regexes_are_fully_anchored() {
        // Without the group, `^a|b$` would match "ab" and "xb".
        let m = Matcher::regex("x", "a|b").unwrap();
        assert!(!m.matches("ab") && !m.matches("xb") && !m.matches("ax"));
        assert!(Matcher::regex("x", "").unwrap().matches(""));
        assert!(!Matcher::regex("x", "").unwrap().matches("a"));
        assert!(Matcher::regex("x", ".+").unwrap().matches("a\u{e9}"));
    }

    #[test]
    fn bad_regex_is_a_typed_error() {
        let e = Matcher::new("x", MatchType::Regex, "(").unwrap_err();
        assert_eq!(e.pattern, "(");
        assert!(e.to_string().starts_with("invalid regex \"(\": "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn types() {
        for (t, s) in [
            (MatchType::Equal, "="),
            (MatchType::NotEqual, "!="),
            (MatchType::Regex, "=~"),
            (MatchType::NotRegex, "!~"),
        ] {
            assert_eq!(t.to_string(), s);
            assert_eq!(Matcher::new("a", t, "b").unwrap().op.match_type(), t);
        }
    }
}
