//! Acknowledgements: a container's checkpoint may advance past a batch only when every sink has
//! acknowledged it (written and flushed, delivered, or durably buffered), and only in order —
//! a later batch finished by a fast sink does not move the cursor past an earlier one a slow
//! sink still holds.
//!
//! A sink that cannot write one container's lines for good (see `WriteError::Container`)
//! *holds* it: the container's acknowledged position is frozen, for this run, just before the
//! first batch that sink could not write. Later batches of that container are not tracked
//! (the sinks release them, and with them their budget, so nobody else waits), and the
//! checkpoint never moves past them: after a restart they are read again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::checkpoint::CheckpointStore;
use crate::pipeline::AckPosition;

struct Slot {
    seq: u64,
    position: AckPosition,
    remaining: usize,
    enqueued: Instant,
}

#[derive(Default)]
struct State {
    containers: HashMap<String, VecDeque<Slot>>,
    /// Held containers → the first sequence number whose acknowledgement is refused.
    held: HashMap<String, u64>,
}

pub struct AckLedger {
    sinks: usize,
    state: Mutex<State>,
    checkpoints: Arc<CheckpointStore>,
}

impl AckLedger {
    pub fn new(sinks: usize, checkpoints: Arc<CheckpointStore>) -> Self {
        AckLedger {
            sinks,
            state: Mutex::new(State::default()),
            checkpoints,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A batch entered the pipeline (called in queue order).
    pub fn register(&self, container: &str, seq: u64, position: impl Into<AckPosition>) {
        let slot = Slot {
            seq,
            position: position.into(),
            remaining: self.sinks,
            enqueued: Instant::now(),
        };
        let mut state = self.lock();
        if state.held.contains_key(container) {
            return;
        }
        // The key is only allocated the first time a container has batches in flight.
        match state.containers.get_mut(container) {
            Some(queue) => queue.push_back(slot),
            None => {
                state
                    .containers
                    .insert(container.to_string(), VecDeque::from([slot]));
            }
        }
    }

    /// A batch that holds no lines for the sinks (processing dropped every line of it) but
    /// moves the cursor: done for every sink at once, acknowledged in order behind the
    /// batches of the container still in flight.
    pub fn register_settled(&self, container: &str, seq: u64, position: impl Into<AckPosition>) {
        self.register(container, seq, position);
        for _ in 0..self.sinks.max(1) {
            self.acknowledge(container, seq);
        }
    }

    /// A sink cannot write `container`'s batch `seq` (nor, for this run, trust itself with the
    /// later ones): freeze the container's acknowledged position just before `seq`. Batches
    /// before it still advance the checkpoint as their sinks finish them.
    pub fn hold(&self, container: &str, seq: u64) {
        let mut ack = None;
        {
            let mut state = self.lock();
            let first = state.held.entry(container.to_string()).or_insert(seq);
            *first = (*first).min(seq);
            let first = *first;
            if let Some(queue) = state.containers.get_mut(container) {
                queue.retain(|s| s.seq < first);
                while queue.front().is_some_and(|s| s.remaining == 0) {
                    ack = queue.pop_front().map(|s| s.position);
                }
                if queue.is_empty() {
                    state.containers.remove(container);
                }
            }
        }
        if let Some(position) = ack {
            self.store_acked(container, position);
        }
    }

    /// Hands an acknowledged position to the store that persists it.
    fn store_acked(&self, source: &str, position: AckPosition) {
        match position {
            AckPosition::Container(cursor) => self.checkpoints.ack(source, cursor),
            AckPosition::File(position) => self.checkpoints.ack_file(source, position),
        }
    }

    /// Whether a sink holds `container` (its position is frozen for this run).
    pub fn is_held(&self, container: &str) -> bool {
        self.lock().held.contains_key(container)
    }

    /// How many containers are held (their lines after the hold are read again at the next
    /// start, so a stop with any is incomplete).
    pub fn held_count(&self) -> usize {
        self.lock().held.len()
    }

    /// One sink acknowledges a batch (it is done with it). Advances the checkpoint over every leading batch that all
    /// sinks are done with.
    pub fn acknowledge(&self, container: &str, seq: u64) {
        let mut ack = None;
        {
            let mut state = self.lock();
            if state.held.get(container).is_some_and(|&first| seq >= first) {
                return;
            }
            let map = &mut state.containers;
            let Some(queue) = map.get_mut(container) else {
                return;
            };
            if let Some(slot) = queue.iter_mut().find(|s| s.seq == seq) {
                slot.remaining = slot.remaining.saturating_sub(1);
            }
            while queue.front().is_some_and(|s| s.remaining == 0) {
                ack = queue.pop_front().map(|s| s.position);
            }
            if queue.is_empty() {
                map.remove(container);
            }
        }
        if let Some(position) = ack {
            self.store_acked(container, position);
        }
    }

    /// Batches not yet acknowledged by every sink.
    pub fn unacknowledged(&self) -> usize {
        self.lock().containers.values().map(VecDeque::len).sum()
    }

    /// Seconds since the oldest batch not yet acknowledged by every sink entered the queue.
    pub fn oldest_unacked_age(&self) -> f64 {
        self.lock()
            .containers
            .values()
            .filter_map(|q| q.front())
            .map(|s| s.enqueued.elapsed().as_secs_f64())
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Cursor;
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
        ledger.acknowledge("c", 2);
        ledger.acknowledge("c", 2);
        assert_eq!(store.get("c"), Some(Cursor::at(0)), "batch 1 still pending");
        assert_eq!(ledger.unacknowledged(), 2, "batch 2 waits behind batch 1");
        ledger.acknowledge("c", 1);
        assert_eq!(store.get("c"), Some(Cursor::at(0)), "one sink of two");
        assert!(ledger.oldest_unacked_age() >= 0.0);
        ledger.acknowledge("c", 1);
        assert_eq!(store.get("c"), Some(at(20)));
        assert_eq!(ledger.oldest_unacked_age(), 0.0);
        assert_eq!(ledger.unacknowledged(), 0);
    }

    #[test]
    fn a_held_container_keeps_its_position_and_the_others_move_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(CheckpointStore::open(dir.path(), Arc::new(Metrics::new())).expect("store"));
        store.init("held", Cursor::at(0));
        store.init("fine", Cursor::at(0));
        let ledger = AckLedger::new(2, Arc::clone(&store));
        let at = |ts| Cursor::legacy(ts, 1);
        ledger.register("held", 1, at(10));
        ledger.register("held", 2, at(20));
        ledger.register("fine", 3, at(30));
        ledger.register("held", 4, at(40));
        // The other sink finishes everything; the file sink writes batch 1, then cannot write
        // batch 2 of "held" and holds it.
        for seq in [1, 2, 4] {
            ledger.acknowledge("held", seq);
        }
        ledger.acknowledge("fine", 3);
        ledger.acknowledge("held", 1);
        ledger.hold("held", 2);
        ledger.acknowledge("held", 4); // a later batch (e.g. the path works again)
        ledger.register("held", 5, at(50));
        ledger.acknowledge("held", 5);
        ledger.acknowledge("held", 5);
        ledger.acknowledge("fine", 3);
        assert_eq!(store.get("held"), Some(at(10)), "frozen before batch 2");
        assert_eq!(store.get("fine"), Some(at(30)), "the others move on");
        assert!(ledger.is_held("held") && !ledger.is_held("fine"));
        assert_eq!(
            ledger.oldest_unacked_age(),
            0.0,
            "held batches are not waited for"
        );
    }
}
