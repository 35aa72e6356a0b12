//! The on-disk decoders, reachable from the fuzz targets in `fuzz/` (not an API:
//! the encodings stay private to the buffer). Headers are plain tuples
//! `(points, points_before, appended_at_ms, raw_len)` so that [`format`]'s types
//! stay crate-private.

use super::format::{self, Header};

pub type HeaderTuple = (u64, u64, u64, u64);

fn tuple(h: &Header) -> HeaderTuple {
    (h.points, h.points_before, h.appended_at_ms, h.raw_len)
}

fn header(t: HeaderTuple) -> Header {
    Header {
        points: t.0,
        points_before: t.1,
        appended_at_ms: t.2,
        raw_len: t.3,
    }
}

/// The dictionary the active segment would build from `sample`.
pub fn make_dictionary(sample: &[u8]) -> Vec<u8> {
    format::make_dictionary(sample)
}

/// Decodes an active-segment entry compressed against `dict`.
pub fn decode_entry(v: &[u8], dict: &[u8]) -> Option<(HeaderTuple, Vec<u8>)> {
    let mut d = zstd::bulk::Decompressor::with_dictionary(dict).ok();
    format::decode(v, &mut d).map(|(h, p)| (tuple(&h), p))
}

/// Only the header of an entry.
pub fn decode_entry_header(v: &[u8]) -> Option<HeaderTuple> {
    format::decode_header(v).map(|(_, h, _)| tuple(&h))
}

/// Encodes an entry as the writer does.
pub fn encode_entry(h: HeaderTuple, payload: &[u8], dict: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::with_dictionary(3, dict)?;
    format::encode(&header(h), payload, &mut c)
}

/// Only the entry headers of a compacted block.
pub fn decode_block_headers(v: &[u8]) -> Option<Vec<HeaderTuple>> {
    format::decode_block_headers(v).map(|(hs, _, _)| hs.iter().map(tuple).collect())
}

/// Decodes a compacted block: its entry headers and concatenated payloads.
pub fn decode_block(v: &[u8]) -> Option<(Vec<HeaderTuple>, Vec<u8>)> {
    let mut d = zstd::bulk::Decompressor::new().ok()?;
    format::decode_block_raw(v, &mut d).map(|(hs, raw)| (hs.iter().map(tuple).collect(), raw))
}

/// Encodes a compacted block as compaction does.
pub fn encode_block(headers: &[HeaderTuple], raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let hs: Vec<Header> = headers.iter().copied().map(header).collect();
    let mut c = zstd::bulk::Compressor::new(3)?;
    format::encode_block(&hs, raw, &mut c)
}

/// `(first, points_before, compacted)` of a segment directory name.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64, bool)> {
    format::parse_segment_name(name)
}

pub fn segment_name(first: u64, points_before: u64, compacted: bool) -> String {
    format::segment_name(first, points_before, compacted)
}
