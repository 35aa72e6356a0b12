//! One segment = one sled `Db` in `<path>/segments/<first>-<points_before>/`.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DICT_TREE: &[u8] = b"edgewatch-meta";
const DICT_KEY: &[u8] = b"dict";

/// sled page cache per open segment. At most two segments are open (the one
/// being written and the one being read).
const CACHE_CAPACITY: u64 = 1024 * 1024;

/// Why a segment could not be opened or read.
#[derive(Debug)]
pub(crate) enum SegError {
    /// The data on disk is unusable: move it aside.
    Corrupt(String),
    /// Environmental (permissions, lock held, disk full): retry later.
    Io(String),
}

impl std::fmt::Display for SegError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegError::Corrupt(s) => write!(f, "corrupt: {s}"),
            SegError::Io(s) => write!(f, "i/o: {s}"),
        }
    }
}

pub(crate) fn classify(e: sled::Error) -> SegError {
    match e {
        sled::Error::Io(ioe) => match ioe.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                SegError::Corrupt(ioe.to_string())
            }
            _ => SegError::Io(ioe.to_string()),
        },
        other => SegError::Corrupt(other.to_string()),
    }
}

pub(crate) struct SegHandle {
    pub first: u64,
    pub db: sled::Db,
    meta_tree: sled::Tree,
    /// Raw-content zstd dictionary of this segment, once set.
    pub dict: parking::Slot,
    /// A decompressor with the dictionary loaded, kept between reads: creating one
    /// (a context plus digesting the dictionary) cost more than the reads it served.
    dec_cache: std::sync::Mutex<Option<zstd::bulk::Decompressor<'static>>>,
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
        Ok(Err(e)) => Err(classify(e)),
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
    pub fn open(dir: &Path, first: u64, create: bool) -> Result<Arc<SegHandle>, SegError> {
        if !create && !dir.join("db").is_file() {
            return Err(SegError::Corrupt(format!(
                "segment {} has no db file",
                dir.display()
            )));
        }
        let cfg = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY)
            .flush_every_ms(None)
            .mode(sled::Mode::LowSpace);
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
        Ok(Arc::new(SegHandle {
            first,
            db,
            meta_tree,
            dict,
            dec_cache: std::sync::Mutex::new(None),
        }))
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

    /// Last key of the segment's data tree.
    pub fn last_entry(&self) -> Result<Option<(u64, sled::IVec)>, SegError> {
        let last = run_guarded("last", || self.db.last())?;
        match last {
            None => Ok(None),
            Some((k, v)) => match super::format::seq_of_key(&k) {
                Some(s) => Ok(Some((s, v))),
                None => Err(SegError::Corrupt("bad key".into())),
            },
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
