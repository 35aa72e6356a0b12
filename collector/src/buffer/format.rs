//! On-disk encodings (format version 2, see `meta.json`):
//! * an *entry* of the active segment: the sled value under the big-endian
//!   sequence number (varint header + payload compressed with the segment
//!   dictionary);
//! * a *block* of a compacted segment: the sled value under the big-endian
//!   sequence number of its first entry (varint headers of all its entries,
//!   then one zstd frame of their concatenated payloads);
//! * segment directory names.

use std::io;

/// Format byte: payload stored as given (compression did not help).
const CODEC_RAW: u8 = 0x10;
/// Format byte: zstd frame compressed against the segment's dictionary.
const CODEC_ZSTD_DICT: u8 = 0x12;

/// Format byte of a block: entry headers, then one zstd frame.
const CODEC_BLOCK: u8 = 0x20;

/// Header fields of one entry, decoded without touching the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub points: u64,
    /// Sum of the points of every entry appended before this one (ever).
    /// Lets the buffer count dropped points exactly from two boundaries.
    pub points_before: u64,
    pub appended_at_ms: u64,
    pub raw_len: u64,
}

pub(crate) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn seq_of_key(k: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = k.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift > 63 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

/// Encodes an entry. `compressor` must hold the segment dictionary.
pub(crate) fn encode(
    h: &Header,
    payload: &[u8],
    compressor: &mut zstd::bulk::Compressor<'static>,
) -> io::Result<Vec<u8>> {
    let compressed = compressor.compress(payload)?;
    let (codec, body): (u8, &[u8]) = if compressed.len() < payload.len() {
        (CODEC_ZSTD_DICT, &compressed)
    } else {
        (CODEC_RAW, payload)
    };
    let mut out = Vec::with_capacity(body.len() + 24);
    out.push(codec);
    put_varint(&mut out, h.points);
    put_varint(&mut out, h.points_before);
    put_varint(&mut out, h.appended_at_ms);
    put_varint(&mut out, h.raw_len);
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes the header; returns it and the offset of the body.
pub(crate) fn decode_header(v: &[u8]) -> Option<(u8, Header, usize)> {
    let codec = *v.first()?;
    if codec != CODEC_RAW && codec != CODEC_ZSTD_DICT {
        return None;
    }
    let mut pos = 1;
    let points = get_varint(v, &mut pos)?;
    let points_before = get_varint(v, &mut pos)?;
    let appended_at_ms = get_varint(v, &mut pos)?;
    let raw_len = get_varint(v, &mut pos)?;
    Some((
        codec,
        Header {
            points,
            points_before,
            appended_at_ms,
            raw_len,
        },
        pos,
    ))
}

/// Decodes a whole entry. `None` means the value is corrupt.
pub(crate) fn decode(
    v: &[u8],
    decompressor: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> Option<(Header, Vec<u8>)> {
    let (codec, h, pos) = decode_header(v)?;
    let body = v.get(pos..)?;
    let raw_len = usize::try_from(h.raw_len).ok()?;
    let payload = if codec == CODEC_RAW {
        if body.len() != raw_len {
            return None;
        }
        body.to_vec()
    } else {
        let d = decompressor.as_mut()?;
        let out = d
            .decompress(body, plausible_len(raw_len, body.len())?)
            .ok()?;
        if out.len() != raw_len {
            return None;
        }
        out
    };
    Some((h, payload))
}

/// `raw_len` when `compressed` bytes of zstd can hold it: a block expands at
/// most 32768-fold (4 bytes of RLE for 128 KiB). A larger length is corruption,
/// and would be allocated before decompressing.
fn plausible_len(raw_len: usize, compressed: usize) -> Option<usize> {
    (raw_len <= compressed.saturating_mul(1 << 15)).then_some(raw_len)
}

/// Encodes a block of consecutive entries. `headers[0].points_before` is
/// the block's; the others' follow from the points counts.
pub(crate) fn encode_block(
    headers: &[Header],
    raw: &[u8],
    compressor: &mut zstd::bulk::Compressor<'static>,
) -> io::Result<Vec<u8>> {
    let compressed = compressor.compress(raw)?;
    let mut out = Vec::with_capacity(compressed.len() + 16 + headers.len() * 12);
    out.push(CODEC_BLOCK);
    put_varint(&mut out, headers.len() as u64);
    put_varint(
        &mut out,
        headers.first().map(|h| h.points_before).unwrap_or(0),
    );
    put_varint(&mut out, raw.len() as u64);
    let mut prev_ms = 0u64;
    for h in headers {
        put_varint(&mut out, h.points);
        // Append times are non-decreasing within a segment; zigzag keeps
        // a clock step back representable.
        let d = h.appended_at_ms.wrapping_sub(prev_ms) as i64;
        put_varint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
        prev_ms = h.appended_at_ms;
        put_varint(&mut out, h.raw_len);
    }
    out.extend_from_slice(&compressed);
    Ok(out)
}

/// The entry headers of a block and the offset of its zstd frame.
pub(crate) fn decode_block_headers(v: &[u8]) -> Option<(Vec<Header>, u64, usize)> {
    if *v.first()? != CODEC_BLOCK {
        return None;
    }
    let mut pos = 1;
    let n = get_varint(v, &mut pos)?;
    let mut points_before = get_varint(v, &mut pos)?;
    let raw_total = get_varint(v, &mut pos)?;
    if n == 0 || n > v.len() as u64 {
        return None;
    }
    let mut headers = Vec::with_capacity(n as usize);
    let (mut ms, mut sum) = (0u64, 0u64);
    for _ in 0..n {
        let points = get_varint(v, &mut pos)?;
        let z = get_varint(v, &mut pos)?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        ms = ms.wrapping_add(d as u64);
        let raw_len = get_varint(v, &mut pos)?;
        sum = sum.checked_add(raw_len)?;
        headers.push(Header {
            points,
            points_before,
            appended_at_ms: ms,
            raw_len,
        });
        points_before = points_before.checked_add(points)?;
    }
    if sum != raw_total {
        return None;
    }
    Some((headers, raw_total, pos))
}

/// Decompresses a block's payloads (concatenated, in entry order).
pub(crate) fn decode_block_raw(
    v: &[u8],
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Option<(Vec<Header>, Vec<u8>)> {
    let (headers, raw_total, pos) = decode_block_headers(v)?;
    let frame = v.get(pos..)?;
    let capacity = plausible_len(usize::try_from(raw_total).ok()?, frame.len())?;
    let raw = decompressor.decompress(frame, capacity).ok()?;
    if raw.len() as u64 != raw_total {
        return None;
    }
    Some((headers, raw))
}

/// Suffix of a compacted segment's directory.
const COMPACTED_SUFFIX: &str = ".z";
/// Suffix of a compacted segment being written (removed at open).
pub(crate) const COMPACTING_SUFFIX: &str = ".compacting";

/// Segment directory name: `<first seq>-<points before first seq>`, both
/// zero-padded so that names sort like the numbers, plus `.z` once compacted.
pub(crate) fn segment_name(first: u64, points_before: u64, compacted: bool) -> String {
    let z = if compacted { COMPACTED_SUFFIX } else { "" };
    format!("{first:020}-{points_before:020}{z}")
}

/// `(first, points_before, compacted)`.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, u64, bool)> {
    let (name, compacted) = match name.strip_suffix(COMPACTED_SUFFIX) {
        Some(n) => (n, true),
        None => (name, false),
    };
    let (a, b) = name.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?, compacted))
}

/// Raw-content zstd dictionary made from a sample payload. The leading zero
/// byte keeps zstd from mistaking it for a formatted dictionary.
pub(crate) fn make_dictionary(sample: &[u8]) -> Vec<u8> {
    const MAX_DICT: usize = 64 * 1024;
    let take = sample.len().min(MAX_DICT);
    let mut d = Vec::with_capacity(take + 1);
    d.push(0);
    d.extend_from_slice(&sample[..take]);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_names() {
        let dict = make_dictionary(b"hello hello hello world");
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).expect("compressor");
        let mut d = Some(zstd::bulk::Decompressor::with_dictionary(&dict).expect("decompressor"));
        let payload = b"hello hello hello world, hello hello hello world".repeat(20);
        let h = Header {
            points: 7,
            points_before: 1 << 40,
            appended_at_ms: 1_760_000_000_000,
            raw_len: payload.len() as u64,
        };
        let v = encode(&h, &payload, &mut c).expect("encode");
        assert!(v.len() < payload.len());
        let (h2, p2) = decode(&v, &mut d).expect("decode");
        assert_eq!(h2, h);
        assert_eq!(p2, payload);
        // A tiny payload that does not compress is stored raw.
        let h = Header { raw_len: 1, ..h };
        let v = encode(&h, b"x", &mut c).expect("encode");
        assert_eq!(decode(&v, &mut None).expect("decode").1, b"x");
        assert!(decode(&[0xff, 1, 2], &mut d).is_none());
        assert!(decode(&v[..3], &mut d).is_none());

        let n = segment_name(42, 4200, false);
        assert_eq!(parse_segment_name(&n), Some((42, 4200, false)));
        let n = segment_name(42, 4200, true);
        assert_eq!(parse_segment_name(&n), Some((42, 4200, true)));
        assert_eq!(parse_segment_name("00042"), None);
        assert_eq!(parse_segment_name(&format!("{n}{COMPACTING_SUFFIX}")), None);

        // Blocks.
        let mut c = zstd::bulk::Compressor::new(9).expect("compressor");
        let mut d = zstd::bulk::Decompressor::new().expect("decompressor");
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + i as usize]).collect();
        let mut headers = Vec::new();
        let mut pb = 1000;
        for (i, p) in payloads.iter().enumerate() {
            headers.push(Header {
                points: 3 + i as u64,
                points_before: pb,
                appended_at_ms: 1_760_000_000_000 + [0, 5, 5, 3, 9][i],
                raw_len: p.len() as u64,
            });
            pb += 3 + i as u64;
        }
        let raw = payloads.concat();
        let v = encode_block(&headers, &raw, &mut c).expect("block");
        let (h2, raw2) = decode_block_raw(&v, &mut d).expect("decode block");
        assert_eq!(h2, headers);
        assert_eq!(raw2, raw);
        assert!(decode_block_raw(&v[..v.len() - 1], &mut d).is_none());
        assert!(decode_block_headers(&v[..5]).is_none());
        assert_eq!(seq_of_key(&key(99)), Some(99));
    }

    /// Found by the `buffer_block` fuzz target: a corrupt length was allocated
    /// before decompressing (capacity overflow panic).
    #[test]
    fn corrupt_lengths_are_refused_not_allocated() {
        let dict = make_dictionary(b"hello hello hello world");
        let mut d = Some(zstd::bulk::Decompressor::with_dictionary(&dict).expect("decompressor"));
        let mut v = vec![CODEC_ZSTD_DICT];
        for field in [1, 0, 0, u64::MAX >> 1] {
            put_varint(&mut v, field);
        }
        v.extend_from_slice(b"not zstd at all");
        assert!(decode(&v, &mut d).is_none());

        let mut b = vec![CODEC_BLOCK];
        for field in [1, 0, u64::MAX >> 1, 1, 0, u64::MAX >> 1] {
            put_varint(&mut b, field);
        }
        b.extend_from_slice(b"not zstd");
        let mut d = zstd::bulk::Decompressor::new().expect("decompressor");
        assert!(decode_block_raw(&b, &mut d).is_none());
    }
}
