//! A relabel regex: compiled anchored, plus a plain-string matcher for the
//! shapes most rules use (`up|node_.*`, `tmp_.*`, the default `(.*)`), which
//! tests a name in a few nanoseconds where the regex engine takes tens.

use regex::{Captures, Regex};

use super::RelabelConfigError;

#[derive(Debug, Clone)]
pub(super) struct Pattern {
    regex: Regex,
    /// Set when the pattern is an alternation of literals, each maybe
    /// followed by `.*`: matching is then string comparison.
    plain: Option<Box<[Alternative]>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Alternative {
    Exact(String),
    /// The literal followed by `.*`, which with `(?s)` matches anything.
    Prefix(String),
}

impl Pattern {
    /// Anchored at both ends with `.` matching newlines, as Prometheus 3
    /// compiles it.
    pub(super) fn new(pattern: &str) -> Result<Pattern, RelabelConfigError> {
        let regex = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
            RelabelConfigError::Regex {
                pattern: pattern.to_owned(),
                // The error of the pattern as written points into the user's
                // text; the anchored one's only if that one compiles (a size limit).
                reason: Regex::new(pattern).err().unwrap_or(e).to_string(),
            }
        })?;
        Ok(Pattern {
            regex,
            plain: plain(pattern),
        })
    }

    pub(super) fn is_match(&self, s: &str) -> bool {
        match &self.plain {
            Some(alternatives) => alternatives.iter().any(|a| match a {
                Alternative::Exact(lit) => s == lit,
                Alternative::Prefix(lit) => s.starts_with(lit.as_str()),
            }),
            None => self.regex.is_match(s),
        }
    }

    /// The capture groups of a whole-string match.
    pub(super) fn captures<'h>(&self, s: &'h str) -> Option<Captures<'h>> {
        // `captures` allocates its slots even when nothing matches; a
        // non-match, the common case on a hot path, must not.
        if !self.is_match(s) {
            return None;
        }
        self.regex.captures(s)
    }

    #[cfg(test)]
    pub(super) fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

/// The alternatives of `pattern` if each is a literal of characters no regex
/// treats specially, optionally followed by `.*`; `(.*)` is `.*`.
fn plain(pattern: &str) -> Option<Box<[Alternative]>> {
    let pattern = if pattern == "(.*)" { ".*" } else { pattern };
    pattern
        .split('|')
        .map(|alt| {
            let (lit, prefix) = match alt.strip_suffix(".*") {
                Some(lit) => (lit, true),
                None => (alt, false),
            };
            let literal = lit.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'_' | b':' | b'-' | b'/' | b'=' | b',' | b';' | b'@' | b'%'
                    )
            });
            match (literal, prefix) {
                (false, _) => None,
                (true, true) => Some(Alternative::Prefix(lit.to_owned())),
                (true, false) => Some(Alternative::Exact(lit.to_owned())),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_shapes() {
        use Alternative::*;
        let p = |s: &str| plain(s).map(Vec::from);
        assert_eq!(p("(.*)"), Some(vec![Prefix("".into())]));
        assert_eq!(p(".*"), Some(vec![Prefix("".into())]));
        assert_eq!(p(""), Some(vec![Exact("".into())]));
        assert_eq!(
            p("up|node_.*|a-b:c"),
            Some(vec![
                Exact("up".into()),
                Prefix("node_".into()),
                Exact("a-b:c".into())
            ])
        );
        for regex in [
            "a.b", "a+", "(a)", "a|b.+", "a\\.b", "(?i)up", "a.*b", "[ab]", "a b", "^a", "a$",
        ] {
            assert_eq!(p(regex), None, "{regex}");
        }
    }

    /// The string matcher agrees with the regex wherever it is used.
    #[test]
    fn plain_matches_like_the_regex() {
        let patterns = [
            "(.*)",
            ".*",
            "",
            "up",
            "up|node_.*",
            "tmp_.*",
            "a|b|",
            "x;y.*|-",
            "a.b",
            "a|.*",
        ];
        let inputs = [
            "", "up", "upx", "node_", "node_cpu", "xnode_", "tmp_a", "tmp", "a", "b", "x;y",
            "x;yz\nq", "-", "a.b", "axb", "é",
        ];
        for pattern in patterns {
            let p = Pattern::new(pattern).unwrap();
            for input in inputs {
                assert_eq!(
                    p.is_match(input),
                    p.regex.is_match(input),
                    "{pattern:?} on {input:?}"
                );
            }
        }
    }
}
