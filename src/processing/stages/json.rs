//! `json`: parses the message (or the field `source`, found with
//! [`lookup`](crate::processing::lookup)) as a JSON object and copies top-level keys into the
//! record's fields.
//!
//! - `fields` empty: every top-level key, in the line's order (the first 256); else the
//!   keys listed, in the listed order (absent ones are skipped).
//! - A JSON string becomes a text field (unescaped); any other value (number, `true`,
//!   `null`, object, array) keeps its JSON text and is written back as JSON by the sinks.
//! - `message: KEY`: that key's value replaces the record's message (and is not also a
//!   field unless `fields` lists it). A line without the key keeps its message.
//! - A line that is not one JSON object (after optional spaces) passes on unchanged and is
//!   counted in `parse_failures`; so does a missing `source` field.
//!
//! Speed: no `serde_json::Value` per line. The top-level object is walked with a visitor
//! whose keys borrow from the line and whose values are `&RawValue` (the JSON text,
//! validated, not built); only kept values are copied out. A line not starting with `{`
//! is refused before the parser runs.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use super::extract::{Extracted, ParseStage};
use crate::pipeline::LogLine;
use crate::processing::config::ParseConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::record::FieldValue;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct JsonStage(ParseStage);

impl JsonStage {
    pub fn build(config: &ParseConfig, metrics: &StageMetrics) -> Result<Self, BuildError> {
        Ok(JsonStage(ParseStage::new(config, metrics)))
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        self.0.apply(line, cx, parse_object)
    }
}

/// Walks one JSON object, offering its keys to `out`; false if `text` is not exactly one
/// object (surrounding whitespace aside).
fn parse_object(text: &[u8], out: &mut Extracted) -> bool {
    let start = text.iter().position(|b| !b.is_ascii_whitespace());
    if start.is_none_or(|i| text[i] != b'{') {
        return false;
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    de.deserialize_map(ObjectVisitor { out }).is_ok() && de.end().is_ok()
}

struct ObjectVisitor<'o> {
    out: &'o mut Extracted,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let want = self.out.want(&key);
            if !want.any() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let raw: &'de RawValue = map.next_value()?;
            self.out
                .put(want, field_value(raw).map_err(de::Error::custom)?);
        }
        Ok(())
    }
}

/// A string as text (unescaped), anything else as its JSON text.
fn field_value(raw: &RawValue) -> Result<FieldValue, serde_json::Error> {
    let text = raw.get();
    Ok(
        match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) if !inner.contains('\\') => FieldValue::Str(inner.to_owned()),
            Some(_) => FieldValue::Str(serde_json::from_str(text)?),
            // The raw text is written back as is by the NDJSON sinks: a `\u` escape in it
            // (a lone surrogate, say) must be one a JSON reader takes. The lenient raw scan
            // does not check that; a full parse does (only when there is such an escape).
            None if text.contains("\\u") => {
                serde_json::from_str::<serde_json::Value>(text)?;
                FieldValue::Json(text.to_owned())
            }
            None => FieldValue::Json(text.to_owned()),
        },
    )
}

/// An object key, borrowed from the line unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::extract::MAX_KEYS;
    use super::*;
    use crate::processing::tests::{build, cx_meta, line, run};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn stage(yaml: &str) -> (JsonStage, StageMetrics) {
        build(yaml, "json[0]", JsonStage::build)
    }

    fn fields(l: &LogLine) -> Vec<(String, FieldValue)> {
        l.fields()
            .map(|f| f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::Str(v.to_string())
    }

    fn j(v: &str) -> FieldValue {
        FieldValue::Json(v.to_string())
    }

    /// Found in review: a lone surrogate inside an object value was kept as raw JSON the
    /// NDJSON sinks then wrote unreadable. Now the line fails to parse (counted, unchanged).
    #[test]
    fn raw_values_with_bad_unicode_escapes_fail_the_line() {
        let (mut st, m) = stage("{}");
        let bad = run(
            |l, cx| st.apply(l, cx),
            line(r#"{"o":{"k":"\ud800"},"a":"b"}"#),
        );
        assert!(bad.extra.is_none(), "{:?}", bad.extra);
        assert_eq!(m.parse_failures.get(), 1);
        let ok = run(|l, cx| st.apply(l, cx), line(r#"{"o":{"k":"\u00e9"}}"#));
        assert_eq!(fields(&ok), vec![("o".into(), j(r#"{"k":"\u00e9"}"#))]);
    }

    #[test]
    fn copies_every_top_level_key() {
        let (mut st, m) = stage("{}");
        let l = run(
            |l, cx| st.apply(l, cx),
            line(r#"  {"a":"x\"y","n":1.5,"b":true,"z":null,"o":{"k":[1,2]},"e":"é\u00e9"} "#),
        );
        assert_eq!(
            fields(&l),
            vec![
                ("a".into(), s("x\"y")),
                ("n".into(), j("1.5")),
                ("b".into(), j("true")),
                ("z".into(), j("null")),
                ("o".into(), j(r#"{"k":[1,2]}"#)),
                ("e".into(), s("éé")),
            ]
        );
        assert_eq!(m.parse_failures.get(), 0);
    }

    #[test]
    fn listed_keys_and_message() {
        let (mut st, m) = stage("{fields: [level, user, missing], message: msg}");
        let l = run(
            |l, cx| st.apply(l, cx),
            line(r#"{"ts":1,"level":"info","msg":"hello\nworld","user":{"id":7}}"#),
        );
        assert_eq!(&l.message[..], b"hello\nworld");
        assert_eq!(
            fields(&l),
            vec![
                ("level".into(), s("info")),
                ("user".into(), j(r#"{"id":7}"#))
            ]
        );
        assert_eq!(m.parse_failures.get(), 0);
    }

    #[test]
    fn all_keys_mode_keeps_the_first_max_keys() {
        let (mut st, m) = stage("{message: msg}");
        let keys: Vec<String> = (0..MAX_KEYS + 10)
            .map(|i| format!(r#""k{i}":{i}"#))
            .collect();
        let text = format!(r#"{{{},"msg":"last"}}"#, keys.join(","));
        let l = run(|l, cx| st.apply(l, cx), line(&text));
        let got = fields(&l);
        assert_eq!(got.len(), MAX_KEYS);
        assert_eq!(
            got[MAX_KEYS - 1],
            (format!("k{}", MAX_KEYS - 1), j(&(MAX_KEYS - 1).to_string()))
        );
        assert_eq!(&l.message[..], b"last");
        assert_eq!(m.parse_failures.get(), 0);
    }

    #[test]
    fn listed_keys_come_in_the_listed_order() {
        let (mut st, _) = stage("{fields: [b, a]}");
        for text in [r#"{"a":"1","b":"2","a":"3"}"#, r#"{"b":"2","a":"3"}"#] {
            let l = run(|l, cx| st.apply(l, cx), line(text));
            assert_eq!(fields(&l), vec![("b".into(), s("2")), ("a".into(), s("3"))]);
        }
    }

    #[test]
    fn message_key_is_a_field_only_when_listed() {
        let (mut st, _) = stage("{message: msg}");
        let l = run(|l, cx| st.apply(l, cx), line(r#"{"msg":"m","a":"b"}"#));
        assert_eq!(&l.message[..], b"m");
        assert_eq!(fields(&l), vec![("a".into(), s("b"))]);

        let (mut st, _) = stage("{message: msg, fields: [msg]}");
        let l = run(|l, cx| st.apply(l, cx), line(r#"{"msg":7,"a":"b"}"#));
        assert_eq!(&l.message[..], b"7");
        assert_eq!(fields(&l), vec![("msg".into(), j("7"))]);
    }

    #[test]
    fn escaped_keys_and_duplicates() {
        let (mut st, _) = stage("{}");
        let l = run(
            |l, cx| st.apply(l, cx),
            line(r#"{"a\u0062":"1","ab":"2","c":"3"}"#),
        );
        assert_eq!(
            fields(&l),
            vec![("ab".into(), s("2")), ("c".into(), s("3"))]
        );
    }

    #[test]
    fn non_objects_pass_unchanged_and_are_counted() {
        let (mut st, m) = stage("{message: msg}");
        let bad = [
            "plain text",
            "",
            "[1,2]",
            "\"str\"",
            r#"{"msg":"x""#,
            r#"{"msg":"x"} trailing"#,
            r#"{"msg":"x"}{"a":1}"#,
            r#"{"msg":"x",}"#,
            "{\"msg\":\"\u{1}\"}",
        ];
        for (i, text) in bad.iter().enumerate() {
            let l = run(|l, cx| st.apply(l, cx), line(text));
            assert_eq!(&l.message[..], text.as_bytes());
            assert!(l.extra.is_none(), "{text}");
            assert_eq!(m.parse_failures.get(), i as u64 + 1, "{text}");
        }
        let mut invalid = line("x");
        invalid.message = bytes::Bytes::from_static(b"{\"a\":\"\xff\"}");
        let l = run(|l, cx| st.apply(l, cx), invalid);
        assert!(l.extra.is_none());
        assert_eq!(m.parse_failures.get(), bad.len() as u64 + 1);
    }

    #[test]
    fn parses_a_field_given_as_source() {
        let (mut st_outer, m_outer) = stage("{fields: [payload]}");
        let (mut st, m) = stage("{source: payload, fields: [x]}");
        let (meta, now) = cx_meta();
        let cx = StageContext {
            container: &meta,
            now_ns: now,
        };
        let mut l = line(r#"{"payload":"{\"x\":\"inner\"}"}"#);
        st_outer.apply(&mut l, &cx);
        st.apply(&mut l, &cx);
        assert_eq!(
            fields(&l),
            vec![
                ("payload".into(), s(r#"{"x":"inner"}"#)),
                ("x".into(), s("inner"))
            ]
        );
        assert_eq!(
            (m_outer.parse_failures.get(), m.parse_failures.get()),
            (0, 0)
        );
        // No such field: a parse failure.
        let mut l = line("{}");
        st.apply(&mut l, &cx);
        assert_eq!(m.parse_failures.get(), 1);
    }

    #[test]
    fn a_failed_line_leaves_nothing_behind() {
        let (mut st, _) = stage("{}");
        let l = run(|l, cx| st.apply(l, cx), line(r#"{"a":"1","b":"#));
        assert!(l.extra.is_none());
        let l = run(|l, cx| st.apply(l, cx), line(r#"{"c":"3"}"#));
        assert_eq!(fields(&l), vec![("c".into(), s("3"))]);
    }

    proptest! {
        #[test]
        fn string_maps_round_trip(map in proptest::collection::btree_map(".{0,8}", ".{0,16}", 0..8)) {
            let (mut st, m) = stage("{}");
            let text = serde_json::to_string(&map).expect("serialise");
            let l = run(|l, cx| st.apply(l, cx), line(&text));
            let got: BTreeMap<String, String> = fields(&l)
                .into_iter()
                .map(|(k, v)| (k, v.as_str().to_string()))
                .collect();
            prop_assert_eq!(got, map);
            prop_assert_eq!(m.parse_failures.get(), 0);
            prop_assert!(fields(&l).iter().all(|(_, v)| matches!(v, FieldValue::Str(_))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (mut st, _) = stage("{}");
            let mut l = line("");
            l.message = bytes::Bytes::from(bytes.clone());
            let l = run(|l, cx| st.apply(l, cx), l);
            if l.extra.is_none() {
                prop_assert_eq!(&l.message[..], &bytes[..]);
            }
        }
    }
}
