//! HTTP API: silences in Alertmanager's JSON model, and the current alert groups.
//!
//! - `POST /api/v1/silences` `{id?, matchers:[{name,value,isRegex,isEqual}], startsAt,
//!   endsAt, createdBy, comment}` → `{"silenceID": "..."}` (with `id`: update)
//! - `GET /api/v1/silences` → list, each with `status.state` pending|active|expired
//! - `GET /api/v1/silence/{id}`, `DELETE /api/v1/silence/{id}` (expires it)
//! - `GET /api/v1/alerts/groups` → `[{labels, receiver, groupKey, alerts:[...]}]`

use super::silence::{Silence, SilenceJson};
use super::Notifier;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::json;

pub fn router(n: Notifier) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/silences", get(list_silences).post(post_silence))
        .route(
            "/api/v1/silence/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/api/v1/alerts/groups", get(groups))
        .with_state(n)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

async fn post_silence(State(n): State<Notifier>, body: axum::body::Bytes) -> Response {
    let j: SilenceJson = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid silence: {e}")),
    };
    let inner = &n.inner;
    let now = inner.now();
    let mut s = match Silence::from_json(&j, now) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    {
        let mut sil = inner.silences.write().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = j.id.as_deref().filter(|s| !s.is_empty()) {
            match sil.get(id) {
                None => return error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
                Some(old) if old.ends_at <= now => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "an expired silence can't be updated",
                    )
                }
                Some(_) => {}
            }
        }
        s.updated_at = now;
        sil.insert(s.id.clone(), s.clone());
    }
    inner.save_silence(&s);
    Json(json!({"silenceID": s.id})).into_response()
}

async fn list_silences(State(n): State<Notifier>) -> Response {
    let now = n.inner.now();
    let sil = n.inner.silences.read().unwrap_or_else(|e| e.into_inner());
    Json(sil.values().map(|s| s.to_json(now)).collect::<Vec<_>>()).into_response()
}

async fn get_silence(State(n): State<Notifier>, Path(id): Path<String>) -> Response {
    let now = n.inner.now();
    let sil = n.inner.silences.read().unwrap_or_else(|e| e.into_inner());
    match sil.get(&id) {
        Some(s) => Json(s.to_json(now)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
    }
}

async fn delete_silence(State(n): State<Notifier>, Path(id): Path<String>) -> Response {
    let now = n.inner.now();
    let s = {
        let mut sil = n.inner.silences.write().unwrap_or_else(|e| e.into_inner());
        match sil.get_mut(&id) {
            Some(s) => {
                s.expire(now);
                s.clone()
            }
            None => return error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
        }
    };
    n.inner.save_silence(&s);
    StatusCode::OK.into_response()
}

async fn groups(State(n): State<Notifier>) -> Response {
    let inner = &n.inner;
    let now = inner.now();
    let d = inner.lock_dispatcher();
    let out: Vec<_> = d
        .groups
        .values()
        .map(|g| {
            json!({
                "labels": g.labels,
                "receiver": d.tree.nodes[g.route].receiver,
                "groupKey": g.key,
                "alerts": g.alerts.values().map(|a| json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": super::model::rfc3339(a.starts_at),
                    "endsAt": a.ends_at.map(super::model::rfc3339),
                    "status": if a.resolved_at(now) { "resolved" } else if inner.muted(&d, a, now) { "suppressed" } else { "active" },
                    "fingerprint": super::model::fingerprint_hex(a.fingerprint()),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(out).into_response()
}
