//! One reader against real files: what it hands over (lines and positions) across partial
//! lines, copytruncate, delete and multiline groups. The source around it (globs, inotify)
//! is not involved: the reader's own polling drives it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::checkpoint::CheckpointStore;
use crate::config::{HumanDuration, SourcesConfig};
use crate::observability::metrics::Metrics;
use crate::pipeline::{AckPosition, QueueBudget};
use crate::processing::Pipelines;

struct Harness {
    _dir: tempfile::TempDir,
    logs: PathBuf,
    rx: mpsc::Receiver<Delivery>,
    store: Arc<CheckpointStore>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<TailEnd>,
}

fn settings() -> FileSettings {
    FileSettings {
        poll_interval: HumanDuration(Duration::from_millis(300)),
        flush_partial_after: HumanDuration(Duration::from_millis(100)),
        ..FileSettings::default()
    }
}

pub(crate) fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
        .write_all(text.as_bytes())
        .expect("write");
}

/// Cuts `path` to nothing, as logrotate's copytruncate does after its copy.
fn truncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(0)
        .expect("truncate");
}

impl Harness {
    /// A reader on `logs/app.log` (written with `initial` first), with the pipeline `pipeline`
    /// (a `processing.pipelines` YAML list) if given.
    fn start(initial: &str, pipeline: Option<&str>) -> Harness {
        Harness::start_with(initial, pipeline, settings())
    }

    /// Rotates `app.log` the way logrotate's copytruncate does: `before` is appended, the
    /// file copied to `app.log.1` and truncated, then `after` appended. Returns the copy.
    fn copytruncate(&self, before: &str, after: &str) -> PathBuf {
        let path = self.path();
        append(&path, before);
        let copy = self.logs.join("app.log.1");
        fs::copy(&path, &copy).expect("copy");
        truncate(&path);
        append(&path, after);
        copy
    }

    fn start_with(initial: &str, pipeline: Option<&str>, settings: FileSettings) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).expect("mkdir");
        let path = logs.join("app.log");
        append(&path, initial);
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(
            CheckpointStore::open(&dir.path().join("state"), Arc::clone(&metrics)).expect("store"),
        );
        let (tx, rx) = mpsc::channel(64);
        let config: SourcesConfig = serde_saphyr::from_str(&format!(
            "files:\n  - include: [\"{}/app.log*\"]\n",
            logs.display()
        ))
        .expect("config");
        let ctx = Arc::new(TailContext {
            pipeline: tx,
            budget: QueueBudget::new(64 << 20, Arc::clone(&metrics)),
            metrics: Arc::clone(&metrics),
            checkpoints: Arc::clone(&store),
            settings,
            max_line_bytes: 1024,
            pool: FdPool::new(8),
            matcher: Arc::new(Matcher::new(&config).expect("matcher")),
        });
        let processor = pipeline.map(|yaml| {
            let config: crate::processing::ProcessingConfig =
                serde_saphyr::from_str(&format!("pipelines:\n{yaml}")).expect("processing");
            let pipelines = Pipelines::compile(&config).expect("compile");
            pipelines
                .processor_named("p", &metrics.processing)
                .expect("named p")
                .expect("instantiates")
        });
        let id = crate::sources::follow::id_of_path(&path)
            .expect("stat")
            .expect("exists");
        let cancel = CancellationToken::new();
        let tail = Tail {
            ctx,
            shared: Arc::new(ReaderShared::new(path.clone())),
            id,
            group: 0,
            preexisting: false,
            meta: Arc::new(ContainerMeta::for_file(
                id.key(),
                path.display().to_string(),
                "host".into(),
                Vec::new(),
            )),
            processor,
            cancel: cancel.clone(),
        };
        Harness {
            _dir: dir,
            logs,
            rx,
            store,
            metrics,
            cancel,
            task: tokio::spawn(tail.run()),
        }
    }

    fn path(&self) -> PathBuf {
        self.logs.join("app.log")
    }

    /// Receives batches until `n` records came; acknowledges each (as the ledger would).
    /// Returns the records' messages and the last batch's offset.
    async fn take(&mut self, n: usize) -> (Vec<String>, u64) {
        let mut got = Vec::new();
        let mut offset = 0;
        while got.len() < n {
            let d = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out with {got:?}"))
                .expect("a delivery");
            for l in &d.batch.lines {
                got.push(String::from_utf8_lossy(&l.message).into_owned());
            }
            if let AckPosition::File(p) = &d.batch.position {
                offset = p.offset;
                self.store.ack_file(&p.id.key(), p.clone());
            }
        }
        (got, offset)
    }

    /// Nothing more is handed over within `d`.
    async fn quiet(&mut self, d: Duration) {
        if let Ok(Some(extra)) = tokio::time::timeout(d, self.rx.recv()).await {
            let lines: Vec<_> = extra
                .batch
                .lines
                .iter()
                .map(|l| l.message.clone())
                .collect();
            panic!("unexpected batch {lines:?}");
        }
    }
}

#[tokio::test]
async fn a_partial_last_line_is_flushed_once_and_its_newline_makes_no_record() {
    let mut h = Harness::start("one\ntw", None);
    let (got, offset) = h.take(1).await;
    assert_eq!((got, offset), (vec!["one".to_string()], 4));
    // No newline within flush_partial_after: emitted as it is.
    let (got, offset) = h.take(1).await;
    assert_eq!((got, offset), (vec!["tw".to_string()], 6));
    append(&h.path(), "\nthree\n");
    let (got, offset) = h.take(1).await;
    assert_eq!((got, offset), (vec!["three".to_string()], 13));
    assert_eq!(h.metrics.files.partial_flushes.get(), 1);
    h.quiet(Duration::from_millis(400)).await;
    h.cancel.cancel();
    assert_eq!(h.task.await.expect("join"), TailEnd::Cancelled);
}

#[tokio::test]
async fn copytruncate_reads_the_rest_from_the_copy_then_the_file_from_zero() {
    let mut h = Harness::start("line 1\nline 2\nline 3\n", None);
    let (got, _) = h.take(3).await;
    assert_eq!(got, ["line 1", "line 2", "line 3"]);
    // Let the reader reach its wait, then rotate the way logrotate's copytruncate does, with
    // two lines written after its last read.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let copy = h.copytruncate("line 4\nline 5\n", "line 6\n");
    let (got, offset) = h.take(3).await;
    assert_eq!(got, ["line 4", "line 5", "line 6"]);
    assert_eq!(offset, 7, "the truncated file's own position");
    assert_eq!(h.metrics.files.truncations.get(), 1);
    // The copy is marked read to its end: a scan that finds it does not read it again.
    let copy_id = crate::sources::follow::id_of_path(&copy)
        .expect("stat")
        .expect("copy");
    let p = h
        .store
        .file_position(&copy_id.key())
        .expect("copy position");
    assert_eq!(p.offset, 35);
    h.quiet(Duration::from_millis(400)).await;
    h.cancel.cancel();
    let _ = h.task.await;
}

#[tokio::test]
async fn a_deleted_file_is_read_to_its_end_then_released() {
    let mut h = Harness::start("a\n", None);
    let (got, _) = h.take(1).await;
    assert_eq!(got, ["a"]);
    let mut writer = OpenOptions::new()
        .append(true)
        .open(h.path())
        .expect("open");
    fs::remove_file(h.path()).expect("rm");
    writer.write_all(b"b\nlast without newline").expect("write");
    drop(writer);
    let (got, _) = h.take(2).await;
    assert_eq!(got, ["b", "last without newline"]);
    let end = tokio::time::timeout(Duration::from_secs(10), h.task)
        .await
        .expect("ends")
        .expect("join");
    assert_eq!(end, TailEnd::Finished);
    let rotations = &h.metrics.files.rotations;
    assert_eq!(
        rotations
            .get_or_create(&super::super::metrics::KindLabels { kind: "delete" })
            .get(),
        1
    );
    assert_eq!(h.metrics.files.open.get(), 0, "descriptor released");
}

#[tokio::test]
async fn the_position_stays_before_an_open_multiline_group() {
    let pipeline =
        "  - name: p\n    stages:\n      - multiline: { start: '^\\S', flush_after: 1h }\n";
    let mut h = Harness::start("start 1\n  at a\n  at b\nstart 2\n  at c\n", Some(pipeline));
    let (got, offset) = h.take(1).await;
    assert_eq!(got, ["start 1\n  at a\n  at b"]);
    assert_eq!(offset, 22, "held before `start 2`, whose group is open");
    // The group ends when the next one starts.
    append(&h.path(), "start 3\n");
    let (got, offset) = h.take(1).await;
    assert_eq!(got, ["start 2\n  at c"]);
    assert_eq!(offset, 37);
    h.cancel.cancel();
    let _ = h.task.await;
}

#[tokio::test]
async fn a_file_rotated_away_is_read_until_its_writer_stops() {
    let settings = FileSettings {
        poll_interval: HumanDuration(Duration::from_millis(20)),
        flush_partial_after: HumanDuration(Duration::from_millis(800)),
        ..FileSettings::default()
    };
    let mut h = Harness::start_with("a\n", None, settings);
    assert_eq!(h.take(1).await.0, ["a"]);
    let mut writer = OpenOptions::new()
        .append(true)
        .open(h.path())
        .expect("open");
    // Renamed out of the globs, a new file created in its place; the writer has not reopened
    // yet and writes to the old file a while later (the reader has seen the rename by then).
    fs::rename(h.path(), h.logs.join("rotated.old")).expect("rename");
    append(&h.path(), "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.write_all(b"b\n").expect("write");
    assert_eq!(h.take(1).await.0, ["b"]);
    let end = tokio::time::timeout(Duration::from_secs(10), h.task)
        .await
        .expect("ends")
        .expect("join");
    assert_eq!(end, TailEnd::Finished);
    let rename = super::super::metrics::KindLabels { kind: "rename" };
    assert_eq!(h.metrics.files.rotations.get_or_create(&rename).get(), 1);
}

fn fast_close() -> FileSettings {
    FileSettings {
        poll_interval: HumanDuration(Duration::from_millis(50)),
        flush_partial_after: HumanDuration(Duration::from_millis(100)),
        close_inactive: HumanDuration(Duration::from_millis(200)),
        ..FileSettings::default()
    }
}

#[tokio::test]
async fn a_closed_file_whose_inode_holds_other_content_is_not_resumed_at_the_old_offset() {
    let mut h = Harness::start_with("old line\n", None, fast_close());
    assert_eq!(h.take(1).await.0, ["old line"]);
    // Closed when idle, then the same inode gets other content (as a new file on a reused
    // inode would): its bytes after the old offset must not be read as lines.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.metrics.files.open.get(), 0, "closed while idle");
    fs::write(h.path(), "NEW CONTENT, other file\nsecond\n").expect("rewrite");
    let end = tokio::time::timeout(Duration::from_secs(10), &mut h.task)
        .await
        .expect("ends")
        .expect("join");
    assert_eq!(
        end,
        TailEnd::Finished,
        "done with it: the scan takes it from 0"
    );
    // Only the end-of-stream marker follows: no line of the other content.
    while let Ok(d) = h.rx.try_recv() {
        assert!(d.batch.lines.is_empty(), "lines of the other content");
    }
    assert_eq!(h.metrics.files.inode_reuses.get(), 1);
}

#[tokio::test]
async fn after_a_copytruncate_another_file_is_never_taken_for_the_copy() {
    let mut h = Harness::start("line 1, longer than what follows\n", None);
    assert_eq!(h.take(1).await.0, ["line 1, longer than what follows"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let path = h.path();
    fs::copy(&path, h.logs.join("app.log.1")).expect("copy");
    truncate(&path);
    // Seen empty first (the poll, 300 ms): what the reader fingerprints then is nothing.
    tokio::time::sleep(Duration::from_millis(700)).await;
    append(&path, "x is longer\n");
    assert_eq!(h.take(1).await.0, ["x is longer"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another file, the most recently modified, then a truncation without a copy: its lines
    // must not be emitted as app.log's.
    fs::write(
        h.logs.join("other.log"),
        "xx other 1\nxx other 2\nxx other 3\n",
    )
    .expect("other");
    truncate(&path);
    tokio::time::sleep(Duration::from_millis(700)).await;
    append(&path, "y\n");
    assert_eq!(h.take(1).await.0, ["y"]);
    h.quiet(Duration::from_millis(400)).await;
    h.cancel.cancel();
    let _ = h.task.await;
}

#[tokio::test]
async fn the_acknowledged_position_follows_a_fingerprint_upgrade() {
    let settings = FileSettings {
        fingerprint_bytes: crate::config::ByteSize(16),
        ..settings()
    };
    let mut h = Harness::start_with("short\n", None, settings);
    assert_eq!(h.take(1).await, (vec!["short".to_string()], 6));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The file now passes `fingerprint_bytes`: the reader's fingerprint grows; the last
    // batch's acknowledgement must still move the stored position (else a restart re-sends).
    append(&h.path(), "a line long enough to pass sixteen\n");
    let (_, offset) = h.take(1).await;
    assert_eq!(offset, 41);
    let id = crate::sources::follow::id_of_path(&h.path())
        .expect("stat")
        .expect("file");
    let stored = h.store.file_position(&id.key()).expect("position");
    assert_eq!((stored.offset, stored.fingerprint.len), (41, 16));
    h.cancel.cancel();
    let _ = h.task.await;
}

#[tokio::test]
async fn after_a_copytruncate_the_copy_keeps_what_is_not_acknowledged_yet() {
    let mut h = Harness::start("line 1\nline 2\nline 3\n", None);
    assert_eq!(h.take(3).await.1, 21);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let copy = h.copytruncate("line 4\nline 5\n", "line 6\n");
    // Received, not acknowledged yet (a SIGKILL now must leave lines 4 and 5 to be read).
    let mut pending = Vec::new();
    let mut got = Vec::new();
    while got.len() < 3 {
        let d = tokio::time::timeout(Duration::from_secs(10), h.rx.recv())
            .await
            .expect("a batch")
            .expect("delivery");
        got.extend(d.batch.lines.iter().map(|l| l.message.clone()));
        pending.push(d.batch.position.clone());
    }
    assert_eq!(got, ["line 4", "line 5", "line 6"].map(bytes::Bytes::from));
    let copy_key = crate::sources::follow::id_of_path(&copy)
        .expect("stat")
        .expect("copy")
        .key();
    let at = |h: &Harness| h.store.file_position(&copy_key).expect("copy position");
    assert_eq!(
        at(&h).offset,
        21,
        "the copy resumes after what was acknowledged"
    );
    // The late acknowledgements of the old content move the copy's position on.
    for p in pending {
        if let AckPosition::File(p) = p {
            h.store.ack_file(&p.id.key(), p);
        }
    }
    assert_eq!(at(&h).offset, 35);
    h.cancel.cancel();
    let _ = h.task.await;
}

#[tokio::test]
async fn the_lag_series_moves_with_a_rename_and_leaves_another_files_series() {
    use super::super::metrics::PathLabels;
    let mut h = Harness::start("a\n", None);
    assert_eq!(h.take(1).await.0, ["a"]);
    let label = |p: &Path| PathLabels {
        path: p.display().to_string(),
    };
    let lag = |h: &Harness, p: &Path| h.metrics.files.lag_bytes.get(&label(p)).map(|g| g.get());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(lag(&h, &h.path()), Some(0));
    // Renamed within the globs, a new file at the path whose reader reports its own lag.
    let rotated = h.logs.join("app.log.1");
    fs::rename(h.path(), &rotated).expect("rename");
    append(&h.path(), "");
    let other = crate::checkpoint::FileId { dev: 0, ino: 1 };
    h.metrics.files.set_lag(&label(&h.path()), other, 7);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(lag(&h, &rotated), Some(0), "moved to the new name");
    assert_eq!(
        lag(&h, &h.path()),
        Some(7),
        "the other file's series is left alone"
    );
    h.cancel.cancel();
    let _ = (&mut h.task).await;
    assert_eq!(lag(&h, &rotated), None, "removed when the reader ends");
    assert_eq!(lag(&h, &h.path()), Some(7));
}
