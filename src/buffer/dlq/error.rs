//! The `dlq` command's error: [`DlqError`], what `list`, `show`, `replay` and `purge` return
//! and `main` prints as `error: …`. Every message is the one the command printed when these
//! were strings (tests/cli.rs, tests/kafka_dlq.rs and tests/loki_e2e.rs compare them).

use std::io;
use std::path::PathBuf;

use crate::buffer::{ParseRecordIdError, StoreError};
#[cfg(feature = "kafka")]
use crate::sinks::kafka::error::{KafkaConfigError, RecordError};
use crate::sinks::loki::SendError;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// `--sink kafka` with no `sinks.kafka` in the config.
    #[error("the config has no sinks.kafka: there are no Kafka dead letters to manage")]
    NoKafkaDeadLetters,
    /// No `--sink`, and both network sinks configured.
    #[error(
        "the config has two network sinks, sinks.loki and sinks.kafka: choose whose dead \
         letters with --sink loki or --sink kafka"
    )]
    TwoNetworkSinks,
    /// `--sink kafka` in a build without the `kafka` feature.
    #[error("this build has no Kafka sink")]
    KafkaNotBuilt,
    /// The Loki commands with no `sinks.loki` in the config.
    #[error("the config has no sinks.loki: there are no dead letters to manage")]
    NoLokiDeadLetters,
    /// `replay --sink loki` found no `sinks.loki` after opening (kept from the old text).
    #[error("no sinks.loki")]
    NoLokiSink,
    /// The Kafka commands with no `sinks.kafka` in the config.
    #[error("the config has no sinks.kafka")]
    NoKafkaSink,
    /// The state directory's lock (`StateLock::acquire`'s message).
    #[error("{0}")]
    Lock(crate::state_lock::StateLockError),
    /// The dead-letter store could not be opened.
    #[error("{}: {source}", dir.display())]
    Open { dir: PathBuf, source: io::Error },
    /// Reading, consuming or purging the store.
    #[error(transparent)]
    Store(#[from] io::Error),
    /// Writing a record back (rejected again, or an unreadable one moved to the end).
    #[error(transparent)]
    Append(#[from] StoreError),
    /// `show`'s id is not a record id.
    #[error(transparent)]
    BadId(#[from] ParseRecordIdError),
    /// `show`'s id names no record.
    #[error("no dead letter {id} (see `dlq list`)")]
    NotFound { id: String },
    /// A Loki record whose header cannot be decoded (`decode_record`'s message).
    #[error("{0}")]
    LokiRecord(crate::sinks::loki::store::DecodeError),
    /// A Loki record's body, gzip-compressed JSON.
    #[error("gzip: {0}")]
    Gzip(io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A Loki record's body, snappy-compressed protobuf.
    #[error("snappy: {0}")]
    Snappy(#[from] snap::Error),
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The Loki client could not be built from `sinks.loki` (`LokiClient::new`'s message).
    #[error("{0}")]
    LokiClient(crate::sinks::loki::LokiSetupError),
    /// Replay stopped: Loki did not answer (or answered other than accept/reject).
    #[error("Loki is not accepting: {0}")]
    LokiNotAccepting(SendError),
    /// A Kafka record that cannot be decoded.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    KafkaRecord(#[from] RecordError),
    /// `sinks.kafka` does not make a client config.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    KafkaConfig(#[from] KafkaConfigError),
    /// The replay producer could not be created.
    #[cfg(feature = "kafka")]
    #[error("sinks.kafka: {0}")]
    Producer(rdkafka::error::KafkaError),
    /// Replay stopped: no broker took the messages.
    #[cfg(feature = "kafka")]
    #[error("Kafka is not accepting: {0}")]
    KafkaNotAccepting(String),
    /// `replay`'s runtime could not be built (in `main`).
    #[error("{0}")]
    Runtime(io::Error),
}
