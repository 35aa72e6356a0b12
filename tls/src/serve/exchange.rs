//! One request on a connection: its permit, its timeouts, its connect info, and the
//! bodies that tell the connection when the request is over.

use super::metrics::Reason;
use super::tracker::Slot;
use super::Server;
use crate::accept::TlsPeer;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{watch, OwnedSemaphorePermit};

/// What a connection's requests share.
pub(super) struct Exchange {
    pub(super) server: Arc<Server>,
    pub(super) slot: Arc<Slot>,
    pub(super) deadline: watch::Sender<Option<tokio::time::Instant>>,
    pub(super) addr: SocketAddr,
    pub(super) tls_peer: Option<TlsPeer>,
}

impl Exchange {
    pub(super) async fn handle(&self, req: Request<Incoming>) -> Response<axum::body::Body> {
        let limits = &self.server.limits;
        let Ok(permit) = self.server.requests.clone().try_acquire_owned() else {
            self.server.refused(self.addr, Reason::Busy);
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many requests at once (limit {}); retry later\n",
                    limits.max_requests
                ),
            );
        };
        let busy = Busy::new(self.slot.clone(), permit, self.deadline.clone());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.addr));
        if let Some(p) = &self.tls_peer {
            parts.extensions.insert(ConnectInfo(p.clone()));
        }
        let received = Arc::new(AtomicBool::new(body.is_end_stream()));
        let body = Received {
            inner: body,
            done: received.clone(),
        };
        let req = Request::from_parts(parts, axum::body::Body::new(body));
        let call = tower::Service::call(&mut self.server.app.clone(), req);
        let resp = match tokio::time::timeout(limits.request_timeout, call).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(never)) => match never {},
            Err(_) if !received.load(Ordering::Acquire) => {
                self.server.refused(self.addr, Reason::RequestTimeout);
                let mut r = refused(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request was not received within {} s\n",
                        limits.request_timeout.as_secs()
                    ),
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            Err(_) => {
                self.server.refused(self.addr, Reason::AnswerTimeout);
                refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "no answer within {} s; retry later\n",
                        limits.request_timeout.as_secs()
                    ),
                )
            }
        };
        let _ = self
            .deadline
            .send_replace(Some(tokio::time::Instant::now() + limits.response_timeout));
        resp.map(|inner| axum::body::Body::new(Guarded { inner, _busy: busy }))
    }
}

/// A 503/408 of this layer; 503s say when to retry.
fn refused(status: StatusCode, msg: String) -> Response<axum::body::Body> {
    let mut r = Response::new(axum::body::Body::from(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// A request in progress on a connection, from its head to the end of its answer:
/// holds a request permit, keeps the connection from being closed for a new one,
/// and clears the response deadline when it ends.
pub(super) struct Busy {
    slot: Arc<Slot>,
    _permit: OwnedSemaphorePermit,
    deadline: watch::Sender<Option<tokio::time::Instant>>,
}

impl Busy {
    pub(super) fn new(
        slot: Arc<Slot>,
        permit: OwnedSemaphorePermit,
        deadline: watch::Sender<Option<tokio::time::Instant>>,
    ) -> Busy {
        slot.busy.store(true, Ordering::Release);
        Busy {
            slot,
            _permit: permit,
            deadline,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot.busy.store(false, Ordering::Release);
        let _ = self.deadline.send_replace(None);
    }
}

/// A request body that notes when it has been read to its end.
pub(super) struct Received {
    inner: Incoming,
    done: Arc<AtomicBool>,
}

impl HttpBody for Received {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that ends its request's [`Busy`] when it is done (or dropped
/// because the connection closed).
pub(super) struct Guarded {
    inner: axum::body::Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
