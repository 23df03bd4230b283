//! `log-capturer process --file PATH`: a host file's records (`file`, `host`, its group's
//! fields, no `stream`) through its group's pipeline, through the real binary.

mod process_support;

use process_support::{process, tempdir};

/// The name the agent gives the records' `host` (this machine's).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}

const FILES: &str = "\
sources:
  files:
    - include: ['/var/log/nginx/*.log']
      fields: { job: nginx, env: prod }
      pipeline: access
    - include: ['/var/log/**']
      exclude: ['/var/log/**/*.gz']
      fields: { job: varlog }
processing:
  pipelines:
    - name: access
      stages:
        - regex: { expression: '^(?P<method>[A-Z]+) (?P<path>\\S+) (?P<status>\\d{3})' }
        - drop: { expression: 'GET /healthz' }
        - timestamp: { source: time, format: rfc3339, max_age: null, max_future: null }
    - name: other
      stages:
        - fields: { add: { seen: other } }
";

/// The group that takes the path gives its fields and pipeline; the record is the file's,
/// with the exact bytes the sinks write (a `docker logs --timestamps` prefix fixes the time).
#[test]
fn a_file_groups_pipeline_and_fields_make_its_records() {
    let dir = tempdir();
    let input = "2026-12-01T06:00:00.000000001Z GET /index.html 200\n\
                 2026-12-01T06:00:00.000000002Z GET /healthz 200\n";
    let run = process(
        dir.path(),
        FILES,
        &["--file", "/var/log/nginx/access.log"],
        input,
    );
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let want = format!(
        "1: {{\"timestamp\":\"2026-12-01T06:00:00.000000001Z\",\"file\":\"/var/log/nginx/access.log\",\
         \"host\":\"{}\",\"message\":\"GET /index.html 200\",\"fields\":{{\"env\":\"prod\",\
         \"job\":\"nginx\",\"method\":\"GET\",\"path\":\"/index.html\",\"status\":\"200\"}}}}\n\
         2: dropped by drop[1]\n",
        hostname()
    );
    assert_eq!(run.stdout, want);
    assert!(
        run.stderr
            .contains("pipeline access: 2 lines in, 1 records out"),
        "stderr: {}",
        run.stderr
    );
}

/// `--field` adds to and replaces the group's fields; `--pipeline` replaces its pipeline; a
/// timestamp stage's time is the file record's `timestamp` (no `event_time`, no `stream`).
#[test]
fn fields_and_pipeline_can_be_given_and_the_event_time_is_the_timestamp() {
    let dir = tempdir();
    let input = "2026-12-01T06:00:00Z {\"time\":\"2026-11-30T01:02:03Z\"}\n";
    let config = FILES.replace(
        "        - fields: { add: { seen: other } }\n",
        "        - json: {}\n        - timestamp: { source: time, format: rfc3339, max_age: null, max_future: null }\n",
    );
    let run = process(
        dir.path(),
        &config,
        &[
            "--file",
            "/var/log/nginx/error.log",
            "--field",
            "env=staging",
            "--field",
            "team=web",
            "--pipeline",
            "other",
            "--format",
            "ndjson",
        ],
        input,
    );
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    let record = &v["record"];
    assert_eq!(record["timestamp"], "2026-11-30T01:02:03.000000000Z");
    assert_eq!(record["file"], "/var/log/nginx/error.log");
    assert!(record.get("event_time").is_none(), "{record}");
    assert!(record.get("stream").is_none(), "{record}");
    assert_eq!(record["fields"]["env"], "staging");
    assert_eq!(record["fields"]["team"], "web");
    assert_eq!(record["fields"]["job"], "nginx");
}

/// A group without a pipeline, and a path no group takes: the lines pass unchanged, with a
/// note saying why; excluded paths are not taken.
#[test]
fn without_a_group_or_pipeline_lines_pass_unchanged() {
    let dir = tempdir();
    let input = "2026-12-01T06:00:00Z kernel: hello\n";
    let run = process(dir.path(), FILES, &["--file", "/var/log/kern.log"], input);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(
        run.stdout.contains(r#""file":"/var/log/kern.log","#)
            && run.stdout.contains(r#""fields":{"job":"varlog"}"#),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("sources.files[1]") && run.stderr.contains("no pipeline"),
        "stderr: {}",
        run.stderr
    );
    for path in ["/srv/app.log", "/var/log/old/kern.log.1.gz"] {
        let run = process(dir.path(), FILES, &["--file", path], input);
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        assert!(
            run.stderr.contains("no group of sources.files takes"),
            "{path}: {}",
            run.stderr
        );
        assert!(!run.stdout.contains("\"fields\""), "{}", run.stdout);
    }
}

/// `--file` goes with no container option and `--field` only with `--file`: usage errors
/// (exit 2), as is a group whose pipeline does not exist.
#[test]
fn misuse_is_a_usage_or_config_error() {
    let dir = tempdir();
    for args in [
        &["--file", "/var/log/x.log", "--container", "web"][..],
        &["--file", "/var/log/x.log", "--stream", "stderr"][..],
        &["--field", "a=b"][..],
        &["--file", "/var/log/x.log", "--field", "=b"][..],
    ] {
        let run = process(dir.path(), FILES, args, "x\n");
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
    }
    let missing = FILES.replace("pipeline: access", "pipeline: nope");
    let run = process(
        dir.path(),
        &missing,
        &["--file", "/var/log/nginx/a.log"],
        "x\n",
    );
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("sources.files[0].pipeline"),
        "stderr: {}",
        run.stderr
    );
}
