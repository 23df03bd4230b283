//! The descriptor budget of the file source (`max_open_files`). A reader holds a permit while
//! its file is open; one that waits for a permit is served in turn (tokio's semaphore is
//! fair), and readers with nothing to read give theirs up when others wait
//! ([`FdPool::contended`]), so every file is read eventually.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::observability::metrics::Metrics;

pub struct FdPool {
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// An open descriptor's share: counted in `log_capturer_files_open` while it lives.
pub struct FdPermit {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for FdPermit {
    fn drop(&mut self) {
        self.metrics.files.open.dec();
    }
}

impl FdPool {
    pub fn new(max_open_files: usize) -> FdPool {
        FdPool {
            semaphore: Arc::new(Semaphore::new(max_open_files.max(1))),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a descriptor; None when cancelled.
    pub async fn acquire(
        &self,
        metrics: &Arc<Metrics>,
        cancel: &CancellationToken,
    ) -> Option<FdPermit> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::select! {
            _ = cancel.cancelled() => None,
            p = Arc::clone(&self.semaphore).acquire_owned() => p.ok(),
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let permit = permit?;
        metrics.files.open.inc();
        Some(FdPermit {
            _permit: permit,
            metrics: Arc::clone(metrics),
        })
    }

    /// Whether some reader waits for a descriptor.
    pub fn contended(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }
}
