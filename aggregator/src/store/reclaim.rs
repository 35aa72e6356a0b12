//! Giving memory back after series expire. Removing a series releases its
//! symbols; the collection under the GC lock (`Store::sweep`) then also:
//! - forgets the family of a metric name no series has any more (the name's
//!   symbol was freed), once it stayed unused across two collections (an id
//!   handed out by `Store::family` just before one stays valid while its request
//!   writes); families the core holds for good are pinned (`Store::pin_family`);
//! - shrinks the tables a burst of series grew (shard maps, the symbol table, the
//!   per-name family map) once they are mostly empty;
//! - after a large removal, asks the allocator to return free pages to the
//!   system, so RSS comes back down after a cardinality burst expires.

use super::{read, write, FamilyMeta, MetricType, Store};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

/// Series removed (over one or more sweeps) beyond which freed heap is handed back
/// to the system.
const TRIM_AFTER: usize = 10_000;

impl Store {
    /// Whether families wait for the next collection to be freed.
    pub(super) fn reclaim_pending(&self) -> bool {
        !read(&self.families).candidates.is_empty()
    }

    /// Called with the GC lock held exclusively, after symbols were collected.
    pub(super) fn reclaim(&self) {
        let referenced: HashSet<u32> = {
            let sym = read(&self.symbols);
            let mut by_name = write(&self.name_families);
            by_name.retain(|name, _| sym.is_live(*name));
            shrink_map(&mut by_name);
            by_name.values().copied().collect()
        };
        self.free_families(&referenced);
        for shard in self.shards.iter() {
            let mut map = write(shard);
            if is_mostly_empty(map.len(), map.capacity()) {
                map.shrink_to_fit();
            }
        }
        write(&self.symbols).shrink();
        if self.untrimmed.load(Ordering::Relaxed) >= TRIM_AFTER {
            self.untrimmed.store(0, Ordering::Relaxed);
            trim_heap();
        }
    }

    fn free_families(&self, referenced: &HashSet<u32>) {
        let mut guard = write(&self.families);
        let f = &mut *guard;
        let unused: HashSet<u32> = (0..f.metas.len() as u32)
            .filter(|id| {
                !referenced.contains(id)
                    && !f.pinned.contains(id)
                    && f.by_name.contains_key(&f.metas[*id as usize].name)
            })
            .collect();
        for &id in f.candidates.intersection(&unused) {
            let meta = std::mem::replace(&mut f.metas[id as usize], tombstone());
            f.by_name.remove(&meta.name);
            f.free.push(id);
        }
        f.candidates = unused
            .difference(&f.candidates)
            .copied()
            .collect::<HashSet<u32>>();
        // Freed ids at the end are dropped rather than kept for reuse.
        let free: HashSet<u32> = f.free.iter().copied().collect();
        let mut len = f.metas.len();
        while len > 0 && free.contains(&(len as u32 - 1)) {
            len -= 1;
        }
        if len < f.metas.len() {
            f.metas.truncate(len);
            f.free.retain(|&id| (id as usize) < len);
        }
        if is_mostly_empty(f.metas.len(), f.metas.capacity()) {
            f.metas.shrink_to_fit();
            f.free.shrink_to_fit();
        }
        shrink_map(&mut f.by_name);
        f.candidates.shrink_to_fit();
    }
}

pub(super) fn tombstone() -> FamilyMeta {
    FamilyMeta {
        name: String::new(),
        metric_type: MetricType::Unknown,
        help: String::new(),
        unit: String::new(),
    }
}

/// Worth shrinking: large and at most a quarter used.
pub(super) fn is_mostly_empty(len: usize, capacity: usize) -> bool {
    capacity > 64 && len < capacity / 4
}

fn shrink_map<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(m: &mut HashMap<K, V, S>) {
    if is_mostly_empty(m.len(), m.capacity()) {
        m.shrink_to_fit();
    }
}

/// Caps glibc's malloc arenas at one per core. By default glibc makes up to 8 per core,
/// one per thread that meets contention; a burst spread over many of them leaves free
/// pages scattered across arenas that `malloc_trim` does not give back (measured: RSS
/// stayed near the burst's peak after its series expired; with the cap it came back
/// to the baseline). Called once at start, before ingest threads allocate.
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

/// Returns free heap pages to the system (glibc keeps them otherwise).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
