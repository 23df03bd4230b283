//! `drop` and `keep`: by regex on the message or a field, and by level.
//!
//! A record *matches* when every condition the stage gives holds:
//! - `expression` (a `regex` crate pattern, compiled once at load; unanchored: it matches
//!   anywhere in the text unless written with `^`/`$`) matches the message — the raw bytes,
//!   so invalid UTF-8 never stops a match — or, with `source`, the value of that name as
//!   [`lookup`] finds it (a field, `stream`, `level`, a container field such as
//!   `container_name`, a copied container label). A name with no value does not match.
//! - `levels`: the record's level (set by a `level` stage) is one of these (any spelling
//!   [`Level::parse`] knows: `warning`, `err` …). A record without a level does not match.
//!
//! `drop` drops the records that match; `keep` drops those that do not. Dropped records are
//! acknowledged (the resume cursor moves past them) and counted per stage by the engine
//! (`log_capturer_pipeline_dropped{pipeline, stage="drop[2]"}`).
//!
//! Config errors: a stage with no condition, an empty or invalid `expression`, `source`
//! without `expression`, an unknown level name.
//!
//! Speed: matching the message runs the regex over the line's bytes in place; nothing is
//! allocated whether or not the record matches.

use regex::bytes::Regex;

use crate::pipeline::LogLine;
use crate::processing::config::MatchConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::record::{Level, lookup};
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct MatchStage {
    expression: Option<Regex>,
    /// The name `expression` applies to; None: the message bytes.
    source: Option<Box<str>>,
    /// Bit `Level as u8` set for each accepted level; None: no level condition.
    levels: Option<u8>,
    /// `keep`: non-matching records are dropped; else (`drop`) matching ones.
    keep: bool,
}

impl MatchStage {
    /// `keep`: records that match pass and the others are dropped; else the reverse.
    pub fn build(
        config: &MatchConfig,
        keep: bool,
        _metrics: &StageMetrics,
    ) -> Result<Self, BuildError> {
        let source = config
            .source
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "message")
            .map(Box::from);
        let expression = match config.expression.as_deref() {
            None if source.is_some() => {
                return Err(BuildError::at(
                    "source",
                    "`source` names what `expression` applies to; give an `expression` too",
                ));
            }
            None => None,
            Some("") => {
                return Err(BuildError::at(
                    "expression",
                    "an empty expression matches every record; leave it out or give a pattern",
                ));
            }
            Some(pattern) => Some(
                Regex::new(pattern)
                    .map_err(|e| BuildError::at("expression", format!("invalid regex: {e}")))?,
            ),
        };
        let levels = if config.levels.is_empty() {
            None
        } else {
            let mut mask = 0u8;
            for name in &config.levels {
                let level = Level::parse(name).ok_or_else(|| {
                    BuildError::at(
                        "levels",
                        format!(
                            "unknown level `{name}` (trace, debug, info, warn, error or fatal)"
                        ),
                    )
                })?;
                mask |= bit(level);
            }
            Some(mask)
        };
        if expression.is_none() && levels.is_none() {
            return Err(BuildError::at(
                "",
                "give at least one condition: `expression` (with an optional `source`) or `levels`",
            ));
        }
        Ok(MatchStage {
            expression,
            source,
            levels,
            keep,
        })
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        if self.matches(line, cx) == self.keep {
            Verdict::Pass
        } else {
            Verdict::Drop
        }
    }

    /// Every condition holds (cheapest first: the level is one load).
    fn matches(&self, line: &LogLine, cx: &StageContext<'_>) -> bool {
        if let Some(mask) = self.levels
            && line.level().is_none_or(|l| mask & bit(l) == 0)
        {
            return false;
        }
        let Some(re) = &self.expression else {
            return true;
        };
        match &self.source {
            None => re.is_match(&line.message),
            Some(name) => {
                lookup(line, cx.container, name).is_some_and(|v| re.is_match(v.as_bytes()))
            }
        }
    }
}

fn bit(level: Level) -> u8 {
    1 << level as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::config::MatchConfig;
    use crate::processing::stages::testing;
    use proptest::prelude::*;

    fn line(message: &[u8]) -> LogLine {
        testing::line(message, &[])
    }

    fn config(expression: Option<&str>, source: Option<&str>, levels: &[&str]) -> MatchConfig {
        MatchConfig {
            expression: expression.map(str::to_string),
            source: source.map(str::to_string),
            levels: levels.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn build(c: &MatchConfig, keep: bool) -> Result<MatchStage, BuildError> {
        MatchStage::build(c, keep, &StageMetrics::detached("p", "drop[0]"))
    }

    fn run(stage: &mut MatchStage, l: &mut LogLine) -> Verdict {
        let m = testing::meta();
        stage.apply(l, &testing::cx(&m, 0))
    }

    #[test]
    fn drop_by_message_regex() {
        let mut s = build(&config(Some("^DEBUG"), None, &[]), false).unwrap();
        assert_eq!(run(&mut s, &mut line(b"DEBUG x")), Verdict::Drop);
        assert_eq!(run(&mut s, &mut line(b"INFO DEBUG x")), Verdict::Pass);
        // Invalid UTF-8 does not stop a byte match.
        assert_eq!(run(&mut s, &mut line(b"DEBUG \xff\xfe")), Verdict::Drop);
    }

    #[test]
    fn keep_by_message_regex() {
        let mut s = build(&config(Some("error|panic"), None, &[]), true).unwrap();
        assert_eq!(run(&mut s, &mut line(b"an error here")), Verdict::Pass);
        assert_eq!(run(&mut s, &mut line(b"all fine")), Verdict::Drop);
    }

    #[test]
    fn source_field_and_container_field() {
        let mut s = build(&config(Some("^/health"), Some("path"), &[]), false).unwrap();
        let mut l = testing::line(b"GET", &[("path", "/healthz")]);
        assert_eq!(run(&mut s, &mut l), Verdict::Drop);
        // A missing field does not match: drop passes it, keep drops it.
        assert_eq!(run(&mut s, &mut line(b"/health")), Verdict::Pass);
        let mut k = build(&config(Some("^/health"), Some("path"), &[]), true).unwrap();
        assert_eq!(run(&mut k, &mut line(b"/health")), Verdict::Drop);

        let mut s = build(&config(Some("^web-"), Some("container_name"), &[]), false).unwrap();
        assert_eq!(run(&mut s, &mut line(b"x")), Verdict::Drop);
        let mut s = build(&config(Some("^stderr$"), Some("stream"), &[]), false).unwrap();
        assert_eq!(run(&mut s, &mut line(b"x")), Verdict::Pass);
        // `source: message` is the message itself.
        let mut s = build(&config(Some("x"), Some("message"), &[]), false).unwrap();
        assert_eq!(run(&mut s, &mut line(b"x")), Verdict::Drop);
    }

    #[test]
    fn levels_and_both_conditions() {
        let mut s = build(&config(None, None, &["debug", "TRACE"]), false).unwrap();
        let mut debug = line(b"x");
        debug.extra_mut().level = Some(Level::Debug);
        let mut info = line(b"x");
        info.extra_mut().level = Some(Level::Info);
        assert_eq!(run(&mut s, &mut debug), Verdict::Drop);
        assert_eq!(run(&mut s, &mut info), Verdict::Pass);
        // No level: does not match.
        assert_eq!(run(&mut s, &mut line(b"x")), Verdict::Pass);
        let mut k = build(&config(None, None, &["warning", "err", "fatal"]), true).unwrap();
        assert_eq!(run(&mut k, &mut line(b"x")), Verdict::Drop);
        assert_eq!(run(&mut k, &mut info), Verdict::Drop);

        // Every condition must hold.
        let mut s = build(&config(Some("cache"), None, &["debug"]), false).unwrap();
        let mut debug_cache = line(b"cache miss");
        debug_cache.extra_mut().level = Some(Level::Debug);
        let mut info_cache = line(b"cache miss");
        info_cache.extra_mut().level = Some(Level::Info);
        assert_eq!(run(&mut s, &mut debug_cache), Verdict::Drop);
        assert_eq!(run(&mut s, &mut info_cache), Verdict::Pass);
        assert_eq!(run(&mut s, &mut debug), Verdict::Pass);
    }

    #[test]
    fn build_errors_name_the_key() {
        let e = build(&config(Some("("), None, &[]), false).unwrap_err();
        assert_eq!(e.key, "expression");
        assert!(e.message.contains("invalid regex"), "{}", e.message);
        assert_eq!(
            build(&config(Some(""), None, &[]), true).unwrap_err().key,
            "expression"
        );
        let e = build(&config(None, None, &["info", "loud"]), false).unwrap_err();
        assert_eq!(e.key, "levels");
        assert!(e.message.contains("`loud`"), "{}", e.message);
        assert_eq!(build(&config(None, None, &[]), false).unwrap_err().key, "");
        assert_eq!(
            build(&config(None, Some("path"), &[]), false)
                .unwrap_err()
                .key,
            "source"
        );
    }

    proptest! {
        /// `drop` and `keep` with the same conditions partition any input: exactly one of
        /// them passes each record.
        #[test]
        fn drop_and_keep_partition(
            pattern in prop::sample::select(vec!["a", "^b", "c$", "[0-9]+", "x.*y", "(?i)err"]),
            level in prop::option::of(0usize..6),
            with_levels in any::<bool>(),
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..40),
        ) {
            let levels: &[&str] = if with_levels { &["warn", "error"] } else { &[] };
            let c = config(Some(pattern), None, levels);
            let mut d = build(&c, false).unwrap();
            let mut k = build(&c, true).unwrap();
            let re = regex::bytes::Regex::new(pattern).unwrap();
            for m in &messages {
                let mut l = line(m);
                if let Some(i) = level {
                    l.extra_mut().level = Some(Level::ALL[i]);
                }
                let mut l2 = l.clone();
                let dropped = run(&mut d, &mut l) == Verdict::Drop;
                let kept = run(&mut k, &mut l2) == Verdict::Pass;
                prop_assert_eq!(dropped, kept);
                let level_ok = !with_levels
                    || matches!(level.map(|i| Level::ALL[i]), Some(Level::Warn | Level::Error));
                prop_assert_eq!(dropped, level_ok && re.is_match(m));
            }
        }
    }
}
