//! What stands in front of every HTTP route of the aggregator (Prometheus
//! `web.config.file` style):
//!
//! - with `http.basic_auth_users`, every path but `/healthz` and `/readyz` needs
//!   HTTP basic auth (401 with `WWW-Authenticate: Basic` otherwise);
//! - a state-changing request (POST, PUT, PATCH, DELETE) needs `Content-Type:
//!   application/json` (415 otherwise), with or without auth: a cross-site form
//!   post from an operator's browser can send only form or text types;
//! - every answer says `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`
//!   and a Content-Security-Policy that allows only this origin's scripts,
//!   styles and API calls (the status page has no inline code).
//!
//! bcrypt is slow by design (tens of milliseconds at cost 10): a password that
//! verified is remembered per user, so a scraper sending the same credentials
//! every 15 s costs one hash; verifications run on the blocking pool, a few at a
//! time.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use edgewatch_config::auth::BasicAuthUsers;
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The status page's policy: nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// bcrypt verifications running at once.
const VERIFY_CONCURRENCY: usize = 2;

/// Paths open without credentials (probes).
const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

#[derive(Clone)]
struct Guard {
    users: Arc<BasicAuthUsers>,
    /// User → the password that last verified against its hash.
    verified: Arc<Mutex<HashMap<String, String>>>,
    verifying: Arc<tokio::sync::Semaphore>,
    failures: IntCounterVec,
}

/// `app` behind the checks above; failed logins are counted in `failures`
/// (`edgewatch_auth_failures_total`) as `basic_auth_missing` / `basic_auth_invalid`.
pub fn protect(app: axum::Router, users: &BasicAuthUsers, failures: IntCounterVec) -> axum::Router {
    for r in ["basic_auth_missing", "basic_auth_invalid"] {
        failures.with_label_values(&[r]);
    }
    let guard = Guard {
        users: Arc::new(users.clone()),
        verified: Arc::default(),
        verifying: Arc::new(tokio::sync::Semaphore::new(VERIFY_CONCURRENCY)),
        failures,
    };
    app.layer(axum::middleware::from_fn_with_state(guard, check))
}

async fn check(State(g): State<Guard>, req: Request, next: Next) -> Response {
    // The request's body is not `Sync`: the checks borrow only its head.
    let admitted = admit(&g, req.method(), req.uri().path(), req.headers()).await;
    let mut resp = match admitted {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    resp
}

async fn admit(g: &Guard, method: &Method, path: &str, h: &HeaderMap) -> Result<(), Response> {
    if !g.users.is_empty() && !OPEN_PATHS.contains(&path) {
        authenticate(g, h).await?;
    }
    if changes_state(method) && !is_json(h) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "state-changing requests need Content-Type: application/json\n",
        )
            .into_response());
    }
    Ok(())
}

fn changes_state(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn authenticate(g: &Guard, h: &HeaderMap) -> Result<(), Response> {
    let Some((user, password)) = basic_credentials(h) else {
        return Err(refuse(g, "basic_auth_missing"));
    };
    let Some(hash) = g.users.get(&user) else {
        return Err(refuse(g, "basic_auth_invalid"));
    };
    let known = g
        .verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&user)
        .is_some_and(|p| constant_time_eq(p.as_bytes(), password.as_bytes()));
    if known {
        return Ok(());
    }
    let Ok(_turn) = g.verifying.acquire().await else {
        return Err(refuse(g, "basic_auth_invalid"));
    };
    let hash = hash.0.clone();
    let candidate = password.clone();
    let ok = tokio::task::spawn_blocking(move || bcrypt::verify(candidate, &hash))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    if !ok {
        return Err(refuse(g, "basic_auth_invalid"));
    }
    g.verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(user, password);
    Ok(())
}

/// `Authorization: Basic base64(user:password)`.
fn basic_credentials(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Compares without stopping at the first difference (the length still shows).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn refuse(g: &Guard, reason: &str) -> Response {
    g.failures.with_label_values(&[reason]).inc();
    let mut r = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"edgewatch\", charset=\"UTF-8\""),
    );
    r
}

#[cfg(test)]
mod tests;
