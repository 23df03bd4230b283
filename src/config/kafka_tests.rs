//! `sinks.kafka` through `Config::parse`: every error names its key path, secrets stay hidden.

use super::Config;

fn kafka(body: &str) -> String {
    format!("sinks:\n  kafka:\n    brokers: [\"127.0.0.1:9092\"]\n{body}")
}

fn err(yaml: &str) -> String {
    match Config::parse(yaml, "test.yaml") {
        Ok(_) => panic!("expected an error for {yaml:?}"),
        Err(e) => e.to_string(),
    }
}

fn ok(yaml: &str) -> Config {
    Config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{yaml:?}: {e}"))
}

#[test]
fn defaults_are_the_safe_ones() {
    let c = ok(&kafka(""));
    let k = c.sinks.kafka.expect("kafka");
    assert_eq!(k.topic, "logs");
    assert_eq!(k.key, "{container_id}");
    assert_eq!(k.acks, super::KafkaAcks::All);
    assert!(k.idempotent);
    assert!(k.weakening_properties().is_empty());
}

#[test]
fn errors_name_the_key_path() {
    let cases: &[(&str, &str)] = &[
        ("    topic: \"\"\n", "sinks.kafka.topic"),
        ("    topic: \"logs/{stream}\"\n", "sinks.kafka.topic"),
        (
            "    topic: \"{nope}\"\n",
            "sinks.kafka.topic: unknown placeholder {nope}",
        ),
        (
            "    key: \"{nope}\"\n",
            "sinks.kafka.key: unknown placeholder {nope}",
        ),
        ("    key: \"{container_id\"\n", "sinks.kafka.key"),
        ("    acks: leader\n", "sinks.kafka.acks"),
        (
            "    message_max_bytes: 100\n",
            "sinks.kafka.message_max_bytes",
        ),
        (
            "    message_max_bytes: 1GiB\n",
            "sinks.kafka.message_max_bytes",
        ),
        (
            "    batch: {max_messages: 0}\n",
            "sinks.kafka.batch.max_messages",
        ),
        (
            "    batch: {max_bytes: 10}\n",
            "sinks.kafka.batch.max_bytes",
        ),
        ("    batch: {linger: 1h}\n", "sinks.kafka.batch.linger"),
        ("    timeout: 0s\n", "sinks.kafka.timeout"),
        ("    retry: {initial: 0s}\n", "sinks.kafka.retry.initial"),
        (
            "    sasl: {mechanism: PLAIN, username: \"\", password: x}\n",
            "sinks.kafka.sasl.username",
        ),
        (
            "    sasl: {mechanism: SCRAM-SHA-256, username: u, password: \"\"}\n",
            "sinks.kafka.sasl.password",
        ),
        ("    tls: {cert_file: /c.pem}\n", "sinks.kafka.tls"),
        ("    tls: {insecure_skip_verify: true}\n", "sinks.kafka.tls"),
        (
            "    properties: {delivery.report.only.error: \"true\"}\n",
            "sinks.kafka.properties.delivery.report.only.error: refused",
        ),
        (
            "    properties: {transactional.id: t1}\n",
            "sinks.kafka.properties.transactional.id: refused",
        ),
        ("    compression: brotli\n", "sinks.kafka.compression"),
        (
            "    properties: {delivery.report.only.error: \"1\"}\n",
            "sinks.kafka.properties.delivery.report.only.error: refused",
        ),
        (
            "    properties: {delivery.report.only.error: T}\n",
            "sinks.kafka.properties.delivery.report.only.error: refused",
        ),
        ("    topic: \".\"\n", "sinks.kafka.topic"),
        ("    topic: \"..\"\n", "sinks.kafka.topic"),
        ("    topic: \"__consumer_offsets\"\n", "sinks.kafka.topic"),
        ("    topic: \"__{container_name}\"\n", "sinks.kafka.topic"),
    ];
    for (body, want) in cases {
        let e = err(&kafka(body));
        assert!(e.contains(want), "{body:?}: {e}");
    }
    for (broker, i) in [("nohost", 0), ("h:0", 0), (":9092", 0), ("h:99999", 0)] {
        let e = err(&format!("sinks:\n  kafka:\n    brokers: [\"{broker}\"]\n"));
        assert!(e.contains(&format!("sinks.kafka.brokers[{i}]")), "{e}");
    }
    let e = err("sinks:\n  kafka:\n    brokers: [\"a:1\", \"b\"]\n");
    assert!(e.contains("sinks.kafka.brokers[1]"), "{e}");
    let e = err("sinks:\n  kafka:\n    brokers: []\n");
    assert!(e.contains("sinks.kafka.brokers"), "{e}");
    ok("sinks:\n  kafka:\n    brokers: [\"[::1]:9092\", \"kafka-0.example:19092\"]\n");
    ok(&kafka(
        "    topic: \"a__b.{container_name}\"\n    properties: {delivery.report.only.error: \"0\"}\n",
    ));
}

/// Topics and keys may use container fields, copied labels, file group fields, and (when a
/// pipeline may set them) processing fields.
#[test]
fn placeholders_follow_what_the_config_provides() {
    ok(&kafka(
        "    topic: \"logs.{compose_project}.{container_name}-{stream}\"\n    key: \"{host}/{file}/{level}\"\n",
    ));
    let labels = "processing:\n  container_labels: [\"team\"]\n";
    ok(&format!(
        "{}{labels}",
        kafka("    topic: \"logs-{team}\"\n")
    ));
    let files =
        "sources:\n  files:\n    - include: [/var/log/*.log]\n      fields: {job: syslog}\n";
    ok(&format!("{}{files}", kafka("    topic: \"logs-{job}\"\n")));
    let pipeline = "processing:\n  pipelines:\n    - name: p\n      stages:\n        - json: {}\n";
    ok(&format!(
        "{}{pipeline}",
        kafka("    topic: \"logs-{app}\"\n")
    ));
    let e = err(&kafka("    topic: \"logs-{app}\"\n"));
    assert!(
        e.contains("sinks.kafka.topic: unknown placeholder {app}"),
        "{e}"
    );
}

#[test]
fn weakening_properties_are_named() {
    let c = ok(&kafka(
        "    properties:\n      acks: \"1\"\n      enable.idempotence: \"false\"\n      \
         message.timeout.ms: \"30000\"\n      retries: \"3\"\n      \
         max.in.flight.requests.per.connection: \"10\"\n      enable.gapless.guarantee: \"true\"\n      \
         queue.buffering.max.messages: \"100\"\n      linger.ms: \"10\"\n      \
         delivery.report.only.error: \"false\"\n",
    ));
    let k = c.sinks.kafka.expect("kafka");
    let names: Vec<String> = k.weakening_properties().into_iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        [
            "acks",
            "enable.gapless.guarantee",
            "enable.idempotence",
            "max.in.flight.requests.per.connection",
            "message.timeout.ms",
            "queue.buffering.max.messages",
            "retries",
        ]
    );
    let c = ok(&kafka(
        "    properties: {acks: all, max.in.flight.requests.per.connection: \"5\"}\n",
    ));
    assert!(c.sinks.kafka.expect("k").weakening_properties().is_empty());
}

/// Booleans are read as librdkafka reads them (`t`/`1`, `f`/`0`, any case), and the
/// connection's security settings are warned about.
#[test]
fn weakening_properties_read_booleans_like_librdkafka() {
    let names = |body: &str| -> Vec<String> {
        let c = ok(&kafka(body));
        let k = c.sinks.kafka.expect("kafka");
        k.weakening_properties().into_iter().map(|p| p.0).collect()
    };
    assert_eq!(
        names(
            "    properties:\n      enable.idempotence: \"0\"\n      \
             enable.ssl.certificate.verification: F\n      enable.gapless.guarantee: \"1\"\n      \
             security.protocol: plaintext\n      ssl.endpoint.identification.algorithm: none\n",
        ),
        [
            "enable.gapless.guarantee",
            "enable.idempotence",
            "enable.ssl.certificate.verification",
            "security.protocol",
            "ssl.endpoint.identification.algorithm",
        ]
    );
    assert!(
        names(
            "    properties: {enable.idempotence: T, enable.gapless.guarantee: \"0\", acks: \"-1\"}\n"
        )
        .is_empty()
    );
    // Without the idempotent producer a second request in flight can reorder a key's lines.
    assert_eq!(
        names("    properties: {enable.idempotence: f, max.in.flight: \"2\"}\n"),
        ["enable.idempotence", "max.in.flight"]
    );
    assert_eq!(
        names(
            "    acks: leader\n    idempotent: false\n    properties: {max.in.flight: \"0x2\"}\n"
        ),
        ["max.in.flight"]
    );
    assert!(
        names("    acks: leader\n    idempotent: false\n    properties: {max.in.flight: \"1\"}\n")
            .is_empty()
    );

    let c = ok(&kafka(
        "    sasl: {mechanism: PLAIN, username: u, password: p}\n",
    ));
    let w = c.sinks.kafka.expect("kafka").security_warnings();
    assert!(
        w.len() == 1 && w[0].starts_with("sinks.kafka.sasl.mechanism: PLAIN"),
        "{w:?}"
    );
    let c = ok(&kafka(
        "    sasl: {mechanism: PLAIN, username: u, password: p}\n    tls: {enabled: true}\n",
    ));
    assert!(c.sinks.kafka.expect("kafka").security_warnings().is_empty());
}

/// Property values and the SASL password never show in Debug or the effective config.
#[test]
fn secrets_stay_hidden() {
    let c = ok(&kafka(
        "    sasl: {mechanism: SCRAM-SHA-512, username: agent, password: hunter2}\n    \
         properties: {sasl.oauthbearer.config: s3cr3t-token}\n",
    ));
    let debug = format!("{:?}", c.sinks.kafka);
    let effective = serde_json::to_string(&c.sinks).expect("serialize");
    for shown in [debug, effective] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("agent"), "{shown}");
    }
}

/// The commented-out Kafka sink of examples/config.yaml, uncommented, is valid and documents
/// every key of `sinks.kafka` (and of its nested sections).
#[test]
fn the_examples_kafka_section_is_valid_and_documents_every_key() {
    // Only the Kafka block: the keys of the sections after it must not count.
    let (block, yaml) = super::tests::example_sink("kafka");
    let c = ok(&yaml);
    let k = c.sinks.kafka.expect("kafka");
    assert_eq!(
        k,
        super::KafkaSinkConfig::default(),
        "the example shows the defaults"
    );
    let documented = |key: &str| block.contains(&format!("{key}:"));
    let value = serde_json::to_value(super::KafkaSinkConfig::default()).expect("json");
    let mut keys = vec![];
    for (name, v) in value.as_object().expect("object") {
        keys.push(name.clone());
        if let Some(nested) = v.as_object() {
            keys.extend(nested.keys().cloned());
        }
    }
    keys.extend(["sasl", "mechanism", "username", "password"].map(String::from));
    for key in keys {
        assert!(
            documented(&key),
            "examples/config.yaml does not document sinks.kafka {key}"
        );
    }
}
