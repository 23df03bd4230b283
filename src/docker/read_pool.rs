//! The read room all streams share beyond their minimum.
//!
//! A busy stream reads in large pieces (fewer syscalls per line), but a hundred busy streams
//! each reading 256 KiB held tens of MiB that the queue budget does not see. Each stream
//! starts at the minimum read and may grow only with room taken from one process-wide pool,
//! so the read buffers of all streams together stay under a fixed size however many
//! containers are busy; a stream that shrinks or goes idle gives its room back.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Read room beyond the minimum that all streams together may hold.
pub const READ_POOL_BYTES: usize = 8 * 1024 * 1024;

pub struct ReadPool {
    taken: AtomicUsize,
    size: usize,
}

/// The process's pool: memory is a process-wide resource, and so is this bound.
pub static READ_POOL: ReadPool = ReadPool::new(READ_POOL_BYTES);

impl ReadPool {
    pub const fn new(size: usize) -> Self {
        ReadPool {
            taken: AtomicUsize::new(0),
            size,
        }
    }

    /// Takes `n` bytes of room if the pool has them.
    pub fn try_take(&self, n: usize) -> bool {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t + n <= self.size).then_some(t + n)
            })
            .is_ok()
    }

    pub fn give_back(&self, n: usize) {
        self.taken.fetch_sub(n, Ordering::AcqRel);
    }

    /// Room currently taken by all streams.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_bounded_and_returned() {
        let pool = ReadPool::new(100);
        assert!(pool.try_take(60));
        assert!(!pool.try_take(50), "over the size");
        assert!(pool.try_take(40));
        assert_eq!(pool.taken(), 100);
        pool.give_back(60);
        assert!(pool.try_take(50));
        assert_eq!(pool.taken(), 90);
    }
}
