use super::*;
use crate::store::{MetricType, StoreOptions};
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

fn small_store(now: i64) -> Store {
    let st = Store::new(StoreOptions::default(), &prometheus::Registry::new());
    let c = st.family(
        "http_requests_total",
        MetricType::Counter,
        "Requests \"served\"\\ \nby code.",
        "",
    );
    st.write(
        c,
        "http_requests_total",
        &[("code", "200"), ("job", "api")],
        1027.0,
        1_700_000_000_123,
        now,
    );
    st.write(
        c,
        "http_requests_total",
        &[("code", "500"), ("job", "api"), ("empty", "")],
        3.0,
        1_700_000_000_123,
        now,
    );
    let g = st.family("temp_celsius", MetricType::Gauge, "", "celsius");
    st.write(
        g,
        "temp_celsius",
        &[("path", "C:\\dir\n\"x\"")],
        f64::NAN,
        1_000,
        now,
    );
    st.write(
        g,
        "temp_celsius",
        &[("path", "a")],
        f64::INFINITY,
        1_000,
        now,
    );
    st.write(
        g,
        "temp_celsius",
        &[("path", "b")],
        f64::NEG_INFINITY,
        1_000,
        now,
    );
    st.write(g, "temp_celsius", &[("path", "c")], 1e-7, 1_000, now);
    let h = st.family("lat_seconds", MetricType::Histogram, "Latency.", "seconds");
    for (le, v) in [("0.5", 1.0), ("1", 2.0), ("+Inf", 3.0)] {
        st.write(h, "lat_seconds_bucket", &[("le", le)], v, 2_000, now);
    }
    st.write(h, "lat_seconds_sum", &[], 1.75, 2_000, now);
    st.write(h, "lat_seconds_count", &[], 3.0, 2_000, now);
    let s = st.family("rpc", MetricType::Summary, "", "");
    st.write(s, "rpc", &[("quantile", "0.99")], 4.0, 3_000, now);
    st.write(s, "rpc_sum", &[], 9.0, 3_000, now);
    st.write(s, "rpc_count", &[], 2.0, 3_000, now);
    let raw = st.family("ovms_requests_success", MetricType::Counter, "", "");
    st.write(
        raw,
        "ovms_requests_success",
        &[("name", "resnet")],
        5.0,
        4_000,
        now,
    );
    st
}

fn render_all(st: &Store, f: Format, now: i64) -> String {
    let sel = st.select(&Selector::parse(r#"{__name__=~".+"}"#).unwrap(), now);
    let mut out = Vec::new();
    render(&sel, f, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn text_exposition_exact() {
    let st = small_store(10);
    let want = "\
# HELP http_requests_total Requests \"served\"\\\\ \\nby code.
# TYPE http_requests_total counter
http_requests_total{code=\"200\",job=\"api\"} 1027 1700000000123
http_requests_total{code=\"500\",job=\"api\"} 3 1700000000123
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{le=\"0.5\"} 1 2000
lat_seconds_bucket{le=\"1\"} 2 2000
lat_seconds_bucket{le=\"+Inf\"} 3 2000
lat_seconds_sum 1.75 2000
lat_seconds_count 3 2000
# TYPE ovms_requests_success counter
ovms_requests_success{name=\"resnet\"} 5 4000
# TYPE rpc summary
rpc{quantile=\"0.99\"} 4 3000
rpc_sum 9 3000
rpc_count 2 3000
# TYPE temp_celsius gauge
temp_celsius{path=\"C:\\\\dir\\n\\\"x\\\"\"} NaN 1000
temp_celsius{path=\"a\"} +Inf 1000
temp_celsius{path=\"b\"} -Inf 1000
temp_celsius{path=\"c\"} 1e-07 1000
";
    assert_eq!(render_all(&st, Format::Text, 10), want);
}

#[test]
fn openmetrics_exposition_exact() {
    let st = small_store(10);
    let want = "\
# HELP http_requests Requests \\\"served\\\"\\\\ \\nby code.
# TYPE http_requests counter
http_requests_total{code=\"200\",job=\"api\"} 1027.0 1.700000000123e+09
http_requests_total{code=\"500\",job=\"api\"} 3.0 1.700000000123e+09
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{le=\"0.5\"} 1 2.0
lat_seconds_bucket{le=\"1.0\"} 2 2.0
lat_seconds_bucket{le=\"+Inf\"} 3 2.0
lat_seconds_sum 1.75 2.0
lat_seconds_count 3 2.0
# TYPE ovms_requests_success unknown
ovms_requests_success{name=\"resnet\"} 5.0 4.0
# TYPE rpc summary
rpc{quantile=\"0.99\"} 4.0 3.0
rpc_sum 9.0 3.0
rpc_count 2 3.0
# TYPE temp_celsius gauge
temp_celsius{path=\"C:\\\\dir\\n\\\"x\\\"\"} NaN 1.0
temp_celsius{path=\"a\"} +Inf 1.0
temp_celsius{path=\"b\"} -Inf 1.0
temp_celsius{path=\"c\"} 1e-07 1.0
# EOF
";
    assert_eq!(render_all(&st, Format::OpenMetrics, 10), want);
}

#[test]
fn stale_series_are_omitted() {
    let st = Store::new(
        StoreOptions {
            staleness: std::time::Duration::from_secs(60),
        },
        &prometheus::Registry::new(),
    );
    let g = st.family("g", MetricType::Gauge, "", "");
    st.write(g, "g", &[("a", "old")], 1.0, 0, 0);
    st.write(g, "g", &[("a", "new")], 2.0, 0, 50_000);
    assert_eq!(
        render_all(&st, Format::Text, 100_000),
        "# TYPE g gauge\ng{a=\"new\"} 2 0\n"
    );
    // no matching series at all: an empty body (OpenMetrics: just # EOF)
    assert_eq!(render_all(&st, Format::Text, 1_000_000), "");
    assert_eq!(render_all(&st, Format::OpenMetrics, 1_000_000), "# EOF\n");
}

#[test]
fn match_params() {
    let ok = |q: &str| parse_match_params(q).map(|v| v.len());
    assert_eq!(ok("match[]=up"), Ok(1));
    assert_eq!(ok("match%5B%5D=up&match[]=%7Bjob%3D~%22.%2B%22%7D"), Ok(2));
    assert_eq!(ok("match[]={job=~\".+\"}&other=1"), Ok(1));
    assert_eq!(
        ok("match[]=%7B__name__%3D~%22ovms_.*%22%2Ccluster%3D%22edge-a%22%7D"),
        Ok(1)
    );
    let err = parse_match_params("").unwrap_err();
    assert!(err.contains("no match[]"), "{err}");
    let err = parse_match_params("match[]=up&match[]=%7Bjob%3D~%22.*%22%7D").unwrap_err();
    assert!(
        err.contains(r#"{job=~\".*\"}"#),
        "names the selector: {err}"
    );
    let err = parse_match_params("match[]=sum(up)").unwrap_err();
    assert!(err.contains("sum(up)"), "{err}");
    assert!(parse_match_params("match[]=").is_err());
    assert_eq!(url_decode("a+b%20c%zz%4"), "a b c%zz%4");
}

#[test]
fn negotiation_table() {
    let cases = [
        ("", Format::Text),
        ("text/plain", Format::Text),
        ("*/*", Format::Text),
        ("application/openmetrics-text", Format::OpenMetrics),
        // what Prometheus 2.x/3.x sends by default
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            Format::OpenMetrics,
        ),
        ("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5", Format::Text),
        ("application/openmetrics-text;q=0", Format::Text),
        ("Application/OpenMetrics-Text; version=1.0.0", Format::OpenMetrics),
    ];
    for (accept, want) in cases {
        assert_eq!(negotiate(accept), want, "{accept}");
    }
}

async fn call(app: Router, uri: &str, accept: Option<&str>) -> (StatusCode, String, String) {
    let mut req = Request::builder().uri(uri);
    if let Some(a) = accept {
        req = req.header(header::ACCEPT, a);
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, ct, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn router_status_codes_and_content_types() {
    let st = Arc::new(small_store(now_ms()));
    let app = router(st.clone());

    let (s, ct, body) = call(app.clone(), "/federate?match[]=rpc_sum", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(body, "# TYPE rpc summary\nrpc_sum 9 3000\n");

    let (s, ct, body) = call(
        app.clone(),
        "/federate?match%5B%5D=rpc_sum",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(body, "# TYPE rpc summary\nrpc_sum 9.0 3.0\n# EOF\n");

    let (s, _, body) = call(app.clone(), "/federate", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("match[]"));

    let (s, _, body) = call(app.clone(), "/federate?match[]=%7Bjob%3D~%22.*%22%7D", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("{job=~\\\".*\\\"}"), "{body}");

    let (s, _, _) = call(app.clone(), "/federate?match[]=up%7B", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let resp = app
        .clone()
        .oneshot(
            Request::post("/federate?match[]=up")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

    let (s, _, _) = call(app, "/metrics", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
