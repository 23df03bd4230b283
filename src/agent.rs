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
//! can never acknowledge again; so does a sink whose output is closed for good (stdout whose
//! reader exited: `log-capturer run | head`), after what it wrote was acknowledged. Either, a
//! sink that gave up on batches at shutdown (still
//! failing), or a failed final checkpoint write makes the run `Outcome::Incomplete` (exit
//! code 3).
//!
//! Config reload (SIGHUP, `POST /-/reload`; `crate::reload`): the process keeps the state
//! lock, the checkpoint store, metrics, the HTTP listener and the readiness flag (`Process`);
//! everything else is one pipeline generation (`run_pipeline`). A reload that changes only
//! `log.level` applies in place. Any other change drains the running generation exactly as
//! a shutdown does (its final checkpoint write included) and starts a new one on the new
//! config from the in-memory checkpoints: what was acknowledged is not read again, what was
//! not is. The new generation keeps the process start time (where a container without
//! checkpoint starts) and looks for stopped containers that ran since the previous generation
//! started (they may have run in the gap). Reload requests queued meanwhile are coalesced;
//! a shutdown during the drain ends the process after it. A drain that hits
//! `pipeline.shutdown_timeout` stops the process (exit 3) instead: a sink thread blocked in a
//! write may still write and acknowledge, and a second pipeline beside it could duplicate
//! lines; nothing unacknowledged is checkpointed, so the restart reads it again. A new
//! generation that cannot start (the Loki sink's stores) falls back to the previous config.

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
use crate::observability::metrics::{ResultLabels, SinkLabels};
use crate::observability::status::StatusBoard;
use crate::observability::{http, metrics::Metrics};
use crate::pipeline::{
    AckLedger, Delivery, LocalSinkWorker, OutputClosed, QueueBudget, WriterSettings, route,
};
use crate::processing::Pipelines;
use crate::reload::{
    Change, ConfigSource, Control, LogLevelSetter, ReloadError, ReloadReceiver, ReloadRequest,
    ReloadResult,
};
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

/// Runs until `shutdown` is cancelled, then stops (see the module doc). Reload requests
/// (`control.requests`) are applied meanwhile. Errors are start-up failures.
pub async fn run(
    config: Config,
    control: Control,
    shutdown: CancellationToken,
) -> Result<Outcome, String> {
    let metrics = Arc::new(Metrics::new());
    // Fails early on a bad host; each generation resolves it again (it may be reloaded).
    Endpoint::resolve_with(&config.docker)?;
    let pinned_api = crate::docker::pinned_api_version()?;
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
    // Lives as long as the process (across pipeline generations): `/api/v1/*`.
    let status = Arc::new(StatusBoard::new());
    status.attach_checkpoints(Arc::clone(&checkpoints));
    status.set_config(&config);
    let Control {
        source,
        set_log_level,
        mut requests,
        requester,
    } = control;

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
        info!(listen = %config.http.listen, %bound, "serving /metrics, /health, /ready, /api/v1 (containers, sinks, config), POST /-/reload");
        Some(tokio::spawn(http::serve(
            listener,
            http::Limits {
                header_read_timeout: config.http.header_read_timeout.0,
                max_connections: config.http.max_connections,
            },
            Arc::clone(&metrics),
            Arc::clone(&ready),
            Arc::clone(&status),
            Some(requester),
            http_cancel.clone(),
        )))
    };

    // The probe outlives generations; each generation's ledger takes the slot.
    let ledger_slot: LedgerSlot = Arc::new(Mutex::new(std::sync::Weak::new()));
    {
        let slot = Arc::clone(&ledger_slot);
        let _ = metrics.oldest_unacked_probe.set(Box::new(move || {
            lock(&slot)
                .upgrade()
                .map_or(0.0, |ledger| ledger.oldest_unacked_age())
        }));
    }
    let process = Process {
        metrics: Arc::clone(&metrics),
        checkpoints: Arc::clone(&checkpoints),
        ready,
        status,
        pinned_api,
        shutdown: shutdown.clone(),
        agent_start_ns: crate::clock::now_ns(),
        ledger_slot,
        source: Arc::new(source),
        set_log_level,
    };
    let result = run_generations(config, &process, &mut requests).await;
    // Requests still queued get 503 (their reply channel is dropped).
    requests.close();
    while requests.try_recv().is_ok() {}

    http_cancel.cancel();
    if let Some(task) = http_task {
        match task.await {
            Ok(Err(e)) => warn!(error = %e, "HTTP listener failed"),
            Err(e) => warn!(error = %e, "HTTP task failed"),
            Ok(Ok(())) => {}
        }
    }
    if result == Ok(Outcome::Clean) {
        info!("checkpoints persisted; bye");
    }
    result
}

/// The acknowledgement ledger of the running generation, for the scrape-time probe.
type LedgerSlot = Arc<Mutex<std::sync::Weak<AckLedger>>>;

/// What lives as long as the process, across config reloads: the state lock (held by `run`),
/// the checkpoint store, metrics, the HTTP listener and its readiness flag. Everything else
/// (Docker client, discovery, capture tasks, queue, sink workers, persister) belongs to one
/// pipeline generation (`run_pipeline`).
struct Process {
    metrics: Arc<Metrics>,
    checkpoints: Arc<CheckpointStore>,
    ready: Arc<AtomicBool>,
    /// `/api/v1/*`: containers and sinks outlive generations.
    status: Arc<StatusBoard>,
    /// `DOCKER_API_VERSION`, read once.
    pinned_api: Option<(u32, u32)>,
    shutdown: CancellationToken,
    agent_start_ns: i64,
    ledger_slot: LedgerSlot,
    source: Arc<ConfigSource>,
    set_log_level: Option<LogLevelSetter>,
}

/// How a generation ended.
struct GenerationEnd {
    outcome: Outcome,
    /// Capture stopped and every sink drained within `pipeline.shutdown_timeout`.
    drained: bool,
    /// Where the next generation's catch-up starts (`Discovery::run`); None if discovery
    /// never ran.
    catch_up_from_ns: Option<i64>,
}

/// What a reload request asks for, once the new config is read and compared.
enum Verdict {
    /// Answered; the generation keeps running (with `Some`, on this config: log level only).
    Done(ReloadResult, Option<Config>),
    /// Drain the generation and start one on this config.
    NewGeneration(Config, Vec<&'static str>),
}

/// Runs pipeline generations: the first on `config`, then one per reload that changes what
/// the pipeline reads. Returns when the process must stop.
async fn run_generations(
    mut config: Config,
    process: &Process,
    requests: &mut ReloadReceiver,
) -> Result<Outcome, String> {
    let mut catch_up_from_ns = None;
    // The reload that started this generation: its requests (answered once it runs) and the
    // config to go back to if it cannot start.
    let mut reloading: Option<(Vec<ReloadRequest>, Config)> = None;
    loop {
        let prepared = match prepare_sinks(&config, &process.metrics).await {
            Ok(prepared) => prepared,
            Err(e) => match reloading.take() {
                Some((batch, previous)) => {
                    let message = format!(
                        "{}: the new config could not be started: {e}; running the previous config again",
                        process.source.name
                    );
                    error!(%message, "config reload failed");
                    record_reload(&process.metrics, "failed");
                    answer(
                        batch,
                        Err(ReloadError {
                            status: 500,
                            message,
                        }),
                    );
                    config = previous;
                    continue;
                }
                None => return Err(e),
            },
        };
        if let Some((batch, _)) = reloading.take() {
            record_reload(&process.metrics, "applied");
            process.status.set_config(&config);
            let message = format!("{}: configuration reloaded", process.source.name);
            info!("{message}");
            answer(batch, Ok(message));
        }

        let stop = process.shutdown.child_token();
        let generation = run_pipeline(
            config.clone(),
            prepared,
            process,
            stop.clone(),
            catch_up_from_ns,
        );
        tokio::pin!(generation);
        let mut next = None;
        let end = loop {
            let request = tokio::select! {
                end = &mut generation => break end,
                request = requests.recv() => request,
            };
            let Some(request) = request else {
                // No sender left (cannot happen while main.rs holds one): wait for the end.
                break (&mut generation).await;
            };
            // Coalesce: everything queued meanwhile is answered by this reload.
            let mut batch = vec![request];
            while let Ok(more) = requests.try_recv() {
                batch.push(more);
            }
            let origins: Vec<&str> = batch.iter().map(|r| r.origin).collect();
            info!(from = ?origins, file = %process.source.name, "reloading the configuration");
            // Reading the file may hang (a stuck network file system): a shutdown must still
            // drain the running generation (which is not polled meanwhile).
            let verdict = tokio::select! {
                verdict = evaluate(&config, process) => verdict,
                _ = process.shutdown.cancelled() => {
                    answer(batch, Err(ReloadError {
                        status: 503,
                        message: "the agent is stopping; the reload was not applied".to_string(),
                    }));
                    break (&mut generation).await;
                }
            };
            match verdict {
                Verdict::Done(result, applied) => {
                    if let Some(applied) = applied {
                        process.status.set_config(&applied);
                        config = applied;
                    }
                    answer(batch, result);
                }
                Verdict::NewGeneration(new, sections) => {
                    info!(changed = ?sections,
                        "reload: draining the capture pipeline to start it on the new config");
                    if sections.contains(&"docker") {
                        // Connected anew: not ready until Docker has answered and been listed.
                        process.ready.store(false, Ordering::Relaxed);
                    }
                    stop.cancel();
                    next = Some((batch, new));
                    break (&mut generation).await;
                }
            }
        };
        catch_up_from_ns = end.catch_up_from_ns.or(catch_up_from_ns);
        let Some((batch, new)) = next else {
            return Ok(end.outcome);
        };
        if process.shutdown.is_cancelled() {
            answer(
                batch,
                Err(ReloadError {
                    status: 503,
                    message: "the agent is stopping; the reload was not applied".to_string(),
                }),
            );
            return Ok(end.outcome);
        }
        if !end.drained {
            // A sink thread may still be blocked in a write and may yet write and acknowledge:
            // a new generation writing the same lines again beside it could duplicate them.
            // Stop as a shutdown does: nothing unacknowledged is checkpointed, the restart
            // (by the service manager) reads it again, on the new file.
            error!(
                "reload: the drain did not finish within pipeline.shutdown_timeout; stopping \
                 the agent (exit 3) so that a restart resumes from what was acknowledged"
            );
            record_reload(&process.metrics, "failed");
            answer(
                batch,
                Err(ReloadError {
                    status: 500,
                    message: "the pipeline did not drain within pipeline.shutdown_timeout; \
                              the agent stops (exit 3); restart it to run the new config"
                        .to_string(),
                }),
            );
            process.shutdown.cancel();
            return Ok(end.outcome);
        }
        if let Outcome::Incomplete(problems) = &end.outcome {
            // Drained, but a sink gave up on batches or a checkpoint write failed: what was
            // not acknowledged is read again by the next generation, as after a restart.
            for problem in problems {
                warn!(%problem, "reload: the drain left this behind; the new pipeline reads it again");
            }
        }
        let previous = std::mem::replace(&mut config, new);
        reloading = Some((batch, previous));
    }
}

/// Reads the config again and decides what the reload does; applies a log-level-only change
/// at once. Counts the result and sets the reload metrics (except for a new generation,
/// counted once it starts).
async fn evaluate(running: &Config, process: &Process) -> Verdict {
    let metrics = &process.metrics;
    let source = Arc::clone(&process.source);
    let loaded = tokio::task::spawn_blocking(move || (source.load)())
        .await
        .unwrap_or_else(|e| Err(format!("the config loader failed: {e}")));
    let name = &process.source.name;
    let fail = |result: &'static str, status: u16, message: String| {
        error!(file = %name, problem = %message, "config reload failed; the running config is kept");
        record_reload(metrics, result);
        Verdict::Done(Err(ReloadError { status, message }), None)
    };
    let new = match loaded {
        Ok(new) => new,
        Err(e) => return fail("invalid", 500, format!("invalid configuration: {e}")),
    };
    match crate::reload::diff(running, &new) {
        Err(e) => fail("refused", 409, format!("{name}: {e}")),
        Ok(Change::Unchanged) => {
            record_reload(metrics, "unchanged");
            let message = if process.source.fixed {
                format!("{name}: nothing to reload (no -c FILE); the same configuration runs")
            } else {
                format!("{name}: configuration unchanged")
            };
            info!("{message}");
            Verdict::Done(Ok(message), None)
        }
        Ok(Change::LogLevel) => {
            let applied = match &process.set_log_level {
                Some(set) => set(&new.log.level),
                None => Ok(Some("no reloadable log filter in this process".to_string())),
            };
            match applied {
                Ok(note) => {
                    record_reload(metrics, "applied");
                    let mut message = format!("{name}: log.level is now {:?}", new.log.level);
                    if let Some(note) = note {
                        message.push_str(&format!(" ({note})"));
                    }
                    info!("{message}");
                    Verdict::Done(Ok(message), Some(new))
                }
                Err(e) => fail("failed", 500, format!("{name}: log.level: {e}")),
            }
        }
        Ok(Change::Pipeline(sections)) => {
            // What can be checked without stopping anything is checked before the drain.
            if let Some(loki) = &new.sinks.loki
                && let Err(e) = LokiClient::new(loki)
            {
                return fail("failed", 500, format!("{name}: sinks.loki: {e}"));
            }
            #[cfg(feature = "kafka")]
            if let Some(kafka) = &new.sinks.kafka
                && let Err(e) =
                    crate::sinks::kafka::client_config::checked_client_config(kafka).await
            {
                return fail("failed", 500, format!("{name}: {e}"));
            }
            if let Err(e) = Endpoint::resolve_with(&new.docker) {
                return fail("failed", 500, format!("{name}: docker.host: {e}"));
            }
            Verdict::NewGeneration(new, sections)
        }
    }
}

/// Counts a reload attempt; sets the success gauges.
fn record_reload(metrics: &Metrics, result: &'static str) {
    metrics
        .config_reloads
        .get_or_create(&ResultLabels { result })
        .inc();
    if matches!(result, "applied" | "unchanged") {
        metrics.config_loaded();
    } else {
        metrics.config_last_reload_successful.set(0);
    }
}

fn answer(batch: Vec<ReloadRequest>, result: ReloadResult) {
    for request in batch {
        if let Some(reply) = request.reply {
            // The client may have gone: nobody to tell.
            let _ = reply.send(result.clone());
        }
    }
}

/// One pipeline generation: Docker client, discovery and capture tasks, queue, router, sink
/// workers and persister, on one config. Runs until `stop` (a child of the process's
/// shutdown) is cancelled, then drains as the module doc says.
async fn run_pipeline(
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
            return not_started(Outcome::Incomplete(vec![e]));
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
            Err(problem) => Outcome::Incomplete(vec![problem]),
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
        problems.push(problem);
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
async fn persist_final(
    checkpoints: &Arc<CheckpointStore>,
    before: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
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
            Err("the final checkpoint write failed".to_string())
        }
        Ok(Err(e)) => {
            error!(error = %e, "final checkpoint write failed");
            Err(format!("the final checkpoint write failed: {e}"))
        }
        Err(_) => {
            error!(grace = ?FINAL_PERSIST_GRACE, "final checkpoint write did not finish in time");
            Err(format!(
                "the final checkpoint write did not finish within {FINAL_PERSIST_GRACE:?}"
            ))
        }
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
/// `stop` ends this generation (a reload or shutdown); `shutdown` stops the process.
async fn supervise_sink_worker(
    name: &'static str,
    worker: SinkWorkerHandle,
    stop: CancellationToken,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    problems: Arc<Mutex<Vec<String>>>,
) {
    let result = worker.await;
    let what = match &result {
        Err(e) if e.is_panic() => format!("panicked ({e})"),
        // Aborted at `shutdown_timeout` (see `run_pipeline`): already counted as a problem.
        Err(e) if e.is_cancelled() && stop.is_cancelled() => return,
        Err(e) => format!("failed ({e})"),
        Ok(Err(closed)) => {
            // Not a worker failure: its output is gone (the worker logged why). Stop.
            lock(&problems).push(closed.to_string());
            shutdown.cancel();
            return;
        }
        Ok(Ok(())) if !stop.is_cancelled() => "ended while capture was running".to_string(),
        Ok(Ok(())) => return,
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

/// Connects to Docker, retrying with back-off until it answers or shutdown. A setup problem
/// (permission denied on the socket, a TLS port spoken to in plain HTTP) is explained once, at
/// error level; the retries go on (the group may be granted, the config fixed and reloaded).
async fn negotiate(
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

/// Batches in flight between capture and the router at most (the byte budget binds first).
const QUEUE_CHANNEL_BATCHES: usize = 16 * 1024;

/// A sink worker; it ends with `OutputClosed` when its output is gone for good.
type SinkWorkerHandle = JoinHandle<Result<(), OutputClosed>>;

struct RunningSinks {
    inputs: Vec<mpsc::UnboundedSender<Arc<Delivery>>>,
    /// Each worker with its sink's name.
    workers: Vec<(&'static str, SinkWorkerHandle)>,
    ledger: Arc<AckLedger>,
}

/// The Loki sink's client and on-disk stores, ready to run.
struct PreparedLoki {
    config: LokiSinkConfig,
    client: LokiClient,
    buffer: SharedStore,
    dead_letters: SharedStore,
}

/// The network sinks' clients and stores, opened before a generation starts (a reload that
/// cannot open them keeps the previous config).
#[derive(Default)]
struct PreparedSinks {
    loki: Option<PreparedLoki>,
    #[cfg(feature = "kafka")]
    kafka: Option<PreparedKafka>,
}

async fn prepare_sinks(config: &Config, metrics: &Arc<Metrics>) -> Result<PreparedSinks, String> {
    let mut prepared = PreparedSinks::default();
    if let Some(loki) = &config.sinks.loki {
        prepared.loki = Some(prepare_loki(config, loki, metrics).await?);
    }
    #[cfg(feature = "kafka")]
    if let Some(kafka) = &config.sinks.kafka {
        prepared.kafka = Some(prepare_kafka(config, kafka, metrics).await?);
    }
    Ok(prepared)
}

#[cfg(feature = "kafka")]
struct PreparedKafka {
    config: crate::config::KafkaSinkConfig,
    encoder: crate::sinks::kafka::MessageEncoder,
    client: rdkafka::ClientConfig,
    buffer: SharedStore,
    dead_letters: SharedStore,
}

#[cfg(feature = "kafka")]
async fn prepare_kafka(
    config: &Config,
    kafka: &crate::config::KafkaSinkConfig,
    metrics: &Arc<Metrics>,
) -> Result<PreparedKafka, String> {
    use crate::sinks::kafka;
    for (property, why) in kafka.weakening_properties() {
        warn!(%property, "sinks.kafka.properties: {why}");
    }
    for warning in kafka.security_warnings() {
        warn!("{warning}");
    }
    let client = kafka::client_config::checked_client_config(kafka).await?;
    let encoder = kafka::MessageEncoder::new(kafka).map_err(|e| format!("sinks.kafka: {e}"))?;
    let state = config.checkpoint.state_dir.clone();
    let (buffer, dead_letters) = {
        let kafka_config = kafka.clone();
        let metrics = Arc::clone(metrics);
        tokio::task::spawn_blocking(move || {
            open_sink_stores(
                kafka::SINK,
                (
                    kafka::buffer_dir(&state),
                    kafka::buffer_options(&kafka_config),
                ),
                (kafka::dlq_dir(&state), kafka::dlq_options(&kafka_config)),
                &metrics,
            )
        })
        .await
        .map_err(|e| e.to_string())??
    };
    Ok(PreparedKafka {
        config: kafka.clone(),
        encoder,
        client,
        buffer,
        dead_letters,
    })
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
    prepared: PreparedSinks,
    metrics: &Arc<Metrics>,
    checkpoints: &Arc<CheckpointStore>,
    status: &StatusBoard,
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
    let PreparedSinks {
        loki,
        #[cfg(feature = "kafka")]
        kafka,
    } = prepared;
    let mut names: Vec<&'static str> = local.iter().map(|s| s.name()).collect();
    if loki.is_some() {
        names.push("loki");
    }
    #[cfg(feature = "kafka")]
    if kafka.is_some() {
        names.push(crate::sinks::kafka::SINK);
    }
    let ledger = Arc::new(AckLedger::new(names.len(), Arc::clone(checkpoints)));
    for gone in ["stdout", "file", "null", "loki", "kafka"] {
        if !names.contains(&gone) {
            metrics.forget_sink_gauges(gone);
        }
    }
    status.retain_sinks(&names);
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
            status: status.sink(name, false),
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
            status: status.sink("loki", true),
        };
        workers.push((
            "loki",
            tokio::spawn(async move {
                worker.run().await;
                Ok(())
            }),
        ));
        inputs.push(tx);
    }
    #[cfg(feature = "kafka")]
    if let Some(kafka) = kafka {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = crate::sinks::kafka::KafkaWorker {
            input: rx,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(metrics),
            encoder: kafka.encoder,
            client: kafka.client,
            buffer: kafka.buffer,
            dead_letters: kafka.dead_letters,
            config: kafka.config,
            shutdown: shutdown.clone(),
            abandon: abandon.clone(),
            status: status.sink(crate::sinks::kafka::SINK, true),
        };
        workers.push((
            crate::sinks::kafka::SINK,
            tokio::spawn(async move {
                worker.run().await;
                Ok(())
            }),
        ));
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
    open_sink_stores(
        "loki",
        (loki::buffer_dir(state_dir), loki::buffer_options(config)),
        (loki::dlq_dir(state_dir), loki::dlq_options(config)),
        metrics,
    )
}

/// Opens a network sink's buffer and dead-letter stores, counting what was found torn.
fn open_sink_stores(
    sink: &'static str,
    buffer: (std::path::PathBuf, crate::buffer::StoreOptions),
    dlq: (std::path::PathBuf, crate::buffer::StoreOptions),
    metrics: &Metrics,
) -> Result<(SharedStore, SharedStore), String> {
    let open = |(dir, options): (std::path::PathBuf, crate::buffer::StoreOptions)| {
        let (store, report) = SharedStore::open(&dir, options)
            .map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
        for problem in &report.problems {
            metrics
                .buffer_corrupt
                .get_or_create(&SinkLabels { sink })
                .inc();
            warn!(store = %dir.display(), %problem, "skipped torn or corrupt data");
        }
        if report.pending_records > 0 {
            info!(store = %dir.display(), records = report.pending_records, "records waiting from an earlier run");
        }
        Ok::<_, String>(store)
    };
    Ok((open(buffer)?, open(dlq)?))
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
            ConfigSource {
                name: "c.yaml".to_string(),
                load: Box::new(|| Err("c.yaml: capture.rotation_interval: bad".to_string())),
                fixed: false,
            },
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

        let p = process(
            dir.path(),
            ConfigSource {
                name: "c.yaml".to_string(),
                load: Box::new(|| {
                    Config::parse("sinks:\n  discard: {}\n", "c.yaml").map_err(|e| e.to_string())
                }),
                fixed: false,
            },
        );
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
            ConfigSource {
                name: "c.yaml".to_string(),
                load: Box::new(|| {
                    Config::parse(
                        "sinks:\n  kafka:\n    properties: {no.such.property: s3cr3t}\n",
                        "c.yaml",
                    )
                    .map_err(|e| e.to_string())
                }),
                fixed: false,
            },
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
}
