//! The collector's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz` (and
//! `POST /-/reload`, added by the caller when the config came from a file).

use crate::buffer::Buffer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use edgewatch_otlp::ready::Readiness;
use prometheus::Registry;

#[derive(Clone)]
struct Admin {
    registry: Registry,
    buffer: Buffer,
    readiness: Readiness,
}

pub fn router(registry: Registry, buffer: Buffer, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Admin {
            registry,
            buffer,
            readiness,
        })
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    edgewatch_otlp::server::metrics_response(&a.registry)
}

/// Ready once the receivers listen (the buffer is open before), while the
/// buffer accepts writes, until shutdown starts.
async fn readyz(State(a): State<Admin>) -> impl IntoResponse {
    if let Err(why) = a.readiness.check() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        );
    }
    if a.buffer.writable() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "buffer cannot accept writes\n".to_string(),
        )
    }
}
