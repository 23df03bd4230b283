//! One pipeline generation: start-up, the run, and the drain in the documented order.

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
use crate::discovery::{Discovery, DiscoverySettings, filter::own_container_id};
use crate::docker::{DockerClient, Endpoint};
use crate::observability::metrics::Metrics;
use crate::pipeline::{QueueBudget, route};
use crate::processing::Pipelines;
use tokio::task::JoinHandle;

use super::error::FinalPersistError;
use super::generations::*;
use super::sinks::*;
use super::{ABANDON_GRACE, FINAL_PERSIST_GRACE, Outcome, Process, lock};

/// One pipeline generation: Docker client, discovery and capture tasks, queue, router, sink
/// workers and persister, on one config. Runs until `stop` (a child of the process's
/// shutdown) is cancelled, then drains as the module doc says.
pub(super) async fn run_pipeline(
    config: Config,
    prepared: PreparedSinks,
    process: &Process,
    stop: CancellationToken,
    catch_up_from_ns: Option<i64>,
) -> GenerationEnd {
    let metrics = &process.metrics;
    let checkpoints = &process.checkpoints;
    let shutdown = &stop;
    let config = &config;
    let capture_cfg = &config.capture;
    let not_started = |outcome| GenerationEnd {
        outcome,
        drained: true,
        catch_up_from_ns: None,
    };
    // Validated when the config was loaded (this cannot fail then); compiled for this run.
    let pipelines = match Pipelines::compile(&config.processing) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            error!(error = %e, "processing");
            process.shutdown.cancel();
            return not_started(Outcome::Incomplete(vec![e.to_string()]));
        }
    };
    let endpoint = match Endpoint::resolve_with(&config.docker) {
        Ok(endpoint) => endpoint,
        // Checked at start and before a reload; the environment may have changed since.
        Err(e) => {
            error!(error = %e, "docker.host");
            process.shutdown.cancel();
            return not_started(Outcome::Incomplete(vec![format!("docker.host: {e}")]));
        }
    };
    let Some(client) = negotiate((endpoint, process.pinned_api), config, metrics, shutdown).await
    else {
        // Stopped before Docker answered. After a reload, the previous generation's final
        // checkpoint write may have failed: write what is still dirty now (nothing otherwise).
        return not_started(match persist_final(checkpoints, async {}).await {
            Ok(()) => Outcome::Clean,
            Err(problem) => Outcome::Incomplete(vec![problem.to_string()]),
        });
    };
    info!(endpoint = %client.endpoint(), api = client.api_version(), "connected to Docker");

    let budget = QueueBudget::new(config.pipeline.queue_bytes.0 as usize, Arc::clone(metrics));
    // The byte budget bounds the queue; the channel's own capacity only caps batch count.
    let (queue_tx, queue_rx) = mpsc::channel(QUEUE_CHANNEL_BATCHES);
    // Cancelled when `shutdown_timeout` runs out: the async sinks (Loki) stop where they are.
    let abandon = CancellationToken::new();
    let sinks = start_sinks(
        config,
        prepared,
        metrics,
        checkpoints,
        &process.status,
        shutdown,
        &abandon,
    );
    let ledger = Arc::clone(&sinks.ledger);
    *lock(&process.ledger_slot) = Arc::downgrade(&ledger);
    let router = tokio::spawn(route(queue_rx, sinks.inputs, Arc::clone(&sinks.ledger)));
    let problems = Arc::new(Mutex::new(Vec::new()));
    // Each sink's supervisor, and the worker's own abort handle: aborting the supervisor would
    // only detach the worker.
    let mut workers: Vec<(&'static str, JoinHandle<()>, tokio::task::AbortHandle)> = sinks
        .workers
        .into_iter()
        .map(|(name, worker)| {
            let worker_abort = worker.abort_handle();
            let supervisor = tokio::spawn(supervise_sink_worker(
                name,
                worker,
                shutdown.clone(),
                process.shutdown.clone(),
                Arc::clone(metrics),
                Arc::clone(&problems),
            ));
            (name, supervisor, worker_abort)
        })
        .collect();

    let persist_cancel = CancellationToken::new();
    let persister = tokio::spawn(persist_periodically(
        Arc::clone(checkpoints),
        config.checkpoint.interval.0,
        persist_cancel.clone(),
    ));

    // Host log files: a sibling of discovery, holding its own handle to the queue.
    let file_source =
        crate::sources::files::FileSource::new(crate::sources::files::FileSourceContext {
            config: config.sources.clone(),
            pipeline: queue_tx.clone(),
            budget: budget.clone(),
            metrics: Arc::clone(metrics),
            checkpoints: Arc::clone(checkpoints),
            pipelines: Arc::clone(&pipelines),
            max_line_bytes: capture_cfg.max_line_bytes.0 as usize,
            host: crate::sinks::loki::encode::this_hostname(),
        });
    let file_source_task = tokio::spawn(file_source.run(shutdown.child_token()));
    let json_file = match config.docker.capture {
        crate::config::CaptureMode::Api => None,
        crate::config::CaptureMode::JsonFile => Some(Arc::new(
            crate::capture::json_file::JsonFileMode::resolve(
                &client,
                &config.docker.containers_dir,
            )
            .await,
        )),
    };
    let ctx = Arc::new(CaptureContext {
        json_file,
        client,
        pipeline: queue_tx,
        budget,
        metrics: Arc::clone(metrics),
        rotation_interval: capture_cfg.rotation_interval.0,
        max_line_bytes: capture_cfg.max_line_bytes.0 as usize,
        backoff_initial: capture_cfg.retry_backoff_initial.0,
        backoff_max: capture_cfg.retry_backoff_max.0,
        status: Arc::clone(&process.status),
        pipelines,
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
            agent_start_ns: process.agent_start_ns,
            catch_up_from_ns,
            startup: crate::discovery::StartupContext::new(config),
        },
        Arc::clone(&process.ready),
    );
    // Discovery and the file source own the last handles to the queue's sender: when both
    // have returned, the queue closes and the router and sink workers drain.
    let discovery_task = tokio::spawn(discovery.run(shutdown.child_token()));

    shutdown.cancelled().await;
    if process.shutdown.is_cancelled() {
        info!("shutting down: stopping capture");
    } else {
        info!("reloading: stopping capture");
    }
    let timeout = config.pipeline.shutdown_timeout.0;
    // If the drain times out while capture is still stopping, these are aborted rather than
    // left running detached (they were cancelled; one may be stuck in a blocking step).
    let capture_aborts = [
        discovery_task.abort_handle(),
        file_source_task.abort_handle(),
    ];
    let capture_stopped = AtomicBool::new(false);
    let mut next_catch_up = None;
    let drain = async {
        match discovery_task.await {
            Ok(from_ns) => next_catch_up = Some(from_ns),
            Err(e) => warn!(error = %e, "discovery task failed"),
        }
        if let Err(e) = file_source_task.await {
            warn!(error = %e, "file source task failed");
        }
        capture_stopped.store(true, Ordering::Relaxed);
        info!("capture stopped; flushing sinks");
        if let Err(e) = router.await {
            warn!(error = %e, "router failed");
        }
        for (_, supervisor, _) in &mut workers {
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
        capture_aborts
            .iter()
            .for_each(tokio::task::AbortHandle::abort);
        let stage = if capture_stopped.load(Ordering::Relaxed) {
            "flushing sinks"
        } else {
            "stopping capture"
        };
        let busy: Vec<&str> = workers
            .iter()
            .filter(|(_, supervisor, _)| !supervisor.is_finished())
            .map(|(name, _, _)| *name)
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
        for (name, supervisor, worker_abort) in &mut workers {
            if matches!(*name, "loki" | "kafka")
                && !supervisor.is_finished()
                && tokio::time::timeout(ABANDON_GRACE, &mut *supervisor)
                    .await
                    .is_err()
            {
                warn!(grace = ?ABANDON_GRACE, sink = *name, "the sink worker did not stop in time; aborting it");
                worker_abort.abort();
                // Its supervisor sees the cancelled worker and ends; a worker blocked outside
                // an await point (none is, by design) would still be left behind.
                let _ = tokio::time::timeout(ABANDON_GRACE, &mut *supervisor).await;
            }
        }
    }

    persist_cancel.cancel();
    // The persister may be in the middle of a write: wait for it, so the two never write the
    // same file at once.
    let persister_ended = async {
        if let Err(e) = persister.await {
            warn!(error = %e, "checkpoint persister failed");
        }
    };
    if let Err(problem) = persist_final(checkpoints, persister_ended).await {
        problems.push(problem.to_string());
    }
    let outcome = if problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Incomplete(problems)
    };
    GenerationEnd {
        outcome,
        drained,
        catch_up_from_ns: next_catch_up,
    }
}

/// A generation's last checkpoint write, after `before`, both within `FINAL_PERSIST_GRACE`
/// (it fsyncs; on a hung file system it would never return). Err: the problem, logged.
pub(super) async fn persist_final(
    checkpoints: &Arc<CheckpointStore>,
    before: impl std::future::Future<Output = ()>,
) -> Result<(), FinalPersistError> {
    let store = Arc::clone(checkpoints);
    let write = async move {
        before.await;
        tokio::task::spawn_blocking(move || store.persist()).await
    };
    match tokio::time::timeout(FINAL_PERSIST_GRACE, write).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => {
            error!(
                "final checkpoint write failed (see the errors above): those containers resume \
                 from their last persisted position, so lines after it are read again"
            );
            Err(FinalPersistError::Failed)
        }
        Ok(Err(e)) => {
            error!(error = %e, "final checkpoint write failed");
            Err(FinalPersistError::Task(e))
        }
        Err(_) => {
            error!(grace = ?FINAL_PERSIST_GRACE, "final checkpoint write did not finish in time");
            Err(FinalPersistError::TimedOut)
        }
    }
}

/// Connects to Docker, retrying with back-off until it answers or shutdown. A setup problem
/// (permission denied on the socket, a TLS port spoken to in plain HTTP) is explained once, at
/// error level; the retries go on (the group may be granted, the config fixed and reloaded).
pub(super) async fn negotiate(
    (endpoint, pinned_api): (Endpoint, Option<(u32, u32)>),
    config: &Config,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Option<DockerClient> {
    let mut backoff = Backoff::new(
        config.capture.retry_backoff_initial.0,
        config.capture.retry_backoff_max.0,
    );
    let mut hinted: Option<String> = None;
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = DockerClient::connect(endpoint.clone(), pinned_api, config.docker.request_timeout.0) => r,
        };
        match attempt {
            Ok(client) => return Some(client),
            Err(e) => {
                metrics.docker_unreachable.inc();
                if let Some(hint) = e.hint()
                    && hinted.as_deref() != Some(hint)
                {
                    error!(endpoint = %endpoint, "{hint}");
                    hinted = Some(hint.to_string());
                }
                let delay = backoff.next_delay();
                warn!(endpoint = %endpoint, error = %e, retry_in = ?delay, "Docker engine not reachable");
                if !sleep_or_cancel(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}

pub(super) async fn persist_periodically(
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
