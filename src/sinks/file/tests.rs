use super::rotate::RotatePolicy;
use super::*;
use crate::pipeline::{LogLine, StreamKind};
use bytes::Bytes;
use std::time::SystemTime;

fn meta(id: &str, name: &str) -> Arc<ContainerMeta> {
    Arc::new(ContainerMeta::named(id, name))
}

/// Containers `id0`..: named `c0`.., each writing to `c{i}.log`.
fn containers(n: usize) -> Vec<Arc<ContainerMeta>> {
    (0..n)
        .map(|i| meta(&format!("id{i}"), &format!("c{i}")))
        .collect()
}

fn batch(container: &Arc<ContainerMeta>, from: usize, n: usize, width: usize) -> Batch {
    Batch {
        container: Arc::clone(container),
        lines: (from..from + n)
            .map(|i| LogLine {
                ts_ns: i as i64,
                stream: StreamKind::Stdout,
                message: Bytes::from(format!("{i:0>width$}")),
                truncated: false,
                extra: None,
            })
            .collect(),
        position: crate::capture::Cursor::default().into(),
    }
}

fn sink_in(dir: &Path, max_open_files: usize) -> FileSink {
    let template = format!("{}/{{container_name}}.log", dir.display());
    FileSink::for_tests(
        &template,
        Durability::Always,
        max_open_files,
        Arc::new(Metrics::new()),
    )
}

/// The numeric messages of a file, in order.
fn numbers(path: &Path) -> Vec<usize> {
    let text = std::fs::read_to_string(path).expect("read");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON records only");
            v["message"]
                .as_str()
                .and_then(|m| m.parse().ok())
                .expect("number")
        })
        .collect()
}

/// Asserts that `file` in `dir` holds exactly the numbered lines `want`, in order.
#[track_caller]
fn assert_numbers(dir: &Path, file: &str, want: std::ops::Range<usize>) {
    assert_eq!(numbers(&dir.join(file)), want.collect::<Vec<_>>());
}

fn write(sink: &mut FileSink, b: &Batch) {
    if let Err(e) = sink.write_batch(b) {
        panic!("write: {e}");
    }
}

#[test]
fn large_buffers_are_written_ahead_of_the_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = sink_in(dir.path(), 16);
    let c = meta("id", "c");
    let path = dir.path().join("c.log");
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // 1000 lines of 1000 bytes: well past the write-ahead size, well under a flush.
    for b in 0..10 {
        write(&mut sink, &batch(&c, b * 100, 100, 1000));
    }
    assert!(size() > 0, "nothing reached the file before the flush");
    sink.flush().expect("flush");
    assert_eq!(
        numbers(&path),
        (0..1000).collect::<Vec<_>>(),
        "each line once, in order"
    );
}

/// Item 13 of issue 9: one large batch grew a file's buffer, and every file of a hundred
/// busy containers kept that allocation for good (tens of MiB the queue budget never saw).
#[test]
fn written_out_buffers_let_large_allocations_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = sink_in(dir.path(), 16);
    let containers = containers(4);
    for c in &containers {
        write(&mut sink, &batch(c, 0, 1000, 1000)); // ~1 MiB encoded
    }
    sink.flush().expect("flush");
    let held: usize = sink.files.values().map(|f| f.buf.capacity()).sum();
    assert!(
        held <= containers.len() * RETAINED_BUF_BYTES,
        "{held} bytes of buffer capacity kept by {} written-out files",
        containers.len()
    );
    for i in 0..4 {
        assert_numbers(dir.path(), &format!("c{i}.log"), 0..1000);
    }
}

#[test]
fn abandon_removes_exactly_what_was_written_after_the_last_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = sink_in(dir.path(), 16);
    let (a, b) = (meta("a", "a"), meta("b", "b"));
    write(&mut sink, &batch(&a, 0, 10, 10));
    write(&mut sink, &batch(&b, 0, 10, 10));
    sink.flush().expect("flush");
    sink.sync().expect("sync");
    sink.commit();
    // Written and flushed, but never acknowledged; then a write-ahead's worth still buffered.
    write(&mut sink, &batch(&a, 10, 10, 10));
    sink.flush().expect("flush");
    write(&mut sink, &batch(&a, 20, 400, 1000));
    write(&mut sink, &batch(&a, 420, 1, 10));
    sink.abandon();
    assert_numbers(dir.path(), "a.log", 0..10);
    assert_numbers(dir.path(), "b.log", 0..10);
    // The next run appends the re-read lines after whole records.
    let mut again = sink_in(dir.path(), 16);
    write(&mut again, &batch(&a, 10, 5, 10));
    again.flush().expect("flush");
    assert_numbers(dir.path(), "a.log", 0..15);
}

#[test]
fn a_file_is_closed_once_its_stream_ended_and_its_lines_are_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = sink_in(dir.path(), 16);
    let (a, b) = (meta("a", "a"), meta("b", "b"));
    write(&mut sink, &batch(&a, 0, 3, 10));
    write(&mut sink, &batch(&b, 0, 3, 10));
    sink.end_of_stream(&a);
    assert_eq!(sink.files.len(), 2, "not before its lines are written");
    sink.flush().expect("flush");
    sink.commit();
    assert_eq!(sink.files.len(), 1, "a's file closed, b's kept");
    assert!(sink.files.contains_key(&dir.path().join("b.log")));
    // A container that starts again gets its file back.
    write(&mut sink, &batch(&a, 3, 3, 10));
    sink.flush().expect("flush");
    sink.commit();
    assert_eq!(sink.files.len(), 2);
    assert_numbers(dir.path(), "a.log", 0..6);
}

#[test]
fn at_max_open_files_the_least_recently_used_committed_file_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = sink_in(dir.path(), 2);
    let containers = containers(5);
    for round in 0..3 {
        for c in &containers {
            // A third file cannot open while two hold unacknowledged lines: the sink says
            // so (the writer then commits and retries), and never loses or reorders lines.
            let b = batch(c, round * 10, 10, 10);
            match sink.write_batch(&b) {
                Ok(()) => {}
                Err(WriteError::Sink(_)) => {
                    sink.flush().expect("flush");
                    sink.commit();
                    write(&mut sink, &b);
                }
                Err(WriteError::Container(e)) => panic!("{e}"),
            }
            assert!(sink.files.len() <= 2, "{} files open", sink.files.len());
        }
    }
    sink.flush().expect("flush");
    for i in 0..5 {
        assert_numbers(dir.path(), &format!("c{i}.log"), 0..30);
    }
}

#[test]
fn a_path_that_cannot_be_created_is_that_containers_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = format!("{}/{{container_name}}/out.log", dir.path().display());
    let mut sink = FileSink::for_tests(&template, Durability::Never, 16, Arc::new(Metrics::new()));
    // A regular file where the container's directory should be (fails even for root).
    std::fs::write(dir.path().join("blocked"), b"").expect("blocker");
    let blocked = meta("b", "blocked");
    match sink.write_batch(&batch(&blocked, 0, 1, 1)) {
        Err(WriteError::Container(e)) => assert!(e.to_string().contains("blocked"), "{e}"),
        other => panic!("expected a container error, got {other:?}"),
    }
    write(&mut sink, &batch(&meta("f", "fine"), 0, 1, 1));
}

#[test]
fn sync_makes_files_and_new_directory_entries_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let template = format!("{}/sub/{{container_name}}.log", dir.path().display());
    let mut sink = FileSink::for_tests(&template, Durability::Always, 16, Arc::clone(&metrics));
    write(&mut sink, &batch(&meta("a", "a"), 0, 1, 1));
    assert_eq!(sink.dirs_to_sync.len(), 2, "{:?}", sink.dirs_to_sync);
    sink.flush().expect("flush");
    assert!(sink.files.values().all(|f| f.unsynced));
    sink.sync().expect("sync");
    assert!(sink.files.values().all(|f| !f.unsynced));
    assert!(sink.dirs_to_sync.is_empty());
    let syncs = metrics
        .sink_syncs
        .get_or_create(&SinkLabels { sink: "file" })
        .get();
    assert_eq!(syncs, 1);
}

#[test]
fn a_failure_in_the_shared_directory_is_the_sinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where the directory of all outputs should be: nobody can write, so the
    // sink must pause (and retry), not hold a container.
    std::fs::write(dir.path().join("out"), b"").expect("blocker");
    let template = format!("{}/out/{{container_name}}.log", dir.path().display());
    let mut sink = FileSink::for_tests(&template, Durability::Never, 16, Arc::new(Metrics::new()));
    match sink.write_batch(&batch(&meta("a", "a"), 0, 1, 1)) {
        Err(WriteError::Sink(_)) => {}
        other => panic!("expected a sink error, got {other:?}"),
    }
}

/// `{NAME}` placeholders must be built in, a container field or a container label that
/// `processing.container_labels` copies; anything else is refused naming sinks.file.path.
#[test]
fn unknown_placeholders_are_refused_at_load() {
    let parse = |path: &str, labels: &str| {
        crate::config::Config::parse(
            &format!(
                "sinks:\n  file:\n    path: {path}\nprocessing:\n  container_labels: {labels}\n"
            ),
            "t",
        )
    };
    assert!(parse("/l/{team}/{container_name}.log", "[team]").is_ok());
    assert!(
        parse(
            "/l/{com.example.team}/{container_name}.log",
            "['com.example.*']"
        )
        .is_ok()
    );
    assert!(parse("/l/{image}/{compose_service}-{container_name}.log", "[]").is_ok());
    for (path, labels) in [
        ("/l/{team}/{container_name}.log", "[]"),
        ("/l/{tean}/{container_name}.log", "[team]"),
    ] {
        let err = parse(path, labels).expect_err(path).to_string();
        assert!(
            err.contains("sinks.file.path") && err.contains("unknown placeholder"),
            "{err}"
        );
    }
    // A field of a sources.files group is a placeholder too.
    let with_group = |path: &str| {
        crate::config::Config::parse(
            &format!(
                "sinks:\n  file:\n    path: {path}\n\
                 sources:\n  files:\n    - include: [/var/log/*.log]\n      fields: {{ job: sys }}\n"
            ),
            "t",
        )
    };
    assert!(with_group("/l/{job}/{container_name}.log").is_ok());
    let err = with_group("/l/{jobs}/{container_name}.log")
        .expect_err("not a group field")
        .to_string();
    assert!(err.contains("unknown placeholder {jobs}"), "{err}");
    // With rotation, a file name may not end in a label value either.
    let rotated = crate::config::Config::parse(
        "sinks:\n  file:\n    path: /l/{container_name}-{team}\n    rotate: {max_bytes: 1MiB}\n\
         processing:\n  container_labels: [team]\n",
        "t",
    );
    assert!(rotated.is_err());
}

/// A host file's records land in the file named by its encoded path, with the file record's
/// exact bytes (`file`, `host`, no `stream`), beside a container's.
#[test]
fn host_file_records_go_to_their_path_named_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = sink_in(dir.path(), 16);
    let file = Arc::new(ContainerMeta::for_file(
        "file-2049-131".into(),
        "/var/log/syslog".into(),
        "node-7".into(),
        vec![("job".into(), "syslog".into())],
    ));
    write(&mut sink, &batch(&file, 1, 2, 1));
    write(&mut sink, &batch(&meta("id", "web"), 3, 1, 1));
    sink.flush().expect("flush");
    let text = std::fs::read_to_string(dir.path().join("%2Fvar%2Flog%2Fsyslog.log"))
        .expect("the file's output");
    let record = |i: usize| {
        format!(
            "{{\"timestamp\":\"1970-01-01T00:00:00.00000000{i}Z\",\"file\":\"/var/log/syslog\",\
             \"host\":\"node-7\",\"message\":\"{i}\",\"fields\":{{\"job\":\"syslog\"}}}}\n"
        )
    };
    assert_eq!(text, record(1) + &record(2));
    assert_eq!(numbers(&dir.path().join("web.log")), [3]);
}

#[path = "rotation_tests.rs"]
mod rotation;
