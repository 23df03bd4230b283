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

/// A labels stage of pipeline `p` built from `config`, with the metrics it counts into.
fn counted_stage(config: &LabelsConfig) -> (ProcessingMetrics, LabelsStage) {
    let metrics = ProcessingMetrics::default();
    let sm = metrics.stage(&Arc::from("p"), Arc::from("labels[0]"));
    let stage = LabelsStage::build(config, &sm).unwrap();
    (metrics, stage)
}

#[test]
fn promotes_fields_level_and_container_fields() {
    let (metrics, mut st) = counted_stage(&labels_config(
        &["app", "level", "compose_service", "gone", "empty"],
        10,
        60,
    ));
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
    let (metrics, mut st) = counted_stage(&labels_config(&["v"], 10, 60));
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
    let (metrics, mut st) = counted_stage(&labels_config(&["user"], 2, 10));
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
