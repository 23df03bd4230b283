//! `logfmt`: parses `key=value key2="quoted \" value" flag` (the message, or the field
//! `source`) and copies keys into the record's fields.
//!
//! - Pairs are separated by spaces (any byte ≤ 0x20). A key runs up to `=` or a space and
//!   cannot contain `"`; a value is either quoted (`"…"`, with `\"`, `\\`, `\n`, `\r`, `\t`
//!   unescaped; any other `\x` is kept as written) or runs up to the next space (it may
//!   contain `=` and `"`).
//! - A bare key (`flag`) and an empty value (`key=`) both give the empty string, as Loki's
//!   `| logfmt` and Alloy's `stage.logfmt` do.
//! - `fields` / `message` as for `json` (see `extract`): every key, or those listed; the
//!   `message` key's value replaces the record's message.
//! - A line with no `key=value` pair at all (prose, an empty line), a quote where a key
//!   should start, an unterminated quote, or a closing quote not followed by a space is not
//!   logfmt: it passes on unchanged and counts a parse failure; so does a missing `source`.
//! - Invalid UTF-8 in keys or values is replaced (U+FFFD).

use super::extract::{Extracted, ParseStage};
use crate::pipeline::LogLine;
use crate::processing::config::ParseConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::record::FieldValue;
use crate::processing::stage::{BuildError, StageContext, Verdict};

// Same shape as `JsonStage` (json.rs); kept apart: each stage type names its own parser.
#[derive(Clone, Debug)]
pub struct LogfmtStage(ParseStage);

impl LogfmtStage {
    pub fn build(config: &ParseConfig, metrics: &StageMetrics) -> Result<Self, BuildError> {
        Ok(LogfmtStage(ParseStage::new(config, metrics)))
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        self.0.apply(line, cx, parse)
    }
}

fn is_space(b: u8) -> bool {
    b <= b' '
}

/// Offers every pair of `s` to `out`; false if `s` is not logfmt (see the module comment).
fn parse(s: &[u8], out: &mut Extracted) -> bool {
    if !s.contains(&b'=') {
        return false;
    }
    let mut pairs = 0;
    let mut i = 0;
    loop {
        while i < s.len() && is_space(s[i]) {
            i += 1;
        }
        if i == s.len() {
            return pairs > 0;
        }
        let key_start = i;
        while i < s.len() && !is_space(s[i]) && s[i] != b'=' && s[i] != b'"' {
            i += 1;
        }
        if i == key_start {
            return false;
        }
        let key = String::from_utf8_lossy(&s[key_start..i]);
        let value: Value<'_> = if s.get(i) == Some(&b'=') {
            i += 1;
            pairs += 1;
            if s.get(i) == Some(&b'"') {
                let start = i + 1;
                let mut escaped = false;
                i = start;
                loop {
                    match s.get(i) {
                        None => return false,
                        Some(b'\\') => {
                            escaped = true;
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                let raw = &s[start..i];
                i += 1;
                if i < s.len() && !is_space(s[i]) {
                    return false;
                }
                Value::Quoted { raw, escaped }
            } else {
                let start = i;
                while i < s.len() && !is_space(s[i]) {
                    i += 1;
                }
                Value::Bare(&s[start..i])
            }
        } else {
            Value::Bare(b"")
        };
        let want = out.want(&key);
        if want.any() {
            out.put(want, FieldValue::Str(value.text()));
        }
    }
}

enum Value<'a> {
    Bare(&'a [u8]),
    /// Between the quotes; `escaped`: holds a backslash.
    Quoted {
        raw: &'a [u8],
        escaped: bool,
    },
}

impl Value<'_> {
    fn text(&self) -> String {
        match *self {
            Value::Bare(raw)
            | Value::Quoted {
                raw,
                escaped: false,
            } => String::from_utf8_lossy(raw).into_owned(),
            Value::Quoted { raw, escaped: true } => {
                let mut out = Vec::with_capacity(raw.len());
                let mut bytes = raw.iter();
                while let Some(&b) = bytes.next() {
                    if b != b'\\' {
                        out.push(b);
                        continue;
                    }
                    match bytes.next() {
                        Some(b'"') => out.push(b'"'),
                        Some(b'\\') => out.push(b'\\'),
                        Some(b'n') => out.push(b'\n'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b't') => out.push(b'\t'),
                        Some(&other) => out.extend_from_slice(&[b'\\', other]),
                        None => out.push(b'\\'),
                    }
                }
                match String::from_utf8(out) {
                    Ok(s) => s,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::tests::{build, line, run, text_fields};
    use proptest::prelude::*;

    fn stage(yaml: &str) -> (LogfmtStage, StageMetrics) {
        build(yaml, "logfmt[0]", LogfmtStage::build)
    }

    /// The fields as text (logfmt values are all text fields).
    fn fields(l: &LogLine) -> Vec<(String, String)> {
        let all_text = l
            .fields()
            .is_none_or(|f| f.iter().all(|(_, v)| matches!(v, FieldValue::Str(_))));
        assert!(all_text);
        text_fields(l)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_pairs_quotes_and_bare_keys() {
        let (mut st, m) = stage("{}");
        let l = run(
            |l, cx| st.apply(l, cx),
            line(
                r#"ts=2026-01-01T00:00:00Z level=info msg="quoted \" value\\ \n" flag empty= url=/a?b=c q=x"y  "#,
            ),
        );
        assert_eq!(
            fields(&l),
            pairs(&[
                ("ts", "2026-01-01T00:00:00Z"),
                ("level", "info"),
                ("msg", "quoted \" value\\ \n"),
                ("flag", ""),
                ("empty", ""),
                ("url", "/a?b=c"),
                ("q", "x\"y"),
            ])
        );
        assert_eq!(m.parse_failures.get(), 0);
    }

    #[test]
    fn listed_keys_and_message() {
        let (mut st, m) = stage("{fields: [level, caller], message: msg}");
        let l = run(
            |l, cx| st.apply(l, cx),
            line(r#"level=warn msg="disk \"low\"" caller=main.go:12 other=1"#),
        );
        assert_eq!(&l.message[..], b"disk \"low\"");
        assert_eq!(
            fields(&l),
            pairs(&[("level", "warn"), ("caller", "main.go:12")])
        );
        assert_eq!(m.parse_failures.get(), 0);
        // Without the message key the message stays.
        let l = run(|l, cx| st.apply(l, cx), line("level=info"));
        assert_eq!(&l.message[..], b"level=info");
    }

    #[test]
    fn not_logfmt_passes_unchanged_and_is_counted() {
        let (mut st, m) = stage("{}");
        let bad = [
            "",
            "   ",
            "just some words",
            "=value",
            "a=1 =2",
            r#"a=1 "quoted key"=2"#,
            r#"a="unterminated"#,
            r#"a="x"b c=d"#,
            r#"a="ends with backslash\"#,
        ];
        for (i, text) in bad.iter().enumerate() {
            let l = run(|l, cx| st.apply(l, cx), line(text));
            assert_eq!(&l.message[..], text.as_bytes());
            assert!(l.extra.is_none(), "{text}");
            assert_eq!(m.parse_failures.get(), i as u64 + 1, "{text}");
        }
    }

    #[test]
    fn parses_a_field_given_as_source_and_counts_a_missing_one() {
        let (mut st, m) = stage("{source: team}");
        // `team` is a container label field (see tests::cx_meta): `pay` has no pair.
        let l = run(|l, cx| st.apply(l, cx), line("x=1"));
        assert!(l.extra.is_none());
        assert_eq!(m.parse_failures.get(), 1);
        let (mut st, m) = stage("{source: nope}");
        run(|l, cx| st.apply(l, cx), line("x=1"));
        assert_eq!(m.parse_failures.get(), 1);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (mut st, _) = stage("{}");
        let mut l = line("");
        l.message = bytes::Bytes::from_static(b"k\xff=v\xfe q=\"\xff\\n\"");
        let l = run(|l, cx| st.apply(l, cx), l);
        assert_eq!(
            fields(&l),
            pairs(&[("k\u{fffd}", "v\u{fffd}"), ("q", "\u{fffd}\n")])
        );
    }

    fn quote(v: &str) -> String {
        let mut out = String::from("\"");
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                _ => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn generated_pairs_round_trip(
            kvs in proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_.:-]{0,8}", "[^\r\t]{0,12}", any::<bool>()), 1..8)
        ) {
            let (mut st, m) = stage("{}");
            let text: Vec<String> = kvs
                .iter()
                .map(|(k, v, quoted)| {
                    if *quoted || v.is_empty() || v.bytes().any(|b| b <= b' ' || b == b'"' || b == b'\\') {
                        format!("{k}={}", quote(v))
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            let l = run(|l, cx| st.apply(l, cx), line(&text.join(" ")));
            let mut expected: Vec<(String, String)> = Vec::new();
            for (k, v, _) in &kvs {
                match expected.iter_mut().find(|(ek, _)| ek == k) {
                    Some(slot) => slot.1 = v.clone(),
                    None => expected.push((k.clone(), v.clone())),
                }
            }
            prop_assert_eq!(fields(&l), expected);
            prop_assert_eq!(m.parse_failures.get(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (mut st, _) = stage("{}");
            let mut l = line("");
            l.message = bytes::Bytes::from(bytes.clone());
            let l = run(|l, cx| st.apply(l, cx), l);
            prop_assert_eq!(&l.message[..], &bytes[..]);
        }
    }
}
