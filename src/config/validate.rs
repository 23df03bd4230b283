//! Validation: every check that names the key path of what is wrong.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;

impl FileSinkConfig {
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.path.trim().is_empty() {
            return Err(at!("sinks.file.path"; "must not be empty"));
        }
        crate::sinks::template_of(self).map_err(|e| InvalidConfig::Check(e.to_string()))?;
        self.file_mode()?;
        self.directory_mode()?;
        if self.fsync == FileFsync::Interval && self.fsync_interval.0.is_zero() {
            return Err(at!("sinks.file.fsync_interval"; "must be > 0"));
        }
        if self.max_open_files == 0 {
            return Err(at!("sinks.file.max_open_files"; "must be at least 1"));
        }
        if let Some(rotate) = &self.rotate {
            rotate.validate()?;
            // Rotated files are `<live name>.NNNNNN`; Docker names may hold dots and digits, so
            // a live name ending in the container's name could be another's rotated file.
            if crate::sinks::template_of(self)
                .map_err(|e| InvalidConfig::Check(e.to_string()))?
                .file_name_ends_in_a_value()
            {
                return Err(at!(
                    "sinks.file.path";
                    "with sinks.file.rotate the file name must not end in \
                     {{container_name}} or another name or field placeholder (write e.g. \
                     {{container_name}}.log): rotated files append .NNNNNN to it, and the \
                     container web.000001 would be taken for web's first rotated file"
                ));
            }
        }
        Ok(())
    }

    /// `mode` as bits.
    pub fn file_mode(&self) -> Result<u32, InvalidConfig> {
        parse_mode(&self.mode).map_err(|e| at!("sinks.file.mode"; "{e}"))
    }

    /// `dir_mode` as bits.
    pub fn directory_mode(&self) -> Result<u32, InvalidConfig> {
        parse_mode(&self.dir_mode).map_err(|e| at!("sinks.file.dir_mode"; "{e}"))
    }
}

/// Why a `mode` / `dir_mode` text is refused (the text is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ModeError {
    #[error("{0:?} is not an octal mode such as \"0640\"")]
    NotOctal(String),
    #[error("{0:?} sets bits beyond 0777")]
    BeyondPermissionBits(String),
}

/// `"0640"` → 0o640. Octal digits only, at most 0777 (no setuid, setgid or sticky bits).
fn parse_mode(text: &str) -> Result<u32, ModeError> {
    let bits = u32::from_str_radix(text, 8)
        .ok()
        .filter(|_| !text.is_empty() && text.len() <= 4)
        .ok_or_else(|| ModeError::NotOctal(text.to_string()))?;
    if bits > 0o777 {
        return Err(ModeError::BeyondPermissionBits(text.to_string()));
    }
    Ok(bits)
}

impl Config {
    /// Loki refuses a stream with more than 15 label names (`max_label_names_per_series`):
    /// a pipeline whose `labels` stages, with the sink's labels, could name more is refused
    /// here rather than every push failing.
    fn check_loki_label_count(&self) -> Result<(), InvalidConfig> {
        const LOKI_MAX_LABEL_NAMES: usize = 15;
        let Some(loki) = &self.sinks.loki else {
            return Ok(());
        };
        let mut sink: std::collections::BTreeSet<&str> =
            loki.static_labels.keys().map(String::as_str).collect();
        sink.extend(loki.labels.iter().map(String::as_str));
        // A host file's stream also carries its path (`filename`) unless `labels` names it.
        let file_label = loki
            .file_path_label()
            .filter(|_| !self.sources.files.is_empty());
        if let Some(label) = file_label
            && !sink.contains(label)
            && sink.len() >= LOKI_MAX_LABEL_NAMES
        {
            return Err(
                at!("sinks.loki"; "labels and static_labels name {} labels, and the streams of \
                     sources.files add {label}; Loki takes at most {LOKI_MAX_LABEL_NAMES} per \
                     stream — send some as structured_metadata instead",
                    sink.len()
                ),
            );
        }
        let file_pipelines: Vec<&str> = (self.sources.files.iter())
            .filter_map(|g| g.pipeline.as_deref())
            .collect();
        for (p, pipeline) in self.processing.pipelines.iter().enumerate() {
            let mut names = sink.clone();
            if let Some(label) = file_label
                && file_pipelines.contains(&pipeline.name.as_str())
            {
                names.insert(label);
            }
            for stage in &pipeline.stages {
                if let crate::processing::config::StageConfig::Labels(l) = stage {
                    names.extend(l.fields.iter().map(String::as_str));
                }
            }
            if names.len() > LOKI_MAX_LABEL_NAMES {
                return Err(
                    at!("processing.pipelines[{p}]"; "its labels stages and sinks.loki.labels / \
                         static_labels name {} labels ({}); Loki takes at most {LOKI_MAX_LABEL_NAMES} \
                         per stream — send some as structured_metadata instead",
                        names.len(),
                        names.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        let pipelines = crate::processing::Pipelines::compile(&self.processing)
            .map_err(|e| InvalidConfig::Check(e.to_string()))?;
        self.sources
            .validate(&pipelines.names().collect::<Vec<_>>())?;
        self.check_loki_label_count()?;
        let c = &self.capture;
        if c.rotation_interval.0 < Duration::from_secs(1) {
            return Err(
                at!("capture.rotation_interval"; "{:?} is below the 1s minimum",
                    c.rotation_interval.0
                ),
            );
        }
        if c.max_line_bytes.0 < 1024 || c.max_line_bytes.0 > 64 * 1024 * 1024 {
            return Err(at!("capture.max_line_bytes"; "{} is outside 1KiB..64MiB",
                c.max_line_bytes.0
            ));
        }
        if c.retry_backoff_initial.0.is_zero() || c.retry_backoff_initial.0 > c.retry_backoff_max.0
        {
            return Err(
                at!("capture.retry_backoff_initial"; "must be > 0 and <= capture.retry_backoff_max"),
            );
        }
        for (key, filter) in [
            ("capture.include", &c.include),
            ("capture.exclude", &c.exclude),
        ] {
            for (i, label) in filter.labels.iter().enumerate() {
                if label.is_empty() || label.starts_with('=') {
                    return Err(
                        at!("{key}.labels[{i}]"; "{label:?} is not `key` or `key=value`"
                        ),
                    );
                }
            }
        }
        if self.pipeline.queue_bytes.0 < 64 * 1024 {
            return Err(at!("pipeline.queue_bytes"; "must be at least 64KiB"));
        }
        if self.pipeline.flush_interval.0.is_zero() {
            return Err(at!("pipeline.flush_interval"; "must be > 0"));
        }
        if self.pipeline.shutdown_timeout.0 < Duration::from_secs(1) {
            return Err(at!("pipeline.shutdown_timeout"; "must be at least 1s"));
        }
        let s = &self.sinks;
        if s.stdout.is_none()
            && s.file.is_none()
            && s.loki.is_none()
            && s.kafka.is_none()
            && s.discard.is_none()
        {
            return Err(
                at!("sinks"; "at least one sink (stdout, file, loki, kafka, discard) must be configured"),
            );
        }
        if let Some(loki) = &self.sinks.loki {
            loki.validate()?;
        }
        if let Some(kafka) = &self.sinks.kafka {
            if !cfg!(feature = "kafka") {
                return Err(
                    at!("sinks.kafka"; "this build has no Kafka sink (build with the `kafka` feature)"),
                );
            }
            kafka.validate()?;
            let group_fields: Vec<&str> = (self.sources.files.iter())
                .flat_map(|g| g.fields.keys().map(String::as_str))
                .collect();
            kafka.check_templates(&kafka_template::FieldSources {
                container_labels: &self.processing.container_labels,
                group_fields: &group_fields,
                pipelines: !self.processing.pipelines.is_empty(),
            })?;
        }
        if let Some(file) = &self.sinks.file {
            file.validate()?;
            let group_fields: Vec<&str> = (self.sources.files.iter())
                .flat_map(|g| g.fields.keys().map(String::as_str))
                .collect();
            crate::sinks::check_placeholders(
                file,
                &self.processing.container_labels,
                &group_fields,
            )
            .map_err(|e| InvalidConfig::Check(e.to_string()))?;
        }
        if self.checkpoint.state_dir.as_os_str().is_empty() {
            return Err(at!("checkpoint.state_dir"; "must not be empty"));
        }
        if self.checkpoint.interval.0 < Duration::from_millis(100) {
            return Err(at!("checkpoint.interval"; "must be at least 100ms"));
        }
        check_listen(&self.http.listen).map_err(|e| at!("http.listen"; "{e}"))?;
        if self.http.header_read_timeout.0 < Duration::from_millis(100) {
            return Err(at!("http.header_read_timeout"; "must be at least 100ms"));
        }
        if self.http.max_connections == 0 {
            return Err(at!("http.max_connections"; "must be at least 1"));
        }
        if !self.docker.host.is_empty()
            && let Err(e) = crate::docker::Endpoint::parse(&self.docker.host)
        {
            return Err(at!("docker.host"; "{e}"));
        }
        if let Some(tls) = &self.docker.tls {
            tls.validate()?;
        }
        if !self.docker.containers_dir.is_empty()
            && !std::path::Path::new(&self.docker.containers_dir).is_absolute()
        {
            return Err(
                at!("docker.containers_dir"; "{:?} must be an absolute path (where Docker's containers \
                     directory is mounted, e.g. /var/lib/docker/containers)",
                    self.docker.containers_dir
                ),
            );
        }
        check_log_filter(&self.log.level).map_err(|e| at!("log.level"; "{e}"))?;
        Ok(())
    }
}

/// Parses a log filter (`log.level`, `RUST_LOG`): `None` if it is not one (`check_log_filter`
/// says why).
pub fn log_filter(spec: &str) -> Option<tracing_subscriber::EnvFilter> {
    check_log_filter(spec).ok()
}

/// Parses a log filter, or says why it is not one. Level aliases (`warning`) are accepted and
/// a bare word must be a level (see `log_level`). Each directive is trimmed first:
/// tracing-subscriber 0.3 slices a directive with offsets taken after trimming it, which
/// panics (found by fuzzing `config_yaml`) on one that starts with blanks and holds a
/// multi-byte character, e.g. `" é=info"`. Field values are matched as plain text, never
/// compiled as regular expressions: a hostile value (found by the same fuzzing) made the
/// regex compilation run for minutes and past 2 GiB.
pub fn check_log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter, LogFilterError> {
    // Targets, span names and levels only: field filters (`{...}`) and other characters take
    // tracing-subscriber down paths fuzzing broke (see above; also an ordering invariant of
    // field matches that fails its own debug assertion).
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-:.=[], ".contains(c);
    if !spec.chars().all(allowed) {
        return Err(LogFilterError::Characters(spec.to_string()));
    }
    let normalized = log_level::normalize(spec).map_err(|reason| LogFilterError::Level {
        spec: spec.to_string(),
        reason,
    })?;
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(normalized)
        .map_err(|error| LogFilterError::Directive {
            spec: spec.to_string(),
            error,
        })
}

/// Why a log filter (`log.level`, `LOG_CAPTURER_LOG_LEVEL`, `RUST_LOG`) is refused (the
/// filter is quoted).
#[derive(Debug, thiserror::Error)]
pub enum LogFilterError {
    #[error(
        "{0:?} is not a log filter: use a level such as info or debug, or directives \
         such as warn,log_capturer=debug (letters, digits and _-:.=[], only; field \
         filters {{...}} are not supported)"
    )]
    Characters(String),
    /// A bare word that is no level, or a directive's level that is none.
    #[error("{spec:?}: {reason}")]
    Level {
        spec: String,
        #[source]
        reason: log_level::LevelError,
    },
    /// tracing-subscriber refused the (normalized) filter.
    #[error("{spec:?} is not a log filter: {error}")]
    Directive {
        spec: String,
        #[source]
        error: tracing_subscriber::filter::ParseError,
    },
}

/// `http.listen`: empty (no listener), an address (`127.0.0.1:8001`, `[::1]:8001`) or a host
/// name and port (`localhost:8001`), resolved when the listener is bound.
pub fn check_listen(listen: &str) -> Result<(), ListenError> {
    if listen.is_empty() || listen.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || ListenError(listen.to_string());
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !name_ok || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Why an `http.listen` text is refused (the text is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not host:port (e.g. 127.0.0.1:8001, [::1]:8001, localhost:8001; \
     empty disables the listener)"
)]
pub struct ListenError(String);
