//! The Kafka sink's error types, one per boundary: the sink's configuration
//! ([`KafkaConfigError`]: client properties and the topic/key templates) and a store record
//! ([`RecordError`]). Their texts are what operators and tests read: keep them.

use std::path::PathBuf;

/// `sinks.kafka` refused, naming the key (`sinks.kafka.tls.ca_file: …`,
/// `sinks.kafka.properties.<name>: …`).
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    /// A TLS file cannot be read (librdkafka's own error would not name the key).
    #[error("sinks.kafka.{key}: {}: {source}", path.display())]
    TlsFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// librdkafka refused the client properties; `key` is ours (`batch.linger`) or
    /// `properties.<name>`.
    #[error("sinks.kafka.{key}: {description}")]
    Property { key: String, description: String },
    /// librdkafka refused the client properties, naming none of our keys.
    #[error("sinks.kafka: {description}")]
    Client { description: String },
    /// The blocking check ([`super::client_config::checked_client_config`]) did not finish.
    #[error("sinks.kafka: checking the client properties: {0}")]
    CheckThread(tokio::task::JoinError),
    /// The `topic` or `key` template (the text has no `sinks.kafka: ` prefix: callers add it).
    #[error("{field}: {reason}")]
    Template {
        field: &'static str,
        #[source]
        reason: crate::config::kafka_template::TemplateError,
    },
}

/// A buffer or dead-letter store record that cannot be decoded (torn or corrupt on disk).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record header: {0}")]
    Header(serde_json::Error),
    /// The record ends inside `what` (`header`, `message 3: value`, …).
    #[error("record ends inside the {0}")]
    Truncated(String),
    /// Message `index` is malformed: `what` says how.
    #[error("message {index}: {what}")]
    Message { index: usize, what: &'static str },
    #[error("{extra} bytes after the last of {messages} messages")]
    Trailing { extra: usize, messages: usize },
}
