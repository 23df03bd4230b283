//! What a push is, and how deliveries are cut into pushes under the batch caps (one open push
//! per tenant). See the module documentation of [`super`] (Batching).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::time::Instant as Deadline;

use super::super::client::Rejection;
use super::super::encode::{EncodedBatch, Encoder};
use crate::pipeline::Delivery;

/// A delivery, with how many of its parts are not done yet.
pub(super) struct Tracked {
    pub(super) delivery: Arc<Delivery>,
    pub(super) parts_left: AtomicUsize,
}

/// Consecutive entries of one delivery inside one push (counting only the push's tenant's
/// lines).
pub(super) struct Part {
    pub(super) tracked: Arc<Tracked>,
    pub(super) line: usize,
    pub(super) piece: usize,
    pub(super) entries: usize,
}

/// One push request to be.
#[derive(Default)]
pub(super) struct Push {
    /// The tenant of all its entries; None: the sink's configured `tenant`.
    pub(super) tenant: Option<Arc<str>>,
    pub(super) parts: Vec<Part>,
    pub(super) entries: usize,
    pub(super) bytes: usize,
    /// Encoded on first use, kept for retries.
    pub(super) encoded: Option<EncodedBatch>,
    /// Loki rejected it: only the dead-letter append is left to do.
    pub(super) rejected: Option<Rejection>,
    /// When its first failed attempt started (for `spill_after`).
    pub(super) failing_since: Option<Instant>,
    /// The buffer said it can never hold it: it waits in memory for Loki.
    pub(super) too_large: bool,
}

/// A push being filled, and when its first entry came.
#[derive(Default)]
pub(super) struct Open {
    pub(super) push: Push,
    pub(super) opened_at: Option<Deadline>,
}

/// Cuts deliveries into pushes under the caps, one open push per tenant.
pub(super) struct Batcher {
    pub(super) max_entries: usize,
    pub(super) max_bytes: usize,
    /// Usually one (the sink's own tenant); pushes of several tenants fill side by side.
    pub(super) open: Vec<Open>,
    pub(super) ready: VecDeque<Push>,
}

impl Batcher {
    pub(super) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Batcher {
            max_entries,
            max_bytes,
            open: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// The open push of `tenant` (created empty if there is none).
    pub(super) fn open_for(&mut self, tenant: Option<&Arc<str>>) -> usize {
        if let Some(i) = self
            .open
            .iter()
            .position(|o| o.push.tenant.as_ref() == tenant)
        {
            return i;
        }
        self.open.push(Open {
            push: Push {
                tenant: tenant.cloned(),
                ..Push::default()
            },
            opened_at: None,
        });
        self.open.len() - 1
    }

    pub(super) fn add(&mut self, delivery: Arc<Delivery>, encoder: &Encoder) {
        if delivery.batch.lines.is_empty() {
            // An end-of-stream marker, or nothing: no entries, nothing to acknowledge.
            return;
        }
        let tracked = Arc::new(Tracked {
            delivery,
            parts_left: AtomicUsize::new(0),
        });
        // The part being filled per open push (same index as `self.open`).
        let mut parts: Vec<Option<Part>> = Vec::new();
        for (line_index, line) in tracked.delivery.batch.lines.iter().enumerate() {
            let tenant = line
                .extra
                .as_deref()
                .and_then(|e| e.tenant.as_ref())
                .filter(|t| !t.is_empty());
            let t = self.open_for(tenant);
            parts.resize_with(self.open.len(), || None);
            let mut piece = 0;
            encoder.entry_sizes(line, |size| {
                let part = parts[t].get_or_insert_with(|| Part {
                    tracked: Arc::clone(&tracked),
                    line: line_index,
                    piece,
                    entries: 0,
                });
                let open = &mut self.open[t];
                let over = open.push.entries + 1 > self.max_entries
                    || open.push.bytes + size > self.max_bytes;
                if over && open.push.entries > 0 {
                    let next = Part {
                        tracked: Arc::clone(&tracked),
                        line: line_index,
                        piece,
                        entries: 0,
                    };
                    let full = std::mem::replace(part, next);
                    if full.entries > 0 {
                        full.tracked.parts_left.fetch_add(1, Ordering::Relaxed);
                        open.push.parts.push(full);
                    }
                    Self::seal_into(&mut self.ready, open);
                }
                part.entries += 1;
                open.push.entries += 1;
                open.push.bytes += size;
                open.opened_at.get_or_insert_with(Deadline::now);
                piece += 1;
            });
        }
        for (open, part) in self.open.iter_mut().zip(parts) {
            if let Some(part) = part.filter(|p| p.entries > 0) {
                part.tracked.parts_left.fetch_add(1, Ordering::Relaxed);
                open.push.parts.push(part);
            }
        }
        for i in 0..self.open.len() {
            let open = &mut self.open[i];
            if open.push.entries >= self.max_entries || open.push.bytes >= self.max_bytes {
                Self::seal_into(&mut self.ready, open);
            }
        }
    }

    /// Closes an open push (if it has anything) into `ready`; it stays open, empty.
    pub(super) fn seal_into(ready: &mut VecDeque<Push>, open: &mut Open) {
        if open.push.entries > 0 {
            let tenant = open.push.tenant.clone();
            let full = std::mem::replace(
                &mut open.push,
                Push {
                    tenant,
                    ..Push::default()
                },
            );
            ready.push_back(full);
        }
        open.opened_at = None;
    }

    /// When the oldest open push was opened.
    pub(super) fn opened_at(&self) -> Option<Deadline> {
        self.open.iter().filter_map(|o| o.opened_at).min()
    }

    /// Closes every open push (oldest first) into `ready`.
    pub(super) fn seal(&mut self) {
        self.open.sort_by_key(|o| o.opened_at);
        for mut open in std::mem::take(&mut self.open) {
            Self::seal_into(&mut self.ready, &mut open);
        }
    }

    /// Closes the open pushes whose `max_wait` is over (oldest first).
    pub(super) fn seal_due(&mut self, max_wait: Duration) {
        let now = Deadline::now();
        self.open.sort_by_key(|o| o.opened_at);
        for open in &mut self.open {
            if open.opened_at.is_some_and(|t| t + max_wait <= now) {
                Self::seal_into(&mut self.ready, open);
            }
        }
        // Tenants that went quiet do not keep an entry.
        self.open.retain(|o| o.push.entries > 0);
    }
}
