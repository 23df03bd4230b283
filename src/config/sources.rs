//! `sources`: what the agent reads besides containers — host log files (`sources.files`).
//! (Containers are configured under `docker` and `capture`; `docker.capture` chooses how
//! their lines are read.)

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use super::{ByteSize, HumanDuration, InitialPosition, InvalidConfig};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Groups of host log files; each file found by a group's globs is read once (the first
    /// group whose `include` matches it wins).
    pub files: Vec<FileGroupConfig>,
    /// Settings shared by every file of `files`.
    pub file_settings: FileSettings,
}

/// One group of host files: `include` globs (absolute paths; `*`, `?`, `[..]`, `{a,b}` and
/// `**` for any depth), minus `exclude` globs, with the record fields they get.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileGroupConfig {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Record fields added to every line of these files (`job: syslog`); usable like copied
    /// container labels (Loki labels, file sink path placeholders, processing lookups).
    pub fields: BTreeMap<String, String>,
    /// The `processing.pipelines` entry (by name) these files go through; none: unchanged.
    pub pipeline: Option<String>,
    /// Where a file that existed before the agent's first run (no stored position) starts:
    /// `beginning` or `end`. Files that appear while the agent runs are always read from
    /// their start.
    pub initial_position: InitialPosition,
    /// Read rotated compressed files (`*.gz`, `*.xz`, `*.bz2`, `*.zst`, `*.zip`) that the
    /// globs match; by default they are skipped (their lines were read before compression).
    pub include_compressed: bool,
}

impl Default for FileGroupConfig {
    fn default() -> Self {
        FileGroupConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            fields: BTreeMap::new(),
            pipeline: None,
            initial_position: InitialPosition::Beginning,
            include_compressed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSettings {
    /// How often the globs are expanded again (new files are normally seen at once through
    /// inotify; the rescan catches what inotify missed or when it is unavailable).
    pub rescan_interval: HumanDuration,
    /// How often an open file without inotify events is checked for new data, rotation and
    /// truncation.
    pub poll_interval: HumanDuration,
    /// Files held open at once at most; beyond it, the longest idle ones are closed and
    /// reopened at their position when they grow.
    pub max_open_files: usize,
    /// Close a file after this long without new data (reopened by position when it grows).
    pub close_inactive: HumanDuration,
    /// A last line without its newline is emitted after this long without the newline; also
    /// how long a file rotated away or deleted is still read after its last new data before it
    /// is finished.
    pub flush_partial_after: HumanDuration,
    /// Bytes at the start of a file that fingerprint it (with device and inode).
    pub fingerprint_bytes: ByteSize,
    /// Follow symbolic links the globs match (the target is read, known by its identity).
    pub follow_symlinks: bool,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            rescan_interval: HumanDuration(Duration::from_secs(10)),
            poll_interval: HumanDuration(Duration::from_millis(250)),
            max_open_files: 1024,
            close_inactive: HumanDuration(Duration::from_secs(300)),
            flush_partial_after: HumanDuration(Duration::from_secs(5)),
            fingerprint_bytes: ByteSize(1024),
            follow_symlinks: true,
        }
    }
}

/// How container lines are read (`docker.capture`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Follow streams of the Engine API (`GET /containers/{id}/logs`).
    #[default]
    Api,
    /// Read the containers' json-file logs from Docker's data root (discovery still uses the
    /// Engine API). Containers with another log driver fall back to `api`.
    JsonFile,
}

impl SourcesConfig {
    /// Checks the groups and settings; errors name the key path
    /// (`sources.files[0].include[1]: …`).
    pub fn validate(&self, pipelines: &[&str]) -> Result<(), InvalidConfig> {
        for (g, group) in self.files.iter().enumerate() {
            let at = format!("sources.files[{g}]");
            if group.include.is_empty() {
                return Err(
                    at!("{at}.include"; "give at least one glob (e.g. /var/log/*.log)"
                    ),
                );
            }
            for (key, globs) in [("include", &group.include), ("exclude", &group.exclude)] {
                for (i, glob) in globs.iter().enumerate() {
                    check_glob(glob).map_err(|e| at!("{at}.{key}[{i}]"; "{e}"))?;
                }
            }
            if let Some(name) = &group.pipeline
                && !pipelines.contains(&name.as_str())
            {
                return Err(
                    at!("{at}.pipeline"; "no processing.pipelines entry is named `{name}`"
                    ),
                );
            }
            if let Some(k) = group.fields.keys().find(|k| k.trim().is_empty()) {
                return Err(at!("{at}.fields"; "empty field name {k:?}"));
            }
        }
        self.file_settings.validate()
    }
}

/// Why a `sources.files` glob is refused (the glob is quoted).
#[derive(Debug, thiserror::Error)]
enum GlobError {
    #[error("`{0}` is not absolute (globs are matched against absolute paths)")]
    NotAbsolute(String),
    #[error("`{glob}`: {}", .error.kind())]
    Invalid { glob: String, error: globset::Error },
}

fn check_glob(glob: &str) -> Result<(), GlobError> {
    if !glob.starts_with('/') {
        return Err(GlobError::NotAbsolute(glob.to_string()));
    }
    crate::sources::files::matcher::compile_glob(glob)
        .map(|_| ())
        .map_err(|error| GlobError::Invalid {
            glob: glob.to_string(),
            error,
        })
}

impl FileSettings {
    fn validate(&self) -> Result<(), InvalidConfig> {
        let at = "sources.file_settings";
        let at_least = |key: &str, value: Duration, min: Duration| {
            if value < min {
                Err(at!("{at}.{key}"; "must be at least {min:?}"))
            } else {
                Ok(())
            }
        };
        at_least(
            "rescan_interval",
            self.rescan_interval.0,
            Duration::from_millis(100),
        )?;
        at_least(
            "poll_interval",
            self.poll_interval.0,
            Duration::from_millis(10),
        )?;
        at_least(
            "close_inactive",
            self.close_inactive.0,
            Duration::from_secs(1),
        )?;
        at_least(
            "flush_partial_after",
            self.flush_partial_after.0,
            Duration::from_millis(1),
        )?;
        if self.max_open_files == 0 {
            return Err(at!("{at}.max_open_files"; "must be at least 1"));
        }
        if !(1..=1 << 20).contains(&self.fingerprint_bytes.0) {
            return Err(
                at!("{at}.fingerprint_bytes"; "must be between 1 byte and 1 MiB"
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> SourcesConfig {
        serde_saphyr::from_str(yaml).expect("yaml")
    }

    fn error(yaml: &str) -> String {
        parse(yaml)
            .validate(&["java"])
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn a_valid_config_passes() {
        let c = parse(
            "files:\n  - include: [/var/log/*.log, '/srv/**/app-{a,b}.log']\n    exclude: [/var/log/skip.log]\n    pipeline: java\n    fields: {job: syslog}\nfile_settings:\n  rescan_interval: 5s\n",
        );
        assert_eq!(c.validate(&["java"]), Ok(()));
        assert_eq!(SourcesConfig::default().validate(&[]), Ok(()));
    }

    #[test]
    fn errors_name_the_key_path() {
        let e = error("files:\n  - include: []\n");
        assert!(e.starts_with("sources.files[0].include: "), "{e}");
        let e = error("files:\n  - include: [/a/*.log, relative/*.log]\n");
        assert!(e.starts_with("sources.files[0].include[1]: "), "{e}");
        assert!(e.contains("not absolute"), "{e}");
        let e = error("files:\n  - include: [/a/*.log]\n  - include: ['/b/[a.log']\n");
        assert!(e.starts_with("sources.files[1].include[0]: "), "{e}");
        let e = error("files:\n  - include: [/a/*.log]\n    exclude: [/a/x, '/a/{b']\n");
        assert!(e.starts_with("sources.files[0].exclude[1]: "), "{e}");
        let e = error("files:\n  - include: [/a/*.log]\n    pipeline: nope\n");
        assert!(e.starts_with("sources.files[0].pipeline: "), "{e}");
        assert!(e.contains("`nope`"), "{e}");
        let e = error("file_settings:\n  max_open_files: 0\n");
        assert!(
            e.starts_with("sources.file_settings.max_open_files: "),
            "{e}"
        );
        let e = error("file_settings:\n  poll_interval: 1ms\n");
        assert!(
            e.starts_with("sources.file_settings.poll_interval: "),
            "{e}"
        );
        let e = error("file_settings:\n  fingerprint_bytes: 2MiB\n");
        assert!(
            e.starts_with("sources.file_settings.fingerprint_bytes: "),
            "{e}"
        );
    }
}
