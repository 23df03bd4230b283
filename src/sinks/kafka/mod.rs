//! The Kafka sink: one message per record, produced with librdkafka (`rdkafka`), acknowledged
//! to the ledger only when the broker acknowledged it (the delivery report), with the same
//! on-disk buffer and dead-letter store as the Loki sink.
//!
//! - [`encode`]: a record → a [`Message`] (topic and key from templates, value the NDJSON
//!   record or the raw line).
//! - [`client_config`]: `sinks.kafka` → librdkafka properties (acks, idempotence, TLS, SASL,
//!   pass-through properties).
//! - [`error`]: the sink's error types (configuration, store record).
//! - [`store`]: how messages are kept in the buffer and dead-letter stores.
//! - [`worker`]: the state machine (produce, delivery reports, spill, replay, drain).

pub mod client_config;
pub mod encode;
pub mod error;
pub mod store;
mod worker;

pub use encode::{Message, MessageEncoder};
pub use error::{KafkaConfigError, RecordError};
pub use worker::KafkaWorker;

use std::path::{Path, PathBuf};

use crate::buffer::StoreOptions;
use crate::config::KafkaSinkConfig;

/// The sink's name in metrics, status and store directories.
pub const SINK: &str = "kafka";

/// `<state_dir>/buffer/kafka`.
pub fn buffer_dir(state_dir: &Path) -> PathBuf {
    crate::buffer::buffer_dir(state_dir, SINK)
}

/// `<state_dir>/dlq/kafka`.
pub fn dlq_dir(state_dir: &Path) -> PathBuf {
    crate::buffer::dlq_dir(state_dir, SINK)
}

pub fn buffer_options(config: &KafkaSinkConfig) -> StoreOptions {
    crate::buffer::buffer_options(&config.buffer)
}

pub fn dlq_options(config: &KafkaSinkConfig) -> StoreOptions {
    crate::buffer::dlq_options(&config.buffer)
}
