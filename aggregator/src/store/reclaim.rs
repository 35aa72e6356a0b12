//! Giving memory back after series expire. Removing a series releases its
//! symbols; the collection under the GC lock (`Store::sweep`) then also:
//! - forgets the family of a metric name no series has any more (the name's
//!   symbol was freed), once it stayed unused across two collections (an id
//!   handed out by `Store::family` just before one stays valid while its request
//!   writes); families the core holds for good are pinned (`Store::pin_family`);
//! - shrinks the tables a burst of series grew (shard maps, the symbol table, the
//!   per-name family map) once they are mostly empty.
//!
//! Handing the freed pages back to the system is `crate::heap`'s job.

use super::{read, write, FamilyMeta, MetricType, Store};
use std::collections::{HashMap, HashSet};

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
