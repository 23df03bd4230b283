//! Shared helpers of the stage tests, and config-level tests: what `Pipelines::compile`
//! (through `Config::parse`) says about the parse stages' settings.

use crate::pipeline::{ContainerMeta, LogLine, StreamKind};
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

/// Docker's timestamp of [`line`]'s records: 2026-11-28T23:49:08Z.
pub(crate) const TS_NS: i64 = 1_795_909_748_000_000_000;

pub(crate) fn line(message: &str) -> LogLine {
    LogLine {
        ts_ns: TS_NS,
        stream: StreamKind::Stdout,
        message: bytes::Bytes::copy_from_slice(message.as_bytes()),
        truncated: false,
        extra: None,
    }
}

/// A container (with the label field `team=pay`) and a wall clock.
pub(crate) fn cx_meta() -> (ContainerMeta, i64) {
    let meta = ContainerMeta::new(
        "0123456789ab".into(),
        "web-1".into(),
        "nginx:1".into(),
        None,
        None,
    )
    .with_label_fields(vec![("team".into(), "pay".into())]);
    (meta, TS_NS + 1_000_000_000)
}

/// A stage built from its YAML settings, with its (detached) counters.
pub(crate) fn build<C: serde::de::DeserializeOwned, S>(
    yaml: &str,
    label: &str,
    build: fn(&C, &StageMetrics) -> Result<S, BuildError>,
) -> (S, StageMetrics) {
    let config: C = serde_saphyr::from_str(yaml).expect("stage settings");
    let metrics = StageMetrics::detached("p", label);
    let stage = build(&config, &metrics).expect("stage builds");
    (stage, metrics)
}

/// The record's fields as (name, text) pairs, in order.
pub(crate) fn text_fields(line: &LogLine) -> Vec<(String, String)> {
    line.fields()
        .map(|f| {
            f.iter()
                .map(|(k, v)| (k.to_string(), v.as_str().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// One stage over one line (asserting it passes).
pub(crate) fn run(
    apply: impl FnOnce(&mut LogLine, &StageContext<'_>) -> Verdict,
    mut line: LogLine,
) -> LogLine {
    let (meta, now_ns) = cx_meta();
    let cx = StageContext {
        container: &meta,
        now_ns,
    };
    assert_eq!(apply(&mut line, &cx), Verdict::Pass);
    line
}

mod config {
    use super::*;
    use crate::capture::Position;
    use crate::config::Config;
    use crate::processing::{FieldValue, Level, Pipelines, ProcessingMetrics};

    fn error_of(stages: &str) -> String {
        let yaml = format!(
            "processing:\n  pipelines:\n    - name: app\n      stages:\n{}",
            stages
                .lines()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
        );
        match Config::parse(&yaml, "test.yaml") {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[track_caller]
    fn says(error: &str, path: &str, what: &str) {
        assert!(
            error.starts_with(&format!("test.yaml: {path}: ")) && error.contains(what),
            "wanted `{path}: …{what}…`, got: {error}"
        );
    }

    #[test]
    fn parse_stage_errors_name_their_key_path() {
        says(
            &error_of("- json: {}\n- regex: {expression: '(?P<x>[a-'}"),
            "processing.pipelines[0].stages[1].regex.expression",
            "invalid regex",
        );
        says(
            &error_of("- regex: {expression: 'plain (group)'}"),
            "processing.pipelines[0].stages[0].regex.expression",
            "no named group",
        );
        says(
            &error_of("- logfmt: {}\n- level: {map: {crit: loud}}"),
            "processing.pipelines[0].stages[1].level.map",
            "`crit`: `loud` is not a level",
        );
        says(
            &error_of("- level: {default: loud}"),
            "processing.pipelines[0].stages[0].level.default",
            "`loud` is not a level",
        );
        says(
            &error_of("- timestamp: {format: unix}"),
            "processing.pipelines[0].stages[0].timestamp.source",
            "required",
        );
        says(
            &error_of("- timestamp: {source: t, format: '%Y-%m-%d %H:%M:%S %Z'}"),
            "processing.pipelines[0].stages[0].timestamp.format",
            "`%Z`",
        );
    }

    #[test]
    fn unknown_keys_of_parse_stages_are_refused() {
        let e = error_of("- json: {field: [a]}");
        assert!(e.contains("field"), "{e}");
        let e = error_of("- timestamp: {source: t, out_of_bounds: ignore}");
        assert!(e.contains("out_of_bounds") || e.contains("ignore"), "{e}");
    }

    #[test]
    fn a_json_level_timestamp_pipeline_end_to_end() {
        let yaml = "processing:\n  pipelines:\n    - name: app\n      stages:\n        \
                    - json: {fields: [level, ts, user], message: msg}\n        \
                    - level: {source: level, default: info}\n        \
                    - timestamp: {source: ts, format: unix_ms, max_age: 1h, out_of_bounds: drop}\n";
        let config = Config::parse(yaml, "test.yaml").expect("valid");
        let pipelines = Pipelines::compile(&config.processing).expect("compiles");
        let metrics = ProcessingMetrics::default();
        let mut processor = pipelines
            .processor_named("app", &metrics)
            .expect("named")
            .expect("built");
        let (meta, now_ns) = cx_meta();
        let cx = StageContext {
            container: &meta,
            now_ns,
        };
        let ts_ms = TS_NS / 1_000_000;
        let inputs = [
            format!(r#"{{"ts":{ts_ms},"level":"WARNING","msg":"disk low","user":"ann","x":1}}"#),
            "not json".to_string(),
            format!(r#"{{"ts":{},"msg":"stale"}}"#, ts_ms - 2 * 3_600_000),
        ];
        let mut out = Vec::new();
        let mut dropped = 0;
        for text in &inputs {
            dropped += processor.push(line(text), Position::default(), &cx, &mut out);
        }
        assert_eq!(dropped, 1);
        assert_eq!(processor.last_drop_stage(), Some("timestamp[2]"));
        assert_eq!(out.len(), 2);

        let first = &out[0];
        assert_eq!(&first.message[..], b"disk low");
        assert_eq!(first.level(), Some(Level::Warn));
        assert_eq!(first.ts_ns, TS_NS);
        assert_eq!(first.display_ns(), ts_ms * 1_000_000);
        let fields: Vec<_> = first.fields().expect("fields").iter().collect();
        assert_eq!(
            fields,
            vec![
                ("level", &FieldValue::Str("WARNING".into())),
                ("ts", &FieldValue::Json(ts_ms.to_string())),
                ("user", &FieldValue::Str("ann".into())),
            ]
        );

        // Not JSON: unchanged but for the default level; json and timestamp count it.
        let second = &out[1];
        assert_eq!(&second.message[..], b"not json");
        assert_eq!(second.level(), Some(Level::Info));
        assert!(second.fields().is_none_or(|f| f.is_empty()));
        let failures = |stage: &str| {
            metrics
                .parse_failures
                .get_or_create(&crate::processing::metrics::StageLabels {
                    pipeline: "app".into(),
                    stage: stage.into(),
                })
                .get()
        };
        assert_eq!(
            (
                failures("json[0]"),
                failures("level[1]"),
                failures("timestamp[2]")
            ),
            (1, 0, 1)
        );
    }
}
