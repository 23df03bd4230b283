//! A segment store shared between a sink's async worker and blocking threads: the handle every
//! sink with an on-disk buffer or dead-letter store (Loki, Kafka) holds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinError;

use super::{FsyncPolicy, OpenReport, RecordId, SegmentStore, StoreError, StoreOptions};
use crate::config::{BufferConfig, FsyncMode};

/// `<state_dir>/buffer/<sink>`: where a sink's batches wait while its destination is down.
pub fn buffer_dir(state_dir: &Path, sink: &str) -> PathBuf {
    state_dir.join("buffer").join(sink)
}

/// `<state_dir>/dlq/<sink>`: the batches (or records) a sink's destination refused for good.
pub fn dlq_dir(state_dir: &Path, sink: &str) -> PathBuf {
    state_dir.join("dlq").join(sink)
}

/// The buffer's store options, from a sink's `buffer` section.
pub fn buffer_options(config: &BufferConfig) -> StoreOptions {
    StoreOptions {
        max_bytes: config.max_bytes.0,
        segment_bytes: config.segment_bytes.0,
        fsync: match config.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Never => FsyncPolicy::Never,
        },
    }
}

/// Dead letters are rare and precious: always fsynced, capped like the buffer.
pub fn dlq_options(config: &BufferConfig) -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::Always,
        ..buffer_options(config)
    }
}

/// A segment store shared between the async worker and blocking threads.
#[derive(Clone)]
pub struct SharedStore(Arc<Mutex<SegmentStore>>);

impl SharedStore {
    pub fn open(dir: &Path, options: StoreOptions) -> std::io::Result<(SharedStore, OpenReport)> {
        let (store, report) = SegmentStore::open(dir, options)?;
        Ok((SharedStore(Arc::new(Mutex::new(store))), report))
    }

    pub fn lock(&self) -> MutexGuard<'_, SegmentStore> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs a blocking operation on the store off the async runtime; the error is the blocking
    /// task's failure (a panic).
    pub async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut SegmentStore) -> T + Send + 'static,
    ) -> Result<T, JoinError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || op(&mut me.lock())).await
    }

    pub async fn append(&self, record: Vec<u8>) -> Result<RecordId, StoreError> {
        match self.with(move |s| s.append(&record)).await {
            Ok(r) => r,
            // Same text as before (the join error's), now without a String in between.
            Err(e) => Err(StoreError::Io(std::io::Error::other(e))),
        }
    }

    pub fn pending(&self) -> (u64, u64) {
        let s = self.lock();
        (s.pending_records(), s.pending_bytes())
    }
}
