//! The open connections of a listener, oldest first: a new connection over the limit
//! closes the oldest one without a request in progress, or waits for one to end.

use super::metrics::Throttle;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The open connections of a listener, oldest first.
pub(super) struct Tracker {
    max: usize,
    next_id: AtomicU64,
    open: Arc<Mutex<BTreeMap<u64, Arc<Slot>>>>,
    /// Signalled when a connection ends.
    freed: Arc<Notify>,
}

/// One open connection as the tracker sees it.
pub(super) struct Slot {
    /// A request is in progress (head read, answer not yet fully written).
    pub(super) busy: AtomicBool,
    /// Told to close, to make room for a new connection.
    pub(super) evict: Arc<Notify>,
}

/// Removes its connection from the tracker when dropped.
pub(super) struct Registration {
    pub(super) id: u64,
    pub(super) slot: Arc<Slot>,
    pub(super) open: Arc<Mutex<BTreeMap<u64, Arc<Slot>>>>,
    pub(super) freed: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.id);
        self.freed.notify_one();
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tracker {
    pub(super) fn new(max: usize) -> Tracker {
        Tracker {
            max: max.max(1),
            next_id: AtomicU64::new(0),
            open: Arc::new(Mutex::new(BTreeMap::new())),
            freed: Arc::new(Notify::new()),
        }
    }

    /// Registers a new connection: at once while there is room, else by closing the
    /// oldest idle connection, else once a connection ends.
    pub(super) async fn admit(&self, warn: &Throttle) -> Registration {
        loop {
            let freed = self.freed.notified();
            {
                let mut open = lock(&self.open);
                if open.len() >= self.max {
                    let idle = open
                        .iter()
                        .find(|(_, s)| !s.busy.load(Ordering::Acquire))
                        .map(|(id, _)| *id);
                    if let Some(slot) = idle.and_then(|id| open.remove(&id)) {
                        slot.evict.notify_one();
                    }
                }
                if open.len() < self.max {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let slot = Arc::new(Slot {
                        busy: AtomicBool::new(false),
                        evict: Arc::new(Notify::new()),
                    });
                    open.insert(id, slot.clone());
                    return Registration {
                        id,
                        slot,
                        open: self.open.clone(),
                        freed: self.freed.clone(),
                    };
                }
            }
            warn.event(
                warn.local,
                "every connection has a request in progress: not accepting until one ends",
            );
            freed.await;
        }
    }

    /// Resolves once every connection has ended.
    pub(super) async fn drained(&self) {
        loop {
            let freed = self.freed.notified();
            if lock(&self.open).is_empty() {
                return;
            }
            freed.await;
        }
    }
}
