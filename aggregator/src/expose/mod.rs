//! `/federate` (Prometheus web/federate.go semantics) over the store.
//!
//! - one or more `match[]` parameters, each a PromQL instant vector selector;
//!   the union of their matches is served, each series once;
//! - no `match[]`, or one that does not parse (or would select everything,
//!   like `{job=~".*"}`) → HTTP 400 naming the selector;
//! - the newest sample of every non-stale series WITH its timestamp, sorted
//!   by family name then labels, one `# TYPE` per family;
//! - text 0.0.4 by default, OpenMetrics 1.0 when `Accept` prefers
//!   `application/openmetrics-text`.

pub mod render;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::now_ms;
use crate::store::{Selector, Store};
pub use render::{render, Format};

/// The `/federate` route (GET only) over `store`.
pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/federate", get(federate))
        .with_state(store)
}

async fn federate(
    State(store): State<Arc<Store>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let selectors = match parse_match_params(query.as_deref().unwrap_or("")) {
        Ok(s) => s,
        Err(msg) => return (StatusCode::BAD_REQUEST, msg).into_response(),
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = negotiate(accept);
    let now = now_ms();
    // Selecting, sorting and encoding a large store is CPU work: keep it off the
    // async workers, and stream the body while the rest is rendered. The selection
    // is a copy (no store lock is held past `select`), and at most the channel's
    // chunks wait for the client: one that stops reading is cut off by the server's
    // response timeout (`edgewatch_tls::serve`), which drops `rx`, so `send` fails and
    // the rendering stops, freeing its thread and the selection.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    tokio::task::spawn_blocking(move || {
        let sel = store.select(&selectors, now);
        let mut out = Vec::with_capacity(CHUNK + 4096);
        let mut send = |buf: &mut Vec<u8>| {
            let full = std::mem::replace(buf, Vec::with_capacity(CHUNK + 4096));
            tx.blocking_send(bytes::Bytes::from(full)).is_ok()
        };
        render::render_chunked(&sel, format, CHUNK, &mut out, &mut send);
        if !out.is_empty() {
            send(&mut out);
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// Bytes rendered before they are handed to the connection.
const CHUNK: usize = 1 << 20;

/// Parses every `match[]` parameter of a raw query string. The error is the
/// HTTP 400 body.
pub fn parse_match_params(query: &str) -> Result<Vec<Selector>, String> {
    let mut out = Vec::new();
    let mut seen = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if url_decode(k) != "match[]" {
            continue;
        }
        seen = true;
        let v = url_decode(v);
        match Selector::parse(&v) {
            Ok(s) => out.extend(s),
            Err(e) => return Err(format!("bad match[] selector {v:?}: {e}\n")),
        }
    }
    if !seen {
        return Err("no match[] parameter provided\n".into());
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// OpenMetrics when the client's `Accept` gives `application/openmetrics-text`
/// a q-value > 0 that is at least that of `text/plain` (or `*/*`).
pub fn negotiate(accept: &str) -> Format {
    let mut q_om: f32 = 0.0;
    let mut q_text: f32 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some(v) = p.strip_prefix("q=") {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        match media.as_str() {
            "application/openmetrics-text" => q_om = q_om.max(q),
            "text/plain" | "*/*" | "text/*" => q_text = q_text.max(q),
            _ => {}
        }
    }
    if q_om > 0.0 && q_om >= q_text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

#[cfg(test)]
mod tests;
