//! Reading a config: the file, YAML with key paths in errors, the embedded default.

use std::path::Path;

use super::{Config, DEFAULT_CONFIG_YAML};

/// A configuration problem, with where it is (`file()`: the config file, or the origin of an
/// override) and what is wrong (`message()`). Displays as `WHERE: WHAT`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{file}: cannot read config file: {error}")]
    Read {
        file: String,
        #[source]
        error: std::io::Error,
    },
    /// The file holds no settings (only blank lines and comments).
    #[error("{file}: {EMPTY_FILE}")]
    Empty { file: String },
    /// The YAML does not parse or does not fit the schema (with the key path when known).
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// A setting fails validation; `problem` starts with its key path.
    #[error("{file}: {problem}")]
    Invalid {
        file: String,
        problem: super::InvalidConfig,
    },
    /// An override (environment variable or flag) fails the check of its key.
    #[error("{origin}: {key}: {reason}")]
    Override {
        origin: String,
        key: &'static str,
        #[source]
        reason: super::overrides::OverrideReason,
    },
    /// An override's value (`what`: "value" of a variable, "path" of a flag) is not UTF-8.
    #[error("{origin}: the {what} is not valid UTF-8")]
    NotUtf8 { origin: String, what: &'static str },
}

/// What `ConfigError::Empty` says after the file's name.
const EMPTY_FILE: &str = "the config file is empty (no settings); refusing to run on \
                          defaults. Write the settings (see examples/config.yaml), or run \
                          without -c for the embedded default";

impl ConfigError {
    /// Where the problem is: the config file's name, or the origin of an override.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Empty { file }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Invalid { file, .. } => file,
            ConfigError::Override { origin, .. } | ConfigError::NotUtf8 { origin, .. } => origin,
        }
    }

    /// What is wrong (the text after `file()` and `": "`).
    pub fn message(&self) -> String {
        match self {
            ConfigError::Read { error, .. } => format!("cannot read config file: {error}"),
            ConfigError::Empty { .. } => EMPTY_FILE.to_string(),
            ConfigError::Syntax { message, .. } => message.clone(),
            ConfigError::Invalid { problem, .. } => problem.to_string(),
            ConfigError::Override { key, reason, .. } => format!("{key}: {reason}"),
            ConfigError::NotUtf8 { what, .. } => format!("the {what} is not valid UTF-8"),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: path.display().to_string(),
            error,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        // An empty file (a truncated deploy, a mount of the wrong path) would otherwise run on
        // the defaults: capture everything into the default state directory.
        if !has_content(text) {
            return Err(ConfigError::Empty {
                file: source.to_string(),
            });
        }
        // serde_path_to_error gives the key path (`capture.rotation_interval`); serde-saphyr's
        // own message gives the position and a snippet. Operators get both, path first.
        let mut key_path = None;
        let config: Config = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize(de).map_err(|err| {
                key_path = Some(err.path().to_string());
                err.into_inner()
            })
        })
        .map_err(|e| {
            // A duplicate key fails while the key itself is read, so the path ends in `?`
            // (serde_path_to_error's unknown segment): put the key's name there.
            let key_path = match (key_path, duplicate_key(&e)) {
                (Some(path), Some(key)) if path == "?" => Some(key.to_string()),
                (Some(path), Some(key)) => Some(match path.strip_suffix(".?") {
                    Some(parent) => format!("{parent}.{key}"),
                    None => format!("{path}.{key}"),
                }),
                (path, _) => path,
            };
            ConfigError::Syntax {
                file: source.to_string(),
                message: match key_path.as_deref() {
                    Some(path) if path != "." => {
                        format!("{path}: {}", render_yaml_error(&e, source))
                    }
                    _ => render_yaml_error(&e, source),
                },
            }
        })?;
        config.validate().map_err(|problem| ConfigError::Invalid {
            file: source.to_string(),
            problem,
        })?;
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        // The embedded text is part of the binary and covered by a unit test; falling back to
        // the typed defaults keeps `run` working even if that test were skipped.
        Config::parse(DEFAULT_CONFIG_YAML, "<embedded default config>").unwrap_or_default()
    }
}

/// Whether the YAML text holds anything but blank lines and comments.
fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    })
}

/// serde-saphyr's message with its snippet, headed by `source` (the file's path) instead of
/// `<input>`, and without its leading `error: ` (whoever prints the error says that once).
fn render_yaml_error(e: &serde_saphyr::Error, source: &str) -> String {
    let rendered = e.render_with_options(serde_saphyr::render_options! {
        source_name: Some(source),
    });
    match rendered.strip_prefix("error: ") {
        Some(rest) => rest.to_string(),
        None => rendered,
    }
}

/// The name of the key a duplicate-key error is about, when it has one.
fn duplicate_key(mut err: &serde_saphyr::Error) -> Option<&str> {
    loop {
        match err {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => err = error,
            serde_saphyr::Error::DuplicateMappingKey { key, .. } => return key.as_deref(),
            _ => return None,
        }
    }
}
