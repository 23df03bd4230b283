//! `Metrics::new`: every family registered with its name and help text, reason series at 0.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::*;

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
        for &result in RELOAD_RESULTS {
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
            prometheus_client::metrics::info::Info::new(
                crate::observability::process::build_labels(),
            ),
        );
        r.register_collector(Box::new(crate::observability::process::ProcessCollector));
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
        let kafka = crate::observability::kafka_metrics::KafkaMetrics::default();
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
}
