//! A VictoriaMetrics single-node process for the fleet scenarios (Debian
//! `victoria-metrics`), on 127.0.0.1 with its own storage in the scenario's temp dir,
//! and the sample count of a selector over a time range.

use super::procs::{free_port, Env, Proc};
use anyhow::{bail, Context};
use std::time::{Duration, Instant};

/// How long a count may stay unchanged before waiting for more is pointless.
const STALLED: Duration = Duration::from_secs(60);

pub struct Victoria {
    pub proc: Proc,
    pub port: u16,
    data: std::path::PathBuf,
}

impl Victoria {
    /// Starts `victoria-metrics`; waits until `/health` answers.
    pub async fn start(env: &Env) -> anyhow::Result<Victoria> {
        let program = which("victoria-metrics").context(
            "victoria-metrics not found in PATH (Debian: apt-get install -y victoria-metrics)",
        )?;
        let port = free_port()?;
        let data = env.path("victoria-data");
        let args = [
            format!("-storageDataPath={}", data.display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            // Keeps one sample per series and millisecond: a re-sent sample is stored once.
            "-dedup.minScrapeInterval=1ms".into(),
            // Samples are queryable as soon as ingested, not 30 s later.
            "-search.latencyOffset=0s".into(),
            // Counting every sample of a 1,000-node fleet touches ~500k series.
            "-search.maxUniqueTimeseries=100000000".into(),
            "-search.maxQueryDuration=600s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=ERROR".into(),
        ];
        let proc = env.spawn_program(&program, "victoria-metrics", &args, None, false)?;
        env.wait_healthy(&proc, &format!("http://127.0.0.1:{port}/health"))
            .await?;
        Ok(Victoria { proc, port, data })
    }

    /// The remote write URL.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Samples of `selector` with timestamps in [`from_ms`, `to_ms`].
    pub async fn count(
        &self,
        env: &Env,
        selector: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<f64> {
        // The window (t - w, t] must hold both ends: t one second past the newest.
        let t = to_ms / 1000 + 1;
        let window = t - from_ms / 1000 + 1;
        let query = format!("sum(count_over_time({selector}[{window}s]))");
        let v: serde_json::Value = env
            .http
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", query.as_str()), ("time", &t.to_string())])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let result = &v["data"]["result"];
        match result.as_array().map(|a| a.as_slice()) {
            Some([]) => Ok(0.0),
            Some([one]) => one["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("unexpected query result {one}")),
            _ => bail!("unexpected query answer {v}"),
        }
    }

    /// Polls [`Victoria::count`] until it reaches `want`, `timeout` passes, or the count
    /// stops growing for a minute; the last count and when it was taken.
    pub async fn wait_count(
        &self,
        env: &Env,
        selector: &str,
        (from_ms, to_ms): (i64, i64),
        want: f64,
        timeout: Duration,
    ) -> anyhow::Result<(f64, Instant)> {
        let t = Instant::now();
        let mut grew = (t, -1.0);
        loop {
            // A query over tens of millions of samples can time out while
            // VictoriaMetrics is still busy ingesting on a loaded host: try again until
            // the overall deadline rather than failing the run.
            let n = match self.count(env, selector, from_ms, to_ms).await {
                Ok(n) => n,
                Err(e) if t.elapsed() < timeout => {
                    eprintln!("bench: counting in VictoriaMetrics failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            if n > grew.1 {
                grew = (now, n);
            }
            if n >= want || now - t > timeout || now - grew.0 > STALLED {
                return Ok((n, now));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Bytes of the storage directory after a flush of the in-memory parts (before
    /// background merges have compacted everything: an upper bound).
    pub async fn disk_bytes(&self, env: &Env) -> anyhow::Result<f64> {
        env.http
            .get(format!(
                "http://127.0.0.1:{}/internal/force_flush",
                self.port
            ))
            .send()
            .await?
            .error_for_status()?;
        Ok(dir_bytes(&self.data) as f64)
    }

    pub async fn stop(self) {
        self.proc.stop().await;
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
