//! Why the agent could not start (`agent::run`'s error; `main` prints it and exits 1) and why
//! a generation's final checkpoint write failed (a problem of an `Outcome::Incomplete`, exit 3).
//! The texts are what operators and the tests read: keep them.

use super::FINAL_PERSIST_GRACE;
use super::sinks::SinkSetupError;

/// A start-up failure: the process does not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `docker.host`, its TLS or `DOCKER_API_VERSION` cannot be used.
    #[error(transparent)]
    DockerSetup(#[from] crate::docker::SetupError),
    /// The state directory is locked by another agent, or cannot be locked.
    #[error(transparent)]
    StateLock(#[from] crate::state_lock::StateLockError),
    /// The checkpoint store cannot be opened.
    #[error("cannot open state directory: {0}")]
    OpenCheckpoints(#[source] std::io::Error),
    /// The blocking task that opens the checkpoint store failed (panicked).
    #[error(transparent)]
    OpenCheckpointsTask(tokio::task::JoinError),
    /// `http.listen` cannot be bound.
    #[error(transparent)]
    Listen(std::io::Error),
    /// The first generation's network sinks (their client or stores) cannot be prepared.
    #[error(transparent)]
    Sinks(#[from] SinkSetupError),
}

/// Why a generation's last checkpoint write failed (see `persist_final`).
#[derive(Debug, thiserror::Error)]
pub(super) enum FinalPersistError {
    /// `persist` reported a failure (logged by it).
    #[error("the final checkpoint write failed")]
    Failed,
    /// The blocking write task failed (panicked).
    #[error("the final checkpoint write failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("the final checkpoint write did not finish within {FINAL_PERSIST_GRACE:?}")]
    TimedOut,
}
