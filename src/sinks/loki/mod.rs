//! The Grafana Loki sink: encoding (protobuf + snappy, or JSON), HTTP delivery with retries,
//! the on-disk buffer and the dead-letter store.

mod client;
pub mod encode;
pub mod proto;
pub mod store;
mod worker;

pub use client::{LokiClient, SendError};
pub use encode::{EncodedBatch, Encoder};
pub use worker::LokiWorker;

use std::path::{Path, PathBuf};

use crate::buffer::{FsyncPolicy, StoreOptions};
use crate::config::{FsyncMode, LokiSinkConfig};

/// `<state_dir>/buffer/loki` and `<state_dir>/dlq/loki`.
pub fn buffer_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("buffer").join("loki")
}

pub fn dlq_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("dlq").join("loki")
}

pub fn buffer_options(config: &LokiSinkConfig) -> StoreOptions {
    StoreOptions {
        max_bytes: config.buffer.max_bytes.0,
        segment_bytes: config.buffer.segment_bytes.0,
        fsync: match config.buffer.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Never => FsyncPolicy::Never,
        },
    }
}

/// Dead letters are rare and precious: always fsynced, capped like the buffer.
pub fn dlq_options(config: &LokiSinkConfig) -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::Always,
        ..buffer_options(config)
    }
}
