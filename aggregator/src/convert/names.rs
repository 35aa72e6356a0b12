//! Metric and label name translation, following the OTel specification
//! (compatibility/prometheus_and_openmetrics.md, "Metric Metadata" and
//! "Metric Attributes") and the behaviour of the Prometheus/OTel Collector
//! translator (prometheus/otlptranslator, formerly
//! opentelemetry-collector-contrib pkg/translator/prometheus).

/// How a metric is exposed, as far as naming cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A monotonic sum → counter (gets `_total`).
    Counter,
    /// An OTLP Gauge (unit `1` gets `_ratio`).
    Gauge,
    /// Non-monotonic sums, histograms, summaries: unit suffix only.
    Other,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Splits on every run of characters that are not `[a-zA-Z0-9:]` — this
/// replaces invalid characters by `_` and collapses repeated `_` at once.
fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !is_name_char(c))
        .filter(|t| !t.is_empty())
}

/// UCUM unit → Prometheus unit word.
fn main_unit(u: &str) -> &str {
    match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

/// UCUM "per" unit → singular word.
fn per_unit(u: &str) -> &str {
    match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// The (main, per) unit words of a UCUM unit, already sanitised; `{...}`
/// annotations drop the part that holds them.
pub fn unit_words(unit: &str) -> (String, String) {
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (unit.trim(), None),
    };
    let clean = |s: &str| tokens(s).collect::<Vec<_>>().join("_");
    let main = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean(main_unit(main))
    };
    let per = match per {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => clean(per_unit(p)),
        _ => String::new(),
    };
    (main, per)
}

/// Normalises an OTLP metric name for Prometheus, adding unit and type
/// suffixes (never twice). Returns `None` when nothing valid is left.
///
/// `http.server.duration` + `s` → `http_server_duration_seconds`;
/// `requests` counter → `requests_total`; `cpu.utilization` gauge + `1` →
/// `cpu_utilization_ratio`; `speed` + `m/s` → `speed_meters_per_second`.
pub fn metric_name(name: &str, unit: &str, kind: NameKind) -> Option<String> {
    let mut toks: Vec<&str> = tokens(name).collect();
    let (main, per) = unit_words(unit);
    let per_tok = if per.is_empty() {
        String::new()
    } else {
        format!("per_{per}")
    };
    // A suffix is not added when the name already carries it.
    let has = |toks: &[&str], s: &str| -> bool {
        if s.is_empty() {
            return true;
        }
        // a contiguous run of tokens equal to `s` anywhere in the name
        let want: Vec<&str> = s.split('_').collect();
        toks.windows(want.len()).any(|w| w == want.as_slice())
    };
    let add_main = !has(&toks, &main);
    let add_per = !has(&toks, &per_tok);
    let mut owned: Vec<String> = Vec::new();
    if add_main {
        owned.push(main);
    }
    if add_per {
        owned.push(per_tok);
    }
    for o in &owned {
        toks.push(o);
    }
    if kind == NameKind::Counter {
        toks.retain(|t| *t != "total");
        toks.push("total");
    }
    if unit == "1" && kind == NameKind::Gauge {
        toks.retain(|t| *t != "ratio");
        toks.push("ratio");
    }
    let mut out = toks.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.is_empty() || out.chars().all(|c| c == '_') {
        None
    } else {
        Some(out)
    }
}

/// Sanitises an attribute key into a Prometheus label name, appended to
/// `out`: invalid characters → `_`, repeated `_` collapsed, a leading digit
/// gets `key_`. The result never starts with `__` (that prefix is reserved
/// for Prometheus-internal labels such as `__name__`; an attribute must not be
/// able to produce one). False (nothing appended) when nothing valid is left.
pub fn label_name_into(key: &str, out: &mut Vec<u8>) -> bool {
    // Every run of other bytes (a multi-byte character included) is one `_`,
    // so the name is empty or all `_` exactly when no byte is alphanumeric.
    if !key.bytes().any(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.extend_from_slice(b"key_");
    }
    let mut prev_us = false;
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b);
            prev_us = false;
        } else if !prev_us {
            out.push(b'_');
            prev_us = true;
        }
    }
    true
}

/// Metric name of a scraped-origin series: kept as is when Prometheus'
/// classic name rules allow it (`[a-zA-Z_:][a-zA-Z0-9_:]*`), otherwise each
/// invalid character becomes `_` (no collapsing, no suffixes).
pub fn scraped_metric_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}

/// Label name of a scraped-origin series, appended to `out`: as is when
/// valid (`[a-zA-Z_][a-zA-Z0-9_]*`), each invalid character → `_` otherwise.
/// False (nothing appended) for an empty name and `__name__`.
pub fn scraped_label_name_into(name: &str, out: &mut Vec<u8>) -> bool {
    if name.is_empty() || name == "__name__" {
        return false;
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push(b'_');
    }
    for c in name.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c as u8
        } else {
            b'_'
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use NameKind::*;

    fn label_name(key: &str) -> Option<String> {
        let mut out = Vec::new();
        label_name_into(key, &mut out).then(|| String::from_utf8(out).unwrap())
    }

    fn scraped_label_name(name: &str) -> Option<String> {
        let mut out = Vec::new();
        scraped_label_name_into(name, &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn metric_names_spec_examples() {
        let cases: &[(&str, &str, NameKind, &str)] = &[
            // spec / translator examples
            (
                "http.server.duration",
                "s",
                Other,
                "http_server_duration_seconds",
            ),
            (
                "system.memory.usage",
                "By",
                Gauge,
                "system_memory_usage_bytes",
            ),
            (
                "system.cpu.utilization",
                "1",
                Gauge,
                "system_cpu_utilization_ratio",
            ),
            ("requests", "1", Counter, "requests_total"),
            (
                "requests.count",
                "{request}",
                Counter,
                "requests_count_total",
            ),
            ("http.requests", "{requests}", Other, "http_requests"),
            ("speed", "m/s", Gauge, "speed_meters_per_second"),
            (
                "throughput",
                "By/s",
                Counter,
                "throughput_bytes_per_second_total",
            ),
            ("pages", "{page}/min", Gauge, "pages_per_min"),
            ("hits", "{hit}/s", Counter, "hits_per_second_total"),
            ("latency", "ms", Other, "latency_milliseconds"),
            ("mem", "KiBy", Gauge, "mem_kibibytes"),
            ("mem", "MiBy", Gauge, "mem_mebibytes"),
            ("disk", "GBy", Gauge, "disk_gigabytes"),
            ("temp", "Cel", Gauge, "temp_celsius"),
            ("load", "%", Gauge, "load_percent"),
            ("freq", "Hz", Gauge, "freq_hertz"),
            ("uptime", "d", Gauge, "uptime_days"),
            // suffixes never doubled
            (
                "request.duration.seconds",
                "s",
                Other,
                "request_duration_seconds",
            ),
            ("requests_total", "", Counter, "requests_total"),
            ("requests.total.count", "", Counter, "requests_count_total"),
            ("cpu_ratio", "1", Gauge, "cpu_ratio"),
            ("bytes_per_second", "By/s", Gauge, "bytes_per_second"),
            ("io_bytes_total", "By", Counter, "io_bytes_total"),
            // 1 on non-gauges: no suffix
            ("foo", "1", Other, "foo"),
            // invalid characters and collapsing
            ("foo--bar..baz", "", Gauge, "foo_bar_baz"),
            ("__foo__bar__", "", Gauge, "foo_bar"),
            ("ab:c", "", Gauge, "ab:c"),
            ("tête", "", Gauge, "t_te"),
            ("2xx.count", "", Counter, "_2xx_count_total"),
            ("foo", "unknownunit", Gauge, "foo_unknownunit"),
            ("foo", " ", Gauge, "foo"),
            ("foo", "a.b", Gauge, "foo_a_b"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name(name, unit, *kind).as_deref(),
                Some(*want),
                "{name} {unit} {kind:?}"
            );
        }
        assert_eq!(metric_name("", "", Gauge), None);
        assert_eq!(metric_name("...", "", Gauge), None);
        assert_eq!(metric_name("___", "", Gauge), None);
    }

    #[test]
    fn label_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http.method", Some("http_method")),
            ("k8s.pod.name", Some("k8s_pod_name")),
            ("123invalid", Some("key_123invalid")),
            ("a..b", Some("a_b")),
            ("_private", Some("_private")),
            ("__name__", Some("_name_")),
            ("__reserved", Some("_reserved")),
            ("valid_name", Some("valid_name")),
            ("tête", Some("t_te")),
            ("", None),
            ("___", None),
            ("...", None),
        ];
        for (k, want) in cases {
            assert_eq!(label_name(k).as_deref(), *want, "{k}");
        }
    }

    #[test]
    fn scraped_names() {
        assert_eq!(
            scraped_metric_name("ovms_requests_success").as_deref(),
            Some("ovms_requests_success")
        );
        assert_eq!(scraped_metric_name("a__b:c").as_deref(), Some("a__b:c"));
        assert_eq!(scraped_metric_name("a.b").as_deref(), Some("a_b"));
        assert_eq!(scraped_label_name("__meta").as_deref(), Some("__meta"));
        assert_eq!(scraped_label_name("__name__"), None);
        assert_eq!(scraped_label_name("9a").as_deref(), Some("_9a"));
    }

    #[test]
    fn unit_words_table() {
        assert_eq!(unit_words("m/s"), ("meters".into(), "second".into()));
        assert_eq!(unit_words("{packet}/s"), ("".into(), "second".into()));
        assert_eq!(unit_words("By/{x}"), ("bytes".into(), "".into()));
        assert_eq!(unit_words("1"), ("".into(), "".into()));
    }
}
