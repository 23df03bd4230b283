//! Every metric the agent exports. Names follow https://prometheus.io/docs/practices/naming/
//! (base units in the name, `_total` on counters); the renames from older names are listed in
//! the README ("Metric renames").
//! Label values are bounded: container names (removed when the container is destroyed),
//! stream kinds, and fixed reason strings — never free-form error text. Each failure family's
//! reasons are listed once below (`*_REASONS`) and all start at 0, so an alert on a reason
//! needs no `or vector(0)`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

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

/// Results of a config reload: `applied` (a new pipeline generation or log level),
/// `unchanged`, `invalid` (the new file did not load), `refused` (a key needs a restart),
/// `failed` (valid, but could not be started; the old config runs again).
pub const RELOAD_RESULTS: [&str; 5] = ["applied", "unchanged", "invalid", "refused", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkReasonLabels {
    pub sink: &'static str,
    pub reason: &'static str,
}

/// Reasons of `log_capturer_container_stream_errors_total` (all start at 0).
pub const STREAM_ERROR_REASONS: &[&str] = &[
    "read",
    "decode",
    "daemon_stream_error",
    "open_transport",
    "open_timeout",
    "open_failed",
    "unreadable_log_driver",
    "gone_before_read",
    "events_open",
    "events_dropped",
    "events_decode",
    "list",
    "inspect",
    "line_without_timestamp",
    "pause_timer",
];

/// Reasons of `log_capturer_sink_failures_total` for the local sinks (stdout, file, discard).
pub const LOCAL_SINK_FAILURE_REASONS: &[&str] = &["io", "permanent", "closed"];

/// Reasons of `log_capturer_sink_failures_total` for the Loki sink.
pub const LOKI_SINK_FAILURE_REASONS: &[&str] = &[
    "connect",
    "timeout",
    "429",
    "5xx",
    "4xx",
    "dead_letter",
    "encode",
];

/// Reasons of `log_capturer_dead_letters_total` (Loki's answer).
pub const DEAD_LETTER_REASONS: &[&str] = &["400", "413"];

/// Reasons (operations) of `log_capturer_buffer_errors_total`.
pub const BUFFER_ERROR_REASONS: &[&str] = &["append", "read", "consume"];

/// Reasons of `log_capturer_sink_lines_modified_total` (Loki).
pub const LINES_MODIFIED_REASONS: &[&str] =
    &["truncated", "split", "label_value_cut", "label_invalid"];

/// Reasons of `log_capturer_http_connections_closed_total`.
pub const HTTP_CLOSE_REASONS: &[&str] = &["header_timeout", "over_limit"];

/// Reasons of `log_capturer_file_sink_rotations_total`.
pub const FILE_ROTATION_REASONS: &[&str] = &["size", "age", "date", "external"];

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
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let streams_active = Gauge::default();
        let rotations = Family::<ContainerLabels, Counter>::default();
        // Stream ages from 1s to ~1h: rotation intervals go from 1s to hours.
        let stream_age = Histogram::new([
            0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ]);
        let logs_collected = Family::<ContainerStreamLabels, Counter>::default();
        let bytes_collected = Family::<ContainerLabels, Counter>::default();
        let stream_errors = Family::<ReasonLabels, Counter>::default();
        let lines_truncated = Counter::default();
        let containers_tracked = Gauge::default();
        let containers_unreadable = Gauge::default();
        let containers_ignored = Gauge::default();
        let events_reconnects = Counter::default();
        let containers_caught_up = Counter::default();
        let sink_lines = Family::<SinkLabels, Counter>::default();
        let sink_errors = Family::<SinkLabels, Counter>::default();
        let queue_bytes = Gauge::default();
        let queue_lines = Gauge::default();
        let queue_budget_bytes = Gauge::default();
        let oldest_unacked = Gauge::<f64, AtomicU64>::default();
        let sink_batches = Family::<SinkLabels, Counter>::default();
        let sink_retries = Family::<SinkLabels, Counter>::default();
        let sink_failures = Family::<SinkReasonLabels, Counter>::default();
        let sink_latency = Family::<SinkLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        let sink_lines_modified = Family::<SinkReasonLabels, Counter>::default();
        let buffer_bytes = Family::<SinkLabels, Gauge>::default();
        let buffer_records = Family::<SinkLabels, Gauge>::default();
        let buffer_full = Family::<SinkLabels, Counter>::default();
        let buffer_corrupt = Family::<SinkLabels, Counter>::default();
        let buffer_errors = Family::<SinkReasonLabels, Counter>::default();
        let dead_letters = Family::<SinkReasonLabels, Counter>::default();
        let checkpoint_writes = Counter::default();
        let checkpoint_errors = Counter::default();
        let checkpoint_corrupt = Counter::default();
        let checkpoint_lag = Gauge::<f64, AtomicU64>::default();
        let tasks_alive = Gauge::default();
        let fds_open = Gauge::default();
        let sink_worker_failures = Family::<SinkLabels, Counter>::default();
        let http_connections_closed = Family::<ReasonLabels, Counter>::default();

        let r = &mut registry;
        r.register(
            "log_capturer_container_streams_active",
            "Container log streams currently open",
            streams_active.clone(),
        );
        r.register(
            "log_capturer_container_stream_rotations",
            "Log streams closed and reopened on schedule",
            rotations.clone(),
        );
        r.register(
            "log_capturer_container_stream_age_seconds",
            "How long each log stream was open when it closed",
            stream_age.clone(),
        );
        r.register(
            "log_capturer_logs_collected",
            "Log lines captured",
            logs_collected.clone(),
        );
        r.register(
            "log_capturer_collected_bytes",
            "Bytes of log messages captured",
            bytes_collected.clone(),
        );
        r.register(
            "log_capturer_container_stream_errors",
            "Errors opening or reading container log streams or the events stream, or listing or inspecting containers, by reason",
            stream_errors.clone(),
        );
        r.register(
            "log_capturer_lines_truncated",
            "Lines cut at capture.max_line_bytes",
            lines_truncated.clone(),
        );
        r.register(
            "log_capturer_containers_tracked",
            "Containers the agent knows and captures or waits for",
            containers_tracked.clone(),
        );
        r.register(
            "log_capturer_containers_unreadable",
            "Containers whose log driver cannot be read (e.g. --log-driver none)",
            containers_unreadable.clone(),
        );
        r.register(
            "log_capturer_containers_ignored",
            "Existing containers the filters do not select (or the agent's own)",
            containers_ignored.clone(),
        );
        r.register(
            "log_capturer_events_reconnects",
            "Times the Docker events stream was reconnected",
            events_reconnects.clone(),
        );
        r.register(
            "log_capturer_containers_caught_up",
            "Stopped containers without checkpoint read at start because they ran while no agent was watching",
            containers_caught_up.clone(),
        );
        r.register(
            "log_capturer_sink_lines",
            "Lines written and flushed by each sink",
            sink_lines.clone(),
        );
        r.register(
            "log_capturer_sink_errors",
            "Write or flush errors by sink (the batch is retried)",
            sink_errors.clone(),
        );
        r.register(
            "log_capturer_queue_bytes",
            "Bytes of the queue budget held by batches not yet acknowledged by every sink",
            queue_bytes.clone(),
        );
        r.register(
            "log_capturer_queue_lines",
            "Lines in the queue not yet acknowledged by every sink",
            queue_lines.clone(),
        );
        r.register(
            "log_capturer_queue_budget_bytes",
            "The queue's byte budget (pipeline.queue_bytes)",
            queue_budget_bytes.clone(),
        );
        r.register(
            "log_capturer_oldest_unacked_age_seconds",
            "Age of the oldest batch not yet acknowledged by every sink",
            oldest_unacked.clone(),
        );
        r.register(
            "log_capturer_sink_batches",
            "Batches delivered (written and flushed, or accepted) per sink",
            sink_batches.clone(),
        );
        r.register(
            "log_capturer_sink_retries",
            "Delivery attempts retried per sink",
            sink_retries.clone(),
        );
        r.register(
            "log_capturer_sink_failures",
            "Failed delivery attempts per sink and reason",
            sink_failures.clone(),
        );
        r.register(
            "log_capturer_sink_send_latency_seconds",
            "Time to deliver one batch (successful attempts)",
            sink_latency.clone(),
        );
        r.register(
            "log_capturer_sink_lines_modified",
            "Lines a sink changed to fit its limits (truncated, split, label_value_cut, label_invalid), per sink and reason",
            sink_lines_modified.clone(),
        );
        r.register(
            "log_capturer_buffer_bytes",
            "Bytes waiting in a sink's on-disk buffer",
            buffer_bytes.clone(),
        );
        r.register(
            "log_capturer_buffer_batches",
            "Batches (one record each) waiting in a sink's on-disk buffer",
            buffer_records.clone(),
        );
        let buffer_max_bytes = Family::<SinkLabels, Gauge>::default();
        r.register(
            "log_capturer_buffer_max_bytes",
            "The cap of a sink's on-disk buffer (buffer.max_bytes)",
            buffer_max_bytes.clone(),
        );
        r.register(
            "log_capturer_buffer_full",
            "Times a sink's on-disk buffer was full (capture then pauses)",
            buffer_full.clone(),
        );
        r.register(
            "log_capturer_buffer_corrupt",
            "Torn or corrupt records found and skipped in on-disk buffers",
            buffer_corrupt.clone(),
        );
        r.register(
            "log_capturer_buffer_errors",
            "I/O failures of a sink's on-disk buffer, by operation (append, read, consume)",
            buffer_errors.clone(),
        );
        r.register(
            "log_capturer_dead_letters",
            "Batches rejected by a sink and kept in its dead-letter store, by reason",
            dead_letters.clone(),
        );
        r.register(
            "log_capturer_checkpoint_writes",
            "Checkpoint files written",
            checkpoint_writes.clone(),
        );
        r.register(
            "log_capturer_checkpoint_errors",
            "Checkpoint files that could not be written",
            checkpoint_errors.clone(),
        );
        r.register(
            "log_capturer_checkpoint_corrupt",
            "Checkpoint files found corrupt or unreadable and set aside",
            checkpoint_corrupt.clone(),
        );
        r.register(
            "log_capturer_checkpoint_lag_seconds",
            "Age of the oldest acknowledged position not yet persisted (0 when all are)",
            checkpoint_lag.clone(),
        );
        r.register(
            "log_capturer_tasks_alive",
            "Tokio tasks alive in the agent",
            tasks_alive.clone(),
        );
        r.register(
            "log_capturer_file_descriptors_open",
            "File descriptors open in the agent process",
            fds_open.clone(),
        );
        r.register(
            "log_capturer_sink_worker_failures",
            "Sink workers that panicked or ended while capture ran (the agent then stops, exit 3)",
            sink_worker_failures.clone(),
        );
        r.register(
            "log_capturer_http_connections_closed",
            "HTTP connections closed by the agent, by reason (header_timeout, over_limit)",
            http_connections_closed.clone(),
        );
        let sink_containers_held = Family::<SinkLabels, Gauge>::default();
        let sink_torn_records = Family::<SinkLabels, Counter>::default();
        let sink_syncs = Family::<SinkLabels, Counter>::default();
        let file_sink_files_open = Gauge::default();
        r.register(
            "log_capturer_sink_containers_held",
            "Containers whose output failed permanently: not written, checkpoint frozen",
            sink_containers_held.clone(),
        );
        r.register(
            "log_capturer_sink_torn_records",
            "Torn last records cut from output files at open",
            sink_torn_records.clone(),
        );
        r.register(
            "log_capturer_sink_syncs",
            "fsync rounds made before acknowledging (sinks.file.fsync)",
            sink_syncs.clone(),
        );
        r.register(
            "log_capturer_file_sink_files_open",
            "Output files the file sink holds open",
            file_sink_files_open.clone(),
        );
        let config_last_reload_successful = Gauge::default();
        let config_last_reload_success_timestamp = Gauge::<f64, AtomicU64>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        for result in RELOAD_RESULTS {
            let _ = config_reloads.get_or_create(&ResultLabels { result });
        }
        r.register(
            "log_capturer_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1 at start)",
            config_last_reload_successful.clone(),
        );
        r.register(
            "log_capturer_config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration load (the start, or a reload)",
            config_last_reload_success_timestamp.clone(),
        );
        r.register(
            "log_capturer_config_reloads",
            "Configuration reload attempts (SIGHUP, POST /-/reload), by result",
            config_reloads.clone(),
        );

        let docker_unreachable = Counter::default();
        r.register(
            "log_capturer_docker_unreachable",
            "Times the Docker engine did not answer the version negotiation (retried with back-off)",
            docker_unreachable.clone(),
        );
        let container_lag_seconds = Family::<ContainerLabels, Gauge<f64, AtomicU64>>::default();
        r.register(
            "log_capturer_container_lag_seconds",
            "Seconds between now and the timestamp of the container's last acknowledged line while some of its lines are not yet acknowledged by every sink, else 0",
            container_lag_seconds.clone(),
        );
        r.register(
            "log_capturer_build",
            "The agent's version, git commit and compiler (value 1)",
            prometheus_client::metrics::info::Info::new(super::process::build_labels()),
        );
        r.register_collector(Box::new(super::process::ProcessCollector));
        for &reason in STREAM_ERROR_REASONS {
            let _ = stream_errors.get_or_create(&ReasonLabels { reason });
        }
        for &reason in HTTP_CLOSE_REASONS {
            let _ = http_connections_closed.get_or_create(&ReasonLabels { reason });
        }
        let file_sink_rotations = Family::<ReasonLabels, Counter>::default();
        for &reason in FILE_ROTATION_REASONS {
            // Initialised so that alerts need no `or vector(0)`.
            let _ = file_sink_rotations.get_or_create(&ReasonLabels { reason });
        }
        let file_sink_compression_failures = Counter::default();
        let file_sink_retention_deletions = Counter::default();
        let file_sink_rotation_failures = Counter::default();
        r.register(
            "log_capturer_file_sink_rotations",
            "File sink output files rotated, by reason (size, age, date, external)",
            file_sink_rotations.clone(),
        );
        r.register(
            "log_capturer_file_sink_compression_failures",
            "Rotated output files that could not be gzip-compressed (kept uncompressed)",
            file_sink_compression_failures.clone(),
        );
        r.register(
            "log_capturer_file_sink_retention_deletions",
            "Rotated output files deleted to keep sinks.file.rotate.max_files",
            file_sink_retention_deletions.clone(),
        );
        r.register(
            "log_capturer_file_sink_rotation_failures",
            "File sink rotation steps that failed (rename, listing or deleting rotated files)",
            file_sink_rotation_failures.clone(),
        );

        let processing = crate::processing::ProcessingMetrics::default();
        processing.register(r);
        let files = crate::sources::files::metrics::FileSourceMetrics::default();
        files.register(r);
        let json_file = crate::capture::json_file::metrics::JsonFileMetrics::default();
        json_file.register(r);
        let kafka = super::kafka_metrics::KafkaMetrics::default();
        kafka.register(r);
        let metrics = Metrics {
            docker_unreachable,
            container_lag_seconds,
            config_last_reload_successful,
            config_last_reload_success_timestamp,
            buffer_max_bytes,
            streams_active,
            rotations,
            stream_age,
            logs_collected,
            bytes_collected,
            stream_errors,
            lines_truncated,
            containers_tracked,
            containers_unreadable,
            containers_ignored,
            events_reconnects,
            containers_caught_up,
            sink_lines,
            sink_errors,
            queue_bytes,
            queue_lines,
            queue_budget_bytes,
            oldest_unacked,
            oldest_unacked_probe: std::sync::OnceLock::new(),
            sink_batches,
            sink_retries,
            sink_failures,
            sink_latency,
            sink_lines_modified,
            buffer_bytes,
            buffer_records,
            buffer_full,
            buffer_corrupt,
            buffer_errors,
            dead_letters,
            checkpoint_writes,
            checkpoint_errors,
            checkpoint_corrupt,
            checkpoint_lag,
            tasks_alive,
            fds_open,
            sink_worker_failures,
            http_connections_closed,
            sink_containers_held,
            sink_torn_records,
            sink_syncs,
            file_sink_files_open,
            config_reloads,
            file_sink_rotations,
            file_sink_compression_failures,
            file_sink_retention_deletions,
            file_sink_rotation_failures,
            processing,
            files,
            json_file,
            kafka,
            registry,
        };
        metrics.config_loaded();
        metrics
    }

    pub fn stream_error(&self, reason: &'static str) {
        self.stream_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
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
mod tests {
    use super::*;

    /// The string literals that follow `marker` in `text` (e.g. `stream_error("` → the reason).
    fn literals_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.match_indices(marker)
            .filter_map(|(i, _)| {
                let rest = text[i + marker.len()..].trim_start();
                let rest = rest.strip_prefix('"')?;
                Some(&rest[..rest.find('"')?])
            })
            .collect()
    }

    fn source(path: &str) -> String {
        let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    /// Every reason the code counts is in its family's list, so it starts at 0 (a reason
    /// added without listing it would appear only after its first failure).
    /// A sink removed by a config reload leaves no gauge behind (a "buffer above 80 %" alert
    /// would fire for ever); a new worker starts with no held container.
    #[test]
    fn a_removed_sink_leaves_no_gauges_and_a_new_worker_holds_nothing() {
        let metrics = Metrics::new();
        let loki = SinkLabels { sink: "loki" };
        metrics.buffer_bytes.get_or_create(&loki).set(900);
        metrics.buffer_max_bytes.get_or_create(&loki).set(1000);
        let file = SinkLabels { sink: "file" };
        metrics.sink_containers_held.get_or_create(&file).set(2);
        metrics.file_sink_files_open.set(5);
        metrics.forget_sink_gauges("loki");
        let text = metrics.render();
        assert!(!text.contains("buffer_bytes{sink=\"loki\"}"), "{text}");
        assert!(!text.contains("buffer_max_bytes{sink=\"loki\"}"), "{text}");
        assert!(text.contains("log_capturer_sink_containers_held{sink=\"file\"} 2"));
        metrics.init_sink("file", false);
        let text = metrics.render();
        assert!(
            text.contains("log_capturer_sink_containers_held{sink=\"file\"} 0"),
            "{text}"
        );
        metrics.forget_sink_gauges("file");
        let text = metrics.render();
        assert!(
            !text.contains("sink_containers_held{sink=\"file\"}"),
            "{text}"
        );
        assert!(
            text.contains("log_capturer_file_sink_files_open 0"),
            "{text}"
        );
    }

    #[test]
    fn every_counted_reason_is_listed_and_starts_at_zero() {
        let mut stream = Vec::new();
        for path in [
            "src/capture/task.rs",
            "src/discovery/events.rs",
            "src/discovery/mod.rs",
            "src/discovery/reconcile.rs",
            "src/agent.rs",
        ] {
            let text = source(path);
            stream.extend(
                literals_after(&text, "stream_error(")
                    .into_iter()
                    .chain(literals_after(&text, "SessionEnd::Error("))
                    .chain(literals_after(&text, "=> \"open_"))
                    .map(str::to_string),
            );
        }
        assert!(stream.len() >= 10, "too few found: {stream:?}");
        for reason in &stream {
            assert!(
                STREAM_ERROR_REASONS.contains(&reason.as_str()),
                "stream error reason {reason:?} missing from STREAM_ERROR_REASONS"
            );
        }
        let loki: String = [
            "src/sinks/loki/client.rs",
            "src/sinks/loki/worker.rs",
            "src/sinks/loki/worker/send.rs",
            "src/sinks/loki/worker/spill.rs",
            "src/sinks/loki/worker/buffer_replay.rs",
            "src/sinks/loki/worker/dead_letters.rs",
        ]
        .iter()
        .map(|p| source(p))
        .collect();
        let known: Vec<&str> = [
            LOKI_SINK_FAILURE_REASONS,
            DEAD_LETTER_REASONS,
            BUFFER_ERROR_REASONS,
            LINES_MODIFIED_REASONS,
        ]
        .concat();
        let used: Vec<&str> = literals_after(&loki, "reason: ")
            .into_iter()
            .chain(literals_after(&loki, "Self::reason("))
            .chain(literals_after(&loki, "let label = if status == 413 {"))
            .chain(literals_after(&loki, "{ \"413\" } else {"))
            .filter(|r| !r.is_empty())
            .collect();
        assert!(used.len() >= 8, "too few found: {used:?}");
        for reason in used {
            assert!(known.contains(&reason), "Loki reason {reason:?} not listed");
        }
        let kafka: String = [
            "src/sinks/kafka/worker.rs",
            "src/sinks/kafka/worker/reports.rs",
            "src/sinks/kafka/worker/produce.rs",
            "src/sinks/kafka/worker/stores.rs",
        ]
        .iter()
        .map(|p| source(p))
        .collect();
        let kafka_known: Vec<&str> = [
            super::super::kafka_metrics::KAFKA_SINK_FAILURE_REASONS,
            super::super::kafka_metrics::KAFKA_DEAD_LETTER_REASONS,
            BUFFER_ERROR_REASONS,
        ]
        .concat();
        let used: Vec<&str> = literals_after(&kafka, "self.failed(")
            .into_iter()
            .chain(literals_after(&kafka, "self.sink_failure("))
            .chain(literals_after(&kafka, "Self::reason("))
            .chain(literals_after(&kafka, "label: "))
            .chain(literals_after(&kafka, "buffer_error(m, "))
            .chain(literals_after(&kafka, "kept_dead_letter(id, "))
            .collect();
        assert!(used.len() >= 12, "too few found: {used:?}");
        for reason in used {
            assert!(
                kafka_known.contains(&reason),
                "Kafka reason {reason:?} not listed"
            );
        }
        let writer = source("src/pipeline/writer.rs");
        for reason in literals_after(&writer, "reason: ") {
            assert!(
                LOCAL_SINK_FAILURE_REASONS.contains(&reason),
                "local sink reason {reason:?} not listed"
            );
        }

        let metrics = Metrics::new();
        metrics.init_sink("loki", true);
        metrics.init_sink("file", false);
        metrics.init_sink("kafka", true);
        let text = metrics.render();
        for reason in super::super::kafka_metrics::KAFKA_SINK_FAILURE_REASONS {
            for key in [
                format!(
                    "log_capturer_sink_failures_total{{sink=\"kafka\",reason=\"{reason}\"}} 0\n"
                ),
                format!("log_capturer_kafka_messages_failed_total{{reason=\"{reason}\"}} 0\n"),
            ] {
                assert!(text.contains(&key), "{key} not in:\n{text}");
            }
        }
        for reason in super::super::kafka_metrics::KAFKA_DEAD_LETTER_REASONS {
            let key = format!(
                "log_capturer_dead_letters_total{{sink=\"kafka\",reason=\"{reason}\"}} 0\n"
            );
            assert!(text.contains(&key), "{key} not in:\n{text}");
        }
        for family in [
            "log_capturer_kafka_messages_produced_total 0\n",
            "log_capturer_kafka_messages_acknowledged_total 0\n",
            "log_capturer_kafka_messages_retried_total 0\n",
            "log_capturer_kafka_messages_in_flight 0\n",
            "log_capturer_kafka_delivery_seconds_count 0\n",
            "log_capturer_buffer_full_total{sink=\"kafka\"} 0\n",
        ] {
            assert!(text.contains(family), "{family} not in:\n{text}");
        }
        for reason in STREAM_ERROR_REASONS {
            let key =
                format!("log_capturer_container_stream_errors_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&key), "{key} not in:\n{text}");
        }
        for (sink, reasons) in [
            ("loki", LOKI_SINK_FAILURE_REASONS),
            ("file", LOCAL_SINK_FAILURE_REASONS),
        ] {
            for reason in reasons {
                let key = format!(
                    "log_capturer_sink_failures_total{{sink=\"{sink}\",reason=\"{reason}\"}} 0\n"
                );
                assert!(text.contains(&key), "{key} not in:\n{text}");
            }
        }
        for (family, reasons) in [
            ("log_capturer_dead_letters_total", DEAD_LETTER_REASONS),
            ("log_capturer_buffer_errors_total", BUFFER_ERROR_REASONS),
        ] {
            for reason in reasons {
                let key = format!("{family}{{sink=\"loki\",reason=\"{reason}\"}} 0\n");
                assert!(text.contains(&key), "{key} not in:\n{text}");
            }
        }
        for reason in HTTP_CLOSE_REASONS {
            let key =
                format!("log_capturer_http_connections_closed_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&key), "{key} not in:\n{text}");
        }
    }
}
