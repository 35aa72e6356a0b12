//! OTLP/JSON through the real `/v1/metrics` route (the first input byte picks
//! plain or gzip-compressed, the rest is the body).
//!
//! Invariants: the route answers 200, 400 or 413, never a server error; every body
//! it hands to the sink is a valid protobuf export request that both the
//! collector's shallow decode and the aggregator's view accept, with equal counts;
//! a body serde_json decodes as a request is accepted unless it is too large.
#![no_main]

use bytes::Bytes;
use edgewatch_otlp::{
    decode_request, shallow::decode_shallow, view, ExportContext, ExportError,
    ExportMetricsServiceRequest, ExportOutcome, MetricsSink,
};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

const LIMIT: usize = 1 << 20;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

#[derive(Clone, Default)]
struct Checker(Arc<AtomicBool>);

impl MetricsSink for Checker {
    async fn export(&self, body: Bytes, _: ExportContext) -> Result<ExportOutcome, ExportError> {
        let (_, points) = decode_shallow(body.clone()).expect("JSON re-encoding is valid protobuf");
        view::decode(&body).expect("the view accepts the JSON re-encoding");
        let full = decode_request(&body).expect("prost decodes the JSON re-encoding");
        assert_eq!(points, edgewatch_otlp::count_points(&full));
        self.0.store(true, Ordering::Relaxed);
        Ok(ExportOutcome::default())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, json)) = data.split_first() else {
        return;
    };
    let gzip = mode & 1 == 1;
    let body = if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(json).unwrap();
        e.finish().unwrap()
    } else {
        json.to_vec()
    };
    let mut req =
        axum::http::Request::post("/v1/metrics").header("content-type", "application/json");
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    let req = req.body(axum::body::Body::from(body)).unwrap();
    let sink = Checker::default();
    let app = edgewatch_otlp::http::router(sink.clone(), LIMIT);
    let (status, answer) = runtime().block_on(async {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    assert!(
        [200, 400, 413].contains(&status.as_u16()),
        "status {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        status == 200,
        sink.0.load(Ordering::Relaxed),
        "200 without export, or the reverse"
    );
    if serde_json::from_slice::<ExportMetricsServiceRequest>(json).is_ok() {
        assert!(
            status == 200 || status == 413 || status == 400 && answer_names_limit(&answer),
            "valid JSON refused: {status}"
        );
    }
});

/// A 400 for an element-count cap (allowed for valid JSON) names the limit.
fn answer_names_limit(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer).to_ascii_lowercase();
    text.contains("limit") || text.contains("too many")
}
