//! A request as buffer entries no larger than the forwarder's batch limit: the
//! forwarder sends an entry whole (the core drops replays by entry), so an entry over
//! the limit could never be delivered. Entries are cut at `ResourceMetrics`
//! boundaries; a resource too large alone is repeated with part of its scopes in
//! each copy (OTLP gives both forms the same meaning). A scope too large alone
//! cannot be cut without decoding its data points: the request is refused.

use bytes::Bytes;
use edgewatch_otlp::shallow::{check_scope, ShallowRequest, ShallowResourceMetrics};
use prost::encoding::{encoded_len_varint, key_len};
use prost::Message;

/// One scope metrics message, with its resource, is over the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "resource_metrics[{resource}].scope_metrics[{scope}] takes {bytes} bytes with its \
     resource, over this collector's limit of {limit} bytes per entry (forward.max_batch_bytes)"
)]
pub struct Oversized {
    resource: usize,
    scope: usize,
    bytes: usize,
    limit: usize,
}

/// The request's entries: (data points, encoded request) each at most `limit`
/// bytes. `points` is the request's count (the walk that checked it).
pub fn entries(
    req: ShallowRequest,
    points: u64,
    limit: usize,
) -> Result<Vec<(u64, Bytes)>, Oversized> {
    if req.encoded_len() <= limit {
        return Ok(vec![(points, Bytes::from(req.encode_to_vec()))]);
    }
    let mut out = Vec::new();
    let mut cur = Entry::default();
    for (r, rm) in req.resource_metrics.into_iter().enumerate() {
        for (piece, n) in pieces(rm, limit).map_err(|(scope, bytes)| Oversized {
            resource: r,
            scope,
            bytes,
            limit,
        })? {
            let len = field_len(piece.encoded_len());
            if cur.len + len > limit && !cur.req.resource_metrics.is_empty() {
                out.push(std::mem::take(&mut cur).finish());
            }
            cur.len += len;
            cur.points += n;
            cur.req.resource_metrics.push(piece);
        }
    }
    if !cur.req.resource_metrics.is_empty() {
        out.push(cur.finish());
    }
    Ok(out)
}

#[derive(Default)]
struct Entry {
    req: ShallowRequest,
    len: usize,
    points: u64,
}

impl Entry {
    fn finish(self) -> (u64, Bytes) {
        (self.points, Bytes::from(self.req.encode_to_vec()))
    }
}

/// The encoded size of a length-delimited field with a one-byte key (tags 1, 2).
fn field_len(inner: usize) -> usize {
    key_len(1) + encoded_len_varint(inner as u64) + inner
}

/// `rm` whole when it fits, else copies of it with consecutive runs of its scopes,
/// each with its point count. Err: (index, size) of a scope too large alone.
fn pieces(
    rm: ShallowResourceMetrics,
    limit: usize,
) -> Result<Vec<(ShallowResourceMetrics, u64)>, (usize, usize)> {
    // Checked by `decode_shallow`, which would have refused a malformed scope.
    let points = |sm: &Bytes| check_scope(sm, 2).unwrap_or(0);
    if field_len(rm.encoded_len()) <= limit {
        let n = rm.scope_metrics.iter().map(points).sum();
        return Ok(vec![(rm, n)]);
    }
    let empty = || ShallowResourceMetrics {
        resource: rm.resource.clone(),
        scope_metrics: Vec::new(),
        schema_url: rm.schema_url.clone(),
    };
    let base = empty().encoded_len();
    let mut out = Vec::new();
    let (mut cur, mut inner, mut n) = (empty(), base, 0);
    for (s, sm) in rm.scope_metrics.iter().enumerate() {
        let len = field_len(sm.len());
        if field_len(base + len) > limit {
            return Err((s, field_len(base + len)));
        }
        if field_len(inner + len) > limit {
            out.push((std::mem::replace(&mut cur, empty()), n));
            (inner, n) = (base, 0);
        }
        inner += len;
        n += points(sm);
        cur.scope_metrics.push(sm.clone());
    }
    if !cur.scope_metrics.is_empty() {
        out.push((cur, n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
