//! The whole source on real files: globs, the descriptor budget and reopening closed files.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::pipeline::AckPosition;

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
        .write_all(text.as_bytes())
        .expect("write");
}

/// Three files and one descriptor: each is read (the ones waiting get the descriptor when
/// the reader holding it has nothing to read), and more lines written later too.
#[tokio::test]
async fn more_files_than_descriptors_are_all_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    for name in ["a", "b", "c"] {
        append(
            &logs.join(format!("{name}.log")),
            &format!("{name} 1\n{name} 2\n"),
        );
    }
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(
        CheckpointStore::open(&dir.path().join("state"), Arc::clone(&metrics)).expect("store"),
    );
    let config: SourcesConfig = serde_saphyr::from_str(&format!(
        "files:\n  - include: [\"{}/*.log\"]\nfile_settings:\n  max_open_files: 1\n  poll_interval: 20ms\n  rescan_interval: 200ms\n",
        logs.display()
    ))
    .expect("config");
    let (tx, mut rx) = mpsc::channel(16);
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
