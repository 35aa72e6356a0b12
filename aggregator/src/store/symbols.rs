//! Symbol table: every label name, label value and metric name held by the
//! store is interned once and referred to by a dense `u32` id.
//!
//! Lifetime rules (see `Store` for the locks that enforce them):
//! - ids are handed out by [`Symbols::intern`] with no reference taken;
//! - a series that is inserted takes one reference per id in its key
//!   ([`Symbols::retain`]), a series that is removed gives them back
//!   ([`Symbols::release`]);
//! - ids with zero references are only freed by [`Symbols::collect`], which the
//!   store calls while holding its GC lock exclusively, so no writer can sit
//!   between "looked up an id" and "inserted the series", and no reader can hold
//!   an id of a removed series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::hash::FxBuildHasher;

pub(crate) type SymbolId = u32;

#[derive(Default)]
pub(crate) struct Symbols {
    map: HashMap<Arc<str>, SymbolId, FxBuildHasher>,
    strs: Vec<Option<Arc<str>>>,
    refs: Vec<AtomicU32>,
    free: Vec<SymbolId>,
}

impl Symbols {
    pub(crate) fn get(&self, s: &str) -> Option<SymbolId> {
        self.map.get(s).copied()
    }

    /// Returns the id for `s`, creating it when absent (no reference taken).
    pub(crate) fn intern(&mut self, s: &str) -> SymbolId {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let arc: Arc<str> = Arc::from(s);
        let id = match self.free.pop() {
            Some(id) => {
                self.strs[id as usize] = Some(arc.clone());
                self.refs[id as usize].store(0, Ordering::Relaxed);
                id
            }
            None => {
                let id = self.strs.len() as SymbolId;
                self.strs.push(Some(arc.clone()));
                self.refs.push(AtomicU32::new(0));
                id
            }
        };
        self.map.insert(arc, id);
        id
    }

    /// The string of a live id. Panics on a freed id (a bug in the store).
    #[inline]
    pub(crate) fn resolve(&self, id: SymbolId) -> &str {
        self.strs[id as usize]
            .as_deref()
            .expect("symbol id of a freed symbol")
    }

    /// Upper bound (exclusive) of ids handed out so far.
    pub(crate) fn capacity(&self) -> usize {
        self.strs.len()
    }

    pub(crate) fn live(&self) -> usize {
        self.map.len()
    }

    /// Whether `id` names a string (was not freed).
    pub(crate) fn is_live(&self, id: SymbolId) -> bool {
        self.strs.get(id as usize).is_some_and(Option::is_some)
    }

    /// Gives back what freed symbols held: free ids at the end of the table are
    /// dropped, and tables mostly empty after a burst shrink. Same exclusivity as
    /// [`Symbols::collect`].
    pub(crate) fn shrink(&mut self) {
        let mut len = self.strs.len();
        while len > 0 && self.strs[len - 1].is_none() {
            len -= 1;
        }
        if len < self.strs.len() {
            self.strs.truncate(len);
            self.refs.truncate(len);
            self.free.retain(|&id| (id as usize) < len);
        }
        let mostly_empty = |len: usize, cap: usize| cap > 64 && len < cap / 4;
        if mostly_empty(self.strs.len(), self.strs.capacity()) {
            self.strs.shrink_to_fit();
            self.refs.shrink_to_fit();
        }
        if mostly_empty(self.free.len(), self.free.capacity()) {
            self.free.shrink_to_fit();
        }
        if mostly_empty(self.map.len(), self.map.capacity()) {
            self.map.shrink_to_fit();
        }
    }

    pub(crate) fn retain(&self, ids: &[SymbolId]) {
        for &id in ids {
            self.refs[id as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn release(&self, ids: &[SymbolId]) {
        for &id in ids {
            self.refs[id as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Frees every symbol without references. Caller guarantees exclusivity
    /// with respect to writers and readers holding ids (the store's GC lock).
    pub(crate) fn collect(&mut self) -> usize {
        let mut freed = 0;
        for id in 0..self.strs.len() {
            if self.strs[id].is_some() && self.refs[id].load(Ordering::Relaxed) == 0 {
                if let Some(s) = self.strs[id].take() {
                    self.map.remove(&*s);
                }
                self.free.push(id as SymbolId);
                freed += 1;
            }
        }
        freed
    }

    /// Approximate heap bytes held (for reports and the memory test).
    pub(crate) fn heap_bytes(&self) -> usize {
        let strings: usize = self.strs.iter().flatten().map(|s| s.len() + 16).sum();
        strings
            + self.map.capacity() * (16 + 4 + 1)
            + self.strs.capacity() * 16
            + self.refs.capacity() * 4
            + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_reuses_and_collects() {
        let mut s = Symbols::default();
        let a = s.intern("a");
        let b = s.intern("b");
        assert_eq!(s.intern("a"), a);
        assert_eq!(s.resolve(b), "b");
        s.retain(&[a]);
        assert_eq!(s.collect(), 1); // b had no reference
        assert_eq!(s.get("b"), None);
        assert_eq!(s.resolve(a), "a");
        let c = s.intern("c");
        assert_eq!(c, b, "freed id is reused");
        s.release(&[a]);
        assert_eq!(s.collect(), 2);
        assert_eq!(s.live(), 0);
    }
}
