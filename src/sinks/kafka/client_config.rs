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
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;

use super::error::KafkaConfigError;
use crate::config::{KafkaAcks, KafkaSinkConfig};

/// Room in librdkafka's `message.max.bytes` (a produce request's size) above our
/// `message_max_bytes` (a value's size) for the key, the topic and the protocol framing.
pub const REQUEST_OVERHEAD: u64 = 64 * 1024;

/// The client properties of `config`, checked by making a producer; an error names the key
/// (`sinks.kafka.tls.ca_file: …`, `sinks.kafka.properties.<name>: …`). Blocks for as long
/// as librdkafka takes to make and drop a client (reads the TLS files): from async code use
/// [`checked_client_config`].
pub fn client_config(config: &KafkaSinkConfig) -> Result<ClientConfig, KafkaConfigError> {
    let c = properties(config)?;
    check(&c, config)?;
    Ok(c)
}

/// [`client_config`] on a blocking thread.
pub async fn checked_client_config(
    config: &KafkaSinkConfig,
) -> Result<ClientConfig, KafkaConfigError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || client_config(&config))
        .await
        .map_err(KafkaConfigError::CheckThread)?
}

/// The properties, without making a producer.
pub fn properties(config: &KafkaSinkConfig) -> Result<ClientConfig, KafkaConfigError> {
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
    if !config.effective_idempotence() {
        // librdkafka's default (1000000) lets a retried request land after a later one:
        // a key's lines would be reordered. The idempotent producer keeps order itself.
        c.set("max.in.flight.requests.per.connection", "1");
    }
    c.set("compression.codec", config.compression.as_codec());
    c.set("linger.ms", config.batch.linger.0.as_millis().to_string());
    c.set("batch.num.messages", config.batch.max_messages.to_string());
    // A batch is at most one message's size: with the request limit below it stays under
    // the topic's max.message.bytes as the value does (a larger batch is refused whole).
    let batch = config.batch.max_bytes.0.min(config.message_max_bytes.0);
    c.set("batch.size", batch.to_string());
    c.set(
        "request.timeout.ms",
        config.timeout.0.as_millis().to_string(),
    );
    // A produce request must hold the largest message we produce (value, key, topic,
    // framing); a batch (`batch.size` <= `message_max_bytes`) fits too.
    let request = (config.message_max_bytes.0 + REQUEST_OVERHEAD).min(1_000_000_000);
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
                std::fs::metadata(path).map_err(|source| KafkaConfigError::TlsFile {
                    key,
                    path: path.clone(),
                    source,
                })?;
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

/// librdkafka properties set from our keys (`sinks.kafka.<key>`), to name the key of an
/// error that names the property.
const OUR_PROPERTIES: &[(&str, &str)] = &[
    ("ssl.ca.location", "tls.ca_file"),
    ("ssl.certificate.location", "tls.cert_file"),
    ("ssl.key.location", "tls.key_file"),
    (
        "enable.ssl.certificate.verification",
        "tls.insecure_skip_verify",
    ),
    ("security.protocol", "tls.enabled"),
    ("linger.ms", "batch.linger"),
    ("queue.buffering.max.ms", "batch.linger"),
    ("batch.num.messages", "batch.max_messages"),
    ("batch.size", "batch.max_bytes"),
    ("message.max.bytes", "message_max_bytes"),
    ("request.timeout.ms", "timeout"),
    ("compression.codec", "compression"),
    ("compression.type", "compression"),
    ("enable.idempotence", "idempotent"),
    ("request.required.acks", "acks"),
    ("acks", "acks"),
    ("max.in.flight.requests.per.connection", "idempotent"),
    ("max.in.flight", "idempotent"),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("sasl.mechanism", "sasl.mechanism"),
    ("sasl.username", "sasl.username"),
    ("sasl.password", "sasl.password"),
    ("bootstrap.servers", "brokers"),
];

/// Whether librdkafka's `text` names the property `name` (as a whole word: `linger.ms`
/// does not name `queue.buffering.max.ms`' parts).
fn names(text: &str, name: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_';
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(|c| part(c) && c != '.')
    })
}

/// The key of `config` an error about librdkafka property `property` (or, with None, about
/// the properties its text names) belongs to: `properties.<name>` when a pass-through
/// property is the one named, else the key it is set from.
fn blame(config: &KafkaSinkConfig, property: Option<&str>, text: &str) -> Option<String> {
    let named = |name: &str| match property {
        Some(p) => p == name,
        None => names(text, name),
    };
    if let Some(name) = config.properties.keys().find(|n| named(n)) {
        return Some(format!("properties.{name}"));
    }
    (OUR_PROPERTIES.iter())
        .find(|(name, _)| named(name))
        .map(|(_, key)| key.to_string())
}

/// Whether a property's value may be a secret (then it is hidden in errors). Short values of
/// other properties (`1`, `all`, `true`) would only garble librdkafka's text.
fn secret_looking(name: &str, value: &str) -> bool {
    name.contains("password")
        || name.contains("secret")
        || name.contains("key")
        || name.starts_with("ssl.key")
        || value.chars().count() >= 4
}

/// Makes (and drops) a producer from `c`: librdkafka refuses unknown properties, bad values
/// and bad combinations here. It is made with what the worker changes that matters to these
/// checks (`message.timeout.ms` 0: else a `batch.linger` above 300 s is refused for a
/// time-out the user cannot set) and without brokers (it does not connect). The error never
/// shows a secret-looking value.
fn check(c: &ClientConfig, config: &KafkaSinkConfig) -> Result<(), KafkaConfigError> {
    let redact = |text: &str| {
        let mut text = text.to_string();
        let secrets = (config.properties.iter())
            .filter(|(name, v)| secret_looking(name, v.expose()))
            .map(|(_, v)| v.expose())
            .chain(config.sasl.as_ref().map(|s| s.password.expose()));
        for secret in secrets.filter(|s| !s.is_empty()) {
            text = text.replace(secret, "***");
        }
        text
    };
    let mut c = c.clone();
    c.set("message.timeout.ms", "0");
    c.remove("bootstrap.servers");
    c.remove("metadata.broker.list");
    // "No bootstrap.servers configured" is expected here; errors come back as values.
    c.set_log_level(RDKafkaLogLevel::Emerg);
    let fail = |key: Option<String>, description: String| match key {
        Some(key) => Err(KafkaConfigError::Property { key, description }),
        None => Err(KafkaConfigError::Client { description }),
    };
    match c.create::<BaseProducer>() {
        Ok(producer) => {
            drop(producer);
            Ok(())
        }
        Err(KafkaError::ClientConfig(_, description, key, _)) => {
            let description = redact(&description);
            match blame(config, Some(&key), &description) {
                Some(ours) => fail(Some(ours), description),
                None => fail(None, format!("{key}: {description}")),
            }
        }
        Err(KafkaError::ClientCreation(e)) => {
            let e = redact(&e);
            fail(blame(config, None, &e), e)
        }
        Err(e) => fail(None, redact(&e.to_string())),
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
        assert_eq!(max, config.message_max_bytes.0 + REQUEST_OVERHEAD);
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
        let e = properties(&config).expect_err("missing file").to_string();
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
        let e = client_config(&config)
            .expect_err("unknown property")
            .to_string();
        assert!(
            e.starts_with("sinks.kafka.properties.no.such.property: "),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");

        let mut config = KafkaSinkConfig::default();
        config
            .properties
            .insert("compression.codec".into(), Secret::new("s3cr3t-codec"));
        let e = client_config(&config).expect_err("bad value").to_string();
        assert!(
            e.starts_with("sinks.kafka.properties.compression.codec: "),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");

        // A combination librdkafka refuses only when making the client: the property its
        // text names is blamed, and short values are not redacted (the text stays readable).
        let mut config = KafkaSinkConfig::default();
        config.properties.insert("acks".into(), Secret::new("1"));
        let e = client_config(&config)
            .expect_err("idempotence needs acks=all")
            .to_string();
        assert!(e.starts_with("sinks.kafka.properties.acks: "), "{e}");
        assert!(!e.contains("***"), "{e}");
    }

    /// Errors of making the client name our key when librdkafka names the property it is
    /// set from, and `properties` only when it names one of them.
    #[test]
    fn client_errors_name_our_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot one\n").expect("write");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nnot one\n").expect("write");
        let mut config = KafkaSinkConfig::default();
        config.tls.enabled = true;
        config.tls.cert_file = Some(cert);
        config.tls.key_file = Some(key);
        config
            .properties
            .insert("client.id".into(), Secret::new("web-01"));
        let e = client_config(&config).expect_err("bad PEM").to_string();
        assert!(
            e.starts_with("sinks.kafka.tls.cert_file: ")
                || e.starts_with("sinks.kafka.tls.key_file: "),
            "{e}"
        );
    }

    /// The worker produces with `message.timeout.ms` 0: a linger above librdkafka's default
    /// message time-out (300 s) is fine.
    #[test]
    fn a_long_linger_is_accepted() {
        let mut config = KafkaSinkConfig::default();
        config.batch.linger = crate::config::HumanDuration(std::time::Duration::from_secs(600));
        client_config(&config).expect("linger 600s");
    }

    /// The check makes no connection to the brokers (it runs at every start and reload).
    #[test]
    fn the_check_does_not_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let config = KafkaSinkConfig {
            brokers: vec![listener.local_addr().expect("addr").to_string()],
            ..KafkaSinkConfig::default()
        };
        client_config(&config).expect("checks");
        std::thread::sleep(std::time::Duration::from_millis(500));
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the check connected: {other:?}"),
        }
    }

    /// Without the idempotent producer one request is in flight per connection (a retry
    /// cannot reorder a key's lines), unless `properties` say otherwise; `message.max.bytes`
    /// stays at `message_max_bytes` plus the overhead.
    #[test]
    fn ordering_and_request_size() {
        let config = KafkaSinkConfig {
            acks: KafkaAcks::Leader,
            idempotent: false,
            ..KafkaSinkConfig::default()
        };
        let c = client_config(&config).expect("not idempotent");
        assert_eq!(
            get(&c, "max.in.flight.requests.per.connection").as_deref(),
            Some("1")
        );
        let mut config = KafkaSinkConfig::default();
        let c = client_config(&config).expect("idempotent");
        assert_eq!(get(&c, "max.in.flight.requests.per.connection"), None);
        config
            .properties
            .insert("enable.idempotence".into(), Secret::new("f"));
        let c = properties(&config).expect("idempotence off by property");
        assert_eq!(
            get(&c, "max.in.flight.requests.per.connection").as_deref(),
            Some("1")
        );
        config.properties.insert(
            "max.in.flight.requests.per.connection".into(),
            Secret::new("3"),
        );
        let c = properties(&config).expect("override");
        assert_eq!(
            get(&c, "max.in.flight.requests.per.connection").as_deref(),
            Some("3")
        );

        // A batch larger than a message would be: capped, and the request limit is not
        // raised to hold it.
        let config = KafkaSinkConfig {
            message_max_bytes: crate::config::ByteSize(64 * 1024),
            batch: crate::config::KafkaBatchConfig {
                max_bytes: crate::config::ByteSize(4 * 1024 * 1024),
                ..Default::default()
            },
            ..KafkaSinkConfig::default()
        };
        let c = client_config(&config).expect("small messages");
        assert_eq!(get(&c, "batch.size"), Some((64 * 1024).to_string()));
        assert_eq!(
            get(&c, "message.max.bytes"),
            Some((64 * 1024 + REQUEST_OVERHEAD).to_string())
        );
    }
}
