//! Label sets built in reusable buffers: the strings a point needs (sanitised
//! keys, stringified values, joined collision values, `le`/`quantile` values)
//! go into one byte arena, the sets into vectors kept from point to point, so
//! a point of a known shape costs no allocation.

use edgewatch_otlp::view::KeyValueView;

use super::attrs::write_any_value;
use super::names;
use edgewatch_prom::float::write_text_float;

/// A byte range of an arena.
#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    start: usize,
    end: usize,
}

impl Span {
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// The string at `s` (arenas hold only whole UTF-8 strings).
pub(super) fn at(arena: &[u8], s: Span) -> &str {
    arena
        .get(s.start..s.end)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

/// Appends with `f` and returns the range written.
pub(super) fn push(arena: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Span {
    let start = arena.len();
    f(arena);
    Span {
        start,
        end: arena.len(),
    }
}

/// Empties `v` and returns its allocation for borrows of another lifetime
/// (the label sets of successive points borrow different strings).
pub(super) fn recycle<'b>(mut v: Vec<(&str, &str)>) -> Vec<(&'b str, &'b str)> {
    v.clear();
    // An empty vector's elements borrow nothing (the closure never runs):
    // collecting in place keeps the allocation (std reuses it for same-layout
    // in-place iteration; tests/ingest_allocs.rs would catch a change).
    v.into_iter().map(|_| ("", "")).collect()
}

/// One sanitised attribute.
#[derive(Clone, Copy)]
struct Attr {
    /// The key as sent (collisions join in the order of these).
    orig: Span,
    key: Span,
    value: Span,
    /// Tie-break of the sort: keeps it stable without a stable sort's buffer.
    order: usize,
}

/// The attributes of one point (or of one resource, for `target_info`), as
/// label pairs in an arena: sorted by name, unique names, no empty values.
#[derive(Default)]
pub(super) struct AttrLabels {
    arena: Vec<u8>,
    attrs: Vec<Attr>,
}

impl AttrLabels {
    /// Sanitises keys (with the scraped-origin rules when `scraped`),
    /// stringifies values, drops empty values and joins the values of keys
    /// that collide after sanitising with `;`, in the order of the original
    /// keys. Scraped `job`/`instance`/`cluster`/`node` become `exported_*`
    /// (joined again with a scraped `exported_*` of the same name).
    pub fn build<'a>(&mut self, kvs: impl Iterator<Item = KeyValueView<'a>>, scraped: bool) {
        self.arena.clear();
        self.attrs.clear();
        let sanitise = if scraped {
            names::scraped_label_name_into
        } else {
            names::label_name_into
        };
        for (order, kv) in kvs.enumerate() {
            let mark = self.arena.len();
            let value = push(&mut self.arena, |a| write_any_value(a, kv.value()));
            if value.start == value.end {
                self.arena.truncate(mark);
                continue;
            }
            let k = kv.key();
            let mut ok = false;
            let key = push(&mut self.arena, |a| ok = sanitise(k, a));
            if !ok {
                self.arena.truncate(mark);
                continue;
            }
            let orig = push(&mut self.arena, |a| a.extend_from_slice(k.as_bytes()));
            self.attrs.push(Attr {
                orig,
                key,
                value,
                order,
            });
        }
        let arena = &self.arena;
        self.attrs.sort_unstable_by(|a, b| {
            arena[a.orig.start..a.orig.end]
                .cmp(&arena[b.orig.start..b.orig.end])
                .then(a.order.cmp(&b.order))
        });
        self.join();
        if scraped {
            for a in &mut self.attrs {
                let k = &self.arena[a.key.start..a.key.end];
                if matches!(k, b"job" | b"instance" | b"cluster" | b"node") {
                    let (s, e) = (a.key.start, a.key.end);
                    a.key = push(&mut self.arena, |ar| {
                        ar.extend_from_slice(b"exported_");
                        ar.extend_from_within(s..e);
                    });
                }
            }
            // An `exported_x` may now collide with a scraped `exported_x`;
            // Prometheus would prefix again; keep it simple: join like OTLP.
            self.join();
        }
    }

    /// Joins the values of equal keys with `;` (in the current order) and
    /// leaves the attributes sorted by key.
    fn join(&mut self) {
        for (i, a) in self.attrs.iter_mut().enumerate() {
            a.order = i;
        }
        let arena = &self.arena;
        self.attrs.sort_unstable_by(|a, b| {
            arena[a.key.start..a.key.end]
                .cmp(&arena[b.key.start..b.key.end])
                .then(a.order.cmp(&b.order))
        });
        let mut out = 0;
        let mut i = 0;
        while i < self.attrs.len() {
            let first = self.attrs[i];
            let key = first.key.start..first.key.end;
            let mut j = i + 1;
            while j < self.attrs.len() {
                let k = self.attrs[j].key;
                if self.arena[k.start..k.end] != self.arena[key.clone()] {
                    break;
                }
                j += 1;
            }
            let mut a = first;
            if j > i + 1 {
                let start = self.arena.len();
                for (n, x) in self.attrs[i..j].iter().enumerate() {
                    if n > 0 {
                        self.arena.push(b';');
                    }
                    self.arena.extend_from_within(x.value.start..x.value.end);
                }
                a.value = Span {
                    start,
                    end: self.arena.len(),
                };
            }
            self.attrs[out] = a;
            out += 1;
            i = j;
        }
        self.attrs.truncate(out);
    }

    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// The label pairs, sorted by name.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs
            .iter()
            .map(|a| (at(&self.arena, a.key), at(&self.arena, a.value)))
    }
}

/// Sets `(name, value)` in a label set sorted by name: replaced when `over`
/// or absent, else kept.
pub(super) fn set<'x>(
    labels: &mut Vec<(&'x str, &'x str)>,
    name: &'x str,
    value: &'x str,
    over: bool,
) {
    match labels.binary_search_by(|p| p.0.cmp(name)) {
        Ok(i) if over => labels[i].1 = value,
        Ok(_) => {}
        Err(i) => labels.insert(i, (name, value)),
    }
}

/// `base` with `(name, value)` set over it, into `out`.
pub(super) fn with<'x>(
    out: &mut Vec<(&'x str, &'x str)>,
    base: &[(&'x str, &'x str)],
    name: &'x str,
    value: &'x str,
) {
    out.clear();
    out.extend_from_slice(base);
    set(out, name, value, true);
}

/// At most `N` label pairs, without a heap allocation.
#[derive(Clone, Copy)]
pub(super) struct Few<'a, const N: usize> {
    pairs: [(&'a str, &'a str); N],
    len: usize,
}

impl<'a, const N: usize> Few<'a, N> {
    /// The pairs with a non-empty value (the first `N`).
    pub fn non_empty(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut f = Few {
            pairs: [("", ""); N],
            len: 0,
        };
        for p in pairs.into_iter().filter(|(_, v)| !v.is_empty()).take(N) {
            f.pairs[f.len] = p;
            f.len += 1;
        }
        f
    }

    pub fn as_slice(&self) -> &[(&'a str, &'a str)] {
        &self.pairs[..self.len]
    }
}

/// `le` values of a histogram's bounds, kept while the bounds stay the same
/// (they do from point to point of a metric).
#[derive(Default)]
pub(super) struct LeCache {
    bounds: Vec<u64>,
    text: Vec<u8>,
    spans: Vec<Span>,
}

impl LeCache {
    /// The `le` value of each bound.
    pub fn les(&mut self, bounds: &[f64]) -> impl Iterator<Item = &str> {
        if !self
            .bounds
            .iter()
            .copied()
            .eq(bounds.iter().map(|b| b.to_bits()))
        {
            self.bounds.clear();
            self.text.clear();
            self.spans.clear();
            for &b in bounds {
                self.bounds.push(b.to_bits());
                let s = push(&mut self.text, |t| write_text_float(t, b));
                self.spans.push(s);
            }
        }
        self.spans.iter().map(|s| at(&self.text, *s))
    }
}
