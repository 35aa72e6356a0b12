//! Where scrapes are parsed and converted: blocking threads, a bounded number at once.
//! The collector's runtime has one worker thread, which also receives OTLP, forwards
//! and answers `/healthz`; an exposition that takes seconds to parse must not hold it.

use prometheus::IntGauge;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Parses and conversions at once: a quarter of the edge runtime's blocking threads
/// (8), so that the buffer's own blocking work always finds one. More than one, so a
/// hostile target (held to its deadline) does not make every other target wait.
pub const SLOTS: usize = 2;

/// The bounded set of blocking threads scrapes are processed on.
#[derive(Clone)]
pub struct Pool {
    slots: Arc<Semaphore>,
    running: IntGauge,
    waiting: IntGauge,
}

/// The pool was closed (nothing closes it while a target runs).
#[derive(Debug, thiserror::Error)]
#[error("the scrape processing pool is closed")]
pub struct Closed;

/// The right to run one job; held until the job ends.
pub struct Slot {
    permit: OwnedSemaphorePermit,
    running: IntGauge,
}

impl Pool {
    /// `running` / `waiting` count jobs on a thread and jobs waiting for a slot.
    pub fn new(slots: usize, running: IntGauge, waiting: IntGauge) -> Self {
        Pool {
            slots: Arc::new(Semaphore::new(slots)),
            running,
            waiting,
        }
    }

    /// Waits for a free slot (counted in `waiting` meanwhile, also if the wait is
    /// given up).
    pub async fn slot(&self) -> Result<Slot, Closed> {
        struct Waiting(IntGauge);
        impl Drop for Waiting {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.waiting.inc();
        let _waiting = Waiting(self.waiting.clone());
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Closed)?;
        Ok(Slot {
            permit,
            running: self.running.clone(),
        })
    }
}

impl Slot {
    /// Runs `work` on a blocking thread; the slot is free again when it returns.
    pub fn spawn<T, F>(self, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            self.running.inc();
            let out = work();
            self.running.dec();
            drop(self.permit);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn at_most_slots_jobs_run_and_the_rest_wait_counted() {
        let running = IntGauge::new("r", "r").unwrap();
        let waiting = IntGauge::new("w", "w").unwrap();
        let pool = Pool::new(1, running.clone(), waiting.clone());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let first = pool.slot().await.unwrap().spawn(move || rx.recv().is_ok());
        let p = pool.clone();
        let second = tokio::spawn(async move { p.slot().await.unwrap().spawn(|| 2).await });
        edgewatch_testkit::eventually(Duration::from_secs(5), "one running, one waiting", || {
            let (r, w) = (running.get(), waiting.get());
            async move { r == 1 && w == 1 }
        })
        .await;
        tx.send(()).unwrap();
        assert!(first.await.unwrap());
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!((running.get(), waiting.get()), (0, 0));
    }
}
