//! Every metric the agent exports. Names of the old Go agent are kept so dashboards still work.
//! Label values are bounded: container names (removed when the container is destroyed),
//! stream kinds, and fixed reason strings — never free-form error text.

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
pub struct SinkLabels {
    pub sink: &'static str,
}

pub struct Metrics {
    pub streams_active: Gauge,
    pub rotations: Family<ContainerLabels, Counter>,
    pub stream_age: Histogram,
    pub logs_collected: Family<ContainerStreamLabels, Counter>,
    pub bytes_collected: Family<ContainerLabels, Counter>,
    pub stream_errors: Family<ReasonLabels, Counter>,
    pub lines_truncated: Counter,
    pub containers_tracked: Gauge,
    pub containers_unreadable: Gauge,
    pub events_reconnects: Counter,
    pub sink_lines: Family<SinkLabels, Counter>,
    pub sink_errors: Family<SinkLabels, Counter>,
    pub queue_batches: Gauge,
    pub checkpoint_writes: Counter,
    pub checkpoint_errors: Counter,
    pub checkpoint_corrupt: Counter,
    pub checkpoint_lag: Gauge<f64, AtomicU64>,
    pub tasks_alive: Gauge,
    pub fds_open: Gauge,
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
        let events_reconnects = Counter::default();
        let sink_lines = Family::<SinkLabels, Counter>::default();
        let sink_errors = Family::<SinkLabels, Counter>::default();
        let queue_batches = Gauge::default();
        let checkpoint_writes = Counter::default();
        let checkpoint_errors = Counter::default();
        let checkpoint_corrupt = Counter::default();
        let checkpoint_lag = Gauge::<f64, AtomicU64>::default();
        let tasks_alive = Gauge::default();
        let fds_open = Gauge::default();

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
            "log_capturer_bytes_collected",
            "Bytes of log messages captured",
            bytes_collected.clone(),
        );
        r.register(
            "log_capturer_container_stream_errors",
            "Errors opening or reading log streams, by reason",
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
            "log_capturer_events_reconnects",
            "Times the Docker events stream was reconnected",
            events_reconnects.clone(),
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
            "log_capturer_queue_batches",
            "Batches waiting between capture and sinks",
            queue_batches.clone(),
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

        Metrics {
            streams_active,
            rotations,
            stream_age,
            logs_collected,
            bytes_collected,
            stream_errors,
            lines_truncated,
            containers_tracked,
            containers_unreadable,
            events_reconnects,
            sink_lines,
            sink_errors,
            queue_batches,
            checkpoint_writes,
            checkpoint_errors,
            checkpoint_corrupt,
            checkpoint_lag,
            tasks_alive,
            fds_open,
            registry,
        }
    }

    pub fn stream_error(&self, reason: &'static str) {
        self.stream_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Drops a destroyed container's label sets so churn does not grow the exposition.
    pub fn forget_container(&self, name: &str) {
        let c = ContainerLabels {
            container_name: name.to_string(),
        };
        self.rotations.remove(&c);
        self.bytes_collected.remove(&c);
        for stream in ["stdout", "stderr", "tty"] {
            self.logs_collected.remove(&ContainerStreamLabels {
                container_name: name.to_string(),
                stream,
            });
        }
    }

    /// Refreshes process gauges and renders the text exposition.
    pub fn render(&self) -> String {
        self.tasks_alive.set(super::resources::tasks_alive() as i64);
        self.fds_open.set(super::resources::open_fds() as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
