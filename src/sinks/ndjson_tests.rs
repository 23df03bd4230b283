//! Tests of the NDJSON encoder (`ndjson.rs`).

use super::*;
use crate::pipeline::StreamKind;
use crate::processing::Level;
use bytes::Bytes;

fn meta() -> ContainerMeta {
    ContainerMeta::new(
        "abc".into(),
        "web".into(),
        "img:1".into(),
        Some("proj".into()),
        None,
    )
}

fn line(msg: &'static [u8]) -> LogLine {
    LogLine {
        ts_ns: 1_795_909_748_780_644_778,
        stream: StreamKind::Stderr,
        message: Bytes::from_static(msg),
        truncated: false,
        extra: None,
    }
}

/// Asserts that `out` is exactly the record `want` (spelled out in full by each test) and
/// valid JSON.
#[track_caller]
fn assert_record(out: &[u8], want: &str) {
    assert_eq!(String::from_utf8_lossy(out), want);
    serde_json::from_slice::<serde_json::Value>(out).expect("valid JSON");
}

#[test]
fn encodes_valid_json() {
    let mut out = Vec::new();
    encode_line(
        &mut out,
        &meta(),
        &line(b"he said \"hi\"\t\\ \x01 \xff\xfe end"),
    );
    assert_eq!(out.last(), Some(&b'\n'));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(
        v["message"],
        "he said \"hi\"\t\\ \u{1} \u{FFFD}\u{FFFD} end"
    );
    assert_eq!(v["stream"], "stderr");
    assert_eq!(v["container_name"], "web");
    assert_eq!(v["compose_project"], "proj");
    assert_eq!(v["timestamp"], "2026-11-28T23:49:08.780644778Z");
    assert!(v.get("compose_service").is_none());
}

fn with_extras(mut l: LogLine) -> LogLine {
    let e = l.extra_mut();
    e.level = Some(Level::Warn);
    e.event_ns = Some(1_700_000_000_000_000_001);
    e.fields
        .set("team".into(), FieldValue::Str("checkout \"x\"".into()));
    e.fields.set("user".into(), FieldValue::Str("ann".into()));
    e.fields.set("n".into(), FieldValue::Json("42".into()));
    e.fields
        .set("obj".into(), FieldValue::Json(r#"{"a":[1,true]}"#.into()));
    e.joined_lines = 3;
    l
}

fn labelled_meta() -> ContainerMeta {
    meta().with_label_fields(vec![
        ("team".into(), "pay".into()),
        ("env".into(), "prod".into()),
    ])
}

const PLAIN: &str = concat!(
    r#"{"timestamp":"2026-11-28T23:49:08.780644778Z","container_id":"abc","#,
    r#""container_name":"web","image":"img:1","compose_project":"proj","#,
    r#""stream":"stderr","message":"hi"}"#,
    "\n"
);

/// No extras, no label fields: exactly today's record, whether `extra` is None or empty.
#[test]
fn record_without_extras_is_unchanged() {
    let mut out = Vec::new();
    encode_line(&mut out, &meta(), &line(b"hi"));
    assert_eq!(String::from_utf8_lossy(&out), PLAIN);
    let mut empty = line(b"hi");
    empty.extra_mut();
    let mut out2 = Vec::new();
    encode_line(&mut out2, &meta(), &empty);
    assert_eq!(out2, out);
}

#[test]
fn extras_follow_the_message_in_a_stable_order() {
    let mut l = with_extras(line(b"hi"));
    l.truncated = true;
    let mut out = Vec::new();
    encode_line(&mut out, &labelled_meta(), &l);
    let want = concat!(
        r#"{"timestamp":"2026-11-28T23:49:08.780644778Z","container_id":"abc","#,
        r#""container_name":"web","image":"img:1","compose_project":"proj","#,
        r#""stream":"stderr","message":"hi","level":"warn","#,
        r#""event_time":"2023-11-14T22:13:20.000000001Z","#,
        r#""fields":{"env":"prod","team":"checkout \"x\"","user":"ann","n":42,"obj":{"a":[1,true]}},"#,
        r#""joined_lines":3,"truncated":true}"#,
        "\n"
    );
    assert_record(&out, want);
}

#[test]
fn label_fields_alone_make_a_fields_object() {
    let mut out = Vec::new();
    encode_line(&mut out, &labelled_meta(), &line(b"hi"));
    let want = PLAIN.replace(
        r#""message":"hi"}"#,
        r#""message":"hi","fields":{"env":"prod","team":"pay"}}"#,
    );
    assert_eq!(String::from_utf8_lossy(&out), want);
}

#[test]
fn single_line_record_has_no_joined_lines_and_empty_json_stays_valid() {
    let mut l = line(b"hi");
    l.extra_mut().joined_lines = 1;
    l.extra_mut()
        .fields
        .set("e".into(), FieldValue::Json(" ".into()));
    let mut out = Vec::new();
    encode_line(&mut out, &meta(), &l);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert!(v.get("joined_lines").is_none());
    assert_eq!(v["fields"]["e"], "");
}

fn file_meta(fields: &[(&str, &str)]) -> ContainerMeta {
    ContainerMeta::for_file(
        "file-2049-131".into(),
        "/var/log/app \"x\".log".into(),
        "node-1".into(),
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// `l` encoded as a line of a file whose group has the fields `job: syslog` and `env: prod`.
fn encoded_in_group(l: &LogLine) -> Vec<u8> {
    let mut out = Vec::new();
    encode_line(
        &mut out,
        &file_meta(&[("job", "syslog"), ("env", "prod")]),
        l,
    );
    out
}

fn file_line(msg: &'static [u8]) -> LogLine {
    LogLine {
        stream: StreamKind::Stdout,
        ..line(msg)
    }
}

/// A host file's record: `file` and `host` in place of the container's fields, no
/// `stream`, the group's fields in `fields`.
#[test]
fn a_file_record_has_file_and_host_and_no_stream() {
    let mut out = Vec::new();
    encode_line(&mut out, &file_meta(&[]), &file_line(b"hi"));
    let want = concat!(
        r#"{"timestamp":"2026-11-28T23:49:08.780644778Z","file":"/var/log/app \"x\".log","#,
        r#""host":"node-1","message":"hi"}"#,
        "\n"
    );
    assert_eq!(String::from_utf8_lossy(&out), want);
    let mut l = file_line(b"hi");
    l.truncated = true;
    let out = encoded_in_group(&l);
    let want = concat!(
        r#"{"timestamp":"2026-11-28T23:49:08.780644778Z","file":"/var/log/app \"x\".log","#,
        r#""host":"node-1","message":"hi","fields":{"env":"prod","job":"syslog"},"#,
        r#""truncated":true}"#,
        "\n"
    );
    assert_eq!(String::from_utf8_lossy(&out), want);
}

/// With extras: the event time a stage set is the file record's `timestamp` (no
/// `event_time` key); group fields first, then the record's, a record field replacing a
/// group field of its name.
#[test]
fn a_file_record_takes_the_event_time_and_orders_its_fields() {
    let mut l = with_extras(file_line(b"hi"));
    l.extra_mut()
        .fields
        .set("job".into(), FieldValue::Str("override".into()));
    let out = encoded_in_group(&l);
    let want = concat!(
        r#"{"timestamp":"2023-11-14T22:13:20.000000001Z","file":"/var/log/app \"x\".log","#,
        r#""host":"node-1","message":"hi","level":"warn","#,
        r#""fields":{"env":"prod","team":"checkout \"x\"","user":"ann","n":42,"obj":{"a":[1,true]},"job":"override"},"#,
        r#""joined_lines":3}"#,
        "\n"
    );
    assert_record(&out, want);
}

/// The same line of a container keeps its `stream` and Docker's time in `timestamp`.
#[test]
fn a_container_record_with_an_event_time_is_unchanged() {
    let mut out = Vec::new();
    encode_line(&mut out, &meta(), &with_extras(line(b"hi")));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(v["timestamp"], "2026-11-28T23:49:08.780644778Z");
    assert_eq!(v["event_time"], "2023-11-14T22:13:20.000000001Z");
    assert_eq!(v["stream"], "stderr");
}

/// A JSON object's members in document order (serde_json's own map sorts them).
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(serde::Deserialize)]
struct FieldsOf {
    fields: Option<Ordered<serde_json::Value>>,
}

fn json_value() -> impl proptest::strategy::Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_string()),
        (-1e6f64..1e6).prop_map(|f| serde_json::json!(f).to_string()),
        proptest::collection::vec(any::<String>(), 0..3)
            .prop_map(|v| serde_json::json!({ "list": v }).to_string()),
    ]
}

use proptest::prelude::*;

proptest::proptest! {
    /// Any names and values (quotes, control characters, unicode, raw JSON) give a valid
    /// record whose `fields` parse back to the label fields not overridden, then the
    /// record's fields, in order, with the same values.
    #[test]
    fn any_fields_give_valid_json_in_order(
        labels in proptest::collection::btree_map(".{0,8}", ".{0,12}", 0..4),
        fields in proptest::collection::vec(
            (".{0,8}", proptest::prop_oneof![
                ".{0,16}".prop_map(FieldValue::Str),
                json_value().prop_map(FieldValue::Json),
            ]),
            0..6,
        ),
    ) {
        let m = meta().with_label_fields(labels.into_iter().collect());
        let mut l = line(b"m");
        for (k, v) in fields {
            l.extra_mut().fields.set(k.as_str().into(), v);
        }
        let mut out = Vec::new();
        encode_line(&mut out, &m, &l);
        serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON");
        let parsed: FieldsOf = serde_json::from_slice(&out).expect("valid JSON");
        let mut want: Vec<(String, serde_json::Value)> = Vec::new();
        let record = l.fields().cloned().unwrap_or_default();
        for (k, v) in &m.label_fields {
            if record.get(k).is_none() {
                want.push((k.clone(), serde_json::Value::String(v.clone())));
            }
        }
        for (k, v) in record.iter() {
            let value = match v {
                FieldValue::Str(s) => serde_json::Value::String(s.clone()),
                FieldValue::Json(raw) => serde_json::from_str(raw).expect("generated JSON"),
            };
            want.push((k.to_string(), value));
        }
        let got = parsed.fields.map(|o| o.0).unwrap_or_default();
        prop_assert_eq!(got, want);
    }
}

proptest::proptest! {
    #[test]
    fn any_bytes_give_valid_json(msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let mut out = Vec::new();
        let mut l = line(b"");
        l.message = Bytes::from(msg.clone());
        encode_line(&mut out, &meta(), &l);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        proptest::prop_assert_eq!(v["message"].as_str().map(str::to_string), Some(String::from_utf8_lossy(&msg).into_owned()));
    }
}
