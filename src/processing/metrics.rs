//! Processing metrics. Labels are pipeline and stage names from the config (`drop[2]`: the
//! stage's kind and index in its pipeline) and fixed event names — never values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub pipeline: Arc<str>,
    pub stage: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageEventLabels {
    pub pipeline: Arc<str>,
    pub stage: Arc<str>,
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub pipeline: Arc<str>,
    pub end: &'static str,
}

/// How a multiline group ended: the next group started, a limit cut it, its stream was quiet
/// for `flush_after`, or its stream ended (the container stopped).
pub const GROUP_ENDS: [&str; 5] = [
    "next_group",
    "max_lines",
    "max_bytes",
    "flush_after",
    "stream_end",
];

/// Events a stage counts besides drops and parse failures (bounded; see each stage).
pub const STAGE_EVENTS: &[&str] = &[
    "timestamp_clamped",
    "timestamp_kept_out_of_bounds",
    "label_refused",
    "label_value_cut",
    "tenant_missing",
    "tenant_invalid",
];

// Same shape as `Metrics` (observability/metrics.rs, a family per metric); kept apart: the
// processing families have their own label sets and register themselves.
#[derive(Clone, Default)]
pub struct ProcessingMetrics {
    pub lines_in: Family<PipelineLabels, Counter>,
    pub records_out: Family<PipelineLabels, Counter>,
    pub dropped: Family<StageLabels, Counter>,
    pub parse_failures: Family<StageLabels, Counter>,
    pub groups: Family<GroupLabels, Counter>,
    pub events: Family<StageEventLabels, Counter>,
}

impl ProcessingMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "log_capturer_pipeline_lines_in",
            "Lines read from containers that a processing pipeline applies to, by pipeline",
            self.lines_in.clone(),
        );
        r.register(
            "log_capturer_pipeline_records_out",
            "Records a processing pipeline handed to the sinks (a multiline group is one), by pipeline",
            self.records_out.clone(),
        );
        r.register(
            "log_capturer_pipeline_dropped",
            "Records dropped by a pipeline's drop/keep or timestamp stage (acknowledged, never re-read), by pipeline and stage",
            self.dropped.clone(),
        );
        r.register(
            "log_capturer_pipeline_parse_failures",
            "Records a json/logfmt/regex/level/timestamp stage could not parse (passed on unchanged), by pipeline and stage",
            self.parse_failures.clone(),
        );
        r.register(
            "log_capturer_pipeline_multiline_groups",
            "Multiline groups emitted, by pipeline and how the group ended (next_group, max_lines, max_bytes, flush_after, stream_end)",
            self.groups.clone(),
        );
        r.register(
            "log_capturer_pipeline_stage_events",
            "Other stage events, by pipeline, stage and event (timestamp_clamped, timestamp_kept_out_of_bounds, label_refused, label_value_cut, tenant_missing, tenant_invalid)",
            self.events.clone(),
        );
    }

    /// Handles for one stage (label lookups once, not per line).
    pub fn stage(&self, pipeline: &Arc<str>, stage: Arc<str>) -> StageMetrics {
        let labels = StageLabels {
            pipeline: Arc::clone(pipeline),
            stage,
        };
        StageMetrics {
            dropped: self.dropped.get_or_create(&labels).clone(),
            parse_failures: self.parse_failures.get_or_create(&labels).clone(),
            events: self.events.clone(),
            labels,
        }
    }
}

/// One stage's counters.
#[derive(Clone, Debug)]
pub struct StageMetrics {
    pub dropped: Counter,
    pub parse_failures: Counter,
    events: Family<StageEventLabels, Counter>,
    labels: StageLabels,
}

impl std::fmt::Debug for ProcessingMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessingMetrics")
    }
}

impl StageMetrics {
    /// For `log-capturer process` and tests: counters registered nowhere.
    pub fn detached(pipeline: &str, stage: &str) -> Self {
        ProcessingMetrics::default().stage(&Arc::from(pipeline), Arc::from(stage))
    }

    /// The counter of one of [`STAGE_EVENTS`] for this stage (look it up once, at build).
    pub fn event(&self, event: &'static str) -> Counter {
        debug_assert!(STAGE_EVENTS.contains(&event), "unknown stage event {event}");
        self.events
            .get_or_create(&StageEventLabels {
                pipeline: Arc::clone(&self.labels.pipeline),
                stage: Arc::clone(&self.labels.stage),
                event,
            })
            .clone()
    }

    /// The stage's label (`drop[2]`), for log messages.
    pub fn stage_name(&self) -> &str {
        &self.labels.stage
    }

    pub fn pipeline_name(&self) -> &str {
        &self.labels.pipeline
    }
}
