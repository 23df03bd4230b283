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
            check_label_name(name).map_err(|e| BuildError::at("fields", e))?;
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

/// Why `name` is not a Loki label name, if it is not.
fn check_label_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!(
            "`{name}` is not a Loki label name ([a-zA-Z_][a-zA-Z0-9_]*); rename the field \
             first with a fields stage"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "`{name}`: names starting with `__` are reserved for Loki's internal use"
        ));
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
mod tests {
    use super::*;
    use crate::processing::ProcessingConfig;
    use crate::processing::config::{PipelineConfig, StageConfig};
    use crate::processing::metrics::ProcessingMetrics;
    use crate::processing::record::Level;
    use crate::processing::stages::testing;
    use proptest::prelude::*;

    const S: i64 = 1_000_000_000;

    fn line(fields: &[(&str, &str)]) -> LogLine {
        testing::line(b"m", fields)
    }

    fn labels_config(fields: &[&str], max_values: usize, window_s: u64) -> LabelsConfig {
        LabelsConfig {
            fields: fields.iter().map(|f| f.to_string()).collect(),
            max_values,
            window: crate::config::HumanDuration(Duration::from_secs(window_s)),
        }
    }

    fn run<S2>(apply: &mut S2, l: &mut LogLine, now_ns: i64)
    where
        S2: FnMut(&mut LogLine, &StageContext<'_>) -> Verdict,
    {
        let m = testing::meta();
        assert_eq!(apply(l, &testing::cx(&m, now_ns)), Verdict::Pass);
    }

    fn labels(l: &LogLine) -> Vec<(String, String)> {
        l.extra
            .as_deref()
            .map(|e| {
                e.labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn event(metrics: &ProcessingMetrics, event: &'static str) -> u64 {
        testing::event(metrics, "labels[0]", event)
    }

    #[test]
    fn promotes_fields_level_and_container_fields() {
        let metrics = ProcessingMetrics::default();
        let sm = metrics.stage(&Arc::from("p"), Arc::from("labels[0]"));
        let mut st = LabelsStage::build(
            &labels_config(
                &["app", "level", "compose_service", "gone", "empty"],
                10,
                60,
            ),
            &sm,
        )
        .unwrap();
        let mut l = line(&[("app", "shop-api"), ("empty", "")]);
        l.extra_mut().level = Some(Level::Error);
        run(&mut |l, cx| st.apply(l, cx), &mut l, 0);
        assert_eq!(
            labels(&l),
            vec![
                ("app".into(), "shop-api".into()),
                ("level".into(), "error".into()),
                ("compose_service".into(), "web".into()),
            ]
        );
        // The field stays a field.
        assert!(l.fields().unwrap().get("app").is_some());
        assert_eq!(event(&metrics, "label_refused"), 0);
    }

    #[test]
    fn long_values_are_cut_at_a_char_boundary() {
        let metrics = ProcessingMetrics::default();
        let sm = metrics.stage(&Arc::from("p"), Arc::from("labels[0]"));
        let mut st = LabelsStage::build(&labels_config(&["v"], 10, 60), &sm).unwrap();
        // 1023 ASCII bytes then a 2-byte char: the char would end at byte 1025.
        let long = format!("{}é tail", "a".repeat(1023));
        let mut l = line(&[("v", &long)]);
        run(&mut |l, cx| st.apply(l, cx), &mut l, 0);
        assert_eq!(labels(&l), vec![("v".into(), "a".repeat(1023))]);
        assert_eq!(event(&metrics, "label_value_cut"), 1);
        let exact = "b".repeat(1024);
        let mut l = line(&[("v", &exact)]);
        run(&mut |l, cx| st.apply(l, cx), &mut l, 0);
        assert_eq!(labels(&l), vec![("v".into(), exact)]);
        assert_eq!(event(&metrics, "label_value_cut"), 1);
    }

    #[test]
    fn guard_refuses_beyond_the_bound_and_forgets_after_the_window() {
        let metrics = ProcessingMetrics::default();
        let sm = metrics.stage(&Arc::from("p"), Arc::from("labels[0]"));
        let mut st = LabelsStage::build(&labels_config(&["user"], 2, 10), &sm).unwrap();
        let mut other = st.clone(); // another container of the same pipeline
        let promote = |st: &mut LabelsStage, v: &str, t: i64| {
            let mut l = line(&[("user", v)]);
            run(&mut |l, cx| st.apply(l, cx), &mut l, t * S);
            !labels(&l).is_empty()
        };
        assert!(promote(&mut st, "a", 0));
        assert!(promote(&mut other, "b", 1));
        assert!(!promote(&mut st, "c", 2), "a third value within the window");
        assert!(!promote(&mut other, "d", 3));
        assert!(promote(&mut other, "a", 4), "known values still pass");
        assert_eq!(event(&metrics, "label_refused"), 2);
        // After a window: a rotation; `a` (seen at 4) and `b` (at 1) are still remembered.
        assert!(!promote(&mut st, "c", 10));
        assert!(promote(&mut st, "a", 11));
        // After another window `b` (not seen since 1) is forgotten, `a` is not.
        assert!(promote(&mut st, "c", 20));
        assert!(!promote(&mut st, "d", 21));
        // A quiet spell of a whole window forgets everything.
        assert!(promote(&mut st, "x", 40));
        assert!(promote(&mut st, "y", 40));
        assert_eq!(event(&metrics, "label_refused"), 4);
    }

    #[test]
    fn warns_once_per_window() {
        let mut g = Guard::new(1, 10);
        assert_eq!(g.admit("a", 0), Admit::Yes);
        assert_eq!(g.admit("b", 1), Admit::Refused { warn: true });
        assert_eq!(g.admit("c", 2), Admit::Refused { warn: false });
        assert_eq!(g.admit("b", 9), Admit::Refused { warn: false });
        // The next window (`a` is still remembered: seen less than a window ago).
        assert_eq!(g.admit("a", 10), Admit::Yes);
        assert_eq!(g.admit("b", 11), Admit::Refused { warn: true });
        assert_eq!(g.admit("b", 12), Admit::Refused { warn: false });
    }

    #[test]
    fn guards_are_shared_across_containers_of_a_pipeline() {
        // Through the engine: two containers' processors of one compiled pipeline.
        let config = ProcessingConfig {
            container_labels: Vec::new(),
            pipelines: vec![PipelineConfig {
                name: "p".into(),
                selector: Default::default(),
                stages: vec![StageConfig::Labels(labels_config(&["user"], 1, 60))],
            }],
        };
        let pipelines = crate::processing::Pipelines::compile(&config).unwrap();
        let metrics = ProcessingMetrics::default();
        let mut out = Vec::new();
        for (user, promoted) in [("a", true), ("b", false), ("a", true)] {
            let mut p = pipelines.processor_named("p", &metrics).unwrap().unwrap();
            let m = testing::meta();
            let cx = testing::cx(&m, 0);
            p.push(line(&[("user", user)]), Default::default(), &cx, &mut out);
            let record = out.pop().unwrap();
            assert_eq!(!labels(&record).is_empty(), promoted, "{user}");
        }
    }

    #[test]
    fn build_errors_name_the_key() {
        let sm = StageMetrics::detached("p", "labels[0]");
        let cases: &[(LabelsConfig, &str, &str)] = &[
            (labels_config(&[], 10, 60), "fields", "at least one"),
            (
                labels_config(&["a.b"], 10, 60),
                "fields",
                "not a Loki label name",
            ),
            (
                labels_config(&["1a"], 10, 60),
                "fields",
                "not a Loki label name",
            ),
            (
                labels_config(&["über"], 10, 60),
                "fields",
                "not a Loki label name",
            ),
            (labels_config(&["__name"], 10, 60), "fields", "reserved"),
            (labels_config(&["a", "a"], 10, 60), "fields", "twice"),
            (labels_config(&["a"], 0, 60), "max_values", "0"),
            (labels_config(&["a"], 1, 0), "window", "0s"),
        ];
        for (c, key, text) in cases {
            let e = LabelsStage::build(c, &sm).unwrap_err();
            assert_eq!(&e.key, key, "{c:?}: {e:?}");
            assert!(e.message.contains(text), "{c:?}: {e:?}");
        }
        assert!(LabelsStage::build(&labels_config(&["_a", "A9_z"], 1, 1), &sm).is_ok());
    }

    #[test]
    fn metadata_copies_values() {
        let sm = StageMetrics::detached("p", "structured_metadata[0]");
        let mut st = MetadataStage::build(
            &MetadataConfig {
                fields: vec!["trace_id".into(), "missing".into(), "container_id".into()],
            },
            &sm,
        )
        .unwrap();
        let mut l = line(&[("trace_id", "abc123")]);
        run(&mut |l, cx| st.apply(l, cx), &mut l, 0);
        let got: Vec<(String, String)> = l
            .extra
            .as_deref()
            .unwrap()
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("trace_id".into(), "abc123".into()),
                ("container_id".into(), "c0ffee".into())
            ]
        );
        let e = MetadataStage::build(&MetadataConfig { fields: vec![] }, &sm).unwrap_err();
        assert_eq!(e.key, "fields");
        let e = MetadataStage::build(
            &MetadataConfig {
                fields: vec!["a".into(), "a".into()],
            },
            &sm,
        )
        .unwrap_err();
        assert_eq!(e.key, "fields");
    }

    proptest! {
        /// Under any sequence of values and (monotonic) times, no window-long interval sees
        /// more than `max` distinct values admitted; and until `max` distinct values have
        /// ever been admitted, nothing is refused.
        #[test]
        fn guard_never_exceeds_the_bound(
            max in 1usize..5,
            window in 1i64..20,
            steps in prop::collection::vec((0i64..15, 0u8..8), 1..200),
        ) {
            let mut guard = Guard::new(max, window);
            let mut now = 0;
            let mut admitted: Vec<(i64, u8)> = Vec::new();
            let mut ever = HashSet::new();
            for (dt, v) in steps {
                now += dt;
                let value = v.to_string();
                let result = guard.admit(&value, now);
                if result == Admit::Yes {
                    admitted.push((now, v));
                    ever.insert(v);
                } else {
                    prop_assert!(ever.len() >= max, "refused {} with {:?} ever admitted", v, ever);
                }
            }
            for &(t, _) in &admitted {
                let distinct: HashSet<u8> = admitted.iter()
                    .filter(|(u, _)| *u >= t && *u < t + window)
                    .map(|(_, v)| *v).collect();
                prop_assert!(distinct.len() <= max, "{:?} in [{}, {})", distinct, t, t + window);
            }
        }
    }
}
