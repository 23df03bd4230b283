//! The file sink's settings from `sinks.file`, and the checks of its path template the
//! config layer runs.

use std::time::Duration;

use super::error::FileSinkError;
use super::naming::PathTemplate;
use super::open::Modes;
use super::rotate::{self, RotatePolicy};
use crate::sinks::Durability;

pub struct FileSinkSettings {
    pub template: PathTemplate,
    pub idle_close: Duration,
    pub modes: Modes,
    pub durability: Durability,
    /// At most this many output files open at once (least recently used closed first).
    pub max_open_files: usize,
    /// Rotation (none: `RotatePolicy::default()`).
    pub rotate: RotatePolicy,
}

/// `sinks.file.path` checked, with room for the rotation suffix when `rotate` is set.
pub fn template_of(c: &crate::config::FileSinkConfig) -> Result<PathTemplate, FileSinkError> {
    let room = if c.rotate.is_some() {
        rotate::SUFFIX_ROOM
    } else {
        0
    };
    Ok(PathTemplate::reserving(&c.path, room)?)
}

/// Every `{NAME}` placeholder of `sinks.file.path` that is not built in must be a container
/// label copied by `processing.container_labels` (matching one of its globs) or a field of a
/// `sources.files` group (`group_fields`): anything else is a typo that would put every
/// container in a `_unknown` directory.
pub fn check_placeholders(
    c: &crate::config::FileSinkConfig,
    container_labels: &[String],
    group_fields: &[&str],
) -> Result<(), FileSinkError> {
    let template = template_of(c)?;
    for name in template.label_placeholders() {
        if !group_fields.contains(&name)
            && !container_labels
                .iter()
                .any(|g| crate::discovery::filter::glob_match(g, name))
        {
            return Err(FileSinkError::UnknownPlaceholder {
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

impl FileSinkSettings {
    /// From the validated `sinks.file` configuration.
    pub fn from_config(c: &crate::config::FileSinkConfig) -> Result<Self, FileSinkError> {
        use crate::config::FileFsync;
        Ok(FileSinkSettings {
            template: template_of(c)?,
            idle_close: c.idle_close.0,
            modes: Modes {
                file: c
                    .file_mode()
                    .map_err(|e| FileSinkError::Config(e.to_string()))?,
                dir: c
                    .directory_mode()
                    .map_err(|e| FileSinkError::Config(e.to_string()))?,
            },
            durability: match c.fsync {
                FileFsync::Always => Durability::Always,
                FileFsync::Interval => Durability::Interval(c.fsync_interval.0),
                FileFsync::Never => Durability::Never,
            },
            max_open_files: c.max_open_files.max(1),
            rotate: c
                .rotate
                .as_ref()
                .map(|r| RotatePolicy {
                    max_bytes: r.max_bytes.map(|b| b.0),
                    max_age: r.max_age.map(|a| a.0),
                    max_files: r.max_files,
                    gzip: r.compress == crate::config::RotateCompress::Gzip,
                })
                .unwrap_or_default(),
        })
    }
}
