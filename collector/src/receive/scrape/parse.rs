//! Prometheus text exposition 0.0.4 and OpenMetrics 1.0 parsing.
//!
//! Written by hand on purpose. The maintained crate that covers both formats with
//! histograms and summaries (`openmetrics-parser` 0.5) rejects whole expositions that
//! Prometheus accepts: samples of one family with different label-name sets ("Labels in
//! metrics have different label sets"), consecutive untyped metrics without `# TYPE`
//! lines (its grammar folds them into one family, then fails "Invalid Name in metric
//! family"), and a duplicated series fails the whole document. `prometheus-parse` does
//! not speak OpenMetrics. A scrape must be stored exactly as Prometheus stores it, so this
//! parser follows Prometheus' own line-oriented parsers (model/textparse `promparse.go`,
//! `openmetricsparse.go`): every sample line is a series of its own; `# TYPE`/`# HELP`/
//! `# UNIT` are metadata looked up by family name; a syntax error fails the scrape.

use std::collections::{HashMap, HashSet};

use super::deadline::Expired;
use super::Deadline;
use edgewatch_prom::float::parse_float;
use edgewatch_prom::{valid_label_name, valid_metric_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (and anything that is not OpenMetrics).
    Text,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// From a response's `Content-Type` (Prometheus falls back to the text format).
    pub fn from_content_type(ct: Option<&str>) -> Format {
        match ct {
            Some(ct)
                if ct
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl Kind {
    fn parse(s: &str, format: Format) -> Option<Kind> {
        Some(match (s, format) {
            ("counter", _) => Kind::Counter,
            ("gauge", _) => Kind::Gauge,
            ("histogram", _) => Kind::Histogram,
            ("summary", _) => Kind::Summary,
            ("untyped", Format::Text) | ("unknown", Format::OpenMetrics) => Kind::Unknown,
            ("gaugehistogram", Format::OpenMetrics) => Kind::GaugeHistogram,
            ("info", Format::OpenMetrics) => Kind::Info,
            ("stateset", Format::OpenMetrics) => Kind::StateSet,
            _ => return None,
        })
    }
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written (duplicates are rejected).
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Explicit timestamp in milliseconds.
    pub timestamp_ms: Option<i64>,
}

/// A parsed exposition: samples in order, and the metadata by family name.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, Kind>,
    pub help: HashMap<String, String>,
    pub units: HashMap<String, String>,
    /// Samples dropped for a label name written twice (Prometheus would fail the scrape).
    pub label_clashes: u64,
}

/// Why an exposition is refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    #[source]
    pub kind: LineError,
}

/// What is wrong with one line; sample lines are quoted (truncated) in the
/// message. Built only on the error path: parsing a valid line allocates nothing
/// for errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("content after # EOF")]
    AfterEof,
    #[error("empty line")]
    EmptyLine,
    #[error("missing # EOF")]
    MissingEof,
    #[error("invalid comment")]
    Comment,
    /// The keyword: `TYPE`, `HELP` or `UNIT`.
    #[error("invalid metric name in # {0}")]
    MetadataName(String),
    #[error("invalid metric type {0:?}")]
    MetricType(String),
    #[error("invalid metric name in {0:?}")]
    MetricName(String),
    #[error("invalid label name in {0:?}")]
    LabelName(String),
    #[error("expected '=' after label name in {0:?}")]
    ExpectedEquals(String),
    #[error("expected '\"' in {0:?}")]
    ExpectedQuote(String),
    #[error("unterminated label value in {0:?}")]
    UnterminatedValue(String),
    #[error("invalid escape in label value in {0:?}")]
    InvalidEscape(String),
    #[error("expected ',' or '}}' in {0:?}")]
    ExpectedSeparator(String),
    #[error("expected a value in {0:?}")]
    ExpectedValue(String),
    #[error("invalid value {0:?}")]
    Value(String),
    #[error("invalid timestamp {0:?}")]
    Timestamp(String),
    #[error("unexpected {0:?} after the timestamp")]
    AfterTimestamp(String),
}

/// Why [`parse_within`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseFailure {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    /// More sample lines than `sample_limit`: parsing stops there, so memory is
    /// bounded by the limit rather than by the body.
    #[error("sample_limit exceeded (limit: {limit})")]
    SampleLimit { limit: u64 },
    #[error(transparent)]
    Expired(#[from] Expired),
}

/// Parses a whole exposition.
pub fn parse(text: &str, format: Format) -> Result<Exposition, ParseError> {
    let mut p = Parser::new(format);
    for (line_no, line, last) in lines(text) {
        p.line(line_no, line, last)?;
    }
    p.finish(text)
}

/// [`parse`] that stops at `deadline` (looked at every few lines) and once more than
/// `sample_limit` samples were read (`0`: no limit).
pub fn parse_within(
    text: &str,
    format: Format,
    sample_limit: u64,
    deadline: &Deadline,
) -> Result<Exposition, ParseFailure> {
    let mut p = Parser::new(format);
    let mut ticker = deadline.ticker();
    for (line_no, line, last) in lines(text) {
        ticker.tick()?;
        p.line(line_no, line, last)?;
        if sample_limit > 0 && p.out.samples.len() as u64 > sample_limit {
            return Err(ParseFailure::SampleLimit {
                limit: sample_limit,
            });
        }
    }
    Ok(p.finish(text)?)
}

/// The lines of `text`: 1-based number, the line, and whether it is what follows the
/// final `\n`.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str, bool)> {
    let mut it = text.split('\n').enumerate().peekable();
    std::iter::from_fn(move || {
        let (i, line) = it.next()?;
        Some((i + 1, line, it.peek().is_none()))
    })
}

/// The state of one exposition's parse, fed line by line.
struct Parser {
    format: Format,
    out: Exposition,
    saw_eof: bool,
}

impl Parser {
    fn new(format: Format) -> Self {
        Parser {
            format,
            out: Exposition::default(),
            saw_eof: false,
        }
    }

    fn line(&mut self, line_no: usize, raw: &str, last: bool) -> Result<(), ParseError> {
        let format = self.format;
        let err = |kind: LineError| ParseError {
            line: line_no,
            kind,
        };
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if self.saw_eof {
            if line.is_empty() && last {
                return Ok(());
            }
            return Err(err(LineError::AfterEof));
        }
        if line.trim().is_empty() {
            if format == Format::OpenMetrics && !last {
                return Err(err(LineError::EmptyLine));
            }
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix('#') {
            if format == Format::OpenMetrics && rest == " EOF" {
                self.saw_eof = true;
                return Ok(());
            }
            return self.comment(rest).map_err(err);
        }
        match sample_line(line, format).map_err(err)? {
            Some(s) => self.out.samples.push(s),
            None => self.out.label_clashes += 1,
        }
        Ok(())
    }

    /// A line starting with `#` (after it): metadata, or a comment.
    fn comment(&mut self, rest: &str) -> Result<(), LineError> {
        let format = self.format;
        let rest = rest.trim_start_matches([' ', '\t']);
        let (kw, rest) = split_word(rest);
        match kw {
            "TYPE" | "HELP" | "UNIT" => {
                let (name, rest) = split_word(rest.trim_start_matches([' ', '\t']));
                if name.is_empty() || !valid_metric_name(name) {
                    if format == Format::OpenMetrics {
                        return Err(LineError::MetadataName(kw.to_string()));
                    }
                    return Ok(()); // promparse: an unparsable comment is a comment
                }
                let value = rest.strip_prefix([' ', '\t']).unwrap_or(rest);
                match kw {
                    "TYPE" => {
                        let t = Kind::parse(value.trim(), format)
                            .ok_or_else(|| LineError::MetricType(value.trim().to_string()))?;
                        self.out.types.insert(name.to_string(), t);
                    }
                    "HELP" => {
                        self.out.help.insert(name.to_string(), unescape_help(value));
                    }
                    _ if format == Format::OpenMetrics => {
                        self.out
                            .units
                            .insert(name.to_string(), value.trim().to_string());
                    }
                    _ => {}
                }
                Ok(())
            }
            _ if format == Format::OpenMetrics => Err(LineError::Comment),
            _ => Ok(()),
        }
    }

    fn finish(self, text: &str) -> Result<Exposition, ParseError> {
        if self.format == Format::OpenMetrics && !self.saw_eof {
            return Err(ParseError {
                line: text.lines().count(),
                kind: LineError::MissingEof,
            });
        }
        Ok(self.out)
    }
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `Ok(None)`: a label name written twice (dropped and counted by the caller).
fn sample_line(line: &str, format: Format) -> Result<Option<Sample>, LineError> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    let name = &line[..i];
    if !valid_metric_name(name) {
        return Err(LineError::MetricName(quoted(line)));
    }
    if format == Format::Text {
        let mut j = i;
        skip_ws(b, &mut j);
        if b.get(j) == Some(&b'{') {
            i = j;
        }
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut clash = false;
    if i < b.len() && b[i] == b'{' {
        i += 1;
        clash = label_set(line, &mut i, &mut labels)?;
    }
    let (value, timestamp_ms) = value_and_timestamp(line, &line[i..], format)?;
    if clash {
        return Ok(None);
    }
    Ok(Some(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    }))
}

fn skip_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
        *i += 1;
    }
}

/// Up to this many labels, a repeated name is found by scanning the ones before it
/// (cheaper than hashing); past it, by a set.
const SCAN_LABELS: usize = 16;

/// The label names of one sample so far, to find one written twice: a scan of a few
/// on the stack, a set once there are more (a scan per label would make a long label
/// set quadratic).
#[derive(Default)]
struct Names<'a> {
    few: [&'a str; SCAN_LABELS],
    n: usize,
    many: Option<HashSet<&'a str>>,
}

impl<'a> Names<'a> {
    /// Whether `name` was not there yet.
    fn insert(&mut self, name: &'a str) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(name);
        }
        if self.few[..self.n].contains(&name) {
            return false;
        }
        if self.n < SCAN_LABELS {
            self.few[self.n] = name;
            self.n += 1;
        } else {
            let mut set: HashSet<&str> = self.few.iter().copied().collect();
            set.insert(name);
            self.many = Some(set);
        }
        true
    }
}

/// The labels after a `{`, up to and including the `}`; `*i` ends past it.
/// Returns whether a label name is written twice (or is `__name__`).
fn label_set(
    line: &str,
    i: &mut usize,
    labels: &mut Vec<(String, String)>,
) -> Result<bool, LineError> {
    let b = line.as_bytes();
    let mut clash = false;
    let mut names = Names::default();
    loop {
        skip_ws(b, i);
        if *i < b.len() && b[*i] == b'}' {
            *i += 1;
            return Ok(clash);
        }
        let start = *i;
        while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b[*i] == b'_') {
            *i += 1;
        }
        let lname = &line[start..*i];
        if !valid_label_name(lname) {
            return Err(LineError::LabelName(quoted(line)));
        }
        skip_ws(b, i);
        if *i >= b.len() || b[*i] != b'=' {
            return Err(LineError::ExpectedEquals(quoted(line)));
        }
        *i += 1;
        skip_ws(b, i);
        if *i >= b.len() || b[*i] != b'"' {
            return Err(LineError::ExpectedQuote(quoted(line)));
        }
        *i += 1;
        let value = label_value(line, i)?;
        if lname == "__name__" || !names.insert(lname) {
            clash = true;
        }
        labels.push((lname.to_string(), value));
        skip_ws(b, i);
        match b.get(*i) {
            Some(b',') => *i += 1,
            Some(b'}') => {
                *i += 1;
                return Ok(clash);
            }
            _ => return Err(LineError::ExpectedSeparator(quoted(line))),
        }
    }
}

/// A label value after its opening quote, unescaped; `*i` ends past the closing
/// quote.
fn label_value(line: &str, i: &mut usize) -> Result<String, LineError> {
    let b = line.as_bytes();
    let mut value = String::new();
    loop {
        let Some(&c) = b.get(*i) else {
            return Err(LineError::UnterminatedValue(quoted(line)));
        };
        match c {
            b'"' => {
                *i += 1;
                return Ok(value);
            }
            b'\\' => {
                match b.get(*i + 1) {
                    Some(b'n') => value.push('\n'),
                    Some(b'\\') => value.push('\\'),
                    Some(b'"') => value.push('"'),
                    _ => return Err(LineError::InvalidEscape(quoted(line))),
                }
                *i += 2;
            }
            _ => {
                // Copy one UTF-8 character.
                let ch = line[*i..].chars().next().expect("in bounds");
                value.push(ch);
                *i += ch.len_utf8();
            }
        }
    }
}

/// The value, optional timestamp and (OpenMetrics) optional exemplar that
/// follow the name and labels.
fn value_and_timestamp(
    line: &str,
    rest: &str,
    format: Format,
) -> Result<(f64, Option<i64>), LineError> {
    if !rest.starts_with([' ', '\t']) {
        return Err(LineError::ExpectedValue(quoted(line)));
    }
    let rest = match (format, rest.find(" # ")) {
        (Format::OpenMetrics, Some(p)) => &rest[..p],
        _ => rest,
    };
    let mut parts = rest.split([' ', '\t']).filter(|p| !p.is_empty());
    let value = parts
        .next()
        .ok_or_else(|| LineError::ExpectedValue(quoted(line)))?;
    let value = parse_float(value).ok_or_else(|| LineError::Value(value.to_string()))?;
    let timestamp_ms = match parts.next() {
        None => None,
        Some(t) => Some(match format {
            Format::Text => t
                .parse::<i64>()
                .map_err(|_| LineError::Timestamp(t.to_string()))?,
            Format::OpenMetrics => {
                let s: f64 = parse_float(t)
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| LineError::Timestamp(t.to_string()))?;
                (s * 1000.0).round() as i64
            }
        }),
    };
    if let Some(extra) = parts.next() {
        return Err(LineError::AfterTimestamp(extra.to_string()));
    }
    Ok((value, timestamp_ms))
}

/// The line as error messages quote it.
fn quoted(line: &str) -> String {
    truncate(line).to_string()
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let t = "# HELP a_total Total \\n as.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3 1700000000000\n\nb 4.5\nc{} NaN\nd { x = \"y\" , } +Inf\n# some comment\n";
        let e = parse(t, Format::Text).unwrap();
        assert_eq!(e.types["a_total"], Kind::Counter);
        assert_eq!(e.help["a_total"], "Total \n as.");
        assert_eq!(e.samples.len(), 4);
        assert_eq!(
            e.samples[0].labels,
            vec![("x".into(), "1".into()), ("y".into(), "q\"\\\n".into())]
        );
        assert_eq!(e.samples[0].timestamp_ms, Some(1_700_000_000_000));
        assert!(e.samples[2].value.is_nan());
        assert_eq!(e.samples[3].value, f64::INFINITY);
        assert_eq!(e.samples[3].labels, vec![("x".into(), "y".into())]);
    }

    #[test]
    fn openmetrics_format() {
        let t = "# TYPE a counter\n# UNIT a seconds\na_total{x=\"1\"} 3 1700000000.5 # {trace_id=\"abc\"} 1.0 1700000000.1\na_created{x=\"1\"} 1600000000\n# EOF\n";
        let e = parse(t, Format::OpenMetrics).unwrap();
        assert_eq!(e.types["a"], Kind::Counter);
        assert_eq!(e.units["a"], "seconds");
        assert_eq!(e.samples.len(), 2);
        assert_eq!(e.samples[0].timestamp_ms, Some(1_700_000_000_500));
        assert!(parse("a 1\n", Format::OpenMetrics).is_err(), "missing EOF");
        assert!(parse("a 1\n# EOF\nb 2\n", Format::OpenMetrics).is_err());
    }

    #[test]
    fn errors_and_clashes() {
        for bad in [
            "a{x=\"1\" 1\n",
            "a{x=1} 1\n",
            "a\n",
            "a 1 2 3\n",
            "1a 1\n",
            "a{x=\"\\q\"} 1\n",
            "a x\n",
            "# TYPE a nonsense\n",
        ] {
            assert!(parse(bad, Format::Text).is_err(), "{bad:?}");
        }
        let e = parse("a{x=\"1\",x=\"2\"} 1\nb 2\n", Format::Text).unwrap();
        assert_eq!(e.label_clashes, 1);
        assert_eq!(e.samples.len(), 1);
    }

    /// Around the switch from scanning to a set, and far past it: a name written
    /// twice anywhere in the set is a clash; distinct names never are.
    #[test]
    fn a_name_repeated_in_a_long_label_set_is_a_clash() {
        let line = |n: usize, repeat: Option<usize>| {
            let mut labels: Vec<String> = (0..n).map(|i| format!("l{i}=\"v\"")).collect();
            if let Some(i) = repeat {
                labels.push(format!("l{i}=\"w\""));
            }
            format!("m{{{}}} 1\n", labels.join(","))
        };
        for n in [1, 15, 16, 17, 40, 1000] {
            let e = parse(&line(n, None), Format::Text).unwrap();
            assert_eq!((e.samples.len(), e.label_clashes), (1, 0), "{n} distinct");
            assert_eq!(e.samples[0].labels.len(), n);
            for i in [0, n / 2, n - 1] {
                let e = parse(&line(n, Some(i)), Format::Text).unwrap();
                assert_eq!(
                    (e.samples.len(), e.label_clashes),
                    (0, 1),
                    "{n}, l{i} again"
                );
            }
        }
    }

    #[test]
    fn parse_within_stops_past_the_sample_limit_and_at_the_deadline() {
        let text = "a 1\nb 2\nc 3\n";
        let none = Deadline::none();
        assert_eq!(
            parse_within(text, Format::Text, 3, &none)
                .unwrap()
                .samples
                .len(),
            3
        );
        assert_eq!(
            parse_within(text, Format::Text, 2, &none).unwrap_err(),
            ParseFailure::SampleLimit { limit: 2 }
        );
        assert_eq!(
            parse_within(text, Format::Text, 0, &none)
                .unwrap()
                .samples
                .len(),
            3
        );
        let big = "x 1\n".repeat(100_000);
        let past = Deadline::at(std::time::Instant::now());
        assert_eq!(
            parse_within(&big, Format::Text, 0, &past).unwrap_err(),
            ParseFailure::Expired(Expired)
        );
        let cancelled = Deadline::none();
        cancelled.cancel();
        assert!(parse_within(&big, Format::Text, 0, &cancelled).is_err());
        // An invalid line is reported as by `parse`.
        assert_eq!(
            parse_within("1a 1\n", Format::Text, 0, &none).unwrap_err(),
            ParseFailure::Invalid(parse("1a 1\n", Format::Text).unwrap_err())
        );
    }

    /// The messages that reach scrape logs, pinned byte for byte.
    #[test]
    fn error_messages() {
        for (text, format, want) in [
            (
                "a 1\n# EOF\nb 2\n",
                Format::OpenMetrics,
                "line 3: content after # EOF",
            ),
            (
                "a 1\n\nb 2\n# EOF\n",
                Format::OpenMetrics,
                "line 2: empty line",
            ),
            ("a 1\n", Format::OpenMetrics, "line 1: missing # EOF"),
            (
                "# foo\n# EOF\n",
                Format::OpenMetrics,
                "line 1: invalid comment",
            ),
            (
                "# TYPE 1a counter\n# EOF\n",
                Format::OpenMetrics,
                "line 1: invalid metric name in # TYPE",
            ),
            (
                "# TYPE a nonsense\n",
                Format::Text,
                "line 1: invalid metric type \"nonsense\"",
            ),
            (
                "1a 1\n",
                Format::Text,
                "line 1: invalid metric name in \"1a 1\"",
            ),
            (
                "a{1x=\"1\"} 1\n",
                Format::Text,
                "line 1: invalid label name in \"a{1x=\\\"1\\\"} 1\"",
            ),
            (
                "a{x \"1\"} 1\n",
                Format::Text,
                "line 1: expected '=' after label name in \"a{x \\\"1\\\"} 1\"",
            ),
            (
                "a{x=1} 1\n",
                Format::Text,
                "line 1: expected '\"' in \"a{x=1} 1\"",
            ),
            (
                "a{x=\"1} 1\n",
                Format::Text,
                "line 1: unterminated label value in \"a{x=\\\"1} 1\"",
            ),
            (
                "a{x=\"\\q\"} 1\n",
                Format::Text,
                "line 1: invalid escape in label value in \"a{x=\\\"\\\\q\\\"} 1\"",
            ),
            (
                "a{x=\"1\" 1\n",
                Format::Text,
                "line 1: expected ',' or '}' in \"a{x=\\\"1\\\" 1\"",
            ),
            ("a\n", Format::Text, "line 1: expected a value in \"a\""),
            ("a x\n", Format::Text, "line 1: invalid value \"x\""),
            ("a 1 x\n", Format::Text, "line 1: invalid timestamp \"x\""),
            (
                "a 1 x # EOF\n",
                Format::OpenMetrics,
                "line 1: invalid timestamp \"x\"",
            ),
            (
                "a 1 2 3\n",
                Format::Text,
                "line 1: unexpected \"3\" after the timestamp",
            ),
        ] {
            assert_eq!(
                parse(text, format).unwrap_err().to_string(),
                want,
                "{text:?}"
            );
        }
    }
}
