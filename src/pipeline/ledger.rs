//! Acknowledgements: a container's checkpoint may advance past a batch only when every sink has
//! acknowledged it (written and flushed, delivered, or durably buffered), and only in order —
//! a later batch finished by a fast sink does not move the cursor past an earlier one a slow
//! sink still holds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::capture::Cursor;
use crate::checkpoint::CheckpointStore;

struct Slot {
    seq: u64,
    cursor: Cursor,
    remaining: usize,
    enqueued: Instant,
}

pub struct AckLedger {
    sinks: usize,
    containers: Mutex<HashMap<String, VecDeque<Slot>>>,
    checkpoints: Arc<CheckpointStore>,
}

impl AckLedger {
    pub fn new(sinks: usize, checkpoints: Arc<CheckpointStore>) -> Self {
        AckLedger {
            sinks,
            containers: Mutex::new(HashMap::new()),
            checkpoints,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Slot>>> {
        match self.containers.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A batch entered the pipeline (called in queue order).
    pub fn register(&self, container: &str, seq: u64, cursor: Cursor) {
        let slot = Slot {
            seq,
            cursor,
            remaining: self.sinks,
            enqueued: Instant::now(),
        };
        let mut map = self.lock();
        // The key is only allocated the first time a container has batches in flight.
        match map.get_mut(container) {
            Some(queue) => queue.push_back(slot),
            None => {
                map.insert(container.to_string(), VecDeque::from([slot]));
            }
        }
    }

    /// One sink is done with a batch. Advances the checkpoint over every leading batch that all
    /// sinks are done with.
    pub fn complete(&self, container: &str, seq: u64) {
        let mut ack = None;
        {
            let mut map = self.lock();
            let Some(queue) = map.get_mut(container) else {
                return;
            };
            if let Some(slot) = queue.iter_mut().find(|s| s.seq == seq) {
                slot.remaining = slot.remaining.saturating_sub(1);
            }
            while queue.front().is_some_and(|s| s.remaining == 0) {
                ack = queue.pop_front().map(|s| s.cursor);
            }
            if queue.is_empty() {
                map.remove(container);
            }
        }
        if let Some(cursor) = ack {
            self.checkpoints.ack(container, cursor);
        }
    }

    /// Batches not yet acknowledged by every sink.
    pub fn unacknowledged(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    /// Seconds since the oldest batch not yet acknowledged by every sink entered the queue.
    pub fn oldest_unacked_age(&self) -> f64 {
        self.lock()
            .values()
            .filter_map(|q| q.front())
            .map(|s| s.enqueued.elapsed().as_secs_f64())
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::metrics::Metrics;

    /// A cursor after one stdout line stamped `ts`.
    fn at(ts: i64) -> Cursor {
        let mut c = Cursor::at(0);
        c.deliver(crate::pipeline::StreamKind::Stdout, ts);
        c
    }

    #[test]
    fn advances_only_in_order_and_when_all_sinks_are_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(CheckpointStore::open(dir.path(), Arc::new(Metrics::new())).expect("store"));
        store.init("c", Cursor::at(0));
        let ledger = AckLedger::new(2, Arc::clone(&store));
        ledger.register("c", 1, at(10));
        ledger.register("c", 2, at(20));
        assert_eq!(ledger.unacknowledged(), 2);
        ledger.complete("c", 2);
        ledger.complete("c", 2);
        assert_eq!(store.get("c"), Some(Cursor::at(0)), "batch 1 still pending");
        assert_eq!(ledger.unacknowledged(), 2, "batch 2 waits behind batch 1");
        ledger.complete("c", 1);
        assert_eq!(store.get("c"), Some(Cursor::at(0)), "one sink of two");
        assert!(ledger.oldest_unacked_age() >= 0.0);
        ledger.complete("c", 1);
        assert_eq!(store.get("c"), Some(at(20)));
        assert_eq!(ledger.oldest_unacked_age(), 0.0);
        assert_eq!(ledger.unacknowledged(), 0);
    }
}
