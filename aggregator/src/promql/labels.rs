//! Label sets as the evaluator holds them during one evaluation round: every
//! string interned once in a round-local [`Interner`], a label set an `Arc` of
//! id pairs shared by every sample that carries it.
//!
//! Why not strings: one round of 1,000 rules over 100,000 series touches about a
//! million samples; copying their label strings into maps was most of the cost.
//! Why a round-local table rather than the store's ids: the store frees and reuses
//! ids between rounds (its GC), and a round must not hold the store's GC lock
//! while it evaluates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::store::FxBuildHasher;

/// An interned string of one round.
pub(crate) type Sym = u32;

/// `__name__` is always id 0.
pub(crate) const NAME: Sym = 0;
const NAME_STR: &str = "__name__";

/// Round-local string table.
pub(crate) struct Interner {
    map: HashMap<Arc<str>, Sym, FxBuildHasher>,
    strs: Vec<Arc<str>>,
}

impl Interner {
    pub(crate) fn new() -> Self {
        let mut i = Self {
            map: HashMap::default(),
            strs: Vec::new(),
        };
        i.intern(NAME_STR);
        i
    }

    pub(crate) fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let id = self.strs.len() as Sym;
        let a: Arc<str> = Arc::from(s);
        self.strs.push(a.clone());
        self.map.insert(a, id);
        id
    }

    pub(crate) fn get(&self, s: &str) -> Option<Sym> {
        self.map.get(s).copied()
    }

    pub(crate) fn resolve(&self, id: Sym) -> &str {
        &self.strs[id as usize]
    }

    /// Upper bound (exclusive) of the ids handed out.
    pub(crate) fn len(&self) -> usize {
        self.strs.len()
    }
}

/// A label set: the metric name (if kept) and the other labels as `[k, v, k, v…]`
/// sorted by key id, no empty values. Equality and hashing are by ids, which is
/// exact within one round.
///
/// The pairs are a range of a shared block: the snapshot puts the label sets
/// of one metric side by side in one block, so that reading a metric's series
/// in order reads memory in order.
#[derive(Clone, Debug)]
pub(crate) struct LabelSet {
    name: Option<Sym>,
    block: Arc<[Sym]>,
    off: u32,
    len: u32,
}

impl PartialEq for LabelSet {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.pairs() == other.pairs()
    }
}

impl Eq for LabelSet {}

impl std::hash::Hash for LabelSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.pairs().hash(state);
    }
}

impl LabelSet {
    /// Builds a set from unsorted `(key, value)` pairs (`__name__` among them
    /// or not); a later duplicate key wins, empty values are dropped.
    pub(crate) fn from_pairs(mut pairs: Vec<(Sym, Sym)>, interner: &Interner) -> Self {
        let empty = interner.get("");
        pairs.retain(|p| Some(p.1) != empty);
        let mut name = None;
        pairs.retain(|p| {
            if p.0 == NAME {
                name = Some(p.1);
                false
            } else {
                true
            }
        });
        // Stable sort keeps input order among equal keys: keep the last.
        pairs.sort_by_key(|p| p.0);
        let mut flat: Vec<Sym> = Vec::with_capacity(pairs.len() * 2);
        for (i, p) in pairs.iter().enumerate() {
            if pairs.get(i + 1).is_some_and(|n| n.0 == p.0) {
                continue;
            }
            flat.push(p.0);
            flat.push(p.1);
        }
        Self::from_sorted(name, &flat)
    }

    /// Builds a set from `[k, v, …]` already sorted by key, without `__name__`.
    pub(crate) fn from_sorted(name: Option<Sym>, flat: &[Sym]) -> Self {
        Self::in_block(name, &Arc::from(flat), 0, flat.len())
    }

    /// The set whose pairs are `block[off..off + len]` (sorted by key, without
    /// `__name__`).
    pub(crate) fn in_block(name: Option<Sym>, block: &Arc<[Sym]>, off: usize, len: usize) -> Self {
        Self {
            name,
            block: block.clone(),
            off: off as u32,
            len: len as u32,
        }
    }

    pub(crate) fn empty() -> Self {
        Self::from_sorted(None, &[])
    }

    fn pairs(&self) -> &[Sym] {
        &self.block[self.off as usize..(self.off + self.len) as usize]
    }

    pub(crate) fn without_name(&self) -> Self {
        Self {
            name: None,
            ..self.clone()
        }
    }

    pub(crate) fn get(&self, key: Sym) -> Option<Sym> {
        if key == NAME {
            return self.name;
        }
        self.pairs()
            .chunks_exact(2)
            .find(|c| c[0] == key)
            .map(|c| c[1])
    }

    /// Every label, `__name__` first when kept.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Sym, Sym)> + '_ {
        self.name
            .map(|n| (NAME, n))
            .into_iter()
            .chain(self.pairs().chunks_exact(2).map(|c| (c[0], c[1])))
    }

    /// Writes into `out` the `[k, v, …]` of the labels `keep` accepts (a
    /// grouping or matching key; `__name__` included when accepted).
    pub(crate) fn project(&self, keep: impl Fn(Sym) -> bool, out: &mut Vec<Sym>) {
        out.clear();
        for (k, v) in self.iter() {
            if keep(k) {
                out.push(k);
                out.push(v);
            }
        }
    }

    /// The inverse of [`LabelSet::project`]'s output.
    pub(crate) fn from_projection(flat: &[Sym]) -> Self {
        match flat {
            [NAME, n, rest @ ..] => Self::from_sorted(Some(*n), rest),
            _ => Self::from_sorted(None, flat),
        }
    }

    pub(crate) fn to_map(&self, interner: &Interner) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| {
                (
                    interner.resolve(k).to_string(),
                    interner.resolve(v).to_string(),
                )
            })
            .collect()
    }

    /// `{k="v", …}` in key string order (error messages).
    pub(crate) fn display(&self, interner: &Interner) -> String {
        let inner: Vec<String> = self
            .to_map(interner)
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{{{}}}", inner.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_compare_by_content_and_drop_empty_values() {
        let mut i = Interner::new();
        let (job, api, inst, a, empty) = (
            i.intern("job"),
            i.intern("api"),
            i.intern("instance"),
            i.intern("a"),
            i.intern(""),
        );
        let m = i.intern("up");
        let x = LabelSet::from_pairs(vec![(job, api), (NAME, m), (inst, a)], &i);
        let y = LabelSet::from_pairs(vec![(inst, a), (job, api), (NAME, m), (job, api)], &i);
        assert_eq!(x, y);
        assert_eq!(x.get(NAME), Some(m));
        assert_ne!(x, x.without_name());
        let z = LabelSet::from_pairs(vec![(job, api), (inst, empty)], &i);
        assert_eq!(z.to_map(&i).len(), 1);
        let mut key = Vec::new();
        x.project(|k| k == NAME || k == job, &mut key);
        assert_eq!(
            LabelSet::from_projection(&key).to_map(&i),
            [("__name__", "up"), ("job", "api")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        );
        assert_eq!(
            x.display(&i),
            "{__name__=\"up\", instance=\"a\", job=\"api\"}"
        );
    }
}
