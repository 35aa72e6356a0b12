//! A scrape target stand-in: expositions by path, served as written, gzip-encoded, or
//! as a body that never ends; counts the scrapes of each path.

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What one path answers.
#[derive(Clone)]
pub struct Page {
    body: Bytes,
    gzip: bool,
    endless: bool,
}

impl Page {
    /// `body` as text format 0.0.4, with its `Content-Length`.
    pub fn text(body: impl Into<Bytes>) -> Page {
        Page {
            body: body.into(),
            gzip: false,
            endless: false,
        }
    }

    /// `body` gzip-compressed, with `Content-Encoding: gzip`.
    pub fn gzip(body: impl AsRef<[u8]>) -> Page {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body.as_ref()).expect("gzip into memory");
        Page {
            body: e.finish().expect("gzip into memory").into(),
            gzip: true,
            endless: false,
        }
    }

    /// `chunk` repeated forever, chunked (no `Content-Length`).
    pub fn endless(chunk: impl Into<Bytes>) -> Page {
        Page {
            body: chunk.into(),
            gzip: false,
            endless: true,
        }
    }

    /// The body's size as sent (compressed for a gzip page).
    pub fn wire_len(&self) -> usize {
        self.body.len()
    }

    fn response(&self) -> Response {
        let content_type = (
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        );
        if self.endless {
            let chunks = repeat(self.body.clone());
            return ([content_type], Body::from_stream(chunks)).into_response();
        }
        if self.gzip {
            return (
                [content_type, (header::CONTENT_ENCODING, "gzip")],
                self.body.clone(),
            )
                .into_response();
        }
        ([content_type], self.body.clone()).into_response()
    }
}

/// An endless stream of `chunk`.
fn repeat(
    chunk: Bytes,
) -> impl tokio_stream::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    tokio_stream::iter(std::iter::repeat(chunk).map(Ok))
}

/// The server, on a free 127.0.0.1 port; stopped when the runtime ends.
#[derive(Clone)]
pub struct Exposer {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, u64>>>,
}

impl Exposer {
    /// Serves `pages` by path (`/metrics`); other paths answer 404.
    pub async fn start(pages: Vec<(&str, Page)>) -> Exposer {
        let pages: Arc<HashMap<String, Page>> = Arc::new(
            pages
                .into_iter()
                .map(|(path, page)| (path.to_string(), page))
                .collect(),
        );
        let hits: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let pages = pages.clone();
            let hits = counted.clone();
            async move {
                let path = uri.path().to_string();
                *hits.lock().expect("hits").entry(path.clone()).or_default() += 1;
                match pages.get(&path) {
                    Some(page) => page.response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Exposer { addr, hits }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How often `path` was asked for.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}
