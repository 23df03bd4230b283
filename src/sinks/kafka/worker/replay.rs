//! The replay window: the oldest buffer records, read ahead and produced together (bounded by
//! [`WINDOW_MESSAGES`] / [`WINDOW_BYTES`]), each consumed in store order once all of its
//! messages are done (delivered, or refused for good and dead-lettered).

use std::collections::VecDeque;

use super::super::encode::Message;
use crate::buffer::RecordId;

/// No record is read into the window once it holds this many messages (or bytes of values);
/// one read step may add up to `stores::READ_AHEAD_*` beyond; one record always fits.
pub(super) const WINDOW_MESSAGES: usize = 50_000;
pub(super) const WINDOW_BYTES: usize = 8 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    ToProduce,
    Outstanding,
    Done,
}

/// A buffer record being replayed (in the [`ReplayWindow`]).
pub(super) struct ReplayRecord {
    pub id: RecordId,
    /// Its payload's length (to read the record after it).
    pub len: usize,
    pub msgs: Vec<Message>,
    bytes: usize,
    steps: Vec<Step>,
    /// The first message that may be `ToProduce` (all before it are not).
    next: usize,
    pub outstanding: usize,
    /// Messages not done (delivered or refused for good).
    left: usize,
    /// Refused for good: (index, reason), dead-lettered before the record is consumed.
    pub rejected: Vec<(usize, String)>,
}

impl ReplayRecord {
    pub fn new(id: RecordId, len: usize, msgs: Vec<Message>) -> Self {
        let n = msgs.len();
        ReplayRecord {
            id,
            len,
            bytes: msgs.iter().map(|m| m.value.len()).sum(),
            msgs,
            steps: vec![Step::ToProduce; n],
            next: 0,
            outstanding: 0,
            left: n,
            rejected: Vec::new(),
        }
    }

    pub fn next_to_produce(&self) -> Option<usize> {
        (self.next < self.steps.len()).then_some(self.next)
    }

    pub fn produced(&mut self, index: usize) {
        if let Some(s) = self.steps.get_mut(index) {
            *s = Step::Outstanding;
            self.outstanding += 1;
        }
        while self.next < self.steps.len() && self.steps[self.next] != Step::ToProduce {
            self.next += 1;
        }
    }

    /// A report: `None` delivered; `Some(None)` to be produced again (returns true);
    /// `Some(Some(reason))` refused for good.
    fn reported(&mut self, index: u32, outcome: Option<Option<String>>) -> bool {
        let index = index as usize;
        let Some(step) = self.steps.get_mut(index) else {
            return false;
        };
        if *step != Step::Outstanding {
            return false;
        }
        self.outstanding -= 1;
        match outcome {
            None => {
                *step = Step::Done;
                self.left -= 1;
            }
            Some(Some(reason)) => {
                *step = Step::Done;
                self.left -= 1;
                self.rejected.push((index, reason));
            }
            Some(None) => {
                *step = Step::ToProduce;
                self.next = self.next.min(index);
                return true;
            }
        }
        false
    }

    /// Every message reported (delivered or refused for good): the record is wholly done
    /// once its dead letters are written, then it is consumed. (Not the ledger's "complete".)
    pub fn all_reported(&self) -> bool {
        self.left == 0
    }
}

/// The buffer replay's window: the records being replayed, oldest (the store's head) first. Records are numbered in the
/// order they were read; a message's owner names its record by that number.
#[derive(Default)]
pub(super) struct ReplayWindow {
    records: VecDeque<ReplayRecord>,
    /// Number of the first record in `records`.
    base: u64,
    messages: usize,
    bytes: usize,
    /// A message came back to be produced again: nothing more is produced until none of the
    /// window is outstanding (then, after a back-off, from the oldest message not done).
    pub failed: bool,
    /// Reading ahead found a record it cannot read: no more until the window is empty (the
    /// head read then reports it).
    pub blocked: bool,
}

impl ReplayWindow {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Adds the next record; returns its number.
    pub fn push(&mut self, rp: ReplayRecord) -> u64 {
        self.messages += rp.msgs.len();
        self.bytes += rp.bytes;
        self.records.push_back(rp);
        self.base + self.records.len() as u64 - 1
    }

    pub fn front(&self) -> Option<&ReplayRecord> {
        self.records.front()
    }

    pub fn front_mut(&mut self) -> Option<&mut ReplayRecord> {
        self.records.front_mut()
    }

    pub fn pop_front(&mut self) {
        if let Some(rp) = self.records.pop_front() {
            self.base += 1;
            self.messages -= rp.msgs.len();
            self.bytes -= rp.bytes;
        }
        if self.records.is_empty() {
            self.blocked = false;
        }
    }

    /// The run of done records at the front (all reported, nothing left to dead-letter) within
    /// the front's segment: the last one's (id, payload length) and how many.
    pub fn done_run(&self) -> Option<(RecordId, usize, usize)> {
        let segment = self.records.front()?.id.segment;
        let mut run = None;
        for (i, r) in self.records.iter().enumerate() {
            if !r.all_reported() || !r.rejected.is_empty() || r.id.segment != segment {
                break;
            }
            run = Some((r.id, r.len, i + 1));
        }
        run
    }

    /// The last record read: (id, payload length).
    pub fn last(&self) -> Option<(RecordId, usize)> {
        self.records.back().map(|r| (r.id, r.len))
    }

    pub fn get(&self, rec: u64) -> Option<&ReplayRecord> {
        self.records
            .get(usize::try_from(rec.checked_sub(self.base)?).ok()?)
    }

    /// Each record with its number, oldest first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut ReplayRecord)> {
        let base = self.base;
        self.records
            .iter_mut()
            .enumerate()
            .map(move |(i, r)| (base + i as u64, r))
    }

    /// A report for message `index` of record `rec` (see [`ReplayRecord::reported`]).
    pub fn reported(&mut self, rec: u64, index: u32, outcome: Option<Option<String>>) {
        let Some(i) = rec
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        if let Some(rp) = self.records.get_mut(i)
            && rp.reported(index, outcome)
        {
            self.failed = true;
        }
    }

    pub fn outstanding(&self) -> usize {
        self.records.iter().map(|r| r.outstanding).sum()
    }

    /// Something is left to produce (and may be: no failure waiting for its back-off).
    pub fn to_produce(&self) -> bool {
        !self.failed && self.records.iter().any(|r| r.next_to_produce().is_some())
    }

    /// Another record may be read into the window.
    pub fn has_room(&self) -> bool {
        !self.failed
            && !self.blocked
            && (self.records.is_empty()
                || (self.messages < WINDOW_MESSAGES && self.bytes < WINDOW_BYTES))
    }

    /// Draining with nothing outstanding: the records not all reported leave the window (they
    /// stay in the store, replayed after the next start), and so do all after them.
    pub fn drop_unfinished(&mut self) {
        if let Some(first) = self.records.iter().position(|r| !r.all_reported()) {
            while self.records.len() > first {
                if let Some(rp) = self.records.pop_back() {
                    self.messages -= rp.msgs.len();
                    self.bytes -= rp.bytes;
                }
            }
            self.failed = false;
        }
        if self.records.is_empty() {
            self.blocked = false;
        }
    }
}
