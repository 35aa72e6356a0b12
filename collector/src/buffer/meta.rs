//! `<path>/meta.json`: the buffer's identity and checkpoints, replaced
//! atomically (write temp, fsync, rename, fsync directory).

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::Path;

pub(crate) const META_FILE: &str = "meta.json";

/// On-disk format version. 1: every segment one sled value per entry.
/// 2: sealed segments compacted into blocks (`.z`), block codec 0x20.
/// A directory of another version is moved aside at open, never misread.
pub(crate) const VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Meta {
    pub version: u32,
    pub instance_id: String,
    /// First sequence number not yet acknowledged or dropped (the resume
    /// checkpoint). May lag the in-memory value by up to a second.
    pub head: u64,
    /// Points appended before `head`.
    pub head_points_before: u64,
    /// Lower bound for the next sequence number / points counter, so that
    /// numbers are never reused even when every segment is gone.
    pub next_seq_floor: u64,
    pub next_points_floor: u64,
}

pub(crate) fn read(dir: &Path) -> io::Result<Option<Meta>> {
    let p = dir.join(META_FILE);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn write(dir: &Path, meta: &Meta) -> io::Result<()> {
    let tmp = dir.join("meta.json.tmp");
    let body = serde_json::to_vec(meta).map_err(io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
