//! The compaction thread: rewrites each sealed segment as a new sled `Db` of
//! at most [`MAX_BLOCKS`] blocks, each one zstd frame over many consecutive
//! payloads, then swaps it in (`<name>.compacting` → `<name>.z`, original
//! deleted). Compressing hundreds of OTLP batches together finds far more
//! repetition than one batch against a dictionary, and a fresh `Db` with so
//! few values is written once (the active segment's sled log holds each
//! entry ~2x until its cleaner runs). Appends never wait for it.
//!
//! Crash safety: the original stays until the copy is flushed, fsynced and
//! renamed into place; at open a `.compacting` directory is deleted and, if
//! both `<name>` and `<name>.z` exist, `<name>` is (see `try_open`).

use super::format::{self, Header};
use super::meta::sync_dir;
use super::segment::{dir_bytes, SegError, SegHandle, MAX_BLOCKS};
use super::Shared;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// zstd level of blocks. Measured on the random-gauge payload (release,
/// 2-core VM) in BENCHMARKS.md: level 3 gives little over the dictionary,
/// 19 is too slow for a 10k points/s budget.
pub(crate) const BLOCK_LEVEL: i32 = 12;
/// A failed compaction (disk full, I/O error) is retried after this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);
/// Uncompressed payload bytes per block (fewer, larger blocks compress
/// better and waste less of the file system's last block per blob file);
/// at most `MAX_BLOCKS` per segment, so large segments get larger blocks.
const BLOCK_RAW_TARGET: u64 = 1 << 20;

/// Level 12's own tables for a 4 MiB input take ~48 MiB (hash log 22, chain
/// log 23): more than the collector's whole memory budget while it compacts
/// during an outage. Capped at 2^20 entries each (8 MiB together); the repeats
/// that matter between consecutive OTLP batches are a few kB apart, so the
/// ratio barely moves (BENCHMARKS.md, "Buffer disk per data point").
fn block_compressor() -> std::io::Result<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(BLOCK_LEVEL)?;
    c.set_parameter(CParameter::WindowLog(22))?;
    c.set_parameter(CParameter::HashLog(HASH_LOG))?;
    c.set_parameter(CParameter::ChainLog(HASH_LOG))?;
    Ok(c)
}

const HASH_LOG: u32 = 20;

struct Job {
    first: u64,
    points_before: u64,
    end: u64,
    dir: PathBuf,
    handle: Arc<SegHandle>,
}

pub(crate) fn run(shared: Arc<Shared>) {
    let mut failed: HashMap<u64, Instant> = HashMap::new();
    loop {
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        failed.retain(|_, t| t.elapsed() < RETRY_AFTER);
        match next_job(&shared, &failed) {
            Some(job) => {
                let first = job.first;
                // A compressor per job: its tables go back to the system
                // between outages instead of staying with the thread.
                let res = block_compressor()
                    .map_err(CompactError::Compressor)
                    .and_then(|mut c| compact(&shared, job, &mut c));
                if let Err(e) = res {
                    if !shared.closed.load(Ordering::Acquire) {
                        warn!(segment = first, error = %e, "compaction failed");
                    }
                    failed.insert(first, Instant::now());
                    shared.lock().compacting_bytes = 0;
                }
            }
            None => shared.compact_wait(POLL),
        }
    }
}

/// Compaction waits until the forwarder has acknowledged nothing for this
/// long: while the core answers, sealed segments are drained within seconds,
/// and compacting them would read and compress them for nothing (and hold
/// zstd's tables while the forwarder holds its batches). On a link slower than
/// the input, the backlog stays uncompacted (~2x on disk) until it stops.
const QUIET: Duration = Duration::from_secs(5);

fn next_job(shared: &Shared, failed: &HashMap<u64, Instant>) -> Option<Job> {
    let mut st = shared.lock();
    if st.last_ack.is_some_and(|t| t.elapsed() < QUIET) {
        return None;
    }
    let n = st.segs.len();
    let i = (0..n.saturating_sub(1)).find(|&i| {
        let s = &st.segs[i];
        !s.compacted && !failed.contains_key(&s.first) && st.seg_end(i) > s.first.max(st.head)
    })?;
    let end = st.seg_end(i);
    let handle = st.shared_handle(i).ok()?;
    let s = &st.segs[i];
    Some(Job {
        first: s.first,
        points_before: s.points_before,
        end,
        dir: s.dir.clone(),
        handle,
    })
}

/// Why a compaction failed; the sealed segment stays as it is.
#[derive(Debug, thiserror::Error)]
enum CompactError {
    #[error("zstd compressor: {0}")]
    Compressor(#[source] io::Error),
    #[error("reading the sealed segment: {0}")]
    Read(#[source] SegError),
    #[error("writing the compacted copy: {0}")]
    Write(#[source] SegError),
    #[error("{context} {}: {source}", .path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("closing")]
    Closing,
}

impl CompactError {
    fn io(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CompactError {
        let path = path.to_path_buf();
        move |source| CompactError::Io {
            context,
            path,
            source,
        }
    }
}

fn compact(
    shared: &Shared,
    job: Job,
    compressor: &mut zstd::bulk::Compressor<'static>,
) -> Result<(), CompactError> {
    let started = Instant::now();
    let segs_dir = &shared.cfg.segments_dir;
    let final_dir = segs_dir.join(format::segment_name(job.first, job.points_before, true));
    let tmp = segs_dir.join(format!(
        "{}{}",
        format::segment_name(job.first, job.points_before, true),
        format::COMPACTING_SUFFIX
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(CompactError::io("removing", &tmp))?;
    }
    if let Err(e) = write_copy(shared, &job, compressor, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    swap_in(shared, job, &tmp, final_dir, started)
}

/// Writes the compacted copy of the job's segment into `tmp`, durably.
fn write_copy(
    shared: &Shared,
    job: &Job,
    compressor: &mut zstd::bulk::Compressor<'static>,
    tmp: &Path,
) -> Result<(), CompactError> {
    let out = SegHandle::open(tmp, job.first, true, true).map_err(CompactError::Write)?;
    let n = job.end - job.first;
    let mut total_raw = 0u64;
    job.handle
        .scan(job.first, job.end, false, &mut |_, hd, _| {
            total_raw += hd.raw_len;
            true
        })
        .map_err(CompactError::Read)?;
    let blocks = total_raw.div_ceil(BLOCK_RAW_TARGET).clamp(1, MAX_BLOCKS);
    let per_block = n.div_ceil(blocks).max(1);
    let mut headers: Vec<Header> = Vec::new();
    let mut raw: Vec<u8> = Vec::new();
    let mut err: Option<CompactError> = None;
    let mut emit = |headers: &mut Vec<Header>, raw: &mut Vec<u8>, first: u64| {
        let v = format::encode_block(headers, raw, compressor)
            .map_err(|e| CompactError::Write(SegError::io("compressing a block", e)))?;
        out.insert_block(first, v).map_err(CompactError::Write)?;
        headers.clear();
        raw.clear();
        shared.lock().compacting_bytes = dir_bytes(tmp);
        Ok::<(), CompactError>(())
    };
    let mut block_first = job.first;
    let scanned = job
        .handle
        .scan(job.first, job.end, true, &mut |seq, hd, p| {
            if shared.closed.load(Ordering::Acquire) {
                err = Some(CompactError::Closing);
                return false;
            }
            if headers.is_empty() {
                block_first = seq;
            }
            headers.push(*hd);
            raw.extend_from_slice(&p.unwrap_or_default());
            if headers.len() as u64 >= per_block {
                if let Err(e) = emit(&mut headers, &mut raw, block_first) {
                    err = Some(e);
                    return false;
                }
            }
            true
        });
    if let Some(e) = err {
        return Err(e);
    }
    scanned.map_err(CompactError::Read)?;
    if !headers.is_empty() {
        emit(&mut headers, &mut raw, block_first)?;
    }
    out.flush().map_err(CompactError::Write)?;
    drop(out);
    sync_dir(tmp).map_err(CompactError::io("syncing", tmp))?;
    let blobs = tmp.join("blobs");
    if blobs.is_dir() {
        sync_dir(&blobs).map_err(CompactError::io("syncing", &blobs))?;
    }
    Ok(())
}

/// Puts the compacted copy in the original's place, unless the segment went away
/// meanwhile (drained, dropped, quarantined).
fn swap_in(
    shared: &Shared,
    job: Job,
    tmp: &Path,
    final_dir: PathBuf,
    started: Instant,
) -> Result<(), CompactError> {
    drop(job.handle);
    // Under the lock: readers and the writer see the old or the new segment.
    let mut st = shared.lock();
    st.compacting_bytes = 0;
    let Some(i) = st
        .segs
        .iter()
        .position(|s| s.first == job.first && !s.compacted && s.dir == job.dir)
    else {
        drop(st);
        let _ = std::fs::remove_dir_all(tmp);
        return Ok(());
    };
    std::fs::rename(tmp, &final_dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(tmp);
        CompactError::io("renaming the compacted copy", tmp)(e)
    })?;
    let _ = sync_dir(&shared.cfg.segments_dir);
    let before = st.segs[i].bytes;
    let after = dir_bytes(&final_dir);
    {
        let s = &mut st.segs[i];
        s.dir = final_dir;
        s.compacted = true;
        s.bytes = after;
    }
    st.forget_handle(job.first);
    st.update_gauges(&shared.metrics);
    drop(st);
    if let Err(e) = std::fs::remove_dir_all(&job.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            shared.lock().pending_deletes.push(job.dir.clone());
        }
    }
    debug!(
        segment = job.first,
        entries = job.end - job.first,
        before,
        after,
        ms = started.elapsed().as_millis() as u64,
        "segment compacted"
    );
    Ok(())
}
