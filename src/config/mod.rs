//! The agent's YAML configuration: typed structs with documented defaults, strict parsing
//! (unknown keys are errors) and semantic validation that reports the key path and the reason.

mod docker_tls;
mod kafka;
pub mod kafka_template;
#[cfg(test)]
mod kafka_tests;
mod log_level;
mod loki;
mod overrides;
mod rotate;
mod secret;
mod sources;
mod units;

pub use docker_tls::DockerTlsConfig;
pub use overrides::{Override, Overrides};
pub use rotate::{FileRotateConfig, RotateCompress};
pub use secret::Secret;
pub use sources::{CaptureMode, FileGroupConfig, FileSettings, SourcesConfig};
pub use units::{ByteSize, HumanDuration, parse_byte_size, parse_duration};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration that runs when no `-c FILE` is given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default.yaml");

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub docker: DockerConfig,
    pub capture: CaptureConfig,
    pub pipeline: PipelineConfig,
    pub processing: crate::processing::ProcessingConfig,
    pub sources: SourcesConfig,
    pub sinks: SinksConfig,
    pub checkpoint: CheckpointConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`. Empty: `$DOCKER_HOST`, else the local socket.
    pub host: String,
    /// Time-out for short requests (version, list, inspect). Streams have none.
    pub request_timeout: HumanDuration,
    /// TLS to a `tcp://` daemon; absent: the `DOCKER_TLS*` environment (see `docker::tls`).
    pub tls: Option<DockerTlsConfig>,
    /// How container lines are read: `api` (follow streams) or `json_file` (Docker's
    /// json-file logs, read from its data root).
    pub capture: CaptureMode,
    /// With `capture: json_file`: where Docker's `containers` directory is visible to the
    /// agent (e.g. `/host/var/lib/docker/containers` when the agent runs in a container and
    /// mounts it read-only there). Empty: the `LogPath` Docker reports, as is.
    pub containers_dir: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialPosition {
    Beginning,
    End,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    pub rotation_interval: HumanDuration,
    pub initial_position: InitialPosition,
    pub max_line_bytes: ByteSize,
    pub retry_backoff_initial: HumanDuration,
    pub retry_backoff_max: HumanDuration,
    pub include: FilterConfig,
    pub exclude: FilterConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Container name globs (`*`, `?`), without the leading `/`.
    pub names: Vec<String>,
    /// `key` (label present) or `key=value` (glob on the value).
    pub labels: Vec<String>,
    /// Image reference globs as shown by `docker ps` (e.g. `nginx:*`).
    pub images: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Byte budget of the queue between capture and sinks: lines held until every sink has
    /// acknowledged them. When it is spent, capture pauses reading.
    pub queue_bytes: ByteSize,
    /// Longest time a written line may sit in a sink's buffer before it is flushed.
    pub flush_interval: HumanDuration,
    /// How long a stop (SIGTERM/SIGINT) waits for capture to stop and the sinks to drain.
    /// After it, whatever is not acknowledged is abandoned (not checkpointed, so it is read
    /// again at the next start), checkpoints are persisted and the agent exits with code 3.
    pub shutdown_timeout: HumanDuration,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    pub stdout: Option<StdoutSinkConfig>,
    pub file: Option<FileSinkConfig>,
    pub loki: Option<LokiSinkConfig>,
    pub kafka: Option<KafkaSinkConfig>,
    /// The null sink: counts and discards (benchmarks: capture cost without output cost).
    /// `discard:` because a bare `null:` key is YAML's null; `"null":` (quoted) also works.
    #[serde(alias = "null")]
    pub discard: Option<NullSinkConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NullSinkConfig {}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutSinkConfig {}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSinkConfig {
    /// Path template; `{container_name}` and `{container_id}` are replaced.
    pub path: String,
    /// Close a container's file after this long without writes (it reopens on demand).
    pub idle_close: HumanDuration,
    /// When written lines count as acknowledged (the checkpoint moves only past those).
    pub fsync: FileFsync,
    /// With `fsync: interval`: the longest time between two fsyncs.
    pub fsync_interval: HumanDuration,
    /// Permission bits of created files, octal (further restricted by the umask).
    pub mode: String,
    /// Permission bits of created directories, octal (further restricted by the umask).
    pub dir_mode: String,
    /// Output files open at once at most; the least recently used idle one is closed first.
    pub max_open_files: usize,
    /// Rotation of the output files (none when absent).
    pub rotate: Option<FileRotateConfig>,
}

/// The file sink's fsync policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFsync {
    /// fsync at every flush, before acknowledging.
    Always,
    /// fsync at most every `fsync_interval`, acknowledging only what it covered.
    Interval,
    /// Acknowledge once the OS has the bytes; never fsync.
    Never,
}

impl FileSinkConfig {
    fn validate(&self) -> Result<(), String> {
        if self.path.trim().is_empty() {
            return Err("sinks.file.path: must not be empty".to_string());
        }
        crate::sinks::template_of(self)?;
        self.file_mode()?;
        self.directory_mode()?;
        if self.fsync == FileFsync::Interval && self.fsync_interval.0.is_zero() {
            return Err("sinks.file.fsync_interval: must be > 0".to_string());
        }
        if self.max_open_files == 0 {
            return Err("sinks.file.max_open_files: must be at least 1".to_string());
        }
        if let Some(rotate) = &self.rotate {
            rotate.validate()?;
            // Rotated files are `<live name>.NNNNNN`; Docker names may hold dots and digits, so
            // a live name ending in the container's name could be another's rotated file.
            if crate::sinks::template_of(self)?.file_name_ends_in_a_value() {
                return Err(
                    "sinks.file.path: with sinks.file.rotate the file name must not end in \
                     {container_name} or another name or field placeholder (write e.g. \
                     {container_name}.log): rotated files append .NNNNNN to it, and the \
                     container web.000001 would be taken for web's first rotated file"
                        .to_string(),
                );
            }
        }
        Ok(())
    }

    /// `mode` as bits.
    pub fn file_mode(&self) -> Result<u32, String> {
        parse_mode(&self.mode).map_err(|e| format!("sinks.file.mode: {e}"))
    }

    /// `dir_mode` as bits.
    pub fn directory_mode(&self) -> Result<u32, String> {
        parse_mode(&self.dir_mode).map_err(|e| format!("sinks.file.dir_mode: {e}"))
    }
}

/// `"0640"` → 0o640. Octal digits only, at most 0777 (no setuid, setgid or sticky bits).
fn parse_mode(text: &str) -> Result<u32, String> {
    let bits = u32::from_str_radix(text, 8)
        .ok()
        .filter(|_| !text.is_empty() && text.len() <= 4)
        .ok_or_else(|| format!("{text:?} is not an octal mode such as \"0640\""))?;
    if bits > 0o777 {
        return Err(format!("{text:?} sets bits beyond 0777"));
    }
    Ok(bits)
}

pub use kafka::{
    KafkaAcks, KafkaBatchConfig, KafkaCompression, KafkaEncoding, KafkaSasl, KafkaSinkConfig,
    KafkaTls, SaslMechanism,
};
pub use loki::{
    BasicAuth, BufferConfig, FsyncMode, LineOverflow, LokiBatchConfig, LokiEncoding,
    LokiSinkConfig, RetryConfig, TlsConfig,
};
pub use loki::{MAX_LABEL_VALUE, MAX_LABELS, RECORD_FIELDS, valid_label_name};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    pub state_dir: PathBuf,
    pub interval: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` of the metrics/health listener (a host name is resolved at bind); empty
    /// disables it.
    pub listen: String,
    /// A connection that has not sent a complete request head this long after it opened (or
    /// after its previous response, for keep-alive) is closed.
    pub header_read_timeout: HumanDuration,
    /// Connections served at once; a new one beyond this closes the oldest (gracefully: a
    /// request it is serving is answered first).
    pub max_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `log_capturer=debug,warn`; level aliases such as
    /// `warning` are accepted, a bare word must be a level, no field filters (see
    /// `check_log_filter`). `LOG_CAPTURER_LOG_LEVEL`, else `RUST_LOG`, overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            docker: DockerConfig::default(),
            capture: CaptureConfig::default(),
            pipeline: PipelineConfig::default(),
            processing: crate::processing::ProcessingConfig::default(),
            sources: SourcesConfig::default(),
            sinks: SinksConfig {
                stdout: Some(StdoutSinkConfig {}),
                file: None,
                loki: None,
                kafka: None,
                discard: None,
            },
            checkpoint: CheckpointConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: String::new(),
            request_timeout: HumanDuration(Duration::from_secs(30)),
            tls: None,
            capture: CaptureMode::Api,
            containers_dir: String::new(),
        }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            rotation_interval: HumanDuration(Duration::from_secs(300)),
            initial_position: InitialPosition::End,
            max_line_bytes: ByteSize(256 * 1024),
            retry_backoff_initial: HumanDuration(Duration::from_millis(500)),
            retry_backoff_max: HumanDuration(Duration::from_secs(30)),
            include: FilterConfig::default(),
            exclude: FilterConfig::default(),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_bytes: ByteSize(64 * 1024 * 1024),
            flush_interval: HumanDuration(Duration::from_millis(200)),
            // Below Kubernetes' default 30 s grace period, so the final checkpoint write
            // happens before the orchestrator's SIGKILL.
            shutdown_timeout: HumanDuration(Duration::from_secs(20)),
        }
    }
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            path: "/var/log/log-capturer/{container_name}.log".to_string(),
            idle_close: HumanDuration(Duration::from_secs(300)),
            fsync: FileFsync::Interval,
            fsync_interval: HumanDuration(Duration::from_secs(1)),
            mode: "0640".to_string(),
            dir_mode: "0750".to_string(),
            max_open_files: 1024,
            rotate: None,
        }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            state_dir: PathBuf::from("/var/lib/log-capturer"),
            interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8001".to_string(),
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            max_connections: 64,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration problem, with where it is (`source`) and what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub source: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: path.display().to_string(),
            message: format!("cannot read config file: {e}"),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        // An empty file (a truncated deploy, a mount of the wrong path) would otherwise run on
        // the defaults: capture everything into the default state directory.
        if !has_content(text) {
            return Err(ConfigError {
                source: source.to_string(),
                message: "the config file is empty (no settings); refusing to run on \
                          defaults. Write the settings (see examples/config.yaml), or run \
                          without -c for the embedded default"
                    .to_string(),
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
            ConfigError {
                source: source.to_string(),
                message: match key_path.as_deref() {
                    Some(path) if path != "." => {
                        format!("{path}: {}", render_yaml_error(&e, source))
                    }
                    _ => render_yaml_error(&e, source),
                },
            }
        })?;
        config.validate().map_err(|message| ConfigError {
            source: source.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        // The embedded text is part of the binary and covered by a unit test; falling back to
        // the typed defaults keeps `run` working even if that test were skipped.
        Config::parse(DEFAULT_CONFIG_YAML, "<embedded default config>").unwrap_or_default()
    }

    /// Loki refuses a stream with more than 15 label names (`max_label_names_per_series`):
    /// a pipeline whose `labels` stages, with the sink's labels, could name more is refused
    /// here rather than every push failing.
    fn check_loki_label_count(&self) -> Result<(), String> {
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
            return Err(format!(
                "sinks.loki: labels and static_labels name {} labels, and the streams of \
                 sources.files add {label}; Loki takes at most {LOKI_MAX_LABEL_NAMES} per \
                 stream — send some as structured_metadata instead",
                sink.len()
            ));
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
                return Err(format!(
                    "processing.pipelines[{p}]: its labels stages and sinks.loki.labels / \
                     static_labels name {} labels ({}); Loki takes at most {LOKI_MAX_LABEL_NAMES} \
                     per stream — send some as structured_metadata instead",
                    names.len(),
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        let pipelines = crate::processing::Pipelines::compile(&self.processing)?;
        self.sources
            .validate(&pipelines.names().collect::<Vec<_>>())?;
        self.check_loki_label_count()?;
        let c = &self.capture;
        if c.rotation_interval.0 < Duration::from_secs(1) {
            return Err(format!(
                "capture.rotation_interval: {:?} is below the 1s minimum",
                c.rotation_interval.0
            ));
        }
        if c.max_line_bytes.0 < 1024 || c.max_line_bytes.0 > 64 * 1024 * 1024 {
            return Err(format!(
                "capture.max_line_bytes: {} is outside 1KiB..64MiB",
                c.max_line_bytes.0
            ));
        }
        if c.retry_backoff_initial.0.is_zero() || c.retry_backoff_initial.0 > c.retry_backoff_max.0
        {
            return Err(
                "capture.retry_backoff_initial: must be > 0 and <= capture.retry_backoff_max"
                    .to_string(),
            );
        }
        for (key, filter) in [
            ("capture.include", &c.include),
            ("capture.exclude", &c.exclude),
        ] {
            for (i, label) in filter.labels.iter().enumerate() {
                if label.is_empty() || label.starts_with('=') {
                    return Err(format!(
                        "{key}.labels[{i}]: {label:?} is not `key` or `key=value`"
                    ));
                }
            }
        }
        if self.pipeline.queue_bytes.0 < 64 * 1024 {
            return Err("pipeline.queue_bytes: must be at least 64KiB".to_string());
        }
        if self.pipeline.flush_interval.0.is_zero() {
            return Err("pipeline.flush_interval: must be > 0".to_string());
        }
        if self.pipeline.shutdown_timeout.0 < Duration::from_secs(1) {
            return Err("pipeline.shutdown_timeout: must be at least 1s".to_string());
        }
        let s = &self.sinks;
        if s.stdout.is_none()
            && s.file.is_none()
            && s.loki.is_none()
            && s.kafka.is_none()
            && s.discard.is_none()
        {
            return Err(
                "sinks: at least one sink (stdout, file, loki, kafka, discard) must be configured"
                    .to_string(),
            );
        }
        if let Some(loki) = &self.sinks.loki {
            loki.validate()?;
        }
        if let Some(kafka) = &self.sinks.kafka {
            if !cfg!(feature = "kafka") {
                return Err(
                    "sinks.kafka: this build has no Kafka sink (build with the `kafka` feature)"
                        .to_string(),
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
            )?;
        }
        if self.checkpoint.state_dir.as_os_str().is_empty() {
            return Err("checkpoint.state_dir: must not be empty".to_string());
        }
        if self.checkpoint.interval.0 < Duration::from_millis(100) {
            return Err("checkpoint.interval: must be at least 100ms".to_string());
        }
        check_listen(&self.http.listen).map_err(|e| format!("http.listen: {e}"))?;
        if self.http.header_read_timeout.0 < Duration::from_millis(100) {
            return Err("http.header_read_timeout: must be at least 100ms".to_string());
        }
        if self.http.max_connections == 0 {
            return Err("http.max_connections: must be at least 1".to_string());
        }
        if !self.docker.host.is_empty()
            && let Err(e) = crate::docker::Endpoint::parse(&self.docker.host)
        {
            return Err(format!("docker.host: {e}"));
        }
        if let Some(tls) = &self.docker.tls {
            tls.validate()?;
        }
        if !self.docker.containers_dir.is_empty()
            && !std::path::Path::new(&self.docker.containers_dir).is_absolute()
        {
            return Err(format!(
                "docker.containers_dir: {:?} must be an absolute path (where Docker's containers \
                 directory is mounted, e.g. /var/lib/docker/containers)",
                self.docker.containers_dir
            ));
        }
        check_log_filter(&self.log.level).map_err(|e| format!("log.level: {e}"))?;
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
pub fn check_log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    // Targets, span names and levels only: field filters (`{...}`) and other characters take
    // tracing-subscriber down paths fuzzing broke (see above; also an ordering invariant of
    // field matches that fails its own debug assertion).
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-:.=[], ".contains(c);
    if !spec.chars().all(allowed) {
        return Err(format!(
            "{spec:?} is not a log filter: use a level such as info or debug, or directives \
             such as warn,log_capturer=debug (letters, digits and _-:.=[], only; field \
             filters {{...}} are not supported)"
        ));
    }
    let normalized = log_level::normalize(spec).map_err(|e| format!("{spec:?}: {e}"))?;
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(normalized)
        .map_err(|e| format!("{spec:?} is not a log filter: {e}"))
}

/// `http.listen`: empty (no listener), an address (`127.0.0.1:8001`, `[::1]:8001`) or a host
/// name and port (`localhost:8001`), resolved when the listener is bound.
pub fn check_listen(listen: &str) -> Result<(), String> {
    if listen.is_empty() || listen.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        format!(
            "{listen:?} is not host:port (e.g. 127.0.0.1:8001, [::1]:8001, localhost:8001; \
             empty disables the listener)"
        )
    };
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

#[cfg(test)]
mod tests {
    #[test]
    fn log_filters_with_blanks_and_multibyte_text_are_parsed_without_panic() {
        assert!(super::log_filter("info").is_some());
        assert!(super::log_filter(" warn, log_capturer=debug ").is_some());
        assert!(super::log_filter("info, log_capturer[capture]=trace").is_some());
        // Panicked inside tracing-subscriber before the directives were trimmed.
        assert!(super::log_filter(" é=info").is_none());
        assert!(super::log_filter("info,  ß[x]=debug").is_none());
        // Field filters: a regex blow-up, and a failed ordering invariant (a debug panic).
        assert!(super::log_filter("x[s{f=1}]=debug").is_none());
        let crash = String::from_utf8_lossy(include_bytes!(
            "../../fuzz/corpus/config_yaml/log-level-field-filter-ordering"
        ));
        assert!(crate::config::Config::parse(&crash, "crash.yaml").is_err());
        assert!(super::log_filter("info=nonsense=").is_none());
        // Compiled as a regex, this field value took minutes and more than 2 GiB.
        let hostile = String::from_utf8_lossy(include_bytes!(
            "../../fuzz/corpus/config_yaml/log-level-regex-blowup"
        ));
        let level = hostile
            .lines()
            .find_map(|l| l.trim().strip_prefix("level: "));
        let _ = super::log_filter(level.expect("level line"));
    }

    use super::*;

    fn err(yaml: &str) -> String {
        match Config::parse(yaml, "test.yaml") {
            Ok(_) => panic!("expected an error for {yaml:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn embedded_default_parses() {
        let c = Config::parse(DEFAULT_CONFIG_YAML, "default").expect("default config");
        assert!(c.sinks.stdout.is_some());
        assert_eq!(c.http.listen, "127.0.0.1:8001");
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../examples/config.yaml");
        Config::parse(text, "examples/config.yaml").expect("example config");
    }

    #[test]
    fn more_labels_than_loki_takes_are_refused() {
        let yaml = |n: usize| {
            let fields: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
            format!(
                "sinks:\n  loki:\n    url: http://127.0.0.1:3100\n    labels: [container_name, stream]\n\
                 processing:\n  pipelines:\n    - name: p\n      stages:\n        - labels: {{ fields: [{}] }}\n",
                fields.join(", ")
            )
        };
        assert!(Config::parse(&yaml(13), "test.yaml").is_ok());
        let e = err(&yaml(14));
        assert!(e.contains("processing.pipelines[0]"), "{e}");
        assert!(e.contains("at most 15"), "{e}");
    }

    /// The streams of host files carry `filename` besides the sink's labels: counted when
    /// `sources.files` has groups (and for the pipelines they use), unless `labels` names the
    /// path itself.
    #[test]
    fn the_filename_label_of_host_files_counts() {
        let yaml = |labels: &[&str], files: &str| {
            format!(
                "sinks:\n  loki:\n    url: http://127.0.0.1:3100\n    labels: [{}]\n{files}",
                labels.join(", ")
            )
        };
        let names: Vec<String> = (0..15).map(|i| format!("f{i}")).collect();
        let fifteen: Vec<&str> = names.iter().map(String::as_str).collect();
        let files = "sources:\n  files:\n    - include: [/var/log/*.log]\n";
        assert!(Config::parse(&yaml(&fifteen, ""), "test.yaml").is_ok());
        let e = err(&yaml(&fifteen, files));
        assert!(e.contains("sinks.loki") && e.contains("filename"), "{e}");
        let mut with_file = fifteen.clone();
        with_file[14] = "file";
        assert!(Config::parse(&yaml(&with_file, files), "test.yaml").is_ok());
        // A pipeline of a file group: its labels stages, the sink's and filename.
        let piped = |stage_fields: usize, group_pipeline: &str| {
            let fields: Vec<String> = (0..stage_fields).map(|i| format!("s{i}")).collect();
            format!(
                "{}sources:\n  files:\n    - include: [/var/log/*.log]\n      {group_pipeline}\n\
                 processing:\n  pipelines:\n    - name: p\n      stages:\n        \
                 - labels: {{ fields: [{}] }}\n",
                yaml(&["container_name", "stream"], ""),
                fields.join(", ")
            )
        };
        assert!(Config::parse(&piped(13, "pipeline: p"), "test.yaml").is_err());
        assert!(Config::parse(&piped(12, "pipeline: p"), "test.yaml").is_ok());
        assert!(Config::parse(&piped(13, "fields: { job: x }"), "test.yaml").is_ok());
    }

    #[test]
    fn bad_duration_names_key_and_value() {
        let e = err("capture:\n  rotation_interval: 5x\n");
        assert!(e.contains("capture.rotation_interval"), "{e}");
        assert!(e.contains("\"5x\" is not a duration"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_with_path() {
        let e = err("capture:\n  rotation_intervl: 5s\n");
        assert!(e.contains("capture"), "{e}");
        assert!(e.contains("rotation_intervl"), "{e}");
    }

    #[test]
    fn semantic_errors_name_key() {
        assert!(
            err("capture:\n  rotation_interval: 500ms\n").contains("capture.rotation_interval")
        );
        assert!(err("http:\n  listen: nope\n").contains("http.listen"));
        assert!(err("docker:\n  host: ftp://x\n").contains("docker.host"));
        assert!(
            err("capture:\n  include:\n    labels: ['=x']\n").contains("capture.include.labels[0]")
        );
        assert!(err("capture:\n  max_line_bytes: 12XB\n").contains("capture.max_line_bytes"));
        assert!(err("sinks: {}\n").contains("at least one sink"));
    }

    #[test]
    fn file_sink_keys() {
        let c = Config::parse("sinks:\n  file: {}\n", "t").expect("defaults");
        let f = c.sinks.file.expect("file sink");
        assert_eq!(f.fsync, FileFsync::Interval);
        assert_eq!(f.fsync_interval.0, Duration::from_secs(1));
        assert_eq!((f.file_mode(), f.directory_mode()), (Ok(0o640), Ok(0o750)));
        assert_eq!(f.max_open_files, 1024);
        let c = Config::parse(
            "sinks:\n  file:\n    fsync: always\n    mode: \"0600\"\n    dir_mode: \"700\"\n",
            "t",
        )
        .expect("valid");
        let f = c.sinks.file.expect("file sink");
        assert_eq!(f.fsync, FileFsync::Always);
        assert_eq!((f.file_mode(), f.directory_mode()), (Ok(0o600), Ok(0o700)));
        assert!(err("sinks:\n  file:\n    fsync: sometimes\n").contains("sinks.file.fsync"));
        assert!(err("sinks:\n  file:\n    mode: \"0648\"\n").contains("sinks.file.mode"));
        assert!(err("sinks:\n  file:\n    mode: \"4755\"\n").contains("sinks.file.mode"));
        assert!(err("sinks:\n  file:\n    max_open_files: 0\n").contains("max_open_files"));
        let long = format!(
            "sinks:\n  file:\n    path: /x/{}{{container_name}}\n",
            "p".repeat(240)
        );
        assert!(err(&long).contains("sinks.file.path"));
    }

    #[test]
    fn initial_position_values() {
        let c = Config::parse(
            "capture:\n  initial_position: beginning\nsinks:\n  stdout: {}\n",
            "t",
        )
        .expect("valid");
        assert_eq!(c.capture.initial_position, InitialPosition::Beginning);
        assert!(err("capture:\n  initial_position: middle\n").contains("capture.initial_position"));
    }

    #[test]
    fn empty_file_is_refused() {
        for text in ["", "\n  \n", "# only a comment\n\n# another\n"] {
            let e = err(text);
            assert!(e.contains("test.yaml: the config file is empty"), "{e}");
        }
    }

    #[test]
    fn duplicate_key_names_its_path() {
        let e = err("capture:\n  include:\n    names: [a]\n    names: [b]\n");
        assert!(e.starts_with("test.yaml: capture.include.names: "), "{e}");
        assert!(e.contains("duplicate mapping key"), "{e}");
        let e = err("sinks:\n  stdout: {}\nsinks:\n  stdout: {}\n");
        assert!(e.starts_with("test.yaml: sinks: "), "{e}");
        assert!(!e.contains('?'), "{e}");
    }

    #[test]
    fn lifecycle_keys_have_defaults_and_limits() {
        let c = Config::parse("sinks:\n  stdout: {}\n", "t").expect("valid");
        assert_eq!(c.pipeline.shutdown_timeout.0, Duration::from_secs(20));
        assert_eq!(c.http.header_read_timeout.0, Duration::from_secs(10));
        assert_eq!(c.http.max_connections, 64);
        assert!(err("pipeline:\n  shutdown_timeout: 10ms\n").contains("pipeline.shutdown_timeout"));
        assert!(err("http:\n  max_connections: 0\n").contains("http.max_connections"));
        assert!(err("http:\n  header_read_timeout: 1ms\n").contains("http.header_read_timeout"));
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let yaml = "sinks:\n  loki:\n    url: http://127.0.0.1:3100/loki/api/v1/push\n    \
                    basic_auth: { username: u, password: pw-s3cret-1 }\n    \
                    headers: { Authorization: tok-s3cret-2, X-Api-Key: key-s3cret-3 }\n";
        let c = Config::parse(yaml, "t").expect("valid");
        let loki = c.sinks.loki.as_ref().expect("loki");
        assert_eq!(
            loki.basic_auth.as_ref().map(|a| a.password.expose()),
            Some("pw-s3cret-1")
        );
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("X-Api-Key"),
            "header names stay visible: {shown}"
        );

        let yaml = "sinks:\n  loki:\n    bearer_token: tok-s3cret-4\n";
        let c = Config::parse(yaml, "t").expect("valid");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn listen_accepts_host_names() {
        for ok in [
            "",
            "127.0.0.1:8001",
            "[::1]:8001",
            "0.0.0.0:0",
            "localhost:8001",
            "metrics.example-host.internal:9100",
        ] {
            let c = Config::parse(
                &format!("sinks:\n  stdout: {{}}\nhttp:\n  listen: \"{ok}\"\n"),
                "t",
            );
            assert!(c.is_ok(), "{ok}: {:?}", c.err());
        }
        for bad in [
            "nope",
            "localhost",
            ":8001",
            "localhost:",
            "localhost:99999",
            "local host:80",
            "a..b:80",
            "http://x:80",
        ] {
            let e = err(&format!("http:\n  listen: \"{bad}\"\n"));
            assert!(e.starts_with("test.yaml: http.listen: "), "{bad}: {e}");
        }
    }

    #[test]
    fn log_level_accepts_aliases_and_refuses_bare_non_levels() {
        for level in [
            "warning",
            "WARN",
            "err",
            "critical",
            "fatal",
            "information",
            "warn,log_capturer=debug",
        ] {
            let c = Config::parse(&format!("log:\n  level: \"{level}\"\n"), "t");
            assert!(c.is_ok(), "{level}: {:?}", c.err());
        }
        let e = err("log:\n  level: verbose\n");
        assert!(e.starts_with("test.yaml: log.level: \"verbose\": "), "{e}");
        assert!(e.contains("not a level"), "{e}");
        // `warning` used to pass as a target and silence every line: it must now enable warn.
        use tracing::level_filters::LevelFilter;
        let filter = log_filter("warning").expect("alias");
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::WARN));
    }

    #[test]
    fn yaml_errors_show_the_file_name_and_say_error_once() {
        let e = err("capture:\n  rotation_interval: 5x\n");
        assert!(e.contains("--> test.yaml:2:22"), "{e}");
        assert!(!e.contains("<input>"), "{e}");
        assert!(!e.contains("error:"), "{e}");
    }
}
