//! Every metric the agent exports. Names follow https://prometheus.io/docs/practices/naming/
//! (base units in the name, `_total` on counters); the renames from older names are listed in
//! the README ("Metric renames").
//! Label values are bounded: container names (removed when the container is destroyed),
//! stream kinds, and fixed reason strings — never free-form error text. Each failure family's
//! reasons are listed once below (`*_REASONS`, derived from the enums of `reasons`) and all
//! start at 0, so an alert on a reason needs no `or vector(0)`. `Metrics::new` (every family
//! registered) is in `metrics/register.rs`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

mod register;

pub use super::reasons::*;

// One label-set type per combination of labels (the derive wants a struct each): alike in
// shape only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    pub container_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerStreamLabels {
    pub container_name: String,
    pub stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkReasonLabels {
    pub sink: &'static str,
    pub reason: &'static str,
}

/// Results of a config reload (see `ReloadOutcome`).
pub const RELOAD_RESULTS: &[&str] = ReloadOutcome::LABELS;

/// Reasons of `log_capturer_container_stream_errors_total` (all start at 0).
pub const STREAM_ERROR_REASONS: &[&str] = StreamErrorReason::LABELS;

/// Reasons of `log_capturer_sink_failures_total` for the local sinks (stdout, file, discard).
pub const LOCAL_SINK_FAILURE_REASONS: &[&str] = LocalSinkFailureReason::LABELS;

/// Reasons of `log_capturer_sink_failures_total` for the Loki sink.
pub const LOKI_SINK_FAILURE_REASONS: &[&str] = LokiSinkFailureReason::LABELS;

/// Reasons of `log_capturer_dead_letters_total` (Loki's answer).
pub const DEAD_LETTER_REASONS: &[&str] = DeadLetterReason::LABELS;

/// Reasons (operations) of `log_capturer_buffer_errors_total`.
pub const BUFFER_ERROR_REASONS: &[&str] = BufferErrorReason::LABELS;

/// Reasons of `log_capturer_sink_lines_modified_total` (Loki).
pub const LINES_MODIFIED_REASONS: &[&str] = LinesModifiedReason::LABELS;

/// Reasons of `log_capturer_http_connections_closed_total`.
pub const HTTP_CLOSE_REASONS: &[&str] = HttpCloseReason::LABELS;

/// Reasons of `log_capturer_file_sink_rotations_total`.
pub const FILE_ROTATION_REASONS: &[&str] = FileRotationReason::LABELS;

/// Computes a gauge at scrape time (e.g. the age of the oldest unacknowledged batch).
pub type Probe = Box<dyn Fn() -> f64 + Send + Sync>;

pub struct Metrics {
    pub streams_active: Gauge,
    pub rotations: Family<ContainerLabels, Counter>,
    pub stream_age: Histogram,
    pub logs_collected: Family<ContainerStreamLabels, Counter>,
    /// Exported as `log_capturer_collected_bytes_total` (the field keeps its old name).
    pub bytes_collected: Family<ContainerLabels, Counter>,
    pub stream_errors: Family<ReasonLabels, Counter>,
    pub lines_truncated: Counter,
    pub containers_tracked: Gauge,
    pub containers_unreadable: Gauge,
    pub containers_ignored: Gauge,
    pub events_reconnects: Counter,
    /// Stopped containers without checkpoint found to have run while no agent watched.
    pub containers_caught_up: Counter,
    pub sink_lines: Family<SinkLabels, Counter>,
    pub sink_errors: Family<SinkLabels, Counter>,
    pub queue_bytes: Gauge,
    pub queue_lines: Gauge,
    pub queue_budget_bytes: Gauge,
    pub oldest_unacked: Gauge<f64, AtomicU64>,
    pub oldest_unacked_probe: std::sync::OnceLock<Probe>,
    pub sink_batches: Family<SinkLabels, Counter>,
    pub sink_retries: Family<SinkLabels, Counter>,
    pub sink_failures: Family<SinkReasonLabels, Counter>,
    pub sink_latency: Family<SinkLabels, Histogram>,
    pub sink_lines_modified: Family<SinkReasonLabels, Counter>,
    pub buffer_bytes: Family<SinkLabels, Gauge>,
    /// Records in a sink's on-disk buffer: one record is one batch (a Loki push), so it is
    /// exported as `log_capturer_buffer_batches`.
    pub buffer_records: Family<SinkLabels, Gauge>,
    /// The on-disk buffer's cap (`sinks.loki.buffer.max_bytes`).
    pub buffer_max_bytes: Family<SinkLabels, Gauge>,
    pub buffer_full: Family<SinkLabels, Counter>,
    pub buffer_corrupt: Family<SinkLabels, Counter>,
    /// On-disk buffer I/O failures, by operation (`append`, `read`, `consume`).
    pub buffer_errors: Family<SinkReasonLabels, Counter>,
    pub dead_letters: Family<SinkReasonLabels, Counter>,
    pub checkpoint_writes: Counter,
    pub checkpoint_errors: Counter,
    pub checkpoint_corrupt: Counter,
    pub checkpoint_lag: Gauge<f64, AtomicU64>,
    pub tasks_alive: Gauge,
    pub fds_open: Gauge,
    pub sink_worker_failures: Family<SinkLabels, Counter>,
    pub http_connections_closed: Family<ReasonLabels, Counter>,
    // File sink and local sink writer (issue 9, items 2, 7, 16, 20).
    pub sink_containers_held: Family<SinkLabels, Gauge>,
    pub sink_torn_records: Family<SinkLabels, Counter>,
    pub sink_syncs: Family<SinkLabels, Counter>,
    pub file_sink_files_open: Gauge,
    /// Times the Docker engine did not answer the version negotiation (retried with back-off).
    pub docker_unreachable: Counter,
    /// Seconds since the timestamp of the container's last acknowledged line while it has
    /// lines not yet acknowledged, else 0; set at scrape time from the status board.
    pub container_lag_seconds: Family<ContainerLabels, Gauge<f64, AtomicU64>>,
    /// 1 at start and after a good reload, 0 after a failed one (`config_loaded`).
    pub config_last_reload_successful: Gauge,
    /// When the config was last loaded: the start, then each good reload (`config_loaded`).
    pub config_last_reload_success_timestamp: Gauge<f64, AtomicU64>,
    /// Reload attempts by result (see `RELOAD_RESULTS`).
    pub config_reloads: Family<ResultLabels, Counter>,
    /// File sink rotations by reason (size, age, date, external).
    pub file_sink_rotations: Family<ReasonLabels, Counter>,
    /// Rotated files that could not be compressed (left uncompressed, tried again later).
    pub file_sink_compression_failures: Counter,
    /// Rotated files deleted by `sinks.file.rotate.max_files`.
    pub file_sink_retention_deletions: Counter,
    /// Rotation steps that failed (rename, listing, deleting); retried later, nothing lost.
    pub file_sink_rotation_failures: Counter,
    /// Per-pipeline processing counters (see `processing::metrics`).
    pub processing: crate::processing::ProcessingMetrics,
    /// The host-file source (see `sources::files::metrics`).
    pub files: crate::sources::files::metrics::FileSourceMetrics,
    /// The json-file capture mode (see `capture::json_file::metrics`).
    pub json_file: crate::capture::json_file::metrics::JsonFileMetrics,
    /// The Kafka sink's own families (see `kafka_metrics`).
    pub kafka: super::kafka_metrics::KafkaMetrics,
    pub registry: Registry,
}

impl Metrics {
    pub fn stream_error(&self, reason: StreamErrorReason) {
        self.stream_errors
            .get_or_create(&ReasonLabels {
                reason: reason.as_label(),
            })
            .inc();
    }

    /// A sink with an on-disk buffer (Loki, Kafka) starts: its series at 0 and its buffer's
    /// capacity.
    pub fn init_buffered_sink(&self, sink: &'static str, buffer_max_bytes: u64) {
        self.init_sink(sink, true);
        self.buffer_max_bytes
            .get_or_create(&SinkLabels { sink })
            .set(i64::try_from(buffer_max_bytes).unwrap_or(i64::MAX));
    }

    /// Creates a sink's series at 0 (every failure reason of its kind), so they exist before
    /// the first failure. Called when the sink's worker starts. `loki`: a network sink with
    /// a buffer and dead letters (Loki, Kafka).
    pub fn init_sink(&self, sink: &'static str, loki: bool) {
        let labels = SinkLabels { sink };
        let _ = self.sink_lines.get_or_create(&labels);
        let _ = self.sink_errors.get_or_create(&labels);
        let _ = self.sink_batches.get_or_create(&labels);
        let _ = self.sink_retries.get_or_create(&labels);
        let _ = self.sink_worker_failures.get_or_create(&labels);
        let with = |reason| SinkReasonLabels { sink, reason };
        let failures = if sink == "kafka" {
            super::kafka_metrics::KAFKA_SINK_FAILURE_REASONS
        } else if loki {
            LOKI_SINK_FAILURE_REASONS
        } else {
            LOCAL_SINK_FAILURE_REASONS
        };
        for &reason in failures {
            let _ = self.sink_failures.get_or_create(&with(reason));
        }
        if !loki {
            // A local sink holds a container whose own output cannot be written. A new worker
            // (at start, or after a config reload) holds none yet.
            self.sink_containers_held.get_or_create(&labels).set(0);
        }
        if sink == "file" {
            let _ = self.sink_torn_records.get_or_create(&labels);
        }
        if loki {
            let _ = self.buffer_full.get_or_create(&labels);
            let _ = self.buffer_corrupt.get_or_create(&labels);
            let dead_letter_reasons = if sink == "kafka" {
                self.kafka.init();
                super::kafka_metrics::KAFKA_DEAD_LETTER_REASONS
            } else {
                DEAD_LETTER_REASONS
            };
            for &reason in dead_letter_reasons {
                let _ = self.dead_letters.get_or_create(&with(reason));
            }
            for &reason in BUFFER_ERROR_REASONS {
                let _ = self.buffer_errors.get_or_create(&with(reason));
            }
            if sink != "kafka" {
                for &reason in LINES_MODIFIED_REASONS {
                    let _ = self.sink_lines_modified.get_or_create(&with(reason));
                }
            }
        }
    }

    /// The config was loaded and runs (at start, or by a reload): the reload gauges say so.
    pub fn config_loaded(&self) {
        self.config_last_reload_successful.set(1);
        self.config_last_reload_success_timestamp
            .set(crate::clock::now_ns() as f64 / 1e9);
    }

    /// Drops the gauges of a sink a config reload removed: they describe state (buffered
    /// bytes, held containers) that no longer exists, and would keep alerts firing. Its
    /// counters stay (they only grow, and `rate()` handles a series that stops).
    pub fn forget_sink_gauges(&self, sink: &'static str) {
        let labels = SinkLabels { sink };
        self.buffer_bytes.remove(&labels);
        self.buffer_records.remove(&labels);
        self.buffer_max_bytes.remove(&labels);
        self.sink_containers_held.remove(&labels);
        if sink == "file" {
            self.file_sink_files_open.set(0);
        }
    }

    /// Drops a destroyed container's label sets so churn does not grow the exposition.
    pub fn forget_container(&self, name: &str) {
        let c = ContainerLabels {
            container_name: name.to_string(),
        };
        self.rotations.remove(&c);
        self.bytes_collected.remove(&c);
        self.container_lag_seconds.remove(&c);
        for stream in ["stdout", "stderr", "tty"] {
            self.logs_collected.remove(&ContainerStreamLabels {
                container_name: name.to_string(),
                stream,
            });
        }
    }

    /// Refreshes process gauges and renders the exposition in OpenMetrics.
    pub fn render(&self) -> String {
        self.tasks_alive.set(super::resources::tasks_alive() as i64);
        self.fds_open.set(super::resources::open_fds() as i64);
        if let Some(probe) = self.oldest_unacked_probe.get() {
            self.oldest_unacked.set(probe());
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Renders the exposition in `format`.
    pub fn render_as(&self, format: super::exposition::Format) -> String {
        let openmetrics = self.render();
        match format {
            super::exposition::Format::OpenMetrics => openmetrics,
            super::exposition::Format::PrometheusText => {
                super::exposition::openmetrics_to_prometheus_text(&openmetrics)
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests;
