//! `InvalidConfig`: why a setting fails validation, with the key path of what is wrong.

/// A setting that fails validation. Displays as the message operators (and the tests) have
/// always seen: `KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidConfig {
    /// The check of the setting at `key` (`sinks.loki.labels[2]`) failed.
    #[error("{key}: {message}")]
    At { key: String, message: String },
    /// The same, for the `sinks.file.rotate.*` checks whose message has no `:` after the key
    /// (kept as it was: tests and operators match the text).
    #[error("{key} {message}")]
    Bare { key: String, message: String },
    /// A check owned by another module (processing pipelines, the file sink's path template)
    /// that reports its own text, key path included.
    #[error("{0}")]
    Check(String),
}

impl InvalidConfig {
    /// The key path of the failing setting, when this error knows it apart from its text.
    pub fn key(&self) -> Option<&str> {
        match self {
            InvalidConfig::At { key, .. } | InvalidConfig::Bare { key, .. } => Some(key),
            InvalidConfig::Check(_) => None,
        }
    }
}

/// `at!("sinks.{k}.url"; "{url:?} is not a URL")`: an `InvalidConfig::At`, both parts
/// formatted like `format!`.
macro_rules! at {
    ($key:literal; $($message:tt)+) => {
        $crate::config::InvalidConfig::At {
            key: format!($key),
            message: format!($($message)+),
        }
    };
}
