//! `edgewatch loadgen targets`: Prometheus scrape targets, some of which misbehave on
//! purpose, to soak a scraper. Each target listens on its own 127.0.0.1 port (so each is
//! its own `instance`) and answers any `GET` with hand-written HTTP/1.1 — hand-written so
//! that a target can also break the connection itself:
//!
//! * `healthy`: a valid exposition of `--series` gauges and a counter.
//! * `slow`: the same, after `--slow-delay` (longer than the scraper's timeout).
//! * `huge`: a valid exposition streamed without `Content-Length` for up to
//!   `--huge-mib` MiB, far over any body size limit; it stops when the scraper hangs up.
//! * `many`: `--many-series` samples in a small body: over a sample limit, under a body
//!   size limit.
//! * `garbage`: invalid expositions in turn (not UTF-8, an unterminated label set, a
//!   value that is not a number).
//! * `flapping`: phases of `--flap-phase` in turn: up, connection reset (RST), up,
//!   hang-up without an answer, up, `503`.
//!
//! Once every port is bound, one JSON line on stdout lists the targets
//! (`{"targets":[{"kind":"slow","url":"http://127.0.0.1:P/metrics"},…]}`); then it serves
//! until stopped.

use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::args::parse_duration;

/// How a target behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Healthy,
    Slow,
    Huge,
    Many,
    Garbage,
    Flapping,
}

impl FromStr for Kind {
    type Err = TargetsArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "healthy" => Kind::Healthy,
            "slow" => Kind::Slow,
            "huge" => Kind::Huge,
            "many" => Kind::Many,
            "garbage" => Kind::Garbage,
            "flapping" => Kind::Flapping,
            other => return Err(TargetsArgError::Kind(other.to_string())),
        })
    }
}

/// A flag of `loadgen targets` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetsArgError {
    #[error("{0:?} is not a target kind (healthy, slow, huge, many, garbage, flapping)")]
    Kind(String),
    #[error("{0:?} is not `kind=count`")]
    Entry(String),
    #[error("--mix names {named} targets, more than --count {count}")]
    TooMany { named: usize, count: usize },
}

/// Misbehaving targets by kind (`slow=2,huge=1`); the rest of `--count` are healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(pub Vec<(Kind, usize)>);

impl FromStr for Mix {
    type Err = TargetsArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for entry in s.split(',').filter(|e| !e.trim().is_empty()) {
            let (kind, n) = entry
                .split_once('=')
                .ok_or_else(|| TargetsArgError::Entry(entry.to_string()))?;
            let n = n
                .trim()
                .parse::<usize>()
                .map_err(|_| TargetsArgError::Entry(entry.to_string()))?;
            out.push((kind.parse()?, n));
        }
        Ok(Mix(out))
    }
}

impl Mix {
    /// The kind of each of `count` targets: the named ones first, then healthy ones.
    pub fn kinds(&self, count: usize) -> Result<Vec<Kind>, TargetsArgError> {
        let mut kinds: Vec<Kind> = self
            .0
            .iter()
            .flat_map(|&(k, n)| std::iter::repeat_n(k, n))
            .collect();
        if kinds.len() > count {
            return Err(TargetsArgError::TooMany {
                named: kinds.len(),
                count,
            });
        }
        kinds.resize(count, Kind::Healthy);
        Ok(kinds)
    }
}

/// Flags of `edgewatch loadgen targets`.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetsArgs {
    /// Targets in all; those `--mix` does not name are healthy.
    #[arg(long, default_value_t = 20)]
    pub count: usize,
    /// Misbehaving targets, `kind=count` comma-separated (slow, huge, many, garbage,
    /// flapping).
    #[arg(
        long,
        default_value = "slow=2,huge=1,many=1,garbage=2,flapping=2",
        value_parser = Mix::from_str
    )]
    pub mix: Mix,
    /// Address every target listens on (each on its own free port).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Series of a healthy (and slow, and flapping) target.
    #[arg(long, default_value_t = 50)]
    pub series: usize,
    /// How long a slow target waits before it answers.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub slow_delay: Duration,
    /// MiB a huge target streams at most.
    #[arg(long, default_value_t = 256)]
    pub huge_mib: u64,
    /// Samples of a `many` target.
    #[arg(long, default_value_t = 20_000)]
    pub many_series: usize,
    /// Length of each phase of a flapping target.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub flap_phase: Duration,
}

/// One target as listed on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub kind: Kind,
    pub url: String,
}

/// What a target needs to answer.
struct Target {
    kind: Kind,
    args: Arc<TargetsArgs>,
    started: Instant,
    requests: AtomicU64,
}

/// A bound set of targets, not yet serving.
pub struct Targets {
    listeners: Vec<(TcpListener, Arc<Target>)>,
    pub info: Vec<TargetInfo>,
}

impl Targets {
    /// Binds one listener per target.
    pub async fn bind(args: TargetsArgs) -> anyhow::Result<Targets> {
        let kinds = args.mix.kinds(args.count)?;
        let args = Arc::new(args);
        let started = Instant::now();
        let mut listeners = Vec::with_capacity(kinds.len());
        let mut info = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let l = TcpListener::bind(SocketAddr::new(args.host, 0)).await?;
            info.push(TargetInfo {
                kind,
                url: format!("http://{}/metrics", l.local_addr()?),
            });
            let target = Target {
                kind,
                args: args.clone(),
                started,
                requests: AtomicU64::new(0),
            };
            listeners.push((l, Arc::new(target)));
        }
        Ok(Targets { listeners, info })
    }

    /// Serves every target until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let tasks: Vec<_> = self
            .listeners
            .into_iter()
            .map(|(l, t)| tokio::spawn(accept_loop(l, t)))
            .collect();
        shutdown.await;
        for t in tasks {
            t.abort();
        }
    }
}

/// `edgewatch loadgen targets`: binds, prints the JSON listing, serves until `shutdown`.
pub async fn run_targets(
    args: TargetsArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let targets = Targets::bind(args).await?;
    println!("{}", serde_json::json!({ "targets": targets.info }));
    targets.serve(shutdown).await;
    Ok(())
}

async fn accept_loop(listener: TcpListener, target: Arc<Target>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: keep serving once it passes.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let t = target.clone();
        tokio::spawn(async move {
            // A scraper that hangs up mid-answer is what some kinds provoke.
            if let Err(e) = answer(&t, stream).await {
                tracing::debug!(kind = ?t.kind, error = %e, "connection ended early");
            }
        });
    }
}

/// A request head larger than this, or slower than [`HEAD_TIMEOUT`], is not answered.
const MAX_HEAD: usize = 16 << 10;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads up to the end of the request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            if buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("request head too large"));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(HEAD_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// A flapping target's phase at `elapsed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Up,
    Reset,
    HangUp,
    Unavailable,
}

const FLAP_CYCLE: [Phase; 6] = [
    Phase::Up,
    Phase::Reset,
    Phase::Up,
    Phase::HangUp,
    Phase::Up,
    Phase::Unavailable,
];

fn phase(elapsed: Duration, each: Duration) -> Phase {
    let i = elapsed.as_nanos() / each.as_nanos().max(1);
    FLAP_CYCLE[(i % FLAP_CYCLE.len() as u128) as usize]
}

/// Invalid expositions a garbage target answers in turn.
const GARBAGE: [&[u8]; 3] = [
    b"\xff\xfe\x00soak_target_value 1\n",
    b"soak_target_value{series=\"a\" 1\n",
    b"soak_target_value{series=\"a\"} not-a-number\n",
];

async fn answer(t: &Target, mut stream: TcpStream) -> std::io::Result<()> {
    read_head(&mut stream).await?;
    let n = t.requests.fetch_add(1, Relaxed);
    let a = &t.args;
    match t.kind {
        Kind::Healthy => respond(&mut stream, "200 OK", &exposition(a.series, n)).await,
        Kind::Slow => {
            tokio::time::sleep(a.slow_delay).await;
            respond(&mut stream, "200 OK", &exposition(a.series, n)).await
        }
        Kind::Huge => stream_huge(&mut stream, a.huge_mib << 20).await,
        Kind::Many => respond(&mut stream, "200 OK", &exposition(a.many_series, n)).await,
        Kind::Garbage => {
            let body = GARBAGE[(n % GARBAGE.len() as u64) as usize];
            respond(&mut stream, "200 OK", body).await
        }
        Kind::Flapping => match phase(t.started.elapsed(), a.flap_phase) {
            Phase::Up => respond(&mut stream, "200 OK", &exposition(a.series, n)).await,
            // Dropped with a zero linger: the kernel sends RST instead of FIN.
            Phase::Reset => stream.set_zero_linger(),
            Phase::HangUp => stream.shutdown().await,
            Phase::Unavailable => respond(&mut stream, "503 Service Unavailable", b"down\n").await,
        },
    }
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn respond(stream: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// A valid exposition of `series` gauges (values change with every scrape `n`) and a
/// scrape counter.
fn exposition(series: usize, n: u64) -> Vec<u8> {
    let mut s = String::with_capacity(64 + series * 48);
    s.push_str("# HELP soak_target_scrapes_total Scrapes answered.\n");
    s.push_str("# TYPE soak_target_scrapes_total counter\n");
    let _ = writeln!(s, "soak_target_scrapes_total {}", n + 1);
    s.push_str("# HELP soak_target_value A value per series.\n");
    s.push_str("# TYPE soak_target_value gauge\n");
    for i in 0..series {
        let _ = writeln!(
            s,
            "soak_target_value{{series=\"s{i:06}\"}} {}",
            (n + i as u64) % 1000
        );
    }
    s.into_bytes()
}

/// Streams a valid exposition with no `Content-Length` (the body ends when the
/// connection closes) until `limit` bytes or the reader hangs up.
async fn stream_huge(stream: &mut TcpStream, limit: u64) -> std::io::Result<()> {
    let head =
        format!("HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut chunk = String::with_capacity(70 << 10);
    let (mut sent, mut i) = (0u64, 0u64);
    while sent < limit {
        chunk.clear();
        while chunk.len() < 64 << 10 {
            let _ = writeln!(chunk, "soak_target_huge{{series=\"s{i:09}\"}} 1");
            i += 1;
        }
        stream.write_all(chunk.as_bytes()).await?;
        sent += chunk.len() as u64;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_fills_up_with_healthy_targets() {
        let mix: Mix = "slow=2, garbage=1".parse().unwrap();
        assert_eq!(
            mix.kinds(5).unwrap(),
            vec![
                Kind::Slow,
                Kind::Slow,
                Kind::Garbage,
                Kind::Healthy,
                Kind::Healthy
            ]
        );
        assert_eq!(
            mix.kinds(2),
            Err(TargetsArgError::TooMany { named: 3, count: 2 })
        );
        assert!(matches!(
            "slow".parse::<Mix>(),
            Err(TargetsArgError::Entry(_))
        ));
        assert!(matches!(
            "sloow=1".parse::<Mix>(),
            Err(TargetsArgError::Kind(_))
        ));
    }

    #[test]
    fn flapping_cycles_through_its_phases() {
        let each = Duration::from_secs(10);
        let at = |s: u64| phase(Duration::from_secs(s), each);
        assert_eq!(
            [at(0), at(15), at(25), at(39), at(45), at(59), at(60)],
            [
                Phase::Up,
                Phase::Reset,
                Phase::Up,
                Phase::HangUp,
                Phase::Up,
                Phase::Unavailable,
                Phase::Up
            ]
        );
    }

    async fn get(url: &str) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let r = reqwest::get(url).await?;
        let status = r.status().as_u16();
        Ok((status, r.bytes().await?.to_vec()))
    }

    #[tokio::test]
    async fn each_kind_misbehaves_as_described() {
        let args = TargetsArgs {
            count: 4,
            mix: "huge=1,garbage=1,many=1".parse().unwrap(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            series: 3,
            slow_delay: Duration::from_secs(30),
            huge_mib: 2,
            many_series: 1000,
            flap_phase: Duration::from_secs(10),
        };
        let targets = Targets::bind(args).await.unwrap();
        let urls: Vec<String> = targets.info.iter().map(|t| t.url.clone()).collect();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(targets.serve(async move {
            let _ = stop_rx.await;
        }));

        let (status, huge) = get(&urls[0]).await.unwrap();
        assert_eq!((status, huge.len() as u64 >= 2 << 20), (200, true));
        let (_, garbage) = get(&urls[1]).await.unwrap();
        assert!(
            String::from_utf8(garbage).is_err(),
            "the first answer is not UTF-8"
        );
        let (_, many) = get(&urls[2]).await.unwrap();
        let many = String::from_utf8(many).unwrap();
        assert_eq!(
            many.lines()
                .filter(|l| l.starts_with("soak_target_value{"))
                .count(),
            1000
        );
        let (status, healthy) = get(&urls[3]).await.unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8(healthy)
            .unwrap()
            .contains("soak_target_value{series=\"s000002\"}"));

        let _ = stop_tx.send(());
        server.await.unwrap();
    }
}
