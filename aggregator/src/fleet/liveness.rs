//! Collector liveness that outlives the store's staleness.
//!
//! A silent collector's own series are swept after `store.staleness` (5m by
//! default), yet `EdgeCollectorDown` must keep firing and `fleet.down_after`
//! may be longer than the staleness. So each collector's newest
//! `edgewatch_collector_info` sample time is kept here, re-written every round
//! as `edgewatch_collector_last_seen_timestamp_seconds{cluster,node,…}`,
//! persisted in the sled tree `fleet` (a restart keeps it), and forgotten
//! after 24h of silence (its alert then resolves).
//!
//! With `fleet.clusters` set, only the owned clusters' collectors are tracked:
//! a cluster moved to another aggregator is forgotten here at once instead of
//! alerting as down for a day.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::Owned;
use crate::store::{LabelMatcher, MetricType, Selector, Store};

/// Written per collector (value: unix seconds of its newest
/// `edgewatch_collector_info` sample).
pub const LAST_SEEN: &str = "edgewatch_collector_last_seen_timestamp_seconds";
/// What a collector reports about itself; its samples say it is alive.
pub const COLLECTOR_INFO: &str = "edgewatch_collector_info";
/// A collector silent this long is forgotten (its alert resolves).
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The sled tree and key of the state.
const TREE: &str = "fleet";
const KEY: &[u8] = b"last_seen";
/// Where versions before the `fleet` tree kept it.
const LEGACY_TREE: &str = "rules";
const LEGACY_KEY: &[u8] = b"\x00fleet/last_seen";

/// The persisted state (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct LastSeen {
    /// Collector key → labels (without `__name__`, `version`) and last sample time (ms).
    collectors: BTreeMap<String, (Vec<(String, String)>, i64)>,
}

/// Tracks collectors and writes their last-seen series into the store.
pub struct Liveness {
    store: Arc<Store>,
    tree: sled::Tree,
    /// How far back an `edgewatch_collector_info` sample still counts (ms):
    /// the PromQL lookback, so the series agrees with what a query sees.
    lookback_ms: i64,
    owned: Owned,
    state: Mutex<LastSeen>,
}

fn pairs(labels: &[(String, String)]) -> Vec<(&str, &str)> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

impl Liveness {
    /// Opens the state in the `fleet` tree of `db`, moving it there from the
    /// `rules` tree where older versions kept it. Tracks the collectors of the
    /// `owned` clusters.
    pub fn open(
        store: Arc<Store>,
        db: &sled::Db,
        lookback_ms: i64,
        owned: Owned,
    ) -> Result<Self, sled::Error> {
        let tree = db.open_tree(TREE)?;
        migrate(db, &tree)?;
        let state = match tree.get(KEY)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring unreadable collector last-seen state");
                LastSeen::default()
            }),
            None => LastSeen::default(),
        };
        Ok(Self {
            store,
            tree,
            lookback_ms,
            owned,
            state: Mutex::new(state),
        })
    }

    /// The series [`Liveness::track`] reads (for the store's sample window).
    pub fn reads() -> Selector {
        Selector::new(vec![LabelMatcher::equal("__name__", COLLECTOR_INFO)])
            .expect("a valid built-in selector")
    }

    /// Updates every collector's last-seen time from `edgewatch_collector_info`
    /// and re-writes the last-seen series at `now_ms`. Called before the rules
    /// that read the series evaluate, in the same round.
    pub fn track(&self, now_ms: i64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = st.clone();
        self.observe(&mut st, now_ms);
        self.write_series(&mut st, now_ms);
        if *st != before {
            self.persist(&st);
        }
    }

    /// Folds the current `edgewatch_collector_info` samples into `st`.
    fn observe(&self, st: &mut LastSeen, now_ms: i64) {
        let found = self
            .store
            .samples(&[Self::reads()], now_ms - self.lookback_ms, now_ms, now_ms);
        for s in found {
            let Some(&(ts, _)) = s.samples.last() else {
                continue;
            };
            // An upgrade changes `version`, not which collector it is.
            let labels: Vec<(String, String)> = s
                .labels
                .into_iter()
                .filter(|(k, _)| k != "version")
                .collect();
            if !self.owns(&labels) {
                continue;
            }
            let key = collector_key(&labels);
            match st.collectors.get_mut(&key) {
                Some((old_labels, old_ts)) => {
                    if *old_labels != labels {
                        self.store.delete(LAST_SEEN, &pairs(old_labels));
                        *old_labels = labels;
                    }
                    *old_ts = (*old_ts).max(ts);
                }
                None => {
                    st.collectors.insert(key, (labels, ts));
                }
            }
        }
    }

    /// Whether the collector with these labels is in an owned cluster.
    fn owns(&self, labels: &[(String, String)]) -> bool {
        match labels.iter().find(|(k, _)| k == "cluster") {
            Some((_, cluster)) => self.owned.owns(cluster),
            None => self.owned.owns_every_cluster(),
        }
    }

    /// Writes one last-seen sample per collector; deletes and forgets the
    /// collectors silent for [`FORGET_AFTER_MS`] and those of clusters no
    /// longer owned.
    fn write_series(&self, st: &mut LastSeen, now_ms: i64) {
        let fam = self.store.family(
            LAST_SEEN,
            MetricType::Gauge,
            "Time (unix seconds) of the newest edgewatch_collector_info sample of each collector.",
            "",
        );
        let out = self.store.logged(now_ms);
        st.collectors.retain(|_, (labels, ts)| {
            let pairs = pairs(labels);
            if now_ms - *ts > FORGET_AFTER_MS || !self.owns(labels) {
                out.delete(fam, LAST_SEEN, &pairs);
                return false;
            }
            out.write(fam, LAST_SEEN, &pairs, *ts as f64 / 1000.0, now_ms);
            true
        });
    }

    fn persist(&self, st: &LastSeen) {
        // A map of strings and integers always serialises.
        let Ok(bytes) = serde_json::to_vec(st) else {
            return;
        };
        if let Err(e) = self.tree.insert(KEY, bytes) {
            tracing::warn!(error = %e, "persisting collector last-seen state");
        }
    }

    /// Flushes the state to disk.
    pub async fn flush(&self) {
        if let Err(e) = self.tree.flush_async().await {
            tracing::warn!(error = %e, "flushing collector last-seen state");
        }
    }
}

/// A collector is its (cluster, node); without them, all its labels.
fn collector_key(labels: &[(String, String)]) -> String {
    let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    match (get("cluster"), get("node")) {
        (Some(c), Some(n)) => format!("{c}\x00{n}"),
        _ => labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\x00"),
    }
}

/// Moves the state from the `rules` tree (older versions) to `tree`; a state
/// already in `tree` wins. Idempotent, so an interrupted move completes on the
/// next open.
fn migrate(db: &sled::Db, tree: &sled::Tree) -> Result<(), sled::Error> {
    if !db.tree_names().iter().any(|n| n == LEGACY_TREE.as_bytes()) {
        return Ok(());
    }
    let legacy = db.open_tree(LEGACY_TREE)?;
    let Some(old) = legacy.get(LEGACY_KEY)? else {
        return Ok(());
    };
    if tree.get(KEY)?.is_none() {
        tree.insert(KEY, old)?;
        tree.flush()?;
    }
    legacy.remove(LEGACY_KEY)?;
    tracing::info!("moved collector last-seen state from the rules tree to the fleet tree");
    Ok(())
}
