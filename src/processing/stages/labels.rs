//! `labels` and `structured_metadata`: fields the Loki sink sends as stream labels (with a
//! cardinality guard) or as structured metadata.
//!
//! `labels: { fields: [app, level], max_values: 100, window: 10m }` — for each name, its value
//! as [`lookup`] finds it (a field, `level`, `stream`, a container field such as
//! `compose_service`, a copied container label) is promoted to a Loki stream label
//! `(name, value)` in `Extra::labels`. A name with no value, or an empty one, adds nothing.
//! The field itself stays where it is; what the sinks write of it is theirs to decide.
//! - Label names must be Loki/Prometheus label names (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting
//!   with `__`): checked at load (rename a field such as `com.example.team` first with a
//!   `fields` stage).
//! - Values longer than Loki's 1024-byte limit are cut at a character boundary (counted:
//!   event `label_value_cut`).
//! - Cardinality guard: per pipeline and label, the distinct values promoted within `window`
//!   are at most `max_values`. A value that would exceed the bound is not promoted (the
//!   record still carries it as a field; counted: event `label_refused`), and a warning
//!   naming the pipeline, the label and the bound is logged at most once per label per
//!   window. The guard is shared by every container of the pipeline (the engine hands each
//!   container's copy the same state) and restarts when the config is reloaded. It keeps
//!   two generations of values — the current window's and the previous one's — so a value
//!   not seen for between one and two windows is forgotten. A known value costs one hash
//!   lookup under an uncontended lock, no allocation.
//!
//! `structured_metadata: { fields: [trace_id] }` — for each name, its value (via [`lookup`])
//! goes to `Extra::metadata` as `(name, value)`; a name with no value adds nothing.

use prometheus_client::metrics::counter::Counter;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::pipeline::LogLine;
use crate::processing::config::{LabelsConfig, MetadataConfig};
use crate::processing::metrics::StageMetrics;
use crate::processing::record::lookup;
use crate::processing::stage::{BuildError, StageContext, Verdict};

/// Loki's default `max_label_value_length`.
pub const LABEL_VALUE_MAX_BYTES: usize = 1024;

#[derive(Clone, Debug)]
pub struct LabelsStage {
    labels: Vec<Label>,
    refused: Counter,
    cut: Counter,
    pipeline: Arc<str>,
    stage: Arc<str>,
    max_values: usize,
    window: Duration,
}

#[derive(Clone, Debug)]
struct Label {
    name: Arc<str>,
    guard: Arc<Mutex<Guard>>,
}

/// The cardinality guards of a `labels` stage, one per label: what every container's copy
/// of the stage shares (see [`LabelsStage::guards`]).
#[derive(Clone, Debug)]
pub struct Guards(Vec<Arc<Mutex<Guard>>>);

impl LabelsStage {
    pub fn build(config: &LabelsConfig, metrics: &StageMetrics) -> Result<Self, BuildError> {
        if config.fields.is_empty() {
            return Err(BuildError::at(
                "fields",
                "list at least one field to promote",
            ));
        }
        if config.max_values == 0 {
            return Err(BuildError::at(
                "max_values",
                "0 would refuse every value; give the distinct values a label may take per window",
            ));
        }
        let window_ns = i64::try_from(config.window.0.as_nanos()).unwrap_or(i64::MAX);
        if window_ns == 0 {
            return Err(BuildError::at("window", "must be longer than 0s"));
        }
        let mut labels: Vec<Label> = Vec::with_capacity(config.fields.len());
        for name in &config.fields {
            check_label_name(name).map_err(|e| BuildError::at("fields", e.to_string()))?;
            if labels.iter().any(|l| &*l.name == name) {
                return Err(BuildError::at(
                    "fields",
                    format!("`{name}` is listed twice"),
                ));
            }
            labels.push(Label {
                name: Arc::from(name.as_str()),
                guard: Arc::new(Mutex::new(Guard::new(config.max_values, window_ns))),
            });
        }
        Ok(LabelsStage {
            labels,
            refused: metrics.event("label_refused"),
            cut: metrics.event("label_value_cut"),
            pipeline: Arc::from(metrics.pipeline_name()),
            stage: Arc::from(metrics.stage_name()),
            max_values: config.max_values,
            window: config.window.0,
        })
    }

    /// The guards this stage's copies share.
    pub fn guards(&self) -> Guards {
        Guards(self.labels.iter().map(|l| Arc::clone(&l.guard)).collect())
    }

    /// Shares `guards` (taken from a copy built from the same config) from now on.
    pub fn share_guards(&mut self, guards: &Guards) {
        for (label, guard) in self.labels.iter_mut().zip(&guards.0) {
            label.guard = Arc::clone(guard);
        }
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        for label in &self.labels {
            if let Some(value) = self.promoted(label, line, cx) {
                line.extra_mut()
                    .labels
                    .push((Arc::clone(&label.name), value));
            }
        }
        Verdict::Pass
    }

    /// The value `label` takes on this record, if it has one and the guard admits it.
    fn promoted(&self, label: &Label, line: &LogLine, cx: &StageContext<'_>) -> Option<String> {
        let value = lookup(line, cx.container, &label.name)?;
        if value.is_empty() {
            return None;
        }
        let mut value: &str = &value;
        if value.len() > LABEL_VALUE_MAX_BYTES {
            value = &value[..value.floor_char_boundary(LABEL_VALUE_MAX_BYTES)];
            self.cut.inc();
        }
        let admitted = label
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(value, cx.now_ns);
        match admitted {
            Admit::Yes => Some(value.to_owned()),
            Admit::Refused { warn } => {
                self.refused.inc();
                if warn {
                    tracing::warn!(
                        pipeline = %self.pipeline,
                        stage = %self.stage,
                        label = %label.name,
                        max_values = self.max_values,
                        window = ?self.window,
                        "label `{}` of pipeline `{}` reached {} distinct values within {:?}; \
                         further values are not promoted (they stay fields) until older ones \
                         age out (counted as log_capturer_pipeline_stage_events \
                         {{event=\"label_refused\"}})",
                        label.name,
                        self.pipeline,
                        self.max_values,
                        self.window,
                    );
                }
                None
            }
        }
    }
}

/// Why a field cannot be promoted to a label (the name is quoted).
#[derive(Debug, thiserror::Error)]
enum LabelNameError {
    #[error(
        "`{0}` is not a Loki label name ([a-zA-Z_][a-zA-Z0-9_]*); rename the field first with \
         a fields stage"
    )]
    Invalid(String),
    #[error("`{0}`: names starting with `__` are reserved for Loki's internal use")]
    Reserved(String),
}

/// Why `name` is not a Loki label name, if it is not.
fn check_label_name(name: &str) -> Result<(), LabelNameError> {
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(LabelNameError::Invalid(name.to_string()));
    }
    if name.starts_with("__") {
        return Err(LabelNameError::Reserved(name.to_string()));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Yes,
    /// `warn`: the first refusal of this window.
    Refused {
        warn: bool,
    },
}

/// Distinct values of one label: the current window's and the previous window's (disjoint:
/// a previous value seen again moves to the current set).
#[derive(Debug)]
pub struct Guard {
    max: usize,
    window_ns: i64,
    /// Start of the current generation; None before the first value.
    started_ns: Option<i64>,
    /// When a value was last admitted.
    last_ns: i64,
    current: HashSet<Box<str>>,
    previous: HashSet<Box<str>>,
    warned: bool,
}

impl Guard {
    fn new(max: usize, window_ns: i64) -> Guard {
        Guard {
            max,
            window_ns,
            started_ns: None,
            last_ns: i64::MIN,
            current: HashSet::new(),
            previous: HashSet::new(),
            warned: false,
        }
    }

    /// Whether `value` may be promoted at `now_ns`.
    ///
    /// Bound: generations start at least a window apart, so any window-long interval sees at
    /// most one rotation, and every value admitted within it is in `current ∪ previous`,
    /// whose size never exceeds `max` — except when a rotation forgets both sets, which it
    /// does only when nothing was admitted for a whole window before it.
    fn admit(&mut self, value: &str, now_ns: i64) -> Admit {
        match self.started_ns {
            None => self.started_ns = Some(now_ns),
            Some(start) if now_ns.saturating_sub(start) >= self.window_ns => {
                std::mem::swap(&mut self.current, &mut self.previous);
                self.current.clear();
                if now_ns.saturating_sub(self.last_ns) >= self.window_ns {
                    // Every value was last seen a window ago or more.
                    self.previous.clear();
                }
                self.started_ns = Some(now_ns);
                self.warned = false;
            }
            Some(_) => {}
        }
        if self.current.contains(value) {
        } else if let Some(known) = self.previous.take(value) {
            self.current.insert(known);
        } else if self.current.len() + self.previous.len() >= self.max {
            let warn = !self.warned;
            self.warned = true;
            return Admit::Refused { warn };
        } else {
            self.current.insert(Box::from(value));
        }
        self.last_ns = self.last_ns.max(now_ns);
        Admit::Yes
    }
}

#[derive(Clone, Debug)]
pub struct MetadataStage {
    fields: Vec<Arc<str>>,
}

impl MetadataStage {
    pub fn build(config: &MetadataConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        if config.fields.is_empty() {
            return Err(BuildError::at("fields", "list at least one field to send"));
        }
        let mut fields: Vec<Arc<str>> = Vec::with_capacity(config.fields.len());
        for name in &config.fields {
            if name.is_empty() {
                return Err(BuildError::at("fields", "a field name is empty"));
            }
            if fields.iter().any(|f| &**f == name) {
                return Err(BuildError::at(
                    "fields",
                    format!("`{name}` is listed twice"),
                ));
            }
            fields.push(Arc::from(name.as_str()));
        }
        Ok(MetadataStage { fields })
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        for name in &self.fields {
            if let Some(value) = lookup(line, cx.container, name) {
                let value = value.into_owned();
                line.extra_mut().metadata.push((Arc::clone(name), value));
            }
        }
        Verdict::Pass
    }
}

#[cfg(test)]
#[path = "labels_tests.rs"]
mod tests;
