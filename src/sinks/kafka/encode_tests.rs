use super::*;
use crate::config::kafka_template::{MAX_TOPIC, topic_char};
use crate::pipeline::StreamKind;
use crate::processing::{FieldValue, Level};
use bytes::Bytes;

fn meta() -> ContainerMeta {
    ContainerMeta::new(
        "abc123".into(),
        "web".into(),
        "img:1".into(),
        Some("shop".into()),
        None,
    )
    .with_label_fields(vec![("team".into(), "pay".into())])
}

fn line(msg: &'static [u8], stream: StreamKind) -> LogLine {
    LogLine {
        ts_ns: 1_795_909_748_780_644_778,
        stream,
        message: Bytes::from_static(msg),
        truncated: false,
        extra: None,
    }
}

fn batch(meta: ContainerMeta, lines: Vec<LogLine>) -> Batch {
    Batch {
        container: Arc::new(meta),
        lines,
        position: crate::capture::Cursor::default().into(),
    }
}

fn encoder(topic: &str, key: &str, encoding: KafkaEncoding) -> MessageEncoder {
    let config = KafkaSinkConfig {
        topic: topic.into(),
        key: key.into(),
        encoding,
        ..KafkaSinkConfig::default()
    };
    MessageEncoder::new(&config).expect("encoder")
}

fn encode(e: &MessageEncoder, b: &Batch) -> Vec<Message> {
    let mut out = Vec::new();
    e.encode(b, &mut out);
    out
}

fn key(m: &Message) -> Option<&str> {
    m.key
        .as_deref()
        .map(|k| std::str::from_utf8(k).expect("utf8"))
}

/// The value is exactly the file sink's NDJSON record without its newline; raw is the line.
#[test]
fn values_are_the_ndjson_record_or_the_raw_line() {
    let b = batch(meta(), vec![line(b"hi \"x\"", StreamKind::Stderr)]);
    let e = encoder("logs", "{container_id}", KafkaEncoding::Ndjson);
    let m = encode(&e, &b);
    let mut ndjson = Vec::new();
    crate::sinks::ndjson::encode_line(&mut ndjson, &b.container, &b.lines[0]);
    assert_eq!(ndjson.pop(), Some(b'\n'));
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].value, ndjson);
    assert_eq!(&*m[0].topic, "logs");
    assert_eq!(key(&m[0]), Some("abc123"));
    let raw = encode(&encoder("logs", "", KafkaEncoding::Raw), &b);
    assert_eq!(raw[0].value, b"hi \"x\"");
    assert_eq!(raw[0].key, None);
}

#[test]
fn placeholders_render_container_fields_and_missing_ones_as_unknown() {
    let b = batch(
        meta(),
        vec![
            line(b"a", StreamKind::Stdout),
            line(b"b", StreamKind::Stderr),
        ],
    );
    let e = encoder(
        "{compose_project}.{container_name}.{stream}.{compose_service}",
        "{image}/{team}/{file}/{host}",
        KafkaEncoding::Raw,
    );
    let m = encode(&e, &b);
    assert_eq!(&*m[0].topic, "shop.web.stdout.unknown");
    assert_eq!(&*m[1].topic, "shop.web.stderr.unknown");
    let host = crate::sinks::loki::encode::this_hostname();
    assert_eq!(
        key(&m[0]),
        Some(format!("img:1/pay/unknown/{host}").as_str())
    );
}

/// Characters Kafka refuses become `_`; too long topics are cut.
#[test]
fn rendered_topics_are_legal() {
    let mut m = meta();
    m = m.renamed("my app/ä:1".into());
    let b = batch(m, vec![line(b"a", StreamKind::Stdout)]);
    let out = encode(
        &encoder("logs-{container_name}", "", KafkaEncoding::Raw),
        &b,
    );
    assert_eq!(&*out[0].topic, "logs-my_app___1");
    let long = meta().renamed("x".repeat(400));
    let b = batch(long, vec![line(b"a", StreamKind::Stdout)]);
    let out = encode(
        &encoder("{container_name}", "{container_name}", KafkaEncoding::Raw),
        &b,
    );
    assert_eq!(out[0].topic.len(), MAX_TOPIC);
    // Keys are not topics: kept whole.
    assert_eq!(out[0].key.as_ref().map(|k| k.len()), Some(400));
}

/// Host-file records: `file` and `host` are the file's, container fields are unknown.
#[test]
fn host_file_records_have_file_and_host() {
    let m = ContainerMeta::for_file(
        "file-1-2".into(),
        "/var/log/syslog".into(),
        "node-1".into(),
        vec![("job".into(), "sys".into())],
    );
    let b = batch(m, vec![line(b"a", StreamKind::Stdout)]);
    let e = encoder(
        "{host}.{job}.{container_name}.{stream}",
        "{file}",
        KafkaEncoding::Raw,
    );
    let out = encode(&e, &b);
    assert_eq!(&*out[0].topic, "node-1.sys.unknown.unknown");
    assert_eq!(key(&out[0]), Some("/var/log/syslog"));
}

/// The default key (`{container_id}`) gives each host file of each host its own key (one
/// partition and order per file), not one shared `unknown`.
#[test]
fn host_files_get_one_default_key_per_host_and_path() {
    let e = encoder("logs", "{container_id}", KafkaEncoding::Ndjson);
    let mut keys = Vec::new();
    for (host, path) in [
        ("node-1", "/var/log/a.log"),
        ("node-1", "/var/log/b.log"),
        ("node-2", "/var/log/a.log"),
    ] {
        let m = ContainerMeta::for_file("file-1-2".into(), path.into(), host.into(), vec![]);
        let out = encode(&e, &batch(m, vec![line(b"a", StreamKind::Stdout)]));
        keys.push(key(&out[0]).map(str::to_string));
    }
    assert_eq!(
        keys,
        [
            Some("node-1:/var/log/a.log".to_string()),
            Some("node-1:/var/log/b.log".to_string()),
            Some("node-2:/var/log/a.log".to_string()),
        ]
    );
}

/// Processing fields and the level are per record; they override copied labels.
#[test]
fn processing_fields_and_level_are_per_record() {
    let mut with = line(b"a", StreamKind::Stdout);
    let x = with.extra_mut();
    x.level = Some(Level::Warn);
    x.fields.set("team".into(), FieldValue::Str("ops".into()));
    let b = batch(
        meta(),
        vec![
            line(b"p", StreamKind::Stdout),
            with,
            line(b"q", StreamKind::Stdout),
        ],
    );
    let e = encoder("logs-{team}-{level}", "{app}", KafkaEncoding::Raw);
    let out = encode(&e, &b);
    let topics: Vec<&str> = out.iter().map(|m| &*m.topic).collect();
    assert_eq!(
        topics,
        ["logs-pay-unknown", "logs-ops-warn", "logs-pay-unknown"]
    );
    assert_eq!(key(&out[1]), Some("unknown"));
}

/// Lines of one container share one topic and key allocation, across batches too; another
/// container (or the same one renamed) gets its own.
#[test]
fn topic_and_key_are_shared_per_container() {
    let e = encoder(
        "logs-{container_name}",
        "{container_id}",
        KafkaEncoding::Raw,
    );
    let container = Arc::new(meta());
    let b1 = Batch {
        container: Arc::clone(&container),
        lines: vec![
            line(b"a", StreamKind::Stdout),
            line(b"b", StreamKind::Stderr),
        ],
        position: crate::capture::Cursor::default().into(),
    };
    let b2 = Batch {
        container: Arc::clone(&container),
        lines: vec![line(b"c", StreamKind::Stdout)],
        position: crate::capture::Cursor::default().into(),
    };
    let (m1, m2) = (encode(&e, &b1), encode(&e, &b2));
    assert!(Arc::ptr_eq(&m1[0].topic, &m1[1].topic));
    assert!(Arc::ptr_eq(&m1[0].topic, &m2[0].topic));
    let (k1, k2) = (
        m1[0].key.as_ref().expect("key"),
        m2[0].key.as_ref().expect("key"),
    );
    assert!(Arc::ptr_eq(k1, k2));
    let renamed = batch(
        container.renamed("api".into()),
        vec![line(b"d", StreamKind::Stdout)],
    );
    assert_eq!(&*encode(&e, &renamed)[0].topic, "logs-api");
    assert_eq!(&*encode(&e, &b2)[0].topic, "logs-web");
}

#[test]
fn bad_templates_are_refused() {
    for (topic, k) in [("logs-{", ""), ("logs", "{a")] {
        let config = KafkaSinkConfig {
            topic: topic.into(),
            key: k.into(),
            ..KafkaSinkConfig::default()
        };
        assert!(MessageEncoder::new(&config).is_err(), "{topic} {k}");
    }
}

proptest::proptest! {
    /// Whatever a container is called and whatever the template's fields hold, the topic is
    /// one Kafka accepts: 1..=249 characters of [a-zA-Z0-9._-], not `.` or `..`.
    #[test]
    fn any_rendered_topic_is_a_legal_topic_name(
        name in "\\PC{0,300}",
        project in proptest::option::of("\\PC{0,80}"),
        field in "\\PC{0,40}",
        literal in "[a-zA-Z0-9._-]{0,20}",
    ) {
        let m = ContainerMeta::new("id".into(), name, "i".into(), project, None);
        let mut l = line(b"x", StreamKind::Stdout);
        l.extra_mut().fields.set("app".into(), FieldValue::Str(field));
        let b = batch(m, vec![l, line(b"y", StreamKind::Tty)]);
        for template in [
            format!("{literal}{{container_name}}"),
            format!("{{compose_project}}{literal}{{app}}"),
            "{container_name}".to_string(),
            ".".to_string(),
        ] {
            let e = encoder(&template, "", KafkaEncoding::Raw);
            for m in encode(&e, &b) {
                let t = &*m.topic;
                proptest::prop_assert!(!t.is_empty() && t.len() <= MAX_TOPIC, "{t:?}");
                proptest::prop_assert!(t.chars().all(topic_char), "{t:?}");
                proptest::prop_assert!(t != "." && t != "..", "{t:?}");
            }
        }
    }
}
