//! `log.level` (and `LOG_CAPTURER_LOG_LEVEL`, `RUST_LOG`): a tracing filter whose level names
//! also accept the usual aliases of other tools.
//!
//! tracing reads a bare word that is not one of its level names as a *target*: `warning` meant
//! "everything from the module `warning`, nothing else", so a config that said `warning` ran
//! silent. Here a bare word must be a level: `warning` is `warn`, and an unknown word is
//! refused (a target at every level is written `target=trace`).

/// tracing's own level names (matched case-insensitively, as tracing does).
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Other tools' names for them: `warning` (Python, syslog), `err` (syslog), `critical` and
/// `fatal` (no level above `error` here), `information` (.NET).
const ALIASES: [(&str, &str); 5] = [
    ("warning", "warn"),
    ("err", "error"),
    ("critical", "error"),
    ("fatal", "error"),
    ("information", "info"),
];

/// The level `word` names, in tracing's spelling, if it names one.
fn level(word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    LEVELS
        .iter()
        .copied()
        .find(|l| *l == word)
        .or_else(|| ALIASES.iter().find(|(a, _)| *a == word).map(|(_, l)| *l))
}

/// Why a filter is refused before tracing parses it: a word that is no level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    /// A bare word (a directive without `=`) that is no level.
    #[error(
        "{0:?} is not a level (off, error, warn, info, debug, trace; \
         also warning, err, critical, fatal, information); a module at every \
         level is written {0}=trace"
    )]
    BareWord(String),
    /// `target=word` whose word is no level.
    #[error(
        "{directive:?}: {word:?} is not a level (off, error, warn, info, debug, \
         trace; also warning, err, critical, fatal, information)"
    )]
    TargetLevel { directive: String, word: String },
    #[error("empty: give a level such as info")]
    Empty,
}

/// The filter with aliases replaced by tracing's level names and blanks around directives
/// removed, or why it is not one. Checks only what tracing would misread silently; the
/// caller still parses the result (see `config::log_filter`).
pub(super) fn normalize(spec: &str) -> Result<String, LevelError> {
    let mut out = Vec::new();
    for directive in spec.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        match directive.split_once('=') {
            None => match level(directive) {
                Some(l) => out.push(l.to_string()),
                None => return Err(LevelError::BareWord(directive.to_string())),
            },
            Some((target, word)) => match level(word.trim()) {
                Some(l) => out.push(format!("{}={l}", target.trim())),
                None => {
                    return Err(LevelError::TargetLevel {
                        directive: directive.to_string(),
                        word: word.trim().to_string(),
                    });
                }
            },
        }
    }
    if out.is_empty() {
        return Err(LevelError::Empty);
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn aliases_become_tracing_levels() {
        assert_eq!(normalize("warning").as_deref(), Ok("warn"));
        assert_eq!(normalize("WARNING").as_deref(), Ok("warn"));
        assert_eq!(normalize("Info").as_deref(), Ok("info"));
        assert_eq!(normalize("err").as_deref(), Ok("error"));
        assert_eq!(normalize("critical").as_deref(), Ok("error"));
        assert_eq!(normalize("fatal").as_deref(), Ok("error"));
        assert_eq!(normalize("information").as_deref(), Ok("info"));
        assert_eq!(
            normalize(" warning , log_capturer=debug ,hyper=warning").as_deref(),
            Ok("warn,log_capturer=debug,hyper=warn")
        );
        assert_eq!(
            normalize("log_capturer[capture]=trace").as_deref(),
            Ok("log_capturer[capture]=trace")
        );
    }

    #[test]
    fn bare_words_that_are_no_level_are_refused() {
        // tracing would read these as targets and log nothing else.
        for spec in ["verbose", "log_capturer", "info,inof", "[capture]"] {
            let e = normalize(spec).expect_err(spec);
            assert!(e.to_string().contains("is not a level"), "{spec}: {e}");
        }
        assert!(normalize("log_capturer=loud").is_err());
        assert!(normalize("").is_err());
        assert!(normalize(" , ").is_err());
    }
}
