//! The symbol ids of the strings of the last series key built on this
//! thread. Successive writes share most strings (a histogram point's
//! buckets, sum and count; the points of one metric share their name, label
//! names and most values), and comparing a string with the one at the same
//! place in the previous key is much cheaper than a symbol table lookup,
//! which was most of the cost of a write.
//!
//! Ids stay valid until the store collects unused symbols: the memo belongs
//! to one store and one collection epoch, read under the store's GC lock.

use std::cell::RefCell;

use super::symbols::SymbolId;
use super::KeyBuf;

#[derive(Default)]
struct Memo {
    store: u64,
    epoch: u64,
    /// The strings of the last key, concatenated, and (start, end, id) of each.
    text: Vec<u8>,
    slots: Vec<(usize, usize, SymbolId)>,
    next_text: Vec<u8>,
    next_slots: Vec<(usize, usize, SymbolId)>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// Pushes the ids of `strings` onto `key`, from the memo where the string is
/// the one at that place in the last key, else from `lookup`; false when
/// `lookup` finds none (the key is then incomplete).
pub(super) fn resolve<'s>(
    store: u64,
    epoch: u64,
    strings: impl Iterator<Item = &'s str> + Clone,
    key: &mut KeyBuf,
    mut lookup: impl FnMut(&str) -> Option<SymbolId>,
) -> bool {
    let memoised = MEMO
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            Some(m.resolve(store, epoch, strings.clone(), key, &mut lookup))
        })
        .ok()
        .flatten();
    // Without the thread's memo (torn down): plain lookups.
    memoised.unwrap_or_else(|| {
        for s in strings {
            match lookup(s) {
                Some(id) => key.push(id),
                None => return false,
            }
        }
        true
    })
}

impl Memo {
    fn resolve<'s>(
        &mut self,
        store: u64,
        epoch: u64,
        strings: impl Iterator<Item = &'s str>,
        key: &mut KeyBuf,
        lookup: &mut impl FnMut(&str) -> Option<SymbolId>,
    ) -> bool {
        if (self.store, self.epoch) != (store, epoch) {
            self.store = store;
            self.epoch = epoch;
            self.text.clear();
            self.slots.clear();
        }
        self.next_text.clear();
        self.next_slots.clear();
        for (i, s) in strings.enumerate() {
            let memoised = self.slots.get(i).and_then(|&(start, end, id)| {
                (self.text.get(start..end) == Some(s.as_bytes())).then_some(id)
            });
            let Some(id) = memoised.or_else(|| lookup(s)) else {
                return false;
            };
            key.push(id);
            let start = self.next_text.len();
            self.next_text.extend_from_slice(s.as_bytes());
            self.next_slots.push((start, self.next_text.len(), id));
        }
        std::mem::swap(&mut self.text, &mut self.next_text);
        std::mem::swap(&mut self.slots, &mut self.next_slots);
        true
    }
}
