//! The byte budget of the queue between capture and sinks. A batch holds its share of the
//! budget from the moment capture hands it over until every sink has acknowledged it (or
//! durably buffered it); when the budget is spent, capture waits, which pauses reading — the
//! daemon keeps the lines in its log files meanwhile. Memory stays bounded; nothing is dropped.
//!
//! The charge is what a batch really holds: capture copies its messages out of the read buffers
//! into one buffer of their exact size (`capture::compact`), so a batch pins no read buffer, and
//! its line records are charged by the vector's capacity, not its length.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::observability::metrics::Metrics;

/// A line record slot (`LogLine`, 48 bytes) with the allocator's rounding.
pub const LINE_OVERHEAD: usize = 64;
/// Per batch: the delivery, its queue slot, the batch's allocations' headers.
pub const BATCH_OVERHEAD: usize = 256;

#[derive(Clone)]
pub struct QueueBudget {
    semaphore: Arc<Semaphore>,
    total: usize,
    metrics: Arc<Metrics>,
}

/// A share of the budget; released when dropped.
pub struct BudgetPermit {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    lines: usize,
    metrics: Arc<Metrics>,
}

impl QueueBudget {
    pub fn new(total_bytes: usize, metrics: Arc<Metrics>) -> Self {
        let total = total_bytes.clamp(1, Semaphore::MAX_PERMITS);
        metrics.queue_budget_bytes.set(total as i64);
        QueueBudget {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
            metrics,
        }
    }

    /// What a batch with room for `line_slots` lines (its vector's capacity) and
    /// `message_bytes` bytes of messages in one buffer costs (never more than the whole budget,
    /// so a single huge batch can still pass alone).
    pub fn charge(&self, line_slots: usize, message_bytes: usize) -> usize {
        (BATCH_OVERHEAD + message_bytes + line_slots * LINE_OVERHEAD).clamp(1, self.total)
    }

    /// Waits until `bytes` of budget are free. Cancel-safe.
    pub async fn acquire(&self, bytes: usize, lines: usize) -> Option<BudgetPermit> {
        let n = u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.semaphore)
            .acquire_many_owned(n)
            .await
            .ok()?;
        self.metrics.queue_bytes.inc_by(n as i64);
        self.metrics.queue_lines.inc_by(lines as i64);
        Some(BudgetPermit {
            _permit: permit,
            bytes: n as usize,
            lines,
            metrics: Arc::clone(&self.metrics),
        })
    }

    pub fn in_use(&self) -> usize {
        self.total - self.semaphore.available_permits()
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

impl BudgetPermit {
    /// The bytes of budget this permit holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        self.metrics.queue_bytes.dec_by(self.bytes as i64);
        self.metrics.queue_lines.dec_by(self.lines as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budget_blocks_until_released() {
        let budget = QueueBudget::new(1000, Arc::new(Metrics::new()));
        let a = budget.acquire(budget.charge(5, 400), 5).await.expect("a");
        assert_eq!(budget.in_use(), 256 + 720);
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            budget.acquire(budget.charge(1, 10), 1),
        )
        .await;
        assert!(pending.is_err(), "over budget must wait");
        drop(a);
        assert_eq!(budget.in_use(), 0);
        let big = budget
            .acquire(budget.charge(1, 5000), 1)
            .await
            .expect("big");
        assert_eq!(
            budget.in_use(),
            1000,
            "a batch larger than the budget takes all of it"
        );
        drop(big);
    }
}
