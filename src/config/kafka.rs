//! Configuration of the Kafka sink (`sinks.kafka`).
//!
//! The sink's guarantees rest on a few client settings (`acks=all`, the idempotent producer,
//! retries without limit): they are the defaults here, and `properties` that would weaken them
//! are accepted with a warning ([`KafkaSinkConfig::weakening_properties`]) so an operator who
//! knows better can still choose, but never by accident.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{BufferConfig, ByteSize, HumanDuration, RetryConfig, Secret};

/// What a Kafka message's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaEncoding {
    /// The NDJSON record the file and stdout sinks write (without the trailing newline).
    Ndjson,
    /// The log line alone, as captured (after processing).
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaCompression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl KafkaCompression {
    /// librdkafka's `compression.codec` value.
    pub fn as_codec(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
            KafkaCompression::Zstd => "zstd",
        }
    }
}

/// `acks`: how many replicas must have a message before the broker acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaAcks {
    /// Every in-sync replica (`acks=all`): the only setting under which an acknowledged line
    /// survives the loss of the leader. Required by the idempotent producer.
    All,
    /// The leader alone (`acks=1`): faster, loses acknowledged lines when the leader dies
    /// before replicating. Needs `idempotent: false`.
    Leader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTls {
    /// Connect with TLS (`security.protocol` SSL, or SASL_SSL with `sasl`).
    pub enabled: bool,
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any broker certificate. Only for tests; the agent warns at start.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaBatchConfig {
    /// librdkafka `batch.num.messages`: messages per produce request and partition.
    pub max_messages: usize,
    /// librdkafka `batch.size`: bytes per produce request and partition.
    pub max_bytes: ByteSize,
    /// librdkafka `linger.ms`: how long a partial batch waits for more messages.
    pub linger: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic template: literal text with `{placeholders}` of record fields (`container_name`,
    /// `compose_project`, … or a field set by processing). A placeholder the record lacks
    /// renders as `unknown`; characters Kafka does not allow in topic names become `_`.
    pub topic: String,
    /// Message key template, same placeholders; empty: no key (round-robin partitions).
    /// Default `{container_id}`: one container's lines stay in one partition, in order.
    pub key: String,
    pub encoding: KafkaEncoding,
    pub compression: KafkaCompression,
    pub acks: KafkaAcks,
    /// librdkafka `enable.idempotence`: no duplicates or reordering from the client's own
    /// retries.
    pub idempotent: bool,
    /// A message whose value is larger is never produced: it becomes a dead letter.
    /// Must not exceed the topic's `max.message.bytes` (the broker default is 1 MiB).
    pub message_max_bytes: ByteSize,
    pub batch: KafkaBatchConfig,
    /// librdkafka `request.timeout.ms`: one produce request's time-out (it is retried).
    pub timeout: HumanDuration,
    /// Back-off of buffer replays and of dead-letter / buffer writes that failed.
    pub retry: RetryConfig,
    pub tls: KafkaTls,
    pub sasl: Option<KafkaSasl>,
    /// Extra librdkafka properties, passed as given (values are treated as secrets in logs
    /// and the effective config). Ones that weaken the sink's guarantees are warned about.
    pub properties: BTreeMap<String, Secret>,
    /// The on-disk buffer during outages (`spill_after`, `max_bytes`, …), as for Loki.
    pub buffer: BufferConfig,
}

impl Default for KafkaBatchConfig {
    fn default() -> Self {
        KafkaBatchConfig {
            max_messages: 10_000,
            max_bytes: ByteSize(1024 * 1024),
            linger: HumanDuration(Duration::from_millis(5)),
        }
    }
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            brokers: vec!["127.0.0.1:9092".to_string()],
            topic: "logs".to_string(),
            key: "{container_id}".to_string(),
            encoding: KafkaEncoding::Ndjson,
            compression: KafkaCompression::Lz4,
            acks: KafkaAcks::All,
            idempotent: true,
            message_max_bytes: ByteSize(1024 * 1024),
            batch: KafkaBatchConfig::default(),
            timeout: HumanDuration(Duration::from_secs(30)),
            retry: RetryConfig::default(),
            tls: KafkaTls::default(),
            sasl: None,
            properties: BTreeMap::new(),
            buffer: BufferConfig::default(),
        }
    }
}

impl KafkaSinkConfig {
    /// `properties` that weaken what the sink promises, with why (warned at start).
    /// Issue 14 (helper: config): fill in (`acks=0`/`1`, `enable.idempotence=false`,
    /// `message.timeout.ms`, `retries`, `max.in.flight…` above 5, `enable.gapless.guarantee`…).
    pub fn weakening_properties(&self) -> Vec<(String, &'static str)> {
        Vec::new()
    }

    pub fn validate(&self) -> Result<(), String> {
        let k = "sinks.kafka";
        if self.brokers.is_empty() {
            return Err(format!("{k}.brokers: at least one host:port"));
        }
        if self.topic.is_empty() {
            return Err(format!("{k}.topic: must not be empty"));
        }
        if self.acks == KafkaAcks::Leader && self.idempotent {
            return Err(format!(
                "{k}.acks: leader needs idempotent: false (the idempotent producer needs acks: all)"
            ));
        }
        if self.buffer.max_bytes.0 < self.buffer.segment_bytes.0 {
            return Err(format!(
                "{k}.buffer.max_bytes: must be >= buffer.segment_bytes"
            ));
        }
        if self.retry.initial.0.is_zero() || self.retry.initial.0 > self.retry.max.0 {
            return Err(format!("{k}.retry.initial: must be > 0 and <= retry.max"));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(format!("{k}.tls: cert_file and key_file go together"));
        }
        Ok(())
    }
}
