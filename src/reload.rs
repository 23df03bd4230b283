//! Configuration reload (SIGHUP, `POST /-/reload`): where a new config comes from, what
//! changed, and what cannot change without a restart.
//!
//! A reload reads the config again through the same [`ConfigSource`] the start used (so
//! overrides applied by `main.rs` apply again), compares it with the running one ([`diff`]) and
//! then, in `agent::run`:
//! - refuses it if a key that needs a restart changed ([`RESTART_KEYS`]): the old config
//!   keeps running;
//! - applies `log.level` at once, in place;
//! - for anything else (capture, filters, sinks, pipeline, docker, checkpoint interval) drains
//!   the capture pipeline as a shutdown does and starts a new generation from the in-memory
//!   checkpoints (see the `agent` module doc).
//!
//! Requests that arrive while a reload runs are coalesced: they are all answered by the next
//! reload, which reads the file as it is then.

use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError};

/// Where the configuration comes from; `load` reads and validates it anew on every call.
pub struct ConfigSource {
    /// For messages: the file's path, or `embedded default config`.
    pub name: String,
    /// Reads and validates the configuration (the same loader the start used).
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    /// True when there is no file to read again (the embedded default config).
    pub fixed: bool,
}

/// Applies a new `log.level` to the running process; returns a note for the log (e.g. that
/// `RUST_LOG` overrides it) or why it could not.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<Option<String>, LogLevelError> + Send + Sync>;

/// Why a new `log.level` could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogLevelError {
    #[error("{0:?} is not a log filter")]
    NotAFilter(String),
    /// The subscriber refused the new filter (its text).
    #[error("{0}")]
    Reload(String),
}

/// A reload that changes keys only a restart applies: each `key (why)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "changed keys need a restart: {}; the running config is kept (restart the agent to apply them)",
    .keys.join("; ")
)]
pub struct RestartRequired {
    pub keys: Vec<String>,
}

/// A reload's answer: a short message, or why it failed (with an HTTP status for
/// `POST /-/reload`).
pub type ReloadResult = Result<String, ReloadError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadError {
    /// 409: refused (a key needs a restart); 500: the new config is invalid or could not be
    /// applied; 503: the agent is stopping.
    pub status: u16,
    pub message: String,
}

/// One request to reload; `reply` (for HTTP) gets the result.
pub struct ReloadRequest {
    pub origin: &'static str,
    pub reply: Option<oneshot::Sender<ReloadResult>>,
}

pub type ReloadSender = mpsc::Sender<ReloadRequest>;
pub type ReloadReceiver = mpsc::Receiver<ReloadRequest>;

/// The request channel. Bounded: a sender that finds it full knows a reload is already
/// pending, which reads the file as it will be then (coalesced).
pub fn channel() -> (ReloadSender, ReloadReceiver) {
    mpsc::channel(64)
}

/// What `agent::run` needs to reload.
pub struct Control {
    pub source: ConfigSource,
    pub set_log_level: Option<LogLevelSetter>,
    pub requests: ReloadReceiver,
    /// Handed to the HTTP listener (`POST /-/reload`).
    pub requester: ReloadSender,
}

/// Keys read once per process: changing them needs a restart, and a reload that changes one
/// is refused. With the reason, for the message.
pub const RESTART_KEYS: &[(&str, &str)] = &[
    (
        "checkpoint.state_dir",
        "the state directory is locked and its checkpoints are loaded once per process",
    ),
    (
        "http.listen",
        "the HTTP listener is bound once and serves during the reload itself",
    ),
    (
        "http.header_read_timeout",
        "the HTTP listener's limits are set when it is bound",
    ),
    (
        "http.max_connections",
        "the HTTP listener's limits are set when it is bound",
    ),
    (
        "log.format",
        "the log formatter is installed once per process",
    ),
    (
        "docker.host",
        "another daemon lists other containers: the first listing would forget the checkpoints \
         of this daemon's containers, and going back would read them all again",
    ),
];

/// How a new config differs from the running one.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// Only `log.level`: applied in place.
    LogLevel,
    /// Something the capture pipeline reads: a new generation. The changed sections, for the
    /// log (`capture`, `sinks`, …).
    Pipeline(Vec<&'static str>),
}

/// Compares the running config with a new one; `Err` names every key that needs a restart.
pub fn diff(old: &Config, new: &Config) -> Result<Change, RestartRequired> {
    let restart: Vec<&(&str, &str)> = RESTART_KEYS
        .iter()
        .filter(|(key, _)| match *key {
            "checkpoint.state_dir" => old.checkpoint.state_dir != new.checkpoint.state_dir,
            "http.listen" => old.http.listen != new.http.listen,
            "http.header_read_timeout" => {
                old.http.header_read_timeout != new.http.header_read_timeout
            }
            "http.max_connections" => old.http.max_connections != new.http.max_connections,
            "log.format" => old.log.format != new.log.format,
            "docker.host" => old.docker.host != new.docker.host,
            _ => false,
        })
        .collect();
    if !restart.is_empty() {
        let keys: Vec<String> = restart
            .iter()
            .map(|(key, why)| format!("{key} ({why})"))
            .collect();
        return Err(RestartRequired { keys });
    }
    let mut sections = Vec::new();
    if old.docker != new.docker {
        sections.push("docker");
    }
    if old.capture != new.capture {
        sections.push("capture");
    }
    if old.pipeline != new.pipeline {
        sections.push("pipeline");
    }
    if old.sinks != new.sinks {
        sections.push("sinks");
    }
    if old.checkpoint != new.checkpoint {
        sections.push("checkpoint");
    }
    if !sections.is_empty() {
        return Ok(Change::Pipeline(sections));
    }
    if old.log.level != new.log.level {
        return Ok(Change::LogLevel);
    }
    Ok(Change::Unchanged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        Config::parse(yaml, "t.yaml").expect("valid config")
    }

    const BASE: &str = "sinks:\n  stdout: {}\ncheckpoint:\n  state_dir: /tmp/a\n";

    #[test]
    fn same_config_is_unchanged() {
        assert_eq!(diff(&parse(BASE), &parse(BASE)), Ok(Change::Unchanged));
    }

    #[test]
    fn log_level_alone_applies_in_place() {
        let new = parse(&format!("{BASE}log:\n  level: debug\n"));
        assert_eq!(diff(&parse(BASE), &new), Ok(Change::LogLevel));
    }

    #[test]
    fn pipeline_changes_name_their_sections() {
        let new = parse(&format!(
            "{BASE}capture:\n  exclude:\n    names: [x]\n  rotation_interval: 7s\nlog:\n  level: debug\n"
        ));
        assert_eq!(
            diff(&parse(BASE), &new),
            Ok(Change::Pipeline(vec!["capture"]))
        );
        let new = parse(
            "sinks:\n  stdout: {}\n  discard: {}\ncheckpoint:\n  state_dir: /tmp/a\n  interval: 2s\n",
        );
        assert_eq!(
            diff(&parse(BASE), &new),
            Ok(Change::Pipeline(vec!["sinks", "checkpoint"]))
        );
        // A secret is compared by value although it is never shown.
        let loki = |pw: &str| {
            parse(&format!(
                "sinks:\n  loki:\n    url: http://127.0.0.1:3100/loki/api/v1/push\n    \
                 basic_auth: {{ username: u, password: {pw} }}\ncheckpoint:\n  state_dir: /tmp/a\n"
            ))
        };
        assert_eq!(
            diff(&loki("one"), &loki("two")),
            Ok(Change::Pipeline(vec!["sinks"]))
        );
    }

    #[test]
    fn restart_keys_are_refused_with_their_names() {
        let new = parse("sinks:\n  stdout: {}\ncheckpoint:\n  state_dir: /tmp/b\n");
        let e = diff(&parse(BASE), &new).expect_err("refused").to_string();
        assert!(e.contains("checkpoint.state_dir"), "{e}");
        assert!(e.contains("need a restart"), "{e}");
        let new = parse(&format!(
            "{BASE}http:\n  listen: 127.0.0.1:9999\n  max_connections: 3\nlog:\n  format: json\n"
        ));
        let e = diff(&parse(BASE), &new).expect_err("refused").to_string();
        for key in ["http.listen", "http.max_connections", "log.format"] {
            assert!(e.contains(key), "{key} in {e}");
        }
        assert!(!e.contains("state_dir"), "{e}");
        // Refused even when other keys changed too: nothing of it is applied.
        let new = parse(
            "sinks:\n  discard: {}\ncheckpoint:\n  state_dir: /tmp/b\ncapture:\n  rotation_interval: 9s\n",
        );
        assert!(diff(&parse(BASE), &new).is_err());
        // Another daemon: refused; its TLS settings alone may change.
        let new = parse(&format!("{BASE}docker:\n  host: tcp://127.0.0.1:2375\n"));
        let e = diff(&parse(BASE), &new).expect_err("refused").to_string();
        assert!(e.contains("docker.host"), "{e}");
        let new = parse(&format!("{BASE}docker:\n  request_timeout: 9s\n"));
        assert_eq!(
            diff(&parse(BASE), &new),
            Ok(Change::Pipeline(vec!["docker"]))
        );
    }
}
