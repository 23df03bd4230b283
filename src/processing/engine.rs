//! Compiled pipelines, and the processor one container's capture runs its lines through.

use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::sync::Arc;

use super::config::{PipelineConfig, ProcessingConfig, StageConfig};
use super::metrics::{GROUP_ENDS, GroupLabels, PipelineLabels, ProcessingMetrics};
use super::multiline::Multiline;
use super::stage::{Shared, Stage, StageContext, Verdict};
use super::stages::tenant::check_label_copied;
use crate::capture::{Cursor, Position};
use crate::config::FilterConfig;
use crate::discovery::filter::{Candidate, glob_match, selected};
use crate::pipeline::{LogLine, StreamKind};

/// Why a pipeline does not compile. The text names the key path (config validation and
/// `log-capturer process` print it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessingError {
    /// `at` is `processing.pipelines[i]`.
    #[error("{at}.name: every pipeline needs a name (metrics and logs use it)")]
    Unnamed { at: String },
    #[error("{at}.name: `{name}` is already the name of processing.pipelines[{first}]")]
    DuplicateName {
        at: String,
        name: String,
        first: usize,
    },
    /// A stage setting is invalid; `key` is its full path
    /// (`processing.pipelines[1].stages[0].multiline.start`).
    #[error("{key}: {message}")]
    Stage { key: String, message: String },
}

/// Every pipeline of the config, compiled once (at load: bad patterns are config errors).
#[derive(Clone, Debug, Default)]
pub struct Pipelines {
    container_labels: Vec<String>,
    pipelines: Vec<CompiledPipeline>,
}

#[derive(Clone, Debug)]
struct CompiledPipeline {
    /// Position in `processing.pipelines` (for error messages).
    index: usize,
    name: Arc<str>,
    selector: FilterConfig,
    config: PipelineConfig,
    /// Per line stage: the state every container's copy shares (label cardinality guards).
    shared: Vec<Option<Shared>>,
}

impl Pipelines {
    /// Checks every pipeline and stage; the error names the key path
    /// (`processing.pipelines[1].stages[0].multiline.start: invalid regex: …`).
    pub fn compile(config: &ProcessingConfig) -> Result<Pipelines, ProcessingError> {
        let mut names = HashMap::new();
        let mut pipelines = Vec::new();
        for (p, pipeline) in config.pipelines.iter().enumerate() {
            let at = format!("processing.pipelines[{p}]");
            if pipeline.name.trim().is_empty() {
                return Err(ProcessingError::Unnamed { at });
            }
            if let Some(first) = names.insert(pipeline.name.clone(), p) {
                return Err(ProcessingError::DuplicateName {
                    at,
                    name: pipeline.name.clone(),
                    first,
                });
            }
            let mut compiled = CompiledPipeline {
                index: p,
                name: Arc::from(pipeline.name.as_str()),
                selector: pipeline.selector.clone(),
                config: pipeline.clone(),
                shared: Vec::new(),
            };
            // Built once with throw-away counters: every stage error shows now, not per container.
            let prototype = compiled.instantiate(&ProcessingMetrics::default())?;
            for (s, stage) in pipeline.stages.iter().enumerate() {
                if let StageConfig::Tenant(tenant) = stage {
                    check_label_copied(tenant, &config.container_labels).map_err(|e| {
                        ProcessingError::Stage {
                            key: format!("{at}.stages[{s}].tenant.{}", e.key),
                            message: e.message,
                        }
                    })?;
                }
            }
            compiled.shared = prototype.stages.iter().map(|s| s.stage.shared()).collect();
            pipelines.push(compiled);
        }
        Ok(Pipelines {
            container_labels: config.container_labels.clone(),
            pipelines,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    /// The name of the pipeline that applies to a container, if any.
    pub fn matching(&self, candidate: &Candidate<'_>) -> Option<&str> {
        self.find(candidate).map(|p| &*p.name)
    }

    fn find(&self, candidate: &Candidate<'_>) -> Option<&CompiledPipeline> {
        let none = FilterConfig::default();
        self.pipelines
            .iter()
            .find(|p| selected(&p.selector, &none, candidate))
    }

    /// A fresh processor of the pipeline that applies to the container, if one does.
    pub fn processor_for(
        &self,
        candidate: &Candidate<'_>,
        metrics: &ProcessingMetrics,
    ) -> Option<Processor> {
        let pipeline = self.find(candidate)?;
        // Compiled at load; cannot fail now. Should it, the lines pass unprocessed.
        pipeline.instantiate(metrics).ok()
    }

    /// A fresh processor of the pipeline called `name` (for `log-capturer process`).
    pub fn processor_named(
        &self,
        name: &str,
        metrics: &ProcessingMetrics,
    ) -> Option<Result<Processor, ProcessingError>> {
        let pipeline = self.pipelines.iter().find(|p| &*p.name == name)?;
        Some(pipeline.instantiate(metrics))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pipelines.iter().map(|p| &*p.name)
    }

    /// The container labels `processing.container_labels` copies into record fields.
    pub fn label_fields(&self, labels: &HashMap<String, String>) -> Vec<(String, String)> {
        if self.container_labels.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, _)| self.container_labels.iter().any(|g| glob_match(g, k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort();
        out
    }
}

impl CompiledPipeline {
    fn instantiate(&self, metrics: &ProcessingMetrics) -> Result<Processor, ProcessingError> {
        let name = &self.name;
        let mut multiline = None;
        let mut stages = Vec::new();
        for (s, stage) in self.config.stages.iter().enumerate() {
            let at = |key: &str| {
                let base = format!(
                    "processing.pipelines[{}].stages[{s}].{}",
                    self.index,
                    stage.kind()
                );
                if key.is_empty() {
                    base
                } else {
                    format!("{base}.{key}")
                }
            };
            if let (StageConfig::Multiline(config), 0) = (stage, s) {
                let ends = GROUP_ENDS.map(|end| {
                    metrics
                        .groups
                        .get_or_create(&GroupLabels {
                            pipeline: Arc::clone(name),
                            end,
                        })
                        .clone()
                });
                let built = Multiline::build(config, ends).map_err(|e| ProcessingError::Stage {
                    key: at(e.key),
                    message: e.message,
                })?;
                multiline = Some(built);
                continue;
            }
            let label: Arc<str> = Arc::from(format!("{}[{s}]", stage.kind()));
            let stage_metrics = metrics.stage(name, Arc::clone(&label));
            let mut built =
                Stage::build(stage, &stage_metrics).map_err(|e| ProcessingError::Stage {
                    key: at(e.key),
                    message: e.message,
                })?;
            if let Some(Some(shared)) = self.shared.get(stages.len()) {
                built.share(shared);
            }
            stages.push(StageSlot {
                stage: built,
                dropped: stage_metrics.dropped.clone(),
                dropped_unpublished: 0,
                label,
            });
        }
        let labels = PipelineLabels {
            pipeline: Arc::clone(name),
        };
        Ok(Processor {
            name: Arc::clone(name),
            multiline,
            stages,
            lines_in: metrics.lines_in.get_or_create(&labels).clone(),
            records_out: metrics.records_out.get_or_create(&labels).clone(),
            records_unpublished: 0,
            finished: ([0, 0], 0),
            groups: Vec::new(),
            last_drop: None,
        })
    }
}

#[derive(Clone, Debug)]
struct StageSlot {
    stage: Stage,
    dropped: Counter,
    /// Drops not yet added to `dropped` (published with the batch, see `take_finished`).
    dropped_unpublished: u64,
    /// `kind[index]`, as in the metrics.
    label: Arc<str>,
}

/// One container's pipeline: its multiline state and stages. Lives for one capture session
/// (a new session re-reads what an open group held; see `multiline`).
#[derive(Clone, Debug)]
pub struct Processor {
    name: Arc<str>,
    multiline: Option<Multiline>,
    stages: Vec<StageSlot>,
    lines_in: Counter,
    records_out: Counter,
    /// Records emitted not yet added to `records_out`. Counters move when a batch is handed
    /// over (`take_finished`): what a session does not hand over is read again and must not
    /// count twice, and one atomic add per batch beats one per line.
    records_unpublished: u64,
    /// Input lines (stdout/tty, stderr) and bytes done with (emitted or dropped) since the
    /// last `take_finished`.
    finished: ([u64; 2], u64),
    /// Emitted groups on their way through the stages (reused; empty between calls).
    groups: Vec<LogLine>,
    /// Index of the stage that dropped the last record (for `log-capturer process`).
    last_drop: Option<usize>,
}

impl Processor {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One line admitted by the resume filter (`before`: its stream's position before it).
    /// The records it completes, if any, are appended to `out`; returns how many records
    /// were dropped on the way.
    pub fn push(
        &mut self,
        line: LogLine,
        before: Position,
        cx: &StageContext<'_>,
        out: &mut Vec<LogLine>,
    ) -> usize {
        match &mut self.multiline {
            None => {
                let i = usize::from(line.stream == StreamKind::Stderr);
                self.finished.0[i] += 1;
                self.finished.1 += line.message.len() as u64;
                usize::from(!self.run_stages(line, cx, out))
            }
            Some(multiline) => {
                let from = out.len();
                multiline.push(line, before, out);
                self.after_groups(from, cx, out)
            }
        }
    }

    /// Runs the stages over records `out[from..]` (groups just emitted), removing drops.
    fn after_groups(
        &mut self,
        from: usize,
        cx: &StageContext<'_>,
        out: &mut Vec<LogLine>,
    ) -> usize {
        if out.len() == from {
            return 0;
        }
        // Moved aside into a buffer the processor keeps (no allocation per group).
        let mut groups = std::mem::take(&mut self.groups);
        groups.extend(out.drain(from..));
        let mut dropped = 0;
        for record in groups.drain(..) {
            dropped += usize::from(!self.run_stages(record, cx, out));
        }
        self.groups = groups;
        dropped
    }

    /// The stages over one record; false if one dropped it.
    fn run_stages(
        &mut self,
        mut record: LogLine,
        cx: &StageContext<'_>,
        out: &mut Vec<LogLine>,
    ) -> bool {
        for (i, slot) in self.stages.iter_mut().enumerate() {
            if slot.stage.apply(&mut record, cx) == Verdict::Drop {
                slot.dropped_unpublished += 1;
                self.last_drop = Some(i);
                return false;
            }
        }
        self.records_unpublished += 1;
        out.push(record);
        true
    }

    /// Moves a batch's cursor back before the first line of every open multiline group.
    pub fn hold(&self, cursor: &mut Cursor) {
        if let Some(m) = &self.multiline {
            m.hold(cursor);
        }
    }

    pub fn has_open_group(&self) -> bool {
        self.multiline
            .as_ref()
            .is_some_and(Multiline::has_open_group)
    }

    /// When (wall clock, ns) an open group is due for `flush_after`.
    pub fn due_ns(&self) -> Option<i64> {
        self.multiline.as_ref().and_then(Multiline::due_ns)
    }

    /// Emits the groups due at `now_ns`; returns how many records stages dropped.
    pub fn flush_due(
        &mut self,
        now_ns: i64,
        cx: &StageContext<'_>,
        out: &mut Vec<LogLine>,
    ) -> usize {
        let from = out.len();
        if let Some(m) = &mut self.multiline {
            m.flush_due(now_ns, out);
        }
        self.after_groups(from, cx, out)
    }

    /// Emits every open group (the container's output has ended).
    pub fn flush_all(&mut self, cx: &StageContext<'_>, out: &mut Vec<LogLine>) -> usize {
        let from = out.len();
        if let Some(m) = &mut self.multiline {
            m.flush_all(out);
        }
        self.after_groups(from, cx, out)
    }

    /// Input lines (stdout/tty, stderr) and their bytes done with — emitted in a record or
    /// dropped — since the last call: what capture counts as collected. Called when a batch
    /// is handed over; adds what it covers to the pipeline's counters.
    pub fn take_finished(&mut self) -> ([u64; 2], u64) {
        let (mut lines, mut bytes) = std::mem::take(&mut self.finished);
        if let Some(m) = &mut self.multiline {
            let (l, b) = m.take_finished();
            lines[0] += l[0];
            lines[1] += l[1];
            bytes += b;
        }
        self.lines_in.inc_by(lines[0] + lines[1]);
        self.records_out
            .inc_by(std::mem::take(&mut self.records_unpublished));
        for slot in &mut self.stages {
            let n = std::mem::take(&mut slot.dropped_unpublished);
            if n > 0 {
                slot.dropped.inc_by(n);
            }
        }
        (lines, bytes)
    }

    /// The label of the stage that dropped the last dropped record (`drop[2]`).
    pub fn last_drop_stage(&self) -> Option<&str> {
        self.last_drop
            .and_then(|i| self.stages.get(i))
            .map(|slot| &*slot.label)
    }
}
