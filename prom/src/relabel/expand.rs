//! Go's `Regexp.Expand` template syntax, which differs from `regex`'s
//! `Captures::expand`: a reference name takes every following letter, digit
//! and `_` (`$1x` is the group named `1x`, which expands to nothing), and a
//! number with a leading zero is a name, not an index.

use regex::Captures;

/// Appends `template` to `out` with `$$`, `$name`, `${name}`, `$1`, `${1}`
/// replaced from `caps`; a malformed reference is kept as text.
pub(super) fn go_expand(out: &mut String, mut template: &str, caps: &Captures<'_>) {
    while let Some(dollar) = template.find('$') {
        out.push_str(&template[..dollar]);
        template = &template[dollar + 1..];
        if let Some(rest) = template.strip_prefix('$') {
            out.push('$');
            template = rest;
            continue;
        }
        let Some((name, rest)) = reference(template) else {
            out.push('$');
            continue;
        };
        template = rest;
        let group = match group_index(name) {
            Some(i) => caps.get(i),
            None => caps.name(name),
        };
        if let Some(m) = group {
            out.push_str(m.as_str());
        }
    }
    out.push_str(template);
}

/// The name after a `$` (braced or not) and the text after it.
fn reference(s: &str) -> Option<(&str, &str)> {
    let (body, braced) = match s.strip_prefix('{') {
        Some(b) => (b, true),
        None => (s, false),
    };
    let len = body
        .char_indices()
        .find(|&(_, c)| !(c.is_alphabetic() || c.is_numeric() || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if len == 0 {
        return None;
    }
    let (name, rest) = body.split_at(len);
    if !braced {
        return Some((name, rest));
    }
    rest.strip_prefix('}').map(|rest| (name, rest))
}

/// A group number as Go reads it: ASCII digits without a leading zero. (Go
/// also reads ten or more digits as a name; no group has either.)
fn group_index(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit()) || (name.len() > 1 && name.starts_with('0')) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn expand(re: &str, input: &str, template: &str) -> String {
        let re = Regex::new(re).unwrap();
        let caps = re.captures(input).unwrap();
        let mut out = String::new();
        go_expand(&mut out, template, &caps);
        out
    }

    #[test]
    fn go_template_forms() {
        let re = "(?P<first>a+)(b+)(?P<x1>c*)";
        let cases = [
            ("$1", "aa"),
            ("${1}", "aa"),
            ("$2", "bb"),
            ("${2}x", "bbx"),
            ("$2x", ""),
            ("$first-$2", "aa-bb"),
            ("${first}_$x1", "aa_cc"),
            ("$9", ""),
            ("$01", ""),
            ("$0", "aabbcc"),
            ("$$1", "$1"),
            ("$", "$"),
            ("a$-b", "a$-b"),
            ("${1", "${1"),
            ("${}", "${}"),
            ("${first}}", "aa}"),
            ("no refs", "no refs"),
            ("$x1$1", "ccaa"),
        ];
        for (template, want) in cases {
            assert_eq!(
                expand(re, "aabbcc", template),
                want,
                "template {template:?}"
            );
        }
    }

    #[test]
    fn index_limits() {
        assert_eq!(group_index("0"), Some(0));
        assert_eq!(group_index("12"), Some(12));
        assert_eq!(group_index("012"), None);
        assert_eq!(group_index("1x"), None);
    }
}
