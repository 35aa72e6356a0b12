//! Handing freed heap back to the system. glibc keeps freed pages in its arenas
//! (only the top of an arena is returned on free), so after a cardinality burst
//! expires — the store's series, the log's records and sled's cache all freed, at
//! different times and from different threads — RSS would stay near the burst's
//! peak. A periodic check of the allocator's free bytes trims once enough was freed
//! since the last trim, whoever freed it.

use prometheus::{IntCounter, Registry};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Free heap grown by this much since the last trim is worth handing back.
const TRIM_AFTER_BYTES: u64 = 4 << 20;
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Caps glibc's malloc arenas at one per core. By default glibc makes up to 8 per core,
/// one per thread that meets contention; a burst spread over many of them leaves free
/// pages scattered across arenas. Called once at start, before ingest threads allocate.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX bounds arenas
        // created from now on.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// When to trim, from the allocator's free bytes: `floor` is the lowest free
/// figure seen since the last trim (memory reused lowers it, so a later free is
/// measured from there). Freed memory must stay free across two checks: under
/// steady ingest, request buffers are freed and reused all the time, and trimming
/// those would only make the next requests fault their pages in again.
#[derive(Debug, Default)]
pub struct TrimPolicy {
    floor: Option<u64>,
    above: bool,
}

impl TrimPolicy {
    /// Whether to trim now, given the allocator's free bytes.
    pub fn should_trim(&mut self, free: u64) -> bool {
        let floor = self.floor.map_or(free, |f| f.min(free));
        self.floor = Some(floor);
        let above = free >= floor.saturating_add(TRIM_AFTER_BYTES);
        let trim = above && self.above;
        self.above = above;
        trim
    }

    /// After a trim: freed chunks stay counted as free (their pages are gone), so
    /// the next trim waits for as much again.
    pub fn trimmed(&mut self, free_after: u64) {
        self.floor = Some(free_after);
        self.above = false;
    }
}

/// Bytes in free chunks of every arena, or `None` where the allocator does not say.
fn free_heap_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Checks the allocator every few seconds and trims when the policy says so;
/// `edgewatch_heap_trims_total` counts the trims.
pub async fn run(registry: Registry, stop: CancellationToken) {
    let trims = IntCounter::new(
        "edgewatch_heap_trims_total",
        "Times freed heap was handed back to the system after a large release.",
    )
    .and_then(|c| registry.register(Box::new(c.clone())).map(|()| c));
    let trims = match trims {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "heap trimming off: its metric did not register");
            return;
        }
    };
    let mut policy = TrimPolicy::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let Some(free) = free_heap_bytes() else {
            return;
        };
        if !policy.should_trim(free) {
            continue;
        }
        // malloc_trim walks every free chunk: off the async workers.
        let after = tokio::task::spawn_blocking(|| {
            trim();
            free_heap_bytes()
        })
        .await;
        if let Ok(Some(after)) = after {
            policy.trimmed(after);
            trims.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn trims_once_enough_was_freed_since_the_lowest_point() {
        // (free bytes seen, trim expected)
        let table: &[(u64, bool)] = &[
            (10 * MIB, false), // first reading sets the floor
            (13 * MIB, false), // 3 MiB freed: not yet
            (2 * MIB, false),  // reused: floor drops to 2 MiB
            (6 * MIB, false),  // 4 MiB freed since the floor, once
            (3 * MIB, false),  // and reused: a request's buffers
            (7 * MIB, false),  // freed again
            (7 * MIB, true),   // and still free at the next check
        ];
        let mut p = TrimPolicy::default();
        for (i, &(free, want)) in table.iter().enumerate() {
            assert_eq!(p.should_trim(free), want, "row {i}: {free} B free");
        }
        // Trimmed chunks still count as free: the next trim waits for 4 MiB more.
        p.trimmed(7 * MIB);
        assert!(!p.should_trim(10 * MIB));
        assert!(!p.should_trim(11 * MIB));
        assert!(p.should_trim(11 * MIB));
    }
}
