//! `regex`: the named captures of `expression` become fields.
//!
//! - `expression` is compiled once, at config load (`regex` crate syntax, matched against
//!   bytes; not anchored unless written with `^`). An invalid expression, or one without a
//!   named group (`(?P<name>…)` / `(?<name>…)`), is a config error.
//! - Matched against the message, or the field `source` (found with [`lookup`]).
//! - On a match, every named group that took part becomes a text field (invalid UTF-8
//!   replaced); groups that did not take part (an untaken alternative) are not set.
//! - No match (or no `source` field): the record passes on unchanged and counts a parse
//!   failure. That path allocates nothing: capture positions live in the stage.

use prometheus_client::metrics::counter::Counter;
use regex::bytes::{CaptureLocations, Regex};
use std::sync::Arc;

use crate::pipeline::LogLine;
use crate::processing::config::RegexConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::record::{FieldValue, lookup};
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct RegexStage {
    regex: Regex,
    source: Option<String>,
    /// (group index, field name) of every named group.
    names: Vec<(usize, Arc<str>)>,
    locations: CaptureLocations,
    pending: Vec<(Arc<str>, FieldValue)>,
    parse_failures: Counter,
}

impl RegexStage {
    pub fn build(config: &RegexConfig, metrics: &StageMetrics) -> Result<Self, BuildError> {
        if config.expression.is_empty() {
            return Err(BuildError::at(
                "expression",
                "required: a regular expression with named groups, e.g. `(?P<status>\\d{3})`",
            ));
        }
        let regex = Regex::new(&config.expression)
            .map_err(|e| BuildError::at("expression", format!("invalid regex: {e}")))?;
        let names: Vec<(usize, Arc<str>)> = regex
            .capture_names()
            .enumerate()
            .filter_map(|(i, name)| name.map(|n| (i, Arc::from(n))))
            .collect();
        if names.is_empty() {
            return Err(BuildError::at(
                "expression",
                "has no named group, so it would extract nothing: name the parts to keep, \
                 e.g. `(?P<status>\\d{3})`",
            ));
        }
        Ok(RegexStage {
            locations: regex.capture_locations(),
            regex,
            source: config.source.clone(),
            names,
            pending: Vec::new(),
            parse_failures: metrics.parse_failures.clone(),
        })
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        let matched = match &self.source {
            None => self.capture(&line.message),
            Some(name) => match lookup(line, cx.container, name) {
                Some(text) => self.capture(text.as_bytes()),
                None => false,
            },
        };
        if !matched {
            self.parse_failures.inc();
            return Verdict::Pass;
        }
        if !self.pending.is_empty() {
            let fields = &mut line.extra_mut().fields;
            for (name, value) in self.pending.drain(..) {
                fields.set(name, value);
            }
        }
        Verdict::Pass
    }

    /// Matches `haystack`; on a match the captured values wait in `pending`.
    fn capture(&mut self, haystack: &[u8]) -> bool {
        if self
            .regex
            .captures_read(&mut self.locations, haystack)
            .is_none()
        {
            return false;
        }
        for (group, name) in &self.names {
            if let Some((start, end)) = self.locations.get(*group) {
                let value = String::from_utf8_lossy(&haystack[start..end]).into_owned();
                self.pending
                    .push((Arc::clone(name), FieldValue::Str(value)));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::tests::{build, line, run, text_fields};
    use proptest::prelude::*;

    fn stage(yaml: &str) -> (RegexStage, StageMetrics) {
        build(yaml, "regex[0]", RegexStage::build)
    }

    const NGINX: &str = r#"expression: '^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+)[^"]*" (?P<status>\d{3})(?: (?P<bytes>\d+))?'"#;

    #[test]
    fn named_captures_become_fields() {
        let (mut st, m) = stage(NGINX);
        let l = run(
            |l, cx| st.apply(l, cx),
            line(r#"10.0.0.1 - - [01/Dec/2026:06:00:00 +0000] "GET /health HTTP/1.1" 200 17"#),
        );
        assert_eq!(
            text_fields(&l),
            vec![
                ("ip".into(), "10.0.0.1".into()),
                ("method".into(), "GET".into()),
                ("path".into(), "/health".into()),
                ("status".into(), "200".into()),
                ("bytes".into(), "17".into()),
            ]
        );
        // A group that did not take part sets nothing.
        let l = run(
            |l, cx| st.apply(l, cx),
            line(r#"10.0.0.1 - - [01/Dec/2026:06:00:00 +0000] "GET / HTTP/1.1" 304"#),
        );
        assert_eq!(text_fields(&l).len(), 4);
        assert!(l.fields().and_then(|f| f.get("bytes")).is_none());
        assert_eq!(m.parse_failures.get(), 0);
    }

    #[test]
    fn no_match_leaves_the_line_and_counts() {
        let (mut st, m) = stage(NGINX);
        for (i, text) in ["", "not an access log", "1.2.3.4 - - [x] \"get / \" 200"]
            .iter()
            .enumerate()
        {
            let l = run(|l, cx| st.apply(l, cx), line(text));
            assert!(l.extra.is_none());
            assert_eq!(&l.message[..], text.as_bytes());
            assert_eq!(m.parse_failures.get(), i as u64 + 1);
        }
    }

    #[test]
    fn matches_a_field_given_as_source() {
        let (mut st, m) = stage(r#"{expression: '^(?P<first>\w)', source: container_name}"#);
        let l = run(|l, cx| st.apply(l, cx), line("message"));
        assert_eq!(text_fields(&l), vec![("first".into(), "w".into())]);
        let (mut st, m2) = stage(r#"{expression: '(?P<x>.)', source: absent}"#);
        let l = run(|l, cx| st.apply(l, cx), line("message"));
        assert!(l.extra.is_none());
        assert_eq!((m.parse_failures.get(), m2.parse_failures.get()), (0, 1));
    }

    #[test]
    fn invalid_bytes_are_replaced() {
        let (mut st, _) = stage(r#"expression: '(?-u)v=(?P<v>\S+)'"#);
        let mut l = line("");
        l.message = bytes::Bytes::from_static(b"v=a\xffb");
        let l = run(|l, cx| st.apply(l, cx), l);
        assert_eq!(text_fields(&l), vec![("v".into(), "a\u{fffd}b".into())]);
    }

    #[test]
    fn bad_expressions_are_build_errors_at_expression() {
        let metrics = StageMetrics::detached("p", "regex[0]");
        for (expression, says) in [
            ("(unclosed", "invalid regex"),
            ("", "required"),
            (r"\d+ (plain)", "no named group"),
        ] {
            let config = RegexConfig {
                expression: expression.into(),
                source: None,
            };
            let e = RegexStage::build(&config, &metrics).expect_err(expression);
            assert_eq!(e.key, "expression");
            assert!(e.message.contains(says), "{expression}: {}", e.message);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_no_match_is_unchanged(
            bytes in proptest::collection::vec(any::<u8>(), 0..96)
        ) {
            let (mut st, m) = stage(r#"expression: '^(?P<a>\d+)-(?P<b>[a-z]*)$'"#);
            let mut l = line("");
            l.message = bytes::Bytes::from(bytes.clone());
            let l = run(|l, cx| st.apply(l, cx), l);
            prop_assert_eq!(&l.message[..], &bytes[..]);
            match l.fields() {
                None => prop_assert_eq!(m.parse_failures.get(), 1),
                Some(f) => {
                    prop_assert_eq!(m.parse_failures.get(), 0);
                    let joined = format!("{}-{}", f.get("a").map_or("", |v| v.as_str()), f.get("b").map_or("", |v| v.as_str()));
                    prop_assert_eq!(joined.as_bytes(), &bytes[..]);
                }
            }
        }
    }
}
