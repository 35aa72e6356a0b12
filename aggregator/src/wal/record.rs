//! One log record: the samples one ingest (or one rule round) wrote to the store,
//! self-contained so the log can be cut anywhere and read from any record.
//!
//! Layout (little endian): `created_ms i64 | samples u32 | zstd(body)`, the body
//! `families: n, (name, type u8, help, unit)*` then `samples: n, sample*` with
//! `sample = family varint | kept varint | new varint | new strings | ts zigzag delta |
//! value f64`. A sample's strings are `[name, k1, v1, k2, v2, …]`; `kept` of them
//! are equal to the previous sample's leading strings. Consecutive samples of one
//! request share the resource's labels, so most strings are kept, and what is left
//! compresses well: about 3 bytes per sample on model-server shaped data.

use crate::store::{FamilyId, FamilyMeta, MetricType};
use smallvec::SmallVec;
use std::cell::RefCell;
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective as EndDirective;
use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};

const HEADER: usize = 12;
/// zstd level: the fastest standard level; the body is already delta-coded.
const LEVEL: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("record body does not decompress: {0}")]
    Compression(std::io::Error),
    #[error("record body is malformed at byte {0}")]
    Malformed(usize),
}

/// Collects samples as they are written to the store.
#[derive(Default)]
pub struct RecordBuilder {
    body: Vec<u8>,
    families: Vec<FamilyMeta>,
    family_ids: SmallVec<[(FamilyId, u32); 8]>,
    /// Ranges in `body` of the previous sample's strings.
    prev: Vec<(usize, usize)>,
    prev_ts: i64,
    samples: u32,
}

impl RecordBuilder {
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// Adds one sample. `meta` is asked for the family's metadata the first time
    /// `family` appears in this record.
    pub fn push(
        &mut self,
        family: FamilyId,
        meta: impl FnOnce() -> FamilyMeta,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        timestamp_ms: i64,
    ) {
        let fam = match self.family_ids.iter().find(|(id, _)| *id == family) {
            Some((_, i)) => *i,
            None => {
                let i = self.families.len() as u32;
                self.families.push(meta());
                self.family_ids.push((family, i));
                i
            }
        };
        put_varint(&mut self.body, u64::from(fam));
        let strings = std::iter::once(name).chain(labels.iter().flat_map(|(k, v)| [*k, *v]));
        let count = 1 + 2 * labels.len();
        let kept = strings
            .clone()
            .zip(self.prev.iter())
            .take_while(|(s, r)| s.as_bytes() == &self.body[r.0..r.1])
            .count();
        put_varint(&mut self.body, kept as u64);
        put_varint(&mut self.body, (count - kept) as u64);
        self.prev.truncate(kept);
        for s in strings.skip(kept) {
            put_varint(&mut self.body, s.len() as u64);
            let start = self.body.len();
            self.body.extend_from_slice(s.as_bytes());
            self.prev.push((start, self.body.len()));
        }
        put_varint(
            &mut self.body,
            zigzag(timestamp_ms.wrapping_sub(self.prev_ts)),
        );
        self.prev_ts = timestamp_ms;
        self.body.extend_from_slice(&value.to_le_bytes());
        self.samples += 1;
    }

    /// The encoded record; the builder is empty again afterwards.
    pub fn finish(&mut self, created_ms: i64) -> Vec<u8> {
        let mut head = Vec::with_capacity(64 * self.families.len() + 16);
        put_varint(&mut head, self.families.len() as u64);
        for f in &self.families {
            put_str(&mut head, &f.name);
            head.push(type_code(f.metric_type));
            put_str(&mut head, &f.help);
            put_str(&mut head, &f.unit);
        }
        put_varint(&mut head, u64::from(self.samples));
        let plain = head.len() + self.body.len();
        let mut out = Vec::with_capacity(HEADER + plain / 4 + 16);
        out.extend_from_slice(&created_ms.to_le_bytes());
        out.extend_from_slice(&self.samples.to_le_bytes());
        compress_into(&[&head, &self.body], &mut out);
        // The record may wait in the writer's queue: keep only its bytes.
        out.shrink_to_fit();
        self.body.clear();
        self.families.clear();
        self.family_ids.clear();
        self.prev.clear();
        self.prev_ts = 0;
        self.samples = 0;
        out
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
}

/// Compresses `parts` as one zstd frame, appended to `out`. Streamed part by part
/// into `out` itself: joining the parts first and compressing into a buffer of the
/// worst-case size held three copies of a record's samples at once (measured: the
/// largest part of the core's heap while collectors drain their backlogs).
fn compress_into(parts: &[&[u8]], out: &mut Vec<u8>) {
    let start = out.len();
    let streamed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = new_compressor();
        }
        let cctx = c.as_mut()?;
        compress_parts(cctx, parts, out).ok()
    });
    if streamed.is_none() {
        // Without a compressor (out of memory), a stored frame keeps the record readable.
        out.truncate(start);
        let plain = parts.concat();
        out.extend_from_slice(&zstd::bulk::compress(&plain, 0).unwrap_or_default());
    }
}

fn new_compressor() -> Option<CCtx<'static>> {
    let mut c = CCtx::try_create()?;
    c.set_parameter(CParameter::CompressionLevel(LEVEL)).ok()?;
    Some(c)
}

fn compress_parts(
    cctx: &mut CCtx<'static>,
    parts: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), zstd::zstd_safe::ErrorCode> {
    cctx.reset(ResetDirective::SessionOnly)?;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    // Written into the frame's header: the reader allocates exactly once.
    cctx.set_pledged_src_size(Some(total as u64))?;
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        let end = if i == last {
            EndDirective::ZSTD_e_end
        } else {
            EndDirective::ZSTD_e_continue
        };
        let mut input = InBuffer::around(part);
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve((total / 8).max(4096));
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(out, pos);
            let left = cctx.compress_stream2(&mut output, &mut input, end)?;
            let finished = match end {
                EndDirective::ZSTD_e_end => left == 0,
                _ => input.pos() == part.len(),
            };
            if finished {
                break;
            }
        }
    }
    Ok(())
}

/// A record's samples, decompressed into a buffer of the size its frame declares
/// (bounded: a damaged header cannot ask for more than the ratio allows).
fn decompress(z: &[u8]) -> std::io::Result<Vec<u8>> {
    const MAX_RATIO: u64 = 256;
    let bound = (z.len() as u64).saturating_mul(MAX_RATIO).max(1 << 20);
    match zstd::zstd_safe::get_frame_content_size(z) {
        Ok(Some(n)) if n <= bound => zstd::bulk::decompress(z, n as usize),
        _ => zstd::stream::decode_all(z),
    }
}

/// The fixed header of an encoded record, readable without decompressing.
pub fn header(raw: &[u8]) -> Result<(i64, u32), RecordError> {
    if raw.len() < HEADER {
        return Err(RecordError::Short(raw.len()));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&raw[..8]);
    let mut n = [0u8; 4];
    n.copy_from_slice(&raw[8..12]);
    Ok((i64::from_le_bytes(ts), u32::from_le_bytes(n)))
}

/// A decoded record: its families and its samples, read with [`Record::for_each`].
#[derive(Debug)]
pub struct Record {
    created_ms: i64,
    families: Vec<FamilyMeta>,
    samples: u32,
    plain: Vec<u8>,
    /// Where the samples start in `plain`.
    body: usize,
}

/// One sample of a record; strings borrow the record.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub family: &'a FamilyMeta,
    /// Index of `family` in [`Record::families`].
    pub family_index: usize,
    pub name: &'a str,
    /// `[k1, v1, k2, v2, …]` in the order they were written (not necessarily sorted).
    pub label_strings: &'a [&'a str],
    pub timestamp_ms: i64,
    pub value: f64,
}

impl<'a> Sample<'a> {
    pub fn labels(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.label_strings.chunks_exact(2).map(|p| (p[0], p[1]))
    }
}

impl Record {
    pub fn decode(raw: &[u8]) -> Result<Record, RecordError> {
        let (created_ms, samples) = header(raw)?;
        let plain = decompress(&raw[HEADER..]).map_err(RecordError::Compression)?;
        let mut r = Reader {
            buf: &plain,
            pos: 0,
            check_utf8: true,
        };
        let n = r.varint()?;
        let mut families = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            let name = r.string()?.to_owned();
            let metric_type = type_of(r.byte()?);
            let help = r.string()?.to_owned();
            let unit = r.string()?.to_owned();
            families.push(FamilyMeta {
                name,
                metric_type,
                help,
                unit,
            });
        }
        if r.varint()? != u64::from(samples) {
            return Err(RecordError::Malformed(r.pos));
        }
        let body = r.pos;
        let record = Record {
            created_ms,
            families,
            samples,
            plain,
            body,
        };
        record.walk(true, |_| {})?; // checked once, so readers need not handle errors
        Ok(record)
    }

    /// When the record was written (the samples' arrival time at the core).
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn families(&self) -> &[FamilyMeta] {
        &self.families
    }

    pub fn len(&self) -> usize {
        self.samples as usize
    }

    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Calls `f` with every sample in the order they were written.
    pub fn for_each(&self, f: impl FnMut(&Sample<'_>)) {
        // `decode` walked the same immutable body with every check on.
        let _ = self.walk(false, f);
    }

    /// Walks the samples; `check_utf8` is off only after a checked walk of the
    /// same bytes (the strings are then known to be UTF-8 at these offsets).
    fn walk(&self, check_utf8: bool, mut f: impl FnMut(&Sample<'_>)) -> Result<(), RecordError> {
        let mut r = Reader {
            buf: &self.plain,
            pos: self.body,
            check_utf8,
        };
        let mut strings: SmallVec<[&str; 49]> = SmallVec::new();
        let mut ts = 0i64;
        for _ in 0..self.samples {
            let fam = r.varint()? as usize;
            let family = self
                .families
                .get(fam)
                .ok_or(RecordError::Malformed(r.pos))?;
            let kept = r.varint()? as usize;
            let new = r.varint()? as usize;
            if kept > strings.len() || (kept + new).is_multiple_of(2) {
                return Err(RecordError::Malformed(r.pos));
            }
            strings.truncate(kept);
            for _ in 0..new {
                strings.push(r.string()?);
            }
            ts = ts.wrapping_add(unzigzag(r.varint()?));
            let value = f64::from_le_bytes(r.array()?);
            f(&Sample {
                family,
                family_index: fam,
                name: strings[0],
                label_strings: &strings[1..],
                timestamp_ms: ts,
                value,
            });
        }
        Ok(())
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    check_utf8: bool,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(RecordError::Malformed(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(RecordError::Malformed(self.pos))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let end = self
            .pos
            .checked_add(N)
            .ok_or(RecordError::Malformed(self.pos))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(RecordError::Malformed(self.pos))?;
        self.pos = end;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn string(&mut self) -> Result<&'a str, RecordError> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .ok_or(RecordError::Malformed(self.pos))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(RecordError::Malformed(self.pos))?;
        let s = if self.check_utf8 {
            std::str::from_utf8(s).map_err(|_| RecordError::Malformed(self.pos))?
        } else {
            // SAFETY: `Record::decode` walked these same bytes (the body is never
            // mutated) with `check_utf8` on, which checked every string at exactly
            // these offsets; a record that failed that walk is never returned.
            unsafe { std::str::from_utf8_unchecked(s) }
        };
        self.pos = end;
        Ok(s)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn type_code(t: MetricType) -> u8 {
    match t {
        MetricType::Counter => 1,
        MetricType::Gauge => 2,
        MetricType::Histogram => 3,
        MetricType::Summary => 4,
        MetricType::Unknown => 0,
    }
}

fn type_of(b: u8) -> MetricType {
    match b {
        1 => MetricType::Counter,
        2 => MetricType::Gauge,
        3 => MetricType::Histogram,
        4 => MetricType::Summary,
        _ => MetricType::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn fam(store: &Store, name: &str) -> (FamilyId, FamilyMeta) {
        let id = store.family(name, MetricType::Counter, "help text", "seconds");
        (id, store.family_meta(name).expect("registered"))
    }

    #[test]
    fn round_trips_samples_in_order() {
        let store = Store::new(StoreOptions::default(), &prometheus::Registry::new());
        let (a, ma) = fam(&store, "req_total");
        let (g, mg) = fam(&store, "gpu_util");
        let mut b = RecordBuilder::default();
        let res = [("cluster", "edge-a"), ("node", "n1"), ("model", "m")];
        b.push(a, || ma.clone(), "req_total", &res, 1.0, 1_000);
        b.push(
            a,
            || unreachable!("asked once"),
            "req_total",
            &res[..2],
            2.5,
            999,
        );
        b.push(
            g,
            || mg.clone(),
            "gpu_util",
            &[("node", "ü-ñ")],
            f64::NAN,
            -5,
        );
        b.push(
            a,
            || unreachable!(),
            "req_total",
            &[],
            crate::store::STALE_NAN,
            i64::MAX,
        );
        let raw = b.finish(42);
        assert!(b.is_empty());
        assert_eq!(header(&raw).unwrap(), (42, 4));
        let rec = Record::decode(&raw).unwrap();
        assert_eq!(rec.families().len(), 2);
        let mut got = Vec::new();
        rec.for_each(|s| {
            got.push((
                s.family.name.clone(),
                s.name.to_string(),
                s.labels()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                s.timestamp_ms,
                s.value.to_bits(),
            ))
        });
        assert_eq!(
            got,
            vec![
                (
                    "req_total".into(),
                    "req_total".into(),
                    "cluster=edge-a,node=n1,model=m".into(),
                    1_000,
                    1f64.to_bits()
                ),
                (
                    "req_total".into(),
                    "req_total".into(),
                    "cluster=edge-a,node=n1".into(),
                    999,
                    2.5f64.to_bits()
                ),
                (
                    "gpu_util".into(),
                    "gpu_util".into(),
                    "node=ü-ñ".into(),
                    -5,
                    f64::NAN.to_bits()
                ),
                (
                    "req_total".into(),
                    "req_total".into(),
                    "".into(),
                    i64::MAX,
                    crate::store::STALE_NAN.to_bits()
                ),
            ]
        );
        assert_eq!(rec.families()[1].unit, "seconds");
    }

    #[test]
    fn shared_labels_make_records_small() {
        let store = Store::new(StoreOptions::default(), &prometheus::Registry::new());
        let (a, ma) = fam(&store, "latency_bucket");
        let mut b = RecordBuilder::default();
        let n = 10_000;
        for i in 0..n {
            let le = format!("{}", i % 10);
            let pod = format!("pod-{}", i / 10);
            let labels = [
                ("k8s_cluster_name", "edge-a"),
                ("k8s_node_name", "node-1"),
                ("model", "resnet"),
                ("pod", pod.as_str()),
                ("le", le.as_str()),
            ];
            b.push(
                a,
                || ma.clone(),
                "latency_bucket",
                &labels,
                i as f64,
                1_700_000_000_000,
            );
        }
        let raw = b.finish(0);
        assert!(raw.len() < 6 * n, "{} bytes for {n} samples", raw.len());
        assert_eq!(Record::decode(&raw).unwrap().len(), n);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let store = Store::new(StoreOptions::default(), &prometheus::Registry::new());
        let (a, ma) = fam(&store, "x");
        let mut b = RecordBuilder::default();
        b.push(a, || ma.clone(), "x", &[("a", "b")], 1.0, 1);
        let raw = b.finish(0);
        assert!(matches!(
            Record::decode(&raw[..5]),
            Err(RecordError::Short(5))
        ));
        assert!(Record::decode(&raw[..raw.len() - 1]).is_err());
        let mut seed = 7u64;
        for _ in 0..2_000 {
            let mut m = raw.clone();
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (seed >> 33) as usize % m.len();
            m[i] ^= (seed >> 13) as u8 | 1;
            let _ = Record::decode(&m).map(|r| r.for_each(|_| {}));
        }
        // A body that decompresses but lies about its strings.
        let mut plain = Vec::new();
        put_varint(&mut plain, 0);
        put_varint(&mut plain, 1);
        plain.extend_from_slice(&[0, 0, 1, 200]);
        let mut bad = 0i64.to_le_bytes().to_vec();
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.extend_from_slice(&zstd::bulk::compress(&plain, 1).unwrap());
        assert!(matches!(
            Record::decode(&bad),
            Err(RecordError::Malformed(_))
        ));
    }
}
