//! The whole source on real files: globs, the descriptor budget and reopening closed files.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tail::tests::append;
use super::*;
use crate::pipeline::AckPosition;

/// A running source on `settings_yaml` (the `sources:` keys), with its queue's receiver.
struct Running {
    rx: mpsc::Receiver<Delivery>,
    store: Arc<CheckpointStore>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn run_source(state: &Path, sources_yaml: &str) -> Running {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(CheckpointStore::open(state, Arc::clone(&metrics)).expect("store"));
    run_source_on(store, metrics, sources_yaml)
}

/// Another file source on the same store (as a config reload starts one).
fn run_source_on(
    store: Arc<CheckpointStore>,
    metrics: Arc<Metrics>,
    sources_yaml: &str,
) -> Running {
    let config: SourcesConfig = serde_saphyr::from_str(sources_yaml).expect("config");
    let (tx, rx) = mpsc::channel(16);
    let source = FileSource::new(FileSourceContext {
        config,
        pipeline: tx,
        budget: QueueBudget::new(16 << 20, Arc::clone(&metrics)),
        metrics: Arc::clone(&metrics),
        checkpoints: Arc::clone(&store),
        pipelines: Arc::new(Pipelines::default()),
        max_line_bytes: 1024,
        host: "h".into(),
    });
    let cancel = CancellationToken::new();
    let task = tokio::spawn(source.run(cancel.clone()));
    Running {
        rx,
        store,
        metrics,
        cancel,
        task,
    }
}

/// A temporary directory with an empty `logs` directory in it (the state goes beside it).
fn logs_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    (dir, logs)
}

/// Three files and one descriptor: each is read (the ones waiting get the descriptor when
/// the reader holding it has nothing to read), and more lines written later too.
#[tokio::test]
async fn more_files_than_descriptors_are_all_read() {
    let (dir, logs) = logs_dir();
    for name in ["a", "b", "c"] {
        append(
            &logs.join(format!("{name}.log")),
            &format!("{name} 1\n{name} 2\n"),
        );
    }
    let Running {
        mut rx,
        store,
        metrics,
        cancel,
        task,
    } = run_source(
        &dir.path().join("state"),
        &format!(
            "files:\n  - include: [\"{}/*.log\"]\nfile_settings:\n  max_open_files: 1\n  poll_interval: 20ms\n  rescan_interval: 200ms\n",
            logs.display()
        ),
    );
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut max_open = 0;
    let mut receive = async |want: usize, got: &mut BTreeMap<String, Vec<String>>| {
        while got.values().map(Vec::len).sum::<usize>() < want {
            let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out with {got:?}"))
                .expect("delivery");
            max_open = max_open.max(metrics.files.open.get());
            for l in &d.batch.lines {
                got.entry(d.batch.container.name.clone())
                    .or_default()
                    .push(String::from_utf8_lossy(&l.message).into_owned());
            }
            if let AckPosition::File(p) = &d.batch.position {
                store.ack_file(&p.id.key(), p.clone());
            }
        }
    };
    receive(6, &mut got).await;
    for name in ["a", "b", "c"] {
        append(&logs.join(format!("{name}.log")), &format!("{name} 3\n"));
    }
    receive(9, &mut got).await;
    for (name, lines) in &got {
        let short = Path::new(name)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name");
        let want: Vec<String> = (1..=3).map(|i| format!("{short} {i}")).collect();
        assert_eq!(lines, &want, "{name}");
    }
    assert_eq!(got.len(), 3);
    assert!(max_open <= 1, "at most one descriptor: {max_open}");
    assert_eq!(metrics.files.watched.get(), 3);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the source returns once its readers are done")
        .expect("join");
    assert_eq!(metrics.files.open.get(), 0);
    assert_eq!(metrics.files.watched.get(), 0);
}

#[test]
fn rotated_names() {
    let orig = Path::new("/var/log/app.log");
    assert!(identity::rotated_name_of(
        Path::new("/var/log/app.log.1"),
        orig
    ));
    assert!(identity::rotated_name_of(
        Path::new("/var/log/app.log-20261201"),
        orig
    ));
    assert!(!identity::rotated_name_of(
        Path::new("/var/log/app.log"),
        orig
    ));
    assert!(!identity::rotated_name_of(
        Path::new("/var/log/other.log"),
        orig
    ));
    assert!(!identity::rotated_name_of(
        Path::new("/var/log/old/app.log.1"),
        orig
    ));
}

/// copytruncate with a glob that matches the copy too (`app.log*`): the copy is not read as a
/// new file, the lines written just before the truncation are read from it, every line once.
#[tokio::test]
async fn a_copytruncate_copy_in_the_globs_is_not_read_twice() {
    let (dir, logs) = logs_dir();
    let live = logs.join("app.log");
    let lines = |from: usize, to: usize| -> String {
        (from..=to).map(|i| format!("line {i:04}\n")).collect()
    };
    append(&live, &lines(1, 200));
    // Started as in the test above, each with its own sources YAML spelled out (kept apart).
    let Running {
        mut rx,
        store,
        metrics,
        cancel,
        task,
    } = run_source(
        &dir.path().join("state"),
        &format!(
            "files:\n  - include: [\"{}/app.log*\"]\nfile_settings:\n  poll_interval: 300ms\n  rescan_interval: 100ms\n",
            logs.display()
        ),
    );
    let mut got: Vec<String> = Vec::new();
    let mut receive = async |want: usize, got: &mut Vec<String>| {
        while got.len() < want {
            let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out with {} lines", got.len()))
                .expect("delivery");
            for l in &d.batch.lines {
                got.push(String::from_utf8_lossy(&l.message).into_owned());
            }
            if let AckPosition::File(p) = &d.batch.position {
                store.ack_file(&p.id.key(), p.clone());
            }
        }
    };
    receive(200, &mut got).await;
    // logrotate's copytruncate, with lines written after the reader's last read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    append(&live, &lines(201, 210));
    std::fs::copy(&live, logs.join("app.log.1")).expect("copy");
    tokio::time::sleep(Duration::from_millis(150)).await; // a rescan sees the copy
    OpenOptions::new()
        .write(true)
        .open(&live)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&live, &lines(211, 220));
    receive(220, &mut got).await;
    // A few more rescans: the copy is never read as a file of its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(d) = rx.try_recv() {
        for l in &d.batch.lines {
            got.push(String::from_utf8_lossy(&l.message).into_owned());
        }
    }
    let want: Vec<String> = (1..=220).map(|i| format!("line {i:04}")).collect();
    assert_eq!(got, want);
    assert_eq!(metrics.files.truncations.get(), 1);
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

async fn messages(
    rx: &mut mpsc::Receiver<Delivery>,
    store: &CheckpointStore,
    n: usize,
) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out with {got:?}"))
            .expect("delivery");
        got.extend(
            d.batch
                .lines
                .iter()
                .map(|l| String::from_utf8_lossy(&l.message).into_owned()),
        );
        if let AckPosition::File(p) = &d.batch.position {
            store.ack_file(&p.id.key(), p.clone());
        }
    }
    got
}

/// `initial_position: end` skips what files held before the agent's first run; a file that
/// appears later — also while a reload restarts the source — is read from its start.
#[tokio::test]
async fn initial_position_end_applies_to_the_first_scan_of_a_first_run_only() {
    let (dir, logs) = logs_dir();
    append(&logs.join("a.log"), "old 1\nold 2\n");
    let yaml = format!(
        "files:\n  - include: [\"{}/*.log\"]\n    initial_position: end\nfile_settings:\n  poll_interval: 20ms\n  rescan_interval: 100ms\n",
        logs.display()
    );
    let mut r = run_source(&dir.path().join("state"), &yaml);
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&logs.join("a.log"), "new 1\n");
    append(&logs.join("b.log"), "b 1\n");
    let mut got = messages(&mut r.rx, &r.store, 2).await;
    got.sort();
    assert_eq!(got, ["b 1", "new 1"]);
    r.cancel.cancel();
    r.task.await.expect("join");
    // A reload: a new source on the same store; a file created meanwhile is read whole.
    append(&logs.join("c.log"), "c 1\n");
    let mut again = run_source_on(Arc::clone(&r.store), Arc::clone(&r.metrics), &yaml);
    append(&logs.join("a.log"), "new 2\n");
    let mut got = messages(&mut again.rx, &again.store, 2).await;
    got.sort();
    assert_eq!(got, ["c 1", "new 2"]);
    again.cancel.cancel();
    again.task.await.expect("join");
}

/// A log directory briefly missing (remount, redeploy): the stored positions of its files
/// are kept, and they resume where they were when it is back (not read again from 0).
#[tokio::test]
async fn a_missing_directory_does_not_forget_its_files_positions() {
    let (dir, logs) = logs_dir();
    let path = logs.join("app.log");
    append(&path, "one\ntwo\n");
    let id = crate::sources::follow::id_of_path(&path)
        .expect("stat")
        .expect("file");
    let metrics = Arc::new(Metrics::new());
    let state = dir.path().join("state");
    let store = Arc::new(CheckpointStore::open(&state, Arc::clone(&metrics)).expect("store"));
    let fingerprint =
        crate::sources::follow::fingerprint_of(&std::fs::File::open(&path).expect("open"), 1024)
            .expect("fp");
    store.init_file(
        &id.key(),
        crate::checkpoint::FilePosition {
            path: path.display().to_string(),
            id,
            fingerprint,
            offset: 4,
        },
    );
    let away = dir.path().join("logs.away");
    std::fs::rename(&logs, &away).expect("rename away");
    let Running {
        mut rx,
        store,
        cancel,
        task,
        ..
    } = run_source_on(
        store,
        metrics,
        &format!(
            "files:\n  - include: [\"{}/*.log\"]\nfile_settings:\n  poll_interval: 20ms\n  rescan_interval: 100ms\n",
            logs.display()
        ),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        store.file_position(&id.key()).is_some(),
        "kept while its directory is missing"
    );
    std::fs::rename(&away, &logs).expect("rename back");
    let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a batch")
        .expect("delivery");
    let lines: Vec<_> = d.batch.lines.iter().map(|l| l.message.clone()).collect();
    assert_eq!(lines, [bytes::Bytes::from("two")]);
    cancel.cancel();
    let _ = task.await;
}
