//! Configuration of both edgewatch roles: one typed struct per component, read from
//! YAML with `deny_unknown_fields`, validated while deserialising so that every error
//! carries `FILE:LINE:COL`. Every value may use `${VAR}` environment expansion
//! ([`expand`]).

pub mod aggregator;
pub mod alerting;
pub mod auth;
pub mod collector;
pub mod expand;
pub mod remote_write;
pub mod tls;
pub mod units;

pub use aggregator::AggregatorConfig;
pub use collector::CollectorConfig;
pub use units::{ByteSize, Dur, DurationError, SizeError};

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration error, displayed as `FILE:LINE:COL: what is wrong`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads and validates a YAML configuration file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses YAML configuration text, expanding `${VAR}` in every value ([`expand`]);
/// `origin` names the source in error messages.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let de = expand::Expand(serde_yaml_ng::Deserializer::from_str(text));
    serde_path_to_error::deserialize(de).map_err(|e| located(e, text, origin))
}

/// Parses YAML text as written, without environment expansion: for files in another
/// tool's format where `$` means something else (Prometheus rule files, whose
/// templates and the built-in rules' `${fleet.down_after}` are not ours to expand),
/// and for configuration a program generated (its paths are not for expansion).
pub fn parse_verbatim<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| located(e, text, origin))
}

/// A deserialisation error as `FILE:LINE:COL: path: what is wrong`.
fn located(
    e: serde_path_to_error::Error<serde_yaml_ng::Error>,
    text: &str,
    origin: &str,
) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let yaml_location = inner.location().map(|l| (l.line(), l.column()));
    let mut message = inner.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    // serde_yaml prefixes the part of the path it knows; we prefix the whole path.
    if let Some((prefix, rest)) = message.split_once(": ") {
        if !prefix.contains(' ') && path.starts_with(prefix) {
            message = rest.to_string();
        }
    }
    // serde_yaml locates syntax errors and unknown keys exactly, but errors raised
    // by a value's own validation only at the enclosing mapping: find the value by
    // its path instead.
    let exact = message.starts_with("unknown field") || path == "." || path.is_empty();
    let (line, column) = if exact {
        yaml_location.unwrap_or((1, 1))
    } else {
        locate(text, &path).or(yaml_location).unwrap_or((1, 1))
    };
    if !exact && !message.starts_with("missing field") {
        message = format!("{path}: {message}");
    }
    ConfigError::Invalid {
        path: origin.to_string(),
        line,
        column,
        message,
    }
}

/// Finds the 1-based line and column of the value at a dotted path (`buffer.max_bytes`,
/// `rules[2].expr`) in block-style YAML, by indentation. A heuristic used only to
/// place error messages; returns None when the layout is not understood.
fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cursor = 0usize; // first line to search
    let mut min_indent = 0usize;
    let mut found: Option<(usize, usize)> = None;
    for segment in path.split('.') {
        let (key, index) = path_segment(segment);
        if key.is_empty() || key == "?" {
            continue;
        }
        let within_parent = found.is_some();
        let key_at = find_key(&lines, cursor, min_indent, within_parent, key)?;
        found = Some((key_at.line + 1, key_at.value_col + 1));
        cursor = key_at.line + 1;
        min_indent = key_at.content_col + 1;
        if let Some(want) = index {
            match find_item(&lines, cursor, min_indent, want) {
                Some((m, col)) => {
                    found = Some((m + 1, col + 1));
                    cursor = m;
                    min_indent = col;
                }
                None => return found,
            }
        }
    }
    found
}

/// `rules[2]` → (`rules`, Some(2)); `expr` → (`expr`, None).
fn path_segment(segment: &str) -> (&str, Option<usize>) {
    match segment.find('[') {
        Some(i) => (
            &segment[..i],
            segment[i + 1..].trim_end_matches(']').parse::<usize>().ok(),
        ),
        None => (segment, None),
    }
}

/// Where a `key:` line is (0-based).
struct KeyAt {
    line: usize,
    /// The column the key starts in.
    content_col: usize,
    /// The column of the value after the key, or the key's when the value
    /// is a block below it.
    value_col: usize,
}

/// The first `key:` at or after line `cursor` indented at least `min_indent`;
/// with `within_parent`, the search stops where a line leaves the parent
/// mapping (is indented less).
fn find_key(
    lines: &[&str],
    cursor: usize,
    min_indent: usize,
    within_parent: bool,
    key: &str,
) -> Option<KeyAt> {
    for (n, line) in lines.iter().enumerate().skip(cursor) {
        let indent = line.len() - line.trim_start().len();
        let content = line.trim_start().trim_start_matches("- ");
        let content_col = line.len() - content.len();
        if !line.trim().is_empty()
            && !line.trim_start().starts_with('#')
            && indent < min_indent
            && within_parent
        {
            return None;
        }
        if content_col >= min_indent
            && content.starts_with(key)
            && content[key.len()..].starts_with(':')
        {
            let after = &content[key.len() + 1..];
            let value_col = if after.trim().is_empty() {
                content_col
            } else {
                content_col + key.len() + 1 + (after.len() - after.trim_start().len())
            };
            return Some(KeyAt {
                line: n,
                content_col,
                value_col,
            });
        }
    }
    None
}

/// Line and content column of item `want` (0-based) of the block sequence
/// that starts at line `cursor`.
fn find_item(
    lines: &[&str],
    cursor: usize,
    min_indent: usize,
    want: usize,
) -> Option<(usize, usize)> {
    let mut seen = 0usize;
    for (m, line) in lines.iter().enumerate().skip(cursor) {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent + 1 < min_indent && !trimmed.starts_with('-') {
            return None;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            if seen == want {
                return Some((m, indent + 2));
            }
            seen += 1;
        }
    }
    None
}

/// A listen or peer address `host:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Addr(a));
        }
        // `localhost:4317` is common in OTel configs; resolve it without DNS.
        if let Some(port) = s.strip_prefix("localhost:") {
            if let Ok(p) = port.parse::<u16>() {
                return Ok(Addr(SocketAddr::from(([127, 0, 0, 1], p))));
            }
        }
        Err(de::Error::custom(format!(
            "invalid address {s:?}: expected host:port such as 127.0.0.1:4317"
        )))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An `http://` or `https://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url(pub String);

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid URL {s:?}: must start with http:// or https://"
                ))
            })?;
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') {
            return Err(de::Error::custom(format!(
                "invalid URL {s:?}: missing host"
            )));
        }
        // A URL is logged and shown in metric labels; a password in it would be too.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(de::Error::custom(
                "invalid URL: credentials in a URL would show in logs and metrics; use basic_auth or a *_file key",
            ));
        }
        Ok(Url(s))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that must not be empty (cluster names, node names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(Name(s))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The OTLP receiver block shared by both roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// gRPC listen address; omit to disable.
    pub grpc: Option<Addr>,
    /// HTTP listen address (`/v1/metrics`); omit to disable.
    pub http: Option<Addr>,
    /// Largest accepted request, also after gzip inflation.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: ByteSize,
    /// TLS on both listeners; with `client_ca_file`, mTLS.
    #[serde(default)]
    pub tls: Option<tls::ServerTlsConfig>,
}

fn default_max_request_bytes() -> ByteSize {
    ByteSize::mib(4)
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        OtlpReceiverConfig {
            grpc: None,
            http: None,
            max_request_bytes: default_max_request_bytes(),
            tls: None,
        }
    }
}

/// A path in the configuration, kept as written.
pub type ConfigPath = PathBuf;
