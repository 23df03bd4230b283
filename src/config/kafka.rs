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

use super::kafka_template::{FieldSources, check_template};
use super::{BufferConfig, ByteSize, HumanDuration, InvalidConfig, RetryConfig, Secret};

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
    /// librdkafka `batch.size`: bytes per produce request and partition, capped at
    /// `message_max_bytes` (a batch above the topic's `max.message.bytes` is refused whole).
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
    /// Default `{container_id}`: one container's lines stay in one partition, in order (a host
    /// file's `{container_id}` renders as `<host>:<path>`: one key per file of each host).
    pub key: String,
    pub encoding: KafkaEncoding,
    pub compression: KafkaCompression,
    pub acks: KafkaAcks,
    /// librdkafka `enable.idempotence`: no duplicates or reordering from the client's own
    /// retries. Without it the client keeps one request in flight per connection
    /// (`max.in.flight.requests.per.connection=1`) so retries cannot reorder a key's lines.
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

// Same shape as `LokiBatchConfig`'s default (config/loki.rs); kept apart: each sink batches
// by its own fields (messages and linger here, entries and max_wait there) and defaults.
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

/// Smallest and largest `message_max_bytes` (librdkafka's own `message.max.bytes` is at most
/// 1e9, and it must hold the value plus the key, topic and framing).
pub const MIN_MESSAGE_BYTES: u64 = 1024;
pub const MAX_MESSAGE_BYTES: u64 = 512 * 1024 * 1024;

/// `properties` that would break acknowledgement outright, refused with why.
const REFUSED: &[(&str, &str)] = &[
    (
        "delivery.report.only.error",
        "true leaves successful deliveries without a report, so no line would ever be \
         acknowledged",
    ),
    (
        "transactional.id",
        "the sink does not produce in transactions (it relies on the idempotent producer)",
    ),
    (
        "dr_cb",
        "the delivery report callback is the sink's own (it acknowledges lines)",
    ),
    (
        "dr_msg_cb",
        "the delivery report callback is the sink's own (it acknowledges lines)",
    ),
];

/// A boolean property value read as librdkafka reads it (`rdkafka_conf.c`): `true`/`t`/`1`
/// and `false`/`f`/`0`, letters in any case; None for anything else (librdkafka refuses it).
pub fn librdkafka_bool(value: &str) -> Option<bool> {
    let v = value.trim();
    if v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("t") {
        Some(true)
    } else if v == "0" || v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("f") {
        Some(false)
    } else {
        None
    }
}

/// An integer property value read as librdkafka reads it (`strtol(.., 0)`: decimal, `0x` hex,
/// leading-`0` octal).
fn librdkafka_int(value: &str) -> Option<i64> {
    let v = value.trim();
    let (negative, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let n = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if v.len() > 1 && v.starts_with('0') {
        i64::from_str_radix(&v[1..], 8).ok()?
    } else {
        v.parse().ok()?
    };
    Some(if negative { -n } else { n })
}

impl KafkaSinkConfig {
    /// Whether the producer is idempotent: `idempotent`, unless `properties` set
    /// `enable.idempotence` (they win).
    pub fn effective_idempotence(&self) -> bool {
        (self.properties.get("enable.idempotence"))
            .and_then(|v| librdkafka_bool(v.expose()))
            .unwrap_or(self.idempotent)
    }

    /// `properties` that weaken what the sink promises, with why (warned at start).
    pub fn weakening_properties(&self) -> Vec<(String, &'static str)> {
        let idempotent = self.effective_idempotence();
        let mut out = Vec::new();
        for (name, value) in &self.properties {
            let raw = value.expose();
            let v = raw.trim().to_ascii_lowercase();
            let flag = librdkafka_bool(raw);
            let number = librdkafka_int(raw);
            let why = match name.as_str() {
                "acks" | "request.required.acks" if v != "all" && number != Some(-1) => {
                    "acks other than all: a line the leader acknowledged is lost if the leader \
                     dies before replicating it"
                }
                "enable.idempotence" if flag == Some(false) => {
                    "without the idempotent producer a retry can duplicate or reorder messages \
                     within a partition"
                }
                "message.timeout.ms" | "delivery.timeout.ms" => {
                    "ignored: the sink produces without a time-out (0) and decides itself when \
                     to spill to the on-disk buffer"
                }
                "retries" | "message.send.max.retries" => {
                    "a retry limit fails messages during a long outage instead of retrying them \
                     until the sink spills them to the buffer"
                }
                "max.in.flight.requests.per.connection" | "max.in.flight"
                    if !idempotent && number.is_some_and(|n| n > 1) =>
                {
                    "without the idempotent producer more than 1 request in flight lets a \
                     retry reorder a key's messages"
                }
                "max.in.flight.requests.per.connection" | "max.in.flight"
                    if number.is_some_and(|n| n > 5) =>
                {
                    "more than 5 requests in flight can reorder messages after a retry"
                }
                "enable.gapless.guarantee" if flag == Some(true) => {
                    "a gap becomes a fatal producer error that stops delivery until a restart"
                }
                "queue.buffering.max.messages" | "queue.buffering.max.kbytes" => {
                    "ignored: the pipeline's byte budget (pipeline.queue_bytes) bounds what \
                     the producer holds"
                }
                "enable.ssl.certificate.verification" if flag == Some(false) => {
                    "the brokers' certificates are NOT verified"
                }
                "ssl.endpoint.identification.algorithm" if v == "none" => {
                    "the brokers' host names are NOT checked against their certificates"
                }
                "security.protocol" => {
                    "overrides the protocol tls.enabled and sasl choose (it can turn TLS off)"
                }
                _ => continue,
            };
            out.push((name.clone(), why));
        }
        out
    }

    /// Other settings that weaken the connection's security, as full messages (warned at
    /// start).
    pub fn security_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tls.insecure_skip_verify {
            out.push(
                "sinks.kafka.tls.insecure_skip_verify is set: the brokers' certificates are NOT \
                 verified"
                    .to_string(),
            );
        }
        if let Some(sasl) = &self.sasl
            && sasl.mechanism == SaslMechanism::Plain
            && !self.tls.enabled
        {
            out.push(
                "sinks.kafka.sasl.mechanism: PLAIN without tls.enabled sends the password in \
                 clear text"
                    .to_string(),
            );
        }
        out
    }

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let k = "sinks.kafka";
        if self.brokers.is_empty() {
            return Err(at!("{k}.brokers"; "at least one host:port"));
        }
        for (i, broker) in self.brokers.iter().enumerate() {
            check_broker(broker).map_err(|e| at!("{k}.brokers[{i}]"; "{broker:?} {e}"))?;
        }
        if self.topic.is_empty() {
            return Err(at!("{k}.topic"; "must not be empty"));
        }
        if self.acks == KafkaAcks::Leader && self.idempotent {
            return Err(
                at!("{k}.acks"; "leader needs idempotent: false (the idempotent producer needs acks: all)"
                ),
            );
        }
        let m = self.message_max_bytes.0;
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&m) {
            return Err(
                at!("{k}.message_max_bytes"; "must be between 1KiB and 512MiB (is {m} bytes)"
                ),
            );
        }
        if !(1..=1_000_000).contains(&self.batch.max_messages) {
            return Err(
                at!("{k}.batch.max_messages"; "must be between 1 and 1000000"
                ),
            );
        }
        if !(1024..=i32::MAX as u64).contains(&self.batch.max_bytes.0) {
            return Err(
                at!("{k}.batch.max_bytes"; "must be between 1KiB and 2GiB - 1"
                ),
            );
        }
        if self.batch.linger.0 > Duration::from_secs(900) {
            return Err(at!("{k}.batch.linger"; "must be at most 900s"));
        }
        if self.timeout.0 < Duration::from_millis(1) || self.timeout.0 > Duration::from_secs(900) {
            return Err(at!("{k}.timeout"; "must be between 1ms and 900s"));
        }
        self.buffer.validate(k)?;
        self.retry.validate(k)?;
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(at!("{k}.tls"; "cert_file and key_file go together"));
        }
        let tls_set = self.tls.ca_file.is_some()
            || self.tls.cert_file.is_some()
            || self.tls.insecure_skip_verify;
        if tls_set && !self.tls.enabled {
            return Err(
                at!("{k}.tls"; "ca_file, cert_file, key_file and insecure_skip_verify need enabled: true"
                ),
            );
        }
        if let Some(sasl) = &self.sasl {
            if sasl.username.is_empty() {
                return Err(at!("{k}.sasl.username"; "must not be empty"));
            }
            if sasl.password.is_empty() {
                return Err(at!("{k}.sasl.password"; "must not be empty"));
            }
        }
        for (name, value) in &self.properties {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(at!("{k}.properties"; "{name:?} is not a property name"));
            }
            if let Some((_, why)) = REFUSED.iter().find(|(n, _)| n == name) {
                // delivery.report.only.error=false is the default and harmless; any value
                // librdkafka would not read as false is refused (it refuses what it cannot read).
                if name != "delivery.report.only.error"
                    || librdkafka_bool(value.expose()) != Some(false)
                {
                    return Err(at!("{k}.properties.{name}"; "refused: {why}"));
                }
            }
        }
        Ok(())
    }

    /// Checks the `topic` and `key` templates against where fields may come from (done by
    /// `Config::validate`, which knows the processing and sources sections).
    pub fn check_templates(&self, sources: &FieldSources<'_>) -> Result<(), InvalidConfig> {
        check_template("sinks.kafka.topic", &self.topic, true, sources)?;
        check_template("sinks.kafka.key", &self.key, false, sources)
    }
}

/// Why a broker address is refused (the text follows the quoted address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BrokerError {
    #[error("is not host:port")]
    NoPort,
    #[error("is not host:port (an IPv6 address goes in brackets)")]
    BadHost,
    #[error("has no port 1..65535")]
    PortOutOfRange,
}

/// `host:port` (`[v6]:port` for an IPv6 address), port 1..=65535.
fn check_broker(broker: &str) -> Result<(), BrokerError> {
    let Some((host, port)) = broker.rsplit_once(':') else {
        return Err(BrokerError::NoPort);
    };
    let host_ok = !host.is_empty()
        && !host.contains(|c: char| c.is_whitespace() || c == ',' || c == '/')
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    if !host_ok {
        return Err(BrokerError::BadHost);
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(BrokerError::PortOutOfRange),
    }
}
