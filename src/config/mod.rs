//! The agent's YAML configuration: typed structs with documented defaults, strict parsing
//! (unknown keys are errors) and semantic validation that reports the key path and the reason.

// `at!` (in `invalid`) is used by the modules declared after it.
#[macro_use]
mod invalid;
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
pub use overrides::{Override, OverrideReason, Overrides};
pub use rotate::{FileRotateConfig, RotateCompress};
pub use secret::Secret;
pub use sources::{CaptureMode, FileGroupConfig, FileSettings, SourcesConfig};
pub use units::{ByteSize, HumanDuration, parse_byte_size, parse_duration};

use serde::{Deserialize, Serialize};

use std::path::PathBuf;
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

mod load;
mod validate;

pub use invalid::InvalidConfig;
pub use load::ConfigError;
pub use validate::{ListenError, LogFilterError, check_listen, check_log_filter, log_filter};

#[cfg(test)]
mod tests;
