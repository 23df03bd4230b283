//! Wires the agent together and owns its lifecycle. Start-up: state, HTTP, Docker, sink
//! workers and router, checkpoint persister, discovery. Shutdown (in this order, so nothing
//! captured is lost): stop discovery and every capture task → the queue closes → the router
//! ends → each sink worker drains, flushes (or buffers on disk) and acknowledges → checkpoints
//! are persisted one last time → HTTP stops.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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

/// Runs until `shutdown` is cancelled, then stops cleanly. Errors are start-up failures.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), String> {
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
        info!(listen = %config.http.listen, "serving /metrics, /health, /ready");
        Some(tokio::spawn(http::serve(
            listener,
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
) -> Result<(), String> {
    let capture_cfg = &config.capture;
    // Everything that can fail on bad settings or files (TLS material, buffer directories) is
    // prepared before waiting for Docker, so such errors are reported at once.
    let loki = match &config.sinks.loki {
        Some(loki) => Some(prepare_loki(config, loki, metrics).await?),
        None => None,
    };
    let Some(client) = negotiate(endpoint, config, metrics, shutdown).await else {
        return Ok(()); // shut down before Docker answered
    };
    info!(endpoint = %client.endpoint(), api = client.api_version(), "connected to Docker");

    let budget = QueueBudget::new(config.pipeline.queue_bytes.0 as usize, Arc::clone(metrics));
    // The byte budget bounds the queue; the channel's own capacity only caps batch count.
    let (queue_tx, queue_rx) = mpsc::channel(QUEUE_CHANNEL_BATCHES);
    let sinks = start_sinks(config, loki, metrics, checkpoints, shutdown);
    let router = tokio::spawn(route(queue_rx, sinks.inputs, Arc::clone(&sinks.ledger)));

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
        },
        ready,
    );
    // Discovery owns the last handle to the capture context and so to the queue's sender:
    // when it returns, the queue closes and the router and sink workers drain.
    let discovery_task = tokio::spawn(discovery.run(shutdown.child_token()));

    shutdown.cancelled().await;
    info!("shutting down: stopping capture");
    if let Err(e) = discovery_task.await {
        warn!(error = %e, "discovery task failed");
    }
    info!("capture stopped; flushing sinks");
    if let Err(e) = router.await {
        warn!(error = %e, "router failed");
    }
    for worker in sinks.workers {
        if let Err(e) = worker.await {
            warn!(error = %e, "sink worker failed");
        }
    }
    persist_cancel.cancel();
    if let Err(e) = persister.await {
        warn!(error = %e, "checkpoint persister failed");
    }
    let store = Arc::clone(checkpoints);
    if let Err(e) = tokio::task::spawn_blocking(move || store.persist()).await {
        warn!(error = %e, "final checkpoint persist failed");
    }
    info!("checkpoints persisted; bye");
    Ok(())
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
    workers: Vec<JoinHandle<()>>,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = LocalSinkWorker {
            sink,
            input: rx,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(metrics),
            settings: WriterSettings {
                flush_interval: config.pipeline.flush_interval.0,
                flush_bytes: 4 * 1024 * 1024,
                sync_bytes: (config.pipeline.queue_bytes.0 as usize / 4).min(4 * 1024 * 1024),
                held_retry: crate::pipeline::HELD_RETRY,
            },
            shutdown: shutdown.clone(),
        };
        let runtime = tokio::runtime::Handle::current();
        workers.push(tokio::task::spawn_blocking(move || {
            worker.run_blocking(runtime)
        }));
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
        };
        workers.push(tokio::spawn(worker.run()));
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
        if let Err(e) = tokio::task::spawn_blocking(move || store.persist()).await {
            warn!(error = %e, "checkpoint persist failed");
        }
    }
}
