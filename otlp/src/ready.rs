//! `/readyz` that means something: ready once every start-up condition a role
//! names is met, and not ready again from the moment shutdown starts (so a load
//! balancer stops sending before the listeners close).

use axum::http::StatusCode;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct State {
    /// Conditions not met yet, in the order they were named.
    waiting: Vec<&'static str>,
    stopping: bool,
}

/// A role's readiness. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    state: Arc<Mutex<State>>,
}

impl Readiness {
    /// Not ready until each of `conditions` is [`Readiness::met`]; not ready once
    /// `shutdown` is cancelled.
    pub fn new(conditions: &[&'static str], shutdown: &CancellationToken) -> Self {
        let r = Readiness {
            state: Arc::new(Mutex::new(State {
                waiting: conditions.to_vec(),
                stopping: false,
            })),
        };
        let (me, stop) = (r.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            me.lock().stopping = true;
        });
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more condition to wait for.
    pub fn wait_for(&self, condition: &'static str) {
        self.lock().waiting.push(condition);
    }

    pub fn met(&self, condition: &'static str) {
        self.lock().waiting.retain(|c| *c != condition);
    }

    /// Ok when ready; otherwise why not.
    pub fn check(&self) -> Result<(), String> {
        let st = self.lock();
        if st.stopping {
            return Err("shutting down".to_string());
        }
        if st.waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("waiting for {}", st.waiting.join(", ")))
        }
    }

    /// `GET /readyz`: 200 `ready`, or 503 `not ready: REASON`.
    pub fn router(&self) -> axum::Router {
        let me = self.clone();
        axum::Router::new().route(
            "/readyz",
            axum::routing::get(move || {
                let r = me.check();
                async move {
                    match r {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_when_every_condition_is_met_until_shutdown() {
        let stop = CancellationToken::new();
        let r = Readiness::new(&["listeners", "the first GitOps read"], &stop);
        assert_eq!(
            r.check(),
            Err("waiting for listeners, the first GitOps read".into())
        );
        r.met("listeners");
        assert_eq!(r.check(), Err("waiting for the first GitOps read".into()));
        r.met("the first GitOps read");
        assert_eq!(r.check(), Ok(()));
        stop.cancel();
        edgewatch_testkit::eventually(
            std::time::Duration::from_secs(10),
            "not ready after shutdown",
            || async { r.check() == Err("shutting down".into()) },
        )
        .await;
    }
}
