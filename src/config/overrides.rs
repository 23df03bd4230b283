//! Per-host overrides of a few config keys, from the command line and the environment, so one
//! config file serves many hosts (and a non-root user can point the state elsewhere):
//!
//! | key | flag | variable |
//! |---|---|---|
//! | `checkpoint.state_dir` | `--state-dir` | `LOG_CAPTURER_STATE_DIR` |
//! | `http.listen` | | `LOG_CAPTURER_HTTP_LISTEN` |
//! | `docker.host` | | `LOG_CAPTURER_DOCKER_HOST` |
//! | `log.level` | | `LOG_CAPTURER_LOG_LEVEL`, else `RUST_LOG` |
//!
//! Precedence: flag > variable > config file > default. An empty variable counts as unset.
//! Values are validated like the file's, and errors name the flag or variable and the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::validate::{ListenError, LogFilterError};
use super::{Config, ConfigError, check_listen, check_log_filter};
use crate::docker::{Endpoint, EndpointError};

/// Why an override's value is refused (the text after `ORIGIN: key: `).
#[derive(Debug, thiserror::Error)]
pub enum OverrideReason {
    #[error("must not be empty")]
    Empty,
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    DockerHost(#[from] EndpointError),
    #[error(transparent)]
    LogLevel(#[from] LogFilterError),
}

/// One overriding value and where it came from (`--state-dir`, `LOG_CAPTURER_STATE_DIR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub value: String,
    pub origin: String,
}

/// The overrides in effect; `None`: the config file's value (or the default) stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `checkpoint.state_dir`
    pub state_dir: Option<Override>,
    /// `http.listen`
    pub http_listen: Option<Override>,
    /// `docker.host`
    pub docker_host: Option<Override>,
    /// `log.level`
    pub log_level: Option<Override>,
}

impl Overrides {
    /// The `LOG_CAPTURER_*` variables (and `RUST_LOG`) of this process.
    pub fn from_env() -> Result<Overrides, ConfigError> {
        Overrides::from_vars(|name| std::env::var_os(name))
    }

    /// The overrides `get` (a variable's value by name) gives; an error names a variable whose
    /// value is not UTF-8.
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Result<Overrides, ConfigError> {
        let var = |name: &str| match get(name) {
            Some(value) if !value.is_empty() => value
                .into_string()
                .map(|value| {
                    Some(Override {
                        value,
                        origin: name.to_string(),
                    })
                })
                .map_err(|_| ConfigError::NotUtf8 {
                    origin: name.to_string(),
                    what: "value",
                }),
            _ => Ok(None),
        };
        Ok(Overrides {
            state_dir: var("LOG_CAPTURER_STATE_DIR")?,
            http_listen: var("LOG_CAPTURER_HTTP_LISTEN")?,
            docker_host: var("LOG_CAPTURER_DOCKER_HOST")?,
            log_level: match var("LOG_CAPTURER_LOG_LEVEL")? {
                Some(level) => Some(level),
                None => var("RUST_LOG")?,
            },
        })
    }

    /// `--state-dir DIR`, which beats `LOG_CAPTURER_STATE_DIR`.
    pub fn state_dir_flag(&mut self, dir: Option<PathBuf>) -> Result<(), ConfigError> {
        if let Some(dir) = dir {
            let value = dir
                .into_os_string()
                .into_string()
                .map_err(|_| ConfigError::NotUtf8 {
                    origin: "--state-dir".to_string(),
                    what: "path",
                })?;
            self.state_dir = Some(Override {
                value,
                origin: "--state-dir".to_string(),
            });
        }
        Ok(())
    }

    /// The overrides in effect, each with the key it sets.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Override)> {
        [
            ("checkpoint.state_dir", &self.state_dir),
            ("http.listen", &self.http_listen),
            ("docker.host", &self.docker_host),
            ("log.level", &self.log_level),
        ]
        .into_iter()
        .filter_map(|(key, o)| o.as_ref().map(|o| (key, o)))
    }

    /// Sets the overridden keys, each validated as the config file's value would be; an error
    /// says `ORIGIN: key: reason`.
    pub fn apply(&self, config: &mut Config) -> Result<(), ConfigError> {
        let fail =
            |o: &Override, key: &'static str, reason: OverrideReason| ConfigError::Override {
                origin: o.origin.clone(),
                key,
                reason,
            };
        if let Some(o) = &self.state_dir {
            if o.value.is_empty() {
                return Err(fail(o, "checkpoint.state_dir", OverrideReason::Empty));
            }
            config.checkpoint.state_dir = PathBuf::from(&o.value);
        }
        if let Some(o) = &self.http_listen {
            check_listen(&o.value).map_err(|e| fail(o, "http.listen", e.into()))?;
            config.http.listen.clone_from(&o.value);
        }
        if let Some(o) = &self.docker_host {
            Endpoint::parse(&o.value).map_err(|e| fail(o, "docker.host", e.into()))?;
            config.docker.host.clone_from(&o.value);
        }
        if let Some(o) = &self.log_level {
            check_log_filter(&o.value).map_err(|e| fail(o, "log.level", e.into()))?;
            config.log.level.clone_from(&o.value);
        }
        Ok(())
    }
}

impl Config {
    /// The configuration `run` uses: the file at `path` (the embedded default without one),
    /// then `overrides` on top. Config reload calls this again with the same arguments.
    pub fn load_with(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Config::load(path)?,
            None => Config::embedded_default(),
        };
        overrides.apply(&mut config)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> Result<Overrides, ConfigError> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Overrides::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn environment_sets_the_four_keys_and_flag_beats_it() {
        let mut o = vars(&[
            ("LOG_CAPTURER_STATE_DIR", "/tmp/env-state"),
            ("LOG_CAPTURER_HTTP_LISTEN", "localhost:9001"),
            ("LOG_CAPTURER_DOCKER_HOST", "tcp://127.0.0.1:2375"),
            ("LOG_CAPTURER_LOG_LEVEL", "warning"),
            ("RUST_LOG", "trace"),
        ])
        .expect("valid");
        let mut c = Config::embedded_default();
        o.apply(&mut c).expect("applies");
        assert_eq!(c.checkpoint.state_dir, PathBuf::from("/tmp/env-state"));
        assert_eq!(c.http.listen, "localhost:9001");
        assert_eq!(c.docker.host, "tcp://127.0.0.1:2375");
        assert_eq!(
            c.log.level, "warning",
            "LOG_CAPTURER_LOG_LEVEL beats RUST_LOG"
        );

        o.state_dir_flag(Some(PathBuf::from("/tmp/flag-state")))
            .expect("utf-8");
        o.apply(&mut c).expect("applies");
        assert_eq!(c.checkpoint.state_dir, PathBuf::from("/tmp/flag-state"));
        assert_eq!(o.iter().count(), 4);
    }

    #[test]
    fn rust_log_counts_when_log_capturer_log_level_is_unset_or_empty() {
        for pairs in [
            &[("RUST_LOG", "debug")][..],
            &[("RUST_LOG", "debug"), ("LOG_CAPTURER_LOG_LEVEL", "")][..],
        ] {
            let o = vars(pairs).expect("valid");
            assert_eq!(
                o.log_level.as_ref().map(|l| l.origin.as_str()),
                Some("RUST_LOG")
            );
        }
        // Empty variables are unset: the file's values stand.
        let o = vars(&[
            ("LOG_CAPTURER_STATE_DIR", ""),
            ("LOG_CAPTURER_HTTP_LISTEN", ""),
        ])
        .expect("valid");
        assert_eq!(o, Overrides::default());
    }

    #[test]
    fn bad_values_name_the_variable_and_the_key() {
        let cases = [
            ("LOG_CAPTURER_HTTP_LISTEN", "nope", "http.listen"),
            ("LOG_CAPTURER_DOCKER_HOST", "ftp://x", "docker.host"),
            ("LOG_CAPTURER_LOG_LEVEL", "verbose", "log.level"),
            ("RUST_LOG", "x[s{f=1}]=debug", "log.level"),
        ];
        for (var, value, key) in cases {
            let o = vars(&[(var, value)]).expect("utf-8");
            let e = o
                .apply(&mut Config::embedded_default())
                .expect_err(value)
                .to_string();
            assert!(e.starts_with(&format!("{var}: {key}: ")), "{e}");
        }
        let mut o = Overrides::default();
        o.state_dir_flag(Some(PathBuf::new())).expect("utf-8");
        let e = o
            .apply(&mut Config::embedded_default())
            .expect_err("empty")
            .to_string();
        assert_eq!(e, "--state-dir: checkpoint.state_dir: must not be empty");
    }

    #[test]
    fn non_utf8_variable_is_named() {
        use std::os::unix::ffi::OsStringExt;
        let e = Overrides::from_vars(|name| {
            (name == "LOG_CAPTURER_STATE_DIR").then(|| OsString::from_vec(vec![0xff, b'x']))
        })
        .expect_err("not utf-8")
        .to_string();
        assert!(e.starts_with("LOG_CAPTURER_STATE_DIR: "), "{e}");
    }

    #[test]
    fn load_with_applies_overrides_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "sinks:\n  stdout: {}\ncheckpoint:\n  state_dir: /tmp/file\n",
        )
        .expect("write");
        let none = Overrides::default();
        let c = Config::load_with(Some(&path), &none).expect("loads");
        assert_eq!(c.checkpoint.state_dir, PathBuf::from("/tmp/file"));
        let env = vars(&[("LOG_CAPTURER_STATE_DIR", "/tmp/env")]).expect("valid");
        let c = Config::load_with(Some(&path), &env).expect("loads");
        assert_eq!(c.checkpoint.state_dir, PathBuf::from("/tmp/env"));
        let c = Config::load_with(None, &env).expect("embedded");
        assert_eq!(c.checkpoint.state_dir, PathBuf::from("/tmp/env"));
    }
}
