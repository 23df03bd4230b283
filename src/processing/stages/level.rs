//! `level`: takes the level from a field, or finds it in the message, and normalises it to
//! trace, debug, info, warn, error or fatal.
//!
//! A spelling is resolved through `map` first (case-insensitive: `{ "30": info, crit: fatal }`)
//! and then the common spellings ([`Level::parse`]: `WARNING`, `err`, `E`, `notice`,
//! `critical` …).
//!
//! - `source: FIELD`: the field's value (surrounding spaces ignored) is the spelling. A
//!   record field of that name comes first (so `source: level` reads the `level` a json or
//!   logfmt stage extracted, not the record's level); else [`lookup`] (container fields …).
//! - No `source`: the level is found in the message, cheaply, in this order:
//!   1. a key: `level`, `lvl` or `severity` (also `Level`, `LEVEL`, `Severity`,
//!      `SEVERITY`) as a whole word, an optional `"`, `=` or `:`, then the word after it
//!      (`level=warn`, `"level":"warn"`, `severity: ERROR`, `level=[warn]`), within the first
//!      1024 bytes; the first such key whose value resolves wins;
//!   2. else a klog/glog header: the line starts with `I`, `W`, `E` or `F` and four digits
//!      (`E1201 06:12:55.123456 …`);
//!   3. else the first word within the first 64 bytes that is a level spelling and looks
//!      like a level marker: a word in brackets in any case (`[warn]`, `[E]`), an uppercase
//!      word of three letters or more (`ERROR`, `WARNING:`, `INF`), or a single uppercase
//!      letter between spaces (` E `, as logcat writes). Words are runs of letters bounded by
//!      anything but letters, digits and `_`; lowercase prose words (`error`) never count.
//! - Nothing found: the record gets `default` if set; else it is unchanged and counts a parse
//!   failure.
//!
//! `map` targets and `default` must be level spellings (config errors naming the key).

use prometheus_client::metrics::counter::Counter;
use regex::bytes::{CaptureLocations, Regex};

use crate::pipeline::LogLine;
use crate::processing::config::LevelConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::record::{Level, lookup};
use crate::processing::stage::{BuildError, StageContext, Verdict};

/// How far into the message a `level=` key is looked for.
const KEY_WINDOW: usize = 1024;
/// How far into the message a level word is looked for.
const WORD_WINDOW: usize = 64;

const KEY_PATTERN: &str = r#"(?-u:\b)(?:level|Level|LEVEL|lvl|severity|Severity|SEVERITY)"?[ \t]*[=:][ \t]*"?\[?([A-Za-z]+)(?-u:\b)"#;

#[derive(Clone, Debug)]
pub struct LevelStage {
    source: Option<String>,
    map: Vec<(String, Level)>,
    default: Option<Level>,
    key: Regex,
    locations: CaptureLocations,
    parse_failures: Counter,
}

const LEVELS: &str = "trace, debug, info, warn, error, fatal";

impl LevelStage {
    pub fn build(config: &LevelConfig, metrics: &StageMetrics) -> Result<Self, BuildError> {
        let mut map = Vec::with_capacity(config.map.len());
        for (spelling, target) in &config.map {
            let level = Level::parse(target).ok_or_else(|| {
                BuildError::at(
                    "map",
                    format!("`{spelling}`: `{target}` is not a level (one of {LEVELS})"),
                )
            })?;
            map.push((spelling.trim().to_string(), level));
        }
        let default = match &config.default {
            None => None,
            Some(d) => Some(Level::parse(d).ok_or_else(|| {
                BuildError::at("default", format!("`{d}` is not a level (one of {LEVELS})"))
            })?),
        };
        // A fixed pattern: cannot fail, but is no reason to panic either.
        let key = Regex::new(KEY_PATTERN)
            .map_err(|e| BuildError::at("", format!("internal pattern: {e}")))?;
        Ok(LevelStage {
            source: config.source.clone(),
            map,
            default,
            locations: key.capture_locations(),
            key,
            parse_failures: metrics.parse_failures.clone(),
        })
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        let found = match &self.source {
            // A field first: `lookup("level")` is the record's level (this stage's output),
            // while `source: level` after a json/logfmt stage means the parsed field.
            Some(name) => match line.fields().and_then(|f| f.get(name)) {
                Some(value) => self.resolve(value.as_str().trim()),
                None => lookup(line, cx.container, name).and_then(|v| self.resolve(v.trim())),
            },
            None => self.find(&line.message),
        };
        match found.or(self.default) {
            Some(level) => line.extra_mut().level = Some(level),
            None => {
                self.parse_failures.inc();
            }
        }
        Verdict::Pass
    }

    fn resolve(&self, spelling: &str) -> Option<Level> {
        self.map
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(spelling))
            .map(|(_, l)| *l)
            .or_else(|| Level::parse(spelling))
    }

    fn resolve_bytes(&self, word: &[u8]) -> Option<Level> {
        std::str::from_utf8(word).ok().and_then(|w| self.resolve(w))
    }

    /// The level the message shows (see the module comment), if any.
    fn find(&mut self, message: &[u8]) -> Option<Level> {
        let window = &message[..message.len().min(KEY_WINDOW)];
        let mut at = 0;
        while at < window.len() {
            let Some(m) = self.key.captures_read_at(&mut self.locations, window, at) else {
                break;
            };
            if let Some((s, e)) = self.locations.get(1)
                && let Some(level) = self.resolve_bytes(&window[s..e])
            {
                return Some(level);
            }
            at = m.end().max(m.start() + 1);
        }
        if let [first @ (b'I' | b'W' | b'E' | b'F'), d1, d2, d3, d4, ..] = message
            && [d1, d2, d3, d4].iter().all(|d| d.is_ascii_digit())
        {
            return self.resolve_bytes(std::slice::from_ref(first));
        }
        self.find_word(&message[..message.len().min(WORD_WINDOW)])
    }

    fn find_word(&self, text: &[u8]) -> Option<Level> {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut i = 0;
        while i < text.len() {
            if !is_word(text[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < text.len() && is_word(text[i]) {
                i += 1;
            }
            let word = &text[start..i];
            if !word.iter().all(u8::is_ascii_alphabetic) {
                continue;
            }
            let before = start.checked_sub(1).map(|b| text[b]);
            let after = text.get(i).copied();
            let bracketed = before == Some(b'[') && after == Some(b']');
            let upper = word.iter().all(u8::is_ascii_uppercase);
            let marker = bracketed
                || (upper && word.len() >= 3)
                || (upper && word.len() == 1 && before == Some(b' ') && after == Some(b' '));
            if marker && let Some(level) = self.resolve_bytes(word) {
                return Some(level);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::tests::{build, line, run};
    use proptest::prelude::*;

    fn stage(yaml: &str) -> (LevelStage, StageMetrics) {
        build(yaml, "level[0]", LevelStage::build)
    }

    fn level_of(st: &mut LevelStage, text: &str) -> Option<Level> {
        run(|l, cx| st.apply(l, cx), line(text)).level()
    }

    #[test]
    fn finds_the_level_in_messages() {
        use Level::*;
        let (mut st, m) = stage("{}");
        let cases: &[(&str, Option<Level>)] = &[
            (
                r#"{"ts":"2026-12-01T06:00:00Z","level":"warn","msg":"ERROR in x"}"#,
                Some(Warn),
            ),
            (r#"{"severity": "ERROR"}"#, Some(Error)),
            ("ts=1 level=debug msg=hi", Some(Debug)),
            ("time=1 lvl=INFO", Some(Info)),
            ("LEVEL: critical", Some(Fatal)),
            ("level=bogus but [warn] later", Some(Warn)),
            ("E1201 06:12:55.123456   1 main.go:10] boom", Some(Error)),
            ("I1201 06:12:55.123456   1 main.go:10] ok", Some(Info)),
            (
                "2026-12-01 06:00:00.000  INFO 1 --- [main] o.s.Boot : Started",
                Some(Info),
            ),
            (
                "2026/12/01 06:00:00 [error] 7#7: *1 open() failed",
                Some(Error),
            ),
            ("WARNING:root:disk low", Some(Warn)),
            ("12-01 06:00:00.000  1234  1234 E Tag: oops", Some(Error)),
            ("[main] ERR something", Some(Error)),
            ("[Note] InnoDB: started", None),
            ("an error happened, info follows", None),
            ("I think so", None),
            ("GET /index.html HTTP/1.1 200", None),
            ("ERROR_CODE=7 FOO", None),
            ("E12 short", None),
            ("", None),
            (&format!("{} ERROR late", "x".repeat(70)), None),
        ];
        let mut misses = 0;
        for (text, want) in cases {
            assert_eq!(level_of(&mut st, text), *want, "{text}");
            misses += u64::from(want.is_none());
        }
        assert_eq!(m.parse_failures.get(), misses);
    }

    #[test]
    fn map_and_default() {
        let (mut st, m) =
            stage(r#"{map: {note: info, "30": info, V: debug, E: fatal}, default: warn}"#);
        assert_eq!(level_of(&mut st, "[Note] started"), Some(Level::Info));
        assert_eq!(level_of(&mut st, "01-01 V Tag: x"), Some(Level::Debug));
        assert_eq!(level_of(&mut st, "x E y"), Some(Level::Fatal));
        assert_eq!(level_of(&mut st, "nothing here"), Some(Level::Warn));
        assert_eq!(m.parse_failures.get(), 0);
    }

    #[test]
    fn takes_the_level_from_a_field() {
        let (mut st, m) = stage(r#"{source: lvl, map: {"30": info}}"#);
        let with = |v: &str| {
            let mut l = line("level=error");
            l.extra_mut()
                .fields
                .set("lvl".into(), crate::processing::FieldValue::Json(v.into()));
            l
        };
        assert_eq!(
            run(|l, cx| st.apply(l, cx), with("30")).level(),
            Some(Level::Info)
        );
        assert_eq!(
            run(|l, cx| st.apply(l, cx), with(" Warning ")).level(),
            Some(Level::Warn)
        );
        assert_eq!(m.parse_failures.get(), 0);
        // Unknown spelling and missing field: unchanged (the message is not looked at), counted.
        assert_eq!(run(|l, cx| st.apply(l, cx), with("loud")).level(), None);
        assert_eq!(level_of(&mut st, "level=error"), None);
        assert_eq!(m.parse_failures.get(), 2);
    }

    #[test]
    fn source_level_reads_the_field_not_the_records_level() {
        let (mut st, m) = stage("{source: level}");
        let mut l = line("x");
        l.extra_mut().level = Some(Level::Debug);
        l.extra_mut().fields.set(
            "level".into(),
            crate::processing::FieldValue::Str("ERR".into()),
        );
        assert_eq!(run(|l, cx| st.apply(l, cx), l).level(), Some(Level::Error));
        assert_eq!(m.parse_failures.get(), 0);
    }

    #[test]
    fn bad_map_targets_and_defaults_name_their_key() {
        let metrics = StageMetrics::detached("p", "level[0]");
        let config: LevelConfig = serde_saphyr::from_str("{map: {crit: loud}}").expect("config");
        let e = LevelStage::build(&config, &metrics).expect_err("map");
        assert_eq!(e.key, "map");
        assert!(
            e.message.contains("`crit`: `loud` is not a level"),
            "{}",
            e.message
        );
        let config: LevelConfig = serde_saphyr::from_str("{default: loud}").expect("config");
        let e = LevelStage::build(&config, &metrics).expect_err("default");
        assert_eq!(e.key, "default");
        assert!(e.message.contains("`loud` is not a level"), "{}", e.message);
    }

    proptest! {
        #[test]
        fn level_names_round_trip(i in 0usize..6, upper in any::<bool>()) {
            let level = Level::ALL[i];
            let name = if upper { level.as_str().to_uppercase() } else { level.as_str().to_string() };
            prop_assert_eq!(Level::parse(&name), Some(level));
            let (mut st, _) = stage("{}");
            prop_assert_eq!(level_of(&mut st, &format!("level={name} msg=x")), Some(level));
            prop_assert_eq!(level_of(&mut st, &format!("x [{name}] y")), Some(level));
            prop_assert_eq!(level_of(&mut st, &format!("12:00 {} y", level.as_str().to_uppercase())), Some(level));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (mut st, _) = stage("{}");
            let mut l = line("");
            l.message = bytes::Bytes::from(bytes.clone());
            let l = run(|l, cx| st.apply(l, cx), l);
            prop_assert_eq!(&l.message[..], &bytes[..]);
        }
    }
}
