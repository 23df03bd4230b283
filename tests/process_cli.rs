//! `log-capturer process` through the real binary: what sample lines become (records,
//! multiline groups, drops), pipeline selection, and exit codes (0 done, 1 I/O, 2 config).

mod process_support;

use process_support::{process, run_with, tempdir};
use std::path::PathBuf;
use std::process::Stdio;

const TWO_PIPELINES: &str = "\
processing:
  pipelines:
    - name: java
      match: { names: ['api-*'] }
      stages:
        - multiline: { start: '^\\d{4}-\\d\\d-\\d\\d ', max_lines: 3 }
    - name: other
      stages:
        - multiline: { continue: '^\\s' }
";

const TRACE: &str = "\
2026-12-01 10:00:00 ERROR boom
java.lang.IllegalStateException: x
\tat a.B.c(B.java:1)
\tat a.B.d(B.java:2)
2026-12-01 10:00:01 INFO fine
";

#[test]
fn the_first_pipeline_runs_by_default_and_groups_show_their_input_lines() {
    let dir = tempdir();
    let run = process(dir.path(), TWO_PIPELINES, &[], TRACE);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let spans: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split_once(": ").map_or(l, |(s, _)| s))
        .collect();
    // max_lines 3 cuts the trace: the fourth line starts a group of its own.
    assert_eq!(spans, ["1-3", "4", "5"], "stdout:\n{}", run.stdout);
    assert!(
        run.stdout.contains(
            r#""message":"2026-12-01 10:00:00 ERROR boom\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)""#
        ),
        "stdout:\n{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("pipeline java: 5 lines in, 3 records out (1 multiline groups), 0 dropped"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn the_pipeline_is_chosen_by_name_or_by_container() {
    let dir = tempdir();
    // `other` joins lines that start with white space to the line before.
    let by_name = process(
        dir.path(),
        TWO_PIPELINES,
        &["--pipeline", "other", "--format", "ndjson"],
        TRACE,
    );
    assert_eq!(by_name.code, Some(0), "stderr: {}", by_name.stderr);
    let inputs: Vec<serde_json::Value> = by_name
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON")["input"].clone())
        .collect();
    assert_eq!(
        inputs,
        [
            serde_json::json!([1, 1]),
            serde_json::json!([2, 4]),
            serde_json::json!([5, 5])
        ],
        "stdout:\n{}",
        by_name.stdout
    );
    // A container `web` does not match `api-*`: `other` (no match: every container) applies.
    let by_container = process(dir.path(), TWO_PIPELINES, &["--container", "web"], TRACE);
    assert!(
        by_container.stderr.starts_with("pipeline other:"),
        "stderr: {}",
        by_container.stderr
    );
    let by_container = process(
        dir.path(),
        TWO_PIPELINES,
        &["--container", "api-7", "--stream", "stderr"],
        TRACE,
    );
    assert!(
        by_container.stderr.starts_with("pipeline java:"),
        "stderr: {}",
        by_container.stderr
    );
    assert!(
        by_container
            .stdout
            .contains(r#""container_name":"api-7","image":"","stream":"stderr""#),
        "stdout:\n{}",
        by_container.stdout
    );
}

#[test]
fn docker_timestamp_prefixes_are_the_records_timestamps() {
    let dir = tempdir();
    let input = "2026-12-01T06:00:00.123456789Z 2026-12-01 10:00:00 start\n\
                 2026-12-01T06:00:00.2Z \tat x\n";
    let run = process(dir.path(), TWO_PIPELINES, &["--pipeline", "java"], input);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(
        run.stdout
            .starts_with(r#"1-2: {"timestamp":"2026-12-01T06:00:00.123456789Z","#),
        "stdout:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(r#""message":"2026-12-01 10:00:00 start\n\tat x""#),
        "stdout:\n{}",
        run.stdout
    );
}

#[test]
fn config_errors_name_the_key_path_and_exit_2() {
    let dir = tempdir();
    let bad_regex = "processing:\n  pipelines:\n    - name: p\n      stages:\n        \
                     - multiline: { start: '(' }\n";
    let run = process(dir.path(), bad_regex, &[], "x\n");
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr
            .contains("processing.pipelines[0].stages[0].multiline.start: invalid regex"),
        "stderr: {}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);

    let late_multiline = "processing:\n  pipelines:\n    - name: p\n      stages:\n        \
                          - multiline: { start: 'x' }\n        - multiline: { start: 'y' }\n";
    let run = process(dir.path(), late_multiline, &[], "x\n");
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains(
            "processing.pipelines[0].stages[1].multiline: multiline must be the first stage"
        ),
        "stderr: {}",
        run.stderr
    );

    let unknown = process(dir.path(), TWO_PIPELINES, &["--pipeline", "nope"], "x\n");
    assert_eq!(unknown.code, Some(2), "stderr: {}", unknown.stderr);
    assert!(
        unknown.stderr.contains(
            "--pipeline nope: no such pipeline in processing.pipelines (there: java, other)"
        ),
        "stderr: {}",
        unknown.stderr
    );

    let missing = run_with(&dir.path().join("absent.yaml"), &[], Stdio::null());
    assert_eq!(missing.code, Some(2), "stderr: {}", missing.stderr);
    assert!(
        missing.stderr.contains("absent.yaml"),
        "stderr: {}",
        missing.stderr
    );
}

#[test]
fn without_a_pipeline_lines_pass_unchanged() {
    let dir = tempdir();
    let run = process(dir.path(), "http:\n  listen: \"\"\n", &[], "a\nb\n");
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 2, "stdout:\n{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .all(|l| l.contains(r#""stream":"stdout""#)),
        "stdout:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("note: processing.pipelines is empty"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn an_unreadable_stdin_is_an_io_error_exit_1() {
    let dir = tempdir();
    let config: PathBuf = dir.path().join("config.yaml");
    std::fs::write(&config, TWO_PIPELINES).expect("write config");
    // A directory opens but cannot be read: EISDIR.
    let stdin = std::fs::File::open(dir.path()).expect("open the directory");
    let run = run_with(&config, &[], Stdio::from(stdin));
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("reading stdin"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn drops_name_the_stage_that_dropped_them() {
    let dir = tempdir();
    let config = "processing:\n  pipelines:\n    - name: quiet\n      stages:\n        \
                  - fields: { add: { env: prod } }\n        - drop: { expression: '^DEBUG ' }\n";
    let run = process(
        dir.path(),
        config,
        &["--format", "ndjson"],
        "DEBUG a\nINFO b\nDEBUG c\n",
    );
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let outcomes: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(outcomes.len(), 3, "stdout:\n{}", run.stdout);
    assert_eq!(
        outcomes[0],
        serde_json::json!({"input": [1, 1], "dropped_by": "drop[1]"})
    );
    assert_eq!(outcomes[1]["input"], serde_json::json!([2, 2]));
    assert_eq!(outcomes[1]["record"]["message"], "INFO b");
    assert_eq!(
        outcomes[2],
        serde_json::json!({"input": [3, 3], "dropped_by": "drop[1]"})
    );
    assert!(
        run.stderr
            .contains("3 lines in, 1 records out (0 multiline groups), 2 dropped"),
        "stderr: {}",
        run.stderr
    );
}
