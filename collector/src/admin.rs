//! The collector's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use crate::buffer::Buffer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::Registry;

#[derive(Clone)]
struct Admin {
    registry: Registry,
    buffer: Buffer,
}

pub fn router(registry: Registry, buffer: Buffer) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Admin { registry, buffer })
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    edgewatch_otlp::server::metrics_response(&a.registry)
}

async fn readyz(State(a): State<Admin>) -> impl IntoResponse {
    if a.buffer.writable() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "buffer cannot accept writes\n",
        )
    }
}
