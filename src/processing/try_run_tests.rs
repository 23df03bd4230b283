use super::*;

fn try_run(config: &str, options: &Options, input: &str) -> Result<(String, Summary), Failure> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).expect("write config");
    let mut out = Vec::new();
    let summary = run(&path, options, input.as_bytes(), &mut out, &mut |_| {})?;
    Ok((String::from_utf8(out).expect("utf-8"), summary))
}

const MULTILINE: &str = "processing:\n  pipelines:\n    - name: java\n      stages:\n        \
        - multiline: { start: '^\\d{4}-' }\n";

#[test]
fn groups_name_the_lines_they_joined() {
    let input =
        "2026-01-01 start one\n  at a\n  at b\n2026-01-01 start two\n2026-01-01 three\n  at c\n";
    let (out, summary) = try_run(MULTILINE, &Options::default(), input).expect("runs");
    let spans: Vec<&str> = out
        .lines()
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(spans, ["1-3", "4", "5-6"], "{out}");
    assert!(
        out.contains(r#""message":"2026-01-01 start one\n  at a\n  at b""#),
        "{out}"
    );
    assert_eq!(
        summary,
        Summary {
            pipeline: Some("java".into()),
            lines: 6,
            records: 3,
            dropped: 0,
            groups: 2,
        }
    );
}

#[test]
fn docker_timestamps_are_taken_and_flush_after_applies_between_them() {
    let input = "2026-12-01T06:00:00.000000001Z 2026-01-01 first\n\
                     2026-12-01T06:00:00.5Z   at a\n\
                     2026-12-01T06:00:09Z   late continuation\n";
    let options = Options {
        format: Format::Ndjson,
        ..Options::default()
    };
    let (out, _) = try_run(MULTILINE, &options, input).expect("runs");
    let lines: Vec<&str> = out.lines().collect();
    // flush_after (2s by default) passed before the third line: the group went alone.
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(
            r#"{"input":[1,2],"record":{"timestamp":"2026-12-01T06:00:00.000000001Z""#
        ),
        "{out}"
    );
    assert!(
        lines[1].starts_with(r#"{"input":[3,3],"record":{"timestamp":"2026-12-01T06:00:09"#),
        "{out}"
    );
    for line in lines {
        serde_json::from_str::<serde_json::Value>(line).expect("valid JSON");
    }
}

#[test]
fn an_unknown_pipeline_is_a_config_error() {
    let options = Options {
        pipeline: Some("nope".into()),
        ..Options::default()
    };
    let err = try_run(MULTILINE, &options, "x\n").expect_err("refused");
    assert_eq!(err.code, EXIT_CONFIG);
    assert!(
        err.message.contains("--pipeline nope") && err.message.contains("java"),
        "{}",
        err.message
    );
}

#[test]
fn a_container_no_pipeline_matches_passes_lines_unchanged() {
    let config = "processing:\n  pipelines:\n    - name: java\n      match: { names: [api-*] }\n      \
            stages:\n        - multiline: { start: '^S' }\n";
    let options = Options {
        container: Some("web".into()),
        ..Options::default()
    };
    let (out, summary) = try_run(config, &options, "S1\nc\n").expect("runs");
    assert_eq!(summary.pipeline, None);
    assert_eq!(out.lines().count(), 2, "{out}");
    let options = Options {
        container: Some("api-1".into()),
        ..Options::default()
    };
    let (out, summary) = try_run(config, &options, "S1\nc\n").expect("runs");
    assert_eq!(summary.pipeline.as_deref(), Some("java"));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(r#""container_name":"api-1""#), "{out}");
}

#[test]
fn drops_name_their_stage_and_loki_extras_follow_the_record() {
    let config = "processing:\n  pipelines:\n    - name: app\n      stages:\n        \
            - json: {}\n        - level: { source: severity }\n        \
            - drop: { levels: [debug] }\n        - labels: { fields: [level, service] }\n";
    let input = "{\"severity\":\"debug\",\"msg\":\"noise\"}\n\
                     {\"severity\":\"WARNING\",\"service\":\"api\",\"msg\":\"slow\"}\n";
    let (out, summary) = try_run(config, &Options::default(), input).expect("runs");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], "1: dropped by drop[2]");
    assert!(lines[1].starts_with("2: {"), "{out}");
    assert!(
        lines[1].ends_with(r#"  loki: {"labels":{"level":"warn","service":"api"}}"#),
        "{out}"
    );
    assert_eq!((summary.records, summary.dropped), (1, 1));
}

/// The commented-out processing section of examples/config.yaml, uncommented, is a valid
/// config that shows every stage kind.
#[test]
fn the_examples_processing_section_is_valid_when_uncommented() {
    let text = include_str!("../../examples/config.yaml");
    let start = text
        .find("  # container_labels:")
        .expect("processing example");
    let section: String = text[start..]
        .lines()
        .take_while(|l| l.starts_with("  #"))
        .map(|l| format!("{}\n", l.replacen("# ", "", 1)))
        .collect();
    let config = Config::parse(&format!("processing:\n{section}"), "example")
        .unwrap_or_else(|e| panic!("{e}\n{section}"));
    let stages = &config.processing.pipelines[0].stages;
    let mut kinds: Vec<&str> = stages.iter().map(|s| s.kind()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), 12, "every stage kind: {kinds:?}");
    assert_eq!(config.processing.container_labels.len(), 2);
}
