//! The series store: latest sample per Prometheus series, with staleness.
//!
//! This is the one place that knows how series are held. `/federate` (and
//! later the rule evaluator and the fleet view) read through [`Store::select`].
//!
//! # Layout
//! - Every string (metric name, label name, label value) is interned in a
//!   [`symbols::Symbols`] table and referred to by a `u32` id.
//! - A series key is a `Box<[u32]>`: `[name, l1, v1, l2, v2, ...]` with the
//!   label pairs sorted by label *name string* (Prometheus label order) and no
//!   empty values; it is the hash-map key and the only copy of the label set.
//! - Series live in `SHARDS` shards (`RwLock<HashMap<key, Slot>>`) picked by a
//!   hash of the key, so writers on different connections rarely contend and a
//!   reader holds one shard at a time for a short scan.
//! - A [`Slot`] holds the latest value, its original timestamp (ms), the
//!   arrival time of the last accepted sample (for staleness) and the family
//!   id (index into the metadata table for `# TYPE`/`# HELP`).
//!   A bounded window of recent samples for PromQL range functions is an
//!   optional boxed ring in `Slot`, allocated only for series in the
//!   window's scope (the selectors rules read; see `window.rs` and
//!   [`Store::set_window`]), so the common case stays one sample.
//!
//! # Locks (always taken in this order: gc → shard → symbols/families)
//! - `gc` (RwLock<()>): writers and selects hold it shared; [`Store::sweep`]
//!   frees unreferenced symbols only under `try_write`, so neither ingest nor
//!   a `/federate` render ever waits for the sweep, and ids stay valid for
//!   anyone holding it shared.
//! - `symbols`: looked up under a read lock; new strings need a short write.
//!   A writer first compares its strings with its thread's previous key
//!   (`memo.rs`) and looks up only those that differ; a collection of
//!   symbols (under `gc` held exclusively) invalidates every memo.
//! - shards: a write per sample on ingest; a read per shard during a select.
//!   A select copies every string it needs into its own arena, so the sort and
//!   the encoding of a large `/federate` response run with no store lock held.

mod hash;
pub mod limits;
mod logged;
mod memo;
mod reclaim;
mod select;
mod symbols;
mod window;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use smallvec::SmallVec;

pub(crate) use hash::FxBuildHasher;
use symbols::{SymbolId, Symbols};

pub use limits::{Limit, Limits};
pub use logged::{LimitDrop, Logged};
pub use select::METRIC_NAME;
pub use select::{LabelMatcher, MatchOp, Selection, Selector, SelectorError, SeriesRef};
use window::{Ring, WindowState};
pub use window::{SeriesSamples, SeriesView, WindowOptions, WindowScope};

const SHARDS: usize = 256;

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// Store configuration.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A series without an accepted sample for this long (by arrival time) is
    /// not served and is removed by the next [`Store::sweep`].
    pub staleness: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            staleness: Duration::from_secs(5 * 60),
        }
    }
}

/// Prometheus metric family type (as written on `# TYPE` lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Unknown,
}

impl MetricType {
    /// The text 0.0.4 name of the type.
    pub fn as_text(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Unknown => "untyped",
        }
    }
}

/// Metadata of a metric family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyMeta {
    /// Family name: the series name for counters/gauges (a counter's includes
    /// `_total`), the base name for histograms and summaries.
    pub name: String,
    pub metric_type: MetricType,
    pub help: String,
    pub unit: String,
}

/// Handle of a registered family (see [`Store::family`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyId(u32);

/// Prometheus' stale marker (value/value.go `StaleNaN`): a sample with this value
/// ends its series; [`Store::select`] no longer returns it.
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// True for [`STALE_NAN`] (compared by bits: every NaN is unequal to itself).
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN.to_bits()
}

/// What [`Store::write`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A new series was created.
    Inserted,
    /// The latest sample of an existing series was replaced.
    Updated,
    /// The sample was older than the held one and was ignored.
    OutOfOrder,
    /// A stale marker for a series the store does not hold: nothing to end.
    Absent,
    /// A new series over one of the limits (see `limits.rs`): not stored.
    Limited(Limit),
}

#[derive(Debug, Clone)]
struct Slot {
    value: f64,
    timestamp_ms: i64,
    /// Arrival time (ms) of the last accepted sample.
    updated_ms: i64,
    /// Recent samples, only for series in the window's scope (see `window`).
    ring: Option<Box<Ring>>,
}

type Key = Box<[SymbolId]>;
type Shard = HashMap<Key, Slot, FxBuildHasher>;

/// Family metadata by dense id (a selection copies `metas` and indexes it). A
/// family no series name refers to any more is freed by the sweep (see
/// `reclaim.rs`); its id is reused.
#[derive(Default)]
struct Families {
    metas: Vec<FamilyMeta>,
    by_name: HashMap<String, u32>,
    /// Ids free for reuse (their `metas` entry is an empty tombstone).
    free: Vec<u32>,
    /// Held by the core's own writers for good (never freed).
    pinned: std::collections::HashSet<u32>,
    /// Unreferenced at the last collection: freed at the next one unless used
    /// meanwhile, so an id handed out just before a collection stays valid
    /// while its request writes.
    candidates: std::collections::HashSet<u32>,
}

/// The series store. `Send + Sync`; share it as `Arc<Store>`.
pub struct Store {
    staleness_ms: i64,
    gc: RwLock<()>,
    symbols: RwLock<Symbols>,
    families: RwLock<Families>,
    /// Metric name symbol → family id. Kept per name rather than per series so a
    /// slot stays 32 bytes (memory per series is a target); the last writer of a
    /// name wins, as it did per series.
    name_families: RwLock<HashMap<SymbolId, u32, FxBuildHasher>>,
    shards: Box<[RwLock<Shard>]>,
    series: AtomicUsize,
    /// Set when series were removed and their symbols not yet collected.
    gc_pending: AtomicBool,
    /// Distinguishes stores, and collections of symbols (which invalidate
    /// ids), for the per-thread symbol memo (`memo.rs`).
    id: u64,
    epoch: AtomicU64,
    series_gauge: prometheus::IntGauge,
    /// Window of recent samples (see [`Store::set_window`]); `window_on`
    /// is the lock-free fast path when it is off.
    window: RwLock<WindowState>,
    window_on: AtomicBool,
    /// Where [`Store::logged`] writes go (see `logged.rs`).
    wal: std::sync::OnceLock<std::sync::Arc<crate::wal::Wal>>,
    /// What ingest may add (see `limits.rs`); series per cluster are counted
    /// only when `max_series_per_cluster` is set.
    limits: std::sync::OnceLock<Limits>,
    clusters: Mutex<limits::ClusterSeries>,
    limited: prometheus::IntCounterVec,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Creates a store and registers `edgewatch_store_series` in `registry`
    /// (a registration conflict is logged and the gauge kept unregistered).
    pub fn new(opts: StoreOptions, registry: &prometheus::Registry) -> Self {
        let series_gauge = prometheus::IntGauge::new(
            "edgewatch_store_series",
            "Number of series held by the aggregator store.",
        )
        .expect("valid metric");
        if let Err(e) = registry.register(Box::new(series_gauge.clone())) {
            tracing::warn!(error = %e, "registering edgewatch_store_series");
        }
        let limited = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "edgewatch_limit_dropped_samples_total",
                "Samples not stored because a new series was over one of the aggregator's limits (limit: the limits: key).",
            ),
            &["cluster", "limit"],
        )
        .expect("valid metric");
        if let Err(e) = registry.register(Box::new(limited.clone())) {
            tracing::warn!(error = %e, "registering edgewatch_limit_dropped_samples_total");
        }
        Self {
            staleness_ms: opts.staleness.as_millis().min(i64::MAX as u128) as i64,
            gc: RwLock::new(()),
            symbols: RwLock::new(Symbols::default()),
            families: RwLock::new(Families::default()),
            name_families: RwLock::new(HashMap::default()),
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            series: AtomicUsize::new(0),
            gc_pending: AtomicBool::new(false),
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            epoch: AtomicU64::new(0),
            series_gauge,
            window: RwLock::new(WindowState::default()),
            window_on: AtomicBool::new(false),
            wal: std::sync::OnceLock::new(),
            limits: std::sync::OnceLock::new(),
            clusters: Mutex::new(limits::ClusterSeries::default()),
            limited,
        }
    }

    /// Number of series held (including stale ones not yet swept).
    pub fn series_count(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// Number of interned strings (label names, values, metric names).
    pub fn symbol_count(&self) -> usize {
        read(&self.symbols).live()
    }

    /// The staleness period in ms.
    pub fn staleness_ms(&self) -> i64 {
        self.staleness_ms
    }

    /// Registers (or updates the metadata of) a family; the last writer's
    /// metadata wins when two sources disagree.
    pub fn family(&self, name: &str, metric_type: MetricType, help: &str, unit: &str) -> FamilyId {
        {
            let f = read(&self.families);
            if let Some(&id) = f.by_name.get(name) {
                let m = &f.metas[id as usize];
                if m.metric_type == metric_type
                    && m.help == help
                    && m.unit == unit
                    && !f.candidates.contains(&id)
                {
                    return FamilyId(id);
                }
            }
        }
        let mut f = write(&self.families);
        let meta = FamilyMeta {
            name: name.to_owned(),
            metric_type,
            help: help.to_owned(),
            unit: unit.to_owned(),
        };
        if let Some(&id) = f.by_name.get(name) {
            f.candidates.remove(&id);
            f.metas[id as usize] = meta;
            return FamilyId(id);
        }
        let id = match f.free.pop() {
            Some(id) => {
                f.metas[id as usize] = meta;
                id
            }
            None => {
                f.metas.push(meta);
                (f.metas.len() - 1) as u32
            }
        };
        f.by_name.insert(name.to_owned(), id);
        FamilyId(id)
    }

    /// Keeps a family the core holds for good (rule and reconciler output) from
    /// being freed while it has no series.
    pub fn pin_family(&self, family: FamilyId) {
        write(&self.families).pinned.insert(family.0);
    }

    /// Metadata of a family by name.
    pub fn family_meta(&self, name: &str) -> Option<FamilyMeta> {
        let f = read(&self.families);
        f.by_name.get(name).map(|&id| f.metas[id as usize].clone())
    }

    /// Writes one sample. `labels` must not contain `__name__`; empty values
    /// are dropped, order does not matter, and of duplicate names the last wins.
    /// A sample with a timestamp older than the held one is ignored.
    pub fn write(
        &self,
        family: FamilyId,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        timestamp_ms: i64,
        now_ms: i64,
    ) -> WriteOutcome {
        let sample = (value, timestamp_ms, now_ms);
        self.write_as(family, name, labels, sample, false)
    }

    /// [`Store::write`]; with `enforce`, a new series is held to the limits.
    fn write_as(
        &self,
        family: FamilyId,
        name: &str,
        labels: &[(&str, &str)],
        (value, timestamp_ms, now_ms): (f64, i64, i64),
        enforce: bool,
    ) -> WriteOutcome {
        // Ingest passes label sets already in the store's order: used as they are.
        let mut owned: LabelBuf<'_> = SmallVec::new();
        let sorted = if in_key_order(labels) {
            labels
        } else {
            owned.extend(labels.iter().copied().filter(|(_, v)| !v.is_empty()));
            owned.sort_by(|a, b| a.0.cmp(b.0)); // stable: duplicates keep input order
            dedup_keep_last(&mut owned);
            &owned[..]
        };

        let _gc = read(&self.gc);
        let mut key: KeyBuf = SmallVec::new();
        let complete = {
            // Taken only when the memo misses a string.
            let mut sym = None;
            memo::resolve(
                self.id,
                self.epoch.load(Ordering::Relaxed),
                std::iter::once(name).chain(sorted.iter().flat_map(|(k, v)| [*k, *v])),
                &mut key,
                |s| sym.get_or_insert_with(|| read(&self.symbols)).get(s),
            )
        };
        if !complete && is_stale_marker(value) {
            return WriteOutcome::Absent;
        }
        if !complete {
            // A new string: a new series. Refused before its strings are interned.
            if let Err(limit) = self.admit(name, sorted, enforce, false) {
                return WriteOutcome::Limited(limit);
            }
            key.clear();
            let mut sym = write(&self.symbols);
            key.push(sym.intern(name));
            for (k, v) in sorted {
                key.push(sym.intern(k));
                key.push(sym.intern(v));
            }
        }

        if read(&self.name_families).get(&key[0]) != Some(&family.0) {
            write(&self.name_families).insert(key[0], family.0);
        }
        let shard = &self.shards[shard_of(&key)];
        let mut map = write(shard);
        if is_stale_marker(value) && !map.contains_key(&key[..]) {
            return WriteOutcome::Absent;
        }
        if let Some(slot) = map.get_mut(&key[..]) {
            if timestamp_ms < slot.timestamp_ms {
                return WriteOutcome::OutOfOrder;
            }
            slot.value = value;
            slot.timestamp_ms = timestamp_ms;
            slot.updated_ms = now_ms;
            if let Some(ring) = slot.ring.as_mut() {
                ring.push(timestamp_ms, value, &read(&self.window));
            }
            return WriteOutcome::Updated;
        }
        self.insert(
            map,
            &key,
            name,
            sorted,
            (value, timestamp_ms, now_ms),
            enforce,
        )
    }

    /// Creates a series (its shard's lock held as `map`), unless a limit refuses it.
    fn insert(
        &self,
        mut map: RwLockWriteGuard<'_, Shard>,
        key: &[SymbolId],
        name: &str,
        sorted: &[(&str, &str)],
        (value, timestamp_ms, now_ms): (f64, i64, i64),
        enforce: bool,
    ) -> WriteOutcome {
        if let Err(limit) = self.admit(name, sorted, enforce, true) {
            // Its strings may have been interned just now: collected by a sweep.
            self.gc_pending.store(true, Ordering::Relaxed);
            return WriteOutcome::Limited(limit);
        }
        let ring = if self.window_on.load(Ordering::Acquire)
            && read(&self.window).wants_pairs(name, sorted)
        {
            Some(Ring::new(timestamp_ms, value))
        } else {
            None
        };
        read(&self.symbols).retain(key);
        map.insert(
            Key::from(key),
            Slot {
                value,
                timestamp_ms,
                updated_ms: now_ms,
                ring,
            },
        );
        drop(map);
        let n = self.series.fetch_add(1, Ordering::Relaxed) + 1;
        self.series_gauge.set(n as i64);
        WriteOutcome::Inserted
    }

    /// Removes one series now (e.g. an `ALERTS` series whose alert ended).
    /// `labels` as for [`Store::write`]. Returns whether it existed.
    pub fn delete(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        let mut sorted: LabelBuf<'_> = SmallVec::new();
        sorted.extend(labels.iter().copied().filter(|(_, v)| !v.is_empty()));
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        dedup_keep_last(&mut sorted);
        let _gc = read(&self.gc);
        let key: Option<Vec<SymbolId>> = {
            let sym = read(&self.symbols);
            std::iter::once(name)
                .chain(sorted.iter().flat_map(|(k, v)| [*k, *v]))
                .map(|s| sym.get(s))
                .collect()
        };
        let Some(key) = key else { return false };
        let removed = write(&self.shards[shard_of(&key)]).remove(&key[..]);
        if removed.is_none() {
            return false;
        }
        let sym = read(&self.symbols);
        if let Some(mut counts) = self.cluster_counts() {
            counts.remove(&sym, sym.get(limits::CLUSTER_LABEL), &key);
        }
        sym.release(&key);
        drop(sym);
        let n = self.series.fetch_sub(1, Ordering::Relaxed) - 1;
        self.series_gauge.set(n as i64);
        self.gc_pending.store(true, Ordering::Relaxed);
        true
    }

    /// Removes series without an accepted sample for longer than the
    /// staleness period and frees symbols no series uses any more (the latter
    /// only when no writer or reader is active; otherwise on a later sweep).
    /// Returns the number of series removed.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.staleness_ms);
        let mut removed = 0;
        for shard in self.shards.iter() {
            // Cheap check under the read lock first: most sweeps find nothing.
            if !read(shard).values().any(|s| s.updated_ms < cutoff) {
                continue;
            }
            let mut map = write(shard);
            let sym = read(&self.symbols);
            let mut counts = self.cluster_counts();
            let cluster_name = sym.get(limits::CLUSTER_LABEL);
            map.retain(|k, s| {
                let keep = s.updated_ms >= cutoff;
                if !keep {
                    if let Some(c) = counts.as_mut() {
                        c.remove(&sym, cluster_name, k);
                    }
                    sym.release(k);
                    removed += 1;
                }
                keep
            });
        }
        if removed > 0 {
            let n = self.series.fetch_sub(removed, Ordering::Relaxed) - removed;
            self.series_gauge.set(n as i64);
        }
        if removed > 0 {
            self.gc_pending.store(true, Ordering::Relaxed);
        }
        // Symbols interned by a write whose series then already existed
        // (a race between two writers) also end up unreferenced; they are
        // collected with the next removal.
        if self.gc_pending.load(Ordering::Relaxed) || self.reclaim_pending() {
            if let Ok(_gc) = self.gc.try_write() {
                self.gc_pending.store(false, Ordering::Relaxed);
                let freed = write(&self.symbols).collect();
                if freed > 0 {
                    // Under the GC lock: no write is between reading the
                    // epoch and using the ids it memoised.
                    self.epoch.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(freed, "store: freed unused symbols");
                }
                self.reclaim();
            }
        }
        removed
    }

    /// The series counts per cluster, when they are kept.
    fn cluster_counts(&self) -> Option<MutexGuard<'_, limits::ClusterSeries>> {
        let kept = self.limits.get()?.max_series_per_cluster.is_some();
        kept.then(|| lock(&self.clusters))
    }

    /// Approximate heap bytes of the store's own tables (not allocator
    /// overhead); for reports. RSS is the real measure.
    pub fn heap_estimate(&self) -> usize {
        let sym = read(&self.symbols).heap_bytes();
        let mut shards = 0;
        for shard in self.shards.iter() {
            let m = read(shard);
            shards += m.capacity() * (std::mem::size_of::<(Key, Slot)>() + 1);
            shards += m
                .values()
                .filter_map(|s| s.ring.as_ref().map(|r| r.heap_bytes()))
                .sum::<usize>();
            shards += m.keys().map(|k| 16 + 4 * k.len()).sum::<usize>();
        }
        sym + shards
    }

    pub(crate) fn staleness_cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.staleness_ms)
    }
}

/// Label pairs on the stack for the common label counts.
type LabelBuf<'a> = SmallVec<[(&'a str, &'a str); 24]>;
/// A series key being built: `1 + 2 * LabelBuf` ids.
type KeyBuf = SmallVec<[SymbolId; 49]>;

/// Sorted by name with unique names and no empty values: a key as it is.
fn in_key_order(labels: &[(&str, &str)]) -> bool {
    labels.windows(2).all(|w| w[0].0 < w[1].0) && labels.iter().all(|(_, v)| !v.is_empty())
}

fn dedup_keep_last(v: &mut LabelBuf<'_>) {
    let mut out = 0;
    for i in 0..v.len() {
        if out > 0 && v[out - 1].0 == v[i].0 {
            v[out - 1] = v[i];
        } else {
            v[out] = v[i];
            out += 1;
        }
    }
    v.truncate(out);
}

/// Shards are grouped by metric name: a series lives in one of `PER_NAME` shards of
/// its name's group, so a selector that fixes the name scans 1/`NAME_GROUPS` of the
/// store (rules evaluate hundreds of such selectors per round), while the writes of
/// one busy metric still spread over `PER_NAME` locks.
const NAME_GROUPS: usize = 8;
const PER_NAME: usize = SHARDS / NAME_GROUPS;

fn name_group(name: SymbolId) -> usize {
    // The top 3 bits of a multiplicative hash: 0..NAME_GROUPS.
    ((u64::from(name)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61) as usize
}

fn shard_of(key: &[SymbolId]) -> usize {
    let h = FxBuildHasher::default().hash_one(HashSlice(key));
    name_group(key[0]) * PER_NAME + (h as usize) % PER_NAME
}

impl Store {
    /// `mask[i]`: shard `i` may hold series matching any of `selectors`. Call with
    /// `gc` held shared (symbol ids stay valid).
    pub(crate) fn shard_mask(&self, selectors: &[Selector]) -> Vec<bool> {
        let sym = read(&self.symbols);
        let mut mask = vec![false; SHARDS];
        for s in selectors {
            match s.metric_name() {
                // A name nobody wrote yet: no shard holds it.
                Some(v) => {
                    if let Some(id) = sym.get(v) {
                        let first = name_group(id) * PER_NAME;
                        mask[first..first + PER_NAME].fill(true);
                    }
                }
                None => return vec![true; SHARDS],
            }
        }
        mask
    }
}

/// Hashes like the map does but under a different seed (a second pass of the
/// mixer) so shard choice and bucket choice are independent.
struct HashSlice<'a>(&'a [SymbolId]);
impl Hash for HashSlice<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(0x9e37_79b9_7f4a_7c15);
        self.0.hash(state);
    }
}

#[cfg(test)]
mod tests;
