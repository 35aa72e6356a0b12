//! The endpoints' writers as a reload leaves them: an endpoint whose settings are
//! unchanged keeps its writer; a changed or removed one is stopped (its queues
//! flushed, at most `remote_timeout`) before a changed one starts again from its
//! log position; a new one starts at the log's end. The replacement runs in the
//! background after the reload answered.

use super::{Metrics, Options, RemoteError, RemoteWriter};
use crate::wal::Wal;
use edgewatch_config::remote_write::RemoteWriteConfig;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Hands a reloaded endpoint list to the writers (the latest one wins).
#[derive(Clone)]
pub struct Endpoints(Arc<watch::Sender<Vec<RemoteWriteConfig>>>);

impl Endpoints {
    /// Queues `cfgs`, checked by [`check`].
    pub fn set(&self, cfgs: &[RemoteWriteConfig]) {
        self.0.send_replace(cfgs.to_vec());
    }
}

/// Checks endpoints as at start: their TLS files and headers.
pub fn check(cfgs: &[RemoteWriteConfig]) -> Result<(), RemoteError> {
    for c in cfgs {
        super::Client::new(c)?;
    }
    Ok(())
}

struct Running {
    /// The settings it runs with (their Debug form: the config has no PartialEq).
    settings: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Writers {
    wal: Arc<Wal>,
    metrics: Metrics,
    stop: CancellationToken,
    running: HashMap<String, Running>,
}

/// Starts one writer per endpoint, each with its own log position (named by the
/// endpoint's `name`), and forgets positions of endpoints no longer configured.
/// The task ends after `stop` fires and every writer's queues are flushed.
pub fn start(
    cfgs: &[RemoteWriteConfig],
    wal: &Arc<Wal>,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Result<(Endpoints, JoinHandle<()>), RemoteError> {
    let mut w = Writers {
        wal: wal.clone(),
        metrics: metrics.clone(),
        stop,
        running: HashMap::new(),
    };
    w.wal.retain_readers(&names(cfgs))?;
    for cfg in cfgs {
        w.start_one(cfg)?;
    }
    let (tx, rx) = watch::channel(cfgs.to_vec());
    Ok((Endpoints(Arc::new(tx)), tokio::spawn(w.run(rx))))
}

fn names(cfgs: &[RemoteWriteConfig]) -> Vec<String> {
    cfgs.iter().map(|c| c.name.clone()).collect()
}

impl Writers {
    fn start_one(&mut self, cfg: &RemoteWriteConfig) -> Result<(), RemoteError> {
        let reader = self.wal.reader(&cfg.name, &cfg.url.0)?;
        let stop = self.stop.child_token();
        let task =
            RemoteWriter::start(cfg, reader, &self.metrics, stop.clone(), Options::default())?;
        self.running.insert(
            cfg.name.clone(),
            Running {
                settings: format!("{cfg:?}"),
                stop,
                task,
            },
        );
        Ok(())
    }

    async fn run(mut self, mut rx: watch::Receiver<Vec<RemoteWriteConfig>>) {
        loop {
            tokio::select! {
                c = rx.changed() => if c.is_err() { break },
                _ = self.stop.cancelled() => break,
            }
            let cfgs = rx.borrow_and_update().clone();
            self.replace(&cfgs).await;
        }
        for (_, r) in self.running.drain() {
            let _ = r.task.await;
        }
    }

    async fn replace(&mut self, cfgs: &[RemoteWriteConfig]) {
        let wanted: HashMap<&str, String> = cfgs
            .iter()
            .map(|c| (c.name.as_str(), format!("{c:?}")))
            .collect();
        let outdated: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| wanted.get(name.as_str()) != Some(&r.settings))
            .map(|(name, _)| name.clone())
            .collect();
        for name in outdated {
            if let Some(r) = self.running.remove(&name) {
                r.stop.cancel();
                let _ = r.task.await;
                tracing::info!(endpoint = %name, "remote_write endpoint stopped by a reload");
            }
        }
        if let Err(e) = self.wal.retain_readers(&names(cfgs)) {
            tracing::warn!(error = %e, "forgetting removed remote_write positions");
        }
        for cfg in cfgs {
            if self.running.contains_key(&cfg.name) {
                continue;
            }
            match self.start_one(cfg) {
                Ok(()) => {
                    tracing::info!(endpoint = %cfg.name, url = %cfg.url.0, "remote_write endpoint started by a reload")
                }
                Err(e) => {
                    tracing::error!(endpoint = %cfg.name, error = %e, "remote_write endpoint not started")
                }
            }
        }
    }
}
