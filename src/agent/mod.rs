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

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::CheckpointStore;
use crate::config::Config;
use crate::docker::Endpoint;
use crate::observability::status::StatusBoard;
use crate::observability::{http, metrics::Metrics};
use crate::pipeline::AckLedger;
use crate::reload::{ConfigSource, Control, LogLevelSetter};

mod error;
mod generations;
mod pipeline;
mod sinks;

pub use error::AgentError;
pub use sinks::SinkSetupError;

use generations::run_generations;
#[cfg(test)]
use generations::*;
#[cfg(test)]
use sinks::*;

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
) -> Result<Outcome, AgentError> {
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
            .map_err(AgentError::OpenCheckpointsTask)?
            .map_err(AgentError::OpenCheckpoints)?
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
            .map_err(AgentError::Listen)?;
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
    if matches!(result, Ok(Outcome::Clean)) {
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
