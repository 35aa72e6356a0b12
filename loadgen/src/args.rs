//! Command-line arguments and the small value parsers behind them.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Wire protocol used to talk to the collector.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC: `/opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
    Grpc,
    /// OTLP/HTTP with a protobuf body, POSTed to `<endpoint>/v1/metrics`.
    Http,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        })
    }
}

/// A flag value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error(
        "invalid rate {input:?}: expected a number of data points/s (e.g. 10000, 10k, 1M) or `max`"
    )]
    RateNotANumber {
        input: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    #[error("invalid rate {input:?}: must be > 0")]
    RateNotPositive { input: String },
    #[error("invalid duration {input:?}: expected e.g. 60s, 500ms, 2m")]
    DurationNotANumber {
        input: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    #[error("invalid duration {input:?}: unknown unit {unit:?}")]
    DurationUnit { input: String, unit: String },
    #[error("invalid duration {input:?}")]
    DurationOutOfRange { input: String },
    #[error("expected a positive integer, got {input:?}")]
    NotPositive { input: String },
    #[error("HTTP status {0} is not an error status")]
    NotAnErrorStatus(u16),
    #[error("unknown error code {input:?}: use a gRPC code name (RESOURCE_EXHAUSTED) or an HTTP status (429)")]
    UnknownCode { input: String },
    #[error("OK is not an error")]
    OkIsNotAnError,
}

/// Target send rate in data points per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as `--concurrency` in-flight requests allow.
    Max,
    /// Open-loop pacing at this many data points per second.
    PerSecond(f64),
}

impl Rate {
    /// The target in data points per second, `None` for `max`.
    pub fn per_second(&self) -> Option<f64> {
        match self {
            Rate::Max => None,
            Rate::PerSecond(r) => Some(*r),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSecond(r) => write!(f, "{r}"),
        }
    }
}

impl FromStr for Rate {
    type Err = ArgError;

    /// `max`, or a positive number with an optional `k`/`m` suffix (`10000`, `10k`, `1.5M`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let (num, mult) = match t.chars().last() {
            Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
            Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
            _ => (t, 1.0),
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|source| ArgError::RateNotANumber {
                input: s.to_owned(),
                source,
            })?;
        let v = v * mult;
        if !v.is_finite() || v <= 0.0 {
            return Err(ArgError::RateNotPositive {
                input: s.to_owned(),
            });
        }
        Ok(Rate::PerSecond(v))
    }
}

/// Parses `60s`, `500ms`, `2m`, `1h`, `1.5s`, `250us`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|source| ArgError::DurationNotANumber {
        input: s.to_owned(),
        source,
    })?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" | "min" | "mins" => v * 60.0,
        "h" => v * 3600.0,
        other => {
            return Err(ArgError::DurationUnit {
                input: s.to_owned(),
                unit: other.to_owned(),
            })
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(ArgError::DurationOutOfRange {
            input: s.to_owned(),
        });
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_positive(s: &str) -> Result<usize, ArgError> {
    match s.trim().parse::<usize>() {
        Ok(0) | Err(_) => Err(ArgError::NotPositive {
            input: s.to_owned(),
        }),
        Ok(v) => Ok(v),
    }
}

/// Flags of `edgewatch loadgen`.
///
/// Failed requests are **not** retried unless `--retry N` is given: every data point is
/// either acknowledged or counted as failed, which is what `--sequence-check` relies on.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Collector endpoint, e.g. http://127.0.0.1:4317 (grpc) or http://127.0.0.1:4318 (http).
    /// For http, `/v1/metrics` is appended unless the endpoint already has a path.
    /// Defaults to 127.0.0.1:4317 (grpc) / 127.0.0.1:4318 (http).
    #[arg(long)]
    pub endpoint: Option<String>,

    /// OTLP transport.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,

    /// CA certificate (PEM) the server's certificate of an `https://` endpoint is
    /// verified against (default: the public web roots).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,

    /// Target data points per second (e.g. 10000, 100k, 1M), or `max`.
    #[arg(long, default_value = "10000", value_parser = Rate::from_str)]
    pub rate: Rate,

    /// Data points per request.
    #[arg(long, default_value_t = 100, value_parser = parse_positive)]
    pub batch: usize,

    /// Number of distinct series.
    #[arg(long, default_value_t = 1000, value_parser = parse_positive)]
    pub series: usize,

    /// Requests in flight at once (one worker each).
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub concurrency: usize,

    /// gRPC connections (HTTP/2) shared round-robin by the workers. Defaults to
    /// min(concurrency, 4). HTTP/1 uses one pooled connection per worker.
    #[arg(long, value_parser = parse_positive)]
    pub connections: Option<usize>,

    /// How long to send (e.g. 60s, 500ms, 2m). No request is started after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Send one cumulative monotonic Sum `edgewatch_loadgen_sequence` per series whose
    /// value is the per-series sequence number 1, 2, 3, ... so the receiver can detect
    /// loss, duplicates and reordering; the report lists the highest acknowledged
    /// sequence per series.
    #[arg(long)]
    pub sequence_check: bool,

    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// Compress request bodies with gzip.
    #[arg(long)]
    pub gzip: bool,

    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Retry a failed request up to N times (default 0: failed points are counted, not resent).
    #[arg(long, default_value_t = 0)]
    pub retry: u32,

    /// Per-request timeout (a timed-out request counts as error `timeout`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// `service.instance.id` of the generated resource (default: random).
    #[arg(long)]
    pub instance_id: Option<String>,
}

impl Default for LoadgenArgs {
    fn default() -> Self {
        LoadgenArgs {
            endpoint: None,
            protocol: Protocol::Grpc,
            ca_file: None,
            rate: Rate::PerSecond(10_000.0),
            batch: 100,
            series: 1000,
            concurrency: 1,
            connections: None,
            duration: Duration::from_secs(10),
            sequence_check: false,
            json: false,
            gzip: false,
            quiet: false,
            retry: 0,
            timeout: Duration::from_secs(10),
            instance_id: None,
        }
    }
}

impl LoadgenArgs {
    /// The endpoint with a scheme, defaulted per protocol.
    pub fn endpoint_or_default(&self) -> String {
        let ep = match (&self.endpoint, self.protocol) {
            (Some(e), _) => e.trim().to_string(),
            (None, Protocol::Grpc) => "http://127.0.0.1:4317".to_string(),
            (None, Protocol::Http) => "http://127.0.0.1:4318".to_string(),
        };
        if ep.contains("://") {
            ep
        } else {
            format!("http://{ep}")
        }
    }
}

/// An error answer the sink can be told to give: a gRPC code name (`RESOURCE_EXHAUSTED`)
/// or an HTTP status (`429`); each maps to the other protocol's equivalent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailCode {
    /// gRPC status code (numeric, as in `tonic::Code`).
    pub grpc: tonic::Code,
    /// HTTP status.
    pub http: u16,
}

impl FromStr for FailCode {
    type Err = ArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(status) = t.parse::<u16>() {
            if !(400..=599).contains(&status) {
                return Err(ArgError::NotAnErrorStatus(status));
            }
            return Ok(FailCode {
                grpc: grpc_code_for_http(status),
                http: status,
            });
        }
        let code = grpc_code_from_name(t).ok_or_else(|| ArgError::UnknownCode {
            input: s.to_owned(),
        })?;
        if code == tonic::Code::Ok {
            return Err(ArgError::OkIsNotAnError);
        }
        Ok(FailCode {
            grpc: code,
            http: http_status_for_grpc(code),
        })
    }
}

/// `tonic::Code` as the upper-case name used by the gRPC spec (`RESOURCE_EXHAUSTED`).
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn grpc_code_from_name(name: &str) -> Option<tonic::Code> {
    let upper = name.to_ascii_uppercase();
    (0..=16)
        .map(tonic::Code::from_i32)
        .find(|c| grpc_code_name(*c) == upper)
}

/// The HTTP status an OTLP/HTTP server would answer for a gRPC code.
pub fn http_status_for_grpc(code: tonic::Code) -> u16 {
    use tonic::Code::*;
    match code {
        Ok => 200,
        InvalidArgument | FailedPrecondition | OutOfRange => 400,
        Unauthenticated => 401,
        PermissionDenied => 403,
        NotFound => 404,
        AlreadyExists | Aborted => 409,
        ResourceExhausted => 429,
        Cancelled => 499,
        Unimplemented => 501,
        Unavailable => 503,
        DeadlineExceeded => 504,
        Unknown | Internal | DataLoss => 500,
    }
}

fn grpc_code_for_http(status: u16) -> tonic::Code {
    use tonic::Code::*;
    match status {
        400 => InvalidArgument,
        401 => Unauthenticated,
        403 => PermissionDenied,
        404 => NotFound,
        409 => Aborted,
        429 => ResourceExhausted,
        501 => Unimplemented,
        502..=504 => Unavailable,
        _ => Internal,
    }
}

/// Flags of `edgewatch loadgen sink`.
#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Address to serve OTLP gRPC and OTLP/HTTP on (both on one port); stats are at GET /stats.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub listen: SocketAddr,

    /// Answer requests with this error: a gRPC code name (RESOURCE_EXHAUSTED) or an HTTP
    /// status (429); each protocol gets its equivalent.
    #[arg(long, value_parser = FailCode::from_str)]
    pub fail_with: Option<FailCode>,

    /// With --fail-with: fail only every Nth request (1 = all).
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub fail_every: usize,

    /// Acknowledge but do not count the Nth request received (1-based; repeatable or
    /// comma-separated). Simulates loss for --sequence-check.
    #[arg(long, value_delimiter = ',')]
    pub drop_request: Vec<u64>,

    /// Delay every answer by this long (e.g. 5ms).
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,

    /// No per-second stats line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Serve over TLS with this certificate (PEM; with --tls-key-file).
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// The key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// With TLS: require client certificates signed by this CA (mTLS).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<std::path::PathBuf>,
}

impl SinkArgs {
    /// Sink arguments listening on `listen`, with no faults.
    pub fn new(listen: SocketAddr) -> Self {
        SinkArgs {
            listen,
            fail_with: None,
            fail_every: 1,
            drop_request: Vec::new(),
            delay: None,
            quiet: false,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert_eq!("10000".parse::<Rate>().unwrap(), Rate::PerSecond(10_000.0));
        assert_eq!("100k".parse::<Rate>().unwrap(), Rate::PerSecond(100_000.0));
        assert_eq!(
            "1.5M".parse::<Rate>().unwrap(),
            Rate::PerSecond(1_500_000.0)
        );
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn fail_codes() {
        let c: FailCode = "RESOURCE_EXHAUSTED".parse().unwrap();
        assert_eq!((c.grpc, c.http), (tonic::Code::ResourceExhausted, 429));
        let c: FailCode = "503".parse().unwrap();
        assert_eq!((c.grpc, c.http), (tonic::Code::Unavailable, 503));
        assert!("OK".parse::<FailCode>().is_err());
        assert!("200".parse::<FailCode>().is_err());
        assert_eq!(grpc_code_name(tonic::Code::Unavailable), "UNAVAILABLE");
    }
}
