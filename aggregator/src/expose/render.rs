//! Text exposition 0.0.4 and OpenMetrics 1.0 encoders over a [`Selection`],
//! writing straight into one byte buffer (modelled on prometheus/common
//! expfmt `MetricFamilyToText` / `MetricFamilyToOpenMetrics`).

use crate::store::{MetricType, Selection};

use edgewatch_prom::float::{
    append_i64, append_u64, write_om_float, write_om_timestamp, write_text_float,
};

/// Exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4; charset=utf-8`
    Text,
    /// `application/openmetrics-text; version=1.0.0; charset=utf-8`
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Writes `s` escaping `\`, newline and (when `quote`) `"`.
#[inline]
fn escaped(out: &mut Vec<u8>, s: &str, quote: bool) {
    let b = s.as_bytes();
    if !b
        .iter()
        .any(|&c| c == b'\\' || c == b'\n' || (quote && c == b'"'))
    {
        out.extend_from_slice(b);
        return;
    }
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(c),
        }
    }
}

/// Renders `sel` (already sorted and family-grouped by the store).
pub fn render(sel: &Selection, format: Format, out: &mut Vec<u8>) {
    out.reserve(sel.len() * 48 + sel.string_bytes());
    render_chunked(sel, format, usize::MAX, out, &mut |_| true);
}

/// Like [`render`], handing `out` to `flush` whenever it holds `chunk` bytes or more
/// (at a line boundary), so a large body can be sent while the rest is rendered.
/// Stops early when `flush` returns false (the client went away). The caller sends
/// what is left in `out` at the end.
pub fn render_chunked(
    sel: &Selection,
    format: Format,
    chunk: usize,
    out: &mut Vec<u8>,
    flush: &mut dyn FnMut(&mut Vec<u8>) -> bool,
) {
    let om = format == Format::OpenMetrics;
    let mut current: Option<u32> = None;
    for s in sel.iter() {
        let fam = s.family();
        if current != Some(s.family_index()) {
            current = Some(s.family_index());
            let (name, ty) = if om {
                match fam.metric_type {
                    MetricType::Counter => match fam.name.strip_suffix("_total") {
                        Some(base) => (base, "counter"),
                        // OpenMetrics counter samples must end in _total; a
                        // counter without it (e.g. a scraped one) keeps its
                        // name and is typed unknown, as expfmt does.
                        None => (fam.name.as_str(), "unknown"),
                    },
                    MetricType::Gauge => (fam.name.as_str(), "gauge"),
                    MetricType::Histogram => (fam.name.as_str(), "histogram"),
                    MetricType::Summary => (fam.name.as_str(), "summary"),
                    MetricType::Unknown => (fam.name.as_str(), "unknown"),
                }
            } else {
                (fam.name.as_str(), fam.metric_type.as_text())
            };
            if !fam.help.is_empty() {
                out.extend_from_slice(b"# HELP ");
                out.extend_from_slice(name.as_bytes());
                out.push(b' ');
                escaped(out, &fam.help, om);
                out.push(b'\n');
            }
            out.extend_from_slice(b"# TYPE ");
            out.extend_from_slice(name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(ty.as_bytes());
            out.push(b'\n');
        }
        let name = s.name();
        out.extend_from_slice(name.as_bytes());
        let mut sep = b'{';
        for (k, v) in s.labels() {
            out.push(sep);
            sep = b',';
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            if om && (k == "le" || k == "quantile") {
                match v.parse::<f64>() {
                    Ok(f) => write_om_float(out, f),
                    Err(_) if v == "+Inf" => out.extend_from_slice(b"+Inf"),
                    Err(_) => escaped(out, v, true),
                }
            } else {
                escaped(out, v, true);
            }
            out.push(b'"');
        }
        if sep == b',' {
            out.push(b'}');
        }
        out.push(b' ');
        let v = s.value();
        if om {
            let is_count = matches!(fam.metric_type, MetricType::Histogram | MetricType::Summary)
                && name.len() > fam.name.len()
                && matches!(&name[fam.name.len()..], "_count" | "_bucket");
            if is_count && v.fract() == 0.0 && (0.0..1.8e19).contains(&v) {
                append_u64(out, v as u64);
            } else {
                write_om_float(out, v);
            }
            out.push(b' ');
            write_om_timestamp(out, s.timestamp_ms());
        } else {
            write_text_float(out, v);
            out.push(b' ');
            append_i64(out, s.timestamp_ms());
        }
        out.push(b'\n');
        if out.len() >= chunk && !flush(out) {
            return;
        }
    }
    if om {
        out.extend_from_slice(b"# EOF\n");
    }
}
