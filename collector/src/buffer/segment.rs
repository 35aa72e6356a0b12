//! One segment = one sled `Db` in `<path>/segments/<first>-<points_before>[.z]/`:
//! either the active layout (one sled value per entry) or, once sealed and
//! compacted (`.z`), at most [`MAX_BLOCKS`] block values.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{self, Header};

const DICT_TREE: &[u8] = b"edgewatch-meta";
const DICT_KEY: &[u8] = b"dict";
/// Marker of a compacted segment (in the meta tree).
const LAYOUT_KEY: &[u8] = b"layout";
const LAYOUT_BLOCKS: &[u8] = b"blocks-v2";

/// Blocks per compacted segment. sled 0.34 appends an insert to its leaf
/// as a delta and rewrites the whole leaf after 10 deltas or when it splits
/// at 17 items: with at most 8 values in a fresh database every byte is
/// written exactly once (measured: 1.00x the values on disk, large values
/// as blob files, small ones inline in the log).
pub(crate) const MAX_BLOCKS: u64 = 8;
/// sled log segment size of compacted segments.
const COMPACTED_LOG_SEGMENT: usize = 8 * 1024;

/// sled page cache per open segment. At most two segments are open (the one
/// being written and the one being read).
const CACHE_CAPACITY: u64 = 1024 * 1024;

/// Why a segment could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SegError {
    /// The data on disk is unusable: move it aside. Says what is wrong with it.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Environmental (permissions, lock held, disk full): retry later.
    #[error("i/o: {context}: {source}")]
    Io { context: String, source: io::Error },
}

impl SegError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> SegError {
        SegError::Io {
            context: context.into(),
            source,
        }
    }
}

/// As an I/O error of the kind that caused it (`InvalidData` when corrupt), for
/// callers that only report it.
impl From<SegError> for io::Error {
    fn from(e: SegError) -> io::Error {
        let kind = match &e {
            SegError::Io { source, .. } => source.kind(),
            SegError::Corrupt(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// A sled error during `what`: its I/O errors are environmental unless they say
/// the data is bad; everything else sled reports means the segment is unusable.
pub(crate) fn classify(what: &str, e: sled::Error) -> SegError {
    match e {
        sled::Error::Io(ioe) => match ioe.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                SegError::Corrupt(format!("{what}: {ioe}"))
            }
            _ => SegError::io(format!("sled {what}"), ioe),
        },
        other => SegError::Corrupt(format!("{what}: {other}")),
    }
}

fn corrupt(what: &str) -> SegError {
    SegError::Corrupt(what.to_string())
}

pub(crate) struct SegHandle {
    pub first: u64,
    /// Compacted layout (blocks) rather than one value per entry.
    pub compacted: bool,
    pub db: sled::Db,
    meta_tree: sled::Tree,
    /// Raw-content zstd dictionary of this segment, once set.
    pub dict: parking::Slot,
    /// A decompressor with the dictionary loaded, kept between reads: creating one
    /// (a context plus digesting the dictionary) cost more than the reads it served.
    dec_cache: std::sync::Mutex<Option<zstd::bulk::Decompressor<'static>>>,
    /// The last block decompressed (first seq, headers, payloads): sequential
    /// reads of a compacted segment decompress each block once.
    block_cache: std::sync::Mutex<Option<(u64, Arc<DecodedBlock>)>>,
}

/// Visitor of `scan`: (seq, header, payload if asked) → continue?
pub(crate) type ScanFn<'a> = dyn FnMut(u64, &Header, Option<Vec<u8>>) -> bool + 'a;

pub(crate) struct DecodedBlock {
    pub headers: Vec<Header>,
    pub raw: Vec<u8>,
}

/// A decompressor borrowed from a segment; goes back to its cache when dropped.
pub(crate) struct DecGuard<'a> {
    seg: &'a SegHandle,
    pub dec: Option<zstd::bulk::Decompressor<'static>>,
}

impl Drop for DecGuard<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.dec.take() {
            if let Ok(mut slot) = self.seg.dec_cache.lock() {
                *slot = Some(d);
            }
        }
    }
}

/// A tiny once-settable slot (avoids another dependency).
pub(crate) mod parking {
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    pub(crate) struct Slot(Mutex<Option<Arc<Vec<u8>>>>);

    impl Slot {
        pub fn get(&self) -> Option<Arc<Vec<u8>>> {
            match self.0.lock() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            }
        }
        pub fn set(&self, v: Arc<Vec<u8>>) {
            match self.0.lock() {
                Ok(mut g) => *g = Some(v),
                Err(p) => *p.into_inner() = Some(v),
            }
        }
    }
}

fn run_guarded<T>(what: &str, f: impl FnOnce() -> sled::Result<T>) -> Result<T, SegError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(what, e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(SegError::Corrupt(format!("sled panicked in {what}: {msg}")))
        }
    }
}

impl SegHandle {
    /// Opens (or with `create`, creates) the segment in `dir`.
    pub fn open(
        dir: &Path,
        first: u64,
        create: bool,
        compacted: bool,
    ) -> Result<Arc<SegHandle>, SegError> {
        if !create && !dir.join("db").is_file() {
            return Err(SegError::Corrupt(format!(
                "segment {} has no db file",
                dir.display()
            )));
        }
        let mut cfg = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY)
            .flush_every_ms(None)
            .mode(sled::Mode::LowSpace);
        if compacted {
            // sled resumes writing at its next log segment after a reopen
            // (the file grows by up to a segment, 512 KiB by default) and
            // stores values over a quarter segment as blob files: with small
            // log segments a compacted Db is its blocks plus a few KiB.
            cfg = cfg.segment_size(COMPACTED_LOG_SEGMENT);
        }
        // sled releases a dropped database's file lock from its own I/O threads, a
        // moment after the last handle goes: reopening right away (recovery after a
        // failed write) can find the lock still held. Wait for it, briefly.
        let mut tries = 0;
        let db = loop {
            match run_guarded("open", || cfg.open()) {
                Err(e) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        let meta_tree = run_guarded("open_tree", || db.open_tree(DICT_TREE))?;
        let dict = parking::Slot::default();
        if let Some(d) = run_guarded("get dict", || meta_tree.get(DICT_KEY))? {
            dict.set(Arc::new(d.to_vec()));
        }
        let layout = run_guarded("get layout", || meta_tree.get(LAYOUT_KEY))?;
        let is_blocks = layout.as_deref() == Some(LAYOUT_BLOCKS);
        if compacted && create {
            run_guarded("set layout", || meta_tree.insert(LAYOUT_KEY, LAYOUT_BLOCKS))?;
        } else if is_blocks != compacted || (layout.is_some() && !is_blocks) {
            return Err(SegError::Corrupt(format!(
                "segment {} has an unexpected layout",
                dir.display()
            )));
        }
        Ok(Arc::new(SegHandle {
            first,
            compacted,
            db,
            meta_tree,
            dict,
            dec_cache: std::sync::Mutex::new(None),
            block_cache: std::sync::Mutex::new(None),
        }))
    }

    /// The block holding `seq` (compacted layout): its first seq and value.
    fn block_for(&self, seq: u64) -> Result<Option<(u64, sled::IVec)>, SegError> {
        let found = run_guarded("block lookup", || {
            self.db.range(..=format::key(seq)).next_back().transpose()
        })?;
        match found {
            None => Ok(None),
            Some((k, v)) => match format::seq_of_key(&k) {
                Some(s) => Ok(Some((s, v))),
                None => Err(corrupt("bad key")),
            },
        }
    }

    /// Header of entry `seq`, if present.
    pub fn header_at(&self, seq: u64) -> Result<Option<Header>, SegError> {
        if !self.compacted {
            return match self.get(seq)? {
                None => Ok(None),
                Some(v) => format::decode_header(&v)
                    .map(|(_, h, _)| Some(h))
                    .ok_or_else(|| corrupt("undecodable entry")),
            };
        }
        let Some((bfirst, v)) = self.block_for(seq)? else {
            return Ok(None);
        };
        let (headers, _, _) =
            format::decode_block_headers(&v).ok_or_else(|| corrupt("undecodable block"))?;
        Ok(headers.get((seq - bfirst) as usize).copied())
    }

    /// Calls `f` on the entries `[start, end)` in order, with their payloads
    /// if `payloads`, until it returns false. `Err` says what is wrong (a read
    /// error, an undecodable value, a missing entry); the entries before it
    /// were visited.
    pub fn scan(
        &self,
        start: u64,
        end: u64,
        payloads: bool,
        f: &mut ScanFn<'_>,
    ) -> Result<(), SegError> {
        if start >= end {
            return Ok(());
        }
        let expected = if self.compacted {
            self.scan_blocks(start, end, payloads, f)?
        } else {
            self.scan_entries(start, end, payloads, f)?
        };
        match expected {
            Some(next) if next < end => Err(SegError::Corrupt(format!("missing entry {next}"))),
            _ => Ok(()),
        }
    }

    /// `scan` over the active layout (one value per entry). Returns the next
    /// seq expected, or `None` if `f` stopped the scan.
    fn scan_entries(
        &self,
        start: u64,
        end: u64,
        payloads: bool,
        f: &mut ScanFn<'_>,
    ) -> Result<Option<u64>, SegError> {
        let mut expected = start;
        let mut dec = if payloads {
            Some(self.decompressor())
        } else {
            None
        };
        for item in self.db.range(format::key(start)..format::key(end)) {
            let (k, v) = item.map_err(|e| classify("scan", e))?;
            let seq = format::seq_of_key(&k).ok_or_else(|| corrupt("bad key"))?;
            if seq != expected {
                return Err(SegError::Corrupt(format!("missing entry {expected}")));
            }
            let (hd, payload) = match dec.as_mut() {
                Some(d) => {
                    let (hd, p) = format::decode(&v, &mut d.dec)
                        .ok_or_else(|| corrupt("undecodable entry"))?;
                    (hd, Some(p))
                }
                None => (
                    format::decode_header(&v)
                        .ok_or_else(|| corrupt("undecodable entry"))?
                        .1,
                    None,
                ),
            };
            expected = seq + 1;
            if !f(seq, &hd, payload) {
                return Ok(None);
            }
        }
        Ok(Some(expected))
    }

    /// `scan` over the compacted layout (blocks of entries). Returns the next
    /// seq expected, or `None` if the scan stopped early (`f`, or `end` reached
    /// inside a block).
    fn scan_blocks(
        &self,
        start: u64,
        end: u64,
        payloads: bool,
        f: &mut ScanFn<'_>,
    ) -> Result<Option<u64>, SegError> {
        let mut expected = start;
        let from = match self.block_for(start)? {
            Some((b, _)) => b,
            None => start,
        };
        for item in self.db.range(format::key(from)..format::key(end)) {
            let (k, v) = item.map_err(|e| classify("scan", e))?;
            let bfirst = format::seq_of_key(&k).ok_or_else(|| corrupt("bad key"))?;
            let block = if payloads {
                self.decoded_block(bfirst, &v)
                    .ok_or_else(|| corrupt("undecodable block"))?
            } else {
                let (headers, _, _) =
                    format::decode_block_headers(&v).ok_or_else(|| corrupt("undecodable block"))?;
                Arc::new(DecodedBlock {
                    headers,
                    raw: Vec::new(),
                })
            };
            let mut off = 0usize;
            for (j, hd) in block.headers.iter().enumerate() {
                let seq = bfirst + j as u64;
                let len = hd.raw_len as usize;
                let range = off..off + len;
                off += len;
                if seq < expected {
                    continue;
                }
                if seq >= end {
                    return Ok(None);
                }
                if seq != expected {
                    return Err(SegError::Corrupt(format!("missing entry {expected}")));
                }
                let payload = if payloads {
                    Some(
                        block
                            .raw
                            .get(range)
                            .ok_or_else(|| corrupt("short block"))?
                            .to_vec(),
                    )
                } else {
                    None
                };
                expected = seq + 1;
                if !f(seq, hd, payload) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(expected))
    }

    fn decoded_block(&self, bfirst: u64, v: &[u8]) -> Option<Arc<DecodedBlock>> {
        if let Ok(c) = self.block_cache.lock() {
            if let Some((f, b)) = c.as_ref() {
                if *f == bfirst {
                    return Some(b.clone());
                }
            }
        }
        let mut dec = zstd::bulk::Decompressor::new().ok()?;
        let (headers, raw) = format::decode_block_raw(v, &mut dec)?;
        let b = Arc::new(DecodedBlock { headers, raw });
        if let Ok(mut c) = self.block_cache.lock() {
            *c = Some((bfirst, b.clone()));
        }
        Some(b)
    }

    /// Appends one block (compaction; made durable by `flush`).
    pub fn insert_block(&self, first: u64, value: Vec<u8>) -> Result<(), SegError> {
        run_guarded("insert block", || {
            self.db.insert(format::key(first), value).map(|_| ())
        })
    }

    /// Stores the dictionary (made durable by the next flush).
    pub fn store_dict(&self, dict: Arc<Vec<u8>>) -> sled::Result<()> {
        self.meta_tree.insert(DICT_KEY, dict.as_slice())?;
        self.dict.set(dict);
        Ok(())
    }

    pub fn decompressor(&self) -> DecGuard<'_> {
        let cached = self.dec_cache.lock().ok().and_then(|mut c| c.take());
        let dec = cached.or_else(|| {
            let d = self.dict.get()?;
            zstd::bulk::Decompressor::with_dictionary(&d).ok()
        });
        DecGuard { seg: self, dec }
    }

    pub fn flush(&self) -> Result<(), SegError> {
        run_guarded("flush", || self.db.flush().map(|_| ()))
    }

    /// The last entry of the segment: its seq and header.
    pub fn last_entry(&self) -> Result<Option<(u64, Header)>, SegError> {
        let last = run_guarded("last", || self.db.last())?;
        let Some((k, v)) = last else {
            return Ok(None);
        };
        let seq = format::seq_of_key(&k).ok_or_else(|| corrupt("bad key"))?;
        if self.compacted {
            let (headers, _, _) =
                format::decode_block_headers(&v).ok_or_else(|| corrupt("undecodable block"))?;
            let n = headers.len() as u64;
            let last = headers
                .last()
                .copied()
                .ok_or_else(|| corrupt("empty block"))?;
            Ok(Some((seq + n - 1, last)))
        } else {
            let (_, hd, _) =
                format::decode_header(&v).ok_or_else(|| corrupt("undecodable last entry"))?;
            Ok(Some((seq, hd)))
        }
    }

    pub fn get(&self, seq: u64) -> Result<Option<sled::IVec>, SegError> {
        run_guarded("get", || self.db.get(super::format::key(seq)))
    }
}

/// Bytes of all files under `dir` (apparent size), 0 if absent.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}
