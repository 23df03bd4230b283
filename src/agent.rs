//! Wires the agent together and owns its lifecycle. Start-up: state, HTTP, Docker, sink
//! workers and router, checkpoint persister, discovery. Shutdown (in this order, so nothing
//! captured is lost): stop discovery and every capture task → the queue closes → the router
//! ends → each sink worker drains, flushes (or buffers on disk) and acknowledges → checkpoints
//! are persisted one last time → HTTP stops.
//!
//! The drain is bounded by `pipeline.shutdown_timeout`: a sink blocked for good (a stdout
//! nobody reads, a hung file system) cannot keep the agent from exiting. What is not
//! acknowledged by then is abandoned: it is not checkpointed, so the next start reads it again.
//! A sink worker that dies while capture runs (a panic) stops the agent the same way, since it
//! can never acknowledge again. Either, a sink that gave up on batches at shutdown (still
//! failing), or a failed final checkpoint write makes the run `Outcome::Incomplete` (exit
//! code 3).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::{Backoff, sleep_or_cancel};
use crate::capture::CaptureContext;
use crate::checkpoint::CheckpointStore;
use crate::config::Config;
use crate::config::LokiSinkConfig;
use crate::discovery::{Discovery, DiscoverySettings, filter::own_container_id};
use crate::docker::{DockerClient, Endpoint};
use crate::observability::metrics::SinkLabels;
use crate::observability::{http, metrics::Metrics};
use crate::pipeline::{AckLedger, Delivery, LocalSinkWorker, QueueBudget, WriterSettings, route};
use crate::sinks::loki::{self, Encoder, LokiClient, LokiWorker, store::SharedStore};
use crate::sinks::{FileSink, FileSinkSettings, NullSink, Sink, StdoutSink};
use tokio::task::JoinHandle;

/// How a run that started ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything captured was acknowledged by every sink and every checkpoint was written.
    Clean,
    /// The stop left something behind; each reason was logged. Nothing is lost: what was not
    /// acknowledged, or whose checkpoint was not written, is read again at the next start.
    Incomplete(Vec<String>),
}

/// How long the final checkpoint write may take after the drain (it fsyncs; on a hung file
/// system it would never return).
const FINAL_PERSIST_GRACE: Duration = Duration::from_secs(5);
/// After `shutdown_timeout`, how long the Loki worker gets to end the step under way (one disk
/// append; a push in flight is dropped at once).
const ABANDON_GRACE: Duration = Duration::from_secs(2);

/// Runs until `shutdown` is cancelled, then stops (see the module doc). Errors are start-up
/// failures.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Outcome, String> {
    let metrics = Arc::new(Metrics::new());
    let endpoint = Endpoint::resolve(&config.docker.host)?;
    let _lock = crate::state_lock::StateLock::acquire(&config.checkpoint.state_dir)?;
    crate::observability::resources::raise_fd_limit();
    let state_dir = config.checkpoint.state_dir.clone();
    let checkpoints = {
        let metrics = Arc::clone(&metrics);
        tokio::task::spawn_blocking(move || CheckpointStore::open(&state_dir, metrics))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot open state directory: {e}"))?
    };
    let checkpoints = Arc::new(checkpoints);
    let ready = Arc::new(AtomicBool::new(false));

    let http_cancel = CancellationToken::new();
    let http_task = if config.http.listen.is_empty() {
        None
    } else {
        let listener = http::bind(&config.http.listen)
            .await
            .map_err(|e| e.to_string())?;
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!(listen = %config.http.listen, %bound, "serving /metrics, /health, /ready");
        Some(tokio::spawn(http::serve(
            listener,
            http::Limits {
                header_read_timeout: config.http.header_read_timeout.0,
                max_connections: config.http.max_connections,
            },
            Arc::clone(&metrics),
            Arc::clone(&ready),
            http_cancel.clone(),
        )))
    };

    let result = run_pipeline(&config, endpoint, &metrics, &checkpoints, ready, &shutdown).await;

    http_cancel.cancel();
    if let Some(task) = http_task {
        match task.await {
            Ok(Err(e)) => warn!(error = %e, "HTTP listener failed"),
            Err(e) => warn!(error = %e, "HTTP task failed"),
            Ok(Ok(())) => {}
        }
    }
    result
}

async fn run_pipeline(
    config: &Config,
    endpoint: Endpoint,
    metrics: &Arc<Metrics>,
    checkpoints: &Arc<CheckpointStore>,
    ready: Arc<AtomicBool>,
    shutdown: &CancellationToken,
) -> Result<Outcome, String> {
    let capture_cfg = &config.capture;
    // Everything that can fail on bad settings or files (TLS material, buffer directories) is
    // prepared before waiting for Docker, so such errors are reported at once.
    let loki = match &config.sinks.loki {
        Some(loki) => Some(prepare_loki(config, loki, metrics).await?),
        None => None,
    };
    let Some(client) = negotiate(endpoint, config, metrics, shutdown).await else {
        return Ok(Outcome::Clean); // shut down before Docker answered
    };
    info!(endpoint = %client.endpoint(), api = client.api_version(), "connected to Docker");

    let budget = QueueBudget::new(config.pipeline.queue_bytes.0 as usize, Arc::clone(metrics));
    // The byte budget bounds the queue; the channel's own capacity only caps batch count.
    let (queue_tx, queue_rx) = mpsc::channel(QUEUE_CHANNEL_BATCHES);
    // Cancelled when `shutdown_timeout` runs out: the async sinks (Loki) stop where they are.
    let abandon = CancellationToken::new();
    let sinks = start_sinks(config, loki, metrics, checkpoints, shutdown, &abandon);
    let ledger = Arc::clone(&sinks.ledger);
    let router = tokio::spawn(route(queue_rx, sinks.inputs, Arc::clone(&sinks.ledger)));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let mut workers: Vec<(&'static str, JoinHandle<()>)> = sinks
        .workers
        .into_iter()
        .map(|(name, worker)| {
            let supervisor = tokio::spawn(supervise_sink_worker(
                name,
                worker,
                shutdown.clone(),
                Arc::clone(metrics),
                Arc::clone(&problems),
            ));
            (name, supervisor)
        })
        .collect();

    let persist_cancel = CancellationToken::new();
    let persister = tokio::spawn(persist_periodically(
        Arc::clone(checkpoints),
        config.checkpoint.interval.0,
        persist_cancel.clone(),
    ));

    let ctx = Arc::new(CaptureContext {
        client,
        pipeline: queue_tx,
        budget,
        metrics: Arc::clone(metrics),
        rotation_interval: capture_cfg.rotation_interval.0,
        max_line_bytes: capture_cfg.max_line_bytes.0 as usize,
        backoff_initial: capture_cfg.retry_backoff_initial.0,
        backoff_max: capture_cfg.retry_backoff_max.0,
    });
    let own_id = own_container_id();
    if let Some(id) = &own_id {
        info!(container_id = %id, "running in a container; it is never captured");
    }
    let discovery = Discovery::new(
        ctx,
        Arc::clone(checkpoints),
        DiscoverySettings {
            include: capture_cfg.include.clone(),
            exclude: capture_cfg.exclude.clone(),
            initial_position: capture_cfg.initial_position,
            own_id,
            backoff: (
                capture_cfg.retry_backoff_initial.0,
                capture_cfg.retry_backoff_max.0,
            ),
            startup: crate::discovery::StartupContext::new(config),
        },
        ready,
    );
    // Discovery owns the last handle to the capture context and so to the queue's sender:
    // when it returns, the queue closes and the router and sink workers drain.
    let discovery_task = tokio::spawn(discovery.run(shutdown.child_token()));

    shutdown.cancelled().await;
    info!("shutting down: stopping capture");
    let timeout = config.pipeline.shutdown_timeout.0;
    let capture_stopped = AtomicBool::new(false);
    let drain = async {
        if let Err(e) = discovery_task.await {
            warn!(error = %e, "discovery task failed");
        }
        capture_stopped.store(true, Ordering::Relaxed);
        info!("capture stopped; flushing sinks");
        if let Err(e) = router.await {
            warn!(error = %e, "router failed");
        }
        for (_, supervisor) in &mut workers {
            let _ = supervisor.await;
        }
    };
    let drained = tokio::time::timeout(timeout, drain).await.is_ok();
    let mut problems = std::mem::take(&mut *lock(&problems));
    if drained && problems.is_empty() && ledger.unacknowledged() > 0 {
        // Every worker ended, but one gave up on batches (a sink still failing at shutdown).
        let batches = ledger.unacknowledged();
        error!(
            batches,
            "batches not acknowledged by every sink at shutdown; not checkpointed, they are read again at the next start"
        );
        problems.push(format!(
            "{batches} batches not acknowledged by every sink (read again at the next start)"
        ));
    }
    let held = ledger.held_count();
    if held > 0 {
        // Their lines after the hold were not written by one sink: read again at the next start.
        error!(
            containers = held,
            "containers held by a sink at shutdown; their lines after the hold are read again at the next start"
        );
        problems.push(format!(
            "{held} containers held by a sink (their lines after the hold are read again at the next start)"
        ));
    }
    if !drained {
        let stage = if capture_stopped.load(Ordering::Relaxed) {
            "flushing sinks"
        } else {
            "stopping capture"
        };
        let busy: Vec<&str> = workers
            .iter()
            .filter(|(_, supervisor)| !supervisor.is_finished())
            .map(|(name, _)| *name)
            .collect();
        let unacknowledged = metrics.queue_lines.get();
        error!(shutdown_timeout = ?timeout, stage, busy_sinks = ?busy,
            unacknowledged_lines = unacknowledged,
            "shutdown_timeout reached: abandoning what the sinks have not acknowledged; \
             it is not checkpointed and will be read again at the next start");
        problems.push(format!(
            "pipeline.shutdown_timeout ({timeout:?}) reached while {stage}: sinks still busy {busy:?}, \
             {unacknowledged} lines not acknowledged (read again at the next start)"
        ));
        // The Loki worker is async and can stop where it is: make it, and wait for it (its
        // step under way ends first), so that it neither buffers nor acknowledges anything
        // after the final checkpoint write. Threads blocked in a local sink's write cannot be
        // stopped and are not waited for.
        abandon.cancel();
        for (name, supervisor) in &mut workers {
            if *name == "loki"
                && !supervisor.is_finished()
                && tokio::time::timeout(ABANDON_GRACE, &mut *supervisor)
                    .await
                    .is_err()
            {
                warn!(grace = ?ABANDON_GRACE, "the Loki worker did not stop in time");
                supervisor.abort();
            }
        }
    }

    persist_cancel.cancel();
    let final_persist = async {
        // The persister may be in the middle of a write: wait for it, so the two never write
        // the same file at once.
        if let Err(e) = persister.await {
            warn!(error = %e, "checkpoint persister failed");
        }
        let store = Arc::clone(checkpoints);
        tokio::task::spawn_blocking(move || store.persist()).await
    };
    match tokio::time::timeout(FINAL_PERSIST_GRACE, final_persist).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            error!(
                "final checkpoint write failed (see the errors above): those containers resume \
                 from their last persisted position, so lines after it are read again"
            );
            problems.push("the final checkpoint write failed".to_string());
        }
        Ok(Err(e)) => {
            error!(error = %e, "final checkpoint write failed");
            problems.push(format!("the final checkpoint write failed: {e}"));
        }
        Err(_) => {
            error!(grace = ?FINAL_PERSIST_GRACE, "final checkpoint write did not finish in time");
            problems.push(format!(
                "the final checkpoint write did not finish within {FINAL_PERSIST_GRACE:?}"
            ));
        }
    }
    if problems.is_empty() {
        info!("checkpoints persisted; bye");
        Ok(Outcome::Clean)
    } else {
        Ok(Outcome::Incomplete(problems))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Watches one sink worker until it ends. A worker ends only once its input has closed, that
/// is after capture stopped. One that panics or ends earlier can never acknowledge again: every
/// container's checkpoint would freeze (lines read after it would be written again after the
/// next restart) and capture would stall once the budget is spent. So the agent stops (exit 3)
/// and its orchestrator restarts it from what was acknowledged.
async fn supervise_sink_worker(
    name: &'static str,
    worker: JoinHandle<()>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    problems: Arc<Mutex<Vec<String>>>,
) {
    let result = worker.await;
    let what = match &result {
        Err(e) if e.is_panic() => format!("panicked ({e})"),
        Err(e) => format!("failed ({e})"),
        Ok(()) if !shutdown.is_cancelled() => "ended while capture was running".to_string(),
        Ok(()) => return,
    };
    metrics
        .sink_worker_failures
        .get_or_create(&SinkLabels { sink: name })
        .inc();
    error!(
        sink = name,
        "sink worker {what}; what it has not acknowledged is read again at the next start; stopping the agent"
    );
    lock(&problems).push(format!("sink worker {name} {what}"));
    shutdown.cancel();
}

/// Connects to Docker, retrying with back-off until it answers or shutdown.
async fn negotiate(
    endpoint: Endpoint,
    config: &Config,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Option<DockerClient> {
    let mut backoff = Backoff::new(
        config.capture.retry_backoff_initial.0,
        config.capture.retry_backoff_max.0,
    );
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = DockerClient::negotiate(endpoint.clone(), config.docker.request_timeout.0) => r,
        };
        match attempt {
            Ok(client) => return Some(client),
            Err(e) => {
                metrics.stream_error("docker_unreachable");
                let delay = backoff.next_delay();
                warn!(endpoint = %endpoint, error = %e, retry_in = ?delay, "Docker engine not reachable");
                if !sleep_or_cancel(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Batches in flight between capture and the router at most (the byte budget binds first).
const QUEUE_CHANNEL_BATCHES: usize = 16 * 1024;

struct RunningSinks {
    inputs: Vec<mpsc::UnboundedSender<Arc<Delivery>>>,
    /// Each worker with its sink's name.
    workers: Vec<(&'static str, JoinHandle<()>)>,
    ledger: Arc<AckLedger>,
}

/// The Loki sink's client and on-disk stores, ready to run.
struct PreparedLoki {
    config: LokiSinkConfig,
    client: LokiClient,
    buffer: SharedStore,
    dead_letters: SharedStore,
}

async fn prepare_loki(
    config: &Config,
    loki: &LokiSinkConfig,
    metrics: &Arc<Metrics>,
) -> Result<PreparedLoki, String> {
    if loki.tls.insecure_skip_verify {
        warn!("sinks.loki.tls.insecure_skip_verify is set: Loki's certificate is NOT verified");
    }
    let client = LokiClient::new(loki)?;
    let state = config.checkpoint.state_dir.clone();
    let (buffer, dead_letters) = {
        let loki = loki.clone();
        let metrics = Arc::clone(metrics);
        tokio::task::spawn_blocking(move || open_loki_stores(&state, &loki, &metrics))
            .await
            .map_err(|e| e.to_string())??
    };
    Ok(PreparedLoki {
        config: loki.clone(),
        client,
        buffer,
        dead_letters,
    })
}

/// Starts one worker per configured sink. Each worker ends when its input closes.
fn start_sinks(
    config: &Config,
    loki: Option<PreparedLoki>,
    metrics: &Arc<Metrics>,
    checkpoints: &Arc<CheckpointStore>,
    shutdown: &CancellationToken,
    abandon: &CancellationToken,
) -> RunningSinks {
    let mut local: Vec<Box<dyn Sink>> = Vec::new();
    if config.sinks.stdout.is_some() {
        local.push(Box::new(StdoutSink::new()));
    }
    if let Some(file) = &config.sinks.file {
        // Validated with the config; an error here cannot happen after `Config::parse`.
        match FileSinkSettings::from_config(file) {
            Ok(settings) => local.push(Box::new(FileSink::new(settings, Arc::clone(metrics)))),
            Err(e) => tracing::error!(error = %e, "file sink not started"),
        }
    }
    if config.sinks.discard.is_some() {
        local.push(Box::new(NullSink));
    }
    let count = local.len() + usize::from(loki.is_some());
    let ledger = Arc::new(AckLedger::new(count, Arc::clone(checkpoints)));
    {
        let ledger = Arc::clone(&ledger);
        let _ = metrics
            .oldest_unacked_probe
            .set(Box::new(move || ledger.oldest_unacked_age()));
    }
    let mut inputs = Vec::new();
    let mut workers = Vec::new();
    for sink in local {
        let name = sink.name();
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = LocalSinkWorker {
            sink,
            input: rx,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(metrics),
            settings: WriterSettings {
                flush_interval: config.pipeline.flush_interval.0,
                // Message bytes; a sink's encoding of them (NDJSON with the container's
                // metadata per line) is several times larger and is held until the flush.
                flush_bytes: 1024 * 1024,
                sync_bytes: (config.pipeline.queue_bytes.0 as usize / 4).min(4 * 1024 * 1024),
                held_retry: crate::pipeline::HELD_RETRY,
            },
            shutdown: shutdown.clone(),
        };
        let runtime = tokio::runtime::Handle::current();
        workers.push((
            name,
            tokio::task::spawn_blocking(move || worker.run_blocking(runtime)),
        ));
        inputs.push(tx);
    }
    if let Some(loki) = loki {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = LokiWorker {
            input: rx,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(metrics),
            encoder: Encoder::new(&loki.config),
            client: loki.client,
            buffer: loki.buffer,
            dead_letters: loki.dead_letters,
            config: loki.config,
            shutdown: shutdown.clone(),
            abandon: abandon.clone(),
        };
        workers.push(("loki", tokio::spawn(worker.run())));
        inputs.push(tx);
    }
    RunningSinks {
        inputs,
        workers,
        ledger,
    }
}

fn open_loki_stores(
    state_dir: &std::path::Path,
    config: &LokiSinkConfig,
    metrics: &Metrics,
) -> Result<(SharedStore, SharedStore), String> {
    let open = |dir: std::path::PathBuf, options| {
        let (store, report) = SharedStore::open(&dir, options)
            .map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
        for problem in &report.problems {
            metrics
                .buffer_corrupt
                .get_or_create(&SinkLabels { sink: "loki" })
                .inc();
            warn!(store = %dir.display(), %problem, "skipped torn or corrupt data");
        }
        if report.pending_records > 0 {
            info!(store = %dir.display(), records = report.pending_records, "records waiting from an earlier run");
        }
        Ok::<_, String>(store)
    };
    let buffer = open(loki::buffer_dir(state_dir), loki::buffer_options(config))?;
    let dlq = open(loki::dlq_dir(state_dir), loki::dlq_options(config))?;
    Ok((buffer, dlq))
}

async fn persist_periodically(
    store: Arc<CheckpointStore>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store = Arc::clone(&store);
        // A failed write is logged and counted by `persist` and retried on the next tick.
        if let Err(e) = tokio::task::spawn_blocking(move || store.persist()).await {
            warn!(error = %e, "checkpoint persist failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Cursor;
    use crate::pipeline::{Batch, ContainerMeta, LogLine, StreamKind};

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
        let store =
            Arc::new(CheckpointStore::open(dir.path(), Arc::clone(&metrics)).expect("store"));
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
        };
        let runtime = tokio::runtime::Handle::current();
        let worker = tokio::task::spawn_blocking(move || worker.run_blocking(runtime));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let supervisor = tokio::spawn(supervise_sink_worker(
            "panicking",
            worker,
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
            }],
            cursor,
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

    /// A worker that ends because shutdown closed its input is the normal end: no problem.
    #[tokio::test]
    async fn worker_ending_at_shutdown_is_no_problem() {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let problems = Arc::new(Mutex::new(Vec::new()));
        supervise_sink_worker(
            "stdout",
            tokio::spawn(async {}),
            shutdown,
            Arc::clone(&metrics),
            Arc::clone(&problems),
        )
        .await;
        assert!(lock(&problems).is_empty());
    }
}
