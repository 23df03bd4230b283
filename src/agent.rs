//! Wires the agent together and owns its lifecycle. Start-up: state, HTTP, Docker, writer,
//! checkpoint persister, discovery. Shutdown (in this order, so nothing captured is lost):
//! stop discovery and every capture task → the queue closes → the writer drains, flushes and
//! acknowledges → checkpoints are persisted one last time → HTTP stops.

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
use crate::discovery::{Discovery, DiscoverySettings, filter::own_container_id};
use crate::docker::{DockerClient, Endpoint};
use crate::observability::{http, metrics::Metrics};
use crate::pipeline::{SinkWriter, WriterSettings};
use crate::sinks::{FileSink, Sink, StdoutSink};

/// Runs until `shutdown` is cancelled, then stops cleanly. Errors are start-up failures.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let endpoint = Endpoint::resolve(&config.docker.host)?;
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
    let Some(client) = negotiate(endpoint, config, metrics, shutdown).await else {
        return Ok(()); // shut down before Docker answered
    };
    info!(endpoint = %client.endpoint(), api = client.api_version(), "connected to Docker");

    let (queue_tx, queue_rx) = mpsc::channel(config.pipeline.queue_batches);
    let writer = SinkWriter {
        sinks: build_sinks(config),
        queue: queue_rx,
        checkpoints: Arc::clone(checkpoints),
        metrics: Arc::clone(metrics),
        settings: WriterSettings {
            flush_interval: config.pipeline.flush_interval.0,
            flush_bytes: 4 * 1024 * 1024,
        },
        shutdown: shutdown.clone(),
    };
    let runtime = tokio::runtime::Handle::current();
    let writer_task = tokio::task::spawn_blocking(move || writer.run_blocking(runtime));

    let persist_cancel = CancellationToken::new();
    let persister = tokio::spawn(persist_periodically(
        Arc::clone(checkpoints),
        config.checkpoint.interval.0,
        persist_cancel.clone(),
    ));

    let ctx = Arc::new(CaptureContext {
        client,
        pipeline: queue_tx,
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
    // when it returns, the queue closes and the writer drains.
    let discovery_task = tokio::spawn(discovery.run(shutdown.child_token()));

    shutdown.cancelled().await;
    info!("shutting down: stopping capture");
    if let Err(e) = discovery_task.await {
        warn!(error = %e, "discovery task failed");
    }
    info!("capture stopped; flushing sinks");
    if let Err(e) = writer_task.await {
        warn!(error = %e, "sink writer failed");
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

fn build_sinks(config: &Config) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if config.sinks.stdout.is_some() {
        sinks.push(Box::new(StdoutSink::new()));
    }
    if let Some(file) = &config.sinks.file {
        sinks.push(Box::new(FileSink::new(&file.path, file.idle_close.0)));
    }
    sinks
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
