//! `sinks.kafka` → librdkafka's client properties: ours first (acks, idempotence, batching,
//! TLS, SASL, `message.max.bytes`), then the pass-through `properties` (they win, with the
//! warnings of `KafkaSinkConfig::weakening_properties`). The worker sets the properties that
//! are its own business (delivery report fields, statistics interval, `message.timeout.ms`) on
//! top of these.
//!
//! [`client_config`] also makes a producer from the result once and drops it: librdkafka
//! checks property names, values and their combinations only then, and an error is better at
//! start (or before a reload) with the key path than in the worker.

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;

use crate::config::{KafkaAcks, KafkaSinkConfig};

/// Room in librdkafka's `message.max.bytes` (a produce request's size) above our
/// `message_max_bytes` (a value's size) for the key, the topic and the protocol framing.
pub const REQUEST_OVERHEAD: u64 = 64 * 1024;

/// The client properties of `config`, checked by making a producer; an error names the key
/// (`sinks.kafka.tls.ca_file: …`, `sinks.kafka.properties.<name>: …`).
pub fn client_config(config: &KafkaSinkConfig) -> Result<ClientConfig, String> {
    let c = properties(config)?;
    check(&c, config)?;
    Ok(c)
}

/// The properties, without making a producer.
pub fn properties(config: &KafkaSinkConfig) -> Result<ClientConfig, String> {
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
    // A produce request must hold the largest message we produce (value, key, topic,
    // framing) and a whole batch.
    let request = (config.message_max_bytes.0 + REQUEST_OVERHEAD)
        .max(config.batch.max_bytes.0)
        .min(1_000_000_000);
    c.set("message.max.bytes", request.to_string());
    let protocol = match (config.tls.enabled, config.sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    c.set("security.protocol", protocol);
    if config.tls.enabled {
        let tls = &config.tls;
        for (key, file, property) in [
            ("tls.ca_file", &tls.ca_file, "ssl.ca.location"),
            ("tls.cert_file", &tls.cert_file, "ssl.certificate.location"),
            ("tls.key_file", &tls.key_file, "ssl.key.location"),
        ] {
            if let Some(path) = file {
                // librdkafka's own error would not name the key.
                std::fs::metadata(path)
                    .map_err(|e| format!("sinks.kafka.{key}: {}: {e}", path.display()))?;
                c.set(property, path.display().to_string());
            }
        }
        if tls.insecure_skip_verify {
            c.set("enable.ssl.certificate.verification", "false");
        }
    }
    if let Some(sasl) = &config.sasl {
        c.set("sasl.mechanism", sasl.mechanism.as_str());
        c.set("sasl.username", &sasl.username);
        c.set("sasl.password", sasl.password.expose());
    }
    for (name, value) in &config.properties {
        c.set(name, value.expose());
    }
    Ok(c)
}

/// Makes (and drops) a producer from `c`: librdkafka refuses unknown properties, bad values
/// and bad combinations here. The error never shows a property value (they may be secrets).
fn check(c: &ClientConfig, config: &KafkaSinkConfig) -> Result<(), String> {
    let redact = |text: &str| {
        let mut text = text.to_string();
        let secrets = (config.properties.values())
            .map(|v| v.expose())
            .chain(config.sasl.as_ref().map(|s| s.password.expose()));
        for secret in secrets.filter(|s| !s.is_empty()) {
            text = text.replace(secret, "***");
        }
        text
    };
    match c.create::<BaseProducer>() {
        Ok(producer) => {
            drop(producer);
            Ok(())
        }
        Err(KafkaError::ClientConfig(_, description, key, _)) => {
            let description = redact(&description);
            if config.properties.contains_key(&key) {
                Err(format!("sinks.kafka.properties.{key}: {description}"))
            } else {
                Err(format!("sinks.kafka: {key}: {description}"))
            }
        }
        Err(KafkaError::ClientCreation(e)) if !config.properties.is_empty() => {
            Err(format!("sinks.kafka.properties: {}", redact(&e)))
        }
        Err(e) => Err(format!("sinks.kafka: {}", redact(&e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaSasl, SaslMechanism, Secret};

    fn get(c: &ClientConfig, key: &str) -> Option<String> {
        c.get(key).map(str::to_string)
    }

    #[test]
    fn defaults_are_acks_all_idempotent_plaintext() {
        let config = KafkaSinkConfig::default();
        let c = client_config(&config).expect("default config makes a producer");
        assert_eq!(get(&c, "acks").as_deref(), Some("all"));
        assert_eq!(get(&c, "enable.idempotence").as_deref(), Some("true"));
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("plaintext"));
        assert_eq!(get(&c, "compression.codec").as_deref(), Some("lz4"));
        let max: u64 = get(&c, "message.max.bytes")
            .and_then(|v| v.parse().ok())
            .expect("message.max.bytes");
        assert!(max >= config.message_max_bytes.0 + REQUEST_OVERHEAD);
        assert!(max >= config.batch.max_bytes.0);
    }

    #[test]
    fn tls_and_sasl_set_the_protocol_and_their_properties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not read until connecting").expect("write");
        let mut config = KafkaSinkConfig {
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                username: "agent".into(),
                password: Secret::new("hunter2"),
            }),
            ..KafkaSinkConfig::default()
        };
        let c = properties(&config).expect("sasl");
        assert_eq!(
            get(&c, "security.protocol").as_deref(),
            Some("sasl_plaintext")
        );
        assert_eq!(get(&c, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(get(&c, "sasl.username").as_deref(), Some("agent"));
        assert_eq!(get(&c, "sasl.password").as_deref(), Some("hunter2"));
        config.tls.enabled = true;
        config.tls.ca_file = Some(ca.clone());
        config.tls.insecure_skip_verify = true;
        let c = properties(&config).expect("sasl_ssl");
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("sasl_ssl"));
        assert_eq!(get(&c, "ssl.ca.location"), Some(ca.display().to_string()));
        assert_eq!(
            get(&c, "enable.ssl.certificate.verification").as_deref(),
            Some("false")
        );
        config.sasl = None;
        config.tls.insecure_skip_verify = false;
        let c = properties(&config).expect("ssl");
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("ssl"));
        assert_eq!(get(&c, "enable.ssl.certificate.verification"), None);
        config.tls.cert_file = Some(dir.path().join("missing.pem"));
        config.tls.key_file = Some(dir.path().join("missing.key"));
        let e = properties(&config).expect_err("missing file");
        assert!(
            e.starts_with("sinks.kafka.tls.cert_file: ") && e.contains("missing.pem"),
            "{e}"
        );
    }

    /// Pass-through properties come last (they win); ones librdkafka refuses name their key
    /// and never show their value.
    #[test]
    fn properties_win_and_bad_ones_are_named() {
        let mut config = KafkaSinkConfig::default();
        config
            .properties
            .insert("linger.ms".into(), Secret::new("50"));
        let c = client_config(&config).expect("linger");
        assert_eq!(get(&c, "linger.ms").as_deref(), Some("50"));

        let mut config = KafkaSinkConfig::default();
        config
            .properties
            .insert("no.such.property".into(), Secret::new("s3cr3t"));
        let e = client_config(&config).expect_err("unknown property");
        assert!(
            e.starts_with("sinks.kafka.properties.no.such.property: "),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");

        let mut config = KafkaSinkConfig::default();
        config
            .properties
            .insert("compression.codec".into(), Secret::new("s3cr3t-codec"));
        let e = client_config(&config).expect_err("bad value");
        assert!(
            e.starts_with("sinks.kafka.properties.compression.codec: "),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");

        // A combination librdkafka refuses only when making the client.
        let mut config = KafkaSinkConfig::default();
        config.properties.insert("acks".into(), Secret::new("1"));
        let e = client_config(&config).expect_err("idempotence needs acks=all");
        assert!(e.starts_with("sinks.kafka.properties: "), "{e}");
    }
}
