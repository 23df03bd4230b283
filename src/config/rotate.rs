//! `sinks.file.rotate`: when the file sink starts a new file for a path, how many rotated files
//! it keeps, and whether it compresses them.

use serde::{Deserialize, Serialize};

use super::{ByteSize, HumanDuration, InvalidConfig};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileRotateConfig {
    /// Rotate a file once it holds at least this many bytes (checked at each durable point,
    /// so a file exceeds it by at most one flush's worth; records are never split).
    pub max_bytes: Option<ByteSize>,
    /// Rotate a file once it is this old (since it was created).
    pub max_age: Option<HumanDuration>,
    /// Keep at most this many rotated files per live path; the oldest are deleted.
    pub max_files: Option<usize>,
    /// Compress rotated files.
    pub compress: RotateCompress,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RotateCompress {
    #[default]
    None,
    Gzip,
}

impl FileRotateConfig {
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_bytes.is_none() && self.max_age.is_none() {
            return Err(
                at!("sinks.file.rotate"; "set max_bytes and/or max_age (or remove rotate)"),
            );
        }
        if self.max_bytes.is_some_and(|b| b.0 == 0) {
            return Err(InvalidConfig::Bare {
                key: "sinks.file.rotate.max_bytes".to_string(),
                message: "must be > 0".to_string(),
            });
        }
        if self.max_age.is_some_and(|a| a.0.as_secs() < 1) {
            return Err(InvalidConfig::Bare {
                key: "sinks.file.rotate.max_age".to_string(),
                message: "must be at least 1s".to_string(),
            });
        }
        if self.max_files == Some(0) {
            return Err(InvalidConfig::Bare {
                key: "sinks.file.rotate.max_files".to_string(),
                message: "must be >= 1".to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    fn err(yaml: &str) -> String {
        Config::parse(yaml, "t")
            .map(|_| ())
            .expect_err(yaml)
            .to_string()
    }

    #[test]
    fn rotate_keys_parse_and_errors_name_the_key() {
        let c = Config::parse(
            "sinks:\n  file:\n    path: /l/{date}/{container_name}.log\n    rotate:\n      \
             max_bytes: 100MiB\n      max_age: 1d\n      max_files: 10\n      compress: gzip\n",
            "t",
        )
        .expect("valid");
        let r = c.sinks.file.and_then(|f| f.rotate).expect("rotate");
        assert_eq!(r.max_bytes, Some(ByteSize(100 * 1024 * 1024)));
        assert_eq!(r.max_age, Some(HumanDuration(Duration::from_secs(86_400))));
        assert_eq!(r.max_files, Some(10));
        assert_eq!(r.compress, RotateCompress::Gzip);
        let c = Config::parse("sinks:\n  file:\n    rotate: {max_age: 1h}\n", "t").expect("ok");
        let r = c.sinks.file.and_then(|f| f.rotate).expect("rotate");
        assert_eq!((r.max_files, r.compress), (None, RotateCompress::None));
        let cases = [
            (
                "max_files: 0, max_bytes: 1",
                "sinks.file.rotate.max_files must be >= 1",
            ),
            ("max_bytes: 0", "sinks.file.rotate.max_bytes must be > 0"),
            (
                "max_age: 500ms",
                "sinks.file.rotate.max_age must be at least 1s",
            ),
            (
                "max_files: 3",
                "sinks.file.rotate: set max_bytes and/or max_age",
            ),
            ("max_bytes: 1, compress: zstd", "sinks.file.rotate.compress"),
            ("max_bytes: 1, max_size: 2", "sinks.file.rotate"),
            ("max_bytes: 1x", "sinks.file.rotate.max_bytes"),
        ];
        for (keys, expected) in cases {
            let e = err(&format!("sinks:\n  file:\n    rotate: {{{keys}}}\n"));
            assert!(e.contains(expected), "{keys}: {e}");
        }
        // A live file named after the container alone could be another's rotated file.
        let e =
            err("sinks:\n  file:\n    path: /l/{container_name}\n    rotate: {max_bytes: 1MiB}\n");
        assert!(
            e.contains("sinks.file.path") && e.contains("must not end in"),
            "{e}"
        );
        Config::parse("sinks:\n  file:\n    path: /l/{container_name}\n", "t")
            .expect("without rotate it is fine");
    }
}

#[cfg(test)]
mod example_tests {
    use crate::config::Config;

    /// The commented-out file sink of examples/config.yaml, uncommented, is a valid config
    /// with the documented rotation keys.
    #[test]
    fn the_examples_file_sink_section_is_valid_when_uncommented() {
        let (_, yaml) = crate::config::tests::example_sink("file");
        let c = Config::parse(&yaml, "example").expect("valid");
        let r = c
            .sinks
            .file
            .and_then(|f| f.rotate)
            .expect("rotate documented");
        assert_eq!(r.max_files, Some(10));
    }
}
