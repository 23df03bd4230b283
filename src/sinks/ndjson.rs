//! NDJSON encoding of a record, written straight into the sink's buffer (no per-line
//! allocation). Invalid UTF-8 in a message is replaced with U+FFFD, never dropped.
//!
//! Keys, in this order (the optional ones only when they apply):
//!
//! ```text
//! {"timestamp":"<Docker's time>","container_id":…,"container_name":…,"image":…,
//!  ["compose_project":…,]["compose_service":…,]"stream":…,"message":…,
//!  ["level":"warn",]["event_time":"<event time>",]["fields":{…},]["joined_lines":N,]
//!  ["truncated":true]}
//! ```
//!
//! `timestamp` is always Docker's time (the resume cursor, the same meaning in every record);
//! a `timestamp` stage's event time goes in `event_time`. `fields` holds the container labels
//! copied by `processing.container_labels` (sorted by key), then the record's fields in the
//! order they were set; a record field named like a label field replaces it (the key appears
//! once, at the record field's place). A record without extras from a container without label
//! fields encodes exactly as before processing existed.
//!
//! A host file's record ([`ContainerMeta::for_file`]) has `file` (its path) and `host` in
//! place of the container's fields, and no `stream` (a file has no stdout/stderr):
//!
//! ```text
//! {"timestamp":"<read or event time>","file":…,"host":…,"message":…,["level":"warn",]
//!  ["fields":{…},]["joined_lines":N,]["truncated":true]}
//! ```
//!
//! Its `timestamp` is the time the line was read, or the event time when a `timestamp` stage
//! set one (then there is no `event_time` key): a file resumes from a byte position, so its
//! timestamp is no cursor and can carry the better time. `fields` as for a container: the
//! group's `fields` (sorted by key), then the record's.

use std::io::Write as _;

use crate::docker::timestamp::write_rfc3339_nanos;
use crate::pipeline::{ContainerMeta, LogLine};
use crate::processing::FieldValue;

/// Appends one record and its newline to `out`. The container's fields come pre-encoded
/// (see [`ContainerMeta::ndjson_fields`]); the timestamp is formatted and the message escaped here.
pub fn encode_line(out: &mut Vec<u8>, meta: &ContainerMeta, line: &LogLine) {
    let file = meta.is_file();
    out.extend_from_slice(b"{\"timestamp\":\"");
    // A host file's position is a byte offset, not a time: its `timestamp` is free to be the
    // event time (see the module doc).
    write_rfc3339_nanos(out, if file { line.display_ns() } else { line.ts_ns });
    out.extend_from_slice(b"\",");
    out.extend_from_slice(meta.ndjson_fields());
    if !file {
        // A host file has no stdout/stderr: its records have no `stream`.
        out.extend_from_slice(b"\"stream\":\"");
        out.extend_from_slice(line.stream.as_str().as_bytes());
        out.extend_from_slice(b"\",");
    }
    out.extend_from_slice(b"\"message\":\"");
    escape_into(out, &line.message);
    out.push(b'"');
    if line.extra.is_some() || !meta.label_fields.is_empty() {
        encode_extras(out, meta, line);
    }
    if line.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.extend_from_slice(b"}\n");
}

/// What processing added: `level`, `event_time`, `fields`, `joined_lines`. Kept out of line
/// so that the common record (no extras) stays a short straight path.
#[inline(never)]
fn encode_extras(out: &mut Vec<u8>, meta: &ContainerMeta, line: &LogLine) {
    let extra = line.extra.as_deref();
    if let Some(level) = extra.and_then(|e| e.level) {
        out.extend_from_slice(b",\"level\":\"");
        out.extend_from_slice(level.as_str().as_bytes());
        out.push(b'"');
    }
    if let Some(ns) = extra.and_then(|e| e.event_ns).filter(|_| !meta.is_file()) {
        out.extend_from_slice(b",\"event_time\":\"");
        write_rfc3339_nanos(out, ns);
        out.push(b'"');
    }
    let fields = extra.map(|e| &e.fields).filter(|f| !f.is_empty());
    if fields.is_some() || !meta.label_fields.is_empty() {
        out.extend_from_slice(b",\"fields\":{");
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            escape_into(out, name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        for (name, value) in &meta.label_fields {
            // A record field of the same name wins; it is written below, in its place.
            if fields.is_some_and(|f| f.get(name).is_some()) {
                continue;
            }
            key(out, name);
            string_into(out, value);
        }
        for (name, value) in fields.iter().flat_map(|f| f.iter()) {
            key(out, name);
            match value {
                FieldValue::Str(s) => string_into(out, s),
                // Raw JSON from a parsed line (number, bool, object …), written back as is.
                // Empty is not JSON: written as an empty string so the record stays valid.
                FieldValue::Json(raw) if !raw.trim().is_empty() => {
                    out.extend_from_slice(raw.as_bytes())
                }
                FieldValue::Json(_) => out.extend_from_slice(b"\"\""),
            }
        }
        out.push(b'}');
    }
    if let Some(n) = extra.map(|e| e.joined_lines).filter(|&n| n > 1) {
        // Writing into a Vec cannot fail.
        let _ = write!(out, ",\"joined_lines\":{n}");
    }
}

fn string_into(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s.as_bytes());
    out.push(b'"');
}

/// The per-container part of every record, encoded once per container.
pub fn encode_container_fields(meta: &ContainerMeta) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |name: &str, value: &str| {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":\"");
        escape_into(&mut out, value.as_bytes());
        out.extend_from_slice(b"\",");
    };
    if let crate::pipeline::SourceKind::File { host } = &meta.kind {
        // A host file's record: `file` and `host` instead of the container's fields.
        field("file", &meta.name);
        field("host", host);
        return out;
    }
    field("container_id", &meta.id);
    field("container_name", &meta.name);
    field("image", &meta.image);
    if let Some(project) = &meta.compose_project {
        field("compose_project", project);
    }
    if let Some(service) = &meta.compose_service {
        field("compose_service", service);
    }
    out
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether 8 bytes hold anything but plain printable ASCII other than `"` and `\\` (SWAR: a
/// few instructions per 8 bytes). False positives only send bytes to the careful path.
#[inline]
fn needs_care(chunk: u64) -> bool {
    let control = chunk.wrapping_sub(ONES * 0x20) & !chunk;
    let quote = {
        let x = chunk ^ (ONES * u64::from(b'"'));
        x.wrapping_sub(ONES) & !x
    };
    let backslash = {
        let x = chunk ^ (ONES * u64::from(b'\\'));
        x.wrapping_sub(ONES) & !x
    };
    ((control | quote | backslash) & HIGH) | (chunk & HIGH) != 0
}

#[inline]
fn plain(b: u8) -> bool {
    (0x20..0x80).contains(&b) && b != b'"' && b != b'\\'
}

/// JSON string escaping of (possibly invalid) UTF-8. Plain ASCII, by far the common case, is
/// found 8 bytes at a time and copied in one go.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        if needs_care(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && plain(bytes[i]) {
        i += 1;
    }
    out.extend_from_slice(&bytes[..i]);
    if i < bytes.len() {
        // Everything before `i` is ASCII, so `i` starts a character.
        escape_careful(out, &bytes[i..]);
    }
}

fn escape_careful(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                escape_str(out, valid);
                return;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // `valid_up_to` guarantees this prefix is UTF-8.
                escape_str(out, std::str::from_utf8(valid).unwrap_or_default());
                out.extend_from_slice("\u{FFFD}".as_bytes());
                let skip = e.error_len().unwrap_or(after.len()).max(1);
                rest = &after[skip.min(after.len())..];
                if rest.is_empty() {
                    return;
                }
            }
        }
    }
}

fn escape_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn fast_and_careful_paths_agree() {
        for b in 0u8..=255 {
            for pos in 0..12 {
                let mut text = vec![b'a'; 12];
                text[pos] = b;
                let mut fast = Vec::new();
                escape_into(&mut fast, &text);
                let mut careful = Vec::new();
                escape_careful(&mut careful, &text);
                assert_eq!(fast, careful, "byte {b:#x} at {pos}");
            }
        }
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
        assert_eq!(String::from_utf8_lossy(&out), want);
        serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON");
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
        let mut out = Vec::new();
        let mut l = file_line(b"hi");
        l.truncated = true;
        encode_line(
            &mut out,
            &file_meta(&[("job", "syslog"), ("env", "prod")]),
            &l,
        );
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
        let mut out = Vec::new();
        encode_line(
            &mut out,
            &file_meta(&[("job", "syslog"), ("env", "prod")]),
            &l,
        );
        let want = concat!(
            r#"{"timestamp":"2023-11-14T22:13:20.000000001Z","file":"/var/log/app \"x\".log","#,
            r#""host":"node-1","message":"hi","level":"warn","#,
            r#""fields":{"env":"prod","team":"checkout \"x\"","user":"ann","n":42,"obj":{"a":[1,true]},"job":"override"},"#,
            r#""joined_lines":3}"#,
            "\n"
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
        serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON");
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
}
