//! The `json_file` capture mode (`docker.capture: json_file`): a container's lines read from
//! Docker's json-file log (and its rotated files) instead of an Engine API follow stream, with
//! the same cursor, resume filter and processing as the API mode.

pub mod files;
pub mod metrics;
pub mod parse;
pub mod reader;
pub mod source;
mod task;

/// Runs blocking file work (reads of up to a batch, gunzip, directory listings) without
/// stalling the async worker it is called on: `block_in_place` hands the worker's other tasks
/// to another thread for its duration. The agent's runtime is multi-thread (main.rs); on a
/// current-thread runtime (some tests) it runs in place. Chosen over `spawn_blocking` per step
/// because the step borrows the session's assembler and lines; every step is bounded (one
/// batch), and cancellation is checked between steps by the session.
pub fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

use std::fs::File;
use std::path::PathBuf;

use tokio::sync::watch;

/// How the json-file mode finds logs (`docker.capture: json_file`), resolved at start.
#[derive(Debug, Clone)]
pub struct JsonFileMode {
    /// Docker's `containers` directory as the agent sees it (`docker.containers_dir`, else
    /// `<DockerRootDir>/containers`).
    pub containers_dir: PathBuf,
    /// `docker.containers_dir` was set: log paths are taken under it, not from `LogPath`.
    pub configured: bool,
    /// The directory could be read at start; if not, every container falls back to the API.
    pub readable: bool,
}

/// What a capture task needs to read a container from its json-file log.
pub struct JsonFileTarget {
    pub files: files::LogFiles,
    /// The written log file, opened at the container's `start` event (it outlives a removal).
    pub preopened: Option<File>,
    /// Set when the container has stopped (its `die` event, or found so by inspect).
    pub stopped: watch::Receiver<bool>,
    /// Whether the container had a TTY is not known (removed before its inspect): its lines
    /// are read as stdout, less the `\r` a TTY puts before each newline.
    pub trim_cr: bool,
}

/// Opens the written log of container `id` as soon as it starts: an `--rm` container that
/// exits at once is removed (directory and all) a few milliseconds later, and an open
/// descriptor is what keeps its lines readable. None if it cannot be opened (yet).
pub fn preopen(containers_dir: &std::path::Path, id: &str) -> Option<File> {
    if id.is_empty() || id.contains('/') || id.contains("..") {
        return None;
    }
    File::open(files::LogFiles::of(containers_dir, id).current()).ok()
}

impl JsonFileMode {
    /// Where the logs are: `docker.containers_dir`, else `<DockerRootDir>/containers` (asked of
    /// the daemon; `/var/lib/docker/containers` if it does not answer). Checks that the agent
    /// can read it; if not, says what to mount and every container is read through the API.
    pub async fn resolve(client: &crate::docker::DockerClient, configured: &str) -> JsonFileMode {
        let (containers_dir, from_config) = if configured.is_empty() {
            let root = match client.info().await {
                Ok(info) if !info.docker_root_dir.is_empty() => info.docker_root_dir,
                Ok(_) => "/var/lib/docker".to_string(),
                Err(e) => {
                    tracing::warn!(error = %e,
                        "cannot ask Docker for its data root; assuming /var/lib/docker");
                    "/var/lib/docker".to_string()
                }
            };
            (PathBuf::from(root).join("containers"), false)
        } else {
            (PathBuf::from(configured), true)
        };
        let dir = containers_dir.clone();
        let check = tokio::task::spawn_blocking(move || std::fs::read_dir(&dir).map(|_| ()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let readable = match check {
            Ok(()) => {
                tracing::info!(containers_dir = %containers_dir.display(),
                    "docker.capture: json_file: reading containers' json-file logs");
                true
            }
            Err(e) => {
                tracing::error!(containers_dir = %containers_dir.display(), error = %e,
                    "docker.capture: json_file: cannot read Docker's containers directory; mount it \
                     read-only into the agent (-v /var/lib/docker/containers:/var/lib/docker/containers:ro, \
                     or elsewhere and set docker.containers_dir to that path); until then every \
                     container is read through the Engine API (nothing is lost)");
                false
            }
        };
        JsonFileMode {
            containers_dir,
            configured: from_config,
            readable,
        }
    }

    /// The log files of a container: under `docker.containers_dir` when set, else where Docker
    /// says (`LogPath`), else where they are by Docker's layout.
    pub fn files(&self, id: &str, log_path: &str) -> files::LogFiles {
        if !self.configured
            && !log_path.is_empty()
            && let Some(files) = files::LogFiles::at(std::path::Path::new(log_path))
        {
            return files;
        }
        files::LogFiles::of(&self.containers_dir, id)
    }
}
