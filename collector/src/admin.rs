//! The collector's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use crate::buffer::Buffer;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};

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

/// Renders a registry in the Prometheus text format.
pub async fn metrics_response(registry: &Registry) -> impl IntoResponse {
    let enc = TextEncoder::new();
    let mut body = Vec::new();
    match enc.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, enc.format_type().to_string())],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            e.to_string().into_bytes(),
        ),
    }
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    metrics_response(&a.registry).await
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
