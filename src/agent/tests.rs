use super::*;
use crate::capture::Cursor;
use crate::config::ConfigError;
use crate::observability::metrics::{ResultLabels, SinkLabels};
use crate::pipeline::{Batch, ContainerMeta, LogLine, StreamKind};
use crate::pipeline::{Delivery, LocalSinkWorker, QueueBudget, WriterSettings};
use crate::sinks::Sink;
use tokio::sync::mpsc;

/// A sink whose worker dies on the first batch, as a bug in a sink would kill it.
struct PanickingSink;

impl Sink for PanickingSink {
    fn name(&self) -> &'static str {
        "panicking"
    }
    fn write_batch(&mut self, _batch: &Batch) -> Result<(), crate::sinks::WriteError> {
        panic!("bug in a sink");
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sink worker that dies while capture runs can never acknowledge again: every
/// container's checkpoint would freeze for the rest of the run. The supervisor must notice,
/// count it, record the problem and stop the agent; the batch it never wrote stays
/// unacknowledged (read again at the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_sink_worker_stops_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(CheckpointStore::open(dir.path(), Arc::clone(&metrics)).expect("store"));
    store.init("c", Cursor::at(0));
    let ledger = Arc::new(AckLedger::new(1, Arc::clone(&store)));
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = LocalSinkWorker {
        sink: Box::new(PanickingSink),
        input: rx,
        ledger: Arc::clone(&ledger),
        metrics: Arc::clone(&metrics),
        settings: WriterSettings {
            flush_interval: Duration::from_millis(10),
            flush_bytes: 1024,
            sync_bytes: 1024,
            held_retry: crate::pipeline::HELD_RETRY,
        },
        shutdown: shutdown.clone(),
        status: Arc::new(crate::observability::status::SinkStatus::new(
            "panicking",
            false,
        )),
    };
    let runtime = tokio::runtime::Handle::current();
    let worker = tokio::task::spawn_blocking(move || worker.run_blocking(runtime));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let supervisor = tokio::spawn(supervise_sink_worker(
        "panicking",
        worker,
        shutdown.clone(),
        shutdown.clone(),
        Arc::clone(&metrics),
        Arc::clone(&problems),
    ));

    let budget = QueueBudget::new(1 << 20, Arc::clone(&metrics));
    let permit = budget.acquire(100, 1).await.expect("budget");
    let cursor = Cursor::legacy(5, 1);
    let batch = Batch {
        container: Arc::new(ContainerMeta::new(
            "c".into(),
            "c".into(),
            "img".into(),
            None,
            None,
        )),
        lines: vec![LogLine {
            ts_ns: 5,
            stream: StreamKind::Stdout,
            message: bytes::Bytes::from_static(b"hello"),
            truncated: false,
            extra: None,
        }],
        position: cursor.into(),
    };
    let mut delivery = Delivery::new(batch, permit);
    delivery.seq = 1;
    ledger.register("c", 1, cursor);
    tx.send(Arc::new(delivery)).expect("worker input");

    let stopped = tokio::time::timeout(Duration::from_secs(30), shutdown.cancelled()).await;
    assert!(stopped.is_ok(), "a dead sink worker did not stop the agent");
    tokio::time::timeout(Duration::from_secs(30), supervisor)
        .await
        .expect("supervisor ends")
        .expect("supervisor task");
    let problems = lock(&problems).clone();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("sink worker panicking panicked"),
        "{problems:?}"
    );
    let failures = metrics
        .sink_worker_failures
        .get_or_create(&SinkLabels { sink: "panicking" })
        .get();
    assert_eq!(failures, 1);
    assert_eq!(
        store.get("c"),
        Some(Cursor::at(0)),
        "nothing was acknowledged"
    );
}

fn process(dir: &std::path::Path, source: ConfigSource) -> Process {
    let metrics = Arc::new(Metrics::new());
    let checkpoints = CheckpointStore::open(dir, Arc::clone(&metrics)).expect("store");
    Process {
        metrics,
        checkpoints: Arc::new(checkpoints),
        ready: Arc::new(AtomicBool::new(true)),
        status: Arc::new(StatusBoard::new()),
        pinned_api: None,
        shutdown: CancellationToken::new(),
        agent_start_ns: 0,
        ledger_slot: Arc::new(Mutex::new(std::sync::Weak::new())),
        source: Arc::new(source),
        set_log_level: None,
    }
}

/// The config file `c.yaml` (not fixed), read by `load`.
fn file_source(
    load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
) -> ConfigSource {
    ConfigSource {
        name: "c.yaml".to_string(),
        load: Box::new(load),
        fixed: false,
    }
}

/// The config file `c.yaml` holding `yaml`.
fn yaml_source(yaml: &'static str) -> ConfigSource {
    file_source(move || Config::parse(yaml, "c.yaml"))
}

/// Without `-c` there is no file: a reload applies the embedded default again and says so.
#[tokio::test]
async fn reload_of_the_embedded_default_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = process(
        dir.path(),
        ConfigSource {
            name: "embedded default config".to_string(),
            load: Box::new(|| Ok(Config::embedded_default())),
            fixed: true,
        },
    );
    match evaluate(&Config::embedded_default(), &p).await {
        Verdict::Done(Ok(message), None) => {
            assert!(
                message.contains("nothing to reload (no -c FILE)"),
                "{message}"
            )
        }
        _ => panic!("expected an unchanged reload"),
    }
    assert_eq!(p.metrics.config_last_reload_successful.get(), 1);
}

/// A loader error keeps the running config, answers 500 with the reason, sets the gauge
/// to 0 and counts `invalid`; a pipeline change is handed back for a new generation.
#[tokio::test]
async fn invalid_reload_keeps_the_config_and_sets_the_metric() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = process(
        dir.path(),
        file_source(|| {
            Err(ConfigError::Syntax {
                file: "c.yaml".to_string(),
                message: "capture.rotation_interval: bad".to_string(),
            })
        }),
    );
    match evaluate(&Config::embedded_default(), &p).await {
        Verdict::Done(Err(e), None) => {
            assert_eq!(e.status, 500);
            assert!(e.message.contains("capture.rotation_interval"), "{e:?}");
        }
        _ => panic!("expected a failed reload"),
    }
    assert_eq!(p.metrics.config_last_reload_successful.get(), 0);
    let invalid = p
        .metrics
        .config_reloads
        .get_or_create(&ResultLabels { result: "invalid" })
        .get();
    assert_eq!(invalid, 1);

    let p = process(dir.path(), yaml_source("sinks:\n  discard: {}\n"));
    match evaluate(&Config::embedded_default(), &p).await {
        Verdict::NewGeneration(_, sections) => assert_eq!(sections, vec!["sinks"]),
        _ => panic!("expected a new generation"),
    }
}

/// A reload whose Kafka client librdkafka refuses (an unknown property) fails before
/// anything stops, naming the key path, without the property's value.
#[cfg(feature = "kafka")]
#[tokio::test]
async fn reload_with_a_bad_kafka_property_fails_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = process(
        dir.path(),
        yaml_source("sinks:\n  kafka:\n    properties: {no.such.property: s3cr3t}\n"),
    );
    match evaluate(&Config::embedded_default(), &p).await {
        Verdict::Done(Err(e), None) => {
            assert_eq!(e.status, 500);
            assert!(
                e.message
                    .contains("sinks.kafka.properties.no.such.property: "),
                "{e:?}"
            );
            assert!(!e.message.contains("s3cr3t"), "{e:?}");
        }
        _ => panic!("expected a failed reload"),
    }
}

/// A worker that ends because shutdown closed its input is the normal end: no problem.
#[tokio::test]
async fn worker_ending_at_shutdown_is_no_problem() {
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let problems = Arc::new(Mutex::new(Vec::new()));
    supervise_sink_worker(
        "stdout",
        tokio::spawn(async { Ok(()) }),
        shutdown.clone(),
        shutdown,
        Arc::clone(&metrics),
        Arc::clone(&problems),
    )
    .await;
    assert!(lock(&problems).is_empty());
}
