//! Test support shared by every edgewatch crate (a dev-dependency only).
//!
//! * [`free_port`]: a free 127.0.0.1 port;
//! * [`Proc`]: a child process whose log is printed when the test fails;
//!   [`Proc::stop`] asserts a clean exit on SIGTERM;
//! * [`eventually`] / [`always_for`] (and blocking forms): waits on conditions;
//! * [`Metrics`]: a strict exposition parser (a missing series is a panic naming it);
//! * [`otlp`]: request builders and attribute helpers; [`payloads`]: the buffer's
//!   reference payloads; [`mutate`]: byte mutations for decoder tests;
//! * [`exposer`]: a scrape target serving fixed expositions (plain, gzip, endless);
//! * [`git`]: real git repositories for the GitOps tests;
//! * [`kustomize`]: the layouts under `deploy/` rendered by `kubectl kustomize`,
//!   components inside a generated overlay, strict `kubernetes-validate`;
//! * [`peers`]: real Prometheus, Alertmanager and headless Chromium; the OpenTelemetry
//!   Python SDK of `.venv`;
//! * [`roles`]: `edgewatch aggregator` / `collector` as processes (binary path passed in);
//! * [`http`]: an HTTP recorder with scripted answers (webhooks), over TLS too, and
//!   small clients; [`tls`]: throwaway CAs (rcgen) issuing server and client
//!   certificates, valid or not, re-issued over the old files for rotations;
//!   [`otlp_stand_in`]: an OTLP/gRPC receiver with scripted answers;
//! * [`sockets`]: misbehaving raw TCP clients (half-open, never reading) and the
//!   sockets a server process holds for them (`/proc`), the fd limit raised;
//! * [`trust_keys`]: issue #13's config keys removed, for validating with a parser that
//!   does not know them yet.
//!
//! It depends on no edgewatch crate, so every one of them can dev-depend on it.

pub mod exposer;
pub mod git;
pub mod http;
pub mod kustomize;
pub mod metrics;
pub mod mutate;
pub mod otlp;
pub mod otlp_stand_in;
pub mod payloads;
pub mod peers;
mod ports;
mod proc;
pub mod roles;
pub mod sockets;
pub mod tls;
pub mod trust_keys;
mod wait;

pub use http::{get, wait_ready};
pub use metrics::{parse_samples, Metrics, Sample};
pub use ports::{free_port, free_port_offset, local};
pub use proc::{rss_bytes, Proc};
pub use wait::{always_for, always_for_blocking, eventually, eventually_blocking, Outcome};

/// Writes `text` to `path`, panicking with the path on failure.
pub fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Opens the sled database at `path`, waiting (up to 5 s) for a dropped handle of the
/// same database to let go of its file lock: sled's background flusher releases it a
/// moment after the last `Db` is dropped, so a restart within one test process can
/// otherwise fail with `WouldBlock`.
pub fn open_sled(path: &std::path::Path) -> sled::Db {
    for _ in 0..100 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(path).unwrap_or_else(|e| panic!("opening sled at {}: {e}", path.display()))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Bytes of all files under `dir` (0 for a missing directory).
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
