//! The worker's bookkeeping: deliveries and how many of their lines are not done yet, messages
//! waiting to be produced or buffered, and the slots of messages librdkafka holds.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
    BufferReplay { rec: u64, index: u32 },
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
///
/// This is touched twice per message (≥ 500k/s), so the recent tokens live in a ring indexed
/// by `token - base`: O(1) insert and take, the oldest outstanding at the front. A report
/// leaves a hole; holes at the front are dropped. So that one stuck message cannot keep the
/// ring growing behind it (one stuck partition), the ring is compacted once it is more than
/// twice as long as what is outstanding: its front slots move to `stragglers` (ordered, and
/// rare) and the holes go.
#[derive(Default)]
pub(super) struct Slots {
    /// Token of `ring[0]`.
    base: u64,
    ring: VecDeque<Option<Slot>>,
    /// Outstanding slots older than `base`, moved out of the ring by a compaction.
    stragglers: BTreeMap<u64, Slot>,
    count: usize,
    live: usize,
    alone: usize,
}

/// The ring is compacted when it is longer than twice what is outstanding plus this.
const RING_SLACK: usize = 1024;

impl Slots {
    /// The token the next `insert` will get.
    pub fn next_token(&self) -> u64 {
        self.base + self.ring.len() as u64
    }

    pub fn insert(&mut self, slot: Slot) -> u64 {
        let token = self.next_token();
        if matches!(slot.owner, Owner::Live { .. }) {
            self.live += 1;
        }
        if slot.alone {
            self.alone += 1;
        }
        self.count += 1;
        self.ring.push_back(Some(slot));
        if self.ring.len() > 2 * self.count + RING_SLACK {
            self.compact();
        }
        token
    }

    pub fn take(&mut self, token: u64) -> Option<Slot> {
        let slot = if token < self.base {
            self.stragglers.remove(&token)?
        } else {
            let i = usize::try_from(token - self.base).ok()?;
            let slot = self.ring.get_mut(i)?.take()?;
            while matches!(self.ring.front(), Some(None)) {
                self.ring.pop_front();
                self.base += 1;
            }
            slot
        };
        self.count -= 1;
        if matches!(slot.owner, Owner::Live { .. }) {
            self.live -= 1;
        }
        if slot.alone {
            self.alone -= 1;
        }
        Some(slot)
    }

    /// Moves the ring's front to `stragglers` until at most half of the ring is holes.
    fn compact(&mut self) {
        while self.ring.len() > self.count - self.stragglers.len() + RING_SLACK / 2 {
            let Some(front) = self.ring.pop_front() else {
                break;
            };
            if let Some(slot) = front {
                self.stragglers.insert(self.base, slot);
            }
            self.base += 1;
        }
        while matches!(self.ring.front(), Some(None)) {
            self.ring.pop_front();
            self.base += 1;
        }
    }

    /// When the oldest outstanding message was produced.
    pub fn oldest_sent(&self) -> Option<Instant> {
        match self.stragglers.first_key_value() {
            Some((_, s)) => Some(s.sent_at),
            None => self
                .ring
                .front()
                .and_then(|s| s.as_ref().map(|s| s.sent_at)),
        }
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

    /// Entries held (slots and holes): at most about three times what is outstanding, plus
    /// [`RING_SLACK`] (the ring twice, the stragglers once).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.ring.len() + self.stragglers.len()
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
        let b = s.insert(slot(Owner::BufferReplay { rec: 0, index: 0 }));
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

    #[test]
    fn one_stuck_slot_does_not_hold_the_rest_and_is_the_oldest() {
        let mut s = Slots::default();
        let stuck = s.insert(slot(Owner::Live { dix: 0, line: 0 }));
        let first = s.oldest_sent();
        for _ in 0..10_000 {
            let t = s.insert(slot(Owner::BufferReplay { rec: 0, index: 0 }));
            assert!(s.take(t).is_some());
        }
        assert!(s.held() <= 2 + RING_SLACK, "held {}", s.held());
        assert_eq!(s.oldest_sent(), first);
        assert!(s.take(stuck).is_some());
        assert_eq!(s.oldest_sent(), None);
    }

    /// The ring against an ordered map (what it replaced), over a long run of inserts and
    /// takes in a scrambled order with some slots held back for a long time.
    #[test]
    fn slots_match_an_ordered_map() {
        let mut s = Slots::default();
        let mut model: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut compacted = false;
        for step in 0..50_000u64 {
            if model.is_empty() || next() % 100 < 55 {
                let sl = slot(Owner::Live { dix: step, line: 0 });
                let at = sl.sent_at;
                let t = s.insert(sl);
                model.insert(t, at);
            } else {
                // Mostly recent tokens; sometimes an old one (a straggler).
                let n = model.len();
                let pick = if next() % 50 == 0 {
                    model.keys().nth((next() as usize) % n)
                } else {
                    model.keys().rev().nth((next() as usize) % n.min(64))
                };
                let Some(&k) = pick else {
                    unreachable!("the model is not empty")
                };
                assert!(s.take(k).is_some(), "token {k} is outstanding");
                assert!(s.take(k).is_none(), "token {k} came back twice");
                model.remove(&k);
            }
            assert_eq!(s.len(), model.len());
            assert_eq!(s.oldest_sent(), model.values().next().copied());
            assert!(
                s.held() <= 3 * s.len() + RING_SLACK + 2,
                "held {}",
                s.held()
            );
            compacted |= !s.stragglers.is_empty();
        }
        assert!(compacted, "the run never compacted the ring");
        for k in model.keys().copied().collect::<Vec<_>>() {
            assert!(s.take(k).is_some());
        }
        assert!(s.is_empty());
        assert_eq!(s.held(), 0);
    }
}
