//! `sinks.kafka` → librdkafka's client properties.
//!
//! Issue 14 (helper: encode/config): TLS (`security.protocol`, `ssl.*`), SASL (`sasl.*`),
//! pass-through `properties` (after ours, so they win, with the warnings of
//! `KafkaSinkConfig::weakening_properties`), tests. The worker sets the properties that are
//! its own business (delivery report fields, statistics interval) on top of these.

use rdkafka::ClientConfig;

use crate::config::{KafkaAcks, KafkaSinkConfig};

pub fn client_config(config: &KafkaSinkConfig) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.brokers.join(","));
    c.set(
        "acks",
        match config.acks {
            KafkaAcks::All => "all",
            KafkaAcks::Leader => "1",
        },
    );
    c.set("enable.idempotence", config.idempotent.to_string());
    c.set("compression.codec", config.compression.as_codec());
    c.set("linger.ms", config.batch.linger.0.as_millis().to_string());
    c.set("batch.num.messages", config.batch.max_messages.to_string());
    c.set("batch.size", config.batch.max_bytes.0.to_string());
    c.set(
        "request.timeout.ms",
        config.timeout.0.as_millis().to_string(),
    );
    Ok(c)
}
