use super::*;
use axum::body::Body;
use axum::routing::get;
use edgewatch_config::auth::BcryptHash;
use tower::ServiceExt;

fn app(users: &[(&str, &str)]) -> (axum::Router, IntCounterVec) {
    let users: BasicAuthUsers = users
        .iter()
        .map(|(u, p)| (u.to_string(), BcryptHash(bcrypt::hash(p, 4).unwrap())))
        .collect();
    let failures = IntCounterVec::new(prometheus::Opts::new("f", "f"), &["reason"]).unwrap();
    let routes = axum::Router::new()
        .route("/", get(|| async { "page" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/api/v1/silences",
            get(|| async { "[]" }).post(|| async { "posted" }),
        )
        .route(
            "/api/v1/silence/{id}",
            axum::routing::delete(|| async { "deleted" }),
        );
    (protect(routes, &users, failures.clone()), failures)
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

async fn send(app: &axum::Router, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.clone()
        .oneshot(req.body(Body::from("{}")).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn basic_auth_protects_everything_but_the_probes() {
    let (app, failures) = app(&[("prometheus", "s3cret"), ("ops", "other")]);
    let good = basic("prometheus", "s3cret");
    for (path, auth, want) in [
        ("/", None, 401),
        ("/", Some(good.clone()), 200),
        ("/", Some(basic("prometheus", "wrong")), 401),
        ("/", Some(basic("nobody", "s3cret")), 401),
        ("/", Some(basic("ops", "s3cret")), 401),
        ("/", Some(basic("ops", "other")), 200),
        ("/", Some("Bearer s3cret".to_string()), 401),
        ("/", Some("Basic !!!".to_string()), 401),
        ("/api/v1/silences", None, 401),
        ("/api/v1/silences", Some(good.clone()), 200),
        // Remembered after the first verification: still checked.
        ("/api/v1/silences", Some(basic("prometheus", "s3cre")), 401),
        ("/api/v1/silences", Some(good.clone()), 200),
        ("/healthz", None, 200),
        ("/readyz", None, 200),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = send(&app, "GET", path, &headers).await;
        assert_eq!(r.status(), want, "{path} {auth:?}");
        if want == 401 {
            let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Basic "), "{challenge}");
        }
    }
    let missing = failures.with_label_values(&["basic_auth_missing"]).get();
    let invalid = failures.with_label_values(&["basic_auth_invalid"]).get();
    assert_eq!((missing, invalid), (4, 4));
}

#[tokio::test]
async fn state_changes_need_json_with_or_without_auth() {
    let (open, _) = app(&[]);
    let (closed, _) = app(&[("u", "p")]);
    let auth = basic("u", "p");
    for (app, auth) in [(&open, None), (&closed, Some(auth.as_str()))] {
        for (method, path, ct, want) in [
            ("POST", "/api/v1/silences", Some("application/json"), 200),
            (
                "POST",
                "/api/v1/silences",
                Some("application/json; charset=utf-8"),
                200,
            ),
            ("POST", "/api/v1/silences", Some("text/plain"), 415),
            (
                "POST",
                "/api/v1/silences",
                Some("application/x-www-form-urlencoded"),
                415,
            ),
            ("POST", "/api/v1/silences", None, 415),
            ("DELETE", "/api/v1/silence/x", Some("application/json"), 200),
            ("DELETE", "/api/v1/silence/x", Some("text/plain"), 415),
            ("GET", "/api/v1/silences", Some("text/plain"), 200),
        ] {
            let mut headers = Vec::new();
            headers.extend(ct.map(|c| ("content-type", c)));
            headers.extend(auth.map(|a| ("authorization", a)));
            let r = send(app, method, path, &headers).await;
            assert_eq!(
                r.status(),
                want,
                "{method} {path} {ct:?} auth={}",
                auth.is_some()
            );
        }
    }
    // Without credentials the answer is 401, whatever the body says.
    let r = send(
        &closed,
        "POST",
        "/api/v1/silences",
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let (app, _) = app(&[("u", "p")]);
    for (path, auth) in [
        ("/", Some(basic("u", "p"))),
        ("/", None),
        ("/healthz", None),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = send(&app, "GET", path, &headers).await;
        let h = r.headers();
        assert_eq!(
            h["content-security-policy"], CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
    }
}
