//! The worker's bookkeeping: deliveries and how many of their lines are not done yet, messages
//! waiting to be produced or buffered, and the slots of messages librdkafka holds.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::super::encode::Message;
use crate::pipeline::Delivery;

/// One line's message and where it comes from: `dix` is the worker's number of its delivery
/// (in arrival order, i.e. capture order), `line` its index there.
pub(super) struct Item {
    pub dix: u64,
    pub line: u32,
    pub msg: Message,
    /// The broker may already have it (an earlier attempt was possibly persisted).
    pub maybe_sent: bool,
}

pub(super) struct Tracked {
    pub delivery: Arc<Delivery>,
    pub left: usize,
}

/// Deliveries with lines not done yet.
#[derive(Default)]
pub(super) struct Deliveries {
    next: u64,
    map: HashMap<u64, Tracked>,
}

impl Deliveries {
    /// Tracks a delivery of `lines` lines; returns its number.
    pub fn add(&mut self, delivery: Arc<Delivery>, lines: usize) -> u64 {
        let dix = self.next;
        self.next += 1;
        self.map.insert(
            dix,
            Tracked {
                delivery,
                left: lines,
            },
        );
        dix
    }

    /// `n` lines of delivery `dix` are done; returns the delivery once all of its are.
    pub fn done(&mut self, dix: u64, n: usize) -> Option<Arc<Delivery>> {
        let t = self.map.get_mut(&dix)?;
        t.left = t.left.saturating_sub(n);
        if t.left > 0 {
            return None;
        }
        self.map.remove(&dix).map(|t| t.delivery)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// Who a produced message belongs to.
#[derive(Clone, Copy)]
pub(super) enum Owner {
    /// A line of a delivery (produced live).
    Live { dix: u64, line: u32 },
    /// Message `index` of record `rec` of the replay window.
    Replay { rec: u64, index: u32 },
}

pub(super) struct Slot {
    pub owner: Owner,
    /// A live message (kept to be spilled or dead-lettered); a replayed one is in the record.
    pub msg: Option<Message>,
    pub sent_at: Instant,
    pub maybe_sent: bool,
    /// Produced alone (after its request was refused): a refusal now is for good.
    pub alone: bool,
}

/// A message refused with its whole produce request, to be produced again alone.
pub(super) struct Isolated {
    pub owner: Owner,
    /// A live message's bytes (a replayed one is in the record).
    pub msg: Option<Message>,
    pub maybe_sent: bool,
    /// Its token and partition when refused (order against what its partition delivered).
    pub token: u64,
    pub partition: i32,
    /// The broker's refusal.
    pub reason: String,
}

/// Messages librdkafka holds, by token (tokens grow by one per produce; reports come back in
/// any order across partitions).
#[derive(Default)]
pub(super) struct Slots {
    base: u64,
    slots: VecDeque<Option<Slot>>,
    count: usize,
    live: usize,
    alone: usize,
}

impl Slots {
    /// The token the next `insert` will get.
    pub fn next_token(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    pub fn insert(&mut self, slot: Slot) -> u64 {
        let token = self.next_token();
        if matches!(slot.owner, Owner::Live { .. }) {
            self.live += 1;
        }
        if slot.alone {
            self.alone += 1;
        }
        self.slots.push_back(Some(slot));
        self.count += 1;
        token
    }

    pub fn take(&mut self, token: u64) -> Option<Slot> {
        let i = usize::try_from(token.checked_sub(self.base)?).ok()?;
        let slot = self.slots.get_mut(i)?.take()?;
        self.count -= 1;
        if matches!(slot.owner, Owner::Live { .. }) {
            self.live -= 1;
        }
        if slot.alone {
            self.alone -= 1;
        }
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(slot)
    }

    /// Messages produced and not reported yet.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Of which live ones (not from a replay).
    pub fn live(&self) -> usize {
        self.live
    }

    /// Of which produced alone.
    pub fn alone(&self) -> usize {
        self.alone
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(owner: Owner) -> Slot {
        Slot {
            owner,
            msg: None,
            sent_at: Instant::now(),
            maybe_sent: false,
            alone: false,
        }
    }

    #[test]
    fn slots_come_back_in_any_order_once() {
        let mut s = Slots::default();
        let a = s.insert(slot(Owner::Live { dix: 0, line: 0 }));
        let b = s.insert(slot(Owner::Replay { rec: 0, index: 0 }));
        let c = s.insert(slot(Owner::Live { dix: 0, line: 1 }));
        assert_eq!((s.len(), s.live()), (3, 2));
        assert!(s.take(b).is_some());
        assert!(s.take(b).is_none(), "a token comes back once");
        assert!(s.take(c).is_some());
        assert_eq!((s.len(), s.live()), (1, 1));
        assert!(s.take(a).is_some());
        assert!(s.is_empty());
        assert_eq!(s.next_token(), 3);
        assert!(s.take(99).is_none());
    }
}
