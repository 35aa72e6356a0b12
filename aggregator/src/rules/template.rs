//! The subset of Prometheus' alert templating (Go `text/template`) that rule
//! labels and annotations use: `{{ $labels.name }}`, `{{ .Labels.name }}`,
//! `{{ index $labels "name" }}`, `{{ $value }}`, `{{ .Value }}`,
//! `{{ $externalLabels.name }}`, `{{ $externalURL }}`, with the pipes
//! `humanize`, `humanizePercentage`, `humanizeDuration`, `printf "%.Nf"`, and
//! `{{/* comments */}}`. Anything else is rejected when the rule file loads.

use std::collections::BTreeMap;

use edgewatch_prom::float::{format_g, go_exponent};

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Label(String),
    Value,
    ExternalLabel(String),
    ExternalUrl,
}

#[derive(Debug, Clone, PartialEq)]
enum Pipe {
    Humanize,
    HumanizePercentage,
    HumanizeDuration,
    Printf(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action(Source, Vec<Pipe>),
}

/// Why a template is refused when its rule file loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {template:?}: unclosed action")]
    Unclosed { template: String },
    #[error("template {template:?}: {source}")]
    Action {
        template: String,
        #[source]
        source: ActionError,
    },
}

/// Why one `{{ ... }}` action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("unsupported template action {0:?}")]
    UnsupportedAction(String),
    #[error("unsupported template function {0:?}")]
    UnsupportedFunction(String),
    #[error("unterminated quoted string in {0:?}")]
    UnterminatedQuote(String),
    #[error("empty template action")]
    Empty,
    #[error("expected a quoted string, got {0:?}")]
    NotQuoted(String),
    #[error("unsupported printf format {0:?} (one of %s %v %d %f %.Nf %g %e)")]
    Printf(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    raw: String,
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let j = after.find("}}").ok_or_else(|| TemplateError::Unclosed {
                template: s.to_string(),
            })?;
            let mut action = &after[..j];
            rest = &after[j + 2..];
            // Trim markers `{{-` and `-}}`.
            if let Some(a) = action.strip_prefix('-') {
                action = a;
                if let Some(Part::Text(t)) = parts.last_mut() {
                    *t = t.trim_end().to_string();
                }
            }
            let trim_after = action.ends_with('-') && action.len() > 1;
            if trim_after {
                action = &action[..action.len() - 1];
            }
            if trim_after {
                rest = rest.trim_start();
            }
            let action = action.trim();
            if action.starts_with("/*") && action.ends_with("*/") {
                continue;
            }
            parts.push(
                parse_action(action).map_err(|source| TemplateError::Action {
                    template: s.to_string(),
                    source,
                })?,
            );
        }
        // A stray "}}" is plain text, as in Go templates.
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            raw: s.to_string(),
            parts,
        })
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Expands with the alert's labels and value (no external labels or URL).
    pub fn expand(&self, labels: &BTreeMap<String, String>, value: f64) -> String {
        self.expand_with(labels, value, &Externals::default())
    }

    /// Expands with the alert's labels and value, and what `$externalLabels`
    /// and `$externalURL` stand for.
    pub fn expand_with(
        &self,
        labels: &BTreeMap<String, String>,
        value: f64,
        externals: &Externals,
    ) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(src, pipes) => {
                    let mut cur = match src {
                        Source::Label(l) => Cur::Str(labels.get(l).cloned().unwrap_or_default()),
                        Source::Value => Cur::Num(value),
                        Source::ExternalLabel(l) => {
                            Cur::Str(externals.labels.get(l).cloned().unwrap_or_default())
                        }
                        Source::ExternalUrl => Cur::Str(externals.url.clone()),
                    };
                    for p in pipes {
                        cur = Cur::Str(apply(p, &cur));
                    }
                    match cur {
                        Cur::Str(s) => out.push_str(&s),
                        Cur::Num(v) => out.push_str(&format_g(v)),
                    }
                }
            }
        }
        out
    }
}

/// Prometheus' `global.external_labels` and `--web.external-url`, as
/// templates see them (`edgewatch test rules` sets them per test group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Externals {
    pub labels: BTreeMap<String, String>,
    pub url: String,
}

enum Cur {
    Str(String),
    Num(f64),
}

fn num_of(c: &Cur) -> f64 {
    match c {
        Cur::Num(v) => *v,
        Cur::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
    }
}

fn apply(p: &Pipe, c: &Cur) -> String {
    match p {
        Pipe::Humanize => humanize(num_of(c)),
        Pipe::HumanizePercentage => format!("{}%", fmt_4g(num_of(c) * 100.0)),
        Pipe::HumanizeDuration => humanize_duration(num_of(c)),
        Pipe::Printf(f) => printf(f, c),
    }
}

fn parse_source(tok: &str) -> Result<Source, ActionError> {
    if tok == "$value" || tok == ".Value" {
        return Ok(Source::Value);
    }
    if tok == "$externalURL" || tok == ".ExternalURL" {
        return Ok(Source::ExternalUrl);
    }
    let name = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    for pre in ["$labels.", ".Labels."] {
        if let Some(l) = tok.strip_prefix(pre).filter(|l| name(l)) {
            return Ok(Source::Label(l.to_string()));
        }
    }
    for pre in ["$externalLabels.", ".ExternalLabels."] {
        if let Some(l) = tok.strip_prefix(pre).filter(|l| name(l)) {
            return Ok(Source::ExternalLabel(l.to_string()));
        }
    }
    Err(ActionError::UnsupportedAction(tok.to_string()))
}

fn parse_action(action: &str) -> Result<Part, ActionError> {
    let mut segs = action.split('|').map(str::trim);
    let first = segs.next().unwrap_or_default();
    let words = split_words(first)?;
    let src = match words.as_slice() {
        [one] => parse_source(one)?,
        [f, m, key] if f == "index" && (m == "$labels" || m == ".Labels") => {
            Source::Label(unquote(key)?)
        }
        [f, m, key] if f == "index" && (m == "$externalLabels" || m == ".ExternalLabels") => {
            Source::ExternalLabel(unquote(key)?)
        }
        [f, fmt, arg] if f == "printf" => {
            let src = parse_source(arg)?;
            return Ok(Part::Action(
                src,
                vec![Pipe::Printf(check_printf(&unquote(fmt)?)?)],
            ))
            .and_then(|p| with_pipes(p, segs));
        }
        _ => return Err(ActionError::UnsupportedAction(first.to_string())),
    };
    with_pipes(Part::Action(src, Vec::new()), segs)
}

fn with_pipes<'a>(mut p: Part, segs: impl Iterator<Item = &'a str>) -> Result<Part, ActionError> {
    for seg in segs {
        let words = split_words(seg)?;
        let pipe = match words.as_slice() {
            [w] if w == "humanize" => Pipe::Humanize,
            [w] if w == "humanizePercentage" => Pipe::HumanizePercentage,
            [w] if w == "humanizeDuration" => Pipe::HumanizeDuration,
            [w, f] if w == "printf" => Pipe::Printf(check_printf(&unquote(f)?)?),
            _ => return Err(ActionError::UnsupportedFunction(seg.to_string())),
        };
        if let Part::Action(_, pipes) = &mut p {
            pipes.push(pipe);
        }
    }
    Ok(p)
}

fn split_words(s: &str) -> Result<Vec<String>, ActionError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    for c in s.chars() {
        match c {
            '"' => {
                cur.push(c);
                in_q = !in_q;
            }
            c if c.is_whitespace() && !in_q => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if in_q {
        return Err(ActionError::UnterminatedQuote(s.to_string()));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    if out.is_empty() {
        return Err(ActionError::Empty);
    }
    Ok(out)
}

fn unquote(s: &str) -> Result<String, ActionError> {
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .map(str::to_string)
        .ok_or_else(|| ActionError::NotQuoted(s.to_string()))
}

/// Accepts one verb: `%s`, `%v`, `%d`, `%f`, `%.Nf`, `%g`, `%e`.
fn check_printf(f: &str) -> Result<String, ActionError> {
    let verbs: Vec<usize> = f.match_indices('%').map(|(i, _)| i).collect();
    let real: Vec<&usize> = verbs
        .iter()
        .filter(|&&i| !f[i..].starts_with("%%"))
        .collect();
    if real.len() != 1 || parse_verb(&f[*real[0]..]).is_none() {
        return Err(ActionError::Printf(f.to_string()));
    }
    Ok(f.to_string())
}

fn parse_verb(s: &str) -> Option<(usize, Option<usize>, char)> {
    // s starts with '%'; returns (length, precision, verb)
    let b = s.as_bytes();
    let mut i = 1;
    let mut prec = None;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        prec = Some(s[st..i].parse().ok()?);
    }
    let v = *b.get(i)? as char;
    matches!(v, 's' | 'v' | 'd' | 'f' | 'g' | 'e').then_some((i + 1, prec, v))
}

fn printf(f: &str, c: &Cur) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < f.len() {
        let rest = &f[i..];
        if rest.starts_with("%%") {
            out.push('%');
            i += 2;
        } else if rest.starts_with('%') {
            if let Some((len, prec, v)) = parse_verb(rest) {
                out.push_str(&match (v, c) {
                    ('s' | 'v', Cur::Str(s)) => s.clone(),
                    ('s' | 'v', Cur::Num(n)) => format_g(*n),
                    ('d', _) => format!("{}", num_of(c) as i64),
                    ('f', _) => format!("{:.*}", prec.unwrap_or(6), num_of(c)),
                    ('e', _) => go_exp(num_of(c), prec.unwrap_or(6)),
                    _ => format_g(num_of(c)),
                });
                i += len;
            } else {
                out.push('%');
                i += 1;
            }
        } else {
            let ch = rest.chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn go_exp(v: f64, prec: usize) -> String {
    let s = format!("{v:.prec$e}");
    go_exponent(&s)
}

/// `%.4g` as Go prints it.
fn fmt_4g(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format_g(v);
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..4).contains(&exp) {
        let s = format!("{v:.3e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = trim_zeros(m);
        return go_exponent(&format!("{m}e{e}"));
    }
    let decimals = (3 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Prometheus' `humanize`: SI prefixes, `%.4g`.
fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return fmt_4g(v);
    }
    if v.abs() >= 1.0 {
        let mut v = v;
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", fmt_4g(v));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}", fmt_4g(v))
}

/// Prometheus' `humanizeDuration`.
fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return fmt_4g(v);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let secs = v as i64;
        let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let ms = ((v - secs as f64) * 1000.0) as i64;
        if d != 0 {
            return format!("{sign}{d}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}.{ms:03}s", s);
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", fmt_4g(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        [("node", "n1"), ("cluster", "edge-a")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_external_labels_and_url() {
        let ext = Externals {
            labels: [("env".to_string(), "prod".to_string())].into(),
            url: "http://prom:9090".to_string(),
        };
        let t = Template::parse(
            r#"{{ $externalURL }}/x {{ $externalLabels.env }} {{ index .ExternalLabels "env" }} {{ .ExternalURL }} [{{ $externalLabels.dc }}]"#,
        )
        .unwrap();
        assert_eq!(
            t.expand_with(&labels(), 1.0, &ext),
            "http://prom:9090/x prod prod http://prom:9090 []"
        );
        assert_eq!(t.expand(&labels(), 1.0), "/x    []");
    }

    #[test]
    fn expands() {
        let t = Template::parse("{{ $labels.node }} in {{.Labels.cluster}}: {{ $value }}").unwrap();
        assert_eq!(t.expand(&labels(), 2.5), "n1 in edge-a: 2.5");
        let t = Template::parse(r#"{{ index $labels "node" }} {{ $value | humanize }}"#).unwrap();
        assert_eq!(t.expand(&labels(), 1234567.0), "n1 1.235M");
        let t = Template::parse(r#"{{ printf "%.2f" $value }}s {{ $value | humanizePercentage }}"#)
            .unwrap();
        assert_eq!(t.expand(&labels(), 0.12345), "0.12s 12.35%");
        let t = Template::parse("{{ $value | humanizeDuration }}").unwrap();
        assert_eq!(t.expand(&labels(), 3725.0), "1h 2m 5s");
        assert_eq!(t.expand(&labels(), 0.25), "250ms");
        let t = Template::parse("{{/* c */}}x{{ $labels.missing }}y").unwrap();
        assert_eq!(t.expand(&labels(), 1.0), "xy");
    }

    #[test]
    fn rejects() {
        for bad in [
            "{{ $labels.node ",
            "{{ .Foo }}",
            "{{ $value | toUpper }}",
            "{{ range $labels }}",
            r#"{{ printf "%s %s" $value }}"#,
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let e = Template::parse("x {{ $value | toUpper }}").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"template "x {{ $value | toUpper }}": unsupported template function "toUpper""#
        );
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some(r#"unsupported template function "toUpper""#)
        );
    }
}
