//! A strict reader of Prometheus text exposition.
//!
//! A test that reads a series that is not there fails, naming it: a renamed metric
//! cannot make `== 0` checks pass by accident. Where absence really means zero (a
//! labelled counter has no child until its first increment), the call says so with
//! [`Metrics::get_or_zero`] / [`Metrics::sum_or_zero`].

use std::collections::BTreeMap;
use std::fmt;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp: Option<i64>,
}

impl Sample {
    /// A label's value, "" when absent (Prometheus' reading).
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{", self.name)?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{k}={v:?}")?;
        }
        write!(f, "}} {}", self.value)
    }
}

/// Parses every sample line of text exposition (0.0.4 or OpenMetrics); panics on a
/// malformed line, naming it.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| parse_line(l).unwrap_or_else(|| panic!("malformed exposition line: {l:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let mut parts = rest.split_whitespace();
    let value = parse_value(parts.next()?)?;
    let timestamp = match parts.next() {
        Some(t) => Some(t.parse().ok()?),
        None => None,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp,
    })
}

/// `k="v",...}` with Prometheus' escapes; the labels and what follows `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(tail) = s.strip_prefix('}') {
            return Some((labels, tail));
        }
        let (key, after) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = &after[end + 1..];
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
}

/// `name` or `name{k="v",...}`: the samples of that name whose labels include those.
struct Selector {
    name: String,
    labels: BTreeMap<String, String>,
}

impl Selector {
    fn parse(s: &str) -> Selector {
        match s.split_once('{') {
            None => Selector {
                name: s.to_string(),
                labels: BTreeMap::new(),
            },
            Some((name, rest)) => {
                let (labels, tail) = parse_labels(rest)
                    .unwrap_or_else(|| panic!("bad series selector {s:?}: name{{k=\"v\",...}}"));
                assert!(tail.is_empty(), "bad series selector {s:?}");
                Selector {
                    name: name.to_string(),
                    labels,
                }
            }
        }
    }

    fn matches(&self, s: &Sample) -> bool {
        s.name == self.name
            && self
                .labels
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == v))
    }
}

/// One scrape (or one registry's gather), read strictly.
#[derive(Debug, Clone)]
pub struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses exposition text.
    pub fn parse(text: &str) -> Metrics {
        Metrics {
            samples: parse_samples(text),
        }
    }

    /// What `registry` would serve on `/metrics`.
    pub fn from_registry(registry: &prometheus::Registry) -> Metrics {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("registry encodes as text");
        Metrics::parse(&text)
    }

    /// GETs `url` (e.g. `http://127.0.0.1:PORT/metrics`); panics unless it answers 200.
    pub async fn scrape(url: &str) -> Metrics {
        let r = reqwest::get(url)
            .await
            .unwrap_or_else(|e| panic!("scraping {url}: {e}"));
        assert_eq!(r.status(), 200, "scraping {url}");
        Metrics::parse(&r.text().await.expect("scrape body"))
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The samples `series` selects (`name` or `name{k="v",...}`, a subset of labels).
    pub fn all(&self, series: &str) -> Vec<&Sample> {
        let sel = Selector::parse(series);
        self.samples.iter().filter(|s| sel.matches(s)).collect()
    }

    /// The value of the one sample `series` selects, if there is one; panics if it
    /// selects several.
    pub fn find(&self, series: &str) -> Option<f64> {
        match self.all(series).as_slice() {
            [] => None,
            [one] => Some(one.value),
            many => panic!(
                "{series} selects {} series, expected one (name more labels, or use sum): {}",
                many.len(),
                list(many)
            ),
        }
    }

    /// The value of the one sample `series` selects; panics naming it if it is missing.
    pub fn get(&self, series: &str) -> f64 {
        self.find(series)
            .unwrap_or_else(|| panic!("{}", self.missing(series)))
    }

    /// Like [`Metrics::get`], 0 when the series does not exist (yet): only where absence
    /// is what the test means, e.g. a labelled counter never incremented.
    pub fn get_or_zero(&self, series: &str) -> f64 {
        self.find(series).unwrap_or(0.0)
    }

    /// The sum of the samples `series` selects (e.g. every `reason`); panics naming it
    /// if it selects none.
    pub fn sum(&self, series: &str) -> f64 {
        let all = self.all(series);
        assert!(!all.is_empty(), "{}", self.missing(series));
        all.iter().map(|s| s.value).sum()
    }

    /// Like [`Metrics::sum`], 0 when nothing matches: only where absence is meant.
    pub fn sum_or_zero(&self, series: &str) -> f64 {
        self.all(series).iter().map(|s| s.value).sum()
    }

    /// Whether `series` selects at least one sample.
    pub fn has(&self, series: &str) -> bool {
        !self.all(series).is_empty()
    }

    fn missing(&self, series: &str) -> String {
        let name = Selector::parse(series).name;
        let same_name: Vec<&Sample> = self.samples.iter().filter(|s| s.name == name).collect();
        if same_name.is_empty() {
            format!("series {series} not found: no metric named {name} in the scrape")
        } else {
            format!(
                "series {series} not found; {name} has: {}",
                list(&same_name)
            )
        }
    }
}

fn list(samples: &[&Sample]) -> String {
    samples
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE a counter\na_total 3\nb{reason=\"full\",x=\"q\\\"\"} 2 1700\nb{reason=\"age\"} 1\nc +Inf\n";

    #[test]
    fn selects_by_name_and_label_subset() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.get("a_total"), 3.0);
        assert_eq!(m.get("b{reason=\"full\"}"), 2.0);
        assert_eq!(m.all("b{x=\"q\\\"\"}")[0].timestamp, Some(1700));
        assert_eq!(m.sum("b"), 3.0);
        assert_eq!(m.get("c"), f64::INFINITY);
        assert_eq!(m.get_or_zero("b{reason=\"other\"}"), 0.0);
        assert_eq!(m.sum_or_zero("nothing"), 0.0);
    }

    #[test]
    #[should_panic(expected = "series a_totl not found")]
    fn a_missing_series_is_an_error() {
        Metrics::parse(TEXT).get("a_totl");
    }

    #[test]
    #[should_panic(expected = "b{reason=\"other\"} not found; b has")]
    fn a_missing_label_value_lists_what_exists() {
        Metrics::parse(TEXT).sum("b{reason=\"other\"}");
    }

    #[test]
    #[should_panic(expected = "selects 2 series")]
    fn an_ambiguous_get_is_an_error() {
        Metrics::parse(TEXT).get("b");
    }

    #[test]
    fn reads_a_registry() {
        let reg = prometheus::Registry::new();
        let c = prometheus::IntCounter::new("x_total", "x").unwrap();
        reg.register(Box::new(c.clone())).unwrap();
        c.inc_by(5);
        assert_eq!(Metrics::from_registry(&reg).get("x_total"), 5.0);
    }
}
