//! The Grafana Loki sink: encoding (protobuf + snappy, or JSON), HTTP delivery with retries,
//! the on-disk buffer and the dead-letter store.

mod client;
pub mod encode;
mod error;
pub mod proto;
pub mod store;
mod worker;

pub use client::{LokiClient, SendError};
pub use encode::{EncodedBatch, Encoder};
pub use error::{LokiSetupError, SinkError};
pub use worker::LokiWorker;

use std::path::{Path, PathBuf};

use crate::buffer::StoreOptions;
use crate::config::LokiSinkConfig;

/// `<state_dir>/buffer/loki` and `<state_dir>/dlq/loki`.
pub fn buffer_dir(state_dir: &Path) -> PathBuf {
    crate::buffer::buffer_dir(state_dir, "loki")
}

pub fn dlq_dir(state_dir: &Path) -> PathBuf {
    crate::buffer::dlq_dir(state_dir, "loki")
}

pub fn buffer_options(config: &LokiSinkConfig) -> StoreOptions {
    crate::buffer::buffer_options(&config.buffer)
}

pub fn dlq_options(config: &LokiSinkConfig) -> StoreOptions {
    crate::buffer::dlq_options(&config.buffer)
}
